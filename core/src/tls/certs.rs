//! Certificates and keys from PEM files, with errors that name the file and the problem.
//!
//! A certificate is checked against its key (their public keys must be the same), and an
//! expired one is a warning in the log, not a refusal (a server that will not start is worse
//! than one whose clients complain). The expiry date is read from the certificate's DER
//! (TBSCertificate, then its validity), since the verifier rustls uses does not expose it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate or key file could not be used; `Display` is one line naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertError {
    /// The file that could not be used.
    pub file: PathBuf,
    /// What is wrong with it (missing, no key in it, key and certificate do not match).
    pub problem: String,
}

impl CertError {
    pub(crate) fn new(file: &Path, problem: impl Into<String>) -> CertError {
        CertError {
            file: file.to_path_buf(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.as_os_str().is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.file.display(), self.problem)
        }
    }
}

impl std::error::Error for CertError {}

/// A certificate, key or chain file is a few KiB; 1 MiB leaves room for any real chain.
pub(crate) const PEM_MAX: u64 = 1 << 20;
/// A CA bundle (a system's holds some 150 certificates, about 200 KiB) or a file of
/// `caCertsDir`: room for many times that.
pub(crate) const CA_MAX: u64 = 16 << 20;

/// Reads `path` whole (a regular file of at most `max` bytes, read as root at start: a FIFO
/// or `/dev/zero` at the name must not hang it or fill its memory), or says why not.
pub(crate) fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>, CertError> {
    crate::files::read_config(path, max).map_err(|e| CertError::new(path, e.to_string()))
}

/// A certificate or key file, whole, or why not.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    read_limited(path, PEM_MAX)
}

/// Every certificate in a PEM file (none is an empty list).
pub(crate) fn certificates(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::new(path, format!("not a readable PEM certificate: {e}")))
}

/// The private key of a PEM file, if it holds one. An encrypted key is an error: there is no
/// one to type its passphrase.
pub(crate) fn private_key(
    path: &Path,
    pem: &[u8],
) -> Result<Option<PrivateKeyDer<'static>>, CertError> {
    if memchr::memmem::find(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----").is_some()
        || memchr::memmem::find(pem, b"Proc-Type: 4,ENCRYPTED").is_some()
    {
        return Err(CertError::new(
            path,
            "the private key is encrypted (twistrs cannot ask for its passphrase); decrypt it \
             with 'openssl pkey -in FILE -out FILE'",
        ));
    }
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(k) => Ok(Some(k)),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Ok(None),
        Err(e) => Err(CertError::new(path, format!("not a readable PEM key: {e}"))),
    }
}

/// `dhParameters` names a readable file of DH parameters, as twistd (OpenSSL) requires, though
/// they are not used: a mistyped path is a start-up error, not silently ignored.
pub(crate) fn check_dh_parameters(path: &Path) -> Result<(), CertError> {
    let pem = read(path)?;
    if memchr::memmem::find(&pem, b"-----BEGIN DH PARAMETERS-----").is_none()
        && memchr::memmem::find(&pem, b"-----BEGIN X9.42 DH PARAMETERS-----").is_none()
    {
        return Err(CertError::new(path, "no DH PARAMETERS in the file"));
    }
    Ok(())
}

/// A certificate chain and its key, as `ssl:` names them: `private_key` holds the key (and the
/// certificate, without `cert_key`), `extra_chain` more certificates for the chain.
pub(crate) fn load_pair(
    private_key_file: &Path,
    cert_key: Option<&Path>,
    extra_chain: Option<&Path>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, CertError> {
    let key_pem = read(private_key_file)?;
    let key = private_key(private_key_file, &key_pem)?
        .ok_or_else(|| CertError::new(private_key_file, "no private key in the file"))?;
    let cert_file = cert_key.unwrap_or(private_key_file);
    let cert_pem = if cert_key.is_some() {
        read(cert_file)?
    } else {
        key_pem
    };
    let mut chain = certificates(cert_file, &cert_pem)?;
    if chain.is_empty() {
        return Err(CertError::new(cert_file, "no certificate in the file"));
    }
    if let Some(extra) = extra_chain {
        let more = certificates(extra, &read(extra)?)?;
        if more.is_empty() {
            return Err(CertError::new(extra, "extraCertChain holds no certificate"));
        }
        chain.extend(more);
    }
    warn_if_expired(cert_file, &chain[0]);
    certified(cert_file, chain, key, provider)
}

/// Pairs a chain and a key, refusing a key that does not belong to the certificate.
pub(crate) fn certified(
    cert_file: &Path,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, CertError> {
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::new(cert_file, format!("the private key cannot be used: {e}")))?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(
            CertError::new(cert_file, "the private key does not match the certificate"),
        ),
        Err(e) => Err(CertError::new(
            cert_file,
            format!("unusable certificate: {e}"),
        )),
    }
}

/// Logs a warning if the certificate has expired (or cannot be read for its dates).
pub(crate) fn warn_if_expired(file: &Path, cert: &CertificateDer<'_>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match not_after(cert) {
        Some(t) if t < now => log::warn!(target: "twistrs.tls",
            "{}: the certificate expired {}; clients will refuse it",
            file.display(), expired_ago(now - t)),
        Some(_) => {}
        None => log::warn!(target: "twistrs.tls",
            "{}: cannot read the certificate's validity dates", file.display()),
    }
}

/// How long ago a certificate expired, `secs` (> 0) seconds after its notAfter: in days from
/// one day on, in hours below that, so a certificate that expired this morning does not read
/// "0 days ago".
fn expired_ago(secs: i64) -> String {
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit} ago")
        } else {
            format!("{n} {unit}s ago")
        }
    };
    match secs {
        86_400.. => plural(secs / 86_400, "day"),
        3_600.. => plural(secs / 3_600, "hour"),
        _ => "less than an hour ago".to_string(),
    }
}

/// One DER element: its tag and contents, and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The certificate's notAfter, in seconds since 1970.
pub(crate) fn not_after(cert: &[u8]) -> Option<i64> {
    let (_, certificate, _) = der_element(cert)?;
    let (_, mut tbs, _) = der_element(certificate)?;
    // version [0] (optional), serialNumber, signature, issuer, then validity.
    let (tag, _, rest) = der_element(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    let mut rest = tbs;
    for _ in 0..3 {
        rest = der_element(rest)?.2;
    }
    let (_, validity, _) = der_element(rest)?;
    let (_, _not_before, rest) = der_element(validity)?;
    let (tag, time, _) = der_element(rest)?;
    parse_time(tag, std::str::from_utf8(time).ok()?)
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18).
fn parse_time(tag: u8, s: &str) -> Option<i64> {
    let digits = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if digits.len() == 12 => {
            let yy: i64 = digits.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        0x18 if digits.len() == 14 => (digits.get(..4)?.parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, h, m, sec) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    Some(days_from_civil(year, month, day)? * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2000, 3, 1), Some(11_017));
        assert_eq!(parse_time(0x17, "700101000000Z"), Some(0));
        assert_eq!(parse_time(0x18, "20380119031408Z"), Some(2_147_483_648));
        assert_eq!(
            parse_time(0x17, "491231235959Z"),
            parse_time(0x18, "20491231235959Z")
        );
        assert_eq!(parse_time(0x17, "70010100000Z"), None);
        assert_eq!(parse_time(0x18, "20241301000000Z"), None);
    }

    #[test]
    fn expiry_is_said_in_days_or_hours() {
        assert_eq!(expired_ago(1), "less than an hour ago");
        assert_eq!(expired_ago(3_599), "less than an hour ago");
        assert_eq!(expired_ago(3_600), "1 hour ago");
        assert_eq!(expired_ago(86_399), "23 hours ago");
        assert_eq!(expired_ago(86_400), "1 day ago");
        assert_eq!(expired_ago(2 * 86_400 - 1), "1 day ago");
        assert_eq!(expired_ago(400 * 86_400), "400 days ago");
    }

    #[test]
    fn der_elements_are_bounded() {
        assert_eq!(
            der_element(&[0x30, 0x02, 1, 2, 9]),
            Some((0x30, &[1u8, 2][..], &[9u8][..]))
        );
        assert_eq!(der_element(&[0x30, 0x05, 1]), None, "shorter than it says");
        assert_eq!(der_element(&[0x30, 0x82, 0x01]), None, "a cut long length");
        assert_eq!(not_after(&[0x30, 0x00]), None);
        assert_eq!(not_after(b"garbage"), None);
    }
}
