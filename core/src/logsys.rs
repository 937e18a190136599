//! The "system" of a log line: the `[...]` part of twistd's format, as a `log` target.
//!
//! twistd prints `2026-11-26T17:36:39+0000 [SYSTEM] text`, where SYSTEM is `-` for the
//! service's own lines (`Echo starting on 7`), a connection's log prefix for its lines
//! (`Echo,3,127.0.0.1`), or a module and level (`twisted.internet.base#info`). twistrs passes
//! the system as the `log` crate's target, and the launcher prints it by one rule:
//! [`is_verbatim`] targets are printed as they are, any other is a module path printed with its
//! level. Plugins use [`BARE`] and [`connection`]; their own module names do the rest.

use crate::address::Address;

/// The system of a service's own lines (twistd's `-`).
pub const BARE: &str = "-";

/// A connection's system, Twisted's `logPrefix`: `Echo,3,127.0.0.1` (factory name, session
/// number, peer host).
pub fn connection(name: &str, session: u32, peer: &Address) -> String {
    format!("{name},{session},{}", peer.host_string())
}

/// True if `target` is printed as it is: [`BARE`], or a connection's system (it has a comma,
/// which no module path has).
pub fn is_verbatim(target: &str) -> bool {
    target == BARE || target.contains(',')
}

/// twistd's timestamp: `%Y-%m-%dT%H:%M:%S%z` in local time (`2026-11-26T17:36:39+0000`),
/// for the main log and plugins' own log files.
pub fn timestamp(secs: i64) -> String {
    // SAFETY: localtime_r writes only into the tm we pass.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let t: libc::time_t = secs;
        if libc::localtime_r(&t, &mut tm).is_null() {
            return secs.to_string();
        }
        tm
    };
    let off = tm.tm_gmtoff;
    let (sign, off) = if off < 0 { ('-', -off) } else { ('+', off) };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        sign,
        off / 3600,
        off % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_convention() {
        let peer = Address::Tcp("127.0.0.1:4000".parse().unwrap());
        let sys = connection("Echo", 3, &peer);
        assert_eq!(sys, "Echo,3,127.0.0.1");
        assert!(is_verbatim(&sys) && is_verbatim(BARE));
        assert!(!is_verbatim("twistrs.mail.smtp"));
    }
}
