//! The TLS layer end to end (issue 10): `ssl:`, `tls:CERTDIR` and TLS on `systemd:` sockets,
//! served by the real binary's echo plugin to real clients (Python's ssl, `openssl s_client`),
//! with certificates made at run time by the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

/// Runs `openssl ARGS` (split at spaces) in `dir`; panics with its stderr if it fails.
fn openssl(dir: &Path, args: &str) {
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
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca-key.pem -out ca-cert.pem -days 2 -subj /CN=twistrs-test-CA",
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
            &format!(
                "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {key} -out {csr} -subj /CN={cn}"
            ),
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
            let list: Vec<String> = sans.iter().map(|s| format!("DNS:{s}")).collect();
            e.push_str(&format!("subjectAltName={}\n", list.join(",")));
        }
        std::fs::write(dir.join(&ext), e).unwrap();
        let serial = SERIAL.fetch_add(1, Ordering::SeqCst).to_string();
        openssl(
            dir,
            &format!(
                "x509 -req -in {csr} -CA {issuer}-cert.pem -CAkey {issuer}-key.pem -set_serial {serial} -days 2 -extfile {ext} -out {cert}"
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
const PRELUDE: &str = r#"
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
def connect(port, ca, sni, maxv=None):
    s = socket.create_connection(('127.0.0.1', int(port)), timeout=5)
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

fn spawn_python(body: &str, args: &[&str]) -> Child {
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

#[test]
fn ssl_with_a_combined_pem_and_with_separate_key_and_certificate() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let s = echo_server(&format!("ssl:0:privateKey={both}:interface=127.0.0.1"), &[]);
    let out = assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
    assert_eq!(field(&out, "version"), Some("TLSv1.3"), "{out}");
    let sep = format!(
        "ssl:0:privateKey={}:certKey={}:interface=127.0.0.1",
        pki.arg("server-key.pem"),
        pki.arg("server-cert.pem")
    );
    let s2 = echo_server(&sep, &[]);
    assert_serves(s2.port(), &pki.ca(), "localhost", "localhost");
    // openssl s_client verifies against the CA too.
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", s2.port())])
        .args([
            "-CAfile",
            &pki.ca(),
            "-servername",
            "localhost",
            "-verify_return_error",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
}

/// The certificates `openssl s_client -showcerts` received.
fn served_chain(port: u16) -> usize {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-showcerts",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .matches("-----BEGIN CERTIFICATE-----")
        .count()
}

#[test]
fn extra_cert_chain_serves_the_intermediate() {
    let pki = Pki::new();
    pki.issue("inter", "twistrs-test-intermediate", &[], "ca", true);
    pki.issue("server", "localhost", &["localhost"], "inter", false);
    let key = pki.arg("server-key.pem");
    let cert = pki.arg("server-cert.pem");
    // Without the intermediate a client that trusts only the CA cannot verify the chain.
    let bare = echo_server(
        &format!("ssl:0:privateKey={key}:certKey={cert}:interface=127.0.0.1"),
        &[],
    );
    let out = tls_once(bare.port(), &pki.ca(), "localhost");
    assert!(
        field(&out, "error").is_some_and(|e| e.contains("certificate verify failed")),
        "{out}"
    );
    assert_eq!(served_chain(bare.port()), 1);
    let chained = echo_server(
        &format!(
            "ssl:0:privateKey={key}:certKey={cert}:extraCertChain={}:interface=127.0.0.1",
            pki.arg("inter-cert.pem")
        ),
        &[],
    );
    assert_serves(chained.port(), &pki.ca(), "localhost", "localhost");
    assert_eq!(served_chain(chained.port()), 2);
}

#[test]
fn dh_parameters_are_accepted_with_one_log_line() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    openssl(
        pki.dir.path(),
        "genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048 -out dh.pem",
    );
    let s = echo_server(
        &format!(
            "ssl:0:privateKey={both}:dhParameters={}:interface=127.0.0.1",
            pki.arg("dh.pem")
        ),
        &[],
    );
    assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
    // Said once: not at each reload either.
    assert!(s.wait_catches(1));
    s.signal(1);
    assert!(s.log_contains("Reloaded certificates"));
    assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
    assert_eq!(
        count(&s, "dhParameters is accepted and not used"),
        1,
        "{:?}",
        s.lines()
    );
}

#[test]
fn sslmethod_tls_1_2_only_and_older_methods_refused() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let s = echo_server(
        &format!("ssl:0:privateKey={both}:sslmethod=TLSv1_2_METHOD:interface=127.0.0.1"),
        &[],
    );
    let out = assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
    assert_eq!(field(&out, "version"), Some("TLSv1.2"), "{out}");
    for old in ["TLSv1_1_METHOD", "TLSv1_METHOD", "SSLv3_METHOD"] {
        let ep = format!("ssl:0:privateKey={both}:sslmethod={old}:interface=127.0.0.1");
        let (code, out, err) = run(&["-n", "--pidfile=", "echo", "--listen", &ep]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            err.contains(old) && err.contains("older than TLS 1.2"),
            "{err}"
        );
    }
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

#[test]
fn tls_certdir_picks_by_sni_with_a_wildcard_and_a_default() {
    let pki = Pki::new();
    let dir = cert_dir(&pki);
    let s = echo_server(
        &format!("tls:{}:port=0:interface=127.0.0.1", dir.path().display()),
        &[],
    );
    let port = s.port();
    for (sni, cn) in [
        ("alpha.test", "alpha"),
        ("beta.test", "beta"),
        ("WWW.Beta.Test", "beta"),
        ("x.wild.test", "wild"),
        // One label below the wildcard only; the rest get the first file's.
        ("a.b.wild.test", "alpha"),
        ("wild.test", "alpha"),
        ("unknown.test", "alpha"),
        ("-", "alpha"),
    ] {
        assert_serves(port, &pki.ca(), sni, cn);
    }
    // openssl s_client -servername agrees.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "www.beta.test",
        ])
        .args([
            "-CAfile",
            &pki.ca(),
            "-verify_hostname",
            "www.beta.test",
            "-verify_return_error",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CN = beta") && text.contains("Verify return code: 0 (ok)"),
        "{text}"
    );
}

/// Connects with SNI `argv[4]` every 100 ms until the certificate has the common name
/// `argv[5]` (at most 15 s): `tries=` and the first common name received.
const UNTIL_CN: &str = r#"
port, ca, sni, want = sys.argv[1:5]
end = time.time() + 15
tries, first, got = 0, None, None
while time.time() < end:
    s = connect(port, ca, sni)
    got = cn(s)
    assert echo(s, b'x') == b'x'
    s.close()
    tries += 1
    first = first or got
    if got == want:
        break
    time.sleep(0.1)
print('tries=%d' % tries)
print('first=' + first)
print('last=' + got, flush=True)
"#;

#[test]
fn a_certificate_dropped_into_certdir_is_served_without_a_signal() {
    let pki = Pki::new();
    let dir = cert_dir(&pki);
    let s = echo_server(
        &format!("tls:{}:port=0:interface=127.0.0.1", dir.path().display()),
        &[],
    );
    pki.leaf("new", "new", &["new.test"]);
    // Written under another name and renamed, as a certificate manager does.
    let tmp = dir.path().join("new.pem.tmp");
    std::fs::copy(pki.combined("new"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.path().join("new.pem")).unwrap();
    let start = Instant::now();
    let out = python(
        UNTIL_CN,
        &[&s.port().to_string(), &pki.ca(), "new.test", "new"],
        Duration::from_secs(30),
    );
    assert_eq!(field(&out, "last"), Some("new"), "{out}");
    assert_eq!(
        field(&out, "first"),
        Some("alpha"),
        "the default until the re-scan: {out}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(s.log_contains("scanning it again"));
    // The others are still served.
    assert_serves(s.port(), &pki.ca(), "beta.test", "beta");
}

#[test]
fn tls_1_1_and_1_0_are_refused_with_one_log_line() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let s = echo_server(&format!("ssl:0:privateKey={both}:interface=127.0.0.1"), &[]);
    for (i, maxv) in ["TLSv1_1", "TLSv1"].iter().enumerate() {
        let out = python(
            ONE,
            &[&s.port().to_string(), "-", "-", maxv],
            Duration::from_secs(15),
        );
        assert!(field(&out, "error").is_some(), "{maxv}: {out}");
        assert!(
            s.wait_until(
                |l| l.iter().filter(|x| x.contains("TLS failed")).count() == i + 1,
                Duration::from_secs(5)
            )
            .is_some(),
            "one line per refused client: {:?}",
            s.lines()
        );
    }
    assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
    assert_eq!(count(&s, "TLS failed"), 2, "{:?}", s.lines());
    assert_eq!(
        count(&s, "offers no protocol version"),
        2,
        "{:?}",
        s.lines()
    );
}

/// Makes `openssl ca` sign a certificate valid only in January 2020 (OpenSSL 3.0's `req` and
/// `x509` take no start date and no negative `-days`; `ca` takes both dates).
fn expired(pki: &Pki) -> String {
    let dir = pki.dir.path();
    openssl(
        dir,
        "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout old-key.pem -out old.csr -subj /CN=localhost",
    );
    std::fs::write(dir.join("index.txt"), "").unwrap();
    // Extensions make it X.509 v3 (rustls refuses v1 certificates).
    std::fs::write(dir.join("old.ext"), "subjectAltName=DNS:localhost\n").unwrap();
    std::fs::write(dir.join("serial.txt"), "01\n").unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial.txt\n\
         default_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n",
    )
    .unwrap();
    openssl(
        dir,
        "ca -batch -config ca.cnf -cert ca-cert.pem -keyfile ca-key.pem -in old.csr -startdate 20200101000000Z -enddate 20200102000000Z -extfile old.ext -notext -out old-cert.pem",
    );
    pki.combined("old")
}

/// Starts `echo --listen ENDPOINT` with `-n` and as a daemon; both must exit 1 with one line
/// on stderr that contains every one of `want`.
fn assert_refused(endpoint: &str, want: &[&str]) {
    for daemon in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["echo", "--listen", endpoint];
        if !daemon {
            args.splice(0..0, ["-n", "--pidfile="]);
        }
        let (code, out, err) = run_in(dir.path(), &args);
        assert_eq!(code, 1, "daemon {daemon}, {endpoint}: {out}{err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "daemon {daemon}, one line: {err}");
        for w in want {
            assert!(lines[0].contains(w), "daemon {daemon}: {w:?} in {err}");
        }
        assert!(!dir.path().join("twistrs.pid").exists(), "{endpoint}");
    }
}

#[test]
fn start_up_problems_are_one_line_naming_the_file_and_exit_1() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    pki.leaf("other", "other", &["other.test"]);
    let (key, cert) = (pki.arg("server-key.pem"), pki.arg("server-cert.pem"));
    let other_key = pki.arg("other-key.pem");
    let missing = pki.arg("missing.pem");
    openssl(
        pki.dir.path(),
        "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -aes256 -pass pass:x -out encrypted-key.pem",
    );
    let encrypted = pki.arg("encrypted-key.pem");
    std::fs::create_dir(pki.path("a-directory.pem")).unwrap();
    let unreadable = pki.arg("a-directory.pem");
    let garbage = pki.arg("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let ssl = |kw: &str| format!("ssl:0:{kw}:interface=127.0.0.1");
    assert_refused(
        &ssl(&format!("privateKey={missing}")),
        &[&missing, "No such file"],
    );
    assert_refused(
        &ssl(&format!("privateKey={key}:certKey={missing}")),
        &[&missing, "No such file"],
    );
    assert_refused(
        &ssl(&format!("privateKey={unreadable}")),
        &[&unreadable, "directory"],
    );
    assert_refused(
        &ssl(&format!("privateKey={other_key}:certKey={cert}")),
        &[&cert, "does not match"],
    );
    assert_refused(
        &ssl(&format!("privateKey={encrypted}:certKey={cert}")),
        &[&encrypted, "encrypted"],
    );
    assert_refused(
        &ssl(&format!("privateKey={key}")),
        &[&key, "no certificate"],
    );
    assert_refused(
        &ssl(&format!("privateKey={cert}")),
        &[&cert, "no private key"],
    );
    assert_refused(
        &ssl(&format!("privateKey={key}:certKey={garbage}")),
        &[&garbage],
    );
    assert_refused(
        &ssl(&format!(
            "privateKey={key}:certKey={cert}:extraCertChain={key}"
        )),
        &[&key, "extraCertChain holds no certificate"],
    );
    assert_refused(
        &ssl(&format!(
            "privateKey={key}:certKey={cert}:dhParameters={missing}"
        )),
        &[&missing, "No such file"],
    );
    assert_refused(
        &ssl(&format!(
            "privateKey={key}:certKey={cert}:dhParameters={cert}"
        )),
        &[&cert, "no DH PARAMETERS"],
    );
    // A certificate directory: missing, or without a certificate and its key.
    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(&key, empty.path().join("only-a-key.pem")).unwrap();
    let empty_dir = empty.path().display().to_string();
    assert_refused(
        &format!("tls:{missing}:port=0:interface=127.0.0.1"),
        &[&missing],
    );
    assert_refused(
        &format!("tls:{empty_dir}:port=0:interface=127.0.0.1"),
        &[&empty_dir, "no certificate"],
    );
    let enc_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&encrypted, enc_dir.path().join("k.pem")).unwrap();
    std::fs::copy(&cert, enc_dir.path().join("c.pem")).unwrap();
    assert_refused(
        &format!(
            "tls:{}:port=0:interface=127.0.0.1",
            enc_dir.path().display()
        ),
        &["k.pem", "encrypted"],
    );
}

#[test]
fn an_expired_certificate_is_a_warning() {
    let pki = Pki::new();
    let old = expired(&pki);
    let s = echo_server(&format!("ssl:0:privateKey={old}:interface=127.0.0.1"), &[]);
    assert!(s.log_contains("the certificate expired"), "{:?}", s.lines());
    assert!(s.log_contains(&old));
    // It serves (a client that checks the dates refuses it, one that does not is served).
    let out = tls_once(s.port(), &pki.ca(), "localhost");
    assert!(
        field(&out, "error").is_some_and(|e| e.contains("expired")),
        "{out}"
    );
    let out = tls_once(s.port(), "-", "localhost");
    assert_eq!(field(&out, "echo"), Some("ping over TLS"), "{out}");
}

/// `argv[3]` "after": echoes, then closes with close_notify and waits for the server's.
/// "half": sends, closes its sending side at once (close_notify), then reads the echo to the
/// end: `close=clean` only if the end is the server's close_notify. (Through memory BIOs:
/// a socket's unwrap() would read on, and fail on the echo still coming.)
const HALF: &str = r#"
port, ca, mode = sys.argv[1:4]
data = b'half-closed ' * 2000
if mode == 'after':
    s = connect(port, ca, 'localhost')
    assert echo(s, data) == data
    s.unwrap()
    print('close=clean', flush=True)
    sys.exit(0)
sock = socket.create_connection(('127.0.0.1', int(port)), timeout=5)
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = context(ca).wrap_bio(incoming, outgoing, server_hostname='localhost')
def send_out():
    d = outgoing.read()
    if d:
        sock.sendall(d)
def take_in():
    d = sock.recv(65536)
    if d:
        incoming.write(d)
    else:
        incoming.write_eof()
while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        send_out()
        take_in()
send_out()
tls.write(data)
try:
    tls.unwrap()
except ssl.SSLWantReadError:
    pass
send_out()
got, close = b'', 'none'
while True:
    try:
        d = tls.read(65536)
    except ssl.SSLWantReadError:
        take_in()
        continue
    except ssl.SSLZeroReturnError:
        close = 'clean'
        break
    except ssl.SSLError as e:
        close = 'error ' + str(e)
        break
    if not d:
        close = 'clean'
        break
    got += d
print('same=%s' % (got == data))
print('close=' + close, flush=True)
"#;

#[test]
fn closes_are_tls_close_notify_both_ways() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let s = echo_server(&format!("ssl:0:privateKey={both}:interface=127.0.0.1"), &[]);
    let port = s.port().to_string();
    let limit = Duration::from_secs(20);
    let out = python(HALF, &[&port, &pki.ca(), "after"], limit);
    assert_eq!(field(&out, "close"), Some("clean"), "{out}");
    let out = python(HALF, &[&port, &pki.ca(), "half"], limit);
    assert_eq!(field(&out, "same"), Some("True"), "{out}");
    assert_eq!(field(&out, "close"), Some("clean"), "{out}");
}

/// Reads until the server closes (EOF or a reset); what came before.
fn read_until_closed(c: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("not closed: {e} after {got:?}"),
        }
    }
}

#[test]
fn plaintext_and_garbage_get_an_alert_or_a_close_and_one_line() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let s = echo_server(&format!("ssl:0:privateKey={both}:interface=127.0.0.1"), &[]);
    let garbage: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let payloads: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"EHLO client.example\r\n",
        &garbage,
        // A handshake record holding no handshake.
        b"\x16\x03\x01\x00\x05hello",
    ];
    for (i, payload) in payloads.iter().enumerate() {
        let mut c = connect(s.addr());
        send(&mut c, payload);
        let got = read_until_closed(&mut c);
        // Nothing, or one TLS alert record (content type 21).
        assert!(
            got.is_empty() || (got[0] == 21 && got.len() == 7),
            "{i}: {got:?}"
        );
        assert!(
            s.wait_until(
                |l| l.iter().filter(|x| x.contains("TLS failed")).count() == i + 1,
                Duration::from_secs(5)
            )
            .is_some(),
            "{i}: one line each: {:?}",
            s.lines()
        );
    }
    assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
    assert_eq!(count(&s, "TLS failed"), payloads.len(), "{:?}", s.lines());
    // The log says what the two plaintext clients likely were.
    assert!(
        count(&s, "TLS failed: not TLS (plaintext") >= 2,
        "{:?}",
        s.lines()
    );
}

#[test]
fn a_handshake_that_never_completes_is_closed_after_10_s_and_frees_its_slot() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    // Two slots, both taken by stalled handshakes: nothing else is accepted until they go.
    let s = echo_server(
        &format!("ssl:0:privateKey={both}:interface=127.0.0.1"),
        &["--max-connections", "2"],
    );
    let start = Instant::now();
    let mut silent = connect(s.addr());
    let mut half = connect(s.addr());
    // The start of a ClientHello record that says 512 bytes follow; 40 do.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    hello.extend([7u8; 29]);
    send(&mut half, &hello);
    for c in [&mut silent, &mut half] {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        assert!(read_until_closed(c).is_empty());
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert!(s.log_contains("TLS handshake not done after 10s; closing."));
    assert_eq!(count(&s, "TLS handshake not done"), 2, "{:?}", s.lines());
    // Their slots are free: a client is accepted and served.
    assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
}

/// One TLS connection kept open: prints `cn=`, then echoes each line of stdin (`echo=`).
const SESSION: &str = r#"
port, ca = sys.argv[1:3]
s = connect(port, ca, 'localhost')
print('cn=' + cn(s), flush=True)
for line in sys.stdin:
    word = line.strip().encode()
    print('echo=' + echo(s, word).decode(), flush=True)
"#;

/// A Python client holding one TLS connection, driven line by line.
struct Session {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Session {
    fn start(port: u16, ca: &str) -> Session {
        let mut child = spawn_python(SESSION, &[&port.to_string(), ca]);
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Session { child, lines }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("the client answers")
    }

    fn echo(&mut self, word: &str) -> String {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{word}").unwrap();
        stdin.flush().unwrap();
        self.line()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replaces `to` with `from` in one rename, as a certificate manager does.
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

#[test]
fn sighup_reloads_certificates_and_keeps_the_old_ones_if_the_new_are_bad() {
    let pki = Pki::new();
    for n in ["one", "two", "three"] {
        pki.leaf(n, n, &["localhost", "alpha.test"]);
    }
    let live = tempfile::tempdir().unwrap();
    let (key, cert) = (live.path().join("key.pem"), live.path().join("cert.pem"));
    replace(&pki.path("one-key.pem"), &key);
    replace(&pki.path("one-cert.pem"), &cert);
    // A tls: directory on the same server is reloaded too.
    let dir = tempfile::tempdir().unwrap();
    let in_dir = dir.path().join("a.pem");
    replace(Path::new(&pki.combined("one")), &in_dir);
    let ssl = format!(
        "ssl:0:privateKey={}:certKey={}:interface=127.0.0.1",
        key.display(),
        cert.display()
    );
    let tls = format!("tls:{}:port=0:interface=127.0.0.1", dir.path().display());
    let s = Server::start(&["--pidfile=", "echo", "--listen", &ssl, "--listen", &tls]);
    let (port, dir_port) = (s.ports()[0], s.ports()[1]);
    let ca = pki.ca();
    let mut old = Session::start(port, &ca);
    assert_eq!(old.line(), "cn=one");
    assert_eq!(old.echo("before"), "echo=before");

    replace(&pki.path("two-key.pem"), &key);
    replace(&pki.path("two-cert.pem"), &cert);
    replace(Path::new(&pki.combined("two")), &in_dir);
    assert!(s.wait_catches(1));
    s.signal(1);
    assert!(
        s.wait_until(
            |l| l
                .iter()
                .filter(|x| x.contains("Reloaded certificates"))
                .count()
                == 2,
            Duration::from_secs(5)
        )
        .is_some(),
        "{:?}",
        s.lines()
    );
    assert_serves(port, &ca, "localhost", "two");
    assert_serves(dir_port, &ca, "alpha.test", "two");
    assert_eq!(
        old.echo("after"),
        "echo=after",
        "established connections go on"
    );

    // A key that does not match, then garbage, then a missing file: the old one serves on.
    let cert_name = cert.display().to_string();
    let bad: [(&dyn Fn(), &str); 3] = [
        (
            &|| replace(&pki.path("three-key.pem"), &key),
            "does not match",
        ),
        (
            &|| std::fs::write(&cert, "garbage\n").unwrap(),
            "no certificate",
        ),
        (&|| std::fs::remove_file(&cert).unwrap(), "No such file"),
    ];
    for (i, (make_bad, why)) in bad.iter().enumerate() {
        make_bad();
        s.signal(1);
        let n = i + 1;
        assert!(
            s.wait_until(
                |l| l
                    .iter()
                    .filter(|x| x.contains("Certificates not reloaded"))
                    .count()
                    == n,
                Duration::from_secs(5)
            )
            .is_some(),
            "{:?}",
            s.lines()
        );
        let last = s
            .lines()
            .into_iter()
            .rfind(|x| x.contains("Certificates not reloaded"))
            .unwrap();
        assert!(last.contains(&cert_name) && last.contains(why), "{last}");
        assert_serves(port, &ca, "localhost", "two");
    }
    // A bad file in the directory keeps the directory's old certificates too (the ssl:
    // listener's file is still missing: one line each).
    std::fs::write(&in_dir, "garbage\n").unwrap();
    std::fs::write(
        dir.path().join("b.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    s.signal(1);
    assert!(
        s.wait_until(
            |l| l
                .iter()
                .filter(|x| x.contains("Certificates not reloaded"))
                .count()
                == 5,
            Duration::from_secs(5)
        )
        .is_some(),
        "{:?}",
        s.lines()
    );
    assert!(s.log_contains("b.pem: the private key cannot be used"));
    assert_serves(dir_port, &ca, "alpha.test", "two");
    assert_eq!(old.echo("still"), "echo=still");
}

/// A new TLS connection per iteration until the file `argv[3]` exists (at most 60 s): `ok CN`
/// or `failed ERROR` per connection.
const LOOP: &str = r#"
import os
port, ca, stop = sys.argv[1:4]
end = time.time() + 60
while not os.path.exists(stop) and time.time() < end:
    try:
        s = connect(port, ca, 'localhost')
        name = cn(s)
        assert echo(s, b'x') == b'x'
        s.close()
        print('ok ' + name, flush=True)
    except Exception as e:
        print('failed %r' % e, flush=True)
"#;

#[test]
fn restart_under_a_tls_client_loop_fails_no_handshake_and_reloads_the_files() {
    let pki = Pki::new();
    pki.leaf("one", "one", &["localhost"]);
    pki.leaf("two", "two", &["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let both = dir.path().join("server.pem");
    replace(Path::new(&pki.combined("one")), &both);
    let ep = format!("ssl:0:privateKey={}:interface=127.0.0.1", both.display());
    let (code, out, err) = run_in(dir.path(), &["echo", "--listen", &ep]);
    assert_eq!(code, 0, "{out}{err}");
    let log = dir.path().join("twistrs.log");
    let port: u16 = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .find_map(|l| l.split(" starting on ").nth(1)?.trim().parse().ok())
        .expect("the port in the log");
    struct Stop<'a>(&'a Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = run_in(self.0, &["stop", "--timeout", "2"]);
        }
    }
    let _stop = Stop(dir.path());
    let stop_file = dir.path().join("stop-the-loop");
    let mut client = spawn_python(
        LOOP,
        &[
            &port.to_string(),
            &pki.ca(),
            &stop_file.display().to_string(),
        ],
    );
    let out = client.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(l);
            }
        })
    };
    let served = |n: usize| {
        let end = Instant::now() + Duration::from_secs(20);
        while lines.lock().unwrap().len() < n && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        lines.lock().unwrap().len()
    };
    let before = served(10);
    // The successor reads the files again: it serves the certificate put there now.
    replace(Path::new(&pki.combined("two")), &both);
    let (code, out, err) = run_in(dir.path(), &["restart"]);
    assert_eq!(code, 0, "{out}{err}");
    // Until it shows up (the old process finishes what it accepted), then a few more.
    let end = Instant::now() + Duration::from_secs(20);
    while !lines.lock().unwrap().iter().any(|l| l == "ok two") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let seen = lines.lock().unwrap().len();
    served(seen + 10);
    std::fs::write(&stop_file, "").unwrap();
    let status = wait_output(client, Duration::from_secs(20)).status;
    reader.join().unwrap();
    let lines = lines.lock().unwrap().clone();
    assert!(status.success(), "{lines:?}");
    let failed: Vec<&String> = lines.iter().filter(|l| !l.starts_with("ok ")).collect();
    assert!(
        failed.is_empty(),
        "{} of {}: {failed:?}",
        failed.len(),
        lines.len()
    );
    assert!(lines.len() >= before + 20, "{lines:?}");
    assert_eq!(lines.first().map(String::as_str), Some("ok one"));
    assert_eq!(
        lines.last().map(String::as_str),
        Some("ok two"),
        "{lines:?}"
    );
}

/// Runs `twistrs -n --pidfile= echo --listen ENDPOINT` with `listener` passed as systemd's
/// fd 3 (LISTEN_PID, LISTEN_FDS=1), waits for READY=1 on a notify socket, and returns it.
fn socket_activated(listener: &std::net::TcpListener, endpoint: &str, dir: &Path) -> Child {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    let notify_path = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" -n --pidfile= echo --listen \"$1\"")
        .arg(BIN)
        .arg(endpoint)
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("LISTEN_FDNAMES")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: dup2 and fcntl are async-signal-safe; they put the socket on fd 3 in the child.
    unsafe {
        cmd.pre_exec(move || {
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 arrives");
    assert_eq!(&buf[..n], b"READY=1");
    child
}

#[test]
fn a_socket_activated_listener_serves_tls() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let dir = cert_dir(&pki);
    for endpoint in [
        format!("systemd:domain=INET:index=0:privateKey={both}"),
        format!(
            "systemd:domain=INET:index=0:privateKey={}:certKey={}",
            pki.arg("server-key.pem"),
            pki.arg("server-cert.pem")
        ),
        format!(
            "systemd:domain=INET:index=0:certDir={}",
            dir.path().display()
        ),
    ] {
        let run_dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut child = socket_activated(&listener, &endpoint, run_dir.path());
        drop(listener);
        if endpoint.contains("certDir") {
            assert_serves(port, &pki.ca(), "beta.test", "beta");
            assert_serves(port, &pki.ca(), "-", "alpha");
        } else {
            assert_serves(port, &pki.ca(), "localhost", "localhost");
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < end, "{endpoint} did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Sends `argv[3]` bytes of a pattern and reads the echo back at once, reading slowly, in
/// one thread (select): `sent=`, `got=`, `same=`, and `blocked=`: how often the server took
/// no more (its backpressure reached the client).
const BULK: &str = r#"
port, ca, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = connect(port, ca, 'localhost')
s.setblocking(False)
pattern = bytes(range(251)) * 300
sent, got, same, blocked, end = 0, 0, True, 0, time.time() + 60
while got < total and time.time() < end:
    want_write = sent < total
    r, w, _ = select.select([s], [s] if want_write else [], [], 5)
    # Writes as much as the server takes, reads 16 KiB a turn: it sends faster than it reads.
    while w and sent < total:
        n = min(16384, total - sent)
        try:
            sent += s.send(pattern[sent % 251:sent % 251 + n])
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            blocked += 1
            break
    if r or s.pending():
        try:
            d = s.recv(16384)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            continue
        if not d:
            break
        same = same and d == pattern[got % 251:got % 251 + len(d)]
        got += len(d)
        # A slow reader: the server's output backs up, so it must stop reading.
        time.sleep(0.001)
print('blocked=%d' % blocked)
print('sent=%d' % sent)
print('got=%d' % got)
print('same=%s' % same, flush=True)
"#;

#[test]
fn large_transfers_both_ways_with_a_slow_reader_keep_memory_bounded() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let s = echo_server(&format!("ssl:0:privateKey={both}:interface=127.0.0.1"), &[]);
    assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
    let base = s.rss_kib();
    let total: usize = 32 << 20;
    let mut client = spawn_python(
        BULK,
        &[&s.port().to_string(), &pki.ca(), &total.to_string()],
    );
    let mut peak = base;
    let end = Instant::now() + Duration::from_secs(90);
    while client.try_wait().ok().flatten().is_none() && Instant::now() < end {
        peak = peak.max(s.rss_kib());
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = wait_output(client, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        field(&text, "got"),
        Some(total.to_string().as_str()),
        "{text}"
    );
    assert_eq!(field(&text, "same"), Some("True"), "{text}");
    let blocked: u32 = field(&text, "blocked")
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    assert!(blocked > 10, "the server never stopped reading: {text}");
    eprintln!("RSS {base} KiB at rest, {peak} KiB at most while {total} bytes went through");
    assert!(peak < base + 4 * 1024, "RSS {base} KiB -> {peak} KiB");
}

/// Reads to the server's close_notify: `data=` and `close=clean`, or the error.
const READ_ALL: &str = r#"
port, ca = sys.argv[1:3]
s = connect(port, ca, 'localhost')
got = b''
try:
    while True:
        d = s.recv(4096)
        if not d:
            print('close=clean')
            break
        got += d
except ssl.SSLError as e:
    print('close=' + str(e))
print('data=%r' % got, flush=True)
"#;

#[test]
fn a_protocol_that_writes_and_closes_at_once_is_served_after_the_handshake() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let ep = format!("ssl:0:privateKey={both}:interface=127.0.0.1");
    let s = Server::start(&[
        "--pidfile=",
        "daytime",
        "--listen",
        &ep,
        "--max-connections",
        "1",
    ]);
    let port = s.port().to_string();
    for _ in 0..2 {
        let out = python(READ_ALL, &[&port, &pki.ca()], Duration::from_secs(15));
        assert_eq!(field(&out, "close"), Some("clean"), "{out}");
        assert!(
            field(&out, "data").is_some_and(|d| d.ends_with("\\r\\n'")),
            "{out}"
        );
    }
}

#[test]
fn a_client_gone_before_its_handshake_frees_its_slot_at_once() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let s = echo_server(
        &format!("ssl:0:privateKey={both}:interface=127.0.0.1"),
        &["--max-connections", "1"],
    );
    for _ in 0..3 {
        drop(connect(s.addr()));
    }
    let start = Instant::now();
    assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}
