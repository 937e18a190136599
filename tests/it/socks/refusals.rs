//! Every refusal with its protocol's own reply code, over raw sockets: rules, a refused port,
//! a connect timeout, a name that does not resolve, unsupported commands and address types,
//! a failed login, and malformed, truncated, oversized and late requests.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::clients::free_port;
use super::*;

/// Sends a SOCKS5 CONNECT (after the greeting) and returns the reply code.
fn connect5(s: &Server, to: SocketAddr) -> u8 {
    let mut c = proxy(s);
    greet5(&mut c);
    send(&mut c, &request5(1, to));
    let (code, _) = reply5(&mut c);
    if code != 0 {
        assert!(closed(&mut c), "closed after the refusal");
    }
    code
}

/// Sends a SOCKS4 CONNECT and returns the reply code.
fn connect4(s: &Server, to: SocketAddr) -> u8 {
    let SocketAddr::V4(a) = to else { panic!() };
    let mut c = proxy(s);
    send(&mut c, &request4(1, a.port(), a.ip().octets(), b"", None));
    let (code, _) = reply4(&mut c);
    if code != 90 {
        assert!(closed(&mut c), "closed after the refusal");
    }
    code
}

#[test]
fn rules_refuse_with_0x02_and_91_and_cannot_be_dodged() {
    let backend = Backend::start();
    let port = backend.port();
    let s = socks(&[
        "--allow",
        &format!("127.0.0.1/32:{}", port),
        "--deny",
        "127.0.0.0/8",
        "--deny",
        "::1",
    ]);
    let ok: SocketAddr = ([127, 0, 0, 1], port).into();
    let denied: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    assert_eq!(connect5(&s, ok), 0);
    assert_eq!(connect5(&s, denied), 0x02);
    assert_eq!(connect4(&s, denied), 91);
    // The same address written as IPv4-mapped IPv6, and by name, is refused the same.
    let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", denied.port())
        .parse()
        .unwrap();
    assert_eq!(connect5(&s, mapped), 0x02);
    let mut c = proxy(&s);
    greet5(&mut c);
    let mut r = b"\x05\x01\x00\x03\x09localhost".to_vec();
    r.extend(denied.port().to_be_bytes());
    send(&mut c, &r);
    assert_eq!(reply5(&mut c).0, 0x02);
    let lines = wait_conn_lines(&s, 5);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("result=refused") && l.contains("refused by --deny 127.0.0.0/8")),
        "{lines:?}"
    );
}

#[test]
fn the_unspecified_address_cannot_dodge_the_rules_to_this_host() {
    // connect(0.0.0.0) reaches this host's loopback services (as :: and ::ffff:0.0.0.0 do):
    // with the loopback denied, they were relayed there all the same. dante refuses them.
    let backend = Backend::start();
    let port = backend.port();
    let s = socks(&["--deny", "127.0.0.0/8", "--deny", "::1"]);
    let any: SocketAddr = ([0, 0, 0, 0], port).into();
    assert_eq!(connect5(&s, any), 0x02);
    assert_eq!(connect4(&s, any), 91);
    for v6 in ["[::ffff:0.0.0.0]", "[::]"] {
        let a: SocketAddr = format!("{v6}:{port}").parse().unwrap();
        assert_eq!(connect5(&s, a), 0x02, "{a}");
    }
    let lines = wait_conn_lines(&s, 4);
    assert!(
        lines.iter().all(|l| l.contains("result=refused")
            && l.contains(&format!(":{port} is the unspecified address: no host's"))),
        "{lines:?}"
    );
    // Nor through a UDP association: the datagram is dropped, the next one still goes.
    let echo = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    let allowed = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    let s = socks(&["--deny", "127.0.0.1/32"]);
    let mut c = proxy(&s);
    greet5(&mut c);
    let u = udp();
    send(&mut c, &request5(3, u.local_addr().unwrap()));
    let (code, relay) = reply5(&mut c);
    assert_eq!(code, 0);
    let mut to_any = request5(0, ([0, 0, 0, 0], echo_port).into());
    to_any[..3].copy_from_slice(&[0, 0, 0]);
    to_any.extend(b"via 0.0.0.0");
    u.send_to(&to_any, relay).unwrap();
    let mut to_allowed = request5(0, allowed.local_addr().unwrap());
    to_allowed[..3].copy_from_slice(&[0, 0, 0]);
    to_allowed.extend(b"allowed");
    u.send_to(&to_allowed, relay).unwrap();
    allowed
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = allowed.recv(&mut buf).expect("the allowed datagram");
    assert_eq!(&buf[..n], b"allowed");
    echo.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(echo.recv(&mut buf).is_err(), "nothing reached 127.0.0.1");
}

#[test]
fn a_refused_port_and_a_connect_timeout() {
    let s = socks(&["--connect-timeout", "1"]);
    let nobody: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    assert_eq!(connect5(&s, nobody), 0x05);
    assert_eq!(connect4(&s, nobody), 91);
    // A listener whose accept queue is full drops SYNs: the connect times out.
    let full = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: listen(2) on our own socket, to shrink its queue to one connection.
    assert_eq!(unsafe { libc::listen(full.as_raw_fd(), 0) }, 0);
    let addr = full.local_addr().unwrap();
    let _filler = TcpStream::connect(addr).unwrap();
    let _second = TcpStream::connect_timeout(&addr, Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(
        connect5(&s, addr),
        0x06,
        "TTL expired: the connect timed out"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let lines = wait_conn_lines(&s, 3);
    assert!(
        lines.iter().any(|l| l.contains("result=failed")),
        "{lines:?}"
    );
    // What was left of the 1 s, told to the millisecond (it was 0.999985468 s).
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(" reason=\"no connection within 1 s\"")),
        "{lines:?}"
    );
}

#[test]
fn a_name_that_does_not_resolve_is_host_unreachable() {
    let s = socks(&[]);
    let mut c = proxy(&s);
    greet5(&mut c);
    send(&mut c, b"\x05\x01\x00\x03\x13nonexistent.invalid\x00\x50");
    assert_eq!(reply5(&mut c).0, 0x04);
    assert!(closed(&mut c));
    // SOCKS4a: 91.
    let mut c = proxy(&s);
    send(
        &mut c,
        &request4(1, 80, [0, 0, 0, 1], b"", Some("nonexistent.invalid")),
    );
    assert_eq!(reply4(&mut c).0, 91);
    let lines = wait_conn_lines(&s, 2);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cannot resolve nonexistent.invalid:80")),
        "{lines:?}"
    );
}

#[test]
fn unsupported_commands_and_address_types() {
    let s = socks(&[]);
    let mut c = proxy(&s);
    greet5(&mut c);
    send(&mut c, b"\x05\x09\x00\x01\x7f\x00\x00\x01\x00\x50");
    assert_eq!(reply5(&mut c).0, 0x07);
    assert!(closed(&mut c));
    let mut c = proxy(&s);
    greet5(&mut c);
    send(&mut c, b"\x05\x01\x00\x02\x7f\x00\x00\x01\x00\x50");
    assert_eq!(reply5(&mut c).0, 0x08);
    assert!(closed(&mut c));
    // SOCKS4 has CONNECT and BIND only; and UDP needs SOCKS5.
    let mut c = proxy(&s);
    send(&mut c, &request4(3, 80, [127, 0, 0, 1], b"", None));
    assert_eq!(reply4(&mut c).0, 91);
    assert!(closed(&mut c));
    // Not SOCKS at all: closed without a word.
    let mut c = proxy(&s);
    send(&mut c, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(closed(&mut c));
    let lines = wait_conn_lines(&s, 4);
    for want in [
        "command 9 not supported",
        "address type 2 not supported",
        "command 3 not supported",
        "not a SOCKS request (first byte 0x47)",
    ] {
        assert!(lines.iter().any(|l| l.contains(want)), "{want}: {lines:?}");
    }
}

#[test]
fn a_failed_login_and_no_acceptable_method() {
    let s = socks(&["--auth", "memory:joe:s3cret"]);
    let mut c = proxy(&s);
    send(&mut c, b"\x05\x01\x02");
    assert_eq!(read_n(&mut c, 2), [5, 2]);
    send(&mut c, b"\x01\x03joe\x05wrong");
    assert_eq!(read_n(&mut c, 2), [1, 1]);
    assert!(closed(&mut c));
    // "No authentication" is not accepted with --auth.
    let mut c = proxy(&s);
    send(&mut c, b"\x05\x01\x00");
    assert_eq!(read_n(&mut c, 2), [5, 0xff]);
    assert!(closed(&mut c));
    // And the right password works.
    let mut c = proxy(&s);
    send(&mut c, b"\x05\x01\x02\x01\x03joe\x06s3cret");
    assert_eq!(read_n(&mut c, 4), [5, 2, 1, 0]);
}

#[test]
fn truncated_oversized_and_late_requests() {
    let s = socks(&["--request-timeout", "1"]);
    // Truncated: half a request, then EOF: general failure, and the close.
    let mut c = proxy(&s);
    greet5(&mut c);
    send(&mut c, b"\x05\x01\x00\x01\x7f\x00");
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(reply5(&mut c).0, 0x01);
    assert!(closed(&mut c));
    // Oversized: a SOCKS4 user id past 255 bytes gets 91 at once, before any NUL.
    let mut c = proxy(&s);
    let mut long = request4(1, 80, [127, 0, 0, 1], &[b'u'; 300], None);
    long.pop();
    send(&mut c, &long);
    assert_eq!(reply4(&mut c).0, 91);
    assert!(closed(&mut c));
    // Late: a request that has not arrived whole after --request-timeout.
    let mut c = proxy(&s);
    greet5(&mut c);
    send(&mut c, b"\x05\x01");
    let started = Instant::now();
    assert_eq!(reply5(&mut c).0, 0x01);
    assert!(closed(&mut c));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // A client that says nothing at all is closed too.
    let mut c = proxy(&s);
    assert!(closed(&mut c));
    let lines = wait_conn_lines(&s, 4);
    for want in [
        "the client closed before its request was complete",
        "SOCKS4 user id longer than 255 bytes",
        "the request did not arrive within 1 s",
    ] {
        assert!(lines.iter().any(|l| l.contains(want)), "{want}: {lines:?}");
    }
    // The late and the truncated ones had greeted as SOCKS5; the silent one said nothing.
    let late: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("the request did not arrive within 1 s"))
        .collect();
    assert_eq!(late.len(), 2, "{lines:?}");
    assert!(late.iter().any(|l| l.contains(" version=5 ")), "{late:?}");
    assert!(late.iter().any(|l| l.contains(" version=- ")), "{late:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" version=5 ") && l.contains("before its request was complete")),
        "{lines:?}"
    );
}
