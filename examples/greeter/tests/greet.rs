//! The example launcher, built by cargo, run for real and talked to over TCP.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_greeter-twistrs");

#[test]
fn the_launcher_runs_its_own_plugin_beside_the_built_in_ones() {
    let help = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("greet") && help.contains("echo"), "{help}");

    let dir = std::env::temp_dir();
    let mut child = Command::new(BIN)
        .args(["-n", "--pidfile=", "greet", "--greeting", "Welcome"])
        .args(["--listen", "tcp:0:interface=127.0.0.1"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start greeter-twistrs");
    let mut log = BufReader::new(child.stdout.take().expect("stdout"));
    let end = Instant::now() + Duration::from_secs(10);
    let mut port = None;
    let mut line = String::new();
    while port.is_none() && Instant::now() < end {
        line.clear();
        if log.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        port = line
            .split("Greeter starting on ")
            .nth(1)
            .and_then(|p| p.trim().parse::<u16>().ok());
    }
    let port = port.expect("the listener's port in the log");
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut question = [0u8; 14];
    c.read_exact(&mut question).unwrap();
    assert_eq!(&question, b"Who are you?\r\n");
    c.write_all(b"Ada\r\n").unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "Welcome, Ada!\r\n");
    let _ = child.kill();
    let _ = child.wait();
}
