//! The few libc calls the load generator needs: descriptor limit, own CPU time, and a
//! non-blocking look at stdin.

use std::io;
use std::time::Duration;

/// Raises the RLIMIT_NOFILE soft limit to the hard limit; errors if that is below `need`.
pub fn raise_nofile(need: u64) -> Result<u64, String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!(
            "getrlimit(RLIMIT_NOFILE): {}",
            io::Error::last_os_error()
        ));
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(format!(
                "setrlimit(RLIMIT_NOFILE, {}): {}",
                lim.rlim_max,
                io::Error::last_os_error()
            ));
        }
    }
    if lim.rlim_cur < need {
        return Err(format!(
            "RLIMIT_NOFILE hard limit is {}, {need} descriptors are needed (raise it with ulimit -Hn)",
            lim.rlim_max
        ));
    }
    Ok(lim.rlim_cur)
}

/// User plus system CPU time of this process so far.
pub fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Whether stdin has reached end of file, without blocking: drains what is readable
/// (bounded) and ignores it. A read error also counts as closed.
pub fn stdin_closed() -> bool {
    let mut buf = [0u8; 4096];
    for _ in 0..1024 {
        let mut pfd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        if unsafe { libc::poll(&mut pfd, 1, 0) } <= 0 {
            return false;
        }
        // SAFETY: reads into our own buffer; poll said it will not block.
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 {
            return true;
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            return !matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            );
        }
    }
    false
}
