//! Lock-based pidfiles: "is one already running?" is answered by a lock, never by `kill(pid, 0)`.
//!
//! The running process holds an exclusive `flock` on the open pidfile for its whole life. A
//! start that cannot take the lock refuses with twistd's message; a start that can take it owns
//! the file, whatever it held before (a stale PID, nothing, garbage, or a PID reused by another
//! program: twistd bugs 3851 and 7555), and logs that it replaced it. The kernel drops the lock
//! when the process dies, however it dies.
//!
//! The file is only ever opened as itself: never through a symbolic link, and never when it is
//! a directory, FIFO, device or a file with several names, so a planted link cannot make a
//! root daemon (or root's `twistrs status`) write into, or hang on, some other file.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl, openat};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

use crate::holder::{self, FileId, Holder};

/// A held pidfile.
pub struct Pidfile {
    path: PathBuf,
    /// Locked. Closing it does not unlock a lock shared with a restart's successor; the kernel
    /// drops the lock when the last descriptor of this open file closes.
    file: File,
    /// What the file held before we took it, if anything.
    pub previous: Option<String>,
    /// Passed by the process a restart replaces, which still serves until we do.
    inherited: bool,
    /// The directory the file was taken in (O_PATH) and its name there. The file is removed
    /// and a restart's report written relative to it, never through the path again: a
    /// process that stays root (a `--workers` master, one without `-u`) would otherwise
    /// follow a directory on the path that the service user swapped for a link. During the
    /// start it also lets a start that fails once inside `--chroot` (whose jail does not
    /// reach the path) remove the file; a chrooted process lets go of it once it serves
    /// ([`Pidfile::serving`]), holding nothing outside its jail.
    dir: Option<(OwnedFd, OsString)>,
}

/// Why a pidfile could not be taken.
#[derive(Debug)]
pub enum PidfileError {
    /// Another process holds the lock: its PID, as seen in /proc if it can be, else as the
    /// file says.
    Running {
        pid: String,
    },
    /// The path is not a plain regular file (`what` says what it is instead).
    Refused {
        path: PathBuf,
        what: String,
    },
    Io {
        path: PathBuf,
        error: io::Error,
    },
}

impl std::fmt::Display for PidfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PidfileError::Running { pid } => write!(
                f,
                "Another twistrs server is running, PID {pid}\n\n\
                 This could either be a previously started instance of your application or a\n\
                 different application entirely. To start a new one, either run it in some other\n\
                 directory, or use the --pidfile and --logfile parameters to avoid clashes."
            ),
            PidfileError::Refused { path, what } => write!(
                f,
                "pidfile {} is {what}, not a regular file: refusing to use it",
                path.display()
            ),
            PidfileError::Io { path, error } => {
                write!(f, "cannot open pidfile {}: {error}", path.display())
            }
        }
    }
}

/// What a pidfile says about its owner, without taking it (for `status`, `stop`, `restart`).
#[derive(Debug)]
pub enum State {
    /// No pidfile.
    Absent,
    /// A pidfile nobody holds (the owner died without cleaning up), with its content.
    Stale(String),
    /// Held by a live process.
    Running(Held),
}

/// A pidfile that some process holds locked, open (unlocked) in ours to find and watch it.
#[derive(Debug)]
pub struct Held {
    file: File,
    id: FileId,
    /// What the file says: a hint for finding the holder, never trusted as one.
    pub named: String,
}

impl Held {
    /// Who holds the lock: the PID the file names if it does, else whoever does.
    pub fn holder(&self) -> io::Result<Holder> {
        holder::resolve(&self.named, self.id)
    }

    /// What the file says now: a restart's successor writes its PID once it serves.
    pub fn named_now(&self) -> Option<String> {
        read_trimmed(&self.file).ok()
    }

    /// True if `pid` holds the lock on this very file.
    pub fn holds(&self, pid: i32) -> bool {
        holder::holds(pid, self.id)
    }

    /// The pidfile's identity, to tell whether a name found later is still this file.
    pub fn id(&self) -> FileId {
        self.id
    }

    /// True while the file still has a name somewhere (it was not removed).
    pub fn linked(&self) -> bool {
        self.file.metadata().is_ok_and(|md| md.nlink() > 0)
    }

    /// True once no process holds the lock on this file (this inode, whatever its name is by
    /// now: a zombie holds nothing).
    pub fn released(&self) -> bool {
        match self.file.try_lock_shared() {
            Ok(()) => {
                let _ = self.file.unlock();
                true
            }
            Err(_) => false,
        }
    }
}

fn read_trimmed(mut f: &File) -> io::Result<String> {
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(0))?;
    f.take(64).read_to_end(&mut buf)?;
    // Garbage need not be UTF-8.
    Ok(String::from_utf8_lossy(&buf).trim().to_string())
}

/// What a path is, if it is not a regular file with one name.
fn not_plain(md: &Metadata) -> Option<String> {
    let t = md.file_type();
    let what = if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if !t.is_file() {
        "not a file"
    } else if md.nlink() > 1 {
        return Some(format!("a file with {} hard links", md.nlink()));
    } else {
        return None;
    };
    Some(what.to_string())
}

/// Opens `path` with `opts` as a pidfile (or the restart report beside it): without following
/// a symbolic link, without blocking on a FIFO, and only if it is a plain regular file.
pub(crate) fn open_plain(path: &Path, opts: &mut OpenOptions) -> Result<File, PidfileError> {
    let refused = |what| PidfileError::Refused {
        path: path.to_path_buf(),
        what,
    };
    let io_err = |error| PidfileError::Io {
        path: path.to_path_buf(),
        error,
    };
    // Checked before opening, so a FIFO or device is never opened at all...
    match std::fs::symlink_metadata(path) {
        Ok(md) => {
            if let Some(what) = not_plain(&md) {
                return Err(refused(what));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let file = opts
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refused("a symbolic link".into()),
            _ => io_err(e),
        })?;
    // ...and after, on what was opened, in case the path was swapped in between.
    if let Some(what) = not_plain(&file.metadata().map_err(io_err)?) {
        return Err(refused(what));
    }
    fcntl(&file, FcntlArg::F_SETFL(OFlag::empty())).map_err(|e| io_err(e.into()))?;
    Ok(file)
}

/// What `name` in the directory `dir` is, without following a link and without opening the
/// file itself (O_PATH: no FIFO to block on, no device to wake); `None` if it is not there.
pub(crate) fn metadata_at(dir: BorrowedFd, name: &OsStr) -> io::Result<Option<Metadata>> {
    match openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => File::from(fd).metadata().map(Some),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `open_plain` relative to the directory `dir` (the restart report beside a pidfile whose
/// directory was opened once): `name` is looked up in that very directory, whatever the path
/// that led to it leads to by now. `flags` are the access and creation flags.
pub(crate) fn open_plain_at(
    dir: BorrowedFd,
    name: &OsStr,
    flags: OFlag,
    mode: u32,
) -> io::Result<File> {
    let refused = |what: String| io::Error::other(format!("{what}, not a regular file"));
    if let Some(md) = metadata_at(dir, name)?
        && let Some(what) = not_plain(&md)
    {
        return Err(refused(what));
    }
    let fd = openat(
        dir,
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map_err(|e| match e {
        Errno::ELOOP => refused("a symbolic link".into()),
        e => e.into(),
    })?;
    let file = File::from(fd);
    // Again on what was opened, in case the name was swapped in between.
    if let Some(what) = not_plain(&file.metadata()?) {
        return Err(refused(what));
    }
    fcntl(&file, FcntlArg::F_SETFL(OFlag::empty()))?;
    Ok(file)
}

/// The directory `path` is in (O_PATH) and its name there, opened by the path as it leads
/// now.
fn directory_of(path: &Path) -> Option<(OwnedFd, OsString)> {
    let (dir, name) = (path.parent()?, path.file_name()?);
    let fd = nix::fcntl::open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    Some((fd, name.to_os_string()))
}

/// Opens the pidfile for writing, creating it with the run's umask if it does not exist; true
/// if this call made it.
fn create_or_open(path: &Path, umask: Option<u32>) -> Result<(File, bool), PidfileError> {
    let mode = 0o666 & !umask.unwrap_or(0);
    let mut rw = OpenOptions::new();
    rw.read(true).write(true);
    let is = |e: &PidfileError, kind| matches!(e, PidfileError::Io { error, .. } if error.kind() == kind);
    // Bounded: a round fails only if another process removes the file between our two opens.
    for _ in 0..3 {
        match open_plain(path, rw.clone().create_new(true).mode(mode)) {
            Ok(file) => {
                if umask.is_some() {
                    // The process umask is still the caller's: set the mode exactly.
                    file.set_permissions(std::fs::Permissions::from_mode(mode))
                        .map_err(|error| PidfileError::Io {
                            path: path.to_path_buf(),
                            error,
                        })?;
                }
                return Ok((file, true));
            }
            Err(e) if !is(&e, io::ErrorKind::AlreadyExists) => return Err(e),
            Err(_) => {}
        }
        match open_plain(path, &mut rw.clone()) {
            Err(e) if is(&e, io::ErrorKind::NotFound) => continue,
            other => return other.map(|f| (f, false)),
        }
    }
    Err(PidfileError::Io {
        path: path.to_path_buf(),
        error: io::Error::other("it kept being created and removed while twistrs opened it"),
    })
}

/// Removes the name of `file`: in `dir` (a directory held open and the name there) if given,
/// else by `path`; and only while that name still names `file`, since one put there since is
/// not ours to remove.
fn unlink_if_names(dir: Option<&(OwnedFd, OsString)>, path: &Path, file: &File) -> bool {
    match dir {
        Some((dir, name)) => {
            let held = file.metadata().ok().map(|md| FileId::of(&md));
            let named = metadata_at(dir.as_fd(), name).ok().flatten();
            held.is_some()
                && named.map(|md| FileId::of(&md)) == held
                && nix::unistd::unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir).is_ok()
        }
        None => twistrs_core::linelog::unmake(path, file, false),
    }
}

impl Pidfile {
    /// Takes the pidfile at `path` (made absolute), or says who holds it. A new file gets mode
    /// 0666 less `umask`, the umask the run will use (twistd creates it once that umask is set,
    /// so a daemon's is 0600); with `None`, the process umask applies.
    ///
    /// A stale file (no holder) is removed and made anew, as twistd does: kept in place it
    /// kept its old owner and mode (another user's, 0666), and whoever still had it open for
    /// writing. Where it cannot be removed (a directory we may not write in), it is used as
    /// it is.
    pub fn acquire(path: &Path, umask: Option<u32>) -> Result<Pidfile, PidfileError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let io_err = |error| PidfileError::Io {
            path: path.clone(),
            error,
        };
        let mut previous = None;
        // Bounded: a round is taken again only when the file was removed or replaced between
        // our open and our lock (a holder removes it as it exits; a rival start replaced a
        // stale one), or when we replaced a stale one ourselves.
        for round in 0..4 {
            let (file, made) = create_or_open(&path, umask)?;
            match file.try_lock() {
                // The lock must be on the file the path names, not on one removed meanwhile.
                Ok(()) if !twistrs_core::linelog::names(&path, &file) => continue,
                Ok(()) => {
                    if !made {
                        let prev = read_trimmed(&file).map_err(io_err)?;
                        if !prev.is_empty() {
                            previous = Some(prev);
                        }
                        if round < 3 && unlink_if_names(directory_of(&path).as_ref(), &path, &file)
                        {
                            continue;
                        }
                    }
                    // Without it (a directory that vanished meanwhile), removal goes by the path.
                    let dir = directory_of(&path);
                    return Ok(Pidfile {
                        path,
                        file,
                        previous,
                        inherited: false,
                        dir,
                    });
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    let named = read_trimmed(&file).unwrap_or_default();
                    let holder = file
                        .metadata()
                        .and_then(|md| holder::resolve(&named, FileId::of(&md)));
                    let pid = match holder {
                        Ok(Holder::Named(pid) | Holder::Other(pid)) => pid.to_string(),
                        _ if named.is_empty() => "unknown".into(),
                        _ => named,
                    };
                    return Err(PidfileError::Running { pid });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
            }
        }
        Err(io_err(io::Error::other(
            "it kept being removed or replaced while twistrs took it",
        )))
    }

    /// Adopts a pidfile descriptor inherited from the process being replaced by `restart`: the
    /// lock is the same open file, so it is held across the hand-over.
    pub fn inherit(path: &Path, fd: RawFd) -> Result<Pidfile, PidfileError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        // SAFETY: the fd was passed to us by our predecessor for this purpose, exactly once.
        let file = unsafe { File::from_raw_fd(fd) };
        let _ = fcntl(&file, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
        // Already locked by the shared open file description; this is a no-op re-lock that
        // checks the descriptor is the locked pidfile.
        file.try_lock().map_err(|e| PidfileError::Io {
            path: path.clone(),
            error: io::Error::from(e),
        })?;
        // The directory, if the name in it is still the file we were given.
        let held = file.metadata().ok().map(|md| FileId::of(&md));
        let dir = directory_of(&path).filter(|(fd, name)| {
            metadata_at(fd.as_fd(), name)
                .ok()
                .flatten()
                .is_some_and(|md| Some(FileId::of(&md)) == held)
        });
        Ok(Pidfile {
            path,
            file,
            previous: None,
            inherited: true,
            dir,
        })
    }

    /// Writes our PID (decimal, no newline, as twistd). The file is never empty meanwhile: a
    /// restart's successor writes it while its predecessor holds the lock too, and a `status`,
    /// `stop` or `reload` that read it empty then found two holders and the file naming
    /// neither, and refused. So the PID goes first, in one write over what was there (padded
    /// with spaces, which every reader trims), and the file is cut to it after.
    pub fn write_pid(&mut self) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let pid = std::process::id().to_string();
        let old = self.file.metadata()?.len();
        let mut text = pid.clone().into_bytes();
        if old <= 64 {
            text.resize(text.len().max(old as usize), b' ');
        } else {
            // Garbage left by someone else: no reader takes it for a PID anyway.
            self.file.set_len(0)?;
        }
        self.file.write_all_at(&text, 0)?;
        self.file.set_len(pid.len() as u64)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Removes the file, at a clean exit or a failed start, if its name still names the file
    /// we hold locked: one put there since (ours removed by hand, another start's) is not
    /// ours to remove. During the start the name is looked up in the directory it was taken
    /// in, also from inside `--chroot`; later by the path. When it cannot be removed (the
    /// directory does not let us once privileges are dropped: the file stays its starter's;
    /// the path is outside the jail), our file is emptied through our descriptor instead: an
    /// empty, unlocked pidfile never blocks a start.
    pub fn remove(self) {
        if !unlink_if_names(self.dir.as_ref(), &self.path, &self.file) {
            let _ = self.file.set_len(0);
        }
    }

    /// The start is over. In `--chroot` the directory held for [`remove`](Pidfile::remove)
    /// is let go of, so the daemon holds nothing outside its jail while it serves.
    pub fn serving(&mut self, chrooted: bool) {
        if chrooted {
            self.dir = None;
        }
    }

    /// Where a restart's report goes: beside the file, through its directory while that is
    /// held, else by the path.
    pub fn report_place(&self) -> crate::upgrade::ReportPlace {
        crate::upgrade::ReportPlace {
            dir: self
                .dir
                .as_ref()
                .and_then(|(d, n)| Some((d.try_clone().ok()?, n.clone()))),
            pidfile: self.path.clone(),
        }
    }

    /// A failed start: our own pidfile goes, as twistd removes it; one inherited from a
    /// restart is left alone, since the predecessor that holds it too keeps serving.
    pub fn give_up(self) {
        if self.inherited {
            self.release();
        } else {
            self.remove();
        }
    }

    /// Leaves the file and its lock as they are: the successor of a restart shares the open
    /// file and owns it now. Closing our descriptor leaves the lock to the successor's.
    pub fn release(self) {
        drop(self.file);
    }
}

/// What the pidfile at `path` says, without disturbing its owner.
pub fn state(path: &Path) -> Result<State, PidfileError> {
    let file = match open_plain(path, OpenOptions::new().read(true)) {
        Ok(f) => f,
        Err(PidfileError::Io { error, .. }) if error.kind() == io::ErrorKind::NotFound => {
            return Ok(State::Absent);
        }
        Err(e) => return Err(e),
    };
    let io_err = |error| PidfileError::Io {
        path: path.to_path_buf(),
        error,
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(State::Stale(read_trimmed(&file).map_err(io_err)?)),
        Err(std::fs::TryLockError::WouldBlock) => {
            let named = read_trimmed(&file).map_err(io_err)?;
            let id = FileId::of(&file.metadata().map_err(io_err)?);
            Ok(State::Running(Held { file, id, named }))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_decides_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.pid");
        assert!(matches!(state(&p).unwrap(), State::Absent));
        for junk in ["", "garbage", "1", "999999"] {
            std::fs::write(&p, junk).unwrap();
            assert!(matches!(state(&p).unwrap(), State::Stale(s) if s == junk));
            let mut held = Pidfile::acquire(&p, None).expect("a stale file never blocks");
            assert_eq!(held.previous.as_deref(), (!junk.is_empty()).then_some(junk));
            held.write_pid().unwrap();
            let me = std::process::id().to_string();
            assert_eq!(std::fs::read_to_string(&p).unwrap(), me);
            match state(&p).unwrap() {
                State::Running(h) => {
                    assert_eq!(h.named, me);
                    assert!(h.holds(std::process::id() as i32));
                    assert!(!h.released());
                }
                other => panic!("{other:?}"),
            }
            match Pidfile::acquire(&p, None) {
                Err(PidfileError::Running { pid }) => assert_eq!(pid, me),
                other => panic!("second acquire: {:?}", other.err()),
            }
            held.remove();
            assert!(matches!(state(&p).unwrap(), State::Absent));
        }
    }

    #[test]
    fn a_file_put_in_its_place_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.pid");
        for serving in [false, true] {
            let mut held = Pidfile::acquire(&p, None).unwrap();
            held.write_pid().unwrap();
            if serving {
                held.serving(true);
            }
            // Ours removed by hand, and another start's made at the name.
            std::fs::remove_file(&p).unwrap();
            std::fs::write(&p, "another").unwrap();
            held.remove();
            assert_eq!(std::fs::read_to_string(&p).unwrap(), "another");
            std::fs::remove_file(&p).unwrap();
        }
    }

    #[test]
    fn only_a_plain_regular_file_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let link = dir.path().join("link.pid");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let dangling = dir.path().join("dangling.pid");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
        let hard = dir.path().join("hard.pid");
        std::fs::hard_link(&victim, &hard).unwrap();
        let fifo = dir.path().join("fifo.pid");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let cases = [
            (&link, "a symbolic link"),
            (&dangling, "a symbolic link"),
            (&hard, "a file with 2 hard links"),
            (&fifo, "a FIFO"),
            (&dir.path().to_path_buf(), "a directory"),
        ];
        for (p, what) in cases {
            for err in [Pidfile::acquire(p, None).err(), state(p).err()] {
                match err {
                    Some(PidfileError::Refused { path, what: w }) => {
                        assert_eq!((path.as_path(), w.as_str()), (p.as_path(), what));
                    }
                    other => panic!("{}: {other:?}", p.display()),
                }
            }
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!dir.path().join("nothing").exists());
    }
}
