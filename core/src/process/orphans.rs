//! Reaping orphans: as the first process of a PID namespace (a container's PID 1), or as a
//! child subreaper, every process whose parent dies is handed to us, and only we can reap it.
//!
//! tini, dumb-init, systemd and runit reap them all; twistd does not (its reactor waits for
//! its own children only), so in a container the grandchildren of an inetd service that
//! backgrounds something, or a procmon program that double-forks, pile up as zombies until
//! the PID table is full. twistrs reaps them, without ever taking the exit status of a child
//! someone in the process waits for: the reactor's own children (its table), and the children
//! other code starts with std (the launcher's workers and restart successor), which claim
//! their PID here ([`claim_child`]) for as long as their owner may wait for them.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// PIDs of children that code other than the reactor waits for.
static CLAIMED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Says that `pid`, a child of ours started outside the reactor, is waited for by its owner:
/// the orphan reaper leaves it alone until [`release_child`].
pub fn claim_child(pid: u32) {
    if let Ok(mut c) = CLAIMED.lock() {
        c.insert(pid as i32);
    }
}

/// The owner of `pid` no longer waits for it (it reaped it, or gave it up).
pub fn release_child(pid: u32) {
    if let Ok(mut c) = CLAIMED.lock() {
        c.remove(&(pid as i32));
    }
}

fn claimed(pid: i32) -> bool {
    CLAIMED.lock().map(|c| c.contains(&pid)).unwrap_or(true)
}

/// True when orphans are handed to this process: it is PID 1 of its namespace, or a child
/// subreaper (`PR_SET_CHILD_SUBREAPER`, kept across exec).
pub fn receives_orphans() -> bool {
    if std::process::id() == 1 {
        return true;
    }
    let mut flag: libc::c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int at the pointer given.
    let r = unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut flag as *mut libc::c_int) };
    r == 0 && flag != 0
}

/// Our children, from /proc when /proc is our PID namespace's (its idea of our PID is ours:
/// a host's /proc in a namespace of our own would name other PIDs); None otherwise.
fn children_from_proc() -> Option<Vec<i32>> {
    // Asked once: a process's PID namespace, and so the answer, never changes.
    static PROC_IS_OURS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ours = *PROC_IS_OURS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/stat").is_ok_and(|stat| {
            stat.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                == Some(std::process::id())
        })
    });
    if !ours {
        return None;
    }
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(task) = task else { continue };
        // CONFIG_PROC_CHILDREN: missing on some kernels.
        let list = std::fs::read_to_string(task.path().join("children")).ok()?;
        out.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    Some(out)
}

/// Reaps every exited child that neither the reactor (`own`) nor another owner
/// ([`claim_child`]) waits for; returns how many. Never blocks.
pub(crate) fn reap_orphans(own: impl Fn(i32) -> bool) -> usize {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let mut reaped = 0;
    let mut reap = |pid: i32| loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return false,
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                reaped += 1;
                return true;
            }
            // Stopped or continued: not an exit (we never ask for those, but be safe).
            Ok(_) => continue,
        }
    };
    if let Some(children) = children_from_proc() {
        for pid in children {
            if !own(pid) && !claimed(pid) {
                reap(pid);
            }
        }
        return reaped;
    }
    // No usable /proc: look at the exited children one at a time without reaping
    // (WNOWAIT), and reap each that is nobody's; one that is someone's ends the round (its
    // owner reaps it, and the next SIGCHLD starts another).
    for _ in 0..4096 {
        // SAFETY: waitid fills the siginfo_t given; zeroed first, as waitid(2) advises for
        // WNOHANG.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid is valid for the SIGCHLD siginfo waitid fills.
        let pid = unsafe { info.si_pid() };
        if r != 0 || pid == 0 || own(pid) || claimed(pid) || !reap(pid) {
            break;
        }
    }
    reaped
}
