//! `twistrs stop`, `status`, `restart` and `reload`: the commands scripts and init systems
//! need, which twistd lacks. All act on the process that holds the pidfile's lock, found in /proc
//! (`holder`), never on whatever PID the file holds: anyone who can write the file, or a
//! reused PID, would otherwise aim root's signals at another process. None trusts
//! `kill(pid, 0)`, which a zombie or a reused PID fools.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::ArgMatches;
use nix::sys::signal::Signal;
use twistrs_core::timer::later;

use crate::cli::SHUTDOWN_TIMEOUT;
use crate::holder::Holder;
use crate::pidfile::{self, Held, State};
use crate::upgrade;

/// The pidfile to use: the command's own `--pidfile`, else the global one; `None` if disabled.
pub fn pidfile_path(global: &ArgMatches, sub: Option<&ArgMatches>) -> Option<PathBuf> {
    let v = sub
        .and_then(|s| s.get_one::<OsString>("pidfile"))
        .or_else(|| global.get_one::<OsString>("pidfile"))
        .map_or(OsStr::new("twistrs.pid"), OsString::as_os_str);
    if v.is_empty() {
        None
    } else {
        Some(std::path::absolute(v).unwrap_or_else(|_| PathBuf::from(v)))
    }
}

/// What `stop` waits, beyond the service's drain, before SIGKILL: a `--workers` master gives
/// a worker 5 s more than its drain before killing it, and procmon's children their kill time.
const STOP_MARGIN: Duration = Duration::from_secs(10);

/// Runs a control command (`cmd` is the launcher's whole command line definition, to read
/// the running service's own options); returns its exit status.
pub fn run(name: &str, global: &ArgMatches, sub: &ArgMatches, cmd: &clap::Command) -> i32 {
    // LSB: status 4 is "unknown".
    let failed = if name == "status" { 4 } else { 1 };
    let json = name == "status" && sub.try_get_one::<bool>("json").ok().flatten() == Some(&true);
    // With --json, an unknown state is a JSON object too (the message also goes to stderr).
    let unknown = |path: Option<&Path>, e: &str| {
        say!("twistrs {name}: {e}");
        if json {
            println!("{}", crate::status::not_running(path, "unknown", Some(e)));
        }
        failed
    };
    let Some(path) = pidfile_path(global, Some(sub)) else {
        return unknown(
            None,
            "no pidfile (--pidfile= disables it), so nothing to control",
        );
    };
    let held = match pidfile::state(&path) {
        Ok(State::Running(held)) => held,
        // An empty file is what a daemon that could not remove it leaves at a clean exit
        // (LSB 3, not running); one still naming a PID was left by a process that died (1).
        Ok(State::Stale(named)) => return not_running(name, &path, !named.is_empty(), json),
        Ok(State::Absent) => return not_running(name, &path, false, json),
        Err(e) => return unknown(Some(&path), &e.to_string()),
    };
    let pid = match holder_of(name, &path, &held) {
        Ok(Some(pid)) => pid,
        // The holder exited between our two looks.
        Ok(None) => return not_running(name, &path, path.symlink_metadata().is_ok(), json),
        Err(e) => return unknown(Some(&path), &e),
    };
    let timeout = || match sub.try_get_one::<Duration>("timeout").ok().flatten() {
        Some(t) => *t,
        // `stop` without --timeout: as long as the service's own drain, and a margin, so a
        // drain that uses its whole --shutdown-timeout still ends cleanly. Saturating: a
        // drain too long for the clock never ends, nor does this wait.
        None => shutdown_timeout_of(pid, cmd)
            .unwrap_or_else(|why| {
                say!(
                    "twistrs {name}: cannot tell PID {pid}'s --shutdown-timeout ({why}); \
                     assuming the default, {} s: SIGKILL after {} s",
                    SHUTDOWN_TIMEOUT.as_secs(),
                    (SHUTDOWN_TIMEOUT + STOP_MARGIN).as_secs()
                );
                SHUTDOWN_TIMEOUT
            })
            .saturating_add(STOP_MARGIN),
    };
    match name {
        "status" if json => {
            println!("{}", crate::status::running(&path, pid));
            0
        }
        "status" => {
            println!("twistrs is running (PID {pid}, pidfile {})", path.display());
            let workers = crate::workers::of(pid);
            if !workers.is_empty() {
                let list: Vec<String> = workers.iter().map(i32::to_string).collect();
                println!("{} workers: PIDs {}", workers.len(), list.join(", "));
            }
            0
        }
        "stop" => stop(&path, &held, pid, timeout()),
        "reload" => match signal(&held, pid, Signal::SIGHUP) {
            Ok(()) => {
                println!("twistrs reloading: SIGHUP sent to PID {pid}");
                0
            }
            Err(e) => {
                say!("twistrs reload: {e}");
                1
            }
        },
        _ => restart(&path, &held, pid, timeout()),
    }
}

/// The `--shutdown-timeout` of the process `pid`, read from its command line with the
/// launcher's own parser; why not, if that cannot be read or does not parse (another
/// PID namespace, a binary of another version), for `stop` to say what it assumes instead.
fn shutdown_timeout_of(pid: i32, cmd: &clap::Command) -> Result<Duration, String> {
    let file = format!("/proc/{pid}/cmdline");
    let raw = std::fs::read(&file).map_err(|e| format!("cannot read {file}: {e}"))?;
    shutdown_timeout_in(&raw, cmd).map_err(|e| format!("{file}: {e}"))
}

/// The `--shutdown-timeout` in `raw`, a command line as /proc holds it (each argument ends
/// with a NUL), parsed with `cmd`.
fn shutdown_timeout_in(raw: &[u8], cmd: &clap::Command) -> Result<Duration, String> {
    use std::os::unix::ffi::OsStrExt;
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if raw.is_empty() {
        return Err("empty (the process is exiting?)".into());
    }
    let argv = raw
        .split(|b| *b == 0)
        .map(|a| std::ffi::OsStr::from_bytes(a).to_os_string());
    let m = cmd.clone().try_get_matches_from(argv).map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        first.strip_prefix("error: ").unwrap_or(first).to_string()
    })?;
    Ok(m.get_one::<Duration>("shutdown-timeout")
        .copied()
        .unwrap_or(SHUTDOWN_TIMEOUT))
}

/// What each command says and returns when no process holds the lock.
fn not_running(name: &str, path: &Path, left: bool, json: bool) -> i32 {
    match name {
        "status" if json => {
            let status = if left { "dead" } else { "not running" };
            println!("{}", crate::status::not_running(Some(path), status, None));
            if left { 1 } else { 3 }
        }
        "status" if left => {
            println!(
                "twistrs is not running, but its pidfile {} is left",
                path.display()
            );
            1
        }
        "status" if path.symlink_metadata().is_ok() => {
            println!(
                "twistrs is not running (its pidfile {} is empty and unlocked)",
                path.display()
            );
            3
        }
        "status" => {
            println!("twistrs is not running (no pidfile {})", path.display());
            3
        }
        "stop" => {
            println!("twistrs is not running");
            0
        }
        _ => {
            say!(
                "twistrs {name}: twistrs is not running (pidfile {}); start it with its command line",
                path.display()
            );
            1
        }
    }
}

/// `pid`'s PID in its innermost PID namespace (the last of /proc/PID/status's NSpid).
fn own_namespace_pid(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The process to act on: the holder of the lock. A file naming someone else is reported (on
/// stderr) and overruled; several holders the file names none of, or a lock whose holder
/// cannot be seen, are refused. `None` if the lock was released meanwhile.
fn holder_of(name: &str, path: &Path, held: &Held) -> Result<Option<i32>, String> {
    let shown = path.display();
    let names = if held.named.is_empty() {
        "is empty".to_string()
    } else {
        format!("names PID '{}'", held.named)
    };
    match held.holder() {
        Err(e) => Err(format!(
            "{shown} is locked, but /proc cannot be read to find which process holds it: {e}"
        )),
        Ok(Holder::Named(pid)) => Ok(Some(pid)),
        // The PID it has in its own PID namespace (a container's pidfile, on a volume, read
        // from outside): the same process, nothing to report.
        Ok(Holder::Other(pid))
            if crate::holder::parse_pid(&held.named)
                .is_some_and(|n| own_namespace_pid(pid) == Some(n)) =>
        {
            Ok(Some(pid))
        }
        Ok(Holder::Other(pid)) => {
            say!(
                "twistrs {name}: the pidfile {shown} {names}, but PID {pid} holds its lock: \
                 acting on PID {pid}"
            );
            Ok(Some(pid))
        }
        Ok(Holder::Several(pids)) => {
            let list: Vec<String> = pids.iter().map(i32::to_string).collect();
            Err(format!(
                "{shown} is locked by PIDs {} at once (a restart in progress?) and {names}, \
                 none of them: try again",
                list.join(", ")
            ))
        }
        Ok(Holder::Unseen) if held.released() => Ok(None),
        Ok(Holder::Unseen) => Err(format!(
            "{shown} is locked, but no process holding its lock can be seen (is /proc \
             readable? is the holder in another PID namespace?); not signalling the PID the \
             file names"
        )),
    }
}

/// Sends `sig` to `pid` only if it holds the lock. The check and the signal go through one
/// pidfd, so a PID reused between them is never hit.
fn signal(held: &Held, pid: i32, sig: Signal) -> Result<(), String> {
    let cannot = |e: std::io::Error| format!("cannot signal PID {pid}: {e}");
    // SAFETY: pidfd_open(2) takes a PID and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let pidfd = match fd {
        // SAFETY: a descriptor pidfd_open just returned to us, owned from here on.
        fd if fd >= 0 => Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        _ => match std::io::Error::last_os_error() {
            // A kernel older than 5.3: check, then kill(2).
            e if e.raw_os_error() == Some(libc::ENOSYS) => None,
            e => return Err(cannot(e)),
        },
    };
    if !held.holds(pid) {
        return Err(format!(
            "PID {pid} no longer holds the pidfile's lock: not signalling it"
        ));
    }
    let sent = match &pidfd {
        Some(fd) => {
            // SAFETY: pidfd_send_signal(2) on our pidfd, with no siginfo and no flags.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig as libc::c_int,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
        None => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
            .map_err(std::io::Error::from),
    };
    sent.map_err(cannot)
}

/// Waits until nobody holds the pidfile's lock (the process ended, even as a zombie).
fn wait_released(held: &Held, timeout: Duration) -> bool {
    let end = later(Instant::now(), timeout);
    loop {
        if held.released() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(path: &Path, held: &Held, pid: i32, timeout: Duration) -> i32 {
    if pid == 1 {
        // `docker exec CONTAINER twistrs stop`: once PID 1 exits, the kernel kills every
        // process of the namespace, this one too, before it can say "stopped" (status 137).
        println!(
            "twistrs stop: stopping PID 1, the first process of this PID namespace (the \
             container): it drains, then the namespace ends, and this command with it"
        );
        let _ = std::io::Write::flush(&mut std::io::stdout());
    }
    if let Err(e) = signal(held, pid, Signal::SIGTERM) {
        if held.released() {
            // It ended on its own between our look and the signal.
            return not_running("stop", path, false, false);
        }
        say!("twistrs stop: {e}");
        return 1;
    }
    if wait_released(held, timeout) {
        println!("twistrs stopped (PID {pid})");
        return 0;
    }
    say!("twistrs stop: PID {pid} still running after {timeout:?}; sending SIGKILL");
    if let Err(e) = signal(held, pid, Signal::SIGKILL) {
        say!("twistrs stop: {e}");
    }
    if wait_released(held, Duration::from_secs(5)) {
        println!("twistrs killed (PID {pid})");
        0
    } else {
        say!(
            "twistrs stop: {} is still locked: PID {pid} did not stop",
            path.display()
        );
        1
    }
}

fn restart(path: &Path, held: &Held, pid: i32, timeout: Duration) -> i32 {
    // The daemon would refuse, but it writes its report inside its jail, where this command
    // never finds it: said at once instead of after --timeout. (A master never chroots: its
    // workers do, and it restarts them.)
    if let Ok(root) = std::fs::read_link(format!("/proc/{pid}/root"))
        && root != Path::new("/")
        && std::fs::read_link("/proc/self/root").is_ok_and(|own| own != root)
    {
        say!(
            "twistrs restart: PID {pid} runs chrooted in {}: {}",
            root.display(),
            crate::launcher::CHROOTED_RESTART
        );
        return 1;
    }
    // PID 1 of its namespace (a container's first process, as seen from anywhere: the last
    // PID of NSpid is the one in its own namespace) refuses too: said at once.
    if own_namespace_pid(pid) == Some(1) {
        say!(
            "twistrs restart: PID {pid} is PID 1 of its PID namespace: {}",
            crate::launcher::PID1_RESTART
        );
        return 1;
    }
    // The report's directory, opened once and checked to hold this very pidfile: every step
    // with the report after this is relative to it (see `ReportDir`). Failing that, no report
    // is made and a success is told from the pidfile alone.
    let report = match upgrade::ReportDir::open(path, held) {
        Ok(dir) => Some(dir),
        Err(upgrade::Unverified::Elsewhere) => {
            say!(
                "twistrs restart: {} no longer leads to the locked pidfile (a directory on its \
                 path moved or was replaced?): no report file made, only a success can be told",
                path.display()
            );
            None
        }
        Err(upgrade::Unverified::Gone) => None,
    };
    if let Some(r) = &report {
        r.remove();
        r.prepare(pid);
    }
    let clean_up = || {
        if let Some(r) = &report {
            r.remove();
        }
    };
    if let Err(e) = signal(held, pid, Signal::SIGUSR2) {
        clean_up();
        say!("twistrs restart: {e}");
        return 1;
    }
    let end = later(Instant::now(), timeout);
    // The report is written by the daemon's user beside the pidfile, which a daemon that
    // dropped privileges may not be allowed to do. The successor writes its PID into the
    // pidfile (through the descriptor it inherited) once it serves: a new PID there that holds
    // the lock is the same news, taken once the report has had a moment to come.
    let mut successor: Option<(i32, Instant)> = None;
    loop {
        if successor.is_none()
            && let Some(new) = held.named_now().and_then(|s| crate::holder::parse_pid(&s))
            && new != pid
            && held.holds(new)
        {
            // Not past restart's own --timeout, however short: the last turn decides.
            successor = Some((new, (Instant::now() + Duration::from_secs(2)).min(end)));
        }
        let now = Instant::now();
        if let Some((new, by)) = successor
            && now >= by
        {
            // Still holding: a successor that wrote its PID and then died (killed by its
            // predecessor at the start deadline, say) handed nothing over.
            if held.holds(new) {
                clean_up();
                println!("twistrs restarted: PID {pid} handed over to PID {new}");
                return 0;
            }
            successor = None;
        }
        // Nobody holds the lock any more: the service stopped (a stop came before or during
        // the restart, and the report, if any, was written before the exit). Said at once
        // rather than after --timeout.
        let gone = held.released();
        if let Some(text) = report.as_ref().and_then(upgrade::ReportDir::read) {
            clean_up();
            return match told(pid, &text) {
                Ok(line) => {
                    println!("{line}");
                    0
                }
                Err(line) => {
                    say!("{line}");
                    1
                }
            };
        }
        if gone {
            clean_up();
            say!(
                "twistrs restart: PID {pid} stopped and no process holds {} now: twistrs is \
                 not running (was it stopped meanwhile?)",
                path.display()
            );
            return 1;
        }
        if now >= end {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    clean_up();
    say!(
        "twistrs restart: no answer from PID {pid} within {timeout:?} (its log says how the \
         restart went)"
    );
    1
}

/// What `restart` says of the report `text` (the daemon's `ok NEWPID`, `failed WHY`, or
/// `stopped WHY` when a stop came during the restart): the line for stdout on success, else
/// for stderr. The text comes from the daemon's user and goes to the terminal of whoever
/// restarts it, root often: its control characters are escaped.
fn told(pid: i32, text: &str) -> Result<String, String> {
    let text = upgrade::printable(text);
    match text.split_once(' ') {
        Some(("ok", new)) => Ok(format!(
            "twistrs restarted: PID {pid} handed over to PID {new}"
        )),
        // A stop came during the restart: neither process serves on.
        Some(("stopped", msg)) => Err(format!("twistrs restart: {msg}")),
        Some((_, msg)) => Err(format!("twistrs restart: {msg} (PID {pid} keeps serving)")),
        None => Err(format!("twistrs restart: unreadable report '{text}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reaches_the_terminal_without_its_control_characters() {
        assert_eq!(
            told(7, "ok 8"),
            Ok("twistrs restarted: PID 7 handed over to PID 8".into())
        );
        assert_eq!(
            told(7, "ok 8\u{1b}]0;owned\u{7}"),
            Ok("twistrs restarted: PID 7 handed over to PID 8\\u{1b}]0;owned\\u{7}".into())
        );
        assert_eq!(
            told(7, "failed no\u{1b}[2J\nroot# "),
            Err("twistrs restart: no\\u{1b}[2J\\nroot#  (PID 7 keeps serving)".into())
        );
        assert_eq!(
            told(7, "stopped SIGTERM came during the restart"),
            Err("twistrs restart: SIGTERM came during the restart".into())
        );
        let line = told(7, "\u{1b}[31m").unwrap_err();
        assert!(line.ends_with("'\\u{1b}[31m'"), "{line}");
        for line in [told(7, "ok \u{9b}\r"), told(7, "x\u{7f} y")] {
            let line = line.unwrap_or_else(|e| e);
            assert!(!line.chars().any(char::is_control), "{line:?}");
        }
    }

    // It parses `echo` command lines: the plugin is wire's (CI also tests the library
    // without the built-in plugins).
    #[cfg(feature = "wire")]
    #[test]
    fn the_services_shutdown_timeout_from_its_command_line() {
        let cmd = crate::cli::build_command(&crate::builtin_plugins());
        let of = |raw: &[u8]| shutdown_timeout_in(raw, &cmd);
        assert_eq!(of(b"twistrs\0echo\0"), Ok(SHUTDOWN_TIMEOUT));
        assert_eq!(
            of(b"/usr/bin/twistrs\0--shutdown-timeout\x002.5\0-n\0echo\0"),
            Ok(Duration::from_millis(2500))
        );
        // Too long for a Duration: the longest wait, which `stop` then never cuts short.
        for huge in ["18446744073709551615", "1e300"] {
            let raw = format!("twistrs\0--shutdown-timeout={huge}\0echo\0");
            assert_eq!(of(raw.as_bytes()), Ok(Duration::MAX), "{huge}");
        }
        assert_eq!(
            of(b"").unwrap_err(),
            "empty (the process is exiting?)".to_string()
        );
        let e = of(b"python3\0-c\0pass\0").unwrap_err();
        assert!(e.starts_with("unexpected argument '-c'"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
}
