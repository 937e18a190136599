//! Whose a file or a process is, for the one rule root follows in places another user may
//! write: what root or this process's own user made may lead it (a link followed, a pipe
//! read, a lock believed); what another user made may not.

/// Whether `uid` made something this process may trust as its own: root, or the user this
/// process runs as (its effective uid).
pub fn trusted(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// Whether process `pid` exists (one we may not signal does too): kill(2) with no signal.
pub fn alive(pid: i32) -> bool {
    pid > 0
        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            .map_or_else(|e| e == nix::errno::Errno::EPERM, |_| true)
}

/// The effective user and group of process `pid`, from its `/proc` status file's `Uid:` and
/// `Gid:` lines; not its `/proc` directory's owner, which is root's for a process that is not
/// dumpable (one that dropped privileges, or runs a binary it may not read).
pub fn effective_ids(pid: i32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let id = |key: &str| -> Option<u32> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(2)?.parse().ok()
    };
    Some((id("Uid:")?, id("Gid:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_its_own_and_root_is_trusted() {
        let (uid, gid) = effective_ids(std::process::id() as i32).unwrap();
        assert_eq!(uid, nix::unistd::geteuid().as_raw());
        assert_eq!(gid, nix::unistd::getegid().as_raw());
        assert!(trusted(uid) && trusted(0));
        // A uid that is neither (unless we run as it).
        assert_eq!(trusted(54_321), uid == 54_321);
    }
}
