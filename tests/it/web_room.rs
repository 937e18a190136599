//! The web plugin at `--max-connections`: an idle keep-alive connection is closed to let a
//! waiting client in (as nginx does), never one reading a request or sending a response;
//! under `--workers`, one per client let in, not one per worker woken.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::*;
use crate::web::{Resp, Tree, read_resp, tree};

/// The file a slow reader is kept busy with: far more than loopback's socket buffers hold,
/// so the server still has most of it queued while the client does not read. Sparse.
const BIG: u64 = 64 << 20;
/// Longer than any of these tests: only a close for a newcomer frees a slot in time.
const TIMEOUT: &str = "30";

/// `web --path ROOT --listen LISTEN --max-connections MAX --timeout TIMEOUT`: the plugin's
/// command line in every test here, which differ in the listener and the limit.
fn web_args<'a>(root: &'a str, listen: &'a str, max: &'a str) -> [&'a str; 9] {
    [
        "web",
        "--path",
        root,
        "--listen",
        listen,
        "--max-connections",
        max,
        "--timeout",
        TIMEOUT,
    ]
}

/// `twistrs -n web` on a port of its own, at most four connections, with `big.bin`.
fn limited(t: &Tree) -> Server {
    let f = std::fs::File::create(t.root.join("big.bin")).unwrap();
    f.set_len(BIG).unwrap();
    let root = t.root.to_str().unwrap();
    Server::start(&web_args(root, "tcp:0:interface=127.0.0.1", "4"))
}

/// One keep-alive request on `s`, its answer read whole.
fn get(s: &mut TcpStream, path: &str) -> Resp {
    send(
        s,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    );
    read_resp(s, false)
}

/// Reads `n` bytes and throws them away (bounded by the socket's read timeout).
fn drain(s: &mut TcpStream, n: u64) -> u64 {
    let mut buf = vec![0; 256 * 1024];
    let mut got = 0;
    while got < n {
        let want = buf.len().min((n - got) as usize);
        match s.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(k) => got += k as u64,
            Err(e) => panic!("after {got} of {n} bytes: {e}"),
        }
    }
    got
}

/// A fifth client: connected (it waits in the backlog) and its request sent.
fn newcomer(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr);
    send(&mut s, b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    s
}

/// True if `s` gets no byte within `within`.
fn silent(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 1];
    let quiet = matches!(s.read(&mut b), Err(e)
        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    quiet
}

#[test]
fn at_the_limit_the_longest_idle_keep_alive_connection_makes_room() {
    let t = tree();
    let srv = limited(&t);
    let addr = srv.addr();
    // Four keep-alive clients, one request each, idle from first to last.
    let mut idle: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(addr);
            assert_eq!(get(&mut s, "/a.txt").body, b"0123456789");
            s
        })
        .collect();
    // A fifth is answered at once, not after the others' --timeout.
    let start = Instant::now();
    let mut fifth = newcomer(addr);
    let r = read_resp(&mut fifth, false);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"0123456789"[..]));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        start.elapsed()
    );
    // The one idle longest was closed (a FIN: its last response had left), ...
    let mut b = [0u8; 1];
    assert_eq!(idle[0].read(&mut b).ok(), Some(0), "the first sees EOF");
    // ... the others still work, and so does the newcomer.
    for s in &mut idle[1..] {
        assert_eq!(get(s, "/a.txt").status, 200);
    }
    assert_eq!(get(&mut fifth, "/a.txt").status, 200);
    srv.wait_until(
        |l| {
            l.iter()
                .any(|l| l.contains("Site: connection limit (4) reached; closing idle keep-alive"))
        },
        Duration::from_secs(5),
    )
    .expect("said in the log");
}

#[test]
fn at_the_limit_no_connection_is_closed_in_the_middle_of_a_request() {
    let t = tree();
    let srv = limited(&t);
    let addr = srv.addr();
    let keep_alive = || {
        let mut s = connect(addr);
        assert_eq!(get(&mut s, "/a.txt").status, 200);
        s
    };
    // Each has been answered once (an idle keep-alive connection), then: one is sending a
    // request head, one a request body, two are reading a large file slowly.
    let mut head = keep_alive();
    send(&mut head, b"GET /a.txt HTTP/1.1\r\nHost: x\r\n");
    let mut body = keep_alive();
    send(
        &mut body,
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
    );
    let early = read_resp(&mut body, false);
    assert_eq!(
        early.status, 200,
        "answered at its head, its body is dropped"
    );
    let mut readers: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = keep_alive();
            send(&mut s, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
            let r = read_resp(&mut s, true);
            assert_eq!(r.header("Content-Length"), Some(BIG.to_string().as_str()));
            assert_eq!(drain(&mut s, 64 * 1024), 64 * 1024);
            s
        })
        .collect();
    // A fifth waits: none of the four may be given up.
    let mut fifth = newcomer(addr);
    assert!(
        silent(&mut fifth, Duration::from_millis(1500)),
        "served while every connection was busy"
    );
    // None was cut: the head completes and is answered, the body ends and the connection
    // takes another request, the downloads arrive whole.
    send(&mut head, b"\r\n");
    assert_eq!(read_resp(&mut head, false).body, b"0123456789");
    // Once one is idle (the head's connection, answered), the fifth gets in promptly, not
    // at the idle one's --timeout.
    let start = Instant::now();
    let r = read_resp(&mut fifth, false);
    assert_eq!(r.status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    send(&mut body, &[b'x'; 90]);
    assert_eq!(get(&mut body, "/a.txt").body, b"0123456789");
    for s in &mut readers {
        assert_eq!(
            drain(s, BIG - 64 * 1024),
            BIG - 64 * 1024,
            "the download is whole"
        );
    }
    drop(srv);
}

#[test]
fn at_the_limit_pipelined_responses_are_not_cut() {
    let t = tree();
    let srv = limited(&t);
    let addr = srv.addr();
    // Four clients pipeline a large file and a small one and read nothing yet.
    let mut clients: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(addr);
            send(
                &mut s,
                b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n",
            );
            s
        })
        .collect();
    let mut fifth = newcomer(addr);
    assert!(
        silent(&mut fifth, Duration::from_millis(1500)),
        "served while every connection had responses to send"
    );
    // Every response arrives whole, in order.
    for s in &mut clients {
        let r = read_resp(s, true);
        assert_eq!(r.status, 200);
        assert_eq!(drain(s, BIG), BIG, "the large one is whole");
        assert_eq!(
            read_resp(s, false).body,
            b"0123456789",
            "and the one behind it"
        );
    }
    // Now idle, they make room for the fifth.
    assert_eq!(read_resp(&mut fifth, false).status, 200);
}

/// Python's ssl: four keep-alive clients make a request each and sit idle, a fifth asks;
/// prints how long the fifth took, what the first then reads (empty at EOF), and the status
/// of one more request on each of the other three.
const TLS_ROOM: &str = r#"
import socket, ssl, sys, time
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
def conn():
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")
def ask(s):
    s.sendall(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    out = b""
    for _ in range(1000):
        if out.endswith(b"0123456789"):
            return out.split(b" ")[1].decode()
        b = s.recv(65536)
        if not b:
            return "eof"
        out += b
    return "?"
idle = []
for _ in range(4):
    s = conn()
    assert ask(s) == "200"
    idle.append(s)
start = time.monotonic()
fifth = conn()
print("fifth", ask(fifth), round(time.monotonic() - start, 3))
try:
    print("first", repr(idle[0].recv(1)))
except (ssl.SSLError, OSError) as e:
    print("first", type(e).__name__)
print("others", " ".join(ask(s) for s in idle[1:]))
"#;

#[test]
fn at_the_limit_an_idle_tls_connection_makes_room() {
    let t = tree();
    let dir = tempfile::tempdir().unwrap();
    let c = crate::tls::self_signed(dir.path(), "server");
    let listen = format!(
        "ssl:0:privateKey={}:certKey={}:interface=127.0.0.1",
        c.key.display(),
        c.cert.display()
    );
    let root = t.root.to_str().unwrap();
    let srv = Server::start(&web_args(root, &listen, "4"));
    let out = std::process::Command::new("timeout")
        .args(["60", "python3", "-c", TLS_ROOM])
        .arg(srv.port().to_string())
        .arg(&c.cert)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fifth: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("fifth "))
        .expect("the fifth asked")
        .split(' ')
        .collect();
    assert_eq!(fifth[0], "200", "{text}");
    let secs: f64 = fifth[1].parse().unwrap();
    assert!(secs < 5.0, "the fifth waited {secs} s");
    assert!(
        text.contains("first b''") || text.contains("first SSLEOFError"),
        "the first sees EOF: {text}"
    );
    assert!(text.contains("others 200 200 200"), "{text}");
}

#[test]
fn at_the_limit_a_response_still_on_its_way_is_not_cut() {
    // 1 MiB: more than the client's socket takes unread, less than the server's send buffer
    // grows to, so the process hands all of it to the kernel (idle, as far as the process
    // knows) while most of it is still to be delivered. Sparse.
    const MID: u64 = 1 << 20;
    let t = tree();
    let f = std::fs::File::create(t.root.join("mid.bin")).unwrap();
    f.set_len(MID).unwrap();
    let root = t.root.to_str().unwrap();
    let srv = Server::start(&web_args(root, "tcp:0:interface=127.0.0.1", "1"));
    let addr = srv.addr();
    let mut first = connect(addr);
    send(&mut first, b"GET /mid.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    std::thread::sleep(Duration::from_millis(500));
    // A newcomer waits while the first's response is on its way ...
    let mut second = newcomer(addr);
    assert!(
        silent(&mut second, Duration::from_millis(800)),
        "served while the first's response was still being delivered"
    );
    // ... and the first, pipelining its next request before reading, gets both whole (a
    // close with its request unread would be a reset, the response's tail lost with it).
    send(&mut first, b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = read_resp(&mut first, true);
    assert_eq!(r.status, 200);
    assert_eq!(drain(&mut first, MID), MID, "the response is whole");
    assert_eq!(read_resp(&mut first, false).body, b"0123456789");
    // All delivered and idle now: it makes room for the newcomer.
    let r = read_resp(&mut second, false);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"0123456789"[..]));
}

/// Whether the server closed `c` (within half a second): these tests' [`closed_within`].
fn closed(c: &mut TcpStream) -> bool {
    closed_within(c, Duration::from_millis(500), "an idle connection")
}

/// Under `--workers`, each worker has its own limit and idle list, and one client waiting on
/// the shared socket wakes every worker at its limit: only the worker whose accept(2) takes
/// it may give up an idle connection for it. Each newcomer, one after another, costs one.
#[test]
fn with_workers_one_waiting_client_costs_one_idle_connection() {
    const WORKERS: usize = 3;
    const NEWCOMERS: u64 = 3;
    let t = tree();
    let root = t.root.to_str().unwrap();
    let mut args = vec![
        "--pidfile=",
        "--workers",
        "3",
        "--metrics",
        "tcp:0:interface=127.0.0.1",
    ];
    args.extend(web_args(root, "tcp:0:interface=127.0.0.1", "2"));
    let s = Server::spawn(&args);
    let (port, metrics) = (
        crate::metrics::port_of(&s, "Site"),
        crate::metrics::port_of(&s, "Metrics"),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let value = crate::metrics::value;
    // Two per worker, none asked yet: one that has made no request is never given up, so a
    // worker at its limit leaves the rest to the others.
    let mut idle: Vec<TcpStream> = (0..2 * WORKERS).map(|_| connect(addr)).collect();
    let open = |b: &str| {
        b.contains("twistrs_connections_open{factory=\"Site\"")
            && value(b, "twistrs_connections_open", "Site") == 2 * WORKERS as u64
    };
    let body = crate::metrics::scrape_until(metrics, open);
    assert!(open(&body), "{body}");
    // One request each: every worker holds two idle keep-alive connections.
    for c in &mut idle {
        assert_eq!(get(c, "/a.txt").status, 200);
    }
    let mut newcomers = Vec::new();
    for _ in 0..NEWCOMERS {
        let mut c = newcomer(addr);
        let r = read_resp(&mut c, false);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"0123456789"[..]));
        newcomers.push(c);
        // Every worker woken has answered by the time the next one comes.
        std::thread::sleep(Duration::from_millis(200));
    }
    let closes = |b: &str| value(b, "twistrs_connection_limit_closes_total", "Site");
    crate::metrics::scrape_until(metrics, |b| closes(b) >= NEWCOMERS);
    // The workers report every so often: a second look, for closes counted late.
    std::thread::sleep(Duration::from_millis(1500));
    let body = crate::metrics::scrape_until(metrics, |_| true);
    let gone = idle
        .iter_mut()
        .chain(newcomers.iter_mut())
        .map(closed)
        .filter(|&c| c)
        .count();
    eprintln!(
        "closes counted {}, connections closed {gone}",
        closes(&body)
    );
    assert_eq!(closes(&body), NEWCOMERS, "{body}");
    assert_eq!(
        gone as u64, NEWCOMERS,
        "idle connections closed for {NEWCOMERS} clients"
    );
}
