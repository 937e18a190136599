//! Start-up errors, signals and logs: what an operator scripting twistrs relies on.

use std::time::Duration;

use crate::support::*;

#[test]
fn sigterm_with_clients_connected_drains_and_exits_143() {
    let mut srv = Server::start(&["echo", "--listen", "tcp:0:interface=127.0.0.1"]);
    let mut clients: Vec<_> = (0..5).map(|_| connect(srv.addr())).collect();
    for c in &mut clients {
        send(c, b"hi");
        assert_eq!(read_n(c, 2), b"hi");
    }
    let status = srv.term();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(15),
        "re-raised SIGTERM: a shell sees 143"
    );
    for c in &mut clients {
        assert_eq!(read_to_end(c), b"", "each client was closed cleanly");
    }
    let lines = srv.lines();
    let order = [
        "Received SIGTERM, shutting down.",
        "(TCP Port",
        "Main loop terminated.",
        "Server Shut Down.",
    ];
    let pos: Vec<usize> = order
        .iter()
        .map(|w| {
            lines
                .iter()
                .position(|l| l.contains(w))
                .unwrap_or_else(|| panic!("{w}: {lines:?}"))
        })
        .collect();
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]),
        "in twistd's order: {lines:?}"
    );
}

#[test]
fn a_second_sigterm_closes_a_busy_connection_at_once_and_says_so() {
    let mut srv = Server::start(&[
        "--shutdown-timeout",
        "60",
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    let mut c = connect(srv.addr());
    srv.signal(15);
    assert!(srv.log_contains("Received SIGTERM, shutting down."));
    // Busy through the drain's idle second: the drain waits for it.
    for _ in 0..8 {
        send(&mut c, b"x");
        assert_eq!(read_n(&mut c, 1), b"x");
        std::thread::sleep(Duration::from_millis(200));
    }
    let second = std::time::Instant::now();
    srv.signal(15);
    assert_eq!(read_to_end(&mut c), b"", "closed by the second signal");
    let st = srv.wait(Duration::from_secs(10)).expect("stops");
    assert!(
        second.elapsed() < Duration::from_secs(10),
        "at once, not after the 60 s deadline"
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(15));
    let lines = srv.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Received SIGTERM again: closing 1 connection(s) now.")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("Shutdown deadline passed")),
        "no deadline passed: {lines:?}"
    );
}

#[test]
fn sigint_exits_130_style() {
    let mut srv = Server::start(&["discard", "--listen", "tcp:0:interface=127.0.0.1"]);
    srv.signal(2);
    let st = srv.wait(Duration::from_secs(10)).expect("stops");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(2));
    assert!(srv.log_contains("Received SIGINT, shutting down."));
}

#[test]
fn port_in_use_is_one_line_naming_the_address() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let (code, _, err) = run(&[
        "-n",
        "echo",
        "--listen",
        &format!("tcp:{port}:interface=127.0.0.1"),
    ]);
    assert_eq!(code, 1);
    let want = format!("twistrs: Couldn't listen on 127.0.0.1:{port}: Address already in use");
    assert!(err.lines().any(|l| l.starts_with(&want)), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn an_unresolvable_interface_name_is_one_line_naming_the_endpoint() {
    let (code, _, err) = run(&[
        "-n",
        "echo",
        "--listen",
        "tcp:0:interface=no-such-host.invalid",
    ]);
    assert_eq!(code, 1, "{err}");
    let want = "twistrs: Couldn't listen on tcp:0:interface=no-such-host.invalid: \
                cannot resolve interface 'no-such-host.invalid' to an IPv4 address";
    assert!(err.starts_with(want), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn interface_may_be_a_host_name_looked_up_in_etc_hosts() {
    let test = "interface_may_be_a_host_name_looked_up_in_etc_hosts";
    let dir = tempfile::tempdir().unwrap();
    let Some(wrapper) = private_hosts(
        test,
        dir.path(),
        "127.0.0.1 localhost\n127.0.0.2 twistrs-it-name\n::1 twistrs-it-name6\n",
        None,
    ) else {
        return;
    };
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let srv = Server::start_wrapped(
        &wrapper,
        &[
            "echo",
            "--listen",
            "tcp:0:interface=twistrs-it-name",
            "--listen",
            "tcp6:0:interface=twistrs-it-name6",
            // An IPv4 endpoint on a name with only a `::1` line: the resolver's IPv4 answer
            // (glibc's 127.0.0.1), as twistd's bind gets it.
            "--listen",
            "tcp:0:interface=twistrs-it-name6",
        ],
    );
    let ports = srv.ports();
    assert_eq!(ports.len(), 3, "{:?}", srv.lines());
    // The name's own address, not loopback in general: 127.0.0.1 is not listened on.
    for addr in [
        std::net::SocketAddr::from(([127, 0, 0, 2], ports[0])),
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, ports[1])),
        std::net::SocketAddr::from(([127, 0, 0, 1], ports[2])),
    ] {
        let mut c = connect(addr);
        send(&mut c, b"ping");
        assert_eq!(read_n(&mut c, 4), b"ping", "{addr}");
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", ports[0])).is_err());
}

#[test]
fn unix_socket_lock_refuses_a_live_owner_and_replaces_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let ep = format!("unix:{}", sock.display());
    // A stale socket file and a lock naming a dead PID: both replaced.
    let stale = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(stale);
    std::os::unix::fs::symlink("999999", dir.path().join("s.sock.lock")).unwrap();
    let mut first = Server::start(&["echo", "--listen", &ep]);
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    send(&mut c, b"ok");
    assert_eq!(read_n(&mut c, 2), b"ok");
    // A second server on the same path: the live lock refuses it.
    let (code, _, err) = run(&["-n", "echo", "--listen", &ep]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Couldn't listen on") && err.contains("locked by a running process"),
        "{err}"
    );
    first.term();
    assert!(!sock.exists());
}

#[test]
fn what_a_plugin_logs_while_it_is_built_reaches_the_log_file() {
    let warning = "[twistrs.mail#warn] no -d domain: every recipient will be refused";
    let mail = [
        "mail",
        "-s",
        "tcp:0:interface=127.0.0.1",
        "-p",
        "tcp:0:interface=127.0.0.1",
    ];
    let wait_for = |log: &std::path::Path, needle: &str| {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < end {
            if std::fs::read_to_string(log).is_ok_and(|t| t.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    };
    // -n -l FILE.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let mut args = vec!["-l", log.to_str().unwrap()];
    args.extend_from_slice(&mail);
    let mut srv = Server::spawn(&args);
    assert!(wait_for(&log, "starting on"), "{:?}", srv.lines());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(warning), "{text}");
    srv.term();
    // A daemon: its twistrs.log, opened before the fork.
    let (code, _, err) = run_in(dir.path(), &mail);
    assert_eq!(code, 0, "{err}");
    let log = dir.path().join("twistrs.log");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(warning), "{text}");
    assert_eq!(run_in(dir.path(), &["stop"]).0, 0);
}

#[test]
fn logfile_option_writes_twistd_lines_and_sighup_reopens_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let srv = Server::spawn(&[
        "-l",
        log.to_str().unwrap(),
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    let started = || std::fs::read_to_string(&log).unwrap_or_default();
    for _ in 0..500 {
        if started().contains("starting on") {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let text = started();
    let first = text.lines().next().expect("a first line");
    // 2026-11-26T17:36:39+0000 [twistrs.launcher#info] twistrs 0.1.0 (...) starting up.
    let (stamp, rest) = first.split_at(24);
    assert!(
        stamp.as_bytes()[10] == b'T' && (stamp.contains('+') || stamp.contains('-')),
        "{first}"
    );
    assert!(
        rest.starts_with(" [twistrs.launcher#info] twistrs "),
        "{first}"
    );
    assert!(rest.ends_with("starting up."), "{first}");
    // logrotate: move the file, signal, and the daemon writes a new one.
    let moved = dir.path().join("app.log.1");
    std::fs::rename(&log, &moved).unwrap();
    srv.signal(1);
    for _ in 0..500 {
        if started().contains("Reopened log file") {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(started().contains("Reopened log file"), "new file written");
    assert!(
        !std::fs::read_to_string(&moved)
            .unwrap()
            .contains("Reopened")
    );
}

/// Waits (bounded) until `path` contains `needle`; its text either way.
fn wait_file(path: &std::path::Path, needle: &str) -> String {
    for _ in 0..500 {
        let t = std::fs::read_to_string(path).unwrap_or_default();
        if t.contains(needle) {
            return t;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `twistrs -n --chroot JAIL -l LOG echo` on a port of its own, not waited for.
fn chrooted_echo(jail: &std::path::Path, log: &std::path::Path) -> Server {
    Server::spawn(&[
        "--chroot",
        jail.to_str().unwrap(),
        "-l",
        log.to_str().unwrap(),
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ])
}

#[test]
fn after_chroot_a_log_outside_the_jail_is_never_reopened_inside_it() {
    let test = "after_chroot_a_log_outside_the_jail_is_never_reopened_inside_it";
    if !as_root(test, "--chroot needs root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jail = dir.path().join("jail");
    let log = dir.path().join("app.log");
    // The jail has the log's directory too: a reopen by the same path would land there.
    let twin = jail.join(log.strip_prefix("/").unwrap());
    std::fs::create_dir_all(twin.parent().unwrap()).unwrap();
    let mut srv = chrooted_echo(&jail, &log);
    let text = wait_file(&log, "starting on");
    assert!(
        text.contains(&format!(
            "The log file {} is outside the chroot {}",
            log.display(),
            jail.display()
        )),
        "{text}"
    );
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    srv.signal(1);
    let moved = dir.path().join("app.log.1");
    let text = wait_file(&moved, "Cannot reopen the log file");
    assert!(
        text.contains("Cannot reopen the log file") && text.contains("copytruncate"),
        "{text}"
    );
    let hint = "files are read again by their paths inside it.";
    assert!(wait_file(&moved, hint).contains(hint), "{text}");
    assert!(!twin.exists(), "no log file inside the jail");
    assert!(!log.exists(), "nothing reopened");
    srv.term();
}

#[test]
fn after_chroot_a_log_inside_the_jail_is_reopened_by_its_path_there() {
    let test = "after_chroot_a_log_inside_the_jail_is_reopened_by_its_path_there";
    if !as_root(test, "--chroot needs root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jail = dir.path().join("jail");
    std::fs::create_dir_all(jail.join("logs")).unwrap();
    let log = jail.join("logs/app.log");
    let mut srv = chrooted_echo(&jail, &log);
    let text = wait_file(&log, "starting on");
    assert!(!text.contains("outside the chroot"), "{text}");
    std::fs::rename(&log, jail.join("logs/app.log.1")).unwrap();
    srv.signal(1);
    let text = wait_file(&log, "Reopened log file");
    assert!(text.contains("Reopened log file"), "{text}");
    srv.term();
}

#[test]
fn built_in_rotation_keeps_n_files_and_spares_dev_null() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("r.log");
    let srv = Server::spawn(&[
        "-l",
        log.to_str().unwrap(),
        "--log-rotate-size",
        "300",
        "--log-keep",
        "2",
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    let numbered = |n: u32| dir.path().join(format!("r.log.{n}"));
    assert!(srv.wait_catches(1), "SIGHUP handler installed");
    let end = std::time::Instant::now() + Duration::from_secs(10);
    // Each SIGHUP logs a reopen line; a dozen of them pass 300 bytes several times.
    while !numbered(2).exists() && std::time::Instant::now() < end {
        srv.signal(1);
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(
        numbered(1).exists() && numbered(2).exists(),
        "rotated twice"
    );
    for _ in 0..20 {
        srv.signal(1);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!numbered(3).exists(), "at most --log-keep files");
    assert!(std::fs::metadata(&log).unwrap().len() < 1000);

    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device(),
        "/dev/null is not a device on this machine: something replaced it; not testing on it"
    );
    let srv = Server::spawn(&[
        "-l",
        "/dev/null",
        "--log-rotate-size",
        "10",
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    assert!(srv.wait_catches(1), "SIGHUP handler installed");
    for _ in 0..10 {
        srv.signal(1);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(
        !std::path::Path::new("/dev/null.1").exists(),
        "never renamed"
    );
}

#[test]
fn syslog_with_prefix() {
    let dev_log = std::path::Path::new("/dev/log");
    if dev_log.exists() || !nix::unistd::Uid::effective().is_root() {
        skip(
            "syslog_with_prefix",
            "a syslog daemon owns /dev/log (or not root)",
        );
        return;
    }
    // With no syslog daemon, every line would be lost without a word: the start says so on
    // stderr (here a start that then fails, and so ends at once).
    let (code, _, err) = run(&[
        "-n",
        "--syslog",
        "echo",
        "--listen",
        "unix:/nonexistent-twistrs/x.sock",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--syslog: no syslog daemon answers at /dev/log"),
        "{err}"
    );
    // Play one on /dev/log for the length of the test.
    let sock = std::os::unix::net::UnixDatagram::bind(dev_log).expect("bind /dev/log");
    struct Unlink;
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = std::fs::remove_file("/dev/log");
        }
    }
    let _unlink = Unlink;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut srv = Server::spawn(&[
        "--syslog",
        "--prefix",
        "mytw",
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        if got.iter().any(|m| m.contains("starting on")) {
            break;
        }
    }
    let pid = srv.pid();
    let start = got
        .iter()
        .find(|m| m.contains("starting up."))
        .expect("a start-up record");
    // <14> is LOG_USER | LOG_INFO; the ident is --prefix with the PID, as twistd's syslog.
    assert!(start.starts_with("<14>"), "{start}");
    assert!(
        start.contains(&format!("mytw[{pid}]: [twistrs.launcher#info] twistrs ")),
        "{start}"
    );
    assert!(
        got.iter().any(|m| m.contains("[-] Echo starting on ")),
        "{got:?}"
    );
    srv.term();
}

/// A `--shutdown-timeout` too long for the clock (`1e300`, `u64::MAX`, or `1e19`, which a
/// `Duration` holds but an `Instant` cannot reach) means "wait for the connections": it
/// starts, drains and exits by the signal, in one process and with workers, never panics.
#[test]
fn a_shutdown_timeout_past_any_clock_drains_and_never_panics() {
    use std::os::unix::process::ExitStatusExt;
    for (global, value) in [
        (&[][..], "18446744073709551615"),
        (&[][..], "1e300"),
        (&[][..], "1e19"),
        (&["--workers", "2"][..], "1e19"),
    ] {
        let mut args = global.to_vec();
        args.extend([
            "--shutdown-timeout",
            value,
            "echo",
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ]);
        let mut srv = Server::start(&args);
        let mut c = connect(srv.addr());
        send(&mut c, b"hi");
        assert_eq!(read_n(&mut c, 2), b"hi");
        let status = srv.term();
        let lines = srv.lines();
        assert!(
            !lines.iter().any(|l| l.contains("panicked")),
            "{args:?}: {lines:?}"
        );
        assert_eq!(status.signal(), Some(15), "{args:?}: {lines:?}");
        assert_eq!(read_to_end(&mut c), b"", "{args:?}: closed once idle");
    }
}
