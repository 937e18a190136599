//! The TLS layer end to end (issue 10): `ssl:`, `tls:CERTDIR` and TLS on `systemd:` sockets,
//! served by the real binary's echo plugin to real clients (Python's ssl, `openssl s_client`),
//! with certificates made at run time by the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

mod client;
mod endpoints;
mod failures;
mod relay;
mod reload;
mod resume;
mod room;
mod streams;

/// A new ECDSA P-256 key, unencrypted, for `openssl req`.
const NEW_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";

/// Runs `openssl ARGS` (split at spaces) in `dir`; panics with its stderr if it fails.
pub(crate) fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed P-256 certificate for localhost and 127.0.0.1 and its key, made now in a
/// directory (no key is committed): `NAME-key.pem`, `NAME-cert.pem`, and `NAME.pem` with both.
pub(crate) struct Cert {
    pub(crate) key: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) both: PathBuf,
}

pub(crate) fn self_signed(dir: &Path, name: &str) -> Cert {
    openssl(
        dir,
        &format!(
            "req -x509 {NEW_KEY} -days 2 -subj /CN=localhost \
             -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
             -keyout {name}-key.pem -out {name}-cert.pem"
        ),
    );
    let (key, cert, both) = (
        dir.join(format!("{name}-key.pem")),
        dir.join(format!("{name}-cert.pem")),
        dir.join(format!("{name}.pem")),
    );
    let pem = [std::fs::read(&key).unwrap(), std::fs::read(&cert).unwrap()].concat();
    std::fs::write(&both, pem).unwrap();
    Cert { key, cert, both }
}

/// A test PKI in a temporary directory: a CA, and certificates it (or an intermediate) signs.
/// Files are `NAME-key.pem` and `NAME-cert.pem`; `ca-cert.pem` is what clients trust.
struct Pki {
    dir: tempfile::TempDir,
}

static SERIAL: AtomicU32 = AtomicU32::new(1000);

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        openssl(
            pki.dir.path(),
            &format!(
                "req -x509 {NEW_KEY} -keyout ca-key.pem -out ca-cert.pem -days 2 \
                 -subj /CN=twistrs-test-CA"
            ),
        );
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A file of the PKI as an endpoint argument.
    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// The CA's certificate, for clients.
    fn ca(&self) -> String {
        self.arg("ca-cert.pem")
    }

    /// A key and a certificate for `cn` with DNS `sans`, signed by `issuer` (a name of this
    /// PKI, "ca" for the CA); `ca_ext` makes it an intermediate CA.
    fn issue(&self, name: &str, cn: &str, sans: &[&str], issuer: &str, ca_ext: bool) {
        let dir = self.dir.path();
        let (key, cert, csr, ext) = (
            format!("{name}-key.pem"),
            format!("{name}-cert.pem"),
            format!("{name}.csr"),
            format!("{name}.ext"),
        );
        openssl(
            dir,
            &format!("req -new {NEW_KEY} -keyout {key} -out {csr} -subj /CN={cn}"),
        );
        let mut e = String::new();
        if ca_ext {
            e.push_str(
                "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
            );
        } else {
            e.push_str("basicConstraints=CA:FALSE\n");
        }
        if !sans.is_empty() {
            // `IP:ADDR` as given; any other name is a DNS name.
            let list: Vec<String> = sans
                .iter()
                .map(|s| {
                    if s.starts_with("IP:") {
                        s.to_string()
                    } else {
                        format!("DNS:{s}")
                    }
                })
                .collect();
            e.push_str(&format!("subjectAltName={}\n", list.join(",")));
        }
        std::fs::write(dir.join(&ext), e).unwrap();
        let serial = SERIAL.fetch_add(1, Ordering::SeqCst).to_string();
        openssl(
            dir,
            &format!(
                "x509 -req -in {csr} -CA {issuer}-cert.pem -CAkey {issuer}-key.pem \
                 -set_serial {serial} -days 2 -extfile {ext} -out {cert}"
            ),
        );
    }

    /// A leaf certificate signed by the CA.
    fn leaf(&self, name: &str, cn: &str, sans: &[&str]) {
        self.issue(name, cn, sans, "ca", false);
    }

    /// `NAME.pem`: the key and the certificate in one file.
    fn combined(&self, name: &str) -> String {
        let mut both = std::fs::read(self.path(&format!("{name}-key.pem"))).unwrap();
        both.extend(std::fs::read(self.path(&format!("{name}-cert.pem"))).unwrap());
        let path = self.path(&format!("{name}.pem"));
        std::fs::write(&path, both).unwrap();
        path.display().to_string()
    }
}

/// What every Python client below starts with: `connect` makes a TLS connection that trusts
/// `ca` ("-": trusts nothing, checks nothing) and sends `sni` ("-": no SNI); `describe` prints
/// the certificate received.
pub(crate) const PRELUDE: &str = r#"
import select, socket, ssl, sys, time, warnings
warnings.simplefilter('ignore')
def context(ca, maxv=None):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    if ca == '-':
        c.verify_mode = ssl.CERT_NONE
    else:
        c.load_verify_locations(ca)
    if maxv:
        c.minimum_version = ssl.TLSVersion.TLSv1
        c.maximum_version = getattr(ssl.TLSVersion, maxv)
        c.set_ciphers('ALL:@SECLEVEL=0')
    return c
# Seconds a client waits for each answer; a test whose server may be starved of CPU sets more.
TIMEOUT = 5
def connect(port, ca, sni, maxv=None):
    s = socket.create_connection(('127.0.0.1', int(port)), timeout=TIMEOUT)
    # A TCP close without close_notify is an error, not a quiet end.
    return context(ca, maxv).wrap_socket(s, server_hostname=None if sni == '-' else sni,
                                         suppress_ragged_eofs=False)
def cn(s):
    c = s.getpeercert()
    names = [v for rdn in c.get('subject', ()) for (k, v) in rdn if k == 'commonName']
    return names[0] if names else ''
def describe(s):
    c = s.getpeercert()
    print('version=' + s.version())
    print('cn=' + cn(s))
    print('san=' + ','.join(v for (k, v) in c.get('subjectAltName', ())))
    print('serial=' + c.get('serialNumber', ''), flush=True)
def echo(s, data):
    s.sendall(data)
    got = b''
    while len(got) < len(data):
        d = s.recv(len(data) - len(got))
        if not d:
            break
        got += d
    return got
# Prints the echo of a ping over a new connection, or the error, and the seconds it took.
def timed(port, ca):
    t = time.monotonic()
    try:
        s = connect(port, ca, 'localhost')
        print('echo=' + echo(s, b'ping over TLS').decode())
    except (ssl.SSLError, OSError) as e:
        print('error=' + str(e))
    print('took=%.3f' % (time.monotonic() - t), flush=True)
"#;

/// Runs Python's `PRELUDE` + `body` with `args` (bounded by `limit`); its stdout. Panics with
/// its stderr if it fails.
fn python(body: &str, args: &[&str], limit: Duration) -> String {
    let child = spawn_python(body, args);
    let out = wait_output(child, limit);
    assert!(
        out.status.success(),
        "python {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn spawn_python(body: &str, args: &[&str]) -> Child {
    Command::new("python3")
        .arg("-c")
        .arg(format!("{PRELUDE}\n{body}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3")
}

/// Waits (bounded) for `child` and collects its output; kills it (by its PID) past `limit`.
fn wait_output(mut child: Child, limit: Duration) -> std::process::Output {
    drop(child.stdin.take());
    let end = Instant::now() + limit;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "client did not finish in {limit:?}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

/// The value of `key=` in a client's output.
fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// One TLS connection: the certificate received and the echo of `ping`, or `error=`.
const ONE: &str = r#"
port, ca, sni = sys.argv[1:4]
try:
    s = connect(port, ca, sni, sys.argv[4] if len(sys.argv) > 4 else None)
except (ssl.SSLError, OSError) as e:
    print('error=' + str(e))
    sys.exit(0)
describe(s)
print('echo=' + echo(s, b'ping over TLS').decode())
"#;

/// Connects once to `port` with SNI `sni` ("-" for none), trusting `ca`.
fn tls_once(port: u16, ca: &str, sni: &str) -> String {
    python(ONE, &[&port.to_string(), ca, sni], Duration::from_secs(15))
}

/// [`assert_serves`] for a client that waits up to 30 s for each answer (see
/// `tls::reload::PATIENT`).
fn assert_serves_patiently(port: u16, ca: &str, sni: &str, cn: &str) {
    let body = format!("TIMEOUT = 30\n{ONE}");
    let out = python(
        &body,
        &[&port.to_string(), ca, sni],
        Duration::from_secs(60),
    );
    assert_eq!(field(&out, "echo"), Some("ping over TLS"), "{out}");
    assert_eq!(field(&out, "cn"), Some(cn), "SNI {sni}: {out}");
}

/// Asserts a TLS echo works and the certificate's common name is `cn`.
fn assert_serves(port: u16, ca: &str, sni: &str, cn: &str) -> String {
    let out = tls_once(port, ca, sni);
    assert_eq!(field(&out, "echo"), Some("ping over TLS"), "{out}");
    assert_eq!(field(&out, "cn"), Some(cn), "SNI {sni}: {out}");
    out
}

/// `twistrs -n --pidfile= echo --listen ENDPOINT` (more args after it).
fn echo_server(endpoint: &str, more: &[&str]) -> Server {
    let mut args = vec!["--pidfile=", "echo", "--listen", endpoint];
    args.extend_from_slice(more);
    Server::start(&args)
}

fn count(server: &Server, needle: &str) -> usize {
    server.lines().iter().filter(|l| l.contains(needle)).count()
}

/// A `tls:` directory: `a.pem` (key and certificate for alpha.test), `b-cert.pem` and
/// `b-key.pem` (beta.test, www.beta.test), `c.pem` (*.wild.test). `a.pem` is first by name.
fn cert_dir(pki: &Pki) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    pki.leaf("alpha", "alpha", &["alpha.test"]);
    pki.leaf("beta", "beta", &["beta.test", "www.beta.test"]);
    pki.leaf("wild", "wild", &["*.wild.test"]);
    std::fs::copy(pki.combined("alpha"), dir.path().join("a.pem")).unwrap();
    std::fs::copy(pki.path("beta-cert.pem"), dir.path().join("b-cert.pem")).unwrap();
    std::fs::copy(pki.path("beta-key.pem"), dir.path().join("b-key.pem")).unwrap();
    std::fs::copy(pki.combined("wild"), dir.path().join("c.pem")).unwrap();
    // Not a *.pem: never read.
    std::fs::write(dir.path().join("README"), "not a certificate").unwrap();
    dir
}

/// Replaces `to` with `from` in one rename, as a certificate manager does.
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}
