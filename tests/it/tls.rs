//! The TLS layer end to end (issue 10): `ssl:`, `tls:CERTDIR` and TLS on `systemd:` sockets,
//! served by the real binary's echo plugin to real clients (Python's ssl, `openssl s_client`),
//! with certificates made at run time by the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

/// Runs `openssl ARGS` in `dir`; panics with its stderr if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
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
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca-key.pem",
                "-out",
                "ca-cert.pem",
                "-days",
                "2",
                "-subj",
                "/CN=twistrs test CA",
            ],
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
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
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
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &format!("{issuer}-cert.pem"),
                "-CAkey",
                &format!("{issuer}-key.pem"),
                "-set_serial",
                &serial,
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
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
    pki.issue("inter", "twistrs test intermediate", &[], "ca", true);
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
        &[
            "genpkey",
            "-genparam",
            "-algorithm",
            "DH",
            "-pkeyopt",
            "group:ffdhe2048",
            "-out",
            "dh.pem",
        ],
    );
    let s = echo_server(
        &format!(
            "ssl:0:privateKey={both}:dhParameters={}:interface=127.0.0.1",
            pki.arg("dh.pem")
        ),
        &[],
    );
    assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
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
}

/// Makes `openssl ca` sign a certificate valid only in January 2020 (OpenSSL 3.0's `req` and
/// `x509` take no start date and no negative `-days`; `ca` takes both dates).
fn expired(pki: &Pki) -> String {
    let dir = pki.dir.path();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "old-key.pem",
            "-out",
            "old.csr",
            "-subj",
            "/CN=localhost",
        ],
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
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-cert",
            "ca-cert.pem",
            "-keyfile",
            "ca-key.pem",
            "-in",
            "old.csr",
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
            "-extfile",
            "old.ext",
            "-notext",
            "-out",
            "old-cert.pem",
        ],
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
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-aes256",
            "-pass",
            "pass:x",
            "-out",
            "encrypted-key.pem",
        ],
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
/// end: `close=clean` only if the end is the server's close_notify.
const HALF: &str = r#"
port, ca, mode = sys.argv[1:4]
s = connect(port, ca, 'localhost')
data = b'half-closed ' * 2000
if mode == 'after':
    assert echo(s, data) == data
    s.unwrap()
    print('close=clean', flush=True)
    sys.exit(0)
s.sendall(data)
s.setblocking(False)
try:
    s.unwrap()
except ssl.SSLWantReadError:
    pass
got, close, end = b'', 'timeout', time.time() + 10
while time.time() < end:
    select.select([s], [], [], 1)
    try:
        d = s.recv(65536)
    except ssl.SSLWantReadError:
        continue
    except ssl.SSLZeroReturnError:
        # close_notify (OpenSSL says so this way once ours went first).
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
