//! BIND (SOCKS4 and 5: two replies, then a relay) and UDP ASSOCIATE (datagrams relayed from
//! the client's address only, and back only from where it sent) over raw sockets.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// Connects to a BIND's port as its peer.
fn peer_of(port: SocketAddr) -> TcpStream {
    let p = connect(SocketAddr::from(([127, 0, 0, 1], port.port())));
    p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    p
}

/// A SOCKS5 BIND asked of `s`: the client and the port its first reply gave.
fn bind5(s: &Server) -> (TcpStream, SocketAddr) {
    let mut c = proxy(s);
    greet5(&mut c);
    send(&mut c, &request5(2, ([127, 0, 0, 1], 0).into()));
    let (code, bound) = reply5(&mut c);
    assert_eq!(code, 0);
    (c, bound)
}

#[test]
fn socks5_bind_answers_twice_then_relays_both_ways() {
    let s = socks(&[]);
    let (mut c, bound) = bind5(&s);
    assert_eq!(bound.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
    let mut p = peer_of(bound);
    let (code, peer) = reply5(&mut c);
    assert_eq!(
        (code, peer),
        (0, p.local_addr().unwrap()),
        "the peer's address"
    );
    send(&mut p, b"from the peer");
    assert_eq!(read_n(&mut c, 13), b"from the peer");
    send(&mut c, b"from the client");
    assert_eq!(read_n(&mut p, 15), b"from the client");
    // A half-close is carried through and the other way still flows.
    c.shutdown(Shutdown::Write).unwrap();
    assert!(closed(&mut p), "the peer sees the client's FIN");
    send(&mut p, b"last words");
    p.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut c), b"last words");
    let line = wait_conn_lines(&s, 1).pop().unwrap();
    assert!(
        line.contains("version=5 command=BIND") && line.contains("result=ok"),
        "{line}"
    );
    assert!(line.contains(" up=15 down=23 "), "{line}");
}

/// A client that leaves (a close or a reset) while its BIND waits for the peer ends it at
/// once: its connection and the BIND's port are not held until --connect-timeout, and the
/// line names the client.
#[test]
fn a_bind_whose_client_leaves_before_the_peer_comes_ends_at_once() {
    let s = socks(&["--connect-timeout", "60"]);
    for (i, reset) in [false, true].into_iter().enumerate() {
        let (c, bound) = bind5(&s);
        let client = c.local_addr().unwrap();
        if reset {
            reset_on_close(&c);
        }
        drop(c);
        let line = wait_conn_lines(&s, i + 1).pop().unwrap();
        assert!(
            line.contains("command=BIND") && line.contains("result=failed"),
            "{line}"
        );
        assert!(line.contains(&format!("client={client} ")), "{line}");
        assert!(line.contains("the client left"), "{line}");
        assert!(
            TcpStream::connect_timeout(&bound, Duration::from_secs(2)).is_err(),
            "the BIND's port is closed"
        );
    }
}

/// What the client sends before its peer comes reaches the peer first: the first 64 KiB
/// kept by the proxy, the rest left in the kernel (reading paused at that limit) until the
/// relay is joined.
#[test]
fn what_a_bind_client_sends_early_reaches_the_peer() {
    let s = socks(&[]);
    let (mut c, bound) = bind5(&s);
    let early: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
    send(&mut c, &early);
    std::thread::sleep(Duration::from_millis(200));
    let mut p = peer_of(bound);
    assert_eq!(reply5(&mut c).0, 0);
    send(&mut c, b"and late");
    assert!(
        read_n(&mut p, early.len()) == early,
        "the early bytes, in order"
    );
    assert_eq!(read_n(&mut p, 8), b"and late");
}

#[test]
fn socks4_bind_and_a_peer_from_the_wrong_address() {
    let s = socks(&[]);
    let mut c = proxy(&s);
    send(&mut c, &request4(2, 21, [127, 0, 0, 1], b"ftp", None));
    let (code, bound) = reply4(&mut c);
    assert_eq!(code, 90);
    let mut p = peer_of(bound);
    assert_eq!(reply4(&mut c).0, 90);
    send(&mut p, b"220 hi\r\n");
    assert_eq!(read_n(&mut c, 8), b"220 hi\r\n");
    // The request names the peer the client expects: another one is refused, and closed.
    let mut c = proxy(&s);
    send(&mut c, &request4(2, 21, [10, 1, 2, 3], b"", None));
    let (code, bound) = reply4(&mut c);
    assert_eq!(code, 90);
    let mut p = peer_of(bound);
    assert_eq!(reply4(&mut c).0, 91);
    assert!(closed(&mut c));
    assert!(closed(&mut p));
    let mut c = proxy(&s);
    greet5(&mut c);
    send(&mut c, &request5(2, ([10, 1, 2, 3], 0).into()));
    let (_, bound) = reply5(&mut c);
    let _p = peer_of(bound);
    assert_eq!(reply5(&mut c).0, 0x02);
    let lines = wait_conn_lines(&s, 3);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("is not the one expected (10.1.2.3)")),
        "{lines:?}"
    );
}

#[test]
fn an_ipv4_client_of_an_ipv6_listener_is_told_ipv4_addresses() {
    // A dual-stack socket sees the IPv4 client as ::ffff:127.0.0.1; SOCKS4 can only carry the
    // BIND port in an IPv4 address, and a SOCKS5 client expects the address it connected to.
    let s = Server::start(&[
        "socks",
        "--listen",
        "tcp6:0:interface=\\:\\:ffff\\:127.0.0.1",
    ]);
    let mut c = proxy(&s);
    send(&mut c, &request4(2, 21, [127, 0, 0, 1], b"", None));
    let (code, bound) = reply4(&mut c);
    assert_eq!(code, 90);
    assert_eq!(bound.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
    let mut p = peer_of(bound);
    assert_eq!(reply4(&mut c), (90, p.local_addr().unwrap()));
    send(&mut p, b"220 hi\r\n");
    assert_eq!(read_n(&mut c, 8), b"220 hi\r\n");
    let mut c = proxy(&s);
    greet5(&mut c);
    send(&mut c, &request5(3, ([127, 0, 0, 1], 0).into()));
    let (code, relay) = reply5(&mut c);
    assert_eq!((code, relay.ip()), (0, [127, 0, 0, 1].into()));
}

#[test]
fn a_bind_nobody_connects_to_times_out_with_0x06() {
    let s = socks(&["--connect-timeout", "1"]);
    let mut c = proxy(&s);
    greet5(&mut c);
    send(&mut c, &request5(2, ([127, 0, 0, 1], 0).into()));
    let (_, bound) = reply5(&mut c);
    let started = Instant::now();
    assert_eq!(reply5(&mut c).0, 0x06);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(closed(&mut c));
    // The port is closed again.
    assert!(TcpStream::connect_timeout(&bound, Duration::from_secs(2)).is_err());
}

#[test]
fn a_stop_fails_a_waiting_bind_with_its_reply_and_ends() {
    // A BIND still waiting for its peer when the server stops gets its second reply, a
    // failure, and the line says why; it was closed without a reply, its line blaming the
    // client ("the client left"). The stop then ends at once, not at the shutdown deadline.
    let mut s = socks(&[]);
    let (mut c, bound) = bind5(&s);
    s.signal(libc::SIGTERM);
    let started = Instant::now();
    assert_eq!(reply5(&mut c).0, 0x01);
    assert!(closed(&mut c));
    drop(c);
    // The port closes (the reply may go out a moment before the port's close is carried out).
    let gone = (0..100).any(|_| {
        let refused = TcpStream::connect_timeout(&bound, Duration::from_secs(2)).is_err();
        if !refused {
            std::thread::sleep(Duration::from_millis(20));
        }
        refused
    });
    assert!(gone, "the BIND's port was closed");
    s.wait(Duration::from_secs(10)).expect("stopped");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The line names the port it opened (it said the peer's address with port 0).
    assert!(
        s.log_contains(&format!(
            "address={bound} user=- result=failed up=0 down=0 duration="
        )),
        "{:?}",
        s.lines()
    );
    assert!(
        s.log_contains("reason=\"the server stopped before the peer connected\""),
        "{:?}",
        s.lines()
    );
}

/// A UDP server that answers `pong:` + what it got, and keeps what it got.
struct UdpEcho {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<Mutex<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    fn start() -> UdpEcho {
        UdpEcho::start_at("127.0.0.1:0")
    }

    fn start_at(at: &str) -> UdpEcho {
        let sock = UdpSocket::bind(at).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let stop = Arc::new(Mutex::new(false));
        let (g, st) = (Arc::clone(&got), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            // Bounded: at most a minute, or until stopped.
            let end = Instant::now() + Duration::from_secs(60);
            while Instant::now() < end && !*st.lock().unwrap() {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    g.lock().unwrap().push(buf[..n].to_vec());
                    let _ = sock.send_to(&[b"pong:", &buf[..n]].concat(), from);
                }
            }
        });
        UdpEcho {
            addr,
            got,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        *self.stop.lock().unwrap() = true;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `RSV RSV FRAG ATYP ADDR PORT DATA` for an IPv4 destination.
fn datagram(to: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut d = request5(0, to);
    d[..3].copy_from_slice(&[0, 0, 0]);
    d.extend(data);
    d
}

fn recv(u: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    u.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
}

#[test]
fn udp_associate_relays_from_the_client_only() {
    let echo = UdpEcho::start();
    let denied = UdpEcho::start();
    let s = socks(&["--deny", &format!("127.0.0.1/32:{}", denied.addr.port())]);
    let mut c = proxy(&s);
    greet5(&mut c);
    send(&mut c, &request5(3, ([0, 0, 0, 0], 0).into()));
    let (code, relay) = reply5(&mut c);
    assert_eq!(code, 0);
    let u = udp();
    u.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    u.send_to(&datagram(echo.addr, b"ping"), relay).unwrap();
    let back = recv(&u).expect("the echo's answer");
    assert_eq!(
        back,
        datagram(echo.addr, b"pong:ping"),
        "behind a header naming its source"
    );
    // A host name in the header is resolved first.
    let mut named = b"\x00\x00\x00\x03\x09localhost".to_vec();
    named.extend(echo.addr.port().to_be_bytes());
    named.extend(b"by name");
    u.send_to(&named, relay).unwrap();
    assert_eq!(recv(&u).unwrap(), datagram(echo.addr, b"pong:by name"));
    // Refused by the rules: dropped. From another port of the client's host: dropped. A
    // fragment: dropped. None reaches anyone.
    u.send_to(&datagram(denied.addr, b"no"), relay).unwrap();
    let stranger = udp();
    stranger
        .send_to(&datagram(echo.addr, b"stranger"), relay)
        .unwrap();
    let mut frag = datagram(echo.addr, b"fragment");
    frag[2] = 1;
    u.send_to(&frag, relay).unwrap();
    // A source the client never sent to cannot send to the client through the relay.
    let outsider = udp();
    outsider.send_to(b"unsolicited", relay).unwrap();
    // A datagram after them all still goes through, so the ones before were seen and dropped.
    u.send_to(&datagram(echo.addr, b"last"), relay).unwrap();
    assert_eq!(recv(&u).unwrap(), datagram(echo.addr, b"pong:last"));
    u.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert_eq!(recv(&u), None, "nothing else came back");
    let got = echo.got.lock().unwrap().clone();
    assert_eq!(got, [&b"ping"[..], b"by name", b"last"]);
    assert!(denied.got.lock().unwrap().is_empty());
    // The association ends with its TCP connection: the port closes.
    c.flush().unwrap();
    drop(c);
    let line = wait_conn_lines(&s, 1).pop().unwrap();
    assert!(
        line.contains("version=5 command=UDP") && line.contains("result=ok"),
        "{line}"
    );
    assert!(line.contains(" up=15 down=30 "), "{line}");
    let mut rebound = false;
    for _ in 0..100 {
        if UdpSocket::bind(relay).is_ok() {
            rebound = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(rebound, "the relay port was closed");
}

/// A UDP ASSOCIATE asked of the proxy at `at`, from `u`: the client's TCP connection and the
/// relay's address.
fn associate(at: SocketAddr, u: &UdpSocket) -> (TcpStream, SocketAddr) {
    let mut c = connect(at);
    greet5(&mut c);
    send(&mut c, &request5(3, u.local_addr().unwrap()));
    let (code, relay) = reply5(&mut c);
    assert_eq!(code, 0);
    (c, relay)
}

#[test]
fn udp_datagrams_leave_for_either_family_whatever_address_the_client_reached() {
    // The client's port is bound to the address the client reached (here the loopback, as
    // with the default listener); datagrams leave by a port of their own, as dante's do, so
    // they reach IPv6 from an IPv4 listener, IPv4 from an IPv6 one (and, outside a test,
    // other hosts from a loopback listener: a socket bound to 127.0.0.1 cannot send there).
    let (echo4, echo6) = (UdpEcho::start(), UdpEcho::start_at("[::1]:0"));
    let s = socks(&[]);
    let u = udp();
    u.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let (_c, relay) = associate(s.addr(), &u);
    u.send_to(&datagram(echo6.addr, b"to v6"), relay).unwrap();
    assert_eq!(recv(&u), Some(datagram(echo6.addr, b"pong:to v6")));
    u.send_to(&datagram(echo4.addr, b"to v4"), relay).unwrap();
    assert_eq!(recv(&u), Some(datagram(echo4.addr, b"pong:to v4")));

    let s6 = Server::start(&["socks", "--listen", "tcp6:0:interface=\\:\\:1"]);
    let u6 = UdpSocket::bind("[::1]:0").unwrap();
    u6.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let (_c6, relay6) = associate(
        SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], s6.port())),
        &u6,
    );
    assert!(relay6.is_ipv6(), "{relay6}");
    u6.send_to(&datagram(echo4.addr, b"from v6"), relay6)
        .unwrap();
    assert_eq!(recv(&u6), Some(datagram(echo4.addr, b"pong:from v6")));
    // By name: localhost is 127.0.0.1.
    let mut named = b"\x00\x00\x00\x03\x09localhost".to_vec();
    named.extend(echo4.addr.port().to_be_bytes());
    named.extend(b"named");
    u6.send_to(&named, relay6).unwrap();
    assert_eq!(recv(&u6), Some(datagram(echo4.addr, b"pong:named")));
    // Each reached the echo once.
    assert_eq!(echo4.got.lock().unwrap().len(), 3);
}
