//! `twistrs --check` (nginx's `-t`): it fails where a start would, and beside a running
//! server it takes none of its ports and changes none of its files.

use std::path::Path;
use std::process::Command;

use crate::inetd::free_ports;
use crate::support::*;

/// Every file under `dir` with its size and, for symlinks, its target: what a check must
/// leave as it found.
fn snapshot(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                todo.push(p.clone());
            }
            let link = std::fs::read_link(&p).map(|l| l.display().to_string());
            out.push(format!(
                "{} {} {:?} {:?}",
                p.display(),
                md.len(),
                md.modified().ok(),
                link.ok()
            ));
        }
    }
    out.sort();
    out
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-m", "5"])
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_check_beside_the_running_daemon_takes_nothing_and_changes_nothing() {
    let port = free_ports(1)[0].to_string();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir(dir.join("srv")).unwrap();
    std::fs::write(dir.join("srv/index.html"), "served\n").unwrap();
    let sock = dir.join("w.sock");
    let tcp = format!("tcp:{port}:interface=127.0.0.1");
    let unix = format!("unix:{}:lockfile=1", sock.display());
    let args = [
        "web",
        "--path",
        "srv",
        "--listen",
        &tcp,
        "--listen",
        &unix,
        "--logfile",
        "access.log",
    ];
    let (code, out, err) = run_in(dir, &args);
    assert_eq!(code, 0, "daemon: {out} {err}");
    // The daemon's directory is `dir`: stop it through its pidfile there at the end.
    struct Stop<'a>(&'a Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = run_in(self.0, &["stop", "--timeout", "5"]);
        }
    }
    let _stop = Stop(dir);
    let pid = std::fs::read_to_string(dir.join("twistrs.pid")).unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(curl(&[&url]), "served\n");
    let before = snapshot(dir);

    let mut check = vec!["--check"];
    check.extend_from_slice(&args);
    let (code, out, err) = run_in(dir, &check);
    assert_eq!(code, 0, "check: {out} {err}");
    assert!(
        out.contains("web: the options, files and endpoints check out"),
        "{out}"
    );
    assert!(out.contains(&format!("would listen on {tcp}")), "{out}");
    assert!(
        out.contains(&format!("would listen on unix:{}", sock.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("held by a running twistrs (PID {})", pid.trim())),
        "{out}"
    );
    assert_eq!(err, "", "nothing to warn about");
    // Nothing moved: pidfile, log, access log, socket file, its lock (still the daemon's).
    assert_eq!(snapshot(dir), before);
    assert_eq!(
        std::fs::read_link(dir.join("w.sock.lock"))
            .unwrap()
            .display()
            .to_string(),
        pid.trim()
    );
    // Without the pidfile to say the socket is ours, the probe finds its lock naming a
    // live process: a start would be refused the path, and so is the check.
    let (code, out, err) = run_in(dir, &["--check", "--pidfile=", "web", "--listen", &unix]);
    assert_eq!(code, 1, "{out} {err}");
    assert!(err.contains("its lock names a running process"), "{err}");
    // A check of a control command is refused, not run: `--check stop` stops nothing.
    for cmd in ["stop", "restart", "reload"] {
        let (code, out, err) = run_in(dir, &["--check", cmd]);
        assert_eq!(code, 1, "--check {cmd}: {out} {err}");
        assert!(err.contains("--check checks a start"), "{err}");
    }
    assert_eq!(snapshot(dir), before);
    // And the daemon serves on, on both sockets.
    assert_eq!(curl(&[&url]), "served\n");
    assert_eq!(
        curl(&["--unix-socket", sock.to_str().unwrap(), "http://x/"]),
        "served\n"
    );
}

#[test]
fn a_check_of_a_port_picked_at_start_says_port_0_for_each_listener_on_it() {
    // dns listens on its UDP port again over TCP: a start picks one port for both.
    let (code, out, err) = run(&["--check", "--pidfile=", "dns", "-p", "0", "-i", "127.0.0.1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("would listen on udp:0:interface=127.0.0.1\n"),
        "{out}"
    );
    assert!(
        out.contains("would listen on tcp:0:interface=127.0.0.1\n"),
        "{out}"
    );
}

#[test]
fn a_check_fails_where_a_start_fails_naming_the_cause() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("file"), "not a directory").unwrap();
    std::fs::write(dir.join("inetd.conf"), "").unwrap();
    let port = free_ports(1)[0].to_string();
    let tcp = format!("tcp:{port}:interface=127.0.0.1");
    let cases: &[(&[&str], &str)] = &[
        (&["web", "--path", "missing", "--listen", &tcp], "missing"),
        (
            &["web", "--listen", "tcp:0:interface=192.0.2.1"],
            "192.0.2.1",
        ),
        (
            &["web", "--listen", "unix:missing/w.sock"],
            "missing/w.sock",
        ),
        (
            &["-l", "missing/log", "web", "--listen", &tcp],
            "missing/log",
        ),
        (
            &["echo", "--listen", "ssl:0:privateKey=missing.pem"],
            "missing.pem",
        ),
        (&["mail", "-d", "example.com=file/x", "-s", &tcp], "file/x"),
        (
            &["--workers", "2", "inetd", "--file", "inetd.conf"],
            "one process only",
        ),
        // One port twice: the check's stand-ins are on port 0, yet it fails as the start's
        // second bind does.
        (
            &["echo", "--listen", &tcp, "--listen", &tcp],
            "Address already in use",
        ),
        (
            &["socks", "--listen", &tcp, "-p", &port],
            "Address already in use",
        ),
    ];
    for (args, names) in cases {
        let mut check = vec!["--check"];
        check.extend_from_slice(args);
        let (code, out, err) = run_in(dir, &check);
        assert_eq!(code, 1, "check {args:?}: {out} {err}");
        assert!(err.contains(names), "check {args:?} names {names}: {err}");
        assert!(err.contains("check failed"), "{err}");
        // The start itself fails as the check said (in the foreground, so nothing stays).
        let mut start = vec!["-n", "--pidfile="];
        start.extend_from_slice(args);
        let (code, out, err) = run_in(dir, &start);
        assert_eq!(code, 1, "start {args:?}: {out} {err}");
    }
}

#[test]
fn a_check_fails_on_a_port_another_program_holds_but_not_on_its_own_servers() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // Another program's TCP listener and UDP socket: a start would fail on each, so the
    // check does too (there is no twistrs pidfile here: nothing of ours holds them).
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tport = tcp.local_addr().unwrap().port().to_string();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let uport = udp.local_addr().unwrap().port().to_string();
    let cases: [&[&str]; 2] = [
        &[
            "web",
            "--listen",
            &format!("tcp:{tport}:interface=127.0.0.1"),
        ],
        &[
            "echo",
            "--listen",
            &format!("udp:{uport}:interface=127.0.0.1"),
        ],
    ];
    for args in cases {
        let mut check = vec!["--check"];
        check.extend_from_slice(args);
        let (code, out, err) = run_in(dir, &check);
        assert_eq!(code, 1, "check {args:?}: {out} {err}");
        assert!(err.contains("Address already in use"), "{err}");
        let mut start = vec!["-n", "--pidfile="];
        start.extend_from_slice(args);
        let (code, out, err) = run_in(dir, &start);
        assert_eq!(code, 1, "start {args:?}: {out} {err}");
    }
    // A UNIX socket file of another program's: the start's bind fails on it with
    // lockfile=0, and so does the check; with lockfile=1 (the default; no live lock) a
    // start replaces it, as twistd's does.
    let sock = dir.join("other.sock");
    let other = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let ep = format!("unix:{}:lockfile=0", sock.display());
    for first in [&["--check"][..], &["-n", "--pidfile="][..]] {
        let mut args = first.to_vec();
        args.extend_from_slice(&["web", "--listen", &ep]);
        let (code, out, err) = run_in(dir, &args);
        assert_eq!(code, 1, "{args:?}: {out} {err}");
        assert!(err.contains("Address already in use"), "{err}");
    }
    let ep = format!("unix:{}", sock.display());
    let (code, out, err) = run_in(dir, &["--check", "web", "--listen", &ep]);
    assert_eq!(code, 0, "{out} {err}");
    drop(other);
    // The probe took nothing: the other program still has its connections.
    let mut c = connect(tcp.local_addr().unwrap());
    let (mut s, _) = tcp.accept().unwrap();
    send(&mut c, b"x");
    assert_eq!(read_n(&mut s, 1), b"x");
    drop(udp);

    // A port below 1024 for a user who may not bind it: refused in the check as at the start.
    let Some(nobody) = nobody_as_root("a_check_fails_on_a_privileged_port_for_nobody") else {
        return;
    };
    let ep = format!("tcp:{}:interface=127.0.0.1", free_privileged_port(true));
    let (uid, gid) = (nobody.uid.to_string(), nobody.gid.to_string());
    for first in [&["--check"][..], &["-n"][..]] {
        let out = Command::new("setpriv")
            .args(["--reuid", &uid, "--regid", &gid, "--clear-groups", BIN])
            .args(first)
            .args(["--pidfile=", "web", "--path", "/", "--listen", &ep])
            .current_dir("/")
            .output()
            .expect("setpriv");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{first:?}: {err}");
        assert!(err.contains("Permission denied"), "{first:?}: {err}");
    }
}

/// `mail -d example.com=md -u USER=PASS -s SMTP -p tcp:0`: a start that writes joe's
/// password under md/passwd/ and makes his Maildir, which the checks below must not do.
fn mail_joe<'a>(user: &'a str, smtp: &'a str) -> [&'a str; 9] {
    [
        "mail",
        "-d",
        "example.com=md",
        "-u",
        user,
        "-s",
        smtp,
        "-p",
        "tcp:0",
    ]
}

#[test]
fn a_check_writes_nothing_a_start_would() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let port = free_ports(1)[0].to_string();
    let tcp = format!("tcp:{port}:interface=127.0.0.1");
    // A start makes the domain and writes joe's password ...
    let (code, out, err) = run_in(dir, &[&["--check"][..], &mail_joe("joe=pw", &tcp)].concat());
    assert_eq!(code, 0, "{out} {err}");
    // ... and web its access log, and twistrs its own log and pidfile as a daemon.
    let (code, out, err) = run_in(
        dir,
        &[
            "--check",
            "web",
            "--listen",
            &tcp,
            "--logfile",
            "access.log",
        ],
    );
    assert_eq!(code, 0, "{out} {err}");
    // dns pairs TCP with the UDP port it got: the stand-in's port is not what is reported.
    let (code, out, err) = run_in(dir, &["--check", "dns", "--port", &port, "-i", "127.0.0.1"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        out.contains(&format!("would listen on udp:{port}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("would listen on tcp:{port}")),
        "{out}"
    );
    assert_eq!(snapshot(dir), Vec::<String>::new(), "the check made files");

    // A password already there stays as it is: the running server reads it at logins.
    std::fs::create_dir_all(dir.join("md/passwd")).unwrap();
    std::fs::write(dir.join("md/passwd/am9l_"), "old").unwrap();
    let (code, out, err) = run_in(
        dir,
        &[&["--check"][..], &mail_joe("joe=new", &tcp)].concat(),
    );
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("md/passwd/am9l_")).unwrap(),
        "old"
    );
    assert!(!dir.join("md/joe").exists(), "no Maildir made by a check");
}

/// Runs the binary in `dir` as a user who may not write what root made there: as `nobody`
/// through setpriv when we are root (root's writes ignore permission bits), else as
/// ourselves. Bounded; (status code, stdout and stderr together). `None`: no such user.
fn run_unprivileged(test: &str, dir: &Path, args: &[&str]) -> Option<(i32, String)> {
    let mut cmd = if nix::unistd::Uid::effective().is_root() {
        if Command::new("setpriv").arg("--version").output().is_err() {
            skip(
                test,
                "root, and no setpriv to run the binary as another user",
            );
            return None;
        }
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            BIN,
        ]);
        c
    } else {
        Command::new(BIN)
    };
    let mut child = cmd
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(40);
    while child.try_wait().ok().flatten().is_none() {
        if std::time::Instant::now() > end {
            let _ = child.kill();
            panic!("twistrs {args:?} did not exit");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.code().unwrap_or(-1), text))
}

/// Gives `path` to the user [`run_unprivileged`] runs as (a no-op when that is us).
fn give_to_runner(path: &Path) {
    if nix::unistd::Uid::effective().is_root() {
        let id = Some(65534);
        std::os::unix::fs::chown(path, id, id).unwrap();
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// mail's `-u USER=PASS` writes the password into PATH/passwd/ and makes the Maildir
/// PATH/USER/ at the start; a check must fail where the user the start runs as cannot write
/// either, and pass when there is nothing to write.
#[test]
fn a_check_of_mail_users_fails_where_the_start_could_not_write() {
    let test = "a_check_of_mail_users_fails_where_the_start_could_not_write";
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    chmod(dir, 0o755);
    let md = dir.join("md");
    std::fs::create_dir_all(md.join("passwd")).unwrap();
    let port = free_ports(1)[0].to_string();
    let tcp = format!("tcp:{port}:interface=127.0.0.1");
    let mail = mail_joe("joe=pw", &tcp);
    let both = |named: &str| -> Option<()> {
        for first in [&["--check"][..], &[][..]] {
            let mut args = first.to_vec();
            args.extend_from_slice(&["-n", "--pidfile="]);
            args.extend_from_slice(&mail);
            let (code, out) = run_unprivileged(test, dir, &args)?;
            assert_eq!(code, 1, "{args:?}: {out}");
            assert!(out.contains("mail: -u joe"), "{args:?}: {out}");
            if first == ["--check"] {
                assert!(out.contains(named), "{args:?} names {named}: {out}");
            }
        }
        Some(())
    };
    // The password file cannot be written: PATH/passwd/ is not the runner's to write.
    chmod(&md, 0o555);
    chmod(&md.join("passwd"), 0o555);
    if both("md/passwd").is_none() {
        return;
    }
    // The password could be written, but not the Maildir beside it.
    give_to_runner(&md.join("passwd"));
    chmod(&md.join("passwd"), 0o755);
    both("md/joe").expect("ran before");
    // Nothing to write (the same password, the Maildir there): the check passes.
    chmod(&md, 0o755);
    std::fs::write(md.join("passwd/am9l_"), "pw").unwrap();
    for sub in [
        "new",
        "cur",
        "tmp",
        ".Trash/new",
        ".Trash/cur",
        ".Trash/tmp",
    ] {
        std::fs::create_dir_all(md.join("joe").join(sub)).unwrap();
    }
    std::fs::write(md.join("joe/.Trash/maildirfolder"), "").unwrap();
    chmod(&md, 0o555);
    chmod(&md.join("passwd"), 0o555);
    let mut args = vec!["--check", "-n", "--pidfile="];
    args.extend_from_slice(&mail);
    let (code, out) = run_unprivileged(test, dir, &args).expect("ran before");
    assert_eq!(code, 0, "{out}");
}
