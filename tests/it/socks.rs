//! The socks plugin against real clients on 127.0.0.1: curl through SOCKS 4, 4a, 5 and 5 with
//! host names and logins, to an HTTP server the test runs (the web plugin); raw sockets for
//! BIND, UDP ASSOCIATE and every refusal. This file holds the shared helpers.

mod bind_udp;
mod clients;
mod refusals;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// An HTTP server (the web plugin) over a directory with `hello.txt` and a 4 MiB `big.bin`.
pub(crate) struct Backend {
    pub server: Server,
    pub dir: tempfile::TempDir,
}

impl Backend {
    pub fn start() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello.txt"), "hello through socks\n").unwrap();
        let big: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
        std::fs::write(dir.path().join("big.bin"), big).unwrap();
        let path = dir.path().to_str().unwrap().to_string();
        let server = Server::start(&[
            "web",
            "--path",
            &path,
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ]);
        Backend { server, dir }
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `twistrs socks` on a port picked at run time, with `args`.
pub(crate) fn socks(args: &[&str]) -> Server {
    let mut all = vec!["socks", "--listen", "tcp:0:interface=127.0.0.1"];
    all.extend_from_slice(args);
    Server::start(&all)
}

/// curl with `args`, bounded; (exit status, body).
pub(crate) fn curl(args: &[&str]) -> (i32, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl");
    (out.status.code().unwrap_or(-1), out.stdout)
}

/// A connection to the proxy with timeouts.
pub(crate) fn proxy(s: &Server) -> TcpStream {
    connect(s.addr())
}

/// The SOCKS5 greeting offering "no authentication", and its answer.
pub(crate) fn greet5(c: &mut TcpStream) {
    send(c, b"\x05\x01\x00");
    assert_eq!(read_n(c, 2), [5, 0]);
}

/// A SOCKS5 request for `cmd` to an IPv4 address.
pub(crate) fn request5(cmd: u8, to: SocketAddr) -> Vec<u8> {
    let mut r = vec![5, cmd, 0];
    match to {
        SocketAddr::V4(a) => {
            r.push(1);
            r.extend(a.ip().octets());
        }
        SocketAddr::V6(a) => {
            r.push(4);
            r.extend(a.ip().octets());
        }
    }
    r.extend(to.port().to_be_bytes());
    r
}

/// Reads a SOCKS5 reply: (REP, BND address).
pub(crate) fn reply5(c: &mut TcpStream) -> (u8, SocketAddr) {
    let head = read_n(c, 4);
    assert_eq!((head[0], head[2]), (5, 0), "a SOCKS5 reply: {head:?}");
    let addr = match head[3] {
        1 => {
            let b = read_n(c, 6);
            SocketAddr::from(([b[0], b[1], b[2], b[3]], u16::from_be_bytes([b[4], b[5]])))
        }
        4 => {
            let b = read_n(c, 18);
            let ip: [u8; 16] = b[..16].try_into().unwrap();
            SocketAddr::from((ip, u16::from_be_bytes([b[16], b[17]])))
        }
        t => panic!("address type {t} in a reply"),
    };
    (head[1], addr)
}

/// A SOCKS4 request (`userid` NUL, and a SOCKS4a host name after it if given).
pub(crate) fn request4(
    cmd: u8,
    port: u16,
    ip: [u8; 4],
    userid: &[u8],
    host: Option<&str>,
) -> Vec<u8> {
    let mut r = vec![4, cmd];
    r.extend(port.to_be_bytes());
    r.extend(ip);
    r.extend(userid);
    r.push(0);
    if let Some(h) = host {
        r.extend(h.as_bytes());
        r.push(0);
    }
    r
}

/// Reads a SOCKS4 reply: (CD, address).
pub(crate) fn reply4(c: &mut TcpStream) -> (u8, SocketAddr) {
    let b = read_n(c, 8);
    assert_eq!(b[0], 0, "a SOCKS4 reply: {b:?}");
    (
        b[1],
        SocketAddr::from(([b[4], b[5], b[6], b[7]], u16::from_be_bytes([b[2], b[3]]))),
    )
}

/// True once the peer has closed (EOF or reset) within the read timeout; data still on its
/// way before the close is skipped.
pub(crate) fn closed(c: &mut TcpStream) -> bool {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    let mut b = [0u8; 256];
    for _ in 0..64 {
        match c.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), WouldBlock | TimedOut) => return false,
            Err(_) => return true,
        }
    }
    false
}

/// Lines of the socks server's log that are connection lines.
pub(crate) fn conn_lines(s: &Server) -> Vec<String> {
    s.lines()
        .into_iter()
        .filter(|l| l.contains(" client=") && l.contains(" result="))
        .collect()
}

/// Waits (bounded) until the server logged `n` connection lines; returns them.
pub(crate) fn wait_conn_lines(s: &Server, n: usize) -> Vec<String> {
    let _ = s.wait_until(
        |l| {
            l.iter()
                .filter(|x| x.contains(" client=") && x.contains(" result="))
                .count()
                >= n
        },
        Duration::from_secs(10),
    );
    conn_lines(s)
}

/// As portforward's: a SOCKS5 relay whose client reads slowly but steadily (the destination
/// held back by backpressure for seconds at a time) outlives `--timeout 1`; before, it was
/// cut after a second or two and the client saw a clean end to a truncated stream.
#[test]
fn a_slow_but_steady_reader_outlives_the_idle_timeout() {
    const TOTAL: usize = 32 << 20;
    let dest = crate::portforward::source(TOTAL);
    let s = socks(&["--timeout", "1"]);
    let mut c = proxy(&s);
    greet5(&mut c);
    send(&mut c, &request5(1, dest));
    assert_eq!(reply5(&mut c).0, 0);
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let got = crate::portforward::slow_then_fast(&mut c, Duration::from_secs(7));
    assert_eq!(got, TOTAL, "{:?}", s.lines());
    drop(c);
    assert!(
        s.wait_until(
            |l| l.iter().any(|x| x.contains("result=ok")),
            Duration::from_secs(5)
        )
        .is_some(),
        "{:?}",
        s.lines()
    );
    assert!(!s.log_contains("idle timeout"), "{:?}", s.lines());
}
