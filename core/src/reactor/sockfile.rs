//! A UNIX socket file and its `PATH.lock` as a listener made them, removed at the end through
//! the directory they were made in: the socket only while its name there still names it, the
//! lock only if it names us or a process gone.
//!
//! Why not by path: a process that stays root (a `--workers` master for its whole life, a
//! single process run without `-u`) removes them at its end, and the socket's directory often
//! lies under one the service user owns (a `/run` directory of its own). By then that user can
//! have swapped a directory on the path for a link, and an unlink by path would remove a file
//! of the same name wherever the link leads. The directory is opened once, right after the
//! bind; binding happens after `--chroot`, so what is held is inside the jail.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{AtFlags, OFlag, open};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// The files a UNIX listener made, to remove at its close.
#[derive(Debug)]
pub struct SocketFile {
    dir: OwnedFd,
    /// The socket's name and the file it named when noted (device and inode).
    socket: (OsString, (u64, u64)),
    /// Its lock's name, if it has one. Not by identity: a `--workers` worker points the
    /// lock at itself (a new link), and the master removes it at its end.
    lock: Option<OsString>,
}

/// What `name` in `dir` is now, without following a link: its kind and identity.
fn look(dir: &OwnedFd, name: &OsString) -> Option<(SFlag, (u64, u64))> {
    let st: FileStat = fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    Some((kind, (st.st_dev, st.st_ino)))
}

/// Whether the lock link `name` in `dir` is ours to remove: it names this process, or one
/// that is gone (our workers, at a master's end). One naming another live process is
/// another start's.
fn lock_is_ours(dir: &OwnedFd, name: &OsString) -> bool {
    if !matches!(look(dir, name), Some((SFlag::S_IFLNK, _))) {
        return false;
    }
    let Ok(target) = nix::fcntl::readlinkat(dir.as_fd(), name.as_os_str()) else {
        return false;
    };
    let Some(pid) = target.to_str().and_then(|t| t.trim().parse::<i32>().ok()) else {
        return false;
    };
    pid == std::process::id() as i32 || (pid > 0 && !crate::owner::alive(pid))
}

impl SocketFile {
    /// Notes the socket file at `path` and its lock link `lock` (in the same directory) as
    /// they are now. `None` when the directory cannot be opened or `path` names no socket
    /// there: then nothing is removed at the close (a stale socket file is taken over by the
    /// next start anyway).
    pub(crate) fn note(path: &Path, lock: Option<&Path>) -> Option<SocketFile> {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = open(
            parent,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let socket = path.file_name()?.to_os_string();
        let (kind, id) = look(&dir, &socket)?;
        if kind != SFlag::S_IFSOCK {
            return None;
        }
        let lock = lock.and_then(Path::file_name).map(|l| l.to_os_string());
        Some(SocketFile {
            dir,
            socket: (socket, id),
            lock,
        })
    }

    /// Removes the socket if its name still names the file noted (one put there since,
    /// another start's, is not ours), and the lock if it names us or a process gone.
    pub fn remove(self) {
        let (name, id) = &self.socket;
        if look(&self.dir, name).is_some_and(|(_, now)| now == *id) {
            let _ = unlinkat(&self.dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
        if let Some(lock) = &self.lock
            && lock_is_ours(&self.dir, lock)
        {
            let _ = unlinkat(&self.dir, lock.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_files_noted_are_removed_in_the_directory_they_were_made_in() {
        let top = tempfile::tempdir().unwrap();
        let run = top.path().join("run");
        let elsewhere = top.path().join("elsewhere");
        std::fs::create_dir(&run).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        let sock = run.join("s.sock");
        let lock = run.join("s.sock.lock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::os::unix::fs::symlink(std::process::id().to_string(), &lock).unwrap();
        let noted = SocketFile::note(&sock, Some(&lock)).unwrap();
        // The directory swapped for a link to another holding files of the same names: the
        // removal still looks in the directory noted, not where the path leads now.
        let _e = std::os::unix::net::UnixListener::bind(elsewhere.join("s.sock")).unwrap();
        std::os::unix::fs::symlink(
            std::process::id().to_string(),
            elsewhere.join("s.sock.lock"),
        )
        .unwrap();
        let moved = top.path().join("run.old");
        std::fs::rename(&run, &moved).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &run).unwrap();
        noted.remove();
        assert!(elsewhere.join("s.sock").symlink_metadata().is_ok());
        assert!(elsewhere.join("s.sock.lock").symlink_metadata().is_ok());
        assert!(moved.join("s.sock").symlink_metadata().is_err());
        assert!(moved.join("s.sock.lock").symlink_metadata().is_err());
    }

    #[test]
    fn a_file_put_in_the_sockets_place_since_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let noted = SocketFile::note(&sock, None).unwrap();
        std::fs::remove_file(&sock).unwrap();
        let _other = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        noted.remove();
        assert!(
            sock.symlink_metadata().is_ok(),
            "another start's socket stays"
        );
        // A lock is ours to remove if it names us or a process gone (a worker's, at its
        // master's end), never one naming another live process (another start's).
        let lock = dir.path().join("t.sock.lock");
        let sock = dir.path().join("t.sock");
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id().to_string();
        gone.wait().unwrap();
        for (target, removed) in [("1", false), (gone_pid.as_str(), true), ("junk", false)] {
            let _ = std::fs::remove_file(&lock);
            let _ = std::fs::remove_file(&sock);
            let _t = std::os::unix::net::UnixListener::bind(&sock).unwrap();
            std::os::unix::fs::symlink(target, &lock).unwrap();
            SocketFile::note(&sock, Some(&lock)).unwrap().remove();
            assert_eq!(
                lock.symlink_metadata().is_err(),
                removed,
                "a lock naming {target}"
            );
        }
        // A name that is no socket is never noted.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"").unwrap();
        assert!(SocketFile::note(&plain, None).is_none());
    }
}
