//! `--workers N` with the real binary: a master and its workers in /proc, connections shared,
//! a killed worker replaced, a crash loop backing off, stop, restart under load, log reopen,
//! the pidfile and status, mail from several workers at once, and single-process plugins.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

/// A `--workers` daemon in its own directory; stopped through `twistrs stop` when dropped.
struct Master {
    dir: tempfile::TempDir,
}

impl Master {
    fn start(args: &[&str]) -> Master {
        Self::start_env(args, &[])
    }

    fn start_env(args: &[&str], env: &[(&str, &str)]) -> Master {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "start {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Master { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pid(&self) -> i32 {
        std::fs::read_to_string(self.path("twistrs.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("twistrs.log")).unwrap_or_default()
    }

    fn port(&self) -> u16 {
        self.log()
            .lines()
            .find_map(|l| l.split(" starting on ").nth(1)?.trim().parse().ok())
            .unwrap()
    }

    fn wait_log(&self, cond: impl Fn(&str) -> bool, secs: u64) -> bool {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if cond(&self.log()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits (10 s at most) until `n` workers serve, or fails with the log.
    fn wait_serving(&self, n: usize) {
        let line = format!("{n} workers serve.");
        assert!(self.wait_log(|l| l.contains(&line), 10), "{}", self.log());
    }

    fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        run_in(self.dir.path(), args)
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = run_in(self.dir.path(), &["stop", "--timeout", "5"]);
    }
}

/// The live (not zombie) children of `pid`, from /proc.
fn children(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|c| {
            let stat = std::fs::read_to_string(format!("/proc/{c}/stat")).unwrap_or_default();
            let mut f = stat
                .rsplit_once(')')
                .map(|(_, r)| r.split_whitespace())
                .into_iter()
                .flatten();
            let state = f.next();
            let ppid = f.next().and_then(|p| p.parse::<i32>().ok());
            ppid == Some(pid) && state != Some("Z")
        })
        .collect();
    v.sort_unstable();
    v
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.starts_with(" Z"))
    })
}

/// Echo connections to `port`, each with `msg` echoed back and held open, 20 at a time until
/// every one of `workers` holds some (one shared accept queue: whichever worker wakes first
/// takes a connection, so a run of them may go to one; bounded at 400 connections); the
/// connections and how many each worker holds.
fn hold_on_every_worker(
    port: u16,
    workers: &[i32],
    msg: &[u8],
) -> (Vec<std::net::TcpStream>, Vec<usize>) {
    let mut conns: Vec<std::net::TcpStream> = Vec::new();
    let mut held = vec![0; workers.len()];
    while conns.len() < 400 && held.contains(&0) {
        for _ in 0..20 {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(msg).unwrap();
            let mut b = vec![0u8; msg.len()];
            c.read_exact(&mut b).unwrap();
            conns.push(c);
        }
        let inodes = established(port);
        held = workers.iter().map(|w| held_by(*w, &inodes)).collect();
        assert_eq!(held.iter().sum::<usize>(), conns.len(), "{held:?}");
    }
    (conns, held)
}

/// The inodes of the established TCP connections whose local port is `port`.
pub(crate) fn established(port: u16) -> Vec<u64> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *f.get(3)? == "01").then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

/// How many of `inodes` process `pid` holds a descriptor of.
pub(crate) fn held_by(pid: i32, inodes: &[u64]) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let s = l.to_string_lossy().into_owned();
                    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
                })
                .filter(|i| inodes.contains(i))
                .count()
        })
        .unwrap_or(0)
}

fn echo_once(port: u16) -> std::io::Result<()> {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(b"x")?;
    let mut b = [0u8; 1];
    c.read_exact(&mut b)
}

/// Connects, sends and reads back in a loop until told to stop (at most 30 s); returns the
/// successes and the failures.
struct ClientLoop {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU32>,
    thread: std::thread::JoinHandle<(u32, Vec<String>)>,
}

impl ClientLoop {
    fn start(port: u16) -> ClientLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU32::new(0));
        let (s2, d2) = (stop.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            let end = Instant::now() + Duration::from_secs(30);
            while !s2.load(Ordering::SeqCst) && Instant::now() < end {
                match echo_once(port) {
                    Ok(()) => {
                        ok += 1;
                        d2.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        });
        ClientLoop { stop, done, thread }
    }

    /// Waits (bounded) until `n` more connections have been served.
    fn served(&self, n: u32) {
        let want = self.done.load(Ordering::SeqCst) + n;
        let end = Instant::now() + Duration::from_secs(10);
        while self.done.load(Ordering::SeqCst) < want && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(self) -> u32 {
        let (ok, failed) = self.finish_with_failures();
        assert!(
            failed.is_empty(),
            "{} failed of {ok}: {failed:?}",
            failed.len()
        );
        ok
    }

    fn finish_with_failures(self) -> (u32, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

const ECHO: &[&str] = &[
    "--workers",
    "2",
    "echo",
    "--listen",
    "tcp:0:interface=127.0.0.1",
];

/// `twistrs --workers 2 GLOBAL... echo` once both workers serve: the master, its PID and its
/// two workers' PIDs.
fn two_echo_workers(global: &[&str]) -> (Master, i32, Vec<i32>) {
    let mut args = vec!["--workers", "2"];
    args.extend_from_slice(global);
    args.extend_from_slice(&ECHO[2..]);
    let m = Master::start(&args);
    m.wait_serving(2);
    let master = m.pid();
    let workers = children(master);
    assert_eq!(workers.len(), 2, "{workers:?}\n{}", m.log());
    (m, master, workers)
}

#[test]
fn workers_are_the_masters_children_and_share_the_connections() {
    let m = Master::start(ECHO);
    let master = m.pid();
    m.wait_serving(2);
    let workers = children(master);
    assert_eq!(workers.len(), 2, "{workers:?}\n{}", m.log());
    // Each in a process group of its own: a Ctrl-C reaches the master alone.
    for w in &workers {
        let stat = std::fs::read_to_string(format!("/proc/{w}/stat")).unwrap();
        let pgrp = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(2);
        assert_eq!(pgrp, Some(w.to_string().as_str()), "{stat}");
    }
    // The master binds for the workers and starts no factory of its own: one "Starting
    // factory" per worker (three lines, before the master's reactor was bind-only).
    let started = m.log().matches("Starting factory Echo").count();
    assert_eq!(started, 2, "{}", m.log());
    for w in &workers {
        assert!(
            m.log()
                .contains(&format!("of master PID {master}, PID {w}.")),
            "{}",
            m.log()
        );
    }
    // The pidfile names the master; status names the workers too.
    let (code, out, _) = m.ctl(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("PID {master},")), "{out}");
    let list = format!("2 workers: PIDs {}, {}", workers[0], workers[1]);
    assert!(out.contains(&list), "{out}");
    // Connections held open until both workers hold some of them.
    let port = m.port();
    let (conns, held) = hold_on_every_worker(port, &workers, b"x");
    assert!(
        held.iter().all(|n| *n > 0),
        "one worker took every connection: {held:?}"
    );
    let inodes = established(port);
    assert_eq!(held_by(master, &inodes), 0, "the master accepts nothing");
    drop(conns);
    // stop drains every worker, then the master exits and removes its pidfile.
    let (code, out, err) = m.ctl(&["stop"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(!alive(master) && workers.iter().all(|w| !alive(*w)));
    assert!(!m.path("twistrs.pid").exists());
    // twistd's last two lines are the master's; each worker says it shut down, by name.
    let log = m.log();
    assert_eq!(log.matches("Main loop terminated.").count(), 1, "{log}");
    assert_eq!(log.matches("Server Shut Down.").count(), 1, "{log}");
    for w in &workers {
        let line = format!("(PID {w}) shut down.");
        assert!(log.contains(&line), "{line} in {log}");
    }
    assert_eq!(log.matches(") shut down.").count(), 2, "{log}");
}

/// Prints `pid|worker|message` for every line of a JSON log, parsed by Python's json.
const JSON_WRITERS: &str = r#"
import json, sys
for raw in open(sys.argv[1], "rb").read().split(b"\n"):
    if raw:
        o = json.loads(raw.decode("utf-8"))
        print("%s|%s|%s" % (o["pid"], o.get("worker", "-"), o["message"]))
"#;

#[test]
fn json_lines_name_the_process_that_wrote_them_and_workers_skip_the_masters_banner() {
    let (m, master, workers) = two_echo_workers(&["--log-format", "json"]);
    let log = m.path("twistrs.log");
    let (code, out, err) = crate::mail::py(JSON_WRITERS, &[log.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}\n{}", m.log());
    let lines: Vec<(i32, String, String)> = out
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '|');
            Some((f.next()?.parse().ok()?, f.next()?.into(), f.next()?.into()))
        })
        .collect();
    assert_eq!(lines.len(), out.lines().count(), "{out}");
    // twistd's banner once, from the master; each worker's own line names it.
    let banner: Vec<_> = lines
        .iter()
        .filter(|l| l.2.ends_with("starting up."))
        .collect();
    assert_eq!(banner.len(), 1, "{out}");
    assert_eq!(&banner[0].1, "-", "{out}");
    let mut seen = Vec::new();
    for (pid, worker, message) in &lines {
        // The master's lines, and the banner written before it went into the background.
        if !workers.contains(pid) {
            assert_eq!(
                worker, "-",
                "a line not from a worker names none: {message}"
            );
            continue;
        }
        let index: usize = worker.parse().unwrap_or_else(|_| panic!("{out}"));
        if message.starts_with(&format!(
            "Worker {index} of master PID {master}, PID {pid}."
        )) {
            seen.push(index);
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, [1, 2], "each worker says which it is: {out}");
    assert!(
        lines
            .iter()
            .any(|l| l.0 == master && l.2.starts_with("Master (PID")),
        "{out}"
    );
}

#[test]
fn workers_number_their_connections_apart_in_the_log_they_share() {
    let root = tempfile::tempdir().unwrap();
    let m = Master::start(&[
        "--workers",
        "2",
        "web",
        "--path",
        root.path().to_str().unwrap(),
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    m.wait_serving(2);
    let workers = children(m.pid());
    // A request answered on every held connection (its answer is longer than the request,
    // of which the helper reads as much), then a bad one on each: one log line per connection,
    // with the connection's system.
    let (mut conns, held) =
        hold_on_every_worker(m.port(), &workers, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(held.iter().all(|n| *n > 0), "{held:?}");
    for c in &mut conns {
        c.write_all(b"\x01bad\r\n\r\n").unwrap();
    }
    let n = conns.len();
    assert!(
        m.wait_log(|l| l.matches("] Bad request from").count() >= n, 10),
        "{}",
        m.log()
    );
    let mut sessions: Vec<u32> = m
        .log()
        .lines()
        .filter(|l| l.contains("] Bad request from"))
        .filter_map(|l| l.split('[').nth(1)?.split(',').nth(1)?.parse().ok())
        .collect();
    assert_eq!(sessions.len(), n, "{}", m.log());
    // Worker 1 numbers 0, 2, 4, ...; worker 2 numbers 1, 3, 5, ...
    assert!(sessions.iter().any(|s| s % 2 == 0) && sessions.iter().any(|s| s % 2 == 1));
    sessions.sort_unstable();
    sessions.dedup();
    assert_eq!(sessions.len(), n, "a number given twice: {}", m.log());
}

#[test]
fn a_killed_worker_is_replaced_and_no_connection_is_refused() {
    let m = Master::start(ECHO);
    m.wait_serving(2);
    let master = m.pid();
    let before = children(master);
    let clients = ClientLoop::start(m.port());
    clients.served(50);
    // Past the crash-loop threshold (1 s after its start), a death restarts at once.
    let up = Instant::now();
    while up.elapsed() < Duration::from_millis(1100) {
        clients.served(10);
    }
    // SAFETY: a signal to a worker this test started (through its master).
    unsafe { libc::kill(before[0], libc::SIGKILL) };
    let died = format!("(PID {}) ended by signal SIGKILL", before[0]);
    assert!(m.wait_log(|l| l.contains(&died), 10), "{}", m.log());
    assert!(
        m.wait_log(|l| l.matches(" serves.").count() >= 3, 10),
        "{}",
        m.log()
    );
    clients.served(100);
    // Nothing is refused: the listening socket outlives the worker (the master and the other
    // worker hold it) and what waits in its queue is taken by the others. The one connection
    // the killed worker had accepted and not answered dies with it (reset), as under nginx.
    let (ok, failed) = clients.finish_with_failures();
    assert!(ok > 150, "{ok}");
    assert!(
        failed.len() <= 1 && failed.iter().all(|e| !e.contains("refused")),
        "{failed:?}"
    );
    let after = children(master);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.contains(&before[1]) && !after.contains(&before[0]));
    assert!(
        !m.log().contains("restarting it in"),
        "no backoff for a worker that ran"
    );
}

#[test]
fn a_crash_loop_backs_off() {
    let m = Master::start_env(
        &[
            "--workers",
            "2",
            "echo",
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ],
        &[("TWISTRS_TEST_WORKER_EXIT", "1")],
    );
    let started = Instant::now();
    assert!(
        m.wait_log(|l| l.contains("restarting it in 0.8 s"), 10),
        "{}",
        m.log()
    );
    let lines = m.log();
    for d in ["0.1", "0.2", "0.4"] {
        assert!(
            lines.contains(&format!("restarting it in {d} s")),
            "{lines}"
        );
    }
    assert!(lines.contains("ended with exit status 70"), "{lines}");
    // 0.1 + 0.2 + 0.4 s of delays at least before the delay of 0.8 s: not a spin.
    assert!(started.elapsed() >= Duration::from_millis(700));
    let starts = m.log().matches("Worker 1 started").count();
    assert!(starts <= 8, "{starts} starts in {:?}", started.elapsed());
    let (code, _, err) = m.ctl(&["stop"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn restart_under_load_and_log_reopen() {
    let m = Master::start(ECHO);
    m.wait_serving(2);
    let old = m.pid();
    let old_workers = children(old);
    let port = m.port();
    let clients = ClientLoop::start(port);
    clients.served(50);
    let (code, out, err) = m.ctl(&["restart"]);
    assert_eq!(code, 0, "{out} {err}");
    clients.served(100);
    let ok = clients.finish();
    assert!(ok > 150, "{ok}");
    let new = m.pid();
    assert_ne!(new, old);
    assert!(
        m.wait_log(|l| l.contains(&format!("handed over to PID {new}")), 10),
        "{}",
        m.log()
    );
    let end = Instant::now() + Duration::from_secs(10);
    while old_workers.iter().any(|w| alive(*w)) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        old_workers.iter().all(|w| !alive(*w)),
        "the old workers drained"
    );
    let workers = children(new);
    assert_eq!(workers.len(), 2, "{workers:?}");
    // The log, moved away and reopened on `twistrs reload` (SIGHUP to the master) by the
    // master and every worker.
    std::fs::rename(m.path("twistrs.log"), m.path("twistrs.log.1")).unwrap();
    let (code, out, err) = m.ctl(&["reload"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains(&format!("SIGHUP sent to PID {new}")), "{out}");
    assert!(
        m.wait_log(|l| l.matches("Reopened log file").count() == 3, 10),
        "{}",
        m.log()
    );
    echo_once(port).unwrap();
}

#[test]
fn mail_through_several_workers_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dom = format!("example.com={}", dir.path().join("example.com").display());
    let m = Master::start(&[
        "--workers",
        "2",
        "mail",
        "-H",
        "mx.test",
        "-d",
        &dom,
        "-u",
        "joe=secret",
        "-s",
        "tcp:0:interface=127.0.0.1",
        "--no-pop3",
    ]);
    m.wait_serving(2);
    let script = r#"
import smtplib, sys, threading
port = int(sys.argv[1])
errors = []
def send(t):
    try:
        for i in range(25):
            s = smtplib.SMTP('127.0.0.1', port, timeout=20)
            s.sendmail('a@x.test', ['joe@example.com'], 'Subject: m\r\n\r\nbody %d-%d\r\n' % (t, i))
            s.quit()
    except Exception as e:
        errors.append(repr(e))
ts = [threading.Thread(target=send, args=(t,)) for t in range(8)]
[t.start() for t in ts]
[t.join() for t in ts]
print('errors', errors)
"#;
    let (code, out, err) = crate::mail::py(script, &[&m.port().to_string()]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("errors []"), "{out} {err}");
    let bodies = crate::mail::new_files(&dir.path().join("example.com").join("joe"));
    assert_eq!(bodies.len(), 200);
    let mut seen: Vec<String> = bodies
        .iter()
        .filter_map(|b| {
            b.lines()
                .find(|l| l.starts_with("body "))
                .map(str::to_string)
        })
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 200, "every message once");
    // Both workers delivered (the unique names carry the PID of the one that wrote it).
    let names: Vec<String> = std::fs::read_dir(dir.path().join("example.com/joe/new"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let workers = children(m.pid());
    for w in &workers {
        assert!(
            names.iter().any(|n| n.contains(&format!("P{w}Q"))),
            "worker {w} delivered nothing"
        );
    }
}

/// Kills worker `pid` of `m` (one of its first two) and waits until its replacement serves.
fn replace_worker(m: &Master, pid: i32) {
    // SAFETY: a signal to a worker this test started (through its master).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let died = format!("(PID {pid}) ended by signal SIGKILL");
    assert!(m.wait_log(|l| l.contains(&died), 10), "{}", m.log());
    assert!(
        m.wait_log(|l| l.matches(" serves.").count() >= 3, 10),
        "{}",
        m.log()
    );
}

#[test]
fn a_start_up_warning_is_logged_once_and_again_by_a_replacement() {
    // The master builds the service (mail warns: no -d) and the first workers, started at
    // once on the same options, do not say it again; a replacement does (files may have
    // changed since), and a restart's new master says it once for its own workers.
    const WARNING: &str = "no -d domain: every recipient will be refused";
    let m = Master::start(&[
        "--workers",
        "2",
        "mail",
        "-H",
        "mx.test",
        "-s",
        "tcp:0:interface=127.0.0.1",
        "--no-pop3",
    ]);
    m.wait_serving(2);
    assert_eq!(m.log().matches(WARNING).count(), 1, "{}", m.log());
    let workers = children(m.pid());
    assert_eq!(workers.len(), 2, "{workers:?}");
    replace_worker(&m, workers[0]);
    assert_eq!(m.log().matches(WARNING).count(), 2, "{}", m.log());
    let (code, out, err) = m.ctl(&["restart"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        m.wait_log(|l| l.matches("2 workers serve.").count() == 2, 10),
        "{}",
        m.log()
    );
    assert_eq!(m.log().matches(WARNING).count(), 3, "{}", m.log());
}

#[test]
fn a_log_outside_the_workers_chroot_is_said_once() {
    let test = "a_log_outside_the_workers_chroot_is_said_once";
    if !as_root(test, "--chroot needs root") {
        return;
    }
    let jail = tempfile::tempdir().unwrap();
    let m = Master::start(&[
        "--workers",
        "2",
        "--chroot",
        jail.path().to_str().unwrap(),
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    m.wait_serving(2);
    let warning = "is outside the chroot";
    assert_eq!(m.log().matches(warning).count(), 1, "{}", m.log());
    let workers = children(m.pid());
    assert_eq!(workers.len(), 2, "{workers:?}");
    replace_worker(&m, workers[1]);
    assert_eq!(m.log().matches(warning).count(), 2, "{}", m.log());
}

#[test]
fn single_process_plugins_refuse_workers_and_worker_failures_reach_the_starter() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_in(
        dir.path(),
        &["-n", "--workers", "2", "procmon", "sleep", "10"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("procmon cannot run with --workers 2") && err.contains("one process only"),
        "{err}"
    );
    let conf = dir.path().join("inetd.conf");
    std::fs::write(&conf, "").unwrap();
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "-n",
            "--workers",
            "2",
            "inetd",
            "-f",
            conf.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("inetd cannot run with --workers 2") && err.contains("wait services"),
        "{err}"
    );
    // A worker that cannot start (its chroot is missing: each worker chroots itself): the
    // daemon's starter hears it through the status pipe and exits 1, and the UNIX socket the
    // master made for it is gone with its lock, as after a single process's failed start.
    let sock = dir.path().join("w.sock");
    let unix = format!("unix:{}", sock.display());
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "--workers",
            "2",
            "--chroot",
            "/nonexistent-twistrs",
            "echo",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--listen",
            &unix,
        ],
    );
    assert!(!sock.exists(), "the socket file is left");
    assert!(!dir.path().join("w.sock.lock").exists(), "its lock is left");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("failed to start") && err.contains("cannot chroot to /nonexistent-twistrs"),
        "{err}"
    );
    assert!(
        !dir.path().join("twistrs.pid").exists() || {
            let (c, _, _) = run_in(dir.path(), &["status"]);
            c != 0
        }
    );
}

#[test]
fn a_stopped_master_removes_its_socket_files_where_it_made_them_not_where_a_link_leads() {
    // The master stays root for its life; the socket's directory lies under one a service
    // user could own, who swaps it for a link to another holding files of the same names.
    let top = tempfile::tempdir().unwrap();
    let sub = top.path().join("user/sub");
    std::fs::create_dir_all(&sub).unwrap();
    let unix = format!("unix:{}", sub.join("w.sock").display());
    let m = Master::start(&[
        "--workers",
        "2",
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--listen",
        &unix,
    ]);
    m.wait_serving(2);
    // The lock names the master, which keeps the socket and removes both; the workers, root
    // while they take their sockets, leave it alone (so touch nothing through the path).
    let named = std::fs::read_link(sub.join("w.sock.lock")).unwrap();
    assert_eq!(named.to_str(), Some(m.pid().to_string().as_str()));
    let victim = top.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let _held = std::os::unix::net::UnixListener::bind(victim.join("w.sock")).unwrap();
    std::os::unix::fs::symlink("1", victim.join("w.sock.lock")).unwrap();
    let old = top.path().join("user/sub.old");
    std::fs::rename(&sub, &old).unwrap();
    std::os::unix::fs::symlink(&victim, &sub).unwrap();
    let (code, out, err) = m.ctl(&["stop", "--timeout", "10"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        victim.join("w.sock").symlink_metadata().is_ok(),
        "removed through the link"
    );
    assert!(
        victim.join("w.sock.lock").symlink_metadata().is_ok(),
        "removed through the link"
    );
    assert!(
        old.join("w.sock").symlink_metadata().is_err(),
        "its own socket is left"
    );
    assert!(
        old.join("w.sock.lock").symlink_metadata().is_err(),
        "its own lock is left"
    );
}

#[test]
fn socket_activation_feeds_the_workers_and_ready_comes_once_all_serve() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd = listener.as_raw_fd();
    let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .unwrap()
        .ino();
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" -n --pidfile= --workers 2 echo --listen systemd:domain=INET:index=0")
        .arg(BIN)
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("LISTEN_FDNAMES")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    pass_as_fd3(&mut cmd, fd);
    let mut child = cmd.spawn().unwrap();
    let master = child.id() as i32;
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 arrives");
    assert_eq!(&buf[..n], b"READY=1");
    // READY=1 came from the master once both workers served: both hold systemd's socket.
    let workers = children(master);
    assert_eq!(workers.len(), 2, "{workers:?}");
    for w in &workers {
        assert_eq!(
            held_by(*w, &[inode]),
            1,
            "worker {w} listens on systemd's socket"
        );
    }
    drop(listener);
    echo_once(port).unwrap();
    // SAFETY: a signal to the master this test started.
    unsafe { libc::kill(master, libc::SIGTERM) };
    let n = notify.recv(&mut buf).expect("STOPPING=1 arrives");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let end = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < end, "the master exits");
        std::thread::sleep(Duration::from_millis(10));
    }
    // No second READY=1 or anything else from the workers.
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(notify.recv(&mut buf).is_err(), "only the master notifies");
}

#[test]
fn workers_drop_privileges_and_the_master_keeps_the_ports() {
    let Some(nobody) = nobody_as_root("workers_drop_privileges_and_the_master_keeps_the_ports")
    else {
        return;
    };
    let port = free_privileged_port(true);
    let ep = format!("tcp:{port}:interface=127.0.0.1");
    let m = Master::start(&["-u", "nobody", "--workers", "2", "echo", "--listen", &ep]);
    m.wait_serving(2);
    let uid = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Uid:").map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let workers = children(m.pid());
    assert_eq!(workers.len(), 2);
    for w in &workers {
        let u = uid(*w);
        assert!(
            u.split_whitespace().all(|x| x == nobody.uid.to_string()),
            "worker {w}: {u}"
        );
    }
    assert!(uid(m.pid()).starts_with("0\t"), "the master stays root");
    echo_once(port).unwrap();
    // A worker killed is started again by the root master and drops privileges again.
    // SAFETY: a signal to a worker this test started.
    unsafe { libc::kill(workers[0], libc::SIGKILL) };
    assert!(
        m.wait_log(|l| l.matches(" serves.").count() >= 3, 10),
        "{}",
        m.log()
    );
    let again = children(m.pid());
    assert_eq!(again.len(), 2);
    for w in &again {
        let u = uid(*w);
        assert!(
            u.split_whitespace().all(|x| x == nobody.uid.to_string()),
            "{u}"
        );
    }
}

#[test]
fn a_stop_signalled_to_the_whole_group_still_drains_gracefully() {
    // systemd's default KillMode sends SIGTERM to every process of the service at once: the
    // master's own stop request to a worker must not count as the second signal that ends
    // its drain at once.
    let (m, master, workers) = two_echo_workers(&[]);
    let port = m.port();
    let mut conns: Vec<std::net::TcpStream> = (0..8)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            c
        })
        .collect();
    // The workers first: each hears systemd's SIGTERM before the master's request.
    for pid in workers.iter().copied().chain(std::iter::once(master)) {
        // SAFETY: signals to the processes this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    // Each worker heard systemd's SIGTERM or the master's request first, and drains.
    let heard = |l: &str| {
        l.matches("Received SIGTERM").count() + l.matches("The master asked to stop").count()
    };
    assert!(m.wait_log(|l| heard(l) >= 3, 5), "{}", m.log());
    // Draining: a message sent now, inside the drain's idle second, is still answered.
    for c in &mut conns {
        c.write_all(b"y").unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"y");
    }
    assert!(
        m.wait_log(|l| l.contains("Server Shut Down.") && !alive(master), 15),
        "{}",
        m.log()
    );
    let log = m.log();
    assert!(!log.contains("Shutdown deadline passed"), "{log}");
    // twistd's last line is the master's alone; each worker says which one it was, whichever
    // signal it heard first.
    assert_eq!(log.matches("Server Shut Down.").count(), 1, "{log}");
    for w in &workers {
        let end = format!("(PID {w}) shut down.");
        assert!(
            log.lines()
                .any(|l| l.contains("] Worker ") && l.ends_with(&end)),
            "{end}\n{log}"
        );
    }
}

/// A zone file swapped for a FIFO that nobody writes: a reload's parse blocks in open(2)
/// until the guard, dropped, opens it for writing and closes it (the parse then fails and
/// its thread ends), so no process the test started is left blocked whatever happens.
struct StuckZone {
    path: PathBuf,
}

impl StuckZone {
    fn swap_in(path: &std::path::Path) -> StuckZone {
        let fifo = path.with_extension("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo on a path this test owns.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
        // A second name for it, so the guard still finds it once the zone file is replaced.
        let link = path.with_extension("link");
        std::fs::hard_link(&fifo, &link).unwrap();
        std::fs::rename(&link, path).unwrap();
        StuckZone { path: fifo }
    }
}

impl Drop for StuckZone {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).unwrap();
        // Each open for writing wakes the readers waiting then (ENXIO when none waits).
        for _ in 0..20 {
            // SAFETY: open/close of a FIFO this test made.
            unsafe {
                let fd = libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK);
                if fd >= 0 {
                    libc::close(fd);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn a_stop_or_a_restart_does_not_wait_for_a_reload_that_cannot_end() {
    // A dns reload parses on a worker thread. A process that ends by returning (a worker
    // asked by its master to stop, a process that handed over at a restart) used to join
    // that thread first: a parse that takes long, or never ends, held the stop.
    let files = tempfile::tempdir().unwrap();
    let zone = files.path().join("example.zone");
    let text = "$ORIGIN example.test.\n$TTL 300\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n";
    std::fs::write(&zone, text).unwrap();
    let zone_arg = zone.to_str().unwrap();
    let dns = |workers: &str| -> Vec<String> {
        dns_args(&["--workers", workers], &["--bindzone", zone_arg])
            .into_iter()
            .map(String::from)
            .collect()
    };

    // With workers: SIGHUP starts a reload in each; `twistrs stop` (10 s) then ends them all.
    let args = dns("2");
    let m = Master::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        m.wait_log(|l| l.contains("2 workers serve."), 60),
        "{}",
        m.log()
    );
    let master = m.pid();
    let workers = children(master);
    assert_eq!(workers.len(), 2, "{workers:?}");
    let stuck = StuckZone::swap_in(&zone);
    // SAFETY: a signal to the master this test started.
    unsafe { libc::kill(master, libc::SIGHUP) };
    assert!(
        m.wait_log(|l| l.matches("Reopened log file").count() == 3, 10),
        "{}",
        m.log()
    );
    let (code, out, err) = m.ctl(&["stop"]);
    assert_eq!(code, 0, "{out} {err}\n{}", m.log());
    assert!(!alive(master));
    assert!(workers.iter().all(|w| !alive(*w)), "{}", m.log());
    assert!(!m.log().contains("did not stop: killing it"), "{}", m.log());
    drop(stuck);

    // One process, restarted while its reload is stuck: the old process hands over and exits
    // (it did before the abandonable jobs too; this keeps the hand-over from ever waiting).
    std::fs::remove_file(&zone).unwrap();
    std::fs::write(&zone, text).unwrap();
    let args = dns("1");
    let m = Master::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        m.wait_log(|l| l.contains("Serving zone"), 60),
        "{}",
        m.log()
    );
    let old = m.pid();
    let stuck = StuckZone::swap_in(&zone);
    // SAFETY: a signal to the process this test started.
    unsafe { libc::kill(old, libc::SIGHUP) };
    assert!(
        m.wait_log(|l| l.contains("Reopened log file"), 10),
        "{}",
        m.log()
    );
    // The successor reads a zone file again, not the FIFO the old process waits on.
    let fresh = files.path().join("fresh.zone");
    std::fs::write(&fresh, text).unwrap();
    std::fs::rename(&fresh, &zone).unwrap();
    let (code, out, err) = m.ctl(&["restart"]);
    assert_eq!(code, 0, "{out} {err}\n{}", m.log());
    assert_ne!(m.pid(), old);
    let end = Instant::now() + Duration::from_secs(10);
    while alive(old) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !alive(old),
        "the old process exits after handing over\n{}",
        m.log()
    );
    drop(stuck);
}

/// The port of the factory `name` in the master's log ("NAME starting on PORT").
fn port_of(m: &Master, name: &str) -> u16 {
    let prefix = format!("{name} starting on ");
    m.log()
        .lines()
        .find_map(|l| l.split(&prefix).nth(1)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} port in:\n{}", m.log()))
}

/// A scrape of `GET /metrics` on 127.0.0.1:`port`: its body.
fn scrape(port: u16) -> String {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    body.to_string()
}

/// The master's private directory of its workers' metrics sockets, from a worker's "Metrics
/// starting on 'PATH'" line.
fn metrics_dir(m: &Master) -> PathBuf {
    m.log()
        .lines()
        .find_map(|l| {
            let p = l
                .split("Metrics starting on '")
                .nth(1)?
                .trim_end_matches('\'');
            Some(PathBuf::from(p).parent()?.to_path_buf())
        })
        .expect("a worker's metrics socket in the log")
}

/// Scrapes until `cond` holds of the body (a worker's replacement takes a moment), at most
/// 20 s; the last body either way.
fn scrape_until(port: u16, cond: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let body = scrape(port);
        if cond(&body) || Instant::now() > end {
            return body;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the sample whose name and labels start with `prefix`.
fn sample(body: &str, prefix: &str) -> u64 {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in:\n{body}"))
}

#[test]
fn metrics_with_workers_add_up_every_workers_figures() {
    // The same endpoint string as the echo listener's: a restart matches inherited sockets
    // up by their strings, and must still give each its own.
    let (m, _, workers) = two_echo_workers(&["--metrics", "tcp:0:interface=127.0.0.1"]);
    let (echo, metrics) = (port_of(&m, "Echo"), port_of(&m, "Metrics"));
    // Connections held open until both workers hold some (bounded at 400).
    let (conns, held) = hold_on_every_worker(echo, &workers, b"abc");
    assert!(held.iter().all(|n| *n > 0), "{held:?}");
    let n = conns.len() as u64;
    let echo_series = "{factory=\"Echo\",listener=\"tcp:0:interface=127.0.0.1\"}";
    let body = scrape(metrics);
    // Each worker's figures added up: every connection, whichever worker took it.
    assert_eq!(
        sample(
            &body,
            &format!("twistrs_connections_accepted_total{echo_series}")
        ),
        n,
        "{held:?}\n{body}"
    );
    assert_eq!(
        sample(&body, &format!("twistrs_connections_open{echo_series}")),
        n
    );
    assert_eq!(
        sample(&body, &format!("twistrs_received_bytes_total{echo_series}")),
        3 * n
    );
    assert_eq!(sample(&body, "twistrs_workers "), 2);
    assert_eq!(sample(&body, "twistrs_workers_serving "), 2);
    assert_eq!(sample(&body, "twistrs_workers_scraped "), 2);
    assert_eq!(sample(&body, "twistrs_worker_restarts_total "), 0);
    // One series per listener of the service: the master's own scrapes are counted, the
    // master's questions to its workers are not shown.
    let lines = |prefix: &str| body.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(lines("process_start_time_seconds "), 1, "{body}");
    assert_eq!(lines("twistrs_build_info{"), 1, "{body}");
    assert!(!body.contains("worker-1.sock"), "{body}");
    assert!(
        sample(
            &body,
            "twistrs_connections_accepted_total{factory=\"Metrics\""
        ) >= 1,
        "{body}"
    );
    crate::metrics::promtool_check("metrics_with_workers_add_up_every_workers_figures", &body);
    // A worker that does not answer (stopped) counts with the figures it last gave once the
    // scrape's deadline passes, and the scrape says so.
    // SAFETY: signals to a worker this test started (through its master).
    unsafe { libc::kill(workers[1], libc::SIGSTOP) };
    let asked = Instant::now();
    let body = scrape(metrics);
    unsafe { libc::kill(workers[1], libc::SIGCONT) };
    assert_eq!(sample(&body, "twistrs_workers_scraped "), 1, "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        sample(&body, &format!("twistrs_connections_open{echo_series}")),
        n,
        "{body}"
    );
    assert!(
        m.wait_log(|l| l.contains("the figures it last gave stand in"), 10),
        "{}",
        m.log()
    );
    // A worker killed: replaced, counted, and the connections it held are gone from the sum.
    let lost = held[0] as u64;
    // SAFETY: a signal to a worker this test started (through its master).
    unsafe { libc::kill(workers[0], libc::SIGKILL) };
    let body = scrape_until(metrics, |b| {
        sample(b, "twistrs_worker_restarts_total ") == 1
            && sample(b, "twistrs_workers_serving ") == 2
    });
    assert_eq!(sample(&body, "twistrs_worker_restarts_total "), 1, "{body}");
    assert_eq!(sample(&body, "twistrs_workers_serving "), 2, "{body}");
    assert_eq!(
        sample(&body, &format!("twistrs_connections_open{echo_series}")),
        n - lost,
        "{body}"
    );
    // The private sockets' directory goes with the master.
    let dir = metrics_dir(&m);
    assert!(dir.is_dir());
    drop(conns);
    // A restart: the new master serves the same metrics port with its own workers, and the
    // old master's private sockets go with it.
    let (code, out, err) = m.ctl(&["restart"]);
    assert_eq!(code, 0, "{out} {err}");
    let end = Instant::now() + Duration::from_secs(20);
    while dir.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!dir.exists(), "{} is left", dir.display());
    let body = scrape(metrics);
    assert_eq!(sample(&body, "twistrs_worker_restarts_total "), 0, "{body}");
    assert_eq!(sample(&body, "twistrs_workers_scraped "), 2, "{body}");
    // And the echo port is still the echo service's.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", echo)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"xyz").unwrap();
    let mut b = [0u8; 3];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"xyz");
    let (code, out, err) = m.ctl(&["stop"]);
    assert_eq!(code, 0, "{out} {err}");
    let leftovers = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("twistrs-metrics-")
                && std::fs::read_to_string(m.path("twistrs.log"))
                    .unwrap_or_default()
                    .contains(&e.path().display().to_string())
        })
        .count();
    assert_eq!(leftovers, 0, "a master left its metrics sockets behind");
}

#[test]
fn metrics_never_close_a_scrape_being_answered_to_let_slow_heads_in() {
    let (m, _, workers) = two_echo_workers(&["--metrics", "tcp:0:interface=127.0.0.1"]);
    let metrics = port_of(&m, "Metrics");
    let _ = scrape(metrics);
    // A stopped worker holds every scrape for the master's 3 s: two asked at once are being
    // answered while a hundred slow heads fill the slots around them and get closed, the
    // ones that waited longest first, to let newcomers in. The two connected first, so a
    // choice by age alone would close them. (Two: the master's thread pool may take
    // scrapes one after another, and a third would then pass the 10 s idle timeout.)
    // SAFETY: signals to a worker this test started (through its master).
    unsafe { libc::kill(workers[1], libc::SIGSTOP) };
    let asked: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", metrics)).unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            c
        })
        .collect();
    let slow = crate::metrics::SlowHeads::start(metrics, 100);
    let answers: Vec<String> = asked
        .into_iter()
        .map(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let mut text = Vec::new();
            let _ = c.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
        .collect();
    // A scrape asked now gets in too (and waits its 3 s for the stopped worker).
    let late = crate::metrics::scrape_within(metrics, Duration::from_secs(8));
    // SAFETY: as above.
    unsafe { libc::kill(workers[1], libc::SIGCONT) };
    let closed = slow.stop();
    for a in &answers {
        assert!(
            a.starts_with("HTTP/1.1 200 OK") && a.contains("twistrs_workers_scraped 1\n"),
            "a scrape being answered was cut off: {a:?}"
        );
    }
    let late = late.expect("a scrape under slow heads");
    assert!(
        closed > 0,
        "no slow head was closed: the limit was never reached"
    );
    assert!(
        late.contains("twistrs_connection_limit_closes_total{factory=\"Metrics\""),
        "{late}"
    );
    let (code, out, err) = m.ctl(&["stop"]);
    assert_eq!(code, 0, "{out} {err}");
}

#[test]
fn after_a_restart_only_the_new_master_answers_scrapes() {
    only_the_new_process_answers_scrapes(&["--workers", "2"]);
}

#[test]
fn after_a_restart_only_the_new_single_process_answers_scrapes() {
    only_the_new_process_answers_scrapes(&[]);
}

/// Old and new process (or master) share the --metrics socket through the hand-over. While
/// the old one drains a connection kept busy, every scrape must be the new one's: one
/// answered by the old process counts that connection (or is cut off when it exits), and the
/// service's figures would go back and forth between the two.
fn only_the_new_process_answers_scrapes(workers: &[&str]) {
    let mut args = workers.to_vec();
    args.extend([
        "--shutdown-timeout",
        "60",
        "--metrics",
        "tcp:0:interface=127.0.0.1:backlog=64",
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    let m = Master::start(&args);
    assert!(
        m.wait_log(|l| l.contains("Echo starting on"), 10),
        "{}",
        m.log()
    );
    let old = m.pid();
    let (echo, metrics) = (port_of(&m, "Echo"), port_of(&m, "Metrics"));
    // Busy, not idle: a draining worker gives an idle connection a second only.
    let mut held = std::net::TcpStream::connect(("127.0.0.1", echo)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let busy = {
        let done = done.clone();
        std::thread::spawn(move || {
            // Bounded: the test ends it within a minute at most.
            let end = Instant::now() + Duration::from_secs(60);
            while !done.load(Ordering::SeqCst) && Instant::now() < end {
                if held.write_all(b"x").is_err() || held.read_exact(&mut [0u8; 1]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let open = "twistrs_connections_open{factory=\"Echo\"";
    assert_eq!(sample(&scrape(metrics), open), 1);
    let (code, out, err) = m.ctl(&["restart"]);
    assert_eq!(code, 0, "{out} {err}");
    let new = m.pid();
    assert_ne!(new, old);
    let mut during = 0;
    for i in 0..40 {
        let body = scrape(metrics);
        assert_eq!(
            sample(&body, open),
            0,
            "scrape {i} was the old process's:\n{body}"
        );
        during += usize::from(alive(old));
    }
    assert!(
        during >= 20,
        "the old process drained during {during} scrapes only"
    );
    done.store(true, Ordering::SeqCst);
    busy.join().unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while alive(old) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(old), "the old process drained and exited");
}

/// The PID of worker `index` of the master that logged it serving last.
fn worker_pid(m: &Master, index: usize) -> i32 {
    let prefix = format!("Worker {index} (PID ");
    m.log()
        .lines()
        .rev()
        .find_map(|l| {
            l.split(&prefix)
                .nth(1)?
                .strip_suffix(") serves.")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no worker {index} in:\n{}", m.log()))
}

#[test]
fn a_stuck_worker_hides_no_other_and_a_dead_one_takes_no_count_back() {
    // Worker 1 is asked first: stopped, it must not cost workers 2 and 3 their answers. Its
    // last figures stand in, so the sums do not drop; and a worker killed leaves what it
    // counted in the sums (a counter of the service that drops is a reset to Prometheus,
    // whose rate() would count everything the other workers had counted once more).
    let m = Master::start(&[
        "--workers",
        "3",
        "--metrics",
        "tcp:0:interface=127.0.0.1:backlog=64",
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    m.wait_serving(3);
    let pids: Vec<i32> = (1..=3).map(|i| worker_pid(&m, i)).collect();
    let (echo, metrics) = (port_of(&m, "Echo"), port_of(&m, "Metrics"));
    // Connections held open until every worker holds some (bounded at 600).
    let mut conns: Vec<std::net::TcpStream> = Vec::new();
    let mut held = vec![0; pids.len()];
    while conns.len() < 600 && held.contains(&0) {
        for _ in 0..20 {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", echo)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(b"abc").unwrap();
            c.read_exact(&mut [0u8; 3]).unwrap();
            conns.push(c);
        }
        let inodes = established(echo);
        held = pids.iter().map(|w| held_by(*w, &inodes)).collect();
    }
    assert!(held.iter().all(|n| *n > 0), "{held:?}");
    let n = conns.len() as u64;
    let accepted = "twistrs_connections_accepted_total{factory=\"Echo\"";
    let open = "twistrs_connections_open{factory=\"Echo\"";
    let body = scrape(metrics);
    assert_eq!(sample(&body, accepted), n, "{body}");
    assert_eq!(sample(&body, "twistrs_workers_scraped "), 3, "{body}");
    // SAFETY: signals to a worker this test started (through its master).
    unsafe { libc::kill(pids[0], libc::SIGSTOP) };
    for _ in 0..2 {
        let asked = Instant::now();
        let body = scrape(metrics);
        assert_eq!(sample(&body, "twistrs_workers_scraped "), 2, "{body}");
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "{:?}",
            asked.elapsed()
        );
        assert_eq!(sample(&body, accepted), n, "{body}");
        assert_eq!(sample(&body, open), n, "{body}");
    }
    // SAFETY: as above.
    unsafe { libc::kill(pids[0], libc::SIGCONT) };
    let body = scrape(metrics);
    assert_eq!(sample(&body, "twistrs_workers_scraped "), 3, "{body}");
    let log = m.log();
    assert_eq!(
        log.matches("Worker 1's metrics").count(),
        1,
        "one warning for two scrapes:\n{log}"
    );
    assert!(
        log.contains("Worker 1 answers for its metrics again."),
        "{log}"
    );
    // Worker 2 killed: its connections are gone, what it counted is not.
    // SAFETY: a signal to a worker this test started (through its master).
    unsafe { libc::kill(pids[1], libc::SIGKILL) };
    let body = scrape_until(metrics, |b| {
        sample(b, "twistrs_worker_restarts_total ") == 1
            && sample(b, "twistrs_workers_scraped ") == 3
    });
    assert_eq!(sample(&body, "twistrs_workers_scraped "), 3, "{body}");
    assert_eq!(sample(&body, accepted), n, "{body}");
    assert_eq!(sample(&body, open), n - held[1] as u64, "{body}");
    crate::metrics::promtool_check(
        "a_stuck_worker_hides_no_other_and_a_dead_one_takes_no_count_back",
        &body,
    );
}

#[test]
fn a_killed_masters_metrics_directory_is_removed_by_the_next_master() {
    let args = [
        "--workers",
        "2",
        "--metrics",
        "tcp:0:interface=127.0.0.1",
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ];
    // A TMPDIR of the test's own: a master of another test, started meanwhile, would remove
    // the dead master's directory in the shared one before our second master could.
    let tmp = tempfile::tempdir().unwrap();
    let env = [("TMPDIR", tmp.path().to_str().unwrap())];
    let first = Master::start_env(&args, &env);
    first.wait_serving(2);
    let left = metrics_dir(&first);
    assert!(left.starts_with(tmp.path()), "{}", left.display());
    let name = left.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("twistrs-metrics-{}-", first.pid())),
        "{name}"
    );
    let workers = children(first.pid());
    // SAFETY: SIGKILL to the master this test started; its workers follow (PDEATHSIG).
    unsafe { libc::kill(first.pid(), libc::SIGKILL) };
    let end = Instant::now() + Duration::from_secs(10);
    while (alive(first.pid()) || workers.iter().any(|w| alive(*w))) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(left.is_dir(), "nothing removed it yet");
    let second = Master::start_env(&args, &env);
    second.wait_serving(2);
    assert!(!left.exists(), "{} is left", left.display());
    assert!(
        metrics_dir(&second).is_dir(),
        "the second master's own stays"
    );
}

/// With `-u`, the master keeps root and reopens the log first at a reload: a log it makes
/// then (after logrotate moved the old one, in a directory only root may write) is given to
/// the user, or the workers, which reopen it by name as that user, could not.
#[test]
fn a_log_the_root_master_makes_at_a_reload_is_the_users() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(nobody) = nobody_as_root("a_log_the_root_master_makes_at_a_reload_is_the_users")
    else {
        return;
    };
    let mut args = vec!["-u", "nobody"];
    args.extend_from_slice(ECHO);
    let m = Master::start(&args);
    m.wait_serving(2);
    let port = m.port();
    // Searchable by the workers; still writable by root alone.
    std::fs::set_permissions(m.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(m.path("twistrs.log"), m.path("twistrs.log.1")).unwrap();
    let (code, out, err) = m.ctl(&["reload"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        m.wait_log(|l| l.matches("Reopened log file").count() == 3, 10),
        "the master and both workers reopened it: {}",
        m.log()
    );
    let md = std::fs::metadata(m.path("twistrs.log")).unwrap();
    assert_eq!(md.uid(), nobody.uid.as_raw());
    echo_once(port).unwrap();
}
