//! `tls:CERTDIR`: every certificate of a directory's `*.pem` files, chosen by the name the
//! client asks for (SNI).
//!
//! Keys and certificates may sit in the same file or in separate ones: they are paired by
//! public key. Each certificate serves the DNS names of its subjectAltName; `*.example.com`
//! serves one label below `example.com`. A client that sends no name, or a name no certificate
//! has, gets the first certificate by file name. An unknown name also starts a re-scan of the
//! directory, at most once every few seconds and on a thread of its own (the handshake is not
//! held up), so a certificate dropped into the directory is served from the next handshake on,
//! without a signal. A re-scan first compares the files' names, inodes, sizes and times with
//! the last scan, and reads nothing (and logs nothing) when none changed, so a public server
//! that is sent random names neither re-reads its keys nor repeats its warnings every few
//! seconds.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;

use super::certs::{self, CertError};

/// The least time between two re-scans prompted by unknown names.
const RESCAN_EVERY: Duration = Duration::from_secs(3);

/// The certificates of one scan.
#[derive(Debug, Default)]
struct Certs {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    /// Each file served and its certificate's notAfter (seconds since 1970), for metrics.
    served: Vec<(PathBuf, i64)>,
}

/// The SNI resolver of a `tls:` endpoint.
#[derive(Debug)]
pub(crate) struct DirResolver {
    dir: PathBuf,
    provider: Arc<CryptoProvider>,
    certs: Arc<RwLock<Certs>>,
    last_scan: Arc<Mutex<Instant>>,
    rescanning: Arc<AtomicBool>,
    /// What the directory looked like at the last scan.
    seen: Arc<Mutex<Listing>>,
}

/// The `*.pem` files of a directory as `stat` sees them: name, inode, size, change time (ns).
/// The change time (ctime), not the modification time: it moves on a write and also on a
/// chmod or chown, so a key skipped as unreadable is read once its permissions are fixed.
type Listing = Vec<(PathBuf, u64, u64, i64, i64)>;

/// The directory's listing now; empty if it cannot be read (the scan then says why).
fn listing(dir: &Path) -> Listing {
    pem_files(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?;
            Some((p, m.ino(), m.size(), m.ctime(), m.ctime_nsec()))
        })
        .collect()
}

impl DirResolver {
    /// Scans `dir`; any file that cannot be used, or a directory without a certificate and
    /// its key, is an error naming it.
    pub(crate) fn scan(
        dir: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<DirResolver, CertError> {
        let seen = listing(dir);
        let certs = scan(dir, &provider, true)?;
        Ok(DirResolver {
            dir: dir.to_path_buf(),
            provider,
            certs: Arc::new(RwLock::new(certs)),
            last_scan: Arc::new(Mutex::new(Instant::now())),
            rescanning: Arc::new(AtomicBool::new(false)),
            seen: Arc::new(Mutex::new(seen)),
        })
    }

    /// Each certificate file in service now and its notAfter (seconds since 1970).
    pub(crate) fn served(&self) -> Vec<(PathBuf, i64)> {
        self.certs
            .read()
            .map(|c| c.served.clone())
            .unwrap_or_default()
    }

    /// Starts a re-scan on a thread of its own, unless one ran in the last few seconds.
    fn rescan_soon(&self, name: &str) {
        let Ok(mut last) = self.last_scan.lock() else {
            return;
        };
        if last.elapsed() < RESCAN_EVERY || self.rescanning.swap(true, Ordering::SeqCst) {
            return;
        }
        *last = Instant::now();
        let (dir, provider, certs, flag, seen) = (
            self.dir.clone(),
            self.provider.clone(),
            self.certs.clone(),
            self.rescanning.clone(),
            self.seen.clone(),
        );
        let name = name.to_string();
        let spawned = std::thread::Builder::new()
            .name("tls-rescan".into())
            .spawn(move || {
                let now = listing(&dir);
                let changed = match seen.lock() {
                    Ok(mut seen) if *seen != now => {
                        *seen = now;
                        true
                    }
                    _ => false,
                };
                if !changed {
                    log::debug!(target: "twistrs.tls",
                        "No certificate for {name:?}; {} has not changed", dir.display());
                    flag.store(false, Ordering::SeqCst);
                    return;
                }
                log::info!(target: "twistrs.tls",
                    "No certificate for {name:?} and {} changed: scanning it again",
                    dir.display());
                match scan(&dir, &provider, false) {
                    Ok(new) => {
                        if let Ok(mut c) = certs.write() {
                            *c = new;
                        }
                    }
                    Err(e) => log::error!(target: "twistrs.tls", "Re-scan failed: {e}"),
                }
                flag.store(false, Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.rescanning.store(false, Ordering::SeqCst);
        }
    }
}

impl ResolvesServerCert for DirResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.read().ok()?;
        let Some(name) = hello.server_name() else {
            return certs.default.clone();
        };
        let name = name.to_ascii_lowercase();
        let wildcard = name
            .split_once('.')
            .map(|(_, parent)| format!("*.{parent}"));
        let found = certs
            .by_name
            .get(&name)
            .or_else(|| wildcard.and_then(|w| certs.by_name.get(&w)))
            .cloned();
        if found.is_some() {
            return found;
        }
        let default = certs.default.clone();
        drop(certs);
        self.rescan_soon(&name);
        default
    }
}

/// The `*.pem` files of `dir`, by name.
pub(super) fn pem_files(dir: &Path) -> Result<Vec<PathBuf>, CertError> {
    let rd = std::fs::read_dir(dir).map_err(|e| CertError::new(dir, e.to_string()))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pem") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Reads the directory: chains and keys paired by public key. `strict`: a file that cannot be
/// used is an error (at start); otherwise it is logged and skipped (a re-scan while running).
fn scan(dir: &Path, provider: &CryptoProvider, strict: bool) -> Result<Certs, CertError> {
    let mut chains: Vec<(PathBuf, Vec<CertificateDer<'static>>)> = Vec::new();
    let mut keys = Vec::new();
    for file in pem_files(dir)? {
        let read = certs::read(&file).and_then(|pem| {
            let chain = certs::certificates(&file, &pem)?;
            let key = certs::private_key(&file, &pem)?;
            Ok((chain, key))
        });
        match read {
            Ok((chain, key)) => {
                if !chain.is_empty() {
                    chains.push((file.clone(), chain));
                }
                if let Some(k) = key {
                    let signing = provider.key_provider.load_private_key(k).map_err(|e| {
                        CertError::new(&file, format!("the private key cannot be used: {e}"))
                    });
                    match signing {
                        Ok(s) => keys.push(s),
                        Err(e) if strict => return Err(e),
                        Err(e) => log::error!(target: "twistrs.tls", "{e}"),
                    }
                }
            }
            Err(e) if strict => return Err(e),
            Err(e) => log::error!(target: "twistrs.tls", "{e}"),
        }
    }
    let mut out = Certs::default();
    for (file, chain) in chains {
        let Ok(ee) = webpki::EndEntityCert::try_from(&chain[0]) else {
            let e = CertError::new(&file, "not a certificate rustls can parse");
            if strict {
                return Err(e);
            }
            log::error!(target: "twistrs.tls", "{e}");
            continue;
        };
        let spki = ee.subject_public_key_info();
        let Some(key) = keys
            .iter()
            .find(|k| k.public_key().is_some_and(|p| p == spki))
        else {
            log::warn!(target: "twistrs.tls",
                "{}: no private key in {} matches this certificate; not served",
                file.display(), dir.display());
            continue;
        };
        certs::warn_if_expired(&file, &chain[0]);
        if let Some(t) = certs::not_after(&chain[0]) {
            out.served.push((file.clone(), t));
        }
        let names: Vec<String> = ee.valid_dns_names().map(str::to_ascii_lowercase).collect();
        let pair = Arc::new(CertifiedKey::new(chain.clone(), key.clone()));
        for n in names {
            out.by_name.entry(n).or_insert_with(|| pair.clone());
        }
        out.default.get_or_insert(pair);
    }
    if out.default.is_none() {
        return Err(CertError::new(
            dir,
            "no certificate with its private key in the directory's *.pem files",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_permission_change_is_a_change_of_the_listing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.pem");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let before = listing(dir.path());
        assert_eq!(before.len(), 1);
        // The change time moves by clock ticks: chmod again until it has moved.
        let old = std::fs::metadata(&file).unwrap();
        for _ in 0..200 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            let now = std::fs::metadata(&file).unwrap();
            if (now.ctime(), now.ctime_nsec()) != (old.ctime(), old.ctime_nsec()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_ne!(
            listing(dir.path()),
            before,
            "a chmod makes the re-scan read again"
        );
    }
}
