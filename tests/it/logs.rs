//! `--log-format json` and `--log-level`: every line parsed by Python's json, hostile request
//! paths included, the structured fields of the access log and of a mail delivery, and
//! reopening after a move; what may stand at a log's name.

use std::io::Write;
use std::time::Duration;

use crate::mail::py;
use crate::support::*;

/// Parses every line of `path` with Python's json (strict UTF-8, one object per line) and
/// prints one line per record: `system|message|status|path|method|client|bytes|duration|
/// queue_id|sender|recipients|size|durable|pid|worker`, each field as Python's repr.
const CHECK: &str = r#"
import json, sys
keys = ["system", "message", "status", "path", "method", "client", "bytes", "duration",
        "queue_id", "sender", "recipients", "size", "durable", "pid", "worker"]
for raw in open(sys.argv[1], "rb").read().split(b"\n"):
    if not raw:
        continue
    o = json.loads(raw.decode("utf-8"))
    assert set(["time", "level", "system", "message"]) <= set(o), o
    assert o["time"].endswith("Z") and o["time"][10] == "T", o
    assert o["level"] in ("debug", "info", "warn", "error"), o
    print("|".join(repr(o.get(k)) for k in keys))
"#;

fn check(path: &std::path::Path) -> Vec<Vec<String>> {
    let (code, out, err) = py(CHECK, &[path.to_str().unwrap()]);
    assert_eq!(
        code,
        0,
        "a line is not JSON: {err}\n{}",
        std::fs::read_to_string(path).unwrap_or_default()
    );
    out.lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

/// Sends `raw` as a request and reads the answer to its end.
fn raw_request(port: u16, raw: &[u8]) {
    let mut s = connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    s.write_all(raw).unwrap();
    let _ = read_to_end(&mut s);
}

#[test]
fn json_lines_parse_whatever_the_request_and_survive_a_reopen() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "hello").unwrap();
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("app.log");
    let srv = Server::spawn(&[
        "-l",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "web",
        "--path",
        root.path().to_str().unwrap(),
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    let started =
        |_: &[String]| std::fs::read_to_string(&log).is_ok_and(|t| t.contains(" starting on "));
    srv.wait_until(started, Duration::from_secs(10))
        .expect("started");
    let text = std::fs::read_to_string(&log).unwrap();
    let port: u16 = text
        .split(" starting on ")
        .nth(1)
        .and_then(|p| p[..p.find('"').unwrap_or(0)].parse().ok())
        .expect("port");
    raw_request(port, b"GET /index.html HTTP/1.1\r\nHost: x\r\nReferer: http://r/\"q\r\nUser-Agent: a\\b\"c\r\nConnection: close\r\n\r\n");
    raw_request(
        port,
        b"GET /a\"b\\c%00'{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    raw_request(
        port,
        b"GET /a\x7f\x01\x1b[31m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    raw_request(
        port,
        b"GET /caf\xc3\xa9\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    raw_request(port, b"\x00\xff garbage\r\n\r\n");
    let access = |path: &std::path::Path, n: usize| {
        let path = path.to_path_buf();
        move |_: &[String]| {
            std::fs::read_to_string(&path)
                .is_ok_and(|t| t.matches("twistrs.web.access").count() >= n)
        }
    };
    srv.wait_until(access(&log, 5), Duration::from_secs(10))
        .expect("5 access lines");
    // logrotate's move, then the reopen signal: the next lines go to a new file, as JSON.
    let moved = logdir.path().join("app.log.1");
    std::fs::rename(&log, &moved).unwrap();
    srv.signal(libc::SIGHUP);
    let reopened = |_: &[String]| log.exists();
    srv.wait_until(reopened, Duration::from_secs(10))
        .expect("reopened");
    raw_request(port, b"HEAD / HTTP/1.0\r\n\r\n");
    srv.wait_until(access(&log, 1), Duration::from_secs(10))
        .expect("a line after the reopen");

    let before = check(&moved);
    let lines: Vec<&Vec<String>> = before
        .iter()
        .filter(|r| r[0] == "'twistrs.web.access#info'")
        .collect();
    assert_eq!(lines.len(), 5, "{before:?}");
    let ok = lines[0];
    assert_eq!(
        (&ok[2][..], &ok[3][..], &ok[4][..], &ok[5][..], &ok[6][..]),
        ("200", "'/index.html'", "'GET'", "'127.0.0.1'", "5"),
        "{ok:?}"
    );
    assert!(
        ok[7].parse::<f64>().is_ok_and(|d| (0.0..10.0).contains(&d)),
        "duration {ok:?}"
    );
    assert_eq!(lines[1][3], r#"'/a"b\\c%00\'{}'"#, "{:?}", lines[1]);
    // Control characters, invalid UTF-8 and garbage are refused before a path is read: a
    // 400 line without method or path.
    for l in &lines[2..] {
        assert_eq!(
            (&l[2][..], &l[3][..], &l[4][..]),
            ("400", "'-'", "'-'"),
            "{l:?}"
        );
    }
    let after = check(&log);
    assert!(
        after
            .iter()
            .any(|r| r[0] == "'twistrs.web.access#info'" && r[4] == "'HEAD'"),
        "{after:?}"
    );
    // Every line names the process that wrote it; a single process is no worker.
    let pid = srv.pid().to_string();
    for r in before.iter().chain(&after) {
        assert_eq!((&r[13][..], &r[14][..]), (&pid[..], "None"), "{r:?}");
    }
}

#[test]
fn a_mail_delivery_has_its_fields_and_log_level_filters() {
    let dir = tempfile::tempdir().unwrap();
    let dom = format!("example.com={}", dir.path().join("example.com").display());
    let srv = Server::start(&[
        "--log-format",
        "json",
        "mail",
        "-H",
        "mx.test",
        "-d",
        &dom,
        "-u",
        "joe=secret",
        "-u",
        "ann=pw",
        "-s",
        "tcp:0:interface=127.0.0.1",
        "--no-pop3",
    ]);
    let port = srv.port().to_string();
    let (code, _, err) = py(
        r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
s.sendmail("bob@else.test", ["joe@example.com", "ann@example.com"], b"Subject: x\r\n\r\nbody\r\n")
s.quit()
"#,
        &[&port],
    );
    assert_eq!(code, 0, "{err}");
    assert!(srv.log_contains("durable in"), "{:?}", srv.lines());
    let file = dir.path().join("log.json");
    std::fs::write(&file, srv.lines().join("\n")).unwrap();
    let recs = check(&file);
    let d = recs
        .iter()
        .find(|r| r[8] != "None")
        .unwrap_or_else(|| panic!("no delivery line: {recs:?}"));
    assert_eq!(d[9], "'bob@else.test'", "{d:?}");
    assert_eq!(d[10], "'joe@example.com,ann@example.com'", "{d:?}");
    assert!(d[11].parse::<u64>().is_ok_and(|n| n > 20), "{d:?}");
    assert!(
        d[12].parse::<f64>().is_ok_and(|s| (0.0..30.0).contains(&s)),
        "{d:?}"
    );
    // The queue id is the one in the message's Received: header.
    let id = d[8].trim_matches('\'');
    let joe = dir.path().join("example.com/joe/new");
    let msg = std::fs::read_dir(&joe)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        std::fs::read_to_string(msg)
            .unwrap()
            .contains(&format!(" id {id} "))
    );

    // --log-level warn: the warning is written, the info lines around it are not.
    let mut quiet = Server::spawn(&[
        "--log-level",
        "warn",
        "mail",
        "-s",
        "tcp:0:interface=127.0.0.1",
        "--no-pop3",
    ]);
    assert!(quiet.log_contains("no -d domain"), "{:?}", quiet.lines());
    quiet.signal(libc::SIGTERM);
    quiet.wait(Duration::from_secs(10)).expect("stopped");
    let lines = quiet.lines();
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("#info") && !l.contains("[-]")),
        "{lines:?}"
    );
}

/// A web root holding one file, `f`, and a fresh directory for a tmpfs of the server's own
/// with the wrapper that mounts it (`small_disk`); None, after a skip line, where it cannot.
fn root_and_small_disk(test: &str) -> Option<(tempfile::TempDir, tempfile::TempDir, Vec<String>)> {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("f"), "x").unwrap();
    let disk = tempfile::tempdir().unwrap();
    let wrapper = small_disk(test, disk.path(), "256k")?;
    Some((root, disk, wrapper))
}

/// The port of a server that logs to a file, once `read()` (the file) says it listens.
fn port_in_log(srv: &Server, read: impl Fn() -> String) -> u16 {
    srv.wait_until(
        |_| read().contains(" starting on "),
        Duration::from_secs(10),
    )
    .expect("started");
    let text = read();
    let after = text.split(" starting on ").nth(1).unwrap();
    after[..after.find(|c: char| !c.is_ascii_digit()).unwrap()]
        .parse()
        .unwrap()
}

/// `n` GETs of /f over one keep-alive connection; every one must be answered 200.
fn gets(port: u16, n: usize) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for i in 0..n {
        s.write_all(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let r = crate::web::read_resp(&mut s, false);
        assert_eq!(r.status, 200, "request {i}");
    }
}

/// The main log on a full disk: the server serves on; the lines the disk refused are counted,
/// the count is the first line written once it has room (text and JSON), no line is glued to
/// the fragment a refused write left, and stderr says it once.
#[test]
fn main_log_lines_lost_to_a_full_disk_are_counted_when_it_has_room() {
    for format in ["text", "json"] {
        let Some((root, disk, wrapper)) = root_and_small_disk("main_log_lines_lost") else {
            return;
        };
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let log = disk.path().join("main.log");
        let srv = Server::spawn_wrapped(
            &wrapper,
            &[
                "-l",
                log.to_str().unwrap(),
                "--log-format",
                format,
                "web",
                "--path",
                root.path().to_str().unwrap(),
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ],
        );
        // The server's view of the tmpfs.
        let seen = std::path::PathBuf::from(format!("/proc/{}/root", srv.pid()))
            .join(disk.path().strip_prefix("/").unwrap());
        let read = || std::fs::read_to_string(seen.join("main.log")).unwrap_or_default();
        let port = port_in_log(&srv, read);
        let filler = fill_disk(&seen);
        const SENT: usize = 300;
        gets(port, SENT);
        std::fs::remove_file(&filler).unwrap();
        gets(port, 1);
        let noticed = |_: &[String]| read().contains("log line(s) lost");
        srv.wait_until(noticed, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{format}: no count of lost lines:\n{}", read()));
        let text = read();
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains("log line(s) lost"))
            .unwrap();
        let notice = lines[at];
        assert!(
            notice.contains("the log file could not be written: No space left on device"),
            "{format}: {notice}"
        );
        let lost: usize = notice[..notice.find(" log line(s) lost").unwrap()]
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        // Whole access lines plus those lost are the requests sent (the last one sent while
        // the disk was full may be logged only after it had room: a line is written once its
        // response has left); at least the request sent after it had room follows the count.
        let whole = |l: &&&str| {
            l.contains("GET /f")
                && if format == "json" {
                    l.ends_with('}')
                } else {
                    l.ends_with("\"-\"")
                }
        };
        assert!(lost > 0, "{format}: {notice}");
        assert_eq!(
            lines.iter().filter(whole).count() + lost,
            SENT + 1,
            "{format}: {notice}"
        );
        assert!(
            lines[at + 1..].iter().filter(whole).count() >= 1,
            "{format}"
        );
        // No line holds two records: the fragment of the refused write was ended first.
        let stamp = if format == "json" {
            "{\"time\":"
        } else {
            &lines[0][..5]
        };
        for l in &lines {
            assert!(l.matches(stamp).count() <= 1, "{format}: glued: {l}");
        }
        let told = srv
            .lines()
            .iter()
            .filter(|l| l.starts_with("twistrs: cannot write to the log file"))
            .count();
        assert_eq!(told, 1, "{format}: {:?}", srv.lines());
        drop(srv);
    }
}

/// web's own access log on a full disk: its 64 KiB buffer waits for room, lines past it are
/// counted, the main log says so at the first and when the file takes lines again, and
/// every line in the file is whole.
#[test]
fn access_log_lines_lost_to_a_full_disk_are_counted_in_the_main_log() {
    let Some((root, disk, wrapper)) = root_and_small_disk("access_log_lines_lost") else {
        return;
    };
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let access = disk.path().join("access.log");
    let srv = Server::start_wrapped(
        &wrapper,
        &[
            "web",
            "--path",
            root.path().to_str().unwrap(),
            "--logfile",
            access.to_str().unwrap(),
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ],
    );
    let seen = std::path::PathBuf::from(format!("/proc/{}/root", srv.pid()))
        .join(disk.path().strip_prefix("/").unwrap());
    let filler = fill_disk(&seen);
    // About 90 bytes a line: well past the buffer and what the file's last page holds.
    const SENT: usize = 1500;
    gets(srv.port(), SENT);
    assert!(
        srv.log_contains("cannot write ")
            && srv.log_contains("No space left on device")
            && srv.log_contains("its lines are lost until it can be written again"),
        "{:?}",
        srv.lines()
    );
    std::fs::remove_file(&filler).unwrap();
    gets(srv.port(), 1);
    let counted = |l: &[String]| l.iter().any(|x| x.contains(" line(s) of "));
    srv.wait_until(counted, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no count: {:?}", srv.lines()));
    let lines = srv.lines();
    let notice = lines.iter().find(|x| x.contains(" line(s) of ")).unwrap();
    assert!(
        notice.contains("access.log lost: it could not be written: No space left"),
        "{notice}"
    );
    let lost: usize = notice[..notice.find(" line(s) of ").unwrap()]
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The file is written once a second: wait for the request sent after the disk had room.
    let read = || std::fs::read_to_string(seen.join("access.log")).unwrap_or_default();
    let all_in = |_: &[String]| read().lines().count() + lost > SENT;
    srv.wait_until(all_in, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("lost {lost}, file has {}", read().lines().count()));
    let text = read();
    for l in text.lines() {
        assert!(
            l.starts_with("\"127.0.0.1\" - - [") && l.ends_with("\"-\""),
            "not whole: {l}"
        );
    }
    assert!(lost > 0);
    assert_eq!(text.lines().count() + lost, SENT + 1, "lost {lost}");
}

/// A log that reaches RLIMIT_FSIZE (systemd's LimitFSIZE=, `ulimit -f`) must not kill the
/// server with SIGXFSZ, as it did: the lines it refuses are counted like a full disk's, and
/// requests go on being served (twistd, on Python, ignores SIGXFSZ too).
#[test]
fn a_log_at_the_file_size_limit_does_not_kill_the_server() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("f"), "x").unwrap();
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("main.log");
    let srv = Server::spawn_wrapped(
        &["prlimit", "--fsize=16384"],
        &[
            "-l",
            log.to_str().unwrap(),
            "web",
            "--path",
            root.path().to_str().unwrap(),
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ],
    );
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let port = port_in_log(&srv, read);
    // About 150 bytes a line: twice the limit.
    gets(port, 220);
    assert_eq!(
        std::fs::metadata(&log).unwrap().len(),
        16384,
        "at the limit"
    );
    assert!(
        srv.log_contains("twistrs: cannot write to the log file")
            && srv.log_contains("File too large"),
        "{:?}",
        srv.lines()
    );
    gets(port, 1);
    // SAFETY: a signal-0 probe of the process this test started.
    assert_eq!(
        unsafe { libc::kill(srv.pid() as i32, 0) },
        0,
        "still running"
    );
}

/// What the service user could put at a log's name in a directory it owns: a FIFO no one
/// reads fails the start at once (it hung it, opened for writing), and a second hard link
/// to another file is refused (root would append to that file). Each with one line naming
/// the log, exit 1.
#[test]
fn a_fifo_or_a_hard_link_at_the_log_name_fails_the_start_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.log");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let other = dir.path().join("other");
    std::fs::write(&other, "another file\n").unwrap();
    let linked = dir.path().join("linked.log");
    std::fs::hard_link(&other, &linked).unwrap();
    for (log, why) in [
        (&fifo, "a FIFO with no reader"),
        (&linked, "it has 2 hard links"),
    ] {
        let mut srv = Server::spawn(&[
            "-l",
            log.to_str().unwrap(),
            "echo",
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ]);
        let status = srv.wait(Duration::from_secs(10));
        let lines = srv.lines().join("\n");
        assert_eq!(status.and_then(|s| s.code()), Some(1), "{why}: {lines}");
        assert!(
            lines.contains(&format!("cannot open log file {}", log.display()))
                && lines.contains(why),
            "{lines}"
        );
    }
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "another file\n");
}

/// With -n under systemd, stdout is the journal's stream (`JOURNAL_STREAM` names it): each
/// line then starts with its syslog priority, `<3>` for an error, which journald reads (so
/// `journalctl -p err` finds twistrs' errors). On any other stdout, no prefix.
#[test]
fn lines_to_the_journal_stream_carry_their_priority() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    // (stdout is the journal's stream, -l FILE): the last is the Debian unit's form, whose
    // file must get plain lines.
    for (journal, logfile) in [(true, false), (false, false), (true, true)] {
        let out = dir.path().join(format!("stdout-{journal}-{logfile}"));
        let file = std::fs::File::create(&out).unwrap();
        let md = if journal {
            file.metadata().unwrap()
        } else {
            // The stream of something else: stdout is not the journal's.
            std::fs::metadata(dir.path()).unwrap()
        };
        let log = dir.path().join(format!("file-{journal}.log"));
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["-n", "--pidfile="]);
        if logfile {
            cmd.arg("-l").arg(&log);
        }
        // 192.0.2.0/24 (TEST-NET-1) is on no interface here: the start fails, logging an error.
        let status = cmd
            .args(["echo", "--listen", "tcp:7:interface=192.0.2.55"])
            .env("JOURNAL_STREAM", format!("{}:{}", md.dev(), md.ino()))
            .current_dir(dir.path())
            .stdout(file)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(1));
        let text = std::fs::read_to_string(if logfile { &log } else { &out }).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() >= 3, "{text}");
        let info = lines.iter().find(|l| l.contains("starting up.")).unwrap();
        let error = lines
            .iter()
            .find(|l| l.contains("Couldn't listen on"))
            .unwrap();
        if journal && !logfile {
            assert!(info.starts_with("<6>2"), "{info}");
            assert!(error.starts_with("<3>2"), "{error}");
            assert!(lines.iter().all(|l| l.starts_with('<')), "{text}");
        } else {
            assert!(lines.iter().all(|l| !l.starts_with('<')), "{text}");
        }
    }
}
