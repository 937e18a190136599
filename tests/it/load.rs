//! Many clients, slow clients and limits: memory stays flat and nobody is starved.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn a_thousand_concurrent_echo_clients() {
    raise_fd_limit();
    let srv = Server::start(&["echo", "--listen", "tcp:0:interface=127.0.0.1"]);
    let mut clients = Vec::with_capacity(1000);
    for _ in 0..1000 {
        clients.push(connect(srv.addr()));
    }
    // Every client is open at once; each sends its own message, then all read back.
    for (i, c) in clients.iter_mut().enumerate() {
        send(c, format!("client {i:04}\n").as_bytes());
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(read_n(c, 12), format!("client {i:04}\n").as_bytes());
    }
}

/// The server's resident memory once it has not grown for half a second (bounded: 10 s).
fn rss_settled(srv: &Server) -> u64 {
    let end = Instant::now() + Duration::from_secs(10);
    let mut last = srv.rss_kib();
    let mut steady_since = Instant::now();
    while Instant::now() < end && steady_since.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(50));
        let now = srv.rss_kib();
        if now > last {
            steady_since = Instant::now();
        }
        last = last.max(now);
    }
    last
}

/// Sets a socket non-blocking and reads nothing, to play a client that stalled.
fn stalled_clients(addr: std::net::SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    (0..n).map(|_| connect(addr)).collect()
}

#[test]
fn chargen_clients_that_stop_reading_keep_memory_flat() {
    let srv = Server::start(&["chargen", "--listen", "tcp:0:interface=127.0.0.1"]);
    let base = srv.rss_kib();
    let mut stalled = stalled_clients(srv.addr(), 50);
    // The kernel buffers fill, then the server's own buffers stop at the high-water mark:
    // wait until memory stops growing, then watch a while longer.
    let filled = rss_settled(&srv);
    std::thread::sleep(Duration::from_millis(1500));
    let later = srv.rss_kib();
    assert!(
        later <= filled + 512,
        "no growth once stalled: {filled} KiB then {later} KiB"
    );
    assert!(
        later < base + 50 * 200,
        "bounded per client: base {base} KiB, now {later} KiB"
    );
    // A client that reads is still served at full speed beside the stalled ones.
    let mut reader = connect(srv.addr());
    let start = Instant::now();
    let got = read_n(&mut reader, 10 << 20);
    assert_eq!(got.len(), 10 << 20);
    assert!(start.elapsed() < Duration::from_secs(10));
    // The stalled clients were paused, not dropped: each still gets the stream, in order.
    let pattern = twistrs_wire::chargen_pattern();
    for c in &mut stalled {
        let got = read_n(c, pattern.len());
        assert_eq!(got, pattern, "a stalled client's connection is intact");
    }
}

#[test]
fn an_echo_client_that_never_reads_is_no_longer_read() {
    let srv = Server::start(&["echo", "--listen", "tcp:0:interface=127.0.0.1"]);
    let base = srv.rss_kib();
    let mut c = connect(srv.addr());
    c.set_nonblocking(true).unwrap();
    let chunk = vec![b'z'; 64 * 1024];
    let mut sent = 0usize;
    let end = Instant::now() + Duration::from_secs(3);
    // Write until the whole path (our send buffer, the server, its send buffer) is full.
    let mut blocked_since: Option<Instant> = None;
    while Instant::now() < end && sent < 1 << 30 {
        match c.write(&chunk) {
            Ok(n) => {
                sent += n;
                blocked_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(
        sent < 64 << 20,
        "the server stopped reading: {sent} bytes accepted"
    );
    let rss = srv.rss_kib();
    assert!(
        rss < base + 4096,
        "server memory stays flat: {base} -> {rss} KiB"
    );
    // Reading it all back drains the server, which then reads the rest: every byte echoes.
    c.set_nonblocking(false).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    while got < sent {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("read after {got} of {sent}: {e}"),
        }
    }
    assert_eq!(got, sent);
}

#[test]
fn max_connections_pauses_accepting_and_resumes() {
    let srv = Server::start(&[
        "echo",
        "--max-connections",
        "2",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    let mut a = connect(srv.addr());
    let mut b = connect(srv.addr());
    for c in [&mut a, &mut b] {
        send(c, b"x");
        assert_eq!(read_n(c, 1), b"x");
    }
    // The third completes its handshake in the backlog but is not served yet.
    let mut third = connect(srv.addr());
    send(&mut third, b"3");
    third
        .set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let mut one = [0u8; 1];
    assert!(
        third.read(&mut one).is_err(),
        "not accepted while at the limit"
    );
    assert!(srv.log_contains("connection limit (2) reached"));
    drop(a);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(read_n(&mut third, 1), b"3", "accepted once a slot freed");
}

#[test]
fn reaching_the_connection_limit_again_and_again_is_said_once() {
    // Each client in turn fills the one slot: accepting pauses each time, and the log says
    // so once, not once per client (the count is in the metrics).
    let srv = Server::start(&[
        "echo",
        "--max-connections",
        "1",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    for i in 0..20u8 {
        let mut c = connect(srv.addr());
        send(&mut c, &[i]);
        assert_eq!(read_n(&mut c, 1), [i]);
    }
    assert!(srv.log_contains("connection limit (1) reached"));
    let lines = srv.lines();
    let said = lines
        .iter()
        .filter(|l| l.contains("connection limit (1) reached"))
        .count();
    assert_eq!(said, 1, "{lines:#?}");
}

#[test]
fn out_of_descriptors_accepting_backs_off_and_says_so_once() {
    // 40 descriptors: the server runs out after a few dozen connections; the rest wait in
    // the listen queue until descriptors come back.
    let srv = Server::start_wrapped(
        &["prlimit", "--nofile=40:40"],
        &["echo", "--listen", "tcp:0:interface=127.0.0.1"],
    );
    let mut clients: Vec<std::net::TcpStream> = (0..60).map(|_| connect(srv.addr())).collect();
    assert!(
        srv.log_contains("accept failed"),
        "the shortage is logged: {:?}",
        srv.lines()
    );
    // The back-off retries ten times a second; a second of it must still be one line.
    std::thread::sleep(Duration::from_secs(1));
    let failed = |s: &Server| {
        s.lines()
            .iter()
            .filter(|l| l.contains("accept failed"))
            .count()
    };
    assert_eq!(failed(&srv), 1, "{:?}", srv.lines());
    // Give descriptors back: the queued clients are taken and served. As closes free
    // descriptors one by one, the shortage may end and start again; every start is said once
    // and every end once.
    let waiting = clients.split_off(45);
    drop(clients);
    for mut c in waiting {
        send(&mut c, b"hi");
        assert_eq!(read_n(&mut c, 2), b"hi");
    }
    let count = |s: &Server, what: &str| s.lines().iter().filter(|l| l.contains(what)).count();
    assert!(
        srv.wait_until(
            |_| count(&srv, "accepting again") == count(&srv, "accept failed"),
            Duration::from_secs(5)
        )
        .is_some(),
        "each shortage has its end: {:?}",
        srv.lines()
    );
}
