//! The daemon lifecycle with the real binary: detach, status pipe, pidfile cases, privileges,
//! stop/status/restart, socket activation and sd_notify.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A daemon started in its own directory; stopped by PID through `twistrs stop` when dropped.
struct Daemon {
    dir: tempfile::TempDir,
    pid: u32,
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let (code, out, err) = run_in(dir.path(), args);
        assert_eq!(code, 0, "daemon start {args:?}: {out} {err}");
        let pid = std::fs::read_to_string(dir.path().join("twistrs.pid"))
            .expect("the pidfile exists when the parent exits")
            .parse()
            .expect("a PID");
        Daemon { dir, pid }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("twistrs.log")).unwrap_or_default()
    }

    fn ports(&self) -> Vec<u16> {
        self.log()
            .lines()
            .filter_map(|l| l.split(" starting on ").nth(1))
            .filter_map(|p| p.trim().parse().ok())
            .collect()
    }

    fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        run_in(self.dir.path(), args)
    }

    fn wait_log(&self, needle: &str) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = run_in(self.dir.path(), &["stop", "--timeout", "2"]);
    }
}

fn proc_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn echo_once(port: u16) {
    let mut c = connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    send(&mut c, b"ping");
    assert_eq!(read_n(&mut c, 4), b"ping");
}

#[test]
fn daemon_detaches_serves_and_stops_through_the_pidfile() {
    let d = Daemon::start(&["echo", "--listen", "tcp:0:interface=127.0.0.1"]);
    assert_ne!(d.pid, std::process::id());
    let stat = |pid: u32| -> Vec<String> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        s.rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let (daemon, me) = (stat(d.pid), stat(std::process::id()));
    // Fields after the name: state, ppid, pgrp, session.
    assert_ne!(daemon[3], me[3], "a session of its own (setsid)");
    assert_ne!(
        daemon[3],
        d.pid.to_string(),
        "not its leader: it can never get a terminal"
    );
    assert_ne!(
        daemon[1],
        std::process::id().to_string(),
        "detached from its starter"
    );
    assert_eq!(proc_field(d.pid, "Umask"), "0077", "twistd's daemon umask");
    let mode = std::fs::metadata(d.path("twistrs.pid")).unwrap().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "the pidfile follows the daemon's umask, as twistd's"
    );
    let fd0 = std::fs::read_link(format!("/proc/{}/fd/0", d.pid)).unwrap();
    assert_eq!(fd0, Path::new("/dev/null"));
    echo_once(d.ports()[0]);
    assert_eq!(d.ctl(&["status"]).0, 0);
    let (code, out, _) = d.ctl(&["stop"]);
    assert_eq!(code, 0, "{out}");
    assert!(!d.path("twistrs.pid").exists(), "removed at a clean exit");
    assert!(d.log().contains("Server Shut Down."));
    assert_eq!(d.ctl(&["status"]).0, 3, "LSB: not running");
    assert_eq!(d.ctl(&["stop"]).0, 0, "stopping a stopped service succeeds");
}

#[test]
fn start_up_errors_reach_the_waiting_parent_whole() {
    let dir = tempfile::tempdir().unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    // A long UNIX path makes the message longer than twistd's 100-byte cut.
    let long = dir.path().join("a-rather-long-directory-name-for-a-socket");
    std::fs::create_dir(&long).unwrap();
    let sock = format!("unix:{}/s.sock", long.display());
    let ep = format!("tcp:{port}:interface=127.0.0.1");
    let (code, _, err) = run_in(dir.path(), &["echo", "--listen", &sock, "--listen", &ep]);
    assert_eq!(code, 1);
    let want = format!("Couldn't listen on 127.0.0.1:{port}: Address already in use");
    assert!(err.contains(&want), "{err}");
    assert!(
        !dir.path().join("twistrs.pid").exists(),
        "removed after a failed start"
    );
    assert!(
        !long.join("s.sock").exists(),
        "the socket bound before the failure is cleaned up"
    );
    let (code, _, err) = run_in(dir.path(), &["echo", "--listen", "tcp:nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("'tcp:nope'"), "{err}");
    let (code, _, err) = run_in(dir.path(), &["-l", "-", "echo"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Daemons cannot log to stdout, exiting!"),
        "{err}"
    );
}

/// A plugin's options refused as its service is made (procmon without a command, mail with
/// every protocol off) leave nothing behind, as twistd's usage errors do: no pidfile, and no
/// log file that the start made. A log that was there keeps its lines and gets the refusal.
#[test]
fn a_refused_plugin_leaves_no_log_or_pidfile_behind() {
    let refusals: [(&[&str], &str); 3] = [
        (&["procmon"], "Please specify a process commandline"),
        (
            &["mail", "--no-smtp", "--no-pop3"],
            "You cannot disable all protocols",
        ),
        (&["echo", "--listen", "tcp:nope"], "'tcp:nope'"),
    ];
    for (args, want) in refusals {
        for foreground in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut full = if foreground {
                vec!["-n", "-l", "own.log"]
            } else {
                vec![]
            };
            full.extend_from_slice(args);
            let (code, _, err) = run_in(dir.path(), &full);
            assert_eq!(code, 1, "{full:?}: {err}");
            assert!(err.contains(want), "{full:?}: {err}");
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(left.is_empty(), "{full:?} left {left:?}");
        }
    }
    // A log that was there: kept, its lines untouched, the refused start logged after them.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("twistrs.log");
    std::fs::write(&log, "an earlier line\n").unwrap();
    let (code, _, err) = run_in(dir.path(), &["procmon"]);
    assert_eq!(code, 1, "{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.starts_with("an earlier line\n"), "{text}");
    assert!(
        text.contains("[twistrs.launcher#error] Please specify a process commandline"),
        "{text}"
    );
    assert!(!dir.path().join("twistrs.pid").exists());
}

/// A daemon that cannot go into the background (a `--chroot` jail without `/dev/null`, which
/// the forked process opens for its stdio) fails its start as any other failure does: the
/// error on the starter's stderr once, in the log too, and no pidfile left (it was left
/// empty: the forked process exited without giving it up).
#[test]
fn a_daemon_that_cannot_detach_gives_its_pidfile_up_and_logs_why() {
    if !as_root(
        "a_daemon_that_cannot_detach_gives_its_pidfile_up_and_logs_why",
        "--chroot needs root",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jail = dir.path().join("jail");
    std::fs::create_dir(&jail).unwrap();
    let (code, out, err) = run_in(
        dir.path(),
        &[
            "--chroot",
            jail.to_str().unwrap(),
            "echo",
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ],
    );
    assert_eq!(code, 1, "{out} {err}");
    let want = "cannot daemonize: unable to open /dev/null";
    assert_eq!(err.matches(want).count(), 1, "said once: {err}");
    assert!(
        !dir.path().join("twistrs.pid").exists(),
        "the pidfile is given up"
    );
    let log = std::fs::read_to_string(dir.path().join("twistrs.log")).unwrap();
    assert!(
        log.contains(&format!("[twistrs.launcher#error] {want}")),
        "{log}"
    );
    // Any failure once inside the jail, whose root does not reach the pidfile's path: the
    // pidfile is removed all the same (it was left empty).
    std::fs::create_dir(jail.join("dev")).unwrap();
    let mknod = Command::new("mknod")
        .arg(jail.join("dev/null"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(mknod.success());
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!(
        "tcp:{}:interface=127.0.0.1",
        held.local_addr().unwrap().port()
    );
    let (code, out, err) = run_in(
        dir.path(),
        &["--chroot", jail.to_str().unwrap(), "echo", "--listen", &ep],
    );
    assert_eq!(code, 1, "{out} {err}");
    assert!(err.contains("Address already in use"), "{err}");
    assert!(
        !dir.path().join("twistrs.pid").exists(),
        "the pidfile is removed from inside the jail"
    );
}

#[test]
fn pidfile_cases_live_stale_empty_garbage_and_reused() {
    let d = Daemon::start(&["echo", "--listen", "tcp:0:interface=127.0.0.1"]);
    let (code, _, err) = d.ctl(&["echo", "--listen", "tcp:0:interface=127.0.0.1"]);
    assert_eq!(code, 1, "a live twistrs refuses a second start");
    assert!(
        err.contains(&format!("Another twistrs server is running, PID {}", d.pid)),
        "{err}"
    );
    // The same with -n.
    let (code, _, err) = d.ctl(&["-n", "echo", "--listen", "tcp:0:interface=127.0.0.1"]);
    assert_eq!(code, 1);
    assert!(err.contains("Another twistrs server is running"), "{err}");
    drop(d);

    // A PID that now belongs to another live program (ours) must not block a start.
    let mine = std::process::id().to_string();
    for content in ["999999", "", "not a pid \u{1}\u{2}", mine.as_str()] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("twistrs.pid"), content).unwrap();
        let (code, _, err) = run_in(
            dir.path(),
            &["echo", "--listen", "tcp:0:interface=127.0.0.1"],
        );
        assert_eq!(code, 0, "{content:?}: {err}");
        let pid = std::fs::read_to_string(dir.path().join("twistrs.pid")).unwrap();
        assert_ne!(pid, content);
        let log = std::fs::read_to_string(dir.path().join("twistrs.log")).unwrap();
        if !content.is_empty() {
            assert!(log.contains("Replacing stale pidfile"), "{log}");
        }
        assert_eq!(run_in(dir.path(), &["stop"]).0, 0);
    }
}

#[test]
fn status_reports_a_dead_service_with_a_pidfile_left() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("twistrs.pid"), "999999").unwrap();
    let (code, out, _) = run_in(dir.path(), &["status"]);
    assert_eq!(code, 1, "{out}");
    let (code, _, err) = run_in(dir.path(), &["status", "--pidfile", ""]);
    assert_eq!(code, 4, "no pidfile to read: {err}");
    let (code, out, _) = run_in(dir.path(), &["stop", "--pidfile", "elsewhere.pid"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn stop_kills_after_its_timeout() {
    // An echo client that sends without reading fills every buffer on the way: the server
    // cannot flush, so its drain cannot finish within its 60 s.
    let d = Daemon::start(&[
        "--shutdown-timeout",
        "60",
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    let mut stalled = connect(std::net::SocketAddr::from(([127, 0, 0, 1], d.ports()[0])));
    stalled.set_nonblocking(true).unwrap();
    let chunk = vec![b'z'; 64 * 1024];
    let mut blocked_since: Option<Instant> = None;
    // Until the server, its output full, stops reading: only then does its drain need the
    // SIGKILL (a loaded machine may take more than a few seconds to get there).
    let end = Instant::now() + Duration::from_secs(30);
    let mut stalled_at_last = false;
    while Instant::now() < end {
        match stalled.write(&chunk) {
            Ok(_) => blocked_since = None,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if blocked_since.get_or_insert_with(Instant::now).elapsed()
                    > Duration::from_millis(300)
                {
                    stalled_at_last = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(stalled_at_last, "the server never stopped reading");
    let start = Instant::now();
    let (code, out, err) = d.ctl(&["stop", "--timeout", "0.5"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(err.contains("SIGKILL"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(
        d.ctl(&["status"]).0,
        1,
        "killed: the pidfile is left, unlocked"
    );
}

#[test]
fn restart_hands_over_a_socket_bound_by_host_name() {
    // The successor matches inherited sockets by the endpoint string, which keeps the name:
    // the socket is handed over, not bound again. The name comes from a private /etc/hosts.
    let test = "restart_hands_over_a_socket_bound_by_host_name";
    let dir = tempfile::tempdir().unwrap();
    let Some(wrapper) = private_hosts(
        test,
        dir.path(),
        "127.0.0.1 localhost\n127.0.0.3 twistrs-it-restart\n",
        None,
    ) else {
        return;
    };
    let out = Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .arg(BIN)
        .args(["echo", "--listen", "tcp:0:interface=twistrs-it-restart"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid: u32 = std::fs::read_to_string(dir.path().join("twistrs.pid"))
        .unwrap()
        .parse()
        .unwrap();
    // Stopped through its pidfile when dropped, also if an assertion fails.
    let d = Daemon { dir, pid };
    let port = d.ports()[0];
    let ping = || {
        let mut c = connect(std::net::SocketAddr::from(([127, 0, 0, 3], port)));
        send(&mut c, b"ping");
        assert_eq!(read_n(&mut c, 4), b"ping");
    };
    ping();
    let (code, out, err) = d.ctl(&["restart"]);
    assert_eq!(code, 0, "{out} {err} {}", d.log());
    assert!(out.contains("handed over to PID"), "{out}");
    ping();
}

#[test]
fn restart_under_a_client_loop_refuses_nothing() {
    let d = Daemon::start(&["echo", "--listen", "tcp:0:interface=127.0.0.1"]);
    let port = d.ports()[0];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (s2, done2) = (stop.clone(), done.clone());
    let loop_thread = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0u32, Vec::new());
        let end = Instant::now() + Duration::from_secs(20);
        while !s2.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < end {
            let r = (|| -> std::io::Result<()> {
                let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
                c.set_read_timeout(Some(Duration::from_secs(5)))?;
                c.write_all(b"x")?;
                let mut b = [0u8; 1];
                c.read_exact(&mut b)?;
                Ok(())
            })();
            match r {
                Ok(()) => {
                    ok += 1;
                    done2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Err(e) => failed.push(e.to_string()),
            }
        }
        (ok, failed)
    });
    // The loop is running before the restart, and still after it.
    let served = |n: u32| {
        let end = Instant::now() + Duration::from_secs(10);
        while done.load(std::sync::atomic::Ordering::SeqCst) < n && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        done.load(std::sync::atomic::Ordering::SeqCst)
    };
    let before = served(20);
    let (code, out, err) = d.ctl(&["restart"]);
    assert_eq!(code, 0, "{out} {err}");
    served(before + 40);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = loop_thread.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} failed of {}: {failed:?}",
        failed.len(),
        ok + failed.len() as u32
    );
    assert!(ok > 50, "the loop ran: {ok}");
    let new: u32 = std::fs::read_to_string(d.path("twistrs.pid"))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(new, d.pid, "the pidfile names the new process");
    assert!(out.contains(&format!("handed over to PID {new}")), "{out}");
    assert!(
        d.wait_log("handed over to PID"),
        "the old one drained and left"
    );
    echo_once(port);
    let (code, out, _) = d.ctl(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains(&new.to_string()));
}

#[test]
fn a_failed_restart_keeps_the_old_process_serving() {
    let dir = tempfile::tempdir().unwrap();
    let quotes = dir.path().join("quotes.txt");
    std::fs::write(&quotes, "a quote\n").unwrap();
    let d = Daemon::start(&[
        "qotd",
        "--file",
        quotes.to_str().unwrap(),
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    std::fs::remove_file(&quotes).unwrap();
    let (code, _, err) = d.ctl(&["restart"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("quotes file") && err.contains("keeps serving"),
        "{err}"
    );
    let (code, out, _) = d.ctl(&["status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&d.pid.to_string()),
        "the old PID still serves: {out}"
    );
    let mut c = connect(std::net::SocketAddr::from(([127, 0, 0, 1], d.ports()[0])));
    assert_eq!(read_to_end(&mut c), b"a quote\r\n");
}

#[test]
fn a_log_moved_where_the_user_cannot_make_it_again_goes_on_in_the_old_file_saying_why() {
    let test = "a_log_moved_where_the_user_cannot_make_it_again_goes_on_in_the_old_file_saying_why";
    if nobody_as_root(test).is_none() {
        return;
    }
    // Stopped when dropped, whatever fails.
    let d = Daemon::start(&[
        "-u",
        "nobody",
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    // root's 0755: nobody may search it, not make files in it.
    std::fs::set_permissions(
        d.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let log = d.dir.path().join("twistrs.log");
    let moved = d.dir.path().join("twistrs.log.1");
    std::fs::rename(&log, &moved).unwrap();
    let (code, out, err) = d.ctl(&["reload"]);
    assert_eq!(code, 0, "{out} {err}");
    let end = Instant::now() + Duration::from_secs(5);
    let mut text = String::new();
    while Instant::now() < end && !text.contains("Cannot reopen the log file") {
        std::thread::sleep(Duration::from_millis(20));
        text = std::fs::read_to_string(&moved).unwrap_or_default();
    }
    let line = text
        .lines()
        .find(|l| l.contains("Cannot reopen the log file"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(&log.display().to_string()),
        "names the file: {line}"
    );
    assert!(
        line.contains("'create'") && line.contains("copytruncate"),
        "{line}"
    );
    assert!(
        line.contains("still writing to the one opened before"),
        "{line}"
    );
    assert!(!log.exists());
    let (code, out, err) = d.ctl(&["stop"]);
    assert_eq!(code, 0, "{out} {err}");
    // The stop is logged in the file still open.
    let text = std::fs::read_to_string(&moved).unwrap();
    assert!(text.contains("Main loop terminated"), "{text}");
}

#[test]
fn privileges_drop_to_nobody_after_binding_a_privileged_port() {
    let Some(nobody) = nobody_as_root("privileges_drop_to_nobody_after_binding_a_privileged_port")
    else {
        return;
    };
    let port = free_privileged_port(false);
    let dir = tempfile::tempdir().unwrap();
    // A directory of the dropped user's, as /run/NAME would be: it may remove the pidfile and
    // write the restart report there.
    std::os::unix::fs::chown(
        dir.path(),
        Some(nobody.uid.as_raw()),
        Some(nobody.gid.as_raw()),
    )
    .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let ep = format!("tcp:{port}:interface=127.0.0.1");
    let (code, _, err) = run_in(dir.path(), &["-u", "nobody", "echo", "--listen", &ep]);
    assert_eq!(code, 0, "{err}");
    let pid: u32 = std::fs::read_to_string(dir.path().join("twistrs.pid"))
        .unwrap()
        .parse()
        .unwrap();
    let uids = proc_field(pid, "Uid");
    assert!(
        uids.split_whitespace().all(|u| u == nobody.uid.to_string()),
        "{uids}"
    );
    let gids = proc_field(pid, "Gid");
    assert!(
        gids.split_whitespace().all(|g| g == nobody.gid.to_string()),
        "{gids}"
    );
    let groups = proc_field(pid, "Groups");
    assert!(
        !groups.split_whitespace().any(|g| g == "0"),
        "root's groups are gone: {groups}"
    );
    let log = std::fs::metadata(dir.path().join("twistrs.log")).unwrap();
    assert_eq!(
        log.uid(),
        nobody.uid.as_raw(),
        "nobody reopens its log by name"
    );
    // The pidfile stays root's: nobody writes it only through the descriptor opened before
    // the drop, and can never make it name another process for root's `stop`.
    let root_owned = || {
        let md = std::fs::metadata(dir.path().join("twistrs.pid")).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o777), (0, 0o600), "root's, 0600");
    };
    root_owned();
    echo_once(port);
    // A restart as nobody: the successor writes its PID through the inherited descriptor.
    let (code, out, err) = run_in(dir.path(), &["restart"]);
    assert_eq!(code, 0, "{out} {err}");
    let new: u32 = std::fs::read_to_string(dir.path().join("twistrs.pid"))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(new, pid);
    assert!(out.contains(&format!("handed over to PID {new}")), "{out}");
    let uids = proc_field(new, "Uid");
    assert!(
        uids.split_whitespace().all(|u| u == nobody.uid.to_string()),
        "{uids}"
    );
    root_owned();
    echo_once(port);
    assert_eq!(run_in(dir.path(), &["stop"]).0, 0);
    assert!(
        !dir.path().join("twistrs.pid").exists(),
        "nobody could remove it"
    );
    // The successor runs as nobody from the first: twistd's "should we be root?" is for a
    // start by the wrong user, not for it.
    let log = std::fs::read_to_string(dir.path().join("twistrs.log")).unwrap();
    assert!(!log.contains("should we be root"), "{log}");
    let log = std::fs::read_to_string(dir.path().join("twistrs.log")).unwrap();
    assert!(
        log.contains(&format!("set uid/gid {}/{}", nobody.uid, nobody.gid)),
        "{log}"
    );
}

#[test]
fn socket_activation_without_fdnames_and_sd_notify() {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd = listener.as_raw_fd();
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" -n --pidfile= echo --listen systemd:domain=INET:index=0")
        .arg(BIN)
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("LISTEN_FDNAMES")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    pass_as_fd3(&mut cmd, fd);
    let mut child = cmd.spawn().unwrap();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 arrives");
    assert_eq!(&buf[..n], b"READY=1");
    drop(listener);
    echo_once(port);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let n = notify.recv(&mut buf).expect("STOPPING=1 arrives");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let end = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Under systemd (`Type=notify`, `NotifyAccess=all`, `ExecReload=twistrs restart`) a restart
/// tells systemd of the successor (`MAINPID=`, `READY=1`), and the predecessor that then
/// drains says nothing more: a STOPPING=1 from it put the unit into "stopping", and systemd
/// killed the successor at TimeoutStopSec. The successor's own stop says STOPPING=1.
#[test]
fn a_restart_under_sd_notify_says_stopping_only_when_the_service_stops() {
    for workers in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let notify_path = dir.path().join("notify.sock");
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let pidfile = dir.path().join("t.pid");
        let p = pidfile.to_str().unwrap();
        let mut child = Command::new(BIN)
            .args(["-n", "--pidfile", p, "--workers", workers])
            .args(["echo", "--listen", "tcp:0:interface=127.0.0.1"])
            .env("NOTIFY_SOCKET", &notify_path)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).expect("READY=1 arrives");
        assert_eq!(&buf[..n], b"READY=1", "--workers {workers}");
        let _stop = StopOnDrop(pidfile.clone());
        let (code, out, err) = run_in(dir.path(), &["restart", "--pidfile", p]);
        assert_eq!(code, 0, "{out} {err}");
        let new: u32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
        let n = notify.recv(&mut buf).expect("the successor's READY=1");
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            format!("MAINPID={new}\nREADY=1"),
            "--workers {workers}"
        );
        let end = Instant::now() + Duration::from_secs(15);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < end, "the predecessor drained and left");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Nothing from the predecessor, before or as it left.
        notify
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        if let Ok(n) = notify.recv(&mut buf) {
            panic!(
                "--workers {workers}: after the hand-over: {:?}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
        notify
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let (code, out, err) = run_in(dir.path(), &["stop", "--pidfile", p]);
        assert_eq!(code, 0, "{out} {err}");
        let n = notify.recv(&mut buf).expect("the successor's STOPPING=1");
        assert_eq!(&buf[..n], b"STOPPING=1", "--workers {workers}");
    }
}

/// `-u` naming the user twistrs already runs as is twistd's one-line warning, not an error,
/// and the start goes on; with `--workers`, said once for all the workers.
#[test]
fn uid_already_ours_is_twistds_warning() {
    let me = nix::unistd::Uid::current().to_string();
    let want = format!(
        "[twistrs.launcher#warn] tried to drop privileges and setuid {me} but uid is already \
         {me}; should we be root? Continuing."
    );
    let listen = "tcp:0:interface=127.0.0.1";
    for workers in ["1", "2"] {
        let srv = Server::start(&[
            "--pidfile=",
            "--workers",
            workers,
            "-u",
            &me,
            "echo",
            "--listen",
            listen,
        ]);
        let set = |l: &[String]| l.iter().filter(|l| l.contains("set uid/gid")).count();
        let n: usize = workers.parse().unwrap();
        srv.wait_until(|l| set(l) >= n, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no privilege step: {:?}", srv.lines()));
        let lines = srv.lines();
        let said = lines.iter().filter(|l| l.ends_with(&want)).count();
        assert_eq!(said, 1, "once, with --workers {workers}: {lines:?}");
        echo_once(srv.port());
    }
}

/// `-g` without `-u`: the process stays root, which reopens its log by name on SIGHUP
/// whoever owns it, so the log is left as the start found or made it (root's, as twistd
/// leaves it): handing it to the group would only change who may read it.
#[test]
fn gid_alone_leaves_the_log_to_root_and_a_reload_still_reopens_it() {
    let Some(nobody) =
        nobody_as_root("gid_alone_leaves_the_log_to_root_and_a_reload_still_reopens_it")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let gid = nobody.gid.to_string();
    let srv = Server::spawn_in(
        dir.path(),
        &[
            "--pidfile=",
            "-g",
            &gid,
            "-l",
            log.to_str().unwrap(),
            "echo",
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ],
    );
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let end = Instant::now() + Duration::from_secs(10);
    while !text().contains("set uid/gid") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(text().contains("set uid/gid"), "{}", text());
    let gids = proc_field(srv.pid(), "Gid");
    assert!(gids.split_whitespace().all(|g| g == gid), "{gids}");
    let md = std::fs::metadata(&log).unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 0), "root's, as twistd leaves it");
    // A rotation: the file is moved away and a reload makes a new one, as root.
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    srv.signal(libc::SIGHUP);
    let end = Instant::now() + Duration::from_secs(10);
    while !text().contains("Reopened log file") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(text().contains("Reopened log file"), "{}", text());
}

#[test]
fn chroot_and_euid() {
    let Some(nobody) = nobody_as_root("chroot_and_euid") else {
        return;
    };
    let jail = tempfile::tempdir().unwrap();
    let srv = Server::start(&[
        "--chroot",
        jail.path().to_str().unwrap(),
        "-u",
        "nobody",
        "--euid",
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    let root = std::fs::read_link(format!("/proc/{}/root", srv.pid())).unwrap();
    assert_eq!(root, jail.path().canonicalize().unwrap(), "--chroot");
    // The ports are logged once bound, before the ids change: wait for the change.
    assert!(srv.log_contains("set euid/egid"), "{:?}", srv.lines());
    // nobody's supplementary groups, not root's: twistd's switchUID calls initgroups
    // with --euid too.
    let groups = proc_field(srv.pid(), "Groups");
    let groups: Vec<&str> = groups.split_whitespace().collect();
    assert!(
        groups.contains(&nobody.gid.to_string().as_str()) && !groups.contains(&"0"),
        "{groups:?}"
    );
    let uids: Vec<String> = proc_field(srv.pid(), "Uid")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(uids[0], "0", "--euid keeps the real uid");
    assert_eq!(
        uids[1],
        nobody.uid.to_string(),
        "and sets the effective one"
    );
    echo_once(srv.port());
}

#[test]
fn a_uid_no_user_has_needs_a_gid() {
    // twistd refuses such a uid (its getpwuid fails); taking it alone kept root's group 0.
    let uid = (54321..60000)
        .find(|n| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*n))
                .ok()
                .flatten()
                .is_none()
        })
        .expect("a uid without a passwd entry")
        .to_string();
    let listen = "tcp:0:interface=127.0.0.1";
    let mut srv = Server::spawn(&["--pidfile=", "-u", &uid, "echo", "--listen", listen]);
    let st = srv.wait(Duration::from_secs(10));
    let lines = srv.lines().join("\n");
    assert_eq!(st.and_then(|s| s.code()), Some(1), "refused: {lines}");
    assert!(
        lines.contains(&format!("--uid {uid}: no user has that number")) && lines.contains("--gid"),
        "{lines}"
    );
    // With --gid it runs as that uid in that group alone (twistd fails here too).
    let Some(nobody) = nobody_as_root("a_uid_no_user_has_needs_a_gid") else {
        return;
    };
    let gid = nobody.gid.to_string();
    let srv = Server::start(&[
        "--pidfile=",
        "-u",
        &uid,
        "-g",
        &gid,
        "echo",
        "--listen",
        listen,
    ]);
    let pid = srv.pid();
    // The port is logged once bound, before the ids change: wait for the change.
    assert!(srv.log_contains("set uid/gid"), "{:?}", srv.lines());
    assert!(proc_field(pid, "Uid").split_whitespace().all(|u| u == uid));
    assert!(proc_field(pid, "Gid").split_whitespace().all(|g| g == gid));
    assert_eq!(
        proc_field(pid, "Groups"),
        gid,
        "no supplementary group of root's"
    );
    echo_once(srv.port());
}

#[test]
fn restart_of_a_chrooted_daemon_fails_at_once_and_the_old_one_serves() {
    if nobody_as_root("restart_of_a_chrooted_daemon_fails_at_once_and_the_old_one_serves").is_none()
    {
        return;
    }
    // Its report would be written inside the jail, where `twistrs restart` never looks: it
    // waited out its --timeout (30 s) and said "no answer".
    let jail = tempfile::tempdir().unwrap();
    // A daemon opens /dev/null in its jail (twistd's does too).
    std::fs::create_dir(jail.path().join("dev")).unwrap();
    let mknod = Command::new("mknod")
        .arg(jail.path().join("dev/null"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(mknod.success());
    let d = Daemon::start(&[
        "--chroot",
        jail.path().to_str().unwrap(),
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    let port = d.ports()[0];
    let started = Instant::now();
    let (code, out, err) = d.ctl(&["restart"]);
    assert_eq!(code, 1, "{out} {err}");
    assert!(
        err.contains("runs chrooted") && err.contains("stop and start it instead"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let (code, out, _) = d.ctl(&["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&d.pid.to_string()),
        "the old PID still serves: {out}"
    );
    echo_once(port);
}

#[test]
fn reload_reopens_the_log_of_the_lock_holder_and_says_when_nothing_runs() {
    let d = Daemon::start(&["echo", "--listen", "tcp:0:interface=127.0.0.1"]);
    let port = d.ports()[0];
    std::fs::rename(d.path("twistrs.log"), d.path("twistrs.log.1")).unwrap();
    let (code, out, err) = d.ctl(&["reload"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        out.contains(&format!("SIGHUP sent to PID {}", d.pid)),
        "{out}"
    );
    assert!(d.wait_log("Reopened log file"), "{}", d.log());
    echo_once(port);
    // The same process serves: a reload is no restart.
    let (code, out, _) = d.ctl(&["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&d.pid.to_string()), "{out}");
    assert_eq!(d.ctl(&["stop"]).0, 0);
    let (code, _, err) = d.ctl(&["reload"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not running"), "{err}");
}

/// One keep-alive HTTP client in a loop: (answered, lost) where lost is a request written
/// whole that got EOF or a reset before its whole response. Once `ending` is set, a refused
/// connection ends the loop (the server is going away), not a loss.
fn keep_alive_client(
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ending: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u32, Vec<String>) {
    let (mut ok, mut lost) = (0u32, Vec::new());
    let mut conn: Option<std::net::TcpStream> = None;
    let end = Instant::now() + Duration::from_secs(30);
    while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < end {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(c) => {
                    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    conn.insert(c)
                }
                Err(_) if ending.load(std::sync::atomic::Ordering::SeqCst) => break,
                Err(e) => {
                    lost.push(format!("connect: {e}"));
                    continue;
                }
            },
        };
        if c.write_all(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            .is_err()
        {
            // The server closed an idle connection before this request: it never left.
            conn = None;
            continue;
        }
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        let got_head = loop {
            match c.read(&mut b) {
                Ok(1) => {
                    head.push(b[0]);
                    if head.ends_with(b"\r\n\r\n") {
                        break true;
                    }
                }
                _ => break false,
            }
        };
        let mut body = [0u8; 10];
        if !got_head || c.read_exact(&mut body).is_err() {
            lost.push(format!("after {} bytes", head.len()));
            conn = None;
            continue;
        }
        ok += 1;
        if String::from_utf8_lossy(&head).contains("Connection: close") {
            conn = None;
        }
    }
    (ok, lost)
}

#[test]
fn restart_and_stop_under_keep_alive_load_lose_no_request() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "0123456789").unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    let d = Daemon::start(&[
        "web",
        "--path",
        &root,
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    let port = d.ports()[0];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ending = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (s, e) = (stop.clone(), ending.clone());
            std::thread::spawn(move || keep_alive_client(port, s, e))
        })
        .collect();
    let log_has = |n: usize| {
        let end = Instant::now() + Duration::from_secs(10);
        while d.log().matches("\"GET /a.txt HTTP/1.1\" 200").count() < n && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        d.log().matches("\"GET /a.txt HTTP/1.1\" 200").count()
    };
    for _ in 0..3 {
        // Requests are flowing before each restart.
        let served = log_has(0);
        log_has(served + 200);
        let (code, out, err) = d.ctl(&["restart"]);
        assert_eq!(code, 0, "{out} {err}");
    }
    let served = log_has(0);
    log_has(served + 200);
    // And a stop under the same load: every request that arrived is answered.
    ending.store(true, std::sync::atomic::Ordering::SeqCst);
    let (code, out, err) = d.ctl(&["stop"]);
    assert_eq!(code, 0, "{out} {err}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut ok, mut lost) = (0, Vec::new());
    for c in clients {
        let (o, l) = c.join().unwrap();
        ok += o;
        lost.extend(l);
    }
    assert!(ok > 100, "the load ran: {ok}");
    assert!(
        lost.is_empty(),
        "{} of {} requests lost: {lost:?}",
        lost.len(),
        ok
    );
}

/// User nobody (as root only) and a directory of root's that nobody may read but not write:
/// a systemd unit's RuntimeDirectory without User=.
fn nobody_and_a_root_dir(test: &str) -> Option<(nix::unistd::User, tempfile::TempDir)> {
    let nobody = nobody_as_root(test)?;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    Some((nobody, dir))
}

/// `twistrs -u nobody echo` as a daemon in `dir` (run to its parent's exit): the one start of
/// the tests below of what a daemon dropped to nobody may reach or be given.
fn echo_as_nobody(dir: &Path) -> (i32, String, String) {
    run_in(
        dir,
        &[
            "-u",
            "nobody",
            "echo",
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ],
    )
}

#[test]
fn a_dropped_daemon_in_a_directory_it_cannot_write_restarts_and_reports_its_stop() {
    // The pidfile's directory is root's (as a unit's RuntimeDirectory without User=): nobody
    // can neither write the restart's report there nor remove the pidfile at its exit.
    let Some((nobody, dir)) = nobody_and_a_root_dir(
        "a_dropped_daemon_in_a_directory_it_cannot_write_restarts_and_reports_its_stop",
    ) else {
        return;
    };
    let (code, _, err) = echo_as_nobody(dir.path());
    assert_eq!(code, 0, "{err}");
    let pidfile = dir.path().join("twistrs.pid");
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    let log = || std::fs::read_to_string(dir.path().join("twistrs.log")).unwrap_or_default();
    let port: u16 = log()
        .lines()
        .find_map(|l| l.split(" starting on ").nth(1)?.trim().parse().ok())
        .unwrap();
    echo_once(port);
    let started = Instant::now();
    let (code, out, err) = run_in(dir.path(), &["restart"]);
    assert_eq!(code, 0, "{out} {err}\n{}", log());
    let new: u32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    assert_ne!(new, pid);
    assert!(out.contains(&format!("handed over to PID {new}")), "{out}");
    // Told from the pidfile, not after waiting out restart's --timeout (30 s).
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        proc_field(new, "Uid")
            .split_whitespace()
            .all(|u| u == nobody.uid.to_string())
    );
    echo_once(port);
    assert_eq!(run_in(dir.path(), &["stop"]).0, 0);
    // Emptied, not removed: a clean stop, so `status` says "not running" (LSB 3), not "dead".
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap(), "");
    let (code, out, _) = run_in(dir.path(), &["status"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("is empty and unlocked"), "{out}");
    let (code, out, _) = run_in(dir.path(), &["status", "--json"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("\"status\":\"not running\""), "{out}");
    // A pidfile left naming a PID nobody holds is still "dead" (1).
    std::fs::write(&pidfile, new.to_string()).unwrap();
    assert_eq!(run_in(dir.path(), &["status"]).0, 1);
}

#[test]
fn a_dropped_daemon_in_a_directory_it_cannot_write_reports_a_failed_restart() {
    // As above, nobody cannot create the restart's report beside a pidfile in root's
    // directory: `twistrs restart`, as root, makes it for nobody, so a failed restart is told
    // at once with its reason, not after restart's --timeout (30 s) with "see the log".
    let Some((_, dir)) = nobody_and_a_root_dir(
        "a_dropped_daemon_in_a_directory_it_cannot_write_reports_a_failed_restart",
    ) else {
        return;
    };
    let quotes = dir.path().join("quotes.txt");
    std::fs::write(&quotes, "a quote\n").unwrap();
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "-u",
            "nobody",
            "qotd",
            "--file",
            quotes.to_str().unwrap(),
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let pidfile = dir.path().join("twistrs.pid");
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    let log = || std::fs::read_to_string(dir.path().join("twistrs.log")).unwrap_or_default();
    std::fs::remove_file(&quotes).unwrap();
    let started = Instant::now();
    let (code, out, err) = run_in(dir.path(), &["restart"]);
    assert_eq!(code, 1, "{out} {err}\n{}", log());
    assert!(
        err.contains("quotes file") && err.contains("keeps serving"),
        "{err}\n{}",
        log()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !dir.path().join("twistrs.pid.restart").exists(),
        "read and removed"
    );
    let (code, out, _) = run_in(dir.path(), &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&pid.to_string()),
        "the old PID still serves: {out}"
    );
    assert_eq!(run_in(dir.path(), &["stop"]).0, 0);
}

#[test]
fn stop_waits_out_the_services_own_drain_before_sigkill() {
    // A relay whose ends never close holds the drain for its whole --shutdown-timeout, here
    // 12 s, past the fixed 10 s `stop` used to wait. `stop` without --timeout reads the
    // service's own and waits for that and a margin: the daemon closes what is left itself,
    // logs its last lines and removes its pidfile; it is not SIGKILLed.
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dest = backend.local_addr().unwrap().port().to_string();
    let d = Daemon::start(&[
        "--shutdown-timeout",
        "12",
        "portforward",
        "-p",
        "tcp:0:interface=127.0.0.1",
        "-h",
        "127.0.0.1",
        "-d",
        &dest,
    ]);
    let port = d.ports()[0];
    let _client = connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let (_held, _) = backend.accept().unwrap();
    let (code, out, err) = d.ctl(&["stop"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("twistrs stopped"), "not killed: {out} {err}");
    let log = d.log();
    assert!(log.contains("Shutdown deadline passed: closing"), "{log}");
    assert!(log.contains("Server Shut Down."), "{log}");
    assert!(!d.path("twistrs.pid").exists());
}

/// Timeouts too long for the clock are "never give up", not a panic after the signal went:
/// a daemon started with `--shutdown-timeout 18446744073709551615` restarts with
/// `restart --timeout 1e300`, and `stop`, reading that drain from its command line, stops it
/// without a word on stderr; `stop --timeout 1e19` (a `Duration`, but past any `Instant`)
/// stops another.
#[test]
fn stop_and_restart_with_timeouts_past_any_clock() {
    let d = Daemon::start(&[
        "--shutdown-timeout",
        "18446744073709551615",
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    echo_once(d.ports()[0]);
    let (code, out, err) = d.ctl(&["restart", "--timeout", "1e300"]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(out.contains("handed over to PID"), "{out}");
    echo_once(d.ports()[0]);
    let (code, out, err) = d.ctl(&["stop"]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(out.contains("twistrs stopped"), "{out}");
    assert!(!d.log().contains("panicked"), "{}", d.log());

    let d = Daemon::start(&["echo", "--listen", "tcp:0:interface=127.0.0.1"]);
    let (code, out, err) = d.ctl(&["stop", "--timeout", "1e19"]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(out.contains("twistrs stopped"), "{out}");
}

/// `stop` without --timeout waits for the service's own --shutdown-timeout, read from its
/// command line in /proc; when that cannot be read or parsed (here the lock's holder is a
/// stand-in whose command line is Python's), it says what it assumes instead, in one line.
#[test]
fn stop_says_when_it_cannot_tell_the_services_shutdown_timeout() {
    const STANDIN: &str = r#"
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, str(os.getpid()).encode(), 0)
print("ready", flush=True)
end = time.time() + 60
while time.time() < end:
    time.sleep(0.05)
"#;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("twistrs.pid");
    let mut standin = python_ready(STANDIN, &pidfile);
    let pid = standin.id();
    let (code, out, err) = run_in(dir.path(), &["stop"]);
    let _ = standin.kill();
    let _ = standin.wait();
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        out.contains(&format!("twistrs stopped (PID {pid})")),
        "{out}"
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with(&format!(
            "twistrs stop: cannot tell PID {pid}'s --shutdown-timeout (/proc/{pid}/cmdline: "
        )),
        "{err}"
    );
    assert!(
        lines[0].ends_with("assuming the default, 10 s: SIGKILL after 20 s"),
        "{err}"
    );
}

#[test]
fn an_empty_logfile_is_the_default_log_as_in_twistd() {
    // `twistd --logfile= ...` (a wrapper's empty $LOGFILE) logs where no -l would.
    let d = Daemon::start(&[
        "--logfile=",
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    assert!(d.wait_log("starting on"), "the daemon logs to twistrs.log");
    echo_once(d.ports()[0]);
    let mut s = Server::start(&[
        "--logfile=",
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    assert!(s.log_contains("starting up"), "-n logs to stdout");
    s.term();
}

#[test]
fn a_log_link_the_service_user_planted_is_not_followed_and_nothing_is_given_away() {
    let test = "a_log_link_the_service_user_planted_is_not_followed_and_nothing_is_given_away";
    let Some(nobody) = nobody_as_root(test) else {
        return;
    };
    let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    // The log directory is the service user's (as Debian's /var/log/twistrs is), so that
    // user can put a link where the next start (root) opens its log.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret");
    std::fs::write(&secret, "root's\n").unwrap();
    let log = dir.path().join("twistrs.log");
    std::os::unix::fs::symlink(&secret, &log).unwrap();
    std::os::unix::fs::lchown(&log, Some(uid), Some(gid)).unwrap();
    let (code, out, err) = echo_as_nobody(dir.path());
    assert_eq!(code, 1, "{out} {err}");
    assert!(
        err.contains("twistrs.log") && err.contains("symbolic link owned by uid"),
        "{err}"
    );
    let md = std::fs::metadata(&secret).unwrap();
    assert_eq!(md.uid(), 0, "the link's target is still root's");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root's\n");
    assert!(!dir.path().join("twistrs.pid").exists());

    // A link of root's is the operator's: followed. A log that was there (root's) is not
    // given away, and the start says a reload could not reopen it as that user.
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&secret, &log).unwrap();
    let (code, out, err) = echo_as_nobody(dir.path());
    assert_eq!(code, 0, "{out} {err}");
    let pid: u32 = std::fs::read_to_string(dir.path().join("twistrs.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(std::fs::metadata(&secret).unwrap().uid(), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let warned = |t: &str| t.contains("reload will not be able to reopen the log file");
    while !warned(&std::fs::read_to_string(&secret).unwrap()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&secret).unwrap();
    assert!(text.starts_with("root's\n") && warned(&text), "{text}");
    assert_eq!(run_in(dir.path(), &["stop"]).0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}
