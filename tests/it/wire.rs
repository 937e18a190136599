//! Each wire plugin over real TCP, UDP and UNIX sockets.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;

const LOCAL: &str = "tcp:0:interface=127.0.0.1";
const LOCAL_UDP: &str = "udp:0:interface=127.0.0.1";

#[test]
fn echo_over_tcp_udp_and_unix() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("echo.sock");
    let unix = format!("unix:{}", sock.display());
    let mut srv = Server::start(&[
        "echo", "--listen", LOCAL, "--listen", LOCAL_UDP, "--listen", &unix,
    ]);
    let ports = srv.ports();
    assert_eq!(ports.len(), 2, "{:?}", srv.lines());

    let mut c = connect(srv.addr());
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut w = c.try_clone().unwrap();
        let big = big.clone();
        std::thread::spawn(move || w.write_all(&big).unwrap())
    };
    assert_eq!(read_n(&mut c, big.len()), big, "200 kB come back intact");
    writer.join().unwrap();

    assert_eq!(udp_ask(ports[1], b"ping over udp"), b"ping over udp");

    assert!(sock.exists(), "the socket file is there");
    let lock = dir.path().join("echo.sock.lock");
    let owner = std::fs::read_link(&lock).expect("a lock symlink beside the socket");
    assert_eq!(
        owner.to_str(),
        Some(srv.pid().to_string().as_str()),
        "naming the server"
    );
    let mut u = UnixStream::connect(&sock).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    u.write_all(b"over unix").unwrap();
    assert_eq!(read_n(&mut u, 9), b"over unix");

    // Half-close: the peer's EOF makes the server flush and close.
    c.write_all(b"last").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut c), b"last");

    assert_eq!(srv.term().code(), None, "stopped by its signal");
    assert!(!sock.exists(), "socket removed at exit");
    assert!(
        std::fs::symlink_metadata(&lock).is_err(),
        "lock removed at exit"
    );
}

#[test]
fn discard_reads_and_answers_nothing() {
    let srv = Server::start(&["discard", "--listen", LOCAL, "--listen", LOCAL_UDP]);
    let mut c = connect(srv.addr());
    send(&mut c, &vec![b'x'; 100_000]);
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 16];
    let r = c.read(&mut b);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "no answer and still open: {r:?}"
    );
    let u = udp();
    u.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    u.send_to(b"x", ("127.0.0.1", srv.ports()[1])).unwrap();
    assert!(u.recv_from(&mut b).is_err(), "no UDP answer");
}

#[test]
fn chargen_streams_the_rfc_pattern() {
    let srv = Server::start(&["chargen", "--listen", LOCAL, "--listen", LOCAL_UDP]);
    let pattern = twistrs_wire::chargen_pattern();
    let mut c = connect(srv.addr());
    let got = read_n(&mut c, pattern.len() * 3 + 100);
    let want: Vec<u8> = pattern.iter().cycle().take(got.len()).copied().collect();
    assert_eq!(got, want);
    for _ in 0..3 {
        let d = udp_ask(srv.ports()[1], b"");
        assert!(d.len() <= 512);
        assert!(
            d.iter()
                .all(|b| (b' '..=b'~').contains(b) || *b == b'\r' || *b == b'\n')
        );
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn daytime_and_time_answer_and_close() {
    let srv = Server::start(&["daytime", "--listen", LOCAL, "--listen", LOCAL_UDP]);
    let text = String::from_utf8(read_to_end(&mut connect(srv.addr()))).unwrap();
    let want = twistrs_wire::asctime(unix_now());
    assert!(text.ends_with("\r\n"), "{text:?}");
    // Compare up to the minute: the second may tick between the two readings.
    assert_eq!(&text[..16], &want[..16], "{text:?} vs {want:?}");
    let d = String::from_utf8(udp_ask(srv.ports()[1], b"")).unwrap();
    assert_eq!(&d[..16], &want[..16]);

    let srv = Server::start(&["time", "--listen", LOCAL, "--listen", LOCAL_UDP]);
    let got = read_to_end(&mut connect(srv.addr()));
    assert_eq!(got.len(), 4);
    let secs = u32::from_be_bytes(got.try_into().unwrap());
    let want = twistrs_wire::rfc868_seconds(unix_now());
    assert!(
        want.abs_diff(secs) <= 2,
        "RFC 868 counts from 1900: {secs} vs {want}"
    );
    let d = udp_ask(srv.ports()[1], b"");
    let secs = u32::from_be_bytes(d.try_into().unwrap());
    assert!(want.abs_diff(secs) <= 2);
}

#[test]
fn qotd_serves_built_in_and_file_quotes() {
    let srv = Server::start(&["qotd", "--listen", LOCAL]);
    let q = read_to_end(&mut connect(srv.addr()));
    assert!(q.ends_with(b"\r\n") && q.len() > 2, "{q:?}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quotes");
    std::fs::write(&file, "first quote\n%\nsecond\nquote\n%\n").unwrap();
    let srv = Server::start(&[
        "qotd",
        "--file",
        file.to_str().unwrap(),
        "--listen",
        LOCAL,
        "--listen",
        LOCAL_UDP,
    ]);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(read_to_end(&mut connect(srv.addr())));
    }
    seen.insert(udp_ask(srv.ports()[1], b""));
    let want: std::collections::HashSet<Vec<u8>> =
        [b"first quote\r\n".to_vec(), b"second\r\nquote\r\n".to_vec()].into();
    assert_eq!(seen, want);

    let long = dir.path().join("long");
    std::fs::write(&long, "x".repeat(600)).unwrap();
    let (code, _, err) = run(&["-n", "qotd", "--file", long.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("RFC 865"), "{err}");
}

/// The start reads its files as root: a FIFO another user put at the name (no writer will
/// come) fails it at once instead of hanging it, and a link to an endless device is refused,
/// not read.
#[test]
fn qotd_refuses_a_fifo_or_device_as_its_quotes_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("quotes");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let zero = dir.path().join("zero");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let root = as_root(
        "qotd_refuses_a_fifo_or_device",
        "a FIFO of another user's needs root",
    );
    if root {
        std::os::unix::fs::lchown(&fifo, Some(65534), Some(65534)).unwrap();
    }
    let fifo_is = "a FIFO of uid 65534, not root's or uid 0's";
    for (file, what) in [(&fifo, fifo_is), (&zero, "a character device")] {
        if file == &fifo && !root {
            continue;
        }
        if file == &zero
            && !std::fs::metadata("/dev/zero").is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_char_device()
            })
        {
            skip(
                "qotd_refuses_a_fifo_or_device",
                "/dev/zero is not a device here",
            );
            continue;
        }
        let path = file.to_str().unwrap();
        let mut srv = Server::spawn(&["--pidfile=", "qotd", "--file", path, "--listen", LOCAL]);
        let st = srv.wait(Duration::from_secs(10));
        assert_eq!(
            st.and_then(|s| s.code()),
            Some(1),
            "{path}: exits 1 at once: {:?}",
            srv.lines()
        );
        let want = format!("qotd: quotes file {path}: not a regular file ({what})");
        assert!(
            srv.lines().iter().any(|l| l.contains(&want)),
            "{want}: {:?}",
            srv.lines()
        );
    }
}

#[test]
fn tcp6_on_loopback() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        skip("tcp6_on_loopback", "no IPv6 loopback here");
        return;
    }
    // `tcp:` on an IPv6 address too, as in twistd (Twisted's tcp.Port takes the address's
    // family).
    for listen in [r"tcp6:0:interface=\:\:1", r"tcp:0:interface=\:\:1"] {
        let srv = Server::start(&["echo", "--listen", listen]);
        let mut c = connect(std::net::SocketAddr::from((
            std::net::Ipv6Addr::LOCALHOST,
            srv.port(),
        )));
        send(&mut c, b"six");
        assert_eq!(read_n(&mut c, 3), b"six", "{listen}");
    }
}

/// Echo and chargen over UDP answer no datagram from a privileged port (another host's
/// echo or chargen, say) or from an address no answer should go to, as openbsd-inetd's
/// services and twistrs inetd's internal ones do not: one spoofed datagram from one's port
/// to the other's (CERT CA-1996-01) would loop between them without end. Each drop is
/// logged (at most once a minute per service). Before, both answered.
#[test]
fn udp_services_do_not_answer_a_privileged_port() {
    let echo = Server::start(&["echo", "--listen", LOCAL_UDP]);
    let chargen = Server::start(&["chargen", "--listen", LOCAL_UDP]);
    // Binding one takes root, as the inetd tests' do.
    let privileged = (600..1024)
        .find_map(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).ok())
        .expect("a free privileged UDP port (run as root)");
    privileged
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 1024];
    for (srv, label) in [(&echo, "'echo/udp'"), (&chargen, "'chargen/udp'")] {
        let port = srv.ports()[0];
        privileged.send_to(b"loop?", ("127.0.0.1", port)).unwrap();
        let got = privileged.recv_from(&mut buf);
        assert!(got.is_err(), "{label} answered: {got:?}");
        srv.wait_until(
            |l| {
                l.iter()
                    .any(|x| x.contains(label) && x.contains("dropped unanswered"))
            },
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("{:?}", srv.lines()));
        // A client is answered as before.
        assert!(!udp_ask(port, b"still here").is_empty(), "{label}");
    }
}
