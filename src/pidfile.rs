//! Lock-based pidfiles: "is one already running?" is answered by a lock, never by `kill(pid, 0)`.
//!
//! The running process holds an exclusive `flock` on the open pidfile for its whole life. A
//! start that cannot take the lock refuses with twistd's message; a start that can take it owns
//! the file, whatever it held before (a stale PID, nothing, garbage, or a PID reused by another
//! program: twistd bugs 3851 and 7555), and logs that it replaced it. The kernel drops the lock
//! when the process dies, however it dies.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// A held pidfile.
pub struct Pidfile {
    path: PathBuf,
    lock: Flock<File>,
    /// What the file held before we took it, if anything.
    pub previous: Option<String>,
}

/// Why a pidfile could not be taken.
#[derive(Debug)]
pub enum PidfileError {
    /// Another process holds the lock; its PID as the file says.
    Running {
        path: PathBuf,
        pid: String,
    },
    Io {
        path: PathBuf,
        error: io::Error,
    },
}

impl std::fmt::Display for PidfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PidfileError::Running { pid, .. } => write!(
                f,
                "Another twistrs server is running, PID {pid}\n\n\
                 This could either be a previously started instance of your application or a\n\
                 different application entirely. To start a new one, either run it in some other\n\
                 directory, or use the --pidfile and --logfile parameters to avoid clashes."
            ),
            PidfileError::Io { path, error } => {
                write!(f, "cannot open pidfile {}: {error}", path.display())
            }
        }
    }
}

/// What a pidfile says about its owner, without taking it (for `status` and `stop`).
#[derive(Debug, PartialEq, Eq)]
pub enum State {
    /// No pidfile.
    Absent,
    /// A pidfile nobody holds (the owner died without cleaning up), with its content.
    Stale(String),
    /// Held by a live process, with the PID the file names.
    Running(String),
}

fn read_trimmed(f: &mut File) -> io::Result<String> {
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(0))?;
    f.take(64).read_to_end(&mut buf)?;
    // Garbage need not be UTF-8.
    Ok(String::from_utf8_lossy(&buf).trim().to_string())
}

impl Pidfile {
    /// Takes the pidfile at `path` (made absolute), or says who holds it.
    pub fn acquire(path: &Path) -> Result<Pidfile, PidfileError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let io_err = |error| PidfileError::Io {
            path: path.clone(),
            error,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(io_err)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let prev = read_trimmed(&mut lock).map_err(io_err)?;
                Ok(Pidfile {
                    path,
                    lock,
                    previous: (!prev.is_empty()).then_some(prev),
                })
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let pid = read_trimmed(&mut file).unwrap_or_default();
                Err(PidfileError::Running {
                    path,
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid
                    },
                })
            }
            Err((_, e)) => Err(io_err(io::Error::from(e))),
        }
    }

    /// Adopts a pidfile descriptor inherited from the process being replaced by `restart`: the
    /// lock is the same open file, so it is held across the hand-over.
    pub fn inherit(path: &Path, fd: RawFd) -> Result<Pidfile, PidfileError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        // SAFETY: the fd was passed to us by our predecessor for this purpose, exactly once.
        let file = unsafe { File::from_raw_fd(fd) };
        let _ = nix::fcntl::fcntl(
            &file,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        // Already locked by the shared open file description; this is a no-op re-lock.
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            PidfileError::Io {
                path: path.clone(),
                error: io::Error::from(e),
            }
        })?;
        Ok(Pidfile {
            path,
            lock,
            previous: None,
        })
    }

    /// Writes our PID (decimal, no newline, as twistd).
    pub fn write_pid(&mut self) -> io::Result<()> {
        let pid = std::process::id().to_string();
        self.lock.set_len(0)?;
        self.lock.seek(SeekFrom::Start(0))?;
        self.lock.write_all(pid.as_bytes())?;
        self.lock.flush()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw_fd(&self) -> RawFd {
        self.lock.as_raw_fd()
    }

    /// Hands the owner and group to the user privileges are dropped to, so that user can
    /// still rewrite it.
    pub fn chown(
        &self,
        uid: Option<nix::unistd::Uid>,
        gid: Option<nix::unistd::Gid>,
    ) -> io::Result<()> {
        nix::unistd::fchown(&*self.lock, uid, gid).map_err(io::Error::from)
    }

    /// Removes the file at a clean exit. If the directory does not let us (privileges were
    /// dropped), empties it instead: an empty, unlocked pidfile never blocks a start.
    pub fn remove(self) {
        if std::fs::remove_file(&self.path).is_err() {
            let _ = self.lock.set_len(0);
        }
    }

    /// Leaves the file and its lock as they are: the successor of a restart shares the open
    /// file and owns it now. (Dropping the lock normally would unlock it for both.)
    pub fn release(self) {
        std::mem::forget(self.lock);
    }
}

/// What the pidfile at `path` says, without disturbing its owner.
pub fn state(path: &Path) -> io::Result<State> {
    let file = match OpenOptions::new().read(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::Absent),
        Err(e) => return Err(e),
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(mut f) => Ok(State::Stale(read_trimmed(&mut f)?)),
        Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => Ok(State::Running(read_trimmed(&mut f)?)),
        Err((_, e)) => Err(io::Error::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_decides_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.pid");
        assert_eq!(state(&p).unwrap(), State::Absent);
        for junk in ["", "garbage", "1", "999999"] {
            std::fs::write(&p, junk).unwrap();
            assert_eq!(state(&p).unwrap(), State::Stale(junk.to_string()));
            let mut held = Pidfile::acquire(&p).expect("a stale file never blocks");
            assert_eq!(held.previous.as_deref(), (!junk.is_empty()).then_some(junk));
            held.write_pid().unwrap();
            let me = std::process::id().to_string();
            assert_eq!(std::fs::read_to_string(&p).unwrap(), me);
            assert_eq!(state(&p).unwrap(), State::Running(me.clone()));
            match Pidfile::acquire(&p) {
                Err(PidfileError::Running { pid, .. }) => assert_eq!(pid, me),
                other => panic!("second acquire: {:?}", other.err()),
            }
            held.remove();
            assert_eq!(state(&p).unwrap(), State::Absent);
        }
    }
}
