//! The pidfile hardened (issue 8): never opened through a link or as a non-file, the restart
//! report beside it never written through a planted link, and `stop`, `status` and `restart`
//! aimed at the process holding the lock, whatever PID the file holds.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::*;

/// A foreground `twistrs -n --pidfile DIR/t.pid ARGS...`, DIR being the test's directory.
struct Foreground {
    srv: Server,
    dir: tempfile::TempDir,
    pidfile: PathBuf,
}

impl Foreground {
    fn start(args: &[&str]) -> Foreground {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("t.pid");
        let mut full = vec!["--pidfile", pidfile.to_str().unwrap()];
        full.extend_from_slice(args);
        let srv = Server::start(&full);
        Foreground { srv, dir, pidfile }
    }

    /// `twistrs CMD --pidfile DIR/t.pid ARGS...`
    fn ctl(&self, cmd: &str, args: &[&str]) -> (i32, String, String) {
        let mut full = vec![cmd, "--pidfile", self.pidfile.to_str().unwrap()];
        full.extend_from_slice(args);
        run_in(self.dir.path(), &full)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// An unrelated process of the test's, which no command may touch; killed by PID when dropped.
struct Bystander(std::process::Child);

impl Bystander {
    fn start() -> Bystander {
        Bystander(
            std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("sleep"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const ECHO: [&str; 3] = ["echo", "--listen", "tcp:0:interface=127.0.0.1"];

#[test]
fn a_pidfile_that_is_a_link_fifo_or_directory_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let link = dir.path().join("link.pid");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let fifo = dir.path().join("fifo.pid");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let sub = dir.path().join("dir.pid");
    std::fs::create_dir(&sub).unwrap();
    for (p, what) in [
        (&link, "a symbolic link"),
        (&fifo, "a FIFO"),
        (&sub, "a directory"),
    ] {
        let ps = p.to_str().unwrap();
        let want = format!("pidfile {ps} is {what}, not a regular file");
        for daemon in [true, false] {
            let mut args = vec!["--pidfile", ps];
            if !daemon {
                args.insert(0, "-n");
            }
            args.extend_from_slice(&ECHO);
            let (code, _, err) = run_in(dir.path(), &args);
            assert_eq!(code, 1, "{args:?}: {err}");
            assert!(err.contains(&want), "{args:?}: {err}");
        }
        for (cmd, status) in [("status", 4), ("stop", 1), ("restart", 1)] {
            let (code, _, err) = run_in(dir.path(), &[cmd, "--pidfile", ps]);
            assert_eq!(code, status, "{cmd} on {what}: {err}");
            assert!(err.contains(&want), "{cmd}: {err}");
        }
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    assert!(
        !dir.path().join("twistrs.log").exists(),
        "refused before the log"
    );
}

#[test]
fn the_restart_report_is_never_written_through_a_planted_link() {
    let mut fg = Foreground::start(&ECHO);
    let victim = fg.path("victim");
    std::fs::write(&victim, "precious").unwrap();
    let tmp = fg.path("t.pid.restart.tmp");
    std::os::unix::fs::symlink(&victim, &tmp).unwrap();
    let (code, out, err) = fg.ctl("restart", &[]);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let new = std::fs::read_to_string(&fg.pidfile).unwrap();
    assert!(out.contains(&format!("handed over to PID {new}")), "{out}");
    assert!(!tmp.exists() && !fg.path("t.pid.restart").exists());
    let old = fg
        .srv
        .wait(Duration::from_secs(10))
        .expect("the old process left");
    assert!(old.success(), "{old:?}");
    stop_successor(&fg);
}

#[test]
fn a_new_pidfile_follows_the_umask_of_the_run() {
    use std::os::unix::fs::MetadataExt;
    // Whatever this test process's umask is, --umask decides, as it does for twistd.
    // `0o` as twistd's `int(v, 8)` takes it.
    for (umask, want) in [("000", 0o666), ("027", 0o640), ("0o022", 0o644)] {
        let mut args = vec!["--umask", umask];
        args.extend_from_slice(&ECHO);
        let mut fg = Foreground::start(&args);
        let mode = std::fs::metadata(&fg.pidfile).unwrap().mode() & 0o777;
        assert_eq!(mode, want, "--umask {umask}");
        fg.srv.term();
    }
}

/// A stale pidfile (no process holds its lock) is removed and made anew, as twistd does: used
/// in place it kept its old owner and mode, another user's file writable by all, now naming
/// a root daemon.
#[test]
fn a_stale_pidfile_is_made_anew_with_the_owner_and_mode_of_the_run() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("t.pid");
    std::fs::write(&pidfile, "999999").unwrap();
    std::fs::set_permissions(&pidfile, std::fs::Permissions::from_mode(0o666)).unwrap();
    let root = nix::unistd::geteuid().is_root();
    if root {
        std::os::unix::fs::chown(&pidfile, Some(65534), Some(65534)).unwrap();
    }
    let p = pidfile.to_str().unwrap();
    let mut args = vec!["--umask", "077", "--pidfile", p];
    args.extend_from_slice(&ECHO);
    let mut srv = Server::start(&args);
    let md = std::fs::metadata(&pidfile).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o600);
    if root {
        assert_eq!((md.uid(), md.gid()), (0, 0));
    }
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap(),
        srv.pid().to_string()
    );
    assert!(
        srv.log_contains("Replacing stale pidfile"),
        "{:?}",
        srv.lines()
    );
    srv.term();
    assert!(!pidfile.exists(), "removed at the exit");
}

#[test]
fn a_start_refused_by_the_pidfile_changes_no_file_of_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let domain = dir.path().join("example.com");
    let dom = format!("example.com={}", domain.display());
    let mail = |user: &'static str| {
        let listen = "tcp:0:interface=127.0.0.1";
        vec![
            "mail",
            "-d",
            dom.as_str(),
            "-u",
            user,
            "-s",
            listen,
            "-p",
            listen,
        ]
    };
    let fg = Foreground::start(&mail("joe=one"));
    let passwd = domain.join("passwd").join("am9l_");
    assert_eq!(std::fs::read_to_string(&passwd).unwrap(), "one");
    let pidfile = fg.pidfile.to_str().unwrap();
    for foreground in [true, false] {
        let mut args = vec!["--pidfile", pidfile];
        if foreground {
            args.insert(0, "-n");
        }
        args.extend(mail("joe=two"));
        let (code, _, err) = run_in(fg.dir.path(), &args);
        assert_eq!(code, 1, "{err}");
        let want = format!("Another twistrs server is running, PID {}", fg.srv.pid());
        assert!(err.contains(&want), "{err}");
        assert_eq!(
            std::fs::read_to_string(&passwd).unwrap(),
            "one",
            "the refused start (-n: {foreground}) rewrote the password"
        );
    }
}

#[test]
fn stop_signals_the_lock_holder_not_the_pid_the_file_names() {
    let mut fg = Foreground::start(&ECHO);
    let mut other = Bystander::start();
    std::fs::write(&fg.pidfile, other.pid().to_string()).unwrap();
    let (code, out, err) = fg.ctl("stop", &["--timeout", "5"]);
    assert_eq!(code, 0, "{out} {err}");
    let want = format!(
        "names PID '{}', but PID {} holds its lock",
        other.pid(),
        fg.srv.pid()
    );
    assert!(err.contains(&want), "{err}");
    assert!(
        out.contains(&format!("stopped (PID {})", fg.srv.pid())),
        "{out}"
    );
    use std::os::unix::process::ExitStatusExt;
    let st = fg.srv.wait(Duration::from_secs(10)).expect("stopped");
    assert_eq!(st.signal(), Some(15), "by stop's SIGTERM");
    assert!(other.alive(), "the PID in the file was not signalled");
}

#[test]
fn status_names_the_lock_holder_whatever_the_file_holds() {
    let mut fg = Foreground::start(&ECHO);
    let mut other = Bystander::start();
    let daemon = fg.srv.pid();
    for content in [other.pid().to_string(), "-1".into(), "0".into(), "x".into()] {
        std::fs::write(&fg.pidfile, &content).unwrap();
        let (code, out, err) = fg.ctl("status", &[]);
        assert_eq!(code, 0, "{content:?}: {out} {err}");
        assert!(out.contains(&format!("running (PID {daemon},")), "{out}");
        let want = format!("names PID '{content}', but PID {daemon} holds its lock");
        assert!(err.contains(&want), "{err}");
    }
    // A refused start names the holder too.
    let mut again = vec!["-n", "--pidfile", fg.pidfile.to_str().unwrap()];
    again.extend_from_slice(&ECHO);
    let (code, _, err) = run_in(fg.dir.path(), &again);
    assert_eq!(code, 1);
    let want = format!("Another twistrs server is running, PID {daemon}\n");
    assert!(err.contains(&want), "{err}");
    std::fs::write(&fg.pidfile, "").unwrap();
    let (code, out, err) = fg.ctl("status", &[]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(err.contains("is empty, but PID"), "{err}");
    // The file names the holder again: nothing to report.
    std::fs::write(&fg.pidfile, daemon.to_string()).unwrap();
    let (code, out, err) = fg.ctl("status", &[]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    // A pidfile saying -1 (issue 8.22) stops nothing else either.
    std::fs::write(&fg.pidfile, "-1").unwrap();
    let (code, out, err) = fg.ctl("stop", &["--timeout", "5"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(fg.srv.wait(Duration::from_secs(10)).is_some(), "stopped");
    assert!(other.alive());
    assert_eq!(fg.ctl("status", &[]).0, 3, "removed at its exit");
}

#[test]
fn restart_signals_the_lock_holder_not_the_pid_the_file_names() {
    let mut fg = Foreground::start(&ECHO);
    let mut other = Bystander::start();
    let daemon = fg.srv.pid();
    std::fs::write(&fg.pidfile, other.pid().to_string()).unwrap();
    let (code, out, err) = fg.ctl("restart", &["--timeout", "10"]);
    assert_eq!(code, 0, "{out} {err}");
    let want = format!(
        "names PID '{}', but PID {daemon} holds its lock",
        other.pid()
    );
    assert!(err.contains(&want), "{err}");
    let new = std::fs::read_to_string(&fg.pidfile).unwrap();
    assert!(
        out.contains(&format!("PID {daemon} handed over to PID {new}")),
        "{out}"
    );
    let old = fg
        .srv
        .wait(Duration::from_secs(10))
        .expect("the old one left");
    assert!(old.success(), "{old:?}");
    assert!(other.alive(), "the PID in the file was not signalled");
    stop_successor(&fg);
}

/// Under `-n` the log goes to stdout (`-l -`, or no `-l`): a restart's successor logs on
/// there, where systemd's journal (the shipped `Type=notify` units) or the terminal reads it,
/// rather than to /dev/null or to a `twistrs.log` nobody asked for.
#[test]
fn a_foreground_restart_successor_logs_to_the_same_stdout() {
    for logfile in [&["-l", "-"][..], &[]] {
        let mut args = logfile.to_vec();
        args.extend_from_slice(&ECHO);
        let mut fg = Foreground::start(&args);
        let _stop = StopOnDrop(fg.pidfile.clone());
        let (code, out, err) = fg.ctl("restart", &["--timeout", "10"]);
        assert_eq!(code, 0, "{out} {err}");
        let new = std::fs::read_to_string(&fg.pidfile).unwrap();
        let started = |l: &[String]| l.iter().filter(|x| x.contains("Echo starting on")).count();
        assert!(
            fg.srv
                .wait_until(|l| started(l) == 2, Duration::from_secs(10))
                .is_some(),
            "{logfile:?}: the successor's start on our stdout: {:?}",
            fg.srv.lines()
        );
        assert!(
            fg.srv.wait(Duration::from_secs(10)).is_some(),
            "handed over"
        );
        stop_successor(&fg);
        let shut = |l: &[String]| l.iter().any(|x| x.ends_with("Server Shut Down."));
        assert!(
            fg.srv.wait_until(shut, Duration::from_secs(10)).is_some(),
            "{logfile:?}: PID {new}'s stop on our stdout: {:?}",
            fg.srv.lines()
        );
    }
}

/// Stops what a restart left serving (the foreground process handed over and exited).
fn stop_successor(fg: &Foreground) {
    let (code, out, err) = fg.ctl("stop", &[]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(!fg.pidfile.exists(), "removed at the successor's exit");
}

/// A successor that writes its PID into the pidfile and dies before the 2 s that `restart`
/// gives the report (which a daemon that dropped privileges may be unable to write) handed
/// nothing over: `restart` must not report it as the new server. Played by a stand-in
/// holding the lock (Python), whose SIGUSR2 forks a child that shares the locked file,
/// writes its PID there, and exits after half a second; no report is ever written.
#[test]
fn restart_does_not_report_a_successor_that_died_after_writing_its_pid() {
    const STANDIN: &str = r#"
import fcntl, os, signal, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
def name_me():
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
name_me()
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
def usr2(*_):
    if os.fork() == 0:
        name_me()
        time.sleep(0.5)
        os._exit(1)
signal.signal(signal.SIGUSR2, usr2)
print("ready", flush=True)
end = time.time() + 60
while time.time() < end:
    time.sleep(0.05)
"#;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("t.pid");
    let mut standin = python_ready(STANDIN, &pidfile);
    let old = std::fs::read_to_string(&pidfile).unwrap();
    let path = pidfile.to_str().unwrap();
    let (code, out, err) = run_in(
        dir.path(),
        &["restart", "--pidfile", path, "--timeout", "6"],
    );
    let named = std::fs::read_to_string(&pidfile).unwrap();
    let _ = standin.kill();
    let _ = standin.wait();
    assert_ne!(named, old, "the child wrote its PID: {out} {err}");
    assert!(!out.contains("handed over"), "{out}");
    assert_eq!(code, 1, "{out} {err}");
    assert!(err.contains("no answer"), "{err}");
}

#[test]
fn a_pidfile_name_need_not_be_utf8() {
    // twistd takes any bytes for --pidfile; so do the launcher and `status`.
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"t\xff.pid");
    let status = || {
        std::process::Command::new(BIN)
            .arg("status")
            .arg("--pidfile")
            .arg(name)
            .current_dir(dir.path())
            .output()
            .expect("run status")
    };
    let mut srv = std::process::Command::new(BIN)
        .args(["-n", "--pidfile"])
        .arg(name)
        .args(ECHO)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn twistrs");
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while !dir.path().join(name).exists() && std::time::Instant::now() < end {
        if let Ok(Some(st)) = srv.try_wait() {
            panic!("twistrs exited: {st}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = status();
    let _ = srv.kill();
    let _ = srv.wait();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
