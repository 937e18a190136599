//! TLS session resumption across processes: a session saved from one worker resumes on every
//! worker, after `twistrs restart` and after a reload, in TLS 1.2 and 1.3; a ticket of another
//! service instance is refused (a full handshake instead).

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout};

use super::*;
use crate::workers::{established, held_by};

/// A Python client driven over stdin, one command a line, with one saved session: `new`
/// makes a full handshake and saves its session; `open` (closed at once) and `hold` (kept
/// open) offer the saved session; `port N` aims at another port. Each connection prints
/// `reused=True|False echo=...` (or `error=...`). argv: PORT VERSION (TLSv1_2 or TLSv1_3).
const DRIVER: &str = r#"
c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
c.check_hostname = False
c.verify_mode = ssl.CERT_NONE
c.minimum_version = c.maximum_version = getattr(ssl.TLSVersion, sys.argv[2])
port, session, held = sys.argv[1], None, []
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == 'port':
        port = cmd[1]
        print('port=' + port, flush=True)
        continue
    try:
        s = socket.create_connection(('127.0.0.1', int(port)), timeout=TIMEOUT)
        t = c.wrap_socket(s, session=None if cmd[0] == 'new' else session)
        # The echo: a TLS 1.3 session's tickets come after the handshake, read with it.
        got = echo(t, b'resume me')
    except (ssl.SSLError, OSError) as e:
        print('error=' + str(e), flush=True)
        continue
    if cmd[0] == 'new':
        session = t.session
    print('reused=%s echo=%s version=%s' % (t.session_reused, got.decode(), t.version()),
          flush=True)
    if cmd[0] == 'hold':
        held.append(t)
    else:
        t.close()
"#;

struct Driver {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Driver {
    fn start(port: u16, version: &str) -> Driver {
        let mut child = spawn_python(DRIVER, &[&port.to_string(), version]);
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Driver {
            child,
            input,
            output,
        }
    }

    /// Sends `cmd`; the connection's line (the client's socket timeout bounds the wait).
    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.input, "{cmd}").unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the client ended: {cmd}");
        line.trim_end().to_string()
    }

    /// A connection offering the saved session: true if it was resumed. The echo works
    /// either way, in the version asked for.
    fn resumed(&mut self, cmd: &str, version: &str) -> bool {
        let line = self.ask(cmd);
        assert!(line.contains(" echo=resume me "), "{line}");
        let v = version.replace('_', ".");
        assert!(line.ends_with(&format!("version={v}")), "{line}");
        line.starts_with("reused=True")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const VERSIONS: [&str; 2] = ["TLSv1_2", "TLSv1_3"];

/// A daemon (`twistrs ARGS`, logging to twistrs.log) in its own directory, serving `echo` on
/// an `ssl:` port with a certificate made now; stopped through `twistrs stop` when dropped.
struct Daemon {
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(global: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let cert = self_signed(dir.path(), "server");
        let ep = format!(
            "ssl:0:privateKey={}:interface=127.0.0.1",
            cert.both.display()
        );
        let mut args = global.to_vec();
        args.extend(["echo", "--listen", &ep]);
        let (code, out, err) = run_in(dir.path(), &args);
        assert_eq!(code, 0, "{out}{err}");
        Daemon { dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("twistrs.log")).unwrap_or_default()
    }

    fn port(&self) -> u16 {
        self.log()
            .lines()
            .find_map(|l| l.split(" starting on ").nth(1)?.trim().parse().ok())
            .unwrap()
    }

    fn pid(&self) -> u32 {
        let pid = std::fs::read_to_string(self.dir.path().join("twistrs.pid")).unwrap();
        pid.trim().parse().unwrap()
    }

    /// The master's live workers.
    fn workers(&self) -> Vec<i32> {
        children(self.pid())
            .into_iter()
            .filter(|(_, state, _)| *state != 'Z')
            .map(|(pid, _, _)| pid as i32)
            .collect()
    }

    fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        run_in(self.dir.path(), args)
    }

    /// Waits (bounded) until the log holds `n` lines containing `needle`.
    fn wait_log(&self, needle: &str, n: usize) -> bool {
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if self.log().matches(needle).count() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop", "--timeout", "5"]);
    }
}

#[test]
fn a_session_resumes_on_every_worker() {
    for version in VERSIONS {
        let d = Daemon::start(&["--workers", "2"]);
        assert!(d.wait_log("2 workers serve.", 1), "{}", d.log());
        let workers = d.workers();
        assert_eq!(workers.len(), 2, "{workers:?}");
        let port = d.port();
        let mut client = Driver::start(port, version);
        assert!(!client.resumed("new", version), "a first handshake is full");
        // Resumed connections held open, 4 at a time, until each worker holds some (one
        // accept queue: a run of them may go to one worker), 8 at least, 64 at most.
        let (mut opened, mut held) = (0, vec![0; 2]);
        while opened < 64 && (opened < 8 || held.contains(&0)) {
            for _ in 0..4 {
                opened += 1;
                assert!(
                    client.resumed("hold", version),
                    "{version}: connection {opened} not resumed; workers hold {held:?}"
                );
            }
            let inodes = established(port);
            held = workers.iter().map(|w| held_by(*w, &inodes)).collect();
        }
        assert!(
            held.iter().all(|n| *n > 0),
            "{version}: one worker took all {opened}: {held:?}"
        );
        assert_eq!(held.iter().sum::<usize>(), opened, "{held:?}");
    }
}

#[test]
fn a_session_resumes_after_a_restart_and_after_a_reload() {
    for (global, version) in [
        (&[][..], "TLSv1_2"),
        (&[][..], "TLSv1_3"),
        (&["--workers", "2"][..], "TLSv1_2"),
        (&["--workers", "2"][..], "TLSv1_3"),
    ] {
        let d = Daemon::start(global);
        let mut client = Driver::start(d.port(), version);
        assert!(!client.resumed("new", version));
        assert!(client.resumed("open", version), "{global:?} {version}");
        let old = d.pid();
        let (code, out, err) = d.ctl(&["restart"]);
        assert_eq!(code, 0, "{out}{err}");
        assert_ne!(d.pid(), old, "{}", d.log());
        for i in 0..4 {
            assert!(
                client.resumed("open", version),
                "{global:?} {version}: after the restart, connection {i} not resumed:\n{}",
                d.log()
            );
        }
        // A reload builds new server configs (for new certificates): the tickets of the
        // old ones still open.
        let reloaded = d.log().matches("Reloaded certificates").count();
        // Each process reloads: the single one, or both workers.
        let processes = if global.is_empty() { 1 } else { 2 };
        let (code, out, err) = d.ctl(&["reload"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            d.wait_log("Reloaded certificates", reloaded + processes),
            "{}",
            d.log()
        );
        for i in 0..4 {
            assert!(
                client.resumed("open", version),
                "{global:?} {version}: after the reload, connection {i} not resumed"
            );
        }
    }
}

#[test]
fn a_ticket_of_another_service_instance_is_refused() {
    let one = Daemon::start(&[]);
    let other = Daemon::start(&[]);
    for version in VERSIONS {
        let mut client = Driver::start(one.port(), version);
        assert!(!client.resumed("new", version));
        client.ask(&format!("port {}", other.port()));
        assert!(
            !client.resumed("open", version),
            "{version}: another instance resumed a session it never made"
        );
        // The session was good: its own service resumes it.
        client.ask(&format!("port {}", one.port()));
        assert!(client.resumed("open", version), "{version}");
    }
}
