//! `twistrs stop`, `status` and `restart`: the commands scripts and init systems need, which
//! twistd lacks. All three read the pidfile and its lock; none trusts `kill(pid, 0)`, which a
//! zombie or a reused PID fools.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::ArgMatches;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::pidfile::{self, State};
use crate::upgrade;

/// The pidfile to use: the command's own `--pidfile`, else the global one; `None` if disabled.
pub fn pidfile_path(global: &ArgMatches, sub: Option<&ArgMatches>) -> Option<PathBuf> {
    let v = sub
        .and_then(|s| s.get_one::<String>("pidfile"))
        .or_else(|| global.get_one::<String>("pidfile"))
        .map_or("twistrs.pid", String::as_str);
    if v.is_empty() {
        None
    } else {
        Some(std::path::absolute(v).unwrap_or_else(|_| PathBuf::from(v)))
    }
}

/// Runs a control command; returns its exit status.
pub fn run(name: &str, global: &ArgMatches, sub: &ArgMatches) -> i32 {
    let Some(path) = pidfile_path(global, Some(sub)) else {
        eprintln!("twistrs {name}: no pidfile (--pidfile= disables it), so nothing to control");
        return if name == "status" { 4 } else { 1 };
    };
    let st = match pidfile::state(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("twistrs {name}: {e}");
            return if name == "status" { 4 } else { 1 };
        }
    };
    let timeout = sub
        .try_get_one::<f64>("timeout")
        .ok()
        .flatten()
        .copied()
        .unwrap_or(10.0);
    match name {
        "status" => status(&path, st),
        "stop" => stop(&path, st, Duration::from_secs_f64(timeout)),
        _ => restart(&path, st, Duration::from_secs_f64(timeout)),
    }
}

fn status(path: &std::path::Path, st: State) -> i32 {
    match st {
        State::Running(pid) => {
            println!("twistrs is running (PID {pid}, pidfile {})", path.display());
            0
        }
        State::Stale(_) => {
            println!(
                "twistrs is not running, but its pidfile {} is left",
                path.display()
            );
            1
        }
        State::Absent => {
            println!("twistrs is not running (no pidfile {})", path.display());
            3
        }
    }
}

fn parse_pid(pid: &str, path: &std::path::Path) -> Result<Pid, String> {
    match pid.parse::<i32>() {
        Ok(p) if p > 1 => Ok(Pid::from_raw(p)),
        _ => Err(format!(
            "{} is locked by a running process but names no valid PID ('{pid}')",
            path.display()
        )),
    }
}

/// Waits until nobody holds the pidfile's lock (the process ended, even as a zombie).
fn wait_released(path: &std::path::Path, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if !matches!(pidfile::state(path), Ok(State::Running(_))) {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(path: &std::path::Path, st: State, timeout: Duration) -> i32 {
    let pid = match st {
        State::Absent | State::Stale(_) => {
            println!("twistrs is not running");
            return 0;
        }
        State::Running(pid) => pid,
    };
    let pid = match parse_pid(&pid, path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("twistrs stop: {e}");
            return 1;
        }
    };
    if let Err(e) = kill(pid, Signal::SIGTERM) {
        eprintln!("twistrs stop: cannot signal PID {pid}: {e}");
        return 1;
    }
    if wait_released(path, timeout) {
        println!("twistrs stopped (PID {pid})");
        return 0;
    }
    eprintln!("twistrs stop: PID {pid} still running after {timeout:?}; sending SIGKILL");
    let _ = kill(pid, Signal::SIGKILL);
    if wait_released(path, Duration::from_secs(5)) {
        println!("twistrs killed (PID {pid})");
        0
    } else {
        eprintln!("twistrs stop: PID {pid} did not stop");
        1
    }
}

fn restart(path: &std::path::Path, st: State, timeout: Duration) -> i32 {
    let pid = match st {
        State::Running(pid) => pid,
        _ => {
            eprintln!(
                "twistrs restart: twistrs is not running (pidfile {}); start it with its command line",
                path.display()
            );
            return 1;
        }
    };
    let pid = match parse_pid(&pid, path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("twistrs restart: {e}");
            return 1;
        }
    };
    let report = upgrade::status_path(path);
    let _ = std::fs::remove_file(&report);
    if let Err(e) = kill(pid, Signal::SIGUSR2) {
        eprintln!("twistrs restart: cannot signal PID {pid}: {e}");
        return 1;
    }
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some(text) = upgrade::read_status(path) {
            let _ = std::fs::remove_file(&report);
            return match text.split_once(' ') {
                Some(("ok", new)) => {
                    println!("twistrs restarted: PID {pid} handed over to PID {new}");
                    0
                }
                Some((_, msg)) => {
                    eprintln!("twistrs restart: {msg} (PID {pid} keeps serving)");
                    1
                }
                None => {
                    eprintln!("twistrs restart: unreadable report '{text}'");
                    1
                }
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("twistrs restart: no answer from PID {pid} within {timeout:?}");
    1
}
