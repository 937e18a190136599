//! TLS for every plugin: certificates from files or a directory, a rustls server
//! configuration that a listener shares with its connections, and reloading.
//!
//! A `ssl:` or `tls:` endpoint (or TLS keywords on a `systemd:` one) carries a [`TlsSpec`];
//! the listener turns it into a [`TlsContext`] when it opens, so a missing or bad file is a
//! start-up error naming the file. The context holds the current `rustls::ServerConfig`
//! behind a shared cell: `reload` (SIGHUP) reads the files again and swaps in a new config for
//! new handshakes, while established connections keep the one they started with; a bad new
//! file keeps the old config in service. The TLS stream itself (`stream`) sits below the
//! protocol as a `Socket` (crate::output), so a protocol sees plaintext through the same
//! `Transport` contract.
//!
//! Only TLS 1.3 and 1.2 are offered (rustls has nothing older), with the ring provider, or
//! aws-lc-rs when the `aws-lc-rs` feature is on (both measured in bench/README.md, "TLS").
//! Sessions resume through stateless tickets that every process of the service opens
//! (`tickets`): workers, a restart's successor, and configs swapped in by a reload.

mod certs;
mod client;
mod sni;
pub(crate) mod stream;
mod tickets;

/// A self-signed P-256 certificate for `localhost`, made in `dir` by the `openssl` command
/// (`k.pem`, `c.pem`): the key and certificate files, or `None` without the command. For
/// the core's own tests, which need a TLS listener but test no certificate.
#[cfg(test)]
pub(crate) fn test_cert(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args([
            "-subj",
            "/CN=localhost",
            "-keyout",
            "k.pem",
            "-out",
            "c.pem",
        ])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    Some((dir.join("k.pem"), dir.join("c.pem")))
}

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;

pub use certs::CertError;
pub use client::{ClientTls, ClientTlsSpec};
pub use tickets::{HANDOVER_LEN, forget_expired_tickets, set_ticket_handover, ticket_handover};

/// Where a listener's certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSpec {
    /// `ssl:`: one certificate (with `extraCertChain`) and its key, from PEM files. Without
    /// `cert_key`, `private_key` holds both.
    Files {
        /// `privateKey=`: the key (PEM), and the certificate too without `certKey=`.
        private_key: PathBuf,
        /// `certKey=`: the certificate chain (PEM).
        cert_key: Option<PathBuf>,
        /// `extraCertChain=`: intermediate certificates sent after the certificate.
        extra_chain: Option<PathBuf>,
        /// Accepted, and unused: only ECDHE key exchange is offered.
        dh_parameters: Option<PathBuf>,
        /// twistd's `sslmethod`, as given (only the ones that mean TLS 1.2 or newer parse).
        method: Option<String>,
    },
    /// `tls:CERTDIR`: every certificate of `*.pem` files in the directory, chosen by SNI.
    Dir(PathBuf),
}

/// The protocol versions an `sslmethod` allows: `None` for the default (1.2 and 1.3).
pub fn parse_method(
    m: &str,
) -> Result<Option<&'static [&'static rustls::SupportedProtocolVersion]>, String> {
    static TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    static TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    match m {
        "SSLv23_METHOD" | "TLS_METHOD" | "TLS_SERVER_METHOD" => Ok(None),
        "TLSv1_2_METHOD" => Ok(Some(TLS12)),
        "TLSv1_3_METHOD" => Ok(Some(TLS13)),
        "SSLv2_METHOD" | "SSLv3_METHOD" | "TLSv1_METHOD" | "TLSv1_1_METHOD" => Err(format!(
            "sslmethod={m} asks for a protocol older than TLS 1.2, which twistrs does not \
             offer (TLS 1.2 and 1.3 only)"
        )),
        other => Err(format!(
            "sslmethod={other} is not a method twistrs knows (SSLv23_METHOD, TLS_METHOD, \
             TLSv1_2_METHOD or TLSv1_3_METHOD)"
        )),
    }
}

/// The crypto provider every TLS config uses: aws-lc-rs when its feature is on (it wins over
/// ring, which the plugins' default features always turn on), ring otherwise.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    let p = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    let p = rustls::crypto::ring::default_provider();
    Arc::new(p)
}

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
compile_error!("twistrs-core needs a TLS crypto provider: the feature ring or aws-lc-rs");

/// A listener's TLS: the current server config, swapped on `reload`.
pub struct TlsContext {
    spec: TlsSpec,
    /// Offered in ALPN, in order (the factory's protocols, such as `http/1.1`).
    alpn: Vec<Vec<u8>>,
    current: RefCell<Arc<ServerConfig>>,
    /// The certificates `current` serves, for `certificates`.
    served: RefCell<Served>,
}

/// Which certificate files a config serves: the one of `ssl:`, or what a `tls:` directory's
/// resolver holds now (its re-scans change it without a new config).
#[derive(Clone)]
enum Served {
    Files(Vec<(PathBuf, i64)>),
    Dir(Arc<sni::DirResolver>),
}

impl fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsContext")
            .field("spec", &self.spec)
            .finish()
    }
}

impl TlsContext {
    /// Loads the certificates of `spec`; every problem is an error naming the file.
    pub fn load(spec: &TlsSpec, alpn: &[&[u8]]) -> Result<TlsContext, CertError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let (config, served) = build(spec, &alpn)?;
        note_reread(spec);
        if let TlsSpec::Files {
            dh_parameters: Some(_),
            ..
        } = spec
        {
            // Said once per process, at start: not again for each listener that names
            // dhParameters, nor at each reload (which does not come here).
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                log::info!(target: "twistrs.tls",
                    "dhParameters is accepted and not used: only ECDHE key exchange is offered.");
            });
        }
        Ok(TlsContext {
            spec: spec.clone(),
            alpn,
            current: RefCell::new(config),
            served: RefCell::new(served),
        })
    }

    /// A context for files given to a plugin (a mail server's STARTTLS certificate).
    pub fn from_files(
        private_key: &Path,
        cert_key: Option<&Path>,
        alpn: &[&[u8]],
    ) -> Result<TlsContext, CertError> {
        TlsContext::load(
            &TlsSpec::Files {
                private_key: private_key.to_path_buf(),
                cert_key: cert_key.map(Path::to_path_buf),
                extra_chain: None,
                dh_parameters: None,
                method: None,
            },
            alpn,
        )
    }

    /// The config new handshakes use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.borrow().clone()
    }

    /// Reads the files again; new handshakes use them, established connections are not
    /// touched. A bad file keeps the old certificate in service and is logged. Within one
    /// reload (a SIGHUP), files that several contexts name are read and reported once.
    pub fn reload(&self) {
        match build(&self.spec, &self.alpn) {
            Ok((config, served)) => {
                *self.current.borrow_mut() = config;
                *self.served.borrow_mut() = served;
                say_once(
                    log::Level::Info,
                    format!("Reloaded certificates ({}).", self.describe()),
                );
            }
            Err(e) => say_once(
                log::Level::Error,
                format!("Certificates not reloaded, the old ones stay in service: {e}"),
            ),
        }
    }

    /// Each certificate file in service for new handshakes, with its certificate's notAfter
    /// in seconds since 1970 (the metrics' expiry series): what the last successful load
    /// or reload read, and for a `tls:` directory what its latest scan serves.
    pub fn certificates(&self) -> Vec<(PathBuf, i64)> {
        match &*self.served.borrow() {
            Served::Files(f) => f.clone(),
            Served::Dir(r) => r.served(),
        }
    }

    fn describe(&self) -> String {
        match &self.spec {
            TlsSpec::Files {
                private_key,
                cert_key,
                ..
            } => cert_key
                .as_ref()
                .unwrap_or(private_key)
                .display()
                .to_string(),
            TlsSpec::Dir(d) => d.display().to_string(),
        }
    }
}

/// Notes the files a reload of `spec` reads again (`crate::reread`), for the launcher to try
/// them as the user it drops to.
fn note_reread(spec: &TlsSpec) {
    match spec {
        TlsSpec::Files {
            private_key,
            cert_key,
            extra_chain,
            dh_parameters,
            ..
        } => {
            let files = [
                Some(private_key),
                cert_key.as_ref(),
                extra_chain.as_ref(),
                dh_parameters.as_ref(),
            ];
            for f in files.into_iter().flatten() {
                crate::reread::note_file(f);
            }
        }
        TlsSpec::Dir(d) => {
            crate::reread::note_dir(d);
            for f in sni::pem_files(d).unwrap_or_default() {
                crate::reread::note_file(&f);
            }
        }
    }
}

/// What a spec's files give: the protocol versions `sslmethod` allows (`None`: the default)
/// and the certificates.
type Loaded = (
    Option<&'static [&'static rustls::SupportedProtocolVersion]>,
    Arc<dyn ResolvesServerCert>,
    Served,
);

/// One reload in progress: what was read, by spec, and what was said.
#[derive(Default)]
struct Round {
    read: Vec<(TlsSpec, Result<Loaded, CertError>)>,
    said: Vec<String>,
}

thread_local! {
    /// The reload running on this thread ([`reloading`]), if any. Thread-local: a reactor
    /// and its contexts live on one thread.
    static ROUND: RefCell<Option<Round>> = const { RefCell::new(None) };
}

/// Runs `f` (every reload hook of one SIGHUP) as one reload: the same files named by several
/// listeners, or by a listener and a plugin's own context (mail's STARTTLS certificate and
/// its `ssl:` ports), are read once, share what was read, and are reported in one line, not
/// one per context. A call within `f` joins the reload already running.
pub(crate) fn reloading<R>(f: impl FnOnce() -> R) -> R {
    struct End(bool);
    impl Drop for End {
        fn drop(&mut self) {
            if self.0 {
                ROUND.with(|r| *r.borrow_mut() = None);
            }
        }
    }
    let began = ROUND.with(|r| {
        let mut r = r.borrow_mut();
        if r.is_some() {
            return false;
        }
        *r = Some(Round::default());
        true
    });
    let _end = End(began);
    f()
}

/// Logs `text`, unless the reload running has said it already.
fn say_once(level: log::Level, text: String) {
    let new = ROUND.with(|r| match r.borrow_mut().as_mut() {
        Some(round) if round.said.contains(&text) => false,
        Some(round) => {
            round.said.push(text.clone());
            true
        }
        None => true,
    });
    if new {
        log::log!(target: "twistrs.tls", level, "{text}");
    }
}

/// The certificates of `spec`: read now, or what the reload running read for it already.
fn loaded(spec: &TlsSpec, provider: &Arc<CryptoProvider>) -> Result<Loaded, CertError> {
    let done = ROUND.with(|r| {
        let r = r.borrow();
        let (_, got) = r.as_ref()?.read.iter().find(|(s, _)| s == spec)?;
        Some(got.clone())
    });
    if let Some(got) = done {
        return got;
    }
    let got = read_certs(spec, provider);
    ROUND.with(|r| {
        if let Some(round) = r.borrow_mut().as_mut() {
            round.read.push((spec.clone(), got.clone()));
        }
    });
    got
}

/// A server config for `spec`: TLS 1.2 and 1.3 (or what `sslmethod` narrows it to), no client
/// certificates, `alpn` offered, session tickets shared with the service's other processes;
/// and which certificate files it serves.
fn build(spec: &TlsSpec, alpn: &[Vec<u8>]) -> Result<(Arc<ServerConfig>, Served), CertError> {
    let provider = provider();
    let (versions, resolver, served) = loaded(spec, &provider)?;
    let builder = ServerConfig::builder_with_provider(provider);
    let builder = builder
        .with_protocol_versions(versions.unwrap_or(rustls::DEFAULT_VERSIONS))
        .map_err(|e| CertError::new(Path::new(""), e.to_string()))?;
    let mut config = builder.with_no_client_auth().with_cert_resolver(resolver);
    config.alpn_protocols = alpn.to_vec();
    // Tickets any process of this service opens (`tickets`): one shared ticketer, so a
    // reload's new config resumes the old one's sessions. Without early data (the default 0).
    config.ticketer = tickets::ticketer();
    Ok((Arc::new(config), served))
}

/// Reads the files of `spec` (and checks `sslmethod`).
fn read_certs(spec: &TlsSpec, provider: &Arc<CryptoProvider>) -> Result<Loaded, CertError> {
    Ok(match spec {
        TlsSpec::Files {
            private_key,
            cert_key,
            extra_chain,
            dh_parameters,
            method,
        } => {
            if let Some(dh) = dh_parameters {
                certs::check_dh_parameters(dh)?;
            }
            let versions = match method.as_deref().map(parse_method) {
                Some(Err(e)) => return Err(CertError::new(Path::new(""), e)),
                Some(Ok(v)) => v,
                None => None,
            };
            let key = certs::load_pair(
                private_key,
                cert_key.as_deref(),
                extra_chain.as_deref(),
                provider,
            )?;
            let file = cert_key.as_deref().unwrap_or(private_key);
            let served = key
                .cert
                .first()
                .and_then(|c| certs::not_after(c))
                .map(|t| vec![(file.to_path_buf(), t)])
                .unwrap_or_default();
            (
                versions,
                Arc::new(rustls::sign::SingleCertAndKey::from(key)),
                Served::Files(served),
            )
        }
        TlsSpec::Dir(dir) => {
            let r = Arc::new(sni::DirResolver::scan(dir, provider.clone())?);
            (None, r.clone(), Served::Dir(r))
        }
    })
}
