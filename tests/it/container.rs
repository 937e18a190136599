//! twistrs as the first process of a container: PID 1 of a PID namespace of its own
//! (`unshare --pid --fork` with /proc mounted anew, as `docker run IMAGE twistrs -n ...` has
//! it). Orphans of the namespace are reaped, a stop drains and exits with the signal's
//! status, and what PID 1 cannot do (a restart's re-exec, a daemon's fork) is refused with a
//! message instead of ending the container.

use std::time::{Duration, Instant};

use crate::support::*;

/// The wrapper that runs what follows it as PID 1 of a new PID namespace, with /proc of
/// that namespace; None, after a skip line, where namespaces cannot be made.
fn pid1(test: &str) -> Option<Vec<String>> {
    unshared(
        test,
        "-fpm",
        "mount -t proc proc /proc && exec \"$0\" \"$@\"",
        "a PID namespace",
    )
}

/// The PID (as we see it) of the twistrs that `unshare` (PID `outer`) runs as PID 1.
fn inner(outer: u32) -> u32 {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Some((pid, _, _)) = children(outer)
            .into_iter()
            .find(|(_, _, argv)| argv.first().is_some_and(|a| a == BIN))
        {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no twistrs under unshare (PID {outer})");
}

/// SIGKILL to the twistrs a test runs as PID 1 (and so to its whole namespace) when the test
/// ends, passed or failed: a killed `unshare` leaves its child running.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if argv(self.0).first().is_some_and(|a| a == BIN) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0 as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn zombies(parent: u32) -> usize {
    children(parent)
        .into_iter()
        .filter(|(_, st, _)| *st == 'Z')
        .count()
}

#[test]
fn as_pid1_orphans_are_reaped_and_a_stop_exits_143() {
    let test = "as_pid1_orphans_are_reaped_and_a_stop_exits_143";
    let Some(wrapper) = pid1(test) else { return };
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    // A program that leaves 20 orphans behind (each subshell exits at once; its `sleep` is
    // handed to PID 1), then stays: as inetd's scripts that background a child, or a
    // program that daemonizes.
    let script = "for i in $(seq 20); do (sleep 0.05 &); done; echo left; exec sleep 1000";
    let mut srv = Server::spawn_wrapped(
        &wrapper,
        &[
            "--pidfile=",
            "procmon",
            "--name",
            "leaver",
            "sh",
            "-c",
            script,
        ],
    );
    assert!(srv.log_contains("[leaver] left"), "{:?}", srv.lines());
    let pid = inner(srv.pid());
    let _kill = KillOnDrop(pid);
    // The orphans exit 0.05 s after they were left; twistd (and twistrs before) left every
    // one a zombie, for good.
    let orphan = |argv: &[String]| argv == ["sleep", "0.05"];
    let end = Instant::now() + Duration::from_secs(10);
    while children(pid).iter().any(|(_, _, a)| orphan(a)) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let end = Instant::now() + Duration::from_secs(5);
    while zombies(pid) > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(zombies(pid), 0, "{:?}", children(pid));
    // The program procmon runs is still its own, and still running.
    assert!(
        children(pid)
            .iter()
            .any(|(_, st, argv)| *st != 'Z' && argv.first().is_some_and(|a| a == "sleep")),
        "{:?}",
        children(pid)
    );
    // docker stop: SIGTERM from outside the namespace. A drain, and 143 (unshare exits with
    // its child's status), as outside a container; twistd exits 0 there, its re-raise ignored.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = srv
        .wait(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("did not stop: {:?}", srv.lines()));
    assert_eq!(st.code(), Some(143), "{:?}", srv.lines());
    assert!(srv.log_contains("Server Shut Down."), "{:?}", srv.lines());
}

#[test]
fn as_pid1_a_restart_is_refused_and_it_serves_on() {
    let test = "as_pid1_a_restart_is_refused_and_it_serves_on";
    let Some(wrapper) = pid1(test) else { return };
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    for workers in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let pf = format!("--pidfile={}", dir.path().join("t.pid").display());
        let mut srv = Server::start_wrapped(
            &wrapper,
            &[&pf, "--workers", workers, "echo", "--listen", "tcp:0"],
        );
        let pid = inner(srv.pid());
        let _kill = KillOnDrop(pid);
        let _kill = KillOnDrop(pid);
        // The pidfile says 1 (the PID in its namespace), read from outside: the lock holder,
        // the same process, is no "other process" to warn of.
        let (code, out, err) = run(&["status", &pf]);
        assert_eq!(code, 0, "{out} {err}");
        assert!(out.contains(&format!("PID {pid}")), "{out}");
        assert_eq!(err, "", "{out}");
        // A restart hands over to a new process and the old one exits: as PID 1 that ends
        // the namespace, the new process with it (the container stopped, exit 0, and
        // `twistrs restart` run in it killed). `twistrs restart` says so at once.
        let (code, _, err) = run(&["restart", &pf]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("PID 1 of its PID namespace"), "{err}");
        // SIGUSR2 itself (`kill -USR2 1` in the container): refused in the log.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGUSR2,
        )
        .unwrap();
        assert!(
            srv.log_contains("Restart failed: PID 1 of its PID namespace"),
            "{:?}",
            srv.lines()
        );
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            stat(pid).is_some_and(|(st, _)| st != 'Z'),
            "{:?}",
            srv.lines()
        );
        let mut c = connect(srv.addr());
        send(&mut c, b"still");
        assert_eq!(read_n(&mut c, 5), b"still");
        drop(c);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let st = srv
            .wait(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("did not stop: {:?}", srv.lines()));
        assert_eq!(st.code(), Some(143), "{:?}", srv.lines());
    }
}

#[test]
fn as_pid1_daemonizing_is_refused_with_a_hint() {
    let test = "as_pid1_daemonizing_is_refused_with_a_hint";
    let Some(wrapper) = pid1(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    // `docker run IMAGE twistrs echo ...` without -n: twistd forks, exits 0, and its daemon
    // is killed with the namespace at once, a container that stops at once, "successfully".
    let out = std::process::Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .args([BIN, "echo", "--listen", "tcp:0"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("PID 1 of its PID namespace"), "{err}");
    assert!(err.contains("-n (--nodaemon)"), "{err}");
    // Nothing of a start's making is left: no pidfile, no log.
    assert!(!dir.path().join("twistrs.pid").exists());
    assert!(!dir.path().join("twistrs.log").exists());
}

#[test]
fn as_pid1_a_stop_from_inside_says_it_ends_with_the_namespace() {
    let test = "as_pid1_a_stop_from_inside_says_it_ends_with_the_namespace";
    let Some(wrapper) = pid1(test) else { return };
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    let pf = format!("--pidfile={}", dir.path().join("t.pid").display());
    let mut srv = Server::start_wrapped(&wrapper, &[&pf, "echo", "--listen", "tcp:0"]);
    let pid = inner(srv.pid());
    let _kill = KillOnDrop(pid);
    // `docker exec CONTAINER twistrs stop`: in the namespace, killed with it once PID 1 is
    // gone; it says so first, so its 137 is no surprise.
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-p", "-m", BIN, "stop", &pf])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("stopping PID 1, the first process"),
        "{said} {out:?}"
    );
    let st = srv
        .wait(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("did not stop: {:?}", srv.lines()));
    assert_eq!(st.code(), Some(143), "{:?}", srv.lines());
    assert!(srv.log_contains("Server Shut Down."), "{:?}", srv.lines());
}

#[test]
fn as_pid1_children_left_by_the_entrypoint_are_reaped() {
    let test = "as_pid1_children_left_by_the_entrypoint_are_reaped";
    // An entrypoint script that starts a helper in the background, then execs twistrs: the
    // helper is twistrs' child, exited before twistrs could hear its SIGCHLD.
    let Some(wrapper) = unshared(
        test,
        "-fpm",
        "mount -t proc proc /proc && { true & exec \"$0\" \"$@\"; }",
        "a PID namespace",
    ) else {
        return;
    };
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut srv = Server::start_wrapped(&wrapper, &["--pidfile=", "echo", "--listen", "tcp:0"]);
    let pid = inner(srv.pid());
    let _kill = KillOnDrop(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(zombies(pid), 0, "{:?}", children(pid));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        srv.wait(Duration::from_secs(15)).and_then(|s| s.code()),
        Some(143)
    );
}
