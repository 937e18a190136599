//! `getaddrinfo(3)` for the look-ups std's `ToSocketAddrs` cannot ask: an address in one
//! family, and a name's canonical name. One place holds the unsafe list walk.

use std::ffi::{CStr, CString};
use std::net::IpAddr;

/// Asks `getaddrinfo` for `name` with `family` (`AF_UNSPEC`, `AF_INET`, `AF_INET6`) and
/// `flags`, and gives every entry of its answer to `each` until it returns `Some`.
fn walk<T>(
    name: &str,
    family: libc::c_int,
    flags: libc::c_int,
    mut each: impl FnMut(&libc::addrinfo) -> Option<T>,
) -> Result<Option<T>, String> {
    let c = CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: zeroed hints but family, flags and socket type, a NUL-terminated name and an
    // out pointer that getaddrinfo fills; the list is walked while it lives, each entry
    // borrowed only for its call, and freed once.
    unsafe {
        let mut hints: libc::addrinfo = std::mem::zeroed();
        hints.ai_family = family;
        hints.ai_flags = flags;
        hints.ai_socktype = libc::SOCK_STREAM;
        let mut res: *mut libc::addrinfo = std::ptr::null_mut();
        let rc = libc::getaddrinfo(c.as_ptr(), std::ptr::null(), &hints, &mut res);
        if rc != 0 {
            return Err(CStr::from_ptr(libc::gai_strerror(rc))
                .to_string_lossy()
                .into_owned());
        }
        let mut found = None;
        let mut p = res;
        while !p.is_null() && found.is_none() {
            found = each(&*p);
            p = (*p).ai_next;
        }
        if !res.is_null() {
            libc::freeaddrinfo(res);
        }
        Ok(found)
    }
}

/// `name`'s first address in one family (IPv6 for `v6`, else IPv4), asked in that family as
/// Python's `bind` on an `AF_INET` or `AF_INET6` socket asks: the resolver's answer for the
/// family (glibc answers an IPv4 question from a `::1 name` line of /etc/hosts with
/// 127.0.0.1), not every address filtered afterwards. None if it has none.
pub fn lookup(name: &str, v6: bool) -> Result<Option<IpAddr>, String> {
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    walk(name, family, 0, |ai| {
        if ai.ai_addr.is_null() {
            return None;
        }
        // SAFETY: getaddrinfo gives an address of the entry's family.
        unsafe {
            match ai.ai_family {
                libc::AF_INET if !v6 => {
                    let sa = &*(ai.ai_addr as *const libc::sockaddr_in);
                    // s_addr holds the octets in network order: its bytes as they lie.
                    Some(IpAddr::from(sa.sin_addr.s_addr.to_ne_bytes()))
                }
                libc::AF_INET6 if v6 => {
                    let sa = &*(ai.ai_addr as *const libc::sockaddr_in6);
                    Some(IpAddr::from(sa.sin6_addr.s6_addr))
                }
                _ => None,
            }
        }
    })
}

/// `name`'s canonical name (`AI_CANONNAME`), as `hostname -f` and Python's `getfqdn()` find
/// it; None if the resolver has none.
pub fn canonical_name(name: &str) -> Option<String> {
    walk(name, libc::AF_UNSPEC, libc::AI_CANONNAME, |ai| {
        // SAFETY: a non-null ai_canonname is a NUL-terminated string of the list.
        (!ai.ai_canonname.is_null()).then(|| {
            unsafe { CStr::from_ptr(ai.ai_canonname) }
                .to_string_lossy()
                .into_owned()
        })
    })
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_in_each_family_and_its_canonical_name() {
        assert_eq!(
            lookup("localhost", false),
            Ok(Some("127.0.0.1".parse().unwrap()))
        );
        assert!(lookup("no-such-host.invalid", false).is_err());
        assert!(canonical_name("localhost").is_some());
        assert_eq!(canonical_name("no-such-host.invalid"), None);
    }
}
