//! The client side of TLS: what an `ssl:` client endpoint asks for (trust roots, the name to
//! verify, a client certificate), loaded into a rustls client config once, at start.
//!
//! Verification is always on. The trust roots are every certificate of the `*.pem` files in
//! `caCertsDir`, or else the system's CA bundle, the file OpenSSL reads (`SSL_CERT_FILE`, or
//! the first of the usual distribution paths that exists): read with the PEM parser rustls
//! already brings, so no new dependency (rustls-native-certs would find the same file;
//! webpki-roots would freeze a copy of Mozilla's list into the binary, which the system's
//! updates then never reach).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName};

use super::certs::{self, CertError};

/// Where the system's CA bundle may be, in the order OpenSSL-based distributions put it.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// An `ssl:` client endpoint's TLS options, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsSpec {
    /// The name verified against the server's certificate, and sent as SNI (an address is
    /// verified against the certificate's IP SANs, and not sent).
    pub hostname: String,
    /// `caCertsDir`: the trust roots; `None`: the system's.
    pub ca_certs_dir: Option<PathBuf>,
    /// `certKey`: the client certificate (and its key, without `privateKey`).
    pub cert_key: Option<PathBuf>,
    /// `privateKey`: the client certificate's key.
    pub private_key: Option<PathBuf>,
}

/// A loaded client TLS setup: the config and the name every connection verifies.
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) name: ServerName<'static>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("name", &self.name)
            .finish()
    }
}

/// Every certificate of the `*.pem` files in `dir` (as Twisted's `caCertsDir` takes them).
fn dir_roots(dir: &Path, roots: &mut RootCertStore) -> Result<(), CertError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CertError::new(dir, e.to_string()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .collect();
    files.sort();
    for f in &files {
        let pem = certs::read_limited(f, certs::CA_MAX)?;
        add_all(f, &certs::certificates(f, &pem)?, roots)?;
    }
    if roots.is_empty() {
        return Err(CertError::new(
            dir,
            "caCertsDir holds no certificate in a *.pem file",
        ));
    }
    Ok(())
}

fn add_all(
    file: &Path,
    certs: &[CertificateDer<'static>],
    roots: &mut RootCertStore,
) -> Result<(), CertError> {
    for c in certs {
        roots
            .add(c.clone())
            .map_err(|e| CertError::new(file, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(())
}

/// The system's CA bundle (certificates rustls cannot use are skipped, as OpenSSL does).
fn system_roots(roots: &mut RootCertStore) -> Result<(), CertError> {
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let file = env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CertError::new(
                Path::new(SYSTEM_BUNDLES[0]),
                "no system CA bundle found (install ca-certificates, or give caCertsDir=DIR)",
            )
        })?;
    let pem = certs::read_limited(&file, certs::CA_MAX)?;
    let (added, _) = roots.add_parsable_certificates(certs::certificates(&file, &pem)?);
    if added == 0 {
        return Err(CertError::new(
            &file,
            "no usable CA certificate in the file",
        ));
    }
    Ok(())
}

impl ClientTlsSpec {
    /// The name to verify, as rustls takes it.
    fn server_name(&self) -> Result<ServerName<'static>, String> {
        let bare = self
            .hostname
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(&self.hostname);
        ServerName::try_from(bare.to_string())
            .map_err(|_| format!("hostname '{}' is not a valid DNS name or address", bare))
    }

    /// Checks the name; the files are read by [`ClientTlsSpec::load`].
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.private_key.is_some() && self.cert_key.is_none() {
            return Err("privateKey needs certKey (the client certificate)".into());
        }
        self.server_name().map(|_| ())
    }

    /// Reads the trust roots and the client certificate; every problem names the file.
    pub fn load(&self) -> Result<ClientTls, CertError> {
        let name = self
            .server_name()
            .map_err(|e| CertError::new(Path::new(""), e))?;
        let mut roots = RootCertStore::empty();
        match &self.ca_certs_dir {
            Some(dir) => dir_roots(dir, &mut roots)?,
            None => system_roots(&mut roots)?,
        }
        let provider = super::provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(|e| CertError::new(Path::new(""), e.to_string()))?
            .with_root_certificates(roots);
        let config = match &self.cert_key {
            Some(cert) => {
                let key_file = self.private_key.as_deref().unwrap_or(cert);
                let key = certs::load_pair(key_file, Some(cert), None, &provider)?;
                builder
                    .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)))
            }
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls {
            config: Arc::new(config),
            name,
        })
    }
}
