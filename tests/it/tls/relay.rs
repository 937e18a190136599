//! portforward as a TLS terminator (issue 11): TLS from the client on an `ssl:` port,
//! plaintext through the core's relay to the backend.

use super::*;

#[test]
fn portforward_on_an_ssl_port_terminates_tls() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let backend = echo_server("tcp:0:interface=127.0.0.1", &[]);
    let listen = format!(
        "ssl:0:privateKey={}:certKey={}:interface=127.0.0.1",
        pki.arg("server-key.pem"),
        pki.arg("server-cert.pem")
    );
    let relay = Server::start(&[
        "--pidfile=",
        "portforward",
        "-p",
        &listen,
        "-h",
        "127.0.0.1",
        "-d",
        &backend.port().to_string(),
    ]);
    // The echo of "ping over TLS" came back from the plaintext echo server, through TLS.
    assert_serves(relay.port(), &pki.ca(), "localhost", "localhost");
    assert!(relay.log_contains("13 bytes to the destination, 13 bytes to the client"));
}

/// A destination on 127.0.0.1 that counts the connections it accepts and runs `serve` on
/// each, on a thread of its own (reads time out after 30 s). It accepts for at most two
/// minutes.
fn counting_destination(
    serve: fn(std::net::TcpStream),
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::ErrorKind;
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the destination");
    let addr = l.local_addr().expect("its address");
    l.set_nonblocking(true).expect("nonblocking");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = accepted.clone();
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(120);
        while Instant::now() < end {
            match l.accept() {
                Ok((s, _)) => {
                    n.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                        serve(s);
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (addr, accepted)
}

/// A counting destination that echoes each connection.
fn counting_echo() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    counting_destination(|mut s| {
        use std::io::{Read, Write};
        let mut buf = [0u8; 4096];
        while let Ok(k) = s.read(&mut buf) {
            if k == 0 || s.write_all(&buf[..k]).is_err() {
                break;
            }
        }
    })
}

/// `portforward` on an `ssl:` port (the certificate for localhost) to `dest`.
fn ssl_forwarder(pki: &Pki, dest: std::net::SocketAddr) -> Server {
    let listen = format!(
        "ssl:0:privateKey={}:certKey={}:interface=127.0.0.1",
        pki.arg("server-key.pem"),
        pki.arg("server-cert.pem")
    );
    let port = dest.port().to_string();
    Server::start(&[
        "--pidfile=",
        "portforward",
        "-p",
        &listen,
        "-h",
        "127.0.0.1",
        "-d",
        &port,
    ])
}

/// A good client now, and the destination's count after it: every connection made for an
/// earlier client was accepted before this one's, so the count says how many there were.
fn relayed_after(relay: &Server, pki: &Pki, accepted: &std::sync::atomic::AtomicUsize) -> usize {
    assert_serves(relay.port(), &pki.ca(), "localhost", "localhost");
    accepted.load(Ordering::SeqCst)
}

#[test]
fn clients_that_fail_their_handshake_open_no_connection_to_the_destination() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let (dest, accepted) = counting_echo();
    let relay = ssl_forwarder(&pki, dest);
    // A port scanner: connects and goes.
    drop(connect(relay.addr()));
    // A plaintext client: an HTTP request, answered with an alert or a close.
    let mut plain = connect(relay.addr());
    send(&mut plain, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let got = super::failures::read_until_closed(&mut plain);
    assert!(got.is_empty() || got[0] == 21, "{got:?}");
    // A client that offers only TLS 1.1, which the listener refuses.
    let out = python(
        ONE,
        &[&relay.port().to_string(), "-", "-", "TLSv1_1"],
        Duration::from_secs(15),
    );
    assert!(field(&out, "error").is_some(), "{out}");
    assert!(
        relay
            .wait_until(
                |l| l.iter().filter(|x| x.contains("TLS failed")).count() >= 2,
                Duration::from_secs(10)
            )
            .is_some(),
    );
    // The one connection the destination saw is the good client's, relayed as before.
    assert_eq!(
        relayed_after(&relay, &pki, &accepted),
        1,
        "{:?}",
        relay.lines()
    );
    assert!(relay.log_contains("13 bytes to the destination, 13 bytes to the client"));
    let ends = count(&relay, "Relay 127.0.0.1:");
    assert_eq!(ends, 1, "one relay ran: {:?}", relay.lines());
    assert_eq!(count(&relay, "TLS failed"), 2, "{:?}", relay.lines());
}

#[test]
fn a_stalled_handshake_opens_no_connection_and_is_closed_by_its_deadline() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let (dest, accepted) = counting_echo();
    let relay = ssl_forwarder(&pki, dest);
    let start = Instant::now();
    let mut half = connect(relay.addr());
    // The start of a ClientHello record that says 512 bytes follow; 40 do.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    hello.extend([7u8; 29]);
    send(&mut half, &hello);
    // While it waits, nothing reaches the destination (a connect to 127.0.0.1 takes far less
    // than this).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "{:?}", relay.lines());
    half.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    assert!(super::failures::read_until_closed(&mut half).is_empty());
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert!(relay.log_contains("TLS handshake not done after 10s; closing."));
    assert_eq!(
        relayed_after(&relay, &pki, &accepted),
        1,
        "{:?}",
        relay.lines()
    );
}

/// A TLS 1.3 handshake over memory BIOs, so that what the client sends after it can be
/// joined to its Finished in one write (`o` the SSL object, `s` the socket).
const BIO_HANDSHAKE: &str = r#"
port = int(sys.argv[1])
s = socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT)
c = context('-')
c.minimum_version = ssl.TLSVersion.TLSv1_3
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
o = c.wrap_bio(inc, out, server_hostname='localhost')
for _ in range(20):
    try:
        o.do_handshake()
        break
    except ssl.SSLWantReadError:
        s.sendall(out.read())
        d = s.recv(65536)
        if not d:
            sys.exit('closed during the handshake')
        inc.write(d)
"#;

/// A TLS 1.3 client whose first bytes leave in the same write as its Finished: the read that
/// ends the handshake brings them, and they reach the destination first.
const WITH_FINISHED: &str = r#"
data = b'first bytes, behind the Finished'
o.write(data)
s.sendall(out.read())
got = b''
for _ in range(100):
    if len(got) >= len(data):
        break
    try:
        got += o.read(65536)
    except ssl.SSLWantReadError:
        d = s.recv(65536)
        if not d:
            break
        inc.write(d)
print('echo=' + got.decode())
"#;

#[test]
fn bytes_sent_with_the_finished_message_reach_the_destination() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let (dest, accepted) = counting_echo();
    let relay = ssl_forwarder(&pki, dest);
    let out = python(
        &format!("{BIO_HANDSHAKE}{WITH_FINISHED}"),
        &[&relay.port().to_string()],
        Duration::from_secs(15),
    );
    assert_eq!(
        field(&out, "echo"),
        Some("first bytes, behind the Finished"),
        "{out}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert!(relay.log_contains("32 bytes to the destination, 32 bytes to the client"));
}

/// A TLS 1.3 client that half-closes (close_notify) in the same write as its Finished,
/// sending nothing: it only listens to a destination that speaks first.
const CLOSE_WITH_FINISHED: &str = r#"
try:
    o.unwrap()
except ssl.SSLError:
    pass
s.sendall(out.read())
got = b''
for _ in range(100):
    try:
        got += o.read(65536)
        if len(got) >= 6:
            break
    except ssl.SSLZeroReturnError:
        break
    except ssl.SSLWantReadError:
        d = s.recv(65536)
        if not d:
            break
        inc.write(d)
print('got=' + got.decode())
"#;

/// A counting destination that greets each connection with `hello\n`, then reads to the
/// end.
fn greeting_destination() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    counting_destination(|mut s| {
        use std::io::{Read, Write};
        let _ = s.write_all(b"hello\n");
        let mut buf = [0u8; 4096];
        while let Ok(k) = s.read(&mut buf) {
            if k == 0 {
                break;
            }
        }
    })
}

/// A client whose half-close comes in the read that ends its handshake is relayed all the
/// same (its end carried to the destination), as one that half-closes later is: the end of
/// its input is not taken for a client that left during the handshake.
#[test]
fn a_half_close_sent_with_the_finished_message_is_relayed() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let (dest, accepted) = greeting_destination();
    let relay = ssl_forwarder(&pki, dest);
    let out = python(
        &format!("{BIO_HANDSHAKE}{CLOSE_WITH_FINISHED}"),
        &[&relay.port().to_string()],
        Duration::from_secs(15),
    );
    assert_eq!(field(&out, "got"), Some("hello"), "{out}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "{:?}", relay.lines());
}

/// What [`a_slow_but_steady_tls_reader_outlives_the_idle_timeout`]'s destination sends.
const SLOW_TOTAL: usize = 32 << 20;

/// Reads 3 KiB every 100 ms for 7 s, then the rest at once (a minute at most); prints the
/// bytes it got and how the stream ended.
const SLOW_READER: &str = r#"
TIMEOUT = 30
s = connect(sys.argv[1], sys.argv[2], 'localhost')
got, start, end = 0, time.monotonic(), 'eof'
try:
    while time.monotonic() - start < 7:
        d = s.recv(3072)
        if not d:
            break
        got += len(d)
        time.sleep(0.1)
    while time.monotonic() - start < 60:
        d = s.recv(1 << 20)
        if not d:
            break
        got += len(d)
except (ssl.SSLError, OSError) as e:
    end = type(e).__name__
print('got=%d' % got)
print('end=' + end, flush=True)
"#;

/// The idle timeout of a TLS relay (two connections, each with its idle check) counts both
/// sides' progress: the destination, not read for seconds while the client's side holds the
/// high-water mark, is not idle while the client's kernel queue leaves. Before, its own
/// check found it idle and cut the relay after a second.
#[test]
fn a_slow_but_steady_tls_reader_outlives_the_idle_timeout() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let (dest, _) = counting_destination(|mut s| {
        use std::io::{Read, Write};
        let buf = vec![b'x'; 1 << 20];
        for _ in 0..SLOW_TOTAL / buf.len() {
            if s.write_all(&buf).is_err() {
                return;
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        let _ = s.read_to_end(&mut Vec::new());
    });
    let listen = format!(
        "ssl:0:privateKey={}:certKey={}:interface=127.0.0.1",
        pki.arg("server-key.pem"),
        pki.arg("server-cert.pem")
    );
    let port = dest.port().to_string();
    let relay = Server::start(&[
        "--pidfile=",
        "portforward",
        "-p",
        &listen,
        "-h",
        "127.0.0.1",
        "-d",
        &port,
        "--timeout",
        "1",
    ]);
    let out = python(
        SLOW_READER,
        &[&relay.port().to_string(), &pki.ca()],
        Duration::from_secs(90),
    );
    assert_eq!(field(&out, "got"), Some(&*SLOW_TOTAL.to_string()), "{out}");
    assert_eq!(field(&out, "end"), Some("eof"), "{out}");
    assert_eq!(count(&relay, "idle timeout"), 0, "{:?}", relay.lines());
}
