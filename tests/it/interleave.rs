//! Lifecycle operations that overlap, as deploy tools make them: a `stop`, a `reload` or a
//! second `restart` while a restart's new process is still starting, `kill -USR2` and
//! `kill -TERM` back to back, a `stop` while a worker is being replaced. The new process is
//! held at its start by a dns zone file swapped for a FIFO (it blocks in open(2) until the
//! test writes the zone into it), so each overlap is certain, not a race the test may lose.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::support::*;

const ZONE: &str =
    "$ORIGIN example.test.\n$TTL 300\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n";

/// A dns daemon (`--workers N`) on a zone file that can be made to hold a start.
struct Held {
    d: Daemon,
    zone: PathBuf,
    fifo: PathBuf,
}

impl Held {
    /// The command line of a dns daemon on `zone`.
    fn args<'a>(workers: &'a str, zone: &'a std::path::Path) -> Vec<&'a str> {
        dns_args(
            &["--workers", workers],
            &["--bindzone", zone.to_str().unwrap()],
        )
    }

    /// A directory for the daemon and a zone file, nothing started.
    fn prepare() -> Held {
        let files = tempfile::tempdir().unwrap().keep();
        let zone = files.join("z.zone");
        std::fs::write(&zone, ZONE).unwrap();
        Held {
            d: Daemon {
                dir: tempfile::tempdir().unwrap(),
            },
            fifo: files.join("gate"),
            zone,
        }
    }

    fn start(workers: &str) -> Held {
        let mut h = Held::prepare();
        h.d = Daemon::start(&Held::args(workers, &h.zone));
        let want = if workers == "1" {
            "Serving zone"
        } else {
            "workers serve."
        };
        h.wait_log(|l| l.contains(want));
        h
    }

    /// Waits (10 s at most) until the log passes `cond`.
    fn wait_log(&self, cond: impl Fn(&str) -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !cond(&self.d.log()) {
            assert!(Instant::now() < end, "{}", self.d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// From now on, whatever opens the zone file blocks until `open_gate`.
    fn close_gate(&self) {
        let c = std::ffi::CString::new(self.fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo on a path this test owns.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
        let link = self.zone.with_extension("link");
        std::fs::hard_link(&self.fifo, &link).unwrap();
        std::fs::rename(&link, &self.zone).unwrap();
    }

    /// Puts the zone file back: whatever opens it from now on reads it; what waits on the
    /// FIFO still waits.
    fn restore_zone(&self) {
        let tmp = self.zone.with_extension("tmp");
        std::fs::write(&tmp, ZONE).unwrap();
        std::fs::rename(&tmp, &self.zone).unwrap();
    }

    /// Puts the zone file back, then gives the zone to the one process blocked on the FIFO,
    /// if any (within 2 s). True if one was.
    fn open_gate(&self) -> bool {
        self.restore_zone();
        self.let_one_through()
    }

    /// Gives the zone to the one process blocked on the FIFO, if any (within 2 s), and leaves
    /// the gate closed for the next. True if one was.
    fn let_one_through(&self) -> bool {
        feed_fifo(&self.fifo, ZONE.as_bytes(), Duration::from_secs(2))
    }

    /// `twistrs restart` in the background, once the new process it starts is held at the
    /// gate (its log line is written just before it opens the zone file).
    fn held_restart(&self) -> Child {
        let before = self.d.log().matches(" starting up.").count();
        let child = spawn_in(self.d.dir.path(), &["restart", "--timeout", "20"]);
        self.wait_log(|l| l.matches(" starting up.").count() > before);
        std::thread::sleep(Duration::from_millis(300));
        child
    }

    fn path(&self, name: &str) -> PathBuf {
        self.d.dir.path().join(name)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Whatever still waits at the gate goes on, and the daemon's drop stops it.
        self.open_gate();
        let _ = std::fs::remove_file(&self.fifo);
    }
}

/// Waits (bounded) for `child`; (status, stdout, stderr).
fn finish(child: Child, secs: u64) -> (i32, String, String) {
    let pid = child.id();
    let end = Instant::now() + Duration::from_secs(secs);
    while stat(pid).is_some_and(|(s, _)| s != 'Z') {
        assert!(Instant::now() < end, "PID {pid} did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The live twistrs processes that `pid` is or started (its descendants), from /proc.
/// Whether `pid` and every process under it end within `secs` seconds.
fn gone(pid: u32, secs: u64) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while !family(pid).is_empty() {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn family(pid: u32) -> Vec<u32> {
    let mut out = vec![];
    if stat(pid).is_some_and(|(s, _)| s != 'Z') {
        out.push(pid);
    }
    for (child, state, _) in children(pid) {
        if state != 'Z' {
            out.extend(family(child));
        }
    }
    out
}

fn stop_during_a_restart(workers: &str) {
    let h = Held::start(workers);
    let old = h.d.pid();
    let before = family(old);
    h.close_gate();
    let restart = h.held_restart();
    let new = family(old)
        .into_iter()
        .find(|p| !before.contains(p))
        .expect("the new process");

    let t = Instant::now();
    let (code, out, err) = h.d.ctl(&["stop"]);
    assert_eq!(code, 0, "{out} {err}\n{}", h.d.log());
    assert!(
        out.contains(&format!("twistrs stopped (PID {old})")),
        "{out}"
    );
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let (code, out, err) = finish(restart, 10);
    assert_eq!(code, 1, "{out} {err}");
    assert!(
        err.contains("SIGTERM came during the restart") && !err.contains("keeps serving"),
        "{err}"
    );
    // Nothing serves on: neither the old process, its workers, nor the new one.
    for pid in before.iter().chain([&new]) {
        assert!(
            stat(*pid).is_none_or(|(s, _)| s == 'Z'),
            "PID {pid} left\n{}",
            h.d.log()
        );
    }
    let (code, out, _) = h.d.ctl(&["status"]);
    assert_eq!(code, 3, "{out}");
    let log = h.d.log();
    assert!(
        log.contains(&format!(
            "Received SIGTERM during the restart, shutting down: passing it on to the new \
             process (PID {new})."
        )),
        "{log}"
    );
}

#[test]
fn a_stop_during_a_restart_stops_the_old_and_the_new_process() {
    // It used to be lost: the new process took over and served on, and `stop` gave up after
    // 20 s with "still locked".
    stop_during_a_restart("1");
}

#[test]
fn a_stop_during_a_workers_restart_stops_both_masters() {
    stop_during_a_restart("2");
}

fn reload_during_a_restart(workers: &str) {
    let h = Held::start(workers);
    h.close_gate();
    let restart = h.held_restart();
    // logrotate: the log moved aside, then `twistrs reload`, which reaches the old process
    // (the pidfile names it until the new one serves); the new one opened the log before.
    // (The old one reads its zone file again: the file, while the new one waits on the FIFO.)
    h.restore_zone();
    std::fs::rename(h.path("twistrs.log"), h.path("twistrs.log.1")).unwrap();
    let (code, out, err) = h.d.ctl(&["reload"]);
    assert_eq!(code, 0, "{out} {err}");
    let rotated = || std::fs::read_to_string(h.path("twistrs.log.1")).unwrap();
    h.wait_log(|l| l.contains("Reopened log file"));
    assert!(h.open_gate(), "{}", rotated());
    let (code, out, err) = finish(restart, 10);
    assert_eq!(code, 0, "{out} {err}\n{}", rotated());
    let new = h.d.pid();
    h.wait_log(|l| l.contains(&format!("the restart on to PID {new}.")));
    // Every process of the new generation writes into the new file, none into the old one.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let stale: Vec<(u32, String)> = family(new)
            .into_iter()
            .flat_map(|p| {
                std::fs::read_dir(format!("/proc/{p}/fd"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(move |fd| {
                        let to = std::fs::read_link(fd.path()).ok()?;
                        let to = to.to_string_lossy().into_owned();
                        to.ends_with("twistrs.log.1").then_some((p, to))
                    })
            })
            .collect();
        if stale.is_empty() {
            break;
        }
        assert!(Instant::now() < end, "{stale:?}\n{}", h.d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The new master and its workers, or the one new process.
    let n: usize = workers.parse().unwrap();
    assert_eq!(family(new).len(), if n == 1 { 1 } else { n + 1 });
}

#[test]
fn a_reload_during_a_restart_reaches_the_new_process() {
    // The new process used to write into the rotated file until the next reload.
    reload_during_a_restart("1");
}

#[test]
fn a_reload_during_a_workers_restart_reaches_the_new_workers() {
    reload_during_a_restart("2");
}

#[test]
fn a_restart_asked_during_a_restart_runs_once_it_is_over() {
    // A second restart (a binary installed meanwhile) used to pass unnoticed: the new
    // process had been started before it.
    let h = Held::start("1");
    h.close_gate();
    let first = h.held_restart();
    let second = spawn_in(h.d.dir.path(), &["restart", "--timeout", "20"]);
    h.wait_log(|l| l.contains("Received SIGUSR2 during the restart: restarting again"));
    assert!(h.open_gate());
    for c in [first, second] {
        let (code, out, err) = finish(c, 20);
        assert_eq!(code, 0, "{out} {err}\n{}", h.d.log());
    }
    // The second restart is the first's successor's: generation 2, one process left.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, out, _) = h.d.ctl(&["status", "--json"]);
        if out.contains("\"generation\":2") && h.d.log().contains("Server Shut Down (handed over") {
            let pid = h.d.pid();
            let log = h.d.log();
            assert_eq!(
                log.matches("Server Shut Down (handed over").count(),
                2,
                "{log}"
            );
            assert!(log.contains(&format!("handed over to PID {pid})")), "{log}");
            break;
        }
        assert!(Instant::now() < end, "{out}\n{}", h.d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn usr2_and_term_back_to_back_stop_the_service() {
    // Both signals came in one reactor turn: the first, SIGUSR2, won, the stop was dropped,
    // and the new process served on.
    for workers in ["1", "2"] {
        let d = Daemon::start(&[
            "--workers",
            workers,
            "echo",
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ]);
        let end = Instant::now() + Duration::from_secs(10);
        while !d.log().contains("Starting factory")
            || (workers == "2" && !d.log().contains("2 workers serve."))
        {
            assert!(Instant::now() < end, "{}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = d.pid();
        // SAFETY: signals to the daemon this test started.
        unsafe {
            libc::kill(pid as i32, libc::SIGUSR2);
            libc::kill(pid as i32, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(8);
        loop {
            let (code, out, _) = d.ctl(&["status"]);
            if code == 3 && family(pid).is_empty() {
                break;
            }
            assert!(Instant::now() < end, "{out}\n{}", d.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!d.log().contains("handed over"), "{}", d.log());
    }
}

#[test]
fn a_stop_while_a_worker_is_replaced_does_not_wait_for_it() {
    // The replacement, still starting, ignored the master's SIGUSR2: the stop waited out
    // the drain's deadline and 5 s, then killed it.
    let h = Held::start("2");
    let master = h.d.pid();
    let workers = family(master);
    h.close_gate();
    let victim = workers[1];
    // SAFETY: a signal to a worker this test started.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    h.wait_log(|l| l.contains(&format!("(PID {victim}) ended by signal SIGKILL")));
    // The replacement starts, and waits at the gate.
    h.wait_log(|l| l.matches(" started, PID ").count() == 3);
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let (code, out, err) = h.d.ctl(&["stop"]);
    assert_eq!(code, 0, "{out} {err}\n{}", h.d.log());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "{:?}\n{}",
        t.elapsed(),
        h.d.log()
    );
    assert!(
        !h.d.log().contains("did not stop: killing it"),
        "{}",
        h.d.log()
    );
    assert!(family(master).is_empty(), "{}", h.d.log());
}

#[test]
fn a_stop_while_the_workers_start_ends_the_start_at_once() {
    // The master waited for its workers (up to 60 s) without looking at signals: `stop`
    // SIGKILLed it after 20 s, and the log said nothing.
    let h = Held::prepare();
    h.close_gate();
    let starter = spawn_in(h.d.dir.path(), &Held::args("2", &h.zone));
    // The master reads the zone; its workers, started next, wait at the gate.
    assert!(h.let_one_through());
    h.wait_log(|l| l.contains("Worker 1 of master") && l.contains("Worker 2 of master"));
    std::thread::sleep(Duration::from_millis(300));
    let master = h.d.pid();
    let t = Instant::now();
    let (code, out, err) = h.d.ctl(&["stop"]);
    assert_eq!(code, 0, "{out} {err}\n{}", h.d.log());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(!out.contains("killed"), "{out}");
    let (code, _, err) = finish(starter, 10);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("stopped by SIGTERM while the workers started"),
        "{err}"
    );
    assert!(family(master).is_empty(), "{}", h.d.log());
    let log = h.d.log();
    assert!(
        log.contains("Received SIGTERM while the workers started, shutting down."),
        "{log}"
    );
    let (code, out, _) = h.d.ctl(&["status"]);
    assert_eq!(code, 3, "{out}");
}

/// A DNS query over TCP for `ns.example.test. A`: connect, ask, read the whole answer.
fn tcp_query(port: u16) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["ns", "example", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(&framed)?;
    let mut len = [0u8; 2];
    c.read_exact(&mut len)?;
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    c.read_exact(&mut answer)
}

#[test]
fn dns_over_tcp_loses_no_query_to_a_restart() {
    // The old process closed at once every connection with nothing in its input: one just
    // accepted, whose query was still unread in the socket, got a reset (or an end) with no
    // answer, at about one restart in three.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let h = Held::start("1");
    let port: u16 =
        h.d.log()
            .lines()
            .find_map(|l| {
                l.split("DNSServerFactory starting on ")
                    .nth(1)?
                    .trim()
                    .parse()
                    .ok()
            })
            .expect("the TCP port");
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let client = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0u32, Vec::new());
        let end = Instant::now() + Duration::from_secs(30);
        while !s2.load(Ordering::SeqCst) && Instant::now() < end {
            match tcp_query(port) {
                Ok(()) => ok += 1,
                Err(e) => failed.push(e.to_string()),
            }
        }
        (ok, failed)
    });
    for _ in 0..8 {
        let (code, out, err) = h.d.ctl(&["restart"]);
        assert_eq!(code, 0, "{out} {err}\n{}", h.d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = client.join().unwrap();
    assert!(ok > 100, "{ok}");
    assert!(failed.is_empty(), "{} of {ok}: {failed:?}", failed.len());
}

fn restart_during_a_stop(workers: &str) {
    use std::io::{Read, Write};
    let d = Daemon::start(&[
        "--workers",
        workers,
        "--shutdown-timeout",
        "3",
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    let end = Instant::now() + Duration::from_secs(10);
    let port: u16 = loop {
        let log = d.log();
        let serving = workers == "1" || log.contains("workers serve.");
        if let Some(p) = log
            .lines()
            .find_map(|l| l.split("Echo starting on ").nth(1)?.trim().parse().ok())
            && serving
        {
            break p;
        }
        assert!(Instant::now() < end, "{log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // A busy connection (never idle for the drain's second): the drain waits for it.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let echo = |c: &mut std::net::TcpStream| -> std::io::Result<()> {
        c.write_all(b"x")?;
        let mut b = [0u8; 1];
        c.read_exact(&mut b)
    };
    echo(&mut c).unwrap();
    let pid = d.pid();
    let stop = spawn_in(d.dir.path(), &["stop"]);
    let end = Instant::now() + Duration::from_secs(5);
    while !d.log().contains("Received SIGTERM, shutting down.") {
        assert!(Instant::now() < end, "{}", d.log());
        echo(&mut c).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = Instant::now();
    let (code, out, err) = d.ctl(&["restart", "--timeout", "10"]);
    assert_eq!(code, 1, "{out} {err}");
    assert!(
        err.contains(&format!(
            "not restarted: PID {pid} is stopping (SIGTERM came first)"
        )),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The drain goes on: the connection is still served.
    echo(&mut c).unwrap();
    let (code, out, err) = finish(stop, 15);
    assert_eq!(code, 0, "{out} {err}");
    let log = d.log();
    assert!(
        log.contains("Received SIGUSR2 while shutting down: not restarting."),
        "{log}"
    );
    assert!(!log.contains("again: closing"), "{log}");
    assert!(!log.contains("SIGQUIT"), "{log}");
    assert!(family(pid).is_empty(), "{log}");
}

#[test]
fn a_restart_during_a_stop_is_refused_at_once_and_does_not_cut_the_drain() {
    // SIGUSR2 counted as the second stop signal: the drain closed everything at once, and
    // `restart` waited out its whole --timeout for a report that never came.
    restart_during_a_stop("1");
}

#[test]
fn a_restart_during_a_workers_stop_is_refused_at_once_and_does_not_cut_the_drain() {
    restart_during_a_stop("2");
}

#[test]
fn a_stop_while_the_workers_start_removes_the_unix_socket_files() {
    // The start's end by a stop skipped the removal a stop does.
    let files = tempfile::tempdir().unwrap();
    let c = crate::tls::self_signed(files.path(), "s");
    // The certificate swapped for a FIFO: the master reads it (fed once), its workers wait.
    let fifo = files.path().join("gate");
    let cf = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo on a path this test owns.
    assert_eq!(unsafe { libc::mkfifo(cf.as_ptr(), 0o644) }, 0, "mkfifo");
    let pem = std::fs::read(&c.cert).unwrap();
    let sock = files.path().join("echo.sock");
    let ssl = format!(
        "ssl:0:privateKey={}:certKey={}:interface=127.0.0.1",
        c.key.display(),
        fifo.display()
    );
    let unix = format!("unix:{}", sock.display());
    let d = Daemon {
        dir: tempfile::tempdir().unwrap(),
    };
    let feed = |pem: &[u8]| -> bool { feed_fifo(&fifo, pem, Duration::from_secs(5)) };
    let starter = spawn_in(
        d.dir.path(),
        &[
            "--workers",
            "2",
            "echo",
            "--listen",
            &ssl,
            "--listen",
            &unix,
        ],
    );
    assert!(feed(&pem), "the master reads the certificate");
    let end = Instant::now() + Duration::from_secs(10);
    while !(d.log().contains("Worker 1 of master") && d.log().contains("Worker 2 of master")) {
        assert!(Instant::now() < end, "{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(sock.exists());
    let (code, out, err) = d.ctl(&["stop"]);
    assert_eq!(code, 0, "{out} {err}\n{}", d.log());
    let (code, _, err) = finish(starter, 10);
    assert_eq!(code, 1, "{err}");
    assert!(!sock.exists(), "{}", d.log());
    // The workers that waited on the FIFO are gone (SIGTERM at the stop; else the parent-death
    // signal of their master).
}

#[test]
fn status_polled_during_restarts_always_finds_the_service() {
    // The successor emptied the pidfile before writing its PID: a `status` (or `stop`,
    // `reload`) that read it then found two holders and a file naming neither, and answered
    // 4 ("try again"), at about one restart in four on a loaded machine.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = Arc::new(Daemon::start(&[
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]));
    let stop = Arc::new(AtomicBool::new(false));
    let pollers: Vec<_> = (0..2)
        .map(|_| {
            let (d, stop) = (d.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let end = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                    let (code, out, err) = d.ctl(&["status"]);
                    if code != 0 {
                        seen.push(format!("{code}: {out} {err}"));
                    }
                }
                seen
            })
        })
        .collect();
    for _ in 0..25 {
        let (code, out, err) = d.ctl(&["restart"]);
        assert_eq!(code, 0, "{out} {err}");
    }
    stop.store(true, Ordering::SeqCst);
    for p in pollers {
        let seen = p.join().unwrap();
        assert!(seen.is_empty(), "{seen:?}");
    }
}

#[test]
fn a_restart_whose_service_stops_meanwhile_says_so_at_once() {
    // A restart's SIGUSR2 that came after a stop (or a service that ended without a word)
    // got no report, and `restart` waited out its whole --timeout. Played by a stand-in
    // holding the pidfile's lock that SIGUSR2 ends (its default action).
    const STANDIN: &str = r#"
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, str(os.getpid()).encode(), 0)
print("ready", flush=True)
end = time.time() + 30
while time.time() < end:
    time.sleep(0.05)
"#;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("t.pid");
    let mut standin = python_ready(STANDIN, &pidfile);
    let t = Instant::now();
    let (code, out, err) = run_in(
        dir.path(),
        &[
            "restart",
            "--pidfile",
            pidfile.to_str().unwrap(),
            "--timeout",
            "20",
        ],
    );
    let _ = standin.kill();
    let _ = standin.wait();
    assert_eq!(code, 1, "{out} {err}");
    assert!(
        err.contains("stopped and no process holds") && err.contains("twistrs is not running"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// An echo daemon (`--workers N`, drain up to 5 s) and its port, once it serves.
fn echo_daemon(workers: &str) -> (Daemon, u16) {
    let d = Daemon::start(&[
        "--workers",
        workers,
        "--shutdown-timeout",
        "5",
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let log = d.log();
        let serving = workers == "1" || log.contains("workers serve.");
        if let Some(p) = log
            .lines()
            .find_map(|l| l.split("Echo starting on ").nth(1)?.trim().parse().ok())
            && serving
        {
            return (d, p);
        }
        assert!(Instant::now() < end, "{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A connection kept busy (a byte echoed every 100 ms) for `secs`: Err if it is cut.
fn keep_busy(c: &mut std::net::TcpStream, secs: f64) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        c.write_all(b"x")?;
        let mut b = [0u8; 1];
        c.read_exact(&mut b)?;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn busy_connection(port: u16) -> std::net::TcpStream {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    keep_busy(&mut c, 0.0).unwrap();
    c
}

fn two_stop_signals_at_once(workers: &str) {
    let (d, port) = echo_daemon(workers);
    let mut c = busy_connection(port);
    keep_busy(&mut c, 0.2).unwrap();
    let pid = d.pid();
    // SAFETY: signals to the daemon this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(50));
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    // Still draining: the busy connection is served past the second signal.
    keep_busy(&mut c, 1.5).unwrap_or_else(|e| panic!("cut: {e}\n{}", d.log()));
    drop(c);
    assert!(gone(pid, 8), "{}", d.log());
    let log = d.log();
    assert!(!log.contains("again: closing"), "{log}");
    assert!(!log.contains("SIGQUIT"), "{log}");
}

#[test]
fn two_stop_signals_at_once_are_one_stop() {
    // systemd's SIGTERM to every process, a stop passed on by a restart, two `twistrs stop`
    // at once: the second signal, milliseconds after the first, ended the drain at once.
    two_stop_signals_at_once("1");
}

#[test]
fn two_stop_signals_at_once_are_one_stop_for_a_master() {
    two_stop_signals_at_once("2");
}

fn stop_signal_to_the_old_process_after_a_hand_over(workers: &str) {
    let (d, port) = echo_daemon(workers);
    let old = d.pid();
    // Accepted by the old process: it keeps the old one draining after the hand-over.
    let mut c = busy_connection(port);
    let (code, out, err) = d.ctl(&["restart"]);
    assert_eq!(code, 0, "{out} {err}");
    let new = d.pid();
    assert_ne!(new, old);
    keep_busy(&mut c, 0.3).unwrap();
    // A stop aimed at the PID a script kept (or a `stop` that read the pidfile just before
    // the successor wrote it).
    // SAFETY: a signal to the daemon this test started.
    unsafe { libc::kill(old as i32, libc::SIGTERM) };
    assert!(gone(new, 5), "PID {new} serves on\n{}", d.log());
    // The old one's drain goes on meanwhile.
    keep_busy(&mut c, 0.3).unwrap_or_else(|e| panic!("cut: {e}\n{}", d.log()));
    drop(c);
    assert!(gone(old, 8), "{}", d.log());
    let log = d.log();
    assert!(
        log.contains(&format!(
            "Received SIGTERM after the hand-over: passing it on to PID {new}."
        )),
        "{log}"
    );
    let (code, out, _) = d.ctl(&["status"]);
    assert_eq!(code, 3, "{out}");
}

#[test]
fn a_stop_signal_to_the_old_process_after_a_hand_over_stops_the_new_one() {
    // The old process took it as a second stop of its own drain; the new one served on.
    stop_signal_to_the_old_process_after_a_hand_over("1");
}

#[test]
fn a_stop_signal_to_the_old_master_after_a_hand_over_stops_the_new_one() {
    stop_signal_to_the_old_process_after_a_hand_over("2");
}
