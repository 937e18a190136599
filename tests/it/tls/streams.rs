//! A TLS connection's stream: close_notify both ways, half-close, bulk echo under backpressure.

use super::*;

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
sock = socket.create_connection(('127.0.0.1', int(port)), timeout=30)
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
    // How often depends on the machine's load (10 in one full parallel run, hundreds alone);
    // the memory bound below is what shows the server stopped reading for long.
    assert!(blocked > 0, "the server never stopped reading: {text}");
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
    let dir = cert_dir(&pki);
    let tls = format!("tls:{}:port=0:interface=127.0.0.1", dir.path().display());
    let s = Server::start(&[
        "--pidfile=",
        "daytime",
        "--listen",
        &ep,
        "--listen",
        &tls,
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
    // curl verifies the chain for the name it asked for (SNI) and wants close_notify at the
    // end; the line comes as an HTTP/0.9 body.
    let tls_port = s.ports()[1];
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--http0.9",
            "--cacert",
            &pki.ca(),
        ])
        .args(["--resolve", &format!("www.beta.test:{tls_port}:127.0.0.1")])
        .arg(format!("https://www.beta.test:{tls_port}/"))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && body.ends_with("\r\n"),
        "{body}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads `argv[3]` bytes of chargen over TLS: `same=True` if they are RFC 864's lines.
const CHARGEN: &str = r#"
port, ca, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = connect(port, ca, 'localhost')
got = b''
while len(got) < n:
    d = s.recv(65536)
    if not d:
        break
    got += d
printable = bytes(range(32, 127))
cycle = b''.join(bytes(printable[(i + j) % 95] for j in range(72)) + b'\r\n' for i in range(95))
want = (cycle * (n // len(cycle) + 1))[:n]
got = got[:n]
print('got=%d' % len(got))
print('same=%s' % (got == want), flush=True)
"#;

/// chargen writes 64 KiB at once, before the handshake is done; reading must go on while
/// that output waits for the handshake, or the handshake never ends (it waited for its 10 s
/// deadline: the reactor stopped reading at the output's high-water mark).
#[test]
fn chargen_over_tls_streams_from_the_handshake_on() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let ep = format!("ssl:0:privateKey={both}:interface=127.0.0.1");
    let s = Server::start(&["--pidfile=", "chargen", "--listen", &ep]);
    let port = s.port().to_string();
    let out = python(
        CHARGEN,
        &[&port, &pki.ca(), "300000"],
        Duration::from_secs(8),
    );
    assert_eq!(
        (field(&out, "got"), field(&out, "same")),
        (Some("300000"), Some("True")),
        "{out}"
    );
}

/// Opens `argv[3]` TLS connections, each echoing 100 bytes once, and holds them open until its
/// stdin closes: `open=N` once they all are.
const IDLE: &str = r#"
port, ca, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
conns = []
for i in range(n):
    s = connect(port, ca, 'localhost')
    assert echo(s, b'%099d.' % i) == b'%099d.' % i
    conns.append(s)
print('open=%d' % len(conns), flush=True)
sys.stdin.read()
"#;

/// The server's resident memory once it has not changed for 300 ms (bounded: 5 s).
fn rss_steady(s: &Server) -> u64 {
    let end = Instant::now() + Duration::from_secs(5);
    let (mut last, mut since) = (s.rss_kib(), Instant::now());
    while Instant::now() < end && since.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(20));
        let now = s.rss_kib();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

#[test]
fn idle_tls_connections_hold_no_buffers() {
    raise_fd_limit();
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let s = echo_server(&format!("ssl:0:privateKey={both}:interface=127.0.0.1"), &[]);
    // One connection first: what every connection shares (the thread's scratch buffers, the
    // session cache's first entries) is then in the base.
    assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
    let base = rss_steady(&s);
    let n = 1000;
    let mut client = spawn_python(IDLE, &[&s.port().to_string(), &pki.ca(), &n.to_string()]);
    let stdout = client.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let open = rx.recv_timeout(Duration::from_secs(120));
    let held = rss_steady(&s);
    let out = wait_output(client, Duration::from_secs(30));
    assert_eq!(
        open.as_deref().ok(),
        Some(format!("open={n}").as_str()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let per_conn = (held.saturating_sub(base)) as f64 / n as f64;
    eprintln!("RSS {base} KiB -> {held} KiB with {n} idle TLS connections: {per_conn:.2} KiB each");
    // rustls's session state (keys, handshake state) is about 3.5 KiB and the connection
    // itself well under 1 KiB; rustls's buffered connection kept 4 KiB more (7.9 in all).
    assert!(per_conn < 6.0, "{per_conn:.2} KiB per idle TLS connection");
}
