//! Daemonizing with a start-up status pipe: the parent exits only once the daemon serves.
//!
//! The double fork, `setsid` and stdio to /dev/null come from the `daemonize` crate (its
//! `execute`, never its unsound `privileged_action`). Around it, a pipe made before the fork
//! carries the daemon's verdict back: `0` once the pidfile is written and every listener is
//! bound, or `1 <message>`. The parent prints the whole message (twistd cuts it to 100 bytes)
//! and exits 1, so `systemd Type=forking` with `PIDFile=` has no race and scripts see failures.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

/// The daemon's end of the status pipe.
pub struct StatusWriter {
    pipe: Option<File>,
    /// The process reading it prints a failure on stderr itself (the starter `daemonize`
    /// left waiting), so the daemon does not print it again.
    prints: bool,
}

impl StatusWriter {
    /// No parent is waiting (`-n`, or a restart's successor reporting elsewhere).
    pub fn none() -> Self {
        StatusWriter {
            pipe: None,
            prints: false,
        }
    }

    /// Wraps a descriptor to report on.
    pub fn from_fd(fd: OwnedFd) -> Self {
        StatusWriter {
            pipe: Some(File::from(fd)),
            prints: false,
        }
    }

    /// Start-up succeeded.
    pub fn ok(&mut self) {
        if let Some(mut f) = self.pipe.take() {
            let _ = f.write_all(b"0");
        }
    }

    /// Start-up failed with `msg`. True if the reader prints it on stderr (the daemon's
    /// starter).
    pub fn fail(&mut self, msg: &str) -> bool {
        match self.pipe.take() {
            Some(mut f) => f.write_all(format!("1 {msg}").as_bytes()).is_ok() && self.prints,
            None => false,
        }
    }
}

/// What the parent read from the pipe, as an exit status and a message for stderr. The
/// message may quote what the daemon read (a file's line, a name) after it dropped to the
/// `-u` user, and goes to the terminal of whoever started it, root often: its control
/// characters are escaped, line by line, as a restart's report is.
pub fn verdict(report: &str, log: Option<&Path>) -> (i32, Option<String>) {
    match report.split_once(' ').map_or((report, ""), |(a, b)| (a, b)) {
        ("0", _) => (0, None),
        ("1", msg) if !msg.is_empty() => {
            let lines: Vec<String> = msg.split('\n').map(crate::upgrade::printable).collect();
            (1, Some(lines.join("\n")))
        }
        _ => {
            let see = log.map_or(String::new(), |p| {
                format!("; please look at the log file {}", p.display())
            });
            (1, Some(format!("the daemon exited during start-up{see}")))
        }
    }
}

/// Forks into the background in `workdir` with `umask`. In the daemon, `status` becomes the
/// pipe to the starter, also when going into the background fails (stdio cannot be moved to
/// /dev/null): the error is then returned for the start to fail as any other failure does,
/// giving its pidfile up and logging it, and reported. In the original process, waits for
/// the verdict and exits with it.
pub fn daemonize(
    workdir: &Path,
    umask: u32,
    log: Option<&Path>,
    status: &mut StatusWriter,
) -> Result<(), String> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot create the status pipe: {e}"))?;
    match daemonize::Daemonize::new()
        .working_directory(workdir)
        .umask(umask)
        .execute()
    {
        daemonize::Outcome::Parent(Ok(_)) => {
            drop(w);
            let mut report = String::new();
            let _ = File::from(r).read_to_string(&mut report);
            let (code, msg) = verdict(&report, log);
            if let Some(m) = msg {
                say!("twistrs: {m}");
            }
            std::process::exit(code);
        }
        daemonize::Outcome::Parent(Err(e)) => Err(format!("cannot daemonize: {e}")),
        outcome @ daemonize::Outcome::Child(_) => {
            drop(r);
            *status = StatusWriter {
                pipe: Some(File::from(w)),
                prints: true,
            };
            match outcome {
                daemonize::Outcome::Child(Err(e)) => Err(format!("cannot daemonize: {e}")),
                _ => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(verdict("0", None), (0, None));
        assert_eq!(
            verdict("1 zone line 3: \x1b]0;owned\x07 bad\nsecond line", None),
            (
                1,
                Some("zone line 3: \\u{1b}]0;owned\\u{7} bad\nsecond line".to_string())
            )
        );
        assert_eq!(
            verdict(
                "1 Couldn't listen on 127.0.0.1:80: Address already in use (os error 98).",
                None
            ),
            (
                1,
                Some(
                    "Couldn't listen on 127.0.0.1:80: Address already in use (os error 98).".into()
                )
            )
        );
        let (code, msg) = verdict("", Some(Path::new("/x/twistrs.log")));
        assert_eq!(code, 1);
        assert!(msg.unwrap().contains("/x/twistrs.log"));
    }
}
