//! A plugin's own log file (web's access log, socks's connection log): whole lines, buffered,
//! reopened by name, and the lines a full disk would not take counted and said.
//!
//! The buffer (64 KiB, flushed by the plugin every second and at stop) only ever takes whole
//! lines, so `--workers` processes appending to one file never split each other's lines.
//! When the disk refuses the buffer, what it holds is kept for the next flush; a line that no
//! longer fits is lost, counted, and the count logged once the file takes lines again. twistd
//! drops such lines without a word.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The buffer per file: one write per second for a busy server.
const BUFFER: usize = 64 * 1024;

/// A log file of whole lines.
pub struct LineFile {
    path: PathBuf,
    w: BufWriter<File>,
    /// The `log` target the file's own troubles are logged under (`twistrs.web`).
    target: &'static str,
    /// Lines lost since the file last took a write, and why.
    lost: u64,
    why: String,
}

/// Opens `path` for appending, made if missing: the file, and whether this open made it (in
/// a check, whether a start would).
fn open_append(path: &Path) -> io::Result<(File, bool)> {
    if crate::plugin::checking() {
        let there = std::fs::symlink_metadata(path).is_ok();
        return check_append(path).map(|f| (f, !there));
    }
    open_or_make(path)
}

/// Opens the log file `path` for appending, made if missing: the file, and whether this open
/// made it. Shared by the main log and the plugins' logs.
///
/// A log is opened as root at start (and at each reopen by a `--workers` master), often in a
/// directory the service user owns so that it can make the file again after a rotation. What
/// that user could put at the name must not lead root:
/// - a symbolic link is followed only if root or this process's own user owns it (one the
///   user planted would have root append to any file, and a start give it away: nginx's
///   CVE-2016-1247); the link checked is the link followed (through its `O_PATH`
///   descriptor), so it cannot be swapped in between;
/// - a second hard link to a file (to `/etc/shadow`, where the kernel allows it) is refused;
/// - a FIFO with no reader fails at once instead of hanging the start, or a reopen.
pub fn open_or_make(path: &Path) -> io::Result<(File, bool)> {
    open_or_make_at(path, MAX_LINKS)
}

/// How many links a log's name may go through, each one checked.
const MAX_LINKS: u32 = 8;

fn open_or_make_at(path: &Path, links: u32) -> io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_EXCL never follows a link: one at `path` is "already there", and looked at below.
    match OpenOptions::new()
        .create_new(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => Ok((blocking(f)?, true)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => open_existing(path, links),
        Err(e) => Err(e),
    }
}

/// [`open_or_make`] for a path that was there: a file, or a link that may be followed. The
/// link is read through the descriptor its owner was checked on, so the link followed is
/// the link checked; what it names is opened by the same rules (a chain of links is checked
/// link by link), and made if missing, as a plain open would.
fn open_existing(path: &Path, links: u32) -> io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    match OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => Ok((usable(f)?, false)),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) && links > 0 => {
            let link = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
                .open(path)?;
            followable(&link)?;
            let to = PathBuf::from(nix::fcntl::readlinkat(&link, "")?);
            let to = match path.parent() {
                Some(dir) if to.is_relative() => dir.join(to),
                _ => to,
            };
            open_or_make_at(&to, links - 1)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Err(io::Error::new(
            e.kind(),
            "it is a FIFO with no reader: not waited for",
        )),
        Err(e) => Err(e),
    }
}

/// A link, opened `O_PATH`, that may be followed: root's or this process's user's.
fn followable(link: &File) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let owner = link.metadata()?.uid();
    if crate::owner::trusted(owner) {
        return Ok(());
    }
    let me = nix::unistd::geteuid().as_raw();
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "it is a symbolic link owned by uid {owner}, not by root or uid {me}: not \
             followed (make it a file, or a link of root's)"
        ),
    ))
}

/// The log file opened, if it may be written: not a second name of another file.
fn usable(f: File) -> io::Result<File> {
    use std::os::unix::fs::MetadataExt;
    let md = f.metadata()?;
    if md.is_file() && md.nlink() > 1 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "it has {} hard links: not written (a log is one file's only name)",
                md.nlink()
            ),
        ));
    }
    blocking(f)
}

/// `f` with `O_NONBLOCK` cleared again: it was only for the open; a log's writes wait.
fn blocking(f: File) -> io::Result<File> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(&f, FcntlArg::F_GETFL)?);
    fcntl(&f, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    Ok(f)
}

/// True if `path` names `file` now: the same device and inode, a link at the name not
/// followed.
pub fn names(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Removes `path` if it still names `file` (with `only_empty`, and the file is empty): a log
/// a failed start made goes, one put at the name since stays. True if it was removed.
pub fn unmake(path: &Path, file: &File, only_empty: bool) -> bool {
    (!only_empty || file.metadata().is_ok_and(|m| m.len() == 0))
        && names(path, file)
        && std::fs::remove_file(path).is_ok()
}

/// What a check (the launcher's `--check`) opens in place of a log file it must not create:
/// the file if it is there, opened for appending but never written, else `/dev/null` once
/// the directory it would be made in is found writable.
pub fn check_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: a FIFO at the name must not hang the check.
    let opened = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    match opened {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            crate::plugin::writable_dir(crate::plugin::dir_of(path))?;
            OpenOptions::new().append(true).open("/dev/null")
        }
        other => other,
    }
}

impl LineFile {
    /// Opens `path` for appending (created if missing).
    pub fn open(path: PathBuf, target: &'static str) -> io::Result<LineFile> {
        let (f, made) = open_append(&path)?;
        // Reopened by name on SIGHUP, after the privilege drop. The launcher gives a file
        // made now (root's) to the user it drops to, as the main log; one that was there is
        // left as it is (it may be anyone's, or a link to anything). Either is then tried as
        // that user: a file given away still cannot be reopened in a directory the user
        // cannot search.
        if made && !crate::plugin::checking() {
            crate::reread::note_log(&path, &f);
        }
        if !made || !crate::plugin::checking() {
            crate::reread::note_append(&path);
        } else {
            crate::reread::note_made(&path);
        }
        Ok(LineFile {
            path,
            w: BufWriter::with_capacity(BUFFER, f),
            target,
            lost: 0,
            why: String::new(),
        })
    }

    /// Appends `line`, which ends in a newline.
    pub fn write_line(&mut self, line: &[u8]) {
        if let Err(e) = self.w.write_all(line) {
            self.lose(1, &e);
        }
    }

    fn lose(&mut self, lines: u64, e: &io::Error) {
        if lines == 0 {
            return;
        }
        if self.lost == 0 {
            log::error!(target: self.target,
                "cannot write {}: {e}; its lines are lost until it can be written again, and \
                 counted", self.path.display());
        }
        self.lost += lines;
        self.why = e.to_string();
    }

    /// Writes out the buffer. Once the file takes it after lines were lost, logs how many
    /// were, and returns that count (0 otherwise).
    pub fn flush(&mut self) -> u64 {
        if self.w.flush().is_err() || self.lost == 0 {
            return 0;
        }
        let lost = std::mem::take(&mut self.lost);
        log::warn!(target: self.target,
            "{lost} line(s) of {} lost: it could not be written: {}", self.path.display(),
            self.why);
        lost
    }

    /// Opens the file again by name (after logrotate moved it). What the old file would not
    /// take is counted as lost.
    pub fn reopen(&mut self) {
        self.flush();
        match open_append(&self.path) {
            Ok((f, _)) => {
                let old = std::mem::replace(&mut self.w, BufWriter::with_capacity(BUFFER, f));
                let (_, left) = old.into_parts();
                if let Ok(left) = left {
                    let lines = left.iter().filter(|&&b| b == b'\n').count() as u64;
                    self.lose(lines, &io::Error::other("the file was reopened first"));
                }
            }
            Err(e) => {
                log::error!(target: self.target, "cannot reopen {}: {e}", self.path.display())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_lines_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut f = LineFile::open(path.clone(), "test").unwrap();
        f.write_line(b"one\n");
        f.write_line(b"two\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "", "buffered");
        assert_eq!(f.flush(), 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
    }

    /// /dev/full refuses every write with ENOSPC: the buffer is kept until it is full, then
    /// each further line is counted; a reopen onto a file that takes them reports the count.
    #[test]
    fn lines_a_full_disk_refuses_are_counted_and_reported() {
        use std::os::unix::fs::FileTypeExt;
        if !std::fs::metadata("/dev/full").is_ok_and(|m| m.file_type().is_char_device()) {
            return;
        }
        let mut f = LineFile::open(PathBuf::from("/dev/full"), "test").unwrap();
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        for _ in 0..1000 {
            f.write_line(&line);
            assert_eq!(f.flush(), 0, "nothing is reported while the disk refuses");
        }
        // 655 lines of 100 bytes fit in the 64 KiB buffer; the rest were lost.
        assert_eq!(f.lost, 1000 - (BUFFER / 100) as u64);
        assert!(f.why.contains("No space left"), "{}", f.why);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.log");
        f.path = path.clone();
        f.reopen();
        f.write_line(b"after\n");
        assert_eq!(
            f.flush(),
            1000,
            "the lost lines and the buffer /dev/full kept"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        assert_eq!(f.flush(), 0, "said once");
    }
}
