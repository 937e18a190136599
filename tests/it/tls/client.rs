//! The TLS client (issue 11): `portforward --dest ssl:...` to TLS backends the tests run (a
//! twistrs echo on an `ssl:` port, or Python's ssl), with a test CA made at run time.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

use super::*;

/// The CA's certificate alone in a directory, as `caCertsDir` takes it.
fn ca_dir(pki: &Pki) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(pki.path("ca-cert.pem"), dir.path().join("ca.pem")).unwrap();
    // Not a *.pem: never read.
    std::fs::write(dir.path().join("README"), "not a certificate").unwrap();
    dir
}

/// A twistrs echo on an `ssl:` port with the certificate `name` of `pki`.
fn tls_echo(pki: &Pki, name: &str) -> Server {
    let listen = format!(
        "ssl:0:interface=127.0.0.1:privateKey={}:certKey={}",
        pki.arg(&format!("{name}-key.pem")),
        pki.arg(&format!("{name}-cert.pem"))
    );
    echo_server(&listen, &[])
}

/// `portforward` on a port of its own to `dest` (a client endpoint).
fn forward_to(dest: &str) -> Server {
    Server::start(&[
        "--pidfile=",
        "portforward",
        "-p",
        "tcp:0:interface=127.0.0.1",
        "--dest",
        dest,
    ])
}

/// `portforward` to the backend `backend.test` on `port`, verified with the roots in `cas`,
/// with `extra` endpoint keywords (`:certKey=...`) after.
fn verified_relay(port: u16, cas: &tempfile::TempDir, extra: &str) -> Server {
    forward_to(&format!(
        "ssl:127.0.0.1:{port}:hostname=backend.test:caCertsDir={}{extra}",
        cas.path().display()
    ))
}

/// Connects to the forwarder, with a bounded read.
fn client(relay: &Server) -> TcpStream {
    let c = TcpStream::connect(relay.addr()).expect("connect to the forwarder");
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c
}

/// Bytes that do not repeat in short cycles (a shifted or dropped chunk shows).
fn pattern(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Sends `data` on a thread, then half-closes; reads everything back until the end.
fn echo_through(c: TcpStream, data: Vec<u8>) -> Vec<u8> {
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&data).expect("send through the relay");
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    let mut r = c;
    r.read_to_end(&mut got).expect("read through the relay");
    writer.join().unwrap();
    got
}

fn sha256(data: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn data_both_ways_and_the_half_close_go_through_tls() {
    let pki = Pki::new();
    pki.leaf("backend", "backend", &["backend.test", "IP:127.0.0.1"]);
    let cas = ca_dir(&pki);
    let backend = tls_echo(&pki, "backend");
    // An address as the host: verified against the certificate's IP SAN.
    let dest = format!(
        "ssl:127.0.0.1:{}:caCertsDir={}",
        backend.port(),
        cas.path().display()
    );
    let relay = forward_to(&dest);
    let data = pattern(3 * 1024 * 1024 + 4321);
    let got = echo_through(client(&relay), data.clone());
    assert_eq!(got.len(), data.len());
    assert_eq!(sha256(&got), sha256(&data));
    // The client's FIN went on as close_notify, the echo's end came back as ours.
    relay
        .wait_until(
            |l| {
                l.iter()
                    .any(|l| l.contains("Relay") && l.contains("closed cleanly"))
            },
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("{:?}", relay.lines()));
}

#[test]
fn a_half_closed_client_still_gets_the_reply() {
    let pki = Pki::new();
    pki.leaf("backend", "backend", &["backend.test"]);
    // Python's ssl server: reads the request to close_notify (a bare FIN would raise
    // SSLEOFError: suppress_ragged_eofs=False), then answers and closes.
    let (server, port) = python_backend(
        &pki,
        r#"
s, _ = l.accept()
s = c.wrap_socket(s, server_side=True, suppress_ragged_eofs=False)
got = b''
while True:
    d = s.recv(65536)
    if not d:
        break
    got += d
s.sendall(b'after your end: ' + got)
s.unwrap()
s.close()
"#,
    );
    let cas = ca_dir(&pki);
    let relay = verified_relay(port, &cas, "");
    let mut c = client(&relay);
    c.write_all(b"request").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).expect("the reply");
    assert_eq!(got, b"after your end: request");
    backend_output(server);
}

/// A Python ssl server for the certificate `backend` of `pki` running `body` (after the
/// listening socket `l`, its port printed, and the context `c`), with its port.
fn python_backend(pki: &Pki, body: &str) -> (Child, u16) {
    let head = r#"
ca, key, cert = sys.argv[1:4]
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
c.load_cert_chain(cert, key)
l = socket.socket()
l.bind(('127.0.0.1', 0))
l.listen(1)
print('port=%d' % l.getsockname()[1], flush=True)
l.settimeout(20)
"#;
    let mut server = spawn_python(
        &format!("{head}{body}"),
        &[
            &pki.ca(),
            &pki.arg("backend-key.pem"),
            &pki.arg("backend-cert.pem"),
        ],
    );
    let port = read_port(&mut server);
    (server, port)
}

/// The Python backend's output, once it has finished successfully.
fn backend_output(server: Child) -> String {
    let out = wait_output(server, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    text.into_owned()
}

/// Reads one line from `c` (bounded by its read timeout and 200 bytes).
fn read_line(c: &mut TcpStream) -> Vec<u8> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 200 && c.read(&mut b).unwrap_or(0) == 1 {
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    line
}

#[test]
fn a_backend_that_speaks_first_is_heard_before_the_client_says_anything() {
    let pki = Pki::new();
    pki.leaf("backend", "backend", &["backend.test"]);
    // A POP3-like server: the greeting goes out as soon as the handshake is done. A FIN
    // without close_notify would be an error here (suppress_ragged_eofs=False).
    let (server, port) = python_backend(
        &pki,
        r#"
s, _ = l.accept()
s = c.wrap_socket(s, server_side=True, suppress_ragged_eofs=False)
s.sendall(b'+OK twistrs test ready\r\n')
got = b''
while True:
    d = s.recv(65536)
    if not d:
        break
    got += d
s.sendall(b'+OK bye after ' + got)
s.unwrap()
s.close()
print('end=close_notify', flush=True)
"#,
    );
    let cas = ca_dir(&pki);
    let relay = verified_relay(port, &cas, "");
    let mut c = client(&relay);
    let start = Instant::now();
    let greeting = read_line(&mut c);
    let took = start.elapsed();
    assert_eq!(
        greeting,
        b"+OK twistrs test ready\r\n",
        "{:?}",
        relay.lines()
    );
    // The handshake is not left waiting for the client's first bytes (nor its deadline).
    assert!(took < Duration::from_secs(5), "{took:?}");
    c.write_all(b"QUIT\r\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).expect("the reply");
    assert_eq!(rest, b"+OK bye after QUIT\r\n");
    let out = backend_output(server);
    assert_eq!(field(&out, "end"), Some("close_notify"), "{out}");
}

#[test]
fn a_client_that_half_closes_before_any_data_still_gets_the_reply() {
    let pki = Pki::new();
    pki.leaf("backend", "backend", &["backend.test"]);
    // The client's FIN must arrive as close_notify (a bare FIN raises SSLEOFError here).
    let (server, port) = python_backend(
        &pki,
        r#"
s, _ = l.accept()
s = c.wrap_socket(s, server_side=True, suppress_ragged_eofs=False)
got = s.recv(65536)
print('got=%d' % len(got), flush=True)
s.sendall(b'nothing came')
s.unwrap()
s.close()
"#,
    );
    let cas = ca_dir(&pki);
    let relay = verified_relay(port, &cas, "");
    let mut c = client(&relay);
    let start = Instant::now();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).expect("the reply");
    let took = start.elapsed();
    assert_eq!(got, b"nothing came", "{:?}", relay.lines());
    assert!(took < Duration::from_secs(5), "{took:?}");
    let out = backend_output(server);
    assert_eq!(field(&out, "got"), Some("0"), "{out}");
    relay
        .wait_until(
            |l| {
                l.iter()
                    .any(|l| l.contains("Relay") && l.contains("closed cleanly"))
            },
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("{:?}", relay.lines()));
}

/// The `port=` line a Python server prints first.
fn read_port(child: &mut Child) -> u16 {
    let mut out = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
        line.push(b[0]);
        assert!(line.len() < 100, "no port line");
    }
    child.stdout = Some(out);
    let line = String::from_utf8_lossy(&line).into_owned();
    line.strip_prefix("port=")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port: {line:?}"))
}

/// A client of `relay` is closed within a few seconds, with nothing received, and the
/// forwarder logs `reason`.
fn assert_refused(relay: &Server, reason: &str) {
    let mut c = client(relay);
    c.write_all(b"never delivered").unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(got.is_empty(), "{got:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    relay
        .wait_until(
            |l| l.iter().any(|l| l.contains(reason)),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("no {reason:?}: {:?}", relay.lines()));
}

#[test]
fn an_unknown_ca_or_a_wrong_name_closes_the_client() {
    let pki = Pki::new();
    pki.leaf("backend", "backend", &["backend.test"]);
    let backend = tls_echo(&pki, "backend");
    let other = Pki::new();
    let other_cas = ca_dir(&other);
    let port = backend.port();
    let relay = verified_relay(port, &other_cas, "");
    // Both test CAs have the same name: the signature is what fails.
    assert_refused(&relay, "invalid peer certificate");
    let cas = ca_dir(&pki);
    // The address is not in the certificate: the default name fails.
    let relay = forward_to(&format!(
        "ssl:127.0.0.1:{port}:caCertsDir={}",
        cas.path().display()
    ));
    assert_refused(&relay, "not valid for name");
    let relay = forward_to(&format!(
        "ssl:127.0.0.1:{port}:hostname=wrong.test:caCertsDir={}",
        cas.path().display()
    ));
    assert_refused(&relay, "certificate not valid for name \"wrong.test\"");
    // hostname= names what the certificate holds: verified, and carried.
    let relay = verified_relay(port, &cas, "");
    assert_eq!(echo_through(client(&relay), b"named".to_vec()), b"named");
}

#[test]
fn a_client_certificate_is_presented_when_given() {
    let pki = Pki::new();
    pki.leaf("backend", "backend", &["backend.test"]);
    pki.leaf("me", "twistrs-client", &[]);
    let (server, port) = python_backend(
        &pki,
        r#"
c.verify_mode = ssl.CERT_REQUIRED
c.load_verify_locations(ca)
for _ in range(2):
    s, _ = l.accept()
    try:
        s = c.wrap_socket(s, server_side=True)
    except (ssl.SSLError, OSError) as e:
        print('refused=' + type(e).__name__, flush=True)
        continue
    print('client=' + cn(s), flush=True)
    s.sendall(b'hello ' + cn(s).encode())
    s.unwrap()
    s.close()
"#,
    );
    let cas = ca_dir(&pki);
    // Without a certificate, the server refuses.
    let relay = verified_relay(port, &cas, "");
    // The client sends nothing: its FIN alone starts nothing, the handshake is under way.
    let _ = echo_through(client(&relay), Vec::new());
    let relay = verified_relay(
        port,
        &cas,
        &format!(
            ":certKey={}:privateKey={}",
            pki.arg("me-cert.pem"),
            pki.arg("me-key.pem")
        ),
    );
    let got = echo_through(client(&relay), Vec::new());
    let out = wait_output(server, Duration::from_secs(30));
    let out = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert_eq!(got, b"hello twistrs-client", "{:?} {out}", relay.lines());
    assert!(out.contains("refused="), "{out}");
    assert_eq!(field(&out, "client"), Some("twistrs-client"), "{out}");
}

#[test]
fn a_plaintext_destination_is_named_as_one() {
    // A destination that answers a ClientHello in plaintext (an HTTP port): the line said
    // "plaintext, such as HTTP, sent to a TLS port?", the words for a client at a listener.
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = plain.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = plain.accept() {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let pki = Pki::new();
    let cas = ca_dir(&pki);
    let relay = forward_to(&format!(
        "ssl:127.0.0.1:{port}:caCertsDir={}",
        cas.path().display()
    ));
    assert_refused(
        &relay,
        "the destination does not speak TLS (a plaintext port?)",
    );
    assert!(
        !relay
            .lines()
            .iter()
            .any(|l| l.contains("sent to a TLS port"))
    ); // The client's bytes waited for a handshake that never ended: none reached it.
    assert!(relay.log_contains("closed after "), "{:?}", relay.lines());
    let line = relay
        .lines()
        .into_iter()
        .find(|l| l.contains("Relay "))
        .unwrap_or_default();
    assert!(
        line.contains(": 0 bytes to the destination, 0 bytes to the client;"),
        "{line}"
    );
}

#[test]
fn a_silent_backend_ends_at_the_handshake_deadline() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let pki = Pki::new();
    let cas = ca_dir(&pki);
    let relay = forward_to(&format!(
        "ssl:127.0.0.1:{port}:caCertsDir={}",
        cas.path().display()
    ));
    let mut c = client(&relay);
    let start = Instant::now();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    let took = start.elapsed();
    assert!(got.is_empty());
    assert!(
        took >= Duration::from_secs(8) && took < Duration::from_secs(16),
        "{took:?}"
    );
    // The line is written as the relay closes, which the client may see first.
    assert!(
        relay.log_contains("TLS handshake not done"),
        "{:?}",
        relay.lines()
    );
    drop(silent);
}

#[test]
fn a_missing_ca_directory_is_a_start_up_error() {
    let (code, _, err) = run(&[
        "--pidfile=",
        "portforward",
        "--dest",
        "ssl:127.0.0.1:1:caCertsDir=/nonexistent-twistrs-cas",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent-twistrs-cas"), "{err}");
}
