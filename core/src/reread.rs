//! What a reload (SIGHUP) reads again, noted as a service first reads it, so the launcher can
//! try the same opens once privileges are dropped.
//!
//! A service reads its files at start as the starting user (root), before `-u`/`-g` and
//! `--chroot` take effect, and reads them again on SIGHUP as the user it dropped to, by their
//! paths inside the jail: a zone file or a TLS key only root may read loads at start, and every
//! reload then fails and keeps the old data. Services note each such file here ([`note_file`],
//! [`note_dir`]); once the launcher has dropped privileges (at start and in `--check`) it
//! opens each one as a reload would ([`unreachable()`]) and warns of those that fail. Opening,
//! not computing from modes, so ACLs, supplementary groups and the chroot count as the kernel
//! counts them. Noting ends with that test: what a reload reads later is not kept.
//!
//! Plugin log files (web's access log, socks's connection log) are reopened for appending on
//! SIGHUP: one the start made is root's, and the launcher gives it to the user it drops to
//! ([`take_logs`]), as it gives the main log; one that was there is never given away (its path
//! may be a link to anything). Both are tried like the rest ([`note_append`]): a file given
//! away still cannot be reopened in a directory the user cannot search. A start that fails
//! removes the plugin logs it made, still empty ([`unmake_logs`]): twistd opens them only once
//! the port listens, and leaves none.
//!
//! What a service uses while it serves, not only at a reload, is tried the same way: mail's
//! Maildirs (written at each delivery) and password files (read at each login) are noted
//! with [`note_reads`] and [`note_writes`]. What a start itself makes for them it notes with
//! [`note_created`] and the launcher gives it to the user as it gives the logs; what was
//! there is left as it is, and warned of if the user cannot use it.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a reload does with a noted path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Reads the file.
    File,
    /// Lists the directory (a `tls:` directory's `*.pem` files).
    Dir,
    /// Opens the file for appending (a plugin's log file).
    Append,
    /// Reaches the path of a log file a start would make (`--check`): made, it is given to
    /// the user, so only the directories on its way count.
    Made,
    /// Read while serving (a mail password file, at each login); says by what.
    Reads(&'static str),
    /// Read and written while serving (a Maildir and its `tmp/`, `new/`, `cur/`: files are
    /// made, renamed and removed in them); says by what.
    Writes(&'static str),
}

impl Kind {
    /// Used while serving, not only at a reload.
    pub fn serving(self) -> bool {
        matches!(self, Kind::Reads(_) | Kind::Writes(_))
    }
}

struct Noted {
    /// Noting is over: the launcher tested what was noted.
    closed: bool,
    paths: Vec<(PathBuf, Kind)>,
    logs: Vec<File>,
}

static NOTED: Mutex<Noted> = Mutex::new(Noted {
    closed: false,
    paths: Vec::new(),
    logs: Vec::new(),
});

fn noted() -> std::sync::MutexGuard<'static, Noted> {
    NOTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn note(path: &Path, kind: Kind) {
    let mut n = noted();
    if n.closed {
        return;
    }
    // Against the directory the command line was given in, as the services make their
    // paths absolute before the launcher's chdir to --rundir.
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if !n.paths.iter().any(|(p, k)| *p == path && *k == kind) {
        n.paths.push((path, kind));
    }
}

/// `path` is read again on reload (a zone file, a certificate, inetd.conf).
pub fn note_file(path: &Path) {
    note(path, Kind::File);
}

/// The directory `path` is listed again on reload.
pub fn note_dir(path: &Path) {
    note(path, Kind::Dir);
}

/// The log file `path` is reopened for appending on reload.
pub fn note_append(path: &Path) {
    note(path, Kind::Append);
}

/// The log file `path` is not there: a start makes it (`--check`).
pub fn note_made(path: &Path) {
    note(path, Kind::Made);
}

/// A log file this start made (root's) at `path`, reopened by name on SIGHUP: the launcher
/// gives it to the user it drops to. A copy of the descriptor is kept until then: the file,
/// never what its path names later. Another is kept until the start ends: a start that fails
/// removes the log it made ([`unmake_logs`]), as twistd, which opens a plugin's log only once
/// its port listens, leaves none.
pub(crate) fn note_log(path: &Path, file: &File) {
    note_created(file);
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if let Ok(f) = file.try_clone() {
        made_logs().push((path, f));
    }
}

/// The plugin logs this start made, until it serves or fails.
static MADE_LOGS: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());

fn made_logs() -> std::sync::MutexGuard<'static, Vec<(PathBuf, File)>> {
    MADE_LOGS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The start failed: each plugin log it made goes, if it is still empty and its path still
/// names it (one written to, or put there since, is left).
pub fn unmake_logs() {
    for (path, f) in made_logs().drain(..) {
        crate::linelog::unmake(&path, &f, true);
    }
}

/// The start is over: the plugin logs it made stay (and their descriptors kept for
/// [`unmake_logs`] are closed, so a rotated log's space is not held).
pub fn keep_logs() {
    made_logs().clear();
}

/// A file or directory this start made (root's) that the service uses as the user it drops
/// to (a Maildir, a mail password file): given to that user with the logs, by this
/// descriptor, never by a path (which could name something else by then). Only what the
/// start made: what was there is never given away.
pub fn note_created(file: &File) {
    let mut n = noted();
    if n.closed {
        return;
    }
    if let Ok(f) = file.try_clone() {
        n.logs.push(f);
    }
}

/// `path` is read while serving (`why`: by what): tried as the user the service runs as.
/// One that is not there is no failure (a start makes it, and gives it).
pub fn note_reads(path: &Path, why: &'static str) {
    note(path, Kind::Reads(why));
}

/// The directory (or file) `path` is read and written while serving (`why`: by what): tried
/// as the user the service runs as. One that is not there is no failure, if its name can be
/// looked up (a start makes it, and gives it).
pub fn note_writes(path: &Path, why: &'static str) {
    note(path, Kind::Writes(why));
}

/// The files noted so far (logs a start made, and [`note_created`]; their descriptors), for
/// the launcher to `fchown`.
pub fn take_logs() -> Vec<File> {
    std::mem::take(&mut noted().logs)
}

/// Opens each noted path as a reload would, as the user (and in the root) this process has
/// now, and returns those that fail, with why. Ends the noting. A path used while serving
/// that lies under one that failed is not returned again: a Maildir closed to the user is
/// one failure, not four.
pub fn unreachable() -> Vec<(PathBuf, Kind, io::Error)> {
    let paths = {
        let mut n = noted();
        n.closed = true;
        n.logs.clear();
        std::mem::take(&mut n.paths)
    };
    let mut failed: Vec<(PathBuf, Kind, io::Error)> = Vec::new();
    for (p, kind) in paths {
        if kind.serving()
            && failed
                .iter()
                .any(|(f, k, _)| k.serving() && p.starts_with(f))
        {
            continue;
        }
        if let Err(e) = try_open(&p, kind) {
            failed.push((p, kind, e));
        }
    }
    failed
}

/// Whether the user this process now is may read and write `path` (and search it, a
/// directory), asked of the kernel with `faccessat(AT_EACCESS)`: the effective ids (`--euid`
/// changes only those), supplementary groups, ACLs and read-only mounts as a delivery meets
/// them. Asked, not tried: a check may make nothing, and a file made to try a directory
/// would be one more thing to clean up, or to leave behind, in a live Maildir.
fn writable(path: &Path) -> io::Result<()> {
    use nix::fcntl::{AT_FDCWD, AtFlags};
    use nix::unistd::{AccessFlags, faccessat};
    let mut mode = AccessFlags::R_OK | AccessFlags::W_OK;
    match std::fs::metadata(path) {
        Ok(md) if md.is_dir() => mode |= AccessFlags::X_OK,
        Ok(_) => {}
        // Not there: a start makes it and gives it; its name must still be reachable.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    faccessat(AT_FDCWD, path, mode, AtFlags::AT_EACCESS).map_err(io::Error::from)
}

fn try_open(path: &Path, kind: Kind) -> io::Result<()> {
    match kind {
        // Non-blocking: a FIFO in a file's place must not hang the start.
        Kind::File => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map(drop),
        Kind::Dir => std::fs::read_dir(path).map(drop),
        Kind::Append => std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map(drop),
        // Looking the name up needs search permission on every directory above it.
        Kind::Made => match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        // Opened, as a login opens it.
        Kind::Reads(_) => match try_open(path, Kind::File) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        },
        Kind::Writes(_) => writable(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noted_paths_are_tried_once_and_noting_then_ends() {
        let dir = tempfile::tempdir().unwrap();
        let there = dir.path().join("there");
        std::fs::write(&there, "x").unwrap();
        let gone = dir.path().join("gone");
        note_file(&there);
        note_file(&there);
        note_file(&gone);
        note_dir(dir.path());
        note_dir(&gone);
        note_append(&gone);
        note_append(&there);
        note_made(&gone);
        // Used while serving: not there is no failure (a start makes it); a path under one
        // that failed is not said again.
        note_reads(&gone, "logins");
        note_writes(&gone, "delivery");
        let under_file = there.join("maildir");
        note_writes(&under_file, "delivery");
        note_writes(&under_file.join("tmp"), "delivery");
        note_writes(dir.path(), "delivery");
        let log = File::create(dir.path().join("log")).unwrap();
        note_log(&dir.path().join("log"), &log);
        assert!(!take_logs().is_empty());
        // Other tests of this process note files too (in temporary directories, perhaps
        // gone by now): only ours count.
        let bad: Vec<_> = unreachable()
            .into_iter()
            .filter(|(p, _, _)| p.starts_with(dir.path()))
            .collect();
        let names: Vec<_> = bad.iter().map(|(p, k, _)| (p.clone(), *k)).collect();
        assert_eq!(
            names,
            vec![
                (gone.clone(), Kind::File),
                (gone.clone(), Kind::Dir),
                (gone, Kind::Append),
                (under_file, Kind::Writes("delivery")),
            ],
            "a log a start would make, where its name can be looked up, is no failure"
        );
        assert!(bad.iter().all(|(_, k, e)| e.kind()
            == if k.serving() {
                io::ErrorKind::NotADirectory
            } else {
                io::ErrorKind::NotFound
            }));
        note_file(&dir.path().join("later"));
        assert!(unreachable().is_empty(), "noted after the test: not kept");
    }
}
