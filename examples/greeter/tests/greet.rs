//! The example launcher, built by cargo, run for real and talked to over TCP: a third party's
//! binary with the built-in plugins and one of its own, started, used and stopped as
//! `twistrs` is.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_greeter-twistrs");

/// Kills the server if the test fails before it stops it.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_launcher_runs_its_own_plugin_beside_the_built_in_ones() {
    let help = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("greet") && help.contains("echo"), "{help}");

    let mut server = Server(
        Command::new(BIN)
            .args(["-n", "--pidfile=", "greet", "--greeting", "Welcome"])
            .args(["--listen", "tcp:0:interface=127.0.0.1"])
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start greeter-twistrs"),
    );
    // The log, line by line, read on a thread so every wait below is bounded in time.
    let log = BufReader::new(server.0.stdout.take().expect("stdout"));
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in log.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |what: &str| -> String {
        let end = Instant::now() + Duration::from_secs(10);
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no log line with {what:?} within 10 s");
    };
    let port: u16 = wait_for("Greeter starting on ")
        .split("Greeter starting on ")
        .nth(1)
        .and_then(|p| p.trim().parse().ok())
        .expect("the listener's port in the log");

    for (name, half_close) in [("Ada", false), ("Grace", true)] {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut question = [0u8; 14];
        c.read_exact(&mut question).unwrap();
        assert_eq!(&question, b"Who are you?\r\n");
        c.write_all(format!("{name}\r\n").as_bytes()).unwrap();
        if half_close {
            // A client that sends its name and its EOF at once still hears the answer.
            c.shutdown(Shutdown::Write).unwrap();
        }
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, format!("Welcome, {name}!\r\n"));
    }

    // A graceful stop, as `twistrs stop` sends it: twistd's last line, then SIGTERM re-raised
    // (a shell sees 143), as `twistrs` does.
    let pid = server.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    wait_for("Server Shut Down.");
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = server.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < end, "still running 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(15), "{status:?}");
}
