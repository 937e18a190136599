//! Directories walked by descriptor, never through a symbolic link.
//!
//! A start runs as root, and the domain directory and all beneath it may be the `-u` user's
//! (an earlier start gave them away). That user could put a link where a Maildir or
//! `passwd/` was, so root makes and opens every name there relative to its parent's
//! descriptor (`mkdirat`, `openat` with `O_NOFOLLOW`, `renameat`, `unlinkat`) and refuses a
//! link, as postfix and dovecot do in their mail stores.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// An open directory, and its path for messages.
#[derive(Debug)]
pub struct Dir {
    fd: File,
    path: PathBuf,
}

/// How a directory beneath another is opened: itself, never what a link there names.
const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl Dir {
    /// Opens the directory `path` as the operator named it (links at and above it are the
    /// operator's choice, and its parent is not the service's).
    pub fn open(path: &Path) -> io::Result<Dir> {
        Self::open_top(path, 0)
    }

    fn open_top(path: &Path, flags: i32) -> io::Result<Dir> {
        let fd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | flags)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOTDIR) => not_a(path, "a directory"),
                _ => e,
            })?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Makes the directory `path` with `mode` (less the umask), or opens the one there. One
    /// made is noted for the launcher to give to the `-u` user; one there is left as it is.
    pub fn make_top(path: &Path, mode: u32) -> io::Result<Dir> {
        match std::fs::DirBuilder::new().mode(mode).create(path) {
            Ok(()) => {
                // The directory made, never a link put in its place since.
                let d = Self::open_top(path, libc::O_NOFOLLOW)?;
                twistrs_core::reread::note_created(&d.fd);
                Ok(d)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::open(path),
            Err(e) => Err(e),
        }
    }

    /// The path, for messages and for what is noted by path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the directory `name` in this one, as [`Dir::make_top`] does; a link there is
    /// refused.
    pub fn make_dir(&self, name: impl AsRef<OsStr>, mode: libc::mode_t) -> io::Result<Dir> {
        let name = name.as_ref();
        let made = match mkdirat(&self.fd, name, Mode::from_bits_truncate(mode)) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(self.failed(name, e)),
        };
        let d = self.open_dir(name)?;
        if made {
            twistrs_core::reread::note_created(&d.fd);
        }
        Ok(d)
    }

    /// Opens the directory `name` in this one; a link there is refused.
    pub fn open_dir(&self, name: impl AsRef<OsStr>) -> io::Result<Dir> {
        let name = name.as_ref();
        match openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Dir {
                fd: File::from(fd),
                path: self.path.join(name),
            }),
            Err(Errno::ELOOP | Errno::ENOTDIR) => Err(self.refused(name, "a directory")),
            Err(e) => Err(self.failed(name, e)),
        }
    }

    /// Creates the file `name` in this one, new: never one found there (a link or a hard
    /// link the service put there must not be written through).
    pub fn create_file(&self, name: impl AsRef<OsStr>, mode: libc::mode_t) -> io::Result<File> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(
            &self.fd,
            name.as_ref(),
            flags,
            Mode::from_bits_truncate(mode),
        )?;
        Ok(File::from(fd))
    }

    /// The content of the regular file `name` in this one, `None` if there is none; a link
    /// (or a FIFO, which would hold the start) is refused. At most `max` bytes and one more
    /// are read: a larger file (what the user may have put there) says only that it is
    /// larger, and cannot fill the memory of every start.
    pub fn read_file(&self, name: impl AsRef<OsStr>, max: u64) -> io::Result<Option<Vec<u8>>> {
        let name = name.as_ref();
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let f = match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => return Err(self.refused(name, "a file")),
            Err(e) => return Err(self.failed(name, e)),
        };
        if !f.metadata()?.is_file() {
            return Err(not_a(&self.path.join(name), "a file"));
        }
        let mut out = Vec::new();
        f.take(max.saturating_add(1)).read_to_end(&mut out)?;
        Ok(Some(out))
    }

    /// Renames `from` to `to`, both in this directory (a link at `to` is replaced, not
    /// followed).
    pub fn rename(&self, from: impl AsRef<OsStr>, to: impl AsRef<OsStr>) -> io::Result<()> {
        Ok(renameat(&self.fd, from.as_ref(), &self.fd, to.as_ref())?)
    }

    /// Removes the file (or link) `name` in this directory.
    pub fn remove(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        Ok(unlinkat(
            &self.fd,
            name.as_ref(),
            UnlinkatFlags::NoRemoveDir,
        )?)
    }

    /// Why `name` is not what was wanted: a link is refused, anything else is not one.
    fn refused(&self, name: &OsStr, what: &str) -> io::Error {
        let path = self.path.join(name);
        match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK => {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} is a symbolic link: refused (it must be {what})",
                        path.display()
                    ),
                )
            }
            _ => not_a(&path, what),
        }
    }

    /// `e`, naming the path it was met at.
    fn failed(&self, name: &OsStr, e: Errno) -> io::Error {
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("{}: {e}", self.path.join(name).display()))
    }
}

/// `path` is there but is not `what`.
fn not_a(path: &Path, what: &str) -> io::Error {
    let kind = if what == "a directory" {
        io::ErrorKind::NotADirectory
    } else {
        io::ErrorKind::InvalidInput
    };
    io::Error::new(kind, format!("{} is not {what}", path.display()))
}
