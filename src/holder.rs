//! Which processes hold a pidfile's lock, read from /proc: the only PIDs `stop`, `status` and
//! `restart` act on. What the file says is a hint, checked here, never trusted.
//!
//! The lock is an `flock` on an open file description, shared by every descriptor that refers
//! to it: during a restart the old process and its successor both hold it. /proc/locks names
//! only the process that first took it, so it goes stale after a hand-over; instead a process
//! holds the lock if one of its descriptors refers to the pidfile's inode and that
//! descriptor's /proc/PID/fdinfo lists an exclusive FLOCK (the kernel lists there the locks
//! owned by that open file).

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;

/// A file's identity: what a path or a descriptor must match to be "the pidfile".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub fn of(md: &Metadata) -> FileId {
        FileId {
            dev: md.dev(),
            ino: md.ino(),
        }
    }
}

/// Who holds the lock, judged against the PID the file names.
#[derive(Debug, PartialEq, Eq)]
pub enum Holder {
    /// The PID the file names holds the lock.
    Named(i32),
    /// The file names something else; this process, the only holder, holds it.
    Other(i32),
    /// Several processes hold it (a restart hands over) and the file names none of them.
    Several(Vec<i32>),
    /// No process visibly holds it: /proc is unreadable to us, the holder lives in another PID
    /// namespace, or it just exited.
    Unseen,
}

/// The PID a pidfile's content names, if it is one (twistd writes it without a newline).
pub fn parse_pid(named: &str) -> Option<i32> {
    named.parse::<i32>().ok().filter(|p| *p > 0)
}

/// Finds the holder of the lock on `file`: the PID in `named` is checked first; if it is not a
/// holder, every process is.
pub fn resolve(named: &str, file: FileId) -> io::Result<Holder> {
    if let Some(pid) = parse_pid(named)
        && holds(pid, file)
    {
        return Ok(Holder::Named(pid));
    }
    let found = holders(file)?;
    Ok(match found.as_slice() {
        [] => Holder::Unseen,
        [one] => Holder::Other(*one),
        _ => Holder::Several(found),
    })
}

/// True if process `pid` holds an exclusive flock on `file` through one of its descriptors.
/// A zombie has no descriptors, so it holds nothing.
pub fn holds(pid: i32, file: FileId) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok).any(|fd| {
        // stat follows the magic link to the open file itself.
        std::fs::metadata(fd.path()).is_ok_and(|md| FileId::of(&md) == file)
            && std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .is_ok_and(|info| info.lines().any(is_exclusive_flock))
    })
}

/// `lock: 1: FLOCK  ADVISORY  WRITE 1234 fe:00:10010722 0 EOF` (a tab after `lock:`)
fn is_exclusive_flock(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("lock:") else {
        return false;
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    words.contains(&"FLOCK") && words.contains(&"WRITE")
}

/// Every process holding the lock on `file`, in PID order.
fn holders(file: FileId) -> io::Result<Vec<i32>> {
    let mut found: Vec<i32> = std::fs::read_dir("/proc")?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| holds(*pid, file))
        .collect();
    found.sort_unstable();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serialises the tests that spawn or scan: a child forked by one test holds, until its
    /// exec, copies of every descriptor of the test process, the other test's too.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_holder_is_found_through_its_descriptor_not_through_the_content() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.pid");
        std::fs::write(&p, "1").unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let id = FileId::of(&f.metadata().unwrap());
        let me = std::process::id() as i32;
        assert!(!holds(me, id), "open but not locked");
        assert_eq!(resolve("1", id).unwrap(), Holder::Unseen);
        f.try_lock().unwrap();
        assert!(holds(me, id));
        assert!(!holds(1, id), "PID 1 does not hold it");
        assert_eq!(resolve(&me.to_string(), id).unwrap(), Holder::Named(me));
        for junk in ["1", "-1", "", "garbage", "99999999"] {
            assert_eq!(resolve(junk, id).unwrap(), Holder::Other(me), "{junk:?}");
        }
        // A shared lock through another description is not the daemon's lock.
        f.unlock().unwrap();
        let g = std::fs::File::open(&p).unwrap();
        g.try_lock_shared().unwrap();
        assert!(!holds(me, id));
    }

    #[test]
    fn every_process_sharing_the_locked_open_file_holds_it() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.pid");
        let f = std::fs::File::create(&p).unwrap();
        f.try_lock().unwrap();
        let id = FileId::of(&f.metadata().unwrap());
        let raw = f.as_raw_fd();
        // As a restart's successor does: the same open file, inherited across exec.
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        // SAFETY: dup2 is async-signal-safe; the copy is not close-on-exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 100) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let pid = child.id() as i32;
        let me = std::process::id() as i32;
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !holds(pid, id) && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut both = vec![me, pid];
        both.sort_unstable();
        assert_eq!(resolve("x", id).unwrap(), Holder::Several(both));
        assert_eq!(resolve(&pid.to_string(), id).unwrap(), Holder::Named(pid));
        assert_eq!(resolve(&me.to_string(), id).unwrap(), Holder::Named(me));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            resolve("x", id).unwrap(),
            Holder::Other(me),
            "a dead child holds nothing"
        );
    }

    #[test]
    fn fdinfo_lock_lines() {
        assert!(is_exclusive_flock(
            "lock:\t1: FLOCK  ADVISORY  WRITE 26369 fe:00:10010722 0 EOF"
        ));
        assert!(!is_exclusive_flock(
            "lock:\t1: FLOCK  ADVISORY  READ 26369 fe:00:10010722 0 EOF"
        ));
        assert!(!is_exclusive_flock(
            "lock:\t1: POSIX  ADVISORY  WRITE 26369 fe:00:10010722 0 EOF"
        ));
        assert!(!is_exclusive_flock("flags:\t02100002"));
    }
}
