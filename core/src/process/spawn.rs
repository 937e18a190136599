//! Starting a child without copying the parent: clone(CLONE_VM | CLONE_VFORK), as glibc's
//! posix_spawn does, with twistrs' own steps (privileges, descriptor limit, parent-death
//! signal, directory, session) between the clone and the exec.
//!
//! A fork copies the page tables of the whole process, and both sides then take a
//! copy-on-write fault on every page they write: about 150 us of a few-MiB twistrs per child
//! on a 2-core VM, which inetd pays for every connection. Here the child runs in our memory,
//! on a stack of its own, until it executes, and we wait for that (CLONE_VFORK): nothing is
//! copied. The child therefore only makes system calls on data prepared before the clone:
//! no allocation, no lock, no glibc wrapper with state shared with our threads (the set*id
//! calls go through syscall(2): glibc's would signal our other threads), and every signal is
//! blocked until the handlers it inherited from us are back to their defaults (a handler
//! would run our code on our memory).

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};

use super::{ChildIo, Credentials, Forked, NOT_INHERITED, ProcessSpec, child_nofile_rlimit};

/// The child's stack, with a guard page below it.
const STACK: usize = 256 * 1024;

/// What runs a file that has no `#!` line, as execvp(3) runs it.
const SH: &std::ffi::CStr = c"/bin/sh";

/// What the child does between the clone and the exec, prepared before the clone.
pub(crate) struct ChildSetup {
    pub(crate) creds: Option<Credentials>,
    pub(crate) cwd: Option<CString>,
    pub(crate) new_session: bool,
    pub(crate) new_process_group: bool,
    pub(crate) death_signal: Option<i32>,
    pub(crate) parent: libc::pid_t,
    /// For prlimit64(2), whose structure has 64-bit fields on every target (`libc::rlimit`
    /// has 32-bit ones on 32-bit targets, and the kernel would read past it).
    pub(crate) nofile: Option<libc::rlimit64>,
}

/// Everything the child reads. It stays on our stack, which does not move: we are
/// suspended until the child has executed or exited.
struct Prepared {
    /// The program's path, or the paths execvp(3) would try in turn (one per PATH entry).
    paths: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    /// `/bin/sh PATH ARGS...` for a file without `#!` (ENOEXEC), as execvp(3) runs it: the
    /// child puts the path it tried in slot 1.
    script_argv: Vec<std::cell::Cell<*const libc::c_char>>,
    envp: Vec<*const libc::c_char>,
    stdio: [RawFd; 3],
    setup: ChildSetup,
    /// errno of the step that failed in the child; 0 if it executed.
    err: AtomicI32,
}

fn cstring(s: &OsStr, what: &str) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {s:?} has a NUL byte"),
        )
    })
}

/// The child's environment: ours (unless cleared), less twistrs' own, with the spec's changes.
fn environment(spec: &ProcessSpec) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = if spec.env_clear {
        BTreeMap::new()
    } else {
        std::env::vars_os().collect()
    };
    for k in NOT_INHERITED {
        env.remove(OsStr::new(k));
    }
    for (k, v) in &spec.env {
        match v {
            Some(v) => env.insert(k.clone(), v.clone()),
            None => env.remove(k),
        };
    }
    env
}

/// Where the program may be: itself if it has a slash, else that name in each directory of
/// the child's PATH (ours, or glibc's default), tried in turn by the child, as execvp(3)
/// does: as the child's user, so a directory that user cannot enter is passed over.
fn candidates(program: &OsStr, env: &BTreeMap<OsString, OsString>) -> Vec<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return vec![PathBuf::from(program)];
    }
    let path = env
        .get(OsStr::new("PATH"))
        .cloned()
        .unwrap_or_else(|| OsString::from("/bin:/usr/bin"));
    std::env::split_paths(&path)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".").join(program)
            } else {
                dir.join(program)
            }
        })
        .collect()
}

/// True if `c` is the user and group we run as already and we could not change them anyway
/// (we are not root): twistrs started with `-u nobody -g nogroup` runs an inetd line's
/// `nobody` program, or procmon's `--user nobody`, as it is, as twistd does. Asking the
/// kernel would fail: setgroups(2) takes privilege even to set the groups we have.
fn already_ours(c: &Credentials) -> bool {
    use nix::unistd::{getegid, geteuid, getgid, getuid};
    !geteuid().is_root()
        && c.uid == getuid().as_raw()
        && c.uid == geteuid().as_raw()
        && c.gid == getgid().as_raw()
        && c.gid == getegid().as_raw()
}

/// Forks and executes `spec` (see the module's comment). Returns once the child has
/// executed; a failure before that (a program that cannot be executed, a refused privilege
/// change, a missing directory) is the error, and the child is reaped.
pub(crate) fn fork_exec(spec: &ProcessSpec) -> io::Result<Forked> {
    if let Some(dir) = &spec.cwd
        && !dir.is_dir()
    {
        // Checked here too: from the child, a missing directory is only ENOENT, which reads
        // as if the program were missing.
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("working directory {} is not a directory", dir.display()),
        ));
    }
    let env = environment(spec);
    let paths = candidates(&spec.program, &env)
        .iter()
        .map(|p| cstring(p.as_os_str(), "program"))
        .collect::<io::Result<Vec<_>>>()?;
    let mut args = Vec::with_capacity(spec.args.len() + 1);
    args.push(cstring(
        spec.arg0.as_deref().unwrap_or(&spec.program),
        "argument",
    )?);
    for a in &spec.args {
        args.push(cstring(a, "argument")?);
    }
    let mut vars = Vec::with_capacity(env.len());
    for (k, v) in &env {
        let mut kv = k.clone();
        kv.push("=");
        kv.push(v);
        vars.push(cstring(&kv, "environment variable")?);
    }
    // Our ends of the pipes, and the child's ends and /dev/null until the child has them.
    let mut ours: [Option<OwnedFd>; 3] = [None, None, None];
    let mut keep: Vec<OwnedFd> = Vec::new();
    let mut stdio: [RawFd; 3] = [-1; 3];
    for (i, io) in spec.stdio.iter().enumerate() {
        stdio[i] = match io {
            ChildIo::Null => {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")?;
                let fd = OwnedFd::from(f);
                let raw = fd.as_raw_fd();
                keep.push(fd);
                raw
            }
            ChildIo::Fd(fd) => fd.as_raw_fd(),
            ChildIo::Pipe => {
                let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                let (child, parent) = if i == 0 { (r, w) } else { (w, r) };
                ours[i] = Some(parent);
                let raw = child.as_raw_fd();
                keep.push(child);
                raw
            }
        };
    }
    let cwd = match &spec.cwd {
        Some(d) => Some(cstring(d.as_os_str(), "directory")?),
        None => None,
    };
    let nofile = child_nofile_rlimit();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let script_argv = std::iter::once(SH.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .chain(argv[1..].iter().copied())
        .map(std::cell::Cell::new)
        .collect();
    let mut envp: Vec<*const libc::c_char> = vars.iter().map(|v| v.as_ptr()).collect();
    envp.push(std::ptr::null());
    let prepared = Prepared {
        paths,
        argv,
        script_argv,
        envp,
        stdio,
        setup: ChildSetup {
            creds: spec.credentials.clone().filter(|c| !already_ours(c)),
            cwd,
            new_session: spec.new_session,
            new_process_group: spec.new_process_group,
            death_signal: spec.parent_death_signal,
            parent: std::process::id() as libc::pid_t,
            nofile,
        },
        err: AtomicI32::new(0),
    };
    let stack = Stack::new()?;
    // SAFETY: the child runs `child_main` on its own stack with `prepared`, which outlives
    // it (CLONE_VFORK: we resume once it has executed or exited); every signal is blocked
    // across the clone, so no handler of ours runs in the child before it resets them.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &prepared as *const Prepared as *mut libc::c_void,
        );
        let e = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(e);
        }
        pid
    };
    drop(keep);
    let err = prepared.err.load(Ordering::Acquire);
    if err != 0 {
        // It exited at once: reap it here, no one else knows it.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        return Err(io::Error::from_raw_os_error(err));
    }
    Ok(Forked {
        pid: pid as u32,
        pipes: ours,
    })
}

/// The child's stack: mapped for one spawn, with a guard page below it.
struct Stack {
    base: *mut libc::c_void,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        // SAFETY: an anonymous private mapping of our own; the lowest page becomes the guard.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let page = libc::sysconf(libc::_SC_PAGESIZE).max(4096) as usize;
            libc::mprotect(base, page, libc::PROT_NONE);
            Ok(Stack { base })
        }
    }

    /// The top (stacks grow down on every platform Linux runs twistrs on).
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, 16-byte aligned (the mapping is).
        unsafe { self.base.cast::<u8>().add(STACK).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; the child has executed or exited.
        unsafe {
            libc::munmap(self.base, STACK);
        }
    }
}

/// The child, on its own stack in our memory: its steps, then exec; on a failure the errno
/// goes to the parent and the child exits.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Prepared`, alive until we execute or exit.
    let p = unsafe { &*(arg as *const Prepared) };
    // SAFETY: system calls on data prepared by the parent; see `steps`.
    let err = unsafe { steps(p) };
    p.err.store(err.max(1), Ordering::Release);
    // SAFETY: _exit runs no handler and touches nothing of the parent's.
    unsafe { libc::_exit(127) }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Signals back to their defaults, descriptors, twistrs' steps, signals unblocked, exec.
/// Returns the errno of the step that failed (exec returns only then).
///
/// # Safety
/// Only in the child of `fork_exec`: it changes the process's descriptors and identity.
unsafe fn steps(p: &Prepared) -> i32 {
    // SAFETY: plain system calls on our own (the child's) process state.
    unsafe {
        // Our handlers would run our code on our memory. Ignored signals stay ignored (as
        // across exec), but SIGPIPE and SIGXFSZ go back to their defaults, as std does
        // for SIGPIPE (Rust ignores it) and Python's subprocess for both (the launcher
        // ignores SIGXFSZ).
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if (old.sa_sigaction != libc::SIG_IGN && old.sa_sigaction != libc::SIG_DFL)
                || sig == libc::SIGPIPE
                || sig == libc::SIGXFSZ
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        for (i, &src) in p.stdio.iter().enumerate() {
            let i = i as RawFd;
            let r = if src == i {
                libc::fcntl(i, libc::F_SETFD, 0)
            } else {
                libc::dup2(src, i)
            };
            if r < 0 {
                return errno();
            }
        }
        if let Err(e) = p.setup.run() {
            return e;
        }
        // The mask a new program expects: nothing blocked.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &none as *const libc::sigset_t,
            std::ptr::null_mut::<libc::sigset_t>(),
            8usize,
        );
        // execvp(3)'s search: a name missing here, or a directory this user may not
        // search, sends it on to the next; EACCES is the answer if nothing else is found.
        let mut denied = false;
        for path in &p.paths {
            libc::execve(path.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
            match errno() {
                libc::ENOEXEC => {
                    p.script_argv[1].set(path.as_ptr());
                    libc::execve(
                        SH.as_ptr(),
                        p.script_argv.as_ptr().cast::<*const libc::c_char>(),
                        p.envp.as_ptr(),
                    );
                    return errno();
                }
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ETIMEDOUT | libc::ENODEV => {}
                e => return e,
            }
        }
        if denied { libc::EACCES } else { libc::ENOENT }
    }
}

impl ChildSetup {
    /// In the child: marks every descriptor above 2 close-on-exec, restores the descriptor
    /// limit, drops privileges (supplementary groups, group, then user), sets the
    /// parent-death signal, enters the working directory and, if asked, a new session or
    /// process group.
    /// Raw system calls only; the errno of a failure.
    fn run(&self) -> Result<(), i32> {
        let check = |r: libc::c_long| if r < 0 { Err(errno()) } else { Ok(()) };
        // SAFETY: plain system calls on integers and on buffers that outlive them.
        unsafe {
            // ENOSYS on kernels before 5.11 (CLOSE_RANGE_CLOEXEC): everything of ours is
            // close-on-exec anyway; this only catches a descriptor someone else leaked.
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
            );
            if let Some(l) = &self.nofile {
                check(libc::syscall(
                    libc::SYS_prlimit64,
                    0 as libc::pid_t,
                    libc::RLIMIT_NOFILE,
                    l as *const libc::rlimit64,
                    std::ptr::null_mut::<libc::rlimit64>(),
                ))?;
            }
            if let Some(c) = &self.creds {
                check(libc::syscall(
                    libc::SYS_setgroups,
                    c.groups.len(),
                    c.groups.as_ptr(),
                ))?;
                check(libc::syscall(libc::SYS_setgid, c.gid))?;
                check(libc::syscall(libc::SYS_setuid, c.uid))?;
            }
            if let Some(sig) = self.death_signal {
                check(libc::syscall(
                    libc::SYS_prctl,
                    libc::PR_SET_PDEATHSIG,
                    sig as libc::c_ulong,
                ))?;
                // The parent may have died between the clone and the prctl: no signal comes.
                if libc::syscall(libc::SYS_getppid) as libc::pid_t != self.parent {
                    return Err(libc::ESRCH);
                }
            }
            if let Some(d) = &self.cwd {
                check(libc::syscall(libc::SYS_chdir, d.as_ptr()))?;
            }
            if self.new_session {
                check(libc::syscall(libc::SYS_setsid))?;
            } else if self.new_process_group {
                check(libc::syscall(
                    libc::SYS_setpgid,
                    0 as libc::pid_t,
                    0 as libc::pid_t,
                ))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn programs_are_looked_for_in_the_childs_path() {
        let mut env = BTreeMap::new();
        env.insert(OsString::from("PATH"), OsString::from("/nonexistent::/bin"));
        assert_eq!(
            candidates(OsStr::new("sh"), &env),
            [
                Path::new("/nonexistent/sh"),
                Path::new("./sh"),
                Path::new("/bin/sh")
            ]
        );
        assert_eq!(
            candidates(OsStr::new("./x/y"), &env),
            [Path::new("./x/y")],
            "a path is taken as it is"
        );
        env.clear();
        assert_eq!(
            candidates(OsStr::new("sh"), &env),
            [Path::new("/bin/sh"), Path::new("/usr/bin/sh")],
            "glibc's default PATH"
        );
    }

    #[test]
    fn the_environment_is_ours_less_twistrs_own_with_the_changes() {
        let spec = ProcessSpec::new("true")
            .env("TWISTRS_SPAWN_TEST", "1")
            .env("LISTEN_FDS", "3")
            .env_remove("PATH");
        let env = environment(&spec);
        assert_eq!(
            env.get(OsStr::new("TWISTRS_SPAWN_TEST"))
                .map(|v| v.as_os_str()),
            Some(OsStr::new("1"))
        );
        assert!(
            env.contains_key(OsStr::new("LISTEN_FDS")),
            "set by the spec"
        );
        assert!(!env.contains_key(OsStr::new("PATH")));
        let env = environment(&ProcessSpec::new("true").env_clear().env("A", "b"));
        assert_eq!(env.len(), 1);
    }
}
