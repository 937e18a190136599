//! inetd with the real binary: `/bin/cat` nowait, a `wait` UDP service, every internal
//! service over TCP and UDP, the user field, `.max`, SIGHUP adding, removing and changing
//! services while sessions go on, tcp and tcp6 on one port, a bad file, no zombie.
//!
//! The file names its ports: they are picked free at run time (bind 127.0.0.1:0, close) and
//! written into it; a port taken meanwhile makes the start fail, and the start is tried
//! again with other ports (bounded). `--interface 127.0.0.1` keeps everything on loopback.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::*;

/// Ports free for TCP and UDP alike, just now.
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    let mut out: Vec<u16> = Vec::new();
    let mut held = Vec::new();
    for _ in 0..n * 20 {
        if out.len() == n {
            break;
        }
        let t = match TcpListener::bind("127.0.0.1:0") {
            Ok(t) => t,
            Err(e) => panic!("bind(127.0.0.1:0) failed ({e}): TIME_WAIT sockets from benchmarks?"),
        };
        let p = t.local_addr().unwrap().port();
        if let Ok(u) = UdpSocket::bind(("127.0.0.1", p)) {
            out.push(p);
            held.push((t, u));
        }
    }
    assert_eq!(out.len(), n, "could not find {n} free ports");
    out
}

/// Writes `text` with `{0}`, `{1}`... replaced by `ports`.
fn fill(text: &str, ports: &[u16]) -> String {
    let mut t = text.to_string();
    for (i, p) in ports.iter().enumerate() {
        t = t.replace(&format!("{{{i}}}"), &p.to_string());
    }
    t
}

/// A running inetd, with the directory of its files.
struct Inetd {
    server: Server,
    dir: tempfile::TempDir,
    ports: Vec<u16>,
}

impl Inetd {
    fn conf(&self) -> PathBuf {
        self.dir.path().join("inetd.conf")
    }

    fn port(&self, i: usize) -> u16 {
        self.ports[i]
    }

    fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[i]))
    }
}

/// Starts `twistrs -n inetd` on a file made from `conf` and a services file made from
/// `services` (both with `{N}` for `nports` ports picked at run time), waiting until
/// `sockets` ports are open; tries other ports (at most 5 times) if one was taken meanwhile.
fn start(conf: &str, services: &str, nports: usize, sockets: usize, extra: &[&str]) -> Inetd {
    start_with(&[], conf, services, nports, sockets, extra)
}

/// As [`start`], with twistrs' own options (`-u nobody`) before `inetd`.
fn start_with(
    global: &[&str],
    conf: &str,
    services: &str,
    nports: usize,
    sockets: usize,
    extra: &[&str],
) -> Inetd {
    for _ in 0..5 {
        let ports = free_ports(nports);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("inetd.conf"), fill(conf, &ports)).unwrap();
        std::fs::write(dir.path().join("services"), fill(services, &ports)).unwrap();
        let (c, s) = (dir.path().join("inetd.conf"), dir.path().join("services"));
        let mut args = global.to_vec();
        args.extend_from_slice(&[
            "--pidfile=",
            "inetd",
            "-f",
            c.to_str().unwrap(),
            "--services",
            s.to_str().unwrap(),
            "--interface",
            "127.0.0.1",
        ]);
        args.extend_from_slice(extra);
        let mut server = Server::spawn(&args);
        let ok = server.wait_until(
            |l| {
                l.iter().filter(|x| x.contains(" starting on ")).count() >= sockets
                    || l.iter().any(|x| x.contains("Couldn't listen"))
            },
            Duration::from_secs(10),
        );
        let lines = server.lines();
        if lines.iter().any(|x| x.contains("Couldn't listen")) {
            server.wait(Duration::from_secs(10));
            continue;
        }
        assert!(ok.is_some(), "inetd did not start: {lines:?}");
        return Inetd { server, dir, ports };
    }
    panic!("5 starts in a row found a port taken");
}

/// Connects with 5 s timeouts.
fn client(addr: SocketAddr) -> TcpStream {
    connect(addr)
}

/// Everything the service sends until it closes.
fn answer(addr: SocketAddr) -> Vec<u8> {
    let mut s = client(addr);
    read_to_end(&mut s)
}

/// Waits (bounded) until `parent` has no child left, zombies included.
fn wait_no_children(parent: u32) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let left = children(parent);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < end, "children left (zombies?): {left:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn cat_nowait_gets_each_connection_as_stdin_stdout_and_stderr() {
    let mut i = start("{0} stream tcp nowait root /bin/cat cat\n", "", 1, 1, &[]);
    let pid = i.server.pid();
    // Several sessions at once, each its own cat.
    let mut sessions: Vec<TcpStream> = (0..8).map(|_| client(i.addr(0))).collect();
    for (n, s) in sessions.iter_mut().enumerate() {
        send(s, format!("session {n}\n").as_bytes());
    }
    for (n, s) in sessions.iter_mut().enumerate() {
        let want = format!("session {n}\n");
        assert_eq!(read_n(s, want.len()), want.as_bytes());
    }
    let cats: Vec<u32> = children(pid)
        .into_iter()
        .filter(|(_, st, argv)| *st != 'Z' && argv == &["cat"])
        .map(|(p, _, _)| p)
        .collect();
    assert_eq!(cats.len(), 8, "one cat per connection");
    // A cat holds its socket on 0, 1 and 2 and nothing else of twistrs'.
    let fds: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{}/fd", cats[0]))
        .unwrap()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            (
                e.file_name().to_string_lossy().into_owned(),
                target.to_string_lossy().into_owned(),
            )
        })
        .collect();
    assert_eq!(fds.len(), 3, "{fds:?}");
    assert!(
        fds.iter()
            .all(|(_, t)| t.starts_with("socket:") && *t == fds[0].1),
        "{fds:?}"
    );
    // Half-closing ends a cat; its answer has all arrived.
    for mut s in sessions {
        send(&mut s, b"bye\n");
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&mut s), b"bye\n");
    }
    // Many short sessions: every child reaped, no zombie.
    for _ in 0..30 {
        let mut s = client(i.addr(0));
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(read_to_end(&mut s).is_empty());
    }
    wait_no_children(pid);
    assert!(i.server.term().code().is_none(), "stopped by SIGTERM");
}

/// A `wait` UDP program: answers `rounds` datagrams with its PID and uid, then exits.
const UDP_PROGRAM: &str = "
import os, socket, sys
s = socket.socket(fileno=0)
s.settimeout(10)
for _ in range(int(sys.argv[1])):
    d, a = s.recvfrom(2048)
    s.sendto(b'%d %d ' % (os.getpid(), os.getuid()) + d, a)
";

fn udp_answer(sock: &UdpSocket, port: u16, data: &[u8]) -> String {
    sock.send_to(data, ("127.0.0.1", port)).expect("send_to");
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).expect("udp answer");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn a_wait_udp_program_gets_the_socket_and_is_started_again_after_it_exits() {
    let Ok(python) = ["/usr/bin/python3"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or(())
        .or_else(|()| which("python3"))
    else {
        skip("a_wait_udp_program...", "no python3");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("udp.py");
    std::fs::write(&script, UDP_PROGRAM).unwrap();
    let conf = format!(
        "{{0}} dgram udp wait root {} python3 {} 3\n",
        python.display(),
        script.display()
    );
    let i = start(&conf, "", 1, 1, &[]);
    let c = udp();
    // Three datagrams, one at a time: the same program answers them all; inetd did not
    // start a second one while the first held the socket.
    let first: Vec<String> = (0..3)
        .map(|n| udp_answer(&c, i.port(0), format!("ping {n}").as_bytes()))
        .collect();
    let pid_of = |a: &str| a.split(' ').next().unwrap_or("").to_string();
    assert!(
        first.iter().all(|a| pid_of(a) == pid_of(&first[0])),
        "{first:?}"
    );
    assert!(first[2].ends_with(" 0 ping 2"), "{first:?}");
    // It exited after three: the next datagram starts another.
    let next = udp_answer(&c, i.port(0), b"again");
    assert_ne!(pid_of(&next), pid_of(&first[0]), "{next}");
    assert!(next.ends_with("again"), "{next}");
}

#[test]
fn a_stopped_wait_program_takes_its_children_with_it_and_frees_the_port() {
    use std::os::unix::fs::PermissionsExt;
    // A shell that runs `sleep`, which inherits the socket as its stdio: stopping the shell
    // alone left `sleep` holding the port, and the next start could not bind it.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hold.sh");
    std::fs::write(&script, "#!/bin/sh\nsleep 30\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = format!("{{0}} dgram udp wait root {} hold.sh\n", script.display());
    let mut i = start(&conf, "", 1, 1, &[]);
    let c = udp();
    c.send_to(b"x", SocketAddr::from(([127, 0, 0, 1], i.port(0))))
        .unwrap();
    // The shell, then its sleep.
    let end = Instant::now() + Duration::from_secs(10);
    let sleep = loop {
        let found = children(i.server.pid())
            .into_iter()
            .flat_map(|(sh, _, _)| children(sh))
            .map(|(pid, _, _)| pid)
            .next();
        if let Some(pid) = found {
            break pid;
        }
        assert!(Instant::now() < end, "no sleep under the program");
        std::thread::sleep(Duration::from_millis(20));
    };
    i.server.term();
    let end = Instant::now() + Duration::from_secs(10);
    while stat(sleep).is_some_and(|(state, _)| state != 'Z') {
        assert!(
            Instant::now() < end,
            "the program's sleep outlived the stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        std::net::UdpSocket::bind(("127.0.0.1", i.port(0))).is_ok(),
        "the port is free for the next start"
    );
}

fn which(prog: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
        .ok_or(())
}

#[test]
fn every_internal_service_over_tcp_and_udp() {
    let conf = "echo stream tcp nowait root internal\n\
                echo dgram udp wait root internal\n\
                discard stream tcp nowait root internal\n\
                discard dgram udp wait root internal\n\
                chargen stream tcp nowait root internal\n\
                chargen dgram udp wait root internal\n\
                daytime stream tcp nowait root internal\n\
                daytime dgram udp wait root internal\n\
                time stream tcp nowait root internal\n\
                time dgram udp wait root internal\n";
    let services = "echo {0}/tcp\necho {0}/udp\ndiscard {1}/tcp\ndiscard {1}/udp\n\
                    chargen {2}/tcp\nchargen {2}/udp\ndaytime {3}/tcp\ndaytime {3}/udp\n\
                    time {4}/tcp\ntime {4}/udp\n";
    let i = start(conf, services, 5, 10, &[]);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    // echo
    let mut s = client(i.addr(0));
    send(&mut s, b"hello inetd");
    assert_eq!(read_n(&mut s, 11), b"hello inetd");
    assert_eq!(udp_ask(i.port(0), b"udp echo"), b"udp echo");
    // discard: nothing back, and a close after our EOF.
    let mut s = client(i.addr(1));
    send(&mut s, b"into the void");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(read_to_end(&mut s).is_empty());
    let c = udp();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    c.send_to(b"x", ("127.0.0.1", i.port(1))).unwrap();
    assert!(
        c.recv_from(&mut [0u8; 16]).is_err(),
        "discard answers nothing"
    );
    // chargen
    let mut s = client(i.addr(2));
    let got = read_n(&mut s, 1000);
    let pattern = twistrs_wire::chargen_pattern();
    assert_eq!(got, pattern[..1000]);
    let d = udp_ask(i.port(2), b"");
    assert!(d.len() <= 512 && pattern.starts_with(&d[..d.len().min(74)]));
    // daytime: asctime and CRLF, this year.
    let year = twistrs_wire::asctime(now())[20..].to_string();
    let day = answer(i.addr(3));
    let day = String::from_utf8_lossy(&day);
    assert!(day.ends_with(&format!("{year}\r\n")), "{day:?}");
    let day = udp_ask(i.port(3), b"");
    assert!(String::from_utf8_lossy(&day).ends_with("\r\n"));
    // time: seconds since 1900.
    let t = answer(i.addr(4));
    let t = u32::from_be_bytes(t.try_into().expect("4 bytes"));
    assert!(t.abs_diff(twistrs_wire::rfc868_seconds(now())) <= 5, "{t}");
    let t = udp_ask(i.port(4), b"");
    assert_eq!(t.len(), 4);
}

/// Found with one spoofed datagram, from udp echo's port to udp chargen's on the same
/// twistrs: the two answered each other without end (~50,000 datagrams a second, most of a
/// core) until a restart, the loop of CERT CA-1996-01. openbsd-inetd answers no privileged
/// port (`dg_badinput`); nor does twistrs now.
#[test]
fn an_internal_datagram_service_does_not_answer_a_privileged_port() {
    let i = start(
        "echo dgram udp wait root internal\nchargen dgram udp wait root internal\n",
        "echo {0}/udp\nchargen {1}/udp\n",
        2,
        2,
        &[],
    );
    // Where another host's echo or chargen would be (binding it takes root, as the other
    // tests of this file do).
    let privileged = (600..1024)
        .find_map(|p| UdpSocket::bind(("127.0.0.1", p)).ok())
        .expect("a free privileged UDP port (run as root)");
    privileged
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 1024];
    for port in [i.port(0), i.port(1)] {
        privileged.send_to(b"loop?", ("127.0.0.1", port)).unwrap();
        let got = privileged.recv_from(&mut buf);
        assert!(got.is_err(), "answered: {got:?}");
    }
    i.server
        .wait_until(
            |l| {
                l.iter()
                    .filter(|x| x.contains("dropped unanswered (a privileged port"))
                    .count()
                    == 2
            },
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("{:?}", i.server.lines()));
    // A client is answered as before.
    assert_eq!(udp_ask(i.port(0), b"still here"), b"still here");
}

#[test]
fn nointernal_leaves_the_internal_services_out() {
    let i = start(
        "echo stream tcp nowait root internal\n{1} stream tcp nowait root /bin/echo echo hi\n",
        "echo {0}/tcp\n",
        2,
        1,
        &["-i"],
    );
    assert_eq!(answer(i.addr(1)), b"hi\n");
    assert!(TcpStream::connect(i.addr(0)).is_err(), "echo is not served");
    assert!(!i.server.lines().iter().any(|l| l.contains("Echo starting")));
}

#[test]
fn the_user_field_runs_the_program_as_that_user_and_group() {
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let daemon = nix::unistd::Group::from_name("daemon").unwrap().unwrap();
    let i = start(
        "{0} stream tcp nowait nobody /usr/bin/id id\n\
         {1} stream tcp nowait nobody.daemon /usr/bin/id id\n\
         {2} stream tcp nowait nobody:daemon /usr/bin/id id -u\n",
        "",
        3,
        3,
        &[],
    );
    let out = String::from_utf8(answer(i.addr(0))).unwrap();
    assert!(
        out.starts_with(&format!("uid={}(nobody) gid={}", nobody.uid, nobody.gid)),
        "{out}"
    );
    let out = String::from_utf8(answer(i.addr(1))).unwrap();
    assert!(
        out.starts_with(&format!(
            "uid={}(nobody) gid={}(daemon)",
            nobody.uid, daemon.gid
        )),
        "{out}"
    );
    assert_eq!(
        String::from_utf8(answer(i.addr(2))).unwrap(),
        format!("{}\n", nobody.uid)
    );
}

/// Found against twistd: `twistd -u nobody inetd` serves a `nobody` line; twistrs failed
/// every connection with EPERM (it asked for the user it already was, and setgroups(2) takes
/// privilege even for the groups one has).
#[test]
fn a_line_of_the_user_twistrs_runs_as_needs_no_root() {
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let i = start_with(
        &["-u", "nobody"],
        "{0} stream tcp nowait nobody /usr/bin/id id\n\
         {1} stream tcp nowait root /usr/bin/id id\n",
        "",
        2,
        2,
        &[],
    );
    i.server
        .wait_until(
            |l| l.iter().any(|x| x.contains("set uid/gid")),
            Duration::from_secs(10),
        )
        .expect("privileges dropped");
    let out = String::from_utf8(answer(i.addr(0))).unwrap();
    assert!(
        out.starts_with(&format!("uid={}(nobody) gid={}", nobody.uid, nobody.gid)),
        "{out} {:?}",
        i.server.lines()
    );
    // Another user still takes root: refused, logged, the connection closed.
    assert!(answer(i.addr(1)).is_empty());
    i.server
        .wait_until(
            |l| {
                l.iter()
                    .any(|x| x.contains("cannot start /usr/bin/id: Operation not permitted"))
            },
            Duration::from_secs(10),
        )
        .expect("the refusal is logged");
}

#[test]
fn max_starts_that_many_programs_a_minute_and_refuses_the_rest() {
    let i = start(
        "{0} stream tcp nowait.3 root /bin/echo echo hi\n",
        "",
        1,
        1,
        &[],
    );
    for _ in 0..3 {
        assert_eq!(answer(i.addr(0)), b"hi\n", "three of three: no off-by-one");
    }
    for _ in 0..3 {
        assert!(answer(i.addr(0)).is_empty(), "refused: closed at once");
    }
    assert!(
        i.server
            .log_contains("programs started in the last minute (nowait.3): refusing connections")
    );
    let refusals = i
        .server
        .lines()
        .iter()
        .filter(|l| l.contains("refusing connections"))
        .count();
    assert_eq!(refusals, 1, "logged once, not per connection");
}

/// inetd on one port with the line `{0} KIND root /bin/sh sh SCRIPT` (KIND: socket type,
/// protocol and wait flag), the script adding a line to a file at each start; the server, that
/// file, and the directory holding both.
fn counting_starts(kind: &str) -> (Inetd, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let script = dir.path().join("run.sh");
    std::fs::write(&script, format!("echo run >> {}\n", runs.display())).unwrap();
    let line = format!("{{0}} {kind} root /bin/sh sh {}\n", script.display());
    (start(&line, "", 1, 1, &[]), runs, dir)
}

#[test]
fn a_wait_stream_program_that_never_accepts_is_held_to_256_starts_a_minute() {
    // Twisted's own inetd.conf example: `wait` with a program written for `nowait`. The
    // program exits without accepting, the connection stays pending and the port readable:
    // without a default limit it was started again at once, ~150 times a second.
    let (i, runs, _dir) = counting_starts("stream tcp wait");
    let _pending = connect(i.addr(0));
    let limited = i.server.wait_until(
        |l| {
            l.iter()
                .any(|x| x.contains("(wait.256) (the default for wait"))
        },
        Duration::from_secs(30),
    );
    let count = || {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert!(
        limited.is_some(),
        "{} starts: {:?}",
        count(),
        i.server.lines()
    );
    // The last programs write their line; past the limit nothing more starts this minute.
    std::thread::sleep(Duration::from_millis(500));
    let n = count();
    std::thread::sleep(Duration::from_millis(1000));
    let later = count();
    assert_eq!((n, later), (256, 256), "256 starts, then none");
}

/// The warning's advice for a datagram service was "write nowait", which a datagram line
/// with a program cannot be (refused at start).
#[test]
fn a_wait_udp_program_that_never_reads_is_told_to_read() {
    let (i, _runs, _dir) = counting_starts("dgram udp wait");
    udp().send_to(b"x", ("127.0.0.1", i.port(0))).unwrap();
    let l = i
        .server
        .wait_until(
            |l| {
                l.iter()
                    .any(|x| x.contains("(wait.256) (the default for wait"))
            },
            Duration::from_secs(30),
        )
        .map(|()| i.server.lines());
    let l = l.unwrap_or_else(|| panic!("{:?}", i.server.lines()));
    let warning = l
        .iter()
        .find(|x| x.contains("(wait.256)"))
        .expect("the warning");
    assert!(
        warning.contains("a wait program must read the socket's datagrams before it exits")
            && !warning.contains("nowait"),
        "{warning}"
    );
}

#[test]
fn wait_max_holds_the_next_start_back() {
    // A program that never reads its datagram: the socket stays readable, so each exit is
    // followed at once by the next start, until `.max` says wait.
    let (i, runs, _dir) = counting_starts("dgram udp wait.2");
    udp().send_to(b"x", ("127.0.0.1", i.port(0))).unwrap();
    assert!(
        i.server
            .wait_until(
                |l| l.iter().any(|x| x.contains("(wait.2): the next in ")),
                Duration::from_secs(10)
            )
            .is_some(),
        "{:?}",
        i.server.lines()
    );
    let n = std::fs::read_to_string(&runs)
        .unwrap_or_default()
        .lines()
        .count();
    assert_eq!(n, 2, "two starts in the minute, then a wait");
}

/// Waits (bounded) for the `n`th "Read ... again" line of a reload.
fn wait_reload(i: &Inetd, n: usize) {
    i.server
        .wait_until(
            |l| l.iter().filter(|x| x.contains(" again: ")).count() >= n,
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("no reload: {:?}", i.server.lines()));
}

#[test]
fn sighup_adds_removes_and_changes_services_and_sessions_go_on() {
    let conf = "{0} stream tcp nowait root /bin/cat cat\n\
                {1} stream tcp nowait root /bin/echo echo one\n\
                echo stream tcp nowait root internal\n";
    let services = "echo {3}/tcp\n";
    let i = start(conf, services, 4, 3, &[]);
    // Sessions in progress: a cat, and the internal echo.
    let mut cat = client(i.addr(0));
    send(&mut cat, b"before\n");
    assert_eq!(read_n(&mut cat, 7), b"before\n");
    let mut echo = client(i.addr(3));
    send(&mut echo, b"ping");
    assert_eq!(read_n(&mut echo, 4), b"ping");
    assert_eq!(answer(i.addr(1)), b"one\n");
    // cat and echo go, echo's program changes, a service comes.
    std::fs::write(
        i.conf(),
        fill(
            "# changed\n\
             {1} stream tcp nowait root /bin/echo echo two\n\
             {2} stream tcp nowait root /bin/echo echo three\n",
            &i.ports,
        ),
    )
    .unwrap();
    i.server.signal(libc::SIGHUP);
    wait_reload(&i, 1);
    let lines = i.server.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("1 added, 2 removed, 1 changed")),
        "{lines:?}"
    );
    assert_eq!(answer(i.addr(1)), b"two\n", "changed on the same socket");
    assert_eq!(answer(i.addr(2)), b"three\n", "added");
    assert!(TcpStream::connect(i.addr(0)).is_err(), "removed");
    assert!(TcpStream::connect(i.addr(3)).is_err(), "removed");
    // The sessions were not disturbed.
    send(&mut cat, b"after\n");
    assert_eq!(read_n(&mut cat, 6), b"after\n");
    send(&mut echo, b"pong");
    assert_eq!(read_n(&mut echo, 4), b"pong");
    // A file that does not read changes nothing, and says where.
    std::fs::write(
        i.conf(),
        fill(
            "{1} stream tcp nowait root /bin/echo echo four\nbad\n",
            &i.ports,
        ),
    )
    .unwrap();
    i.server.signal(libc::SIGHUP);
    let want = format!("{}:2: expected", i.conf().display());
    assert!(i.server.log_contains(&want), "{:?}", i.server.lines());
    assert!(i.server.log_contains("the services stay as they were"));
    assert_eq!(answer(i.addr(1)), b"two\n");
    assert_eq!(answer(i.addr(2)), b"three\n");
    cat.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(read_to_end(&mut cat).is_empty());
}

#[test]
fn tcp_and_tcp6_lines_share_a_port() {
    if TcpListener::bind("[::1]:0").is_err() {
        skip("tcp_and_tcp6_lines_share_a_port", "no IPv6 loopback");
        return;
    }
    let i = start(
        "{0} stream tcp nowait root /bin/echo echo v4\n\
         {0} stream tcp6 nowait root /bin/echo echo v6\n",
        "",
        1,
        2,
        &["--interface", "::1"],
    );
    assert_eq!(answer(i.addr(0)), b"v4\n");
    assert_eq!(
        answer(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], i.port(0)))),
        b"v6\n"
    );
}

#[test]
fn a_bad_file_is_refused_naming_the_file_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("inetd.conf");
    std::fs::write(
        &conf,
        "# a comment\n\necho stream tcp nowait root internal\nfoo stream tcp nowait root /bin/cat\n",
    )
    .unwrap();
    let (code, out, err) = run(&["-n", "--pidfile=", "inetd", "-f", conf.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let want = format!(
        "{}:4: unknown service 'foo' for tcp (not in the services file)",
        conf.display()
    );
    assert!(err.contains(&want), "{err}");
    let (code, _, err) = run(&["-n", "--pidfile=", "inetd", "-f", "/no/such/file"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("/no/such/file: cannot read: No such file"),
        "{err}"
    );
    // An unknown user is an error too (twistd skips the line).
    std::fs::write(&conf, "7 stream tcp nowait no-such-user-xyz /bin/cat cat\n").unwrap();
    let (code, _, err) = run(&["-n", "--pidfile=", "inetd", "-f", conf.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains(":1: no such user: no-such-user-xyz"), "{err}");
}

#[test]
fn a_program_that_cannot_start_is_logged_and_the_connection_closed() {
    let i = start(
        "{0} stream tcp nowait root /no/such/program prog\n",
        "",
        1,
        1,
        &[],
    );
    assert!(answer(i.addr(0)).is_empty());
    assert!(i.server.log_contains("cannot start /no/such/program"));
    assert!(answer(i.addr(0)).is_empty(), "and the next one too");
}

#[test]
fn restart_hands_the_sockets_over_and_stops_wait_programs_first() {
    let python = PathBuf::from("/usr/bin/python3");
    if !python.is_file() {
        skip("restart_hands_the_sockets_over...", "no /usr/bin/python3");
        return;
    }
    let mut started = None;
    for _ in 0..5 {
        let ports = free_ports(2);
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("udp.py");
        std::fs::write(&script, UDP_PROGRAM).unwrap();
        let conf = dir.path().join("inetd.conf");
        std::fs::write(
            &conf,
            format!(
                "{} stream tcp nowait root /bin/cat cat\n\
                 {} dgram udp wait root {} python3 {} 1000\n",
                ports[0],
                ports[1],
                python.display(),
                script.display()
            ),
        )
        .unwrap();
        let (code, out, err) = run_in(
            dir.path(),
            &[
                "inetd",
                "-f",
                conf.to_str().unwrap(),
                "--interface",
                "127.0.0.1",
            ],
        );
        if code == 0 {
            started = Some((Daemon { dir }, ports));
            break;
        }
        assert!(err.contains("Couldn't listen"), "{out} {err}");
    }
    let (d, ports) = started.expect("5 starts in a row found a port taken");
    let tcp = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let c = udp();
    let before = udp_answer(&c, ports[1], b"one");
    let mut session = client(tcp);
    send(&mut session, b"before\n");
    assert_eq!(read_n(&mut session, 7), b"before\n");
    let old = d.pid();
    let (code, out, err) = run_in(d.dir.path(), &["restart"]);
    assert_eq!(code, 0, "{out} {err}\n{}", d.log());
    assert_ne!(d.pid(), old);
    let log = d.log();
    assert!(
        log.contains("before the new process serves its socket"),
        "{log}"
    );
    // The new process serves both sockets, with a new wait program.
    let after = udp_answer(&c, ports[1], b"two");
    let pid_of = |a: &str| a.split(' ').next().unwrap_or("").to_string();
    assert_ne!(pid_of(&after), pid_of(&before), "{before} / {after}");
    assert!(after.ends_with("two"));
    let mut s = client(tcp);
    send(&mut s, b"new\n");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut s), b"new\n");
    // The session begun before goes on in the old process's drain.
    send(&mut session, b"after\n");
    assert_eq!(read_n(&mut session, 6), b"after\n");
    session.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(read_to_end(&mut session).is_empty());
    assert!(!d.log().contains("Couldn't listen"));
}

/// A `wait` stream program: accepts `rounds` connections on the listening socket it is
/// handed, answers each with its PID, then exits.
const ACCEPT_PROGRAM: &str = "
import os, socket, sys
s = socket.socket(fileno=0)
for _ in range(int(sys.argv[1])):
    c, a = s.accept()
    c.sendall(b'%d' % os.getpid())
    c.close()
";

#[test]
fn a_wait_stream_program_gets_the_listening_socket() {
    let python = PathBuf::from("/usr/bin/python3");
    if !python.is_file() {
        skip("a_wait_stream_program...", "no /usr/bin/python3");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("accept.py");
    std::fs::write(&script, ACCEPT_PROGRAM).unwrap();
    let conf = format!(
        "{{0}} stream tcp wait root {} python3 {} 2\n",
        python.display(),
        script.display()
    );
    let i = start(&conf, "", 1, 1, &[]);
    let pids: Vec<Vec<u8>> = (0..4).map(|_| answer(i.addr(0))).collect();
    assert_eq!(pids[0], pids[1], "one program accepts two connections");
    assert_eq!(pids[2], pids[3]);
    assert_ne!(pids[0], pids[2], "then the next one: {pids:?}");
}

#[test]
fn nointernal_drops_internal_lines_unread_as_twistd_does() {
    // twistd -i skips every `internal` line before looking at its name; a port number as
    // the name (which no internal service has) was refused here.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("inetd.conf");
    std::fs::write(
        &conf,
        "8007 stream tcp nowait root internal\n8008 stream tcp nowait root /bin/cat cat\n",
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    let (code, out, err) = run(&["--check", "inetd", "-i", "-f", conf]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("8008") && !out.contains("8007"), "{out}");
    // Without -i the line is an error still, naming it.
    let (code, _, err) = run(&["--check", "inetd", "-f", conf]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(":1:"), "{err}");
}
