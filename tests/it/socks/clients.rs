//! curl through the proxy: SOCKS 4, 4a, 5 and 5 with host names, logins, twistd's command
//! line, the connection log and its reopening.

use std::time::Duration;

use super::*;

fn url(host: &str, port: u16, path: &str) -> String {
    format!("http://{host}:{port}{path}")
}

#[test]
fn curl_through_socks4_4a_5_and_5_with_host_names() {
    let backend = Backend::start();
    let s = socks(&[]);
    let proxy = format!("127.0.0.1:{}", s.port());
    let cases = [
        (
            "--socks4",
            "127.0.0.1",
            "version=4 command=CONNECT dest=127.0.0.1:",
        ),
        (
            "--socks4a",
            "localhost",
            "version=4 command=CONNECT dest=localhost:",
        ),
        (
            "--socks5",
            "127.0.0.1",
            "version=5 command=CONNECT dest=127.0.0.1:",
        ),
        (
            "--socks5-hostname",
            "localhost",
            "version=5 command=CONNECT dest=localhost:",
        ),
    ];
    for (flag, host, _) in cases {
        let (code, body) = curl(&[flag, &proxy, &url(host, backend.port(), "/hello.txt")]);
        assert_eq!(
            (code, body.as_slice()),
            (0, &b"hello through socks\n"[..]),
            "{flag}"
        );
    }
    let lines = wait_conn_lines(&s, 4);
    for (flag, _, want) in cases {
        let want = format!(
            "{want}{} address=127.0.0.1:{}",
            backend.port(),
            backend.port()
        );
        let line = lines
            .iter()
            .find(|l| l.contains(&want))
            .unwrap_or_else(|| panic!("{flag}: no line with {want:?} in {lines:?}"));
        assert!(line.contains(" result=ok "), "{line}");
        // up: the request; down: the response (headers and body), not the SOCKS replies.
        let field = |k: &str| -> u64 {
            line.split(' ')
                .find_map(|f| f.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{k} in {line}"))
        };
        assert!(field("up=") > 30, "{line}");
        assert!(field("down=") > 20 && field("down=") < 1000, "{line}");
    }
}

#[test]
fn four_mib_arrive_intact_through_socks5() {
    let backend = Backend::start();
    let s = socks(&[]);
    let proxy = format!("127.0.0.1:{}", s.port());
    let (code, body) = curl(&[
        "--socks5-hostname",
        &proxy,
        &url("localhost", backend.port(), "/big.bin"),
    ]);
    assert_eq!(code, 0);
    assert!(
        body == std::fs::read(backend.file("big.bin")).unwrap(),
        "the same 4 MiB"
    );
    let line = wait_conn_lines(&s, 1).pop().unwrap();
    let down: u64 = line
        .split(' ')
        .find_map(|f| f.strip_prefix("down="))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(down > 4 << 20, "{line}");
}

#[test]
fn proxy_user_logs_in_and_others_are_refused() {
    let backend = Backend::start();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "ann:w0rd\n").unwrap();
    let s = socks(&[
        "--auth",
        "memory:joe:s3cret",
        "--auth",
        &format!("file:{}", users.display()),
    ]);
    let proxy = format!("127.0.0.1:{}", s.port());
    let target = url("127.0.0.1", backend.port(), "/hello.txt");
    for user in ["joe:s3cret", "ann:w0rd"] {
        let (code, body) = curl(&["--socks5", &proxy, "--proxy-user", user, &target]);
        assert_eq!(
            (code, body.as_slice()),
            (0, &b"hello through socks\n"[..]),
            "{user}"
        );
    }
    // A wrong password, no login at all, and SOCKS4 (no password to give) are refused.
    let (code, _) = curl(&["--socks5", &proxy, "--proxy-user", "joe:wrong", &target]);
    assert_ne!(code, 0);
    let (code, _) = curl(&["--socks5", &proxy, &target]);
    assert_ne!(code, 0);
    let (code, _) = curl(&["--socks4", &proxy, &target]);
    assert_ne!(code, 0);
    let lines = wait_conn_lines(&s, 5);
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has("user=\"joe\" result=ok"), "{lines:?}");
    assert!(has("user=\"ann\" result=ok"), "{lines:?}");
    assert!(
        has("authentication failed for user \\\"joe\\\""),
        "{lines:?}"
    );
    assert!(has("does not offer username/password"), "{lines:?}");
    assert!(
        has("SOCKS4 refused: authentication is required"),
        "{lines:?}"
    );
}

/// A port nothing listens on (bound, read, closed).
pub(crate) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn twistds_command_line_with_its_log_reopened_on_sighup() {
    let backend = Backend::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("socks.log");
    let log_arg = log.to_str().unwrap();
    // twistd's own options: -i, -p, -l. The port is free when picked, but another test may
    // bind it before the server does: then the start is tried again on another (bounded).
    let (s, port) = (0..5)
        .find_map(|_| {
            let port = free_port().to_string();
            let s = Server::spawn(&["socks", "-i", "127.0.0.1", "-p", &port, "-l", log_arg]);
            let taken = |l: &[String]| l.iter().any(|x| x.contains("Couldn't listen"));
            s.wait_until(|l| count_ports(l) >= 1 || taken(l), Duration::from_secs(10))
                .unwrap_or_else(|| panic!("socks did not start: {:?}", s.lines()));
            (!taken(&s.lines())).then_some((s, port))
        })
        .expect("5 ports in a row taken before the server bound them");
    assert_eq!(s.port().to_string(), port);
    let proxy = format!("127.0.0.1:{port}");
    let target = url("127.0.0.1", backend.port(), "/hello.txt");
    let (code, _) = curl(&["--socks4", &proxy, &target]);
    assert_eq!(code, 0);
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let wait_lines = |p: &std::path::Path, n: usize| {
        for _ in 0..100 {
            if read(p).lines().count() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    assert!(wait_lines(&log, 1), "the line is flushed within a second");
    let first = read(&log);
    assert!(
        first.contains("version=4 command=CONNECT") && first.contains(" result=ok "),
        "{first}"
    );
    // twistd's timestamp, then the fields.
    assert_eq!(
        first.find(" client="),
        Some("2026-11-26T17:36:39+0000".len())
    );
    assert!(conn_lines(&s).is_empty(), "with -l, not in the main log");
    // logrotate: move the file, then SIGHUP.
    let moved = dir.path().join("socks.log.1");
    std::fs::rename(&log, &moved).unwrap();
    s.signal(1);
    // The reopen creates the file again under its name.
    for _ in 0..500 {
        if log.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (code, _) = curl(&["--socks5", &proxy, &target]);
    assert_eq!(code, 0);
    assert!(wait_lines(&log, 1), "a new socks.log after SIGHUP");
    assert!(read(&log).contains("version=5"));
    assert_eq!(
        read(&moved).lines().count(),
        1,
        "the moved file kept its line"
    );
}

#[test]
fn twistds_interface_may_be_a_host_name() {
    // twistd binds `-i localhost` (its socket's bind resolves the name); it was refused.
    let backend = Backend::start();
    let s = Server::start(&["socks", "-i", "localhost", "-p", "0"]);
    let proxy = format!("127.0.0.1:{}", s.port());
    let (code, body) = curl(&[
        "--socks4",
        &proxy,
        &url("127.0.0.1", backend.port(), "/hello.txt"),
    ]);
    assert_eq!(code, 0, "{:?}", s.lines());
    assert!(!body.is_empty());
    assert!(
        !s.lines().iter().any(|l| l.contains("beyond the loopback")),
        "localhost is the loopback interface: {:?}",
        s.lines()
    );
}

#[test]
fn listening_beyond_loopback_without_auth_warns() {
    let warning = "beyond the loopback interface, without --auth";
    // All interfaces (no traffic leaves 127.0.0.1: the test only reads the log).
    let s = Server::start(&["socks", "--listen", "tcp:0"]);
    assert!(s.log_contains(warning), "{:?}", s.lines());
    let s = Server::start(&["socks", "--listen", "tcp:0", "--auth", "memory:a:b"]);
    assert!(
        !s.lines().iter().any(|l| l.contains(warning)),
        "{:?}",
        s.lines()
    );
    let s = socks(&[]);
    assert!(
        !s.lines().iter().any(|l| l.contains(warning)),
        "{:?}",
        s.lines()
    );
}

/// An echo server on `addr` for one connection, in a thread (bounded by its timeouts).
fn echo_once(l: std::net::TcpListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 1024];
            while let Ok(n) = std::io::Read::read(&mut s, &mut buf) {
                if n == 0 || std::io::Write::write_all(&mut s, &buf[..n]).is_err() {
                    break;
                }
            }
        }
    })
}

#[test]
fn an_ipv6_destination_and_data_sent_behind_the_request() {
    let s = socks(&[]);
    // Data in the same write as the request reaches the destination first, then the rest.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let to = l.local_addr().unwrap();
    let t = echo_once(l);
    let mut c = proxy(&s);
    send(
        &mut c,
        &[&b"\x05\x01\x00"[..], &request5(1, to), b"early "].concat(),
    );
    assert_eq!(read_n(&mut c, 2), [5, 0]);
    let (code, bound) = reply5(&mut c);
    assert_eq!(code, 0);
    assert_eq!(
        bound.ip(),
        to.ip(),
        "BND.ADDR: the proxy's side of the outgoing connection"
    );
    send(&mut c, b"late");
    assert_eq!(read_n(&mut c, 10), b"early late");
    drop(c);
    t.join().unwrap();
    // IPv6, if this machine has a loopback for it.
    let Ok(l6) = std::net::TcpListener::bind("[::1]:0") else {
        return skip("an_ipv6_destination", "no IPv6 loopback");
    };
    let to6 = l6.local_addr().unwrap();
    let t = echo_once(l6);
    let mut c = proxy(&s);
    greet5(&mut c);
    send(&mut c, &request5(1, to6));
    assert_eq!(reply5(&mut c).0, 0);
    send(&mut c, b"over ipv6");
    assert_eq!(read_n(&mut c, 9), b"over ipv6");
    drop(c);
    t.join().unwrap();
    let lines = wait_conn_lines(&s, 2);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("dest={to6} address={to6}"))),
        "{lines:?}"
    );
}

/// `--connect-timeout` and `--request-timeout` too long for the clock wait as long as it
/// takes: requests to an address and to a host name are carried, never a panic.
#[test]
fn timeouts_past_any_clock_carry_requests_never_panic() {
    let backend = Backend::start();
    let huge = "18446744073709551615";
    let s = socks(&["--connect-timeout", huge, "--request-timeout", huge]);
    let proxy = format!("127.0.0.1:{}", s.port());
    for (flag, host) in [
        ("--socks5", "127.0.0.1"),
        ("--socks5-hostname", "localhost"),
    ] {
        let (code, body) = curl(&[flag, &proxy, &url(host, backend.port(), "/hello.txt")]);
        assert_eq!(
            (code, body.as_slice()),
            (0, &b"hello through socks\n"[..]),
            "{flag}: {:?}",
            s.lines()
        );
    }
    let lines = wait_conn_lines(&s, 2);
    assert!(lines.iter().all(|l| l.contains(" result=ok ")), "{lines:?}");
    assert!(
        !s.lines().iter().any(|l| l.contains("panicked")),
        "{:?}",
        s.lines()
    );
}
