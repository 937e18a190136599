//! Batched datagram I/O: `recvmmsg(2)` and `sendmmsg(2)` for ports whose protocol takes only
//! small datagrams ([`crate::DatagramProtocol::max_datagram`]), so a busy port (a DNS server
//! under load) makes two system calls per batch of datagrams instead of two per datagram.
//!
//! The datagrams of a batch land in slots of the reactor's read buffer; the answers the
//! protocol writes meanwhile are queued in an [`Outbox`] and leave together once the batch
//! has been handed over. UDP stays lossy as before: what the socket cannot take now is
//! dropped, as a full socket buffer drops it.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use crate::transport::DatagramSink;

/// Datagrams per `recvmmsg` (and answers per `sendmmsg`).
pub(crate) const BATCH: usize = 16;

/// One batch of received datagrams: their lengths and senders.
pub(crate) struct Inbox {
    slot: usize,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
}

impl Inbox {
    /// Slots of `slot` bytes: `BATCH * slot` must fit the read buffer.
    pub(crate) fn new(slot: usize) -> Inbox {
        Inbox {
            slot,
            // SAFETY: mmsghdr, iovec and sockaddr_storage are plain C structs for which all
            // zero bytes is a valid value (null pointers, zero lengths).
            hdrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            addrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
        }
    }

    /// Reads up to `BATCH` datagrams into `buf` (without blocking); how many.
    pub(crate) fn recv(&mut self, fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
        let n = BATCH.min(buf.len() / self.slot);
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: buf[i * self.slot..].as_mut_ptr().cast(),
                iov_len: self.slot,
            };
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: the first `n` headers point at `n` disjoint slots of `buf` (n * slot bytes,
        // checked above) and at their own address storage, all alive for the call.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(got as usize)
    }

    /// Datagram `i` of the last `recv`: its bytes in `buf` and its sender, or `None` if it
    /// was longer than a slot (truncated: dropped) or came from no IP address.
    pub(crate) fn get<'b>(&self, i: usize, buf: &'b [u8]) -> Option<(&'b [u8], SocketAddr)> {
        let h = self.hdrs.get(i)?;
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            log::debug!(target: "twistrs.udp", "a datagram over {} bytes dropped", self.slot);
            return None;
        }
        let len = (h.msg_len as usize).min(self.slot);
        let data = buf.get(i * self.slot..i * self.slot + len)?;
        Some((data, to_socket_addr(self.addrs.get(i)?)?))
    }
}

fn to_socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large
            // and aligned enough for.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(a.sin_addr.s_addr).into(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Answers written during a batch, sent together with `sendmmsg`.
pub(crate) struct Outbox {
    fd: RawFd,
    bytes: Vec<u8>,
    items: Vec<(usize, usize, socket2::SockAddr)>,
}

impl Outbox {
    pub(crate) fn new(fd: RawFd) -> Outbox {
        Outbox {
            fd,
            bytes: Vec::new(),
            items: Vec::with_capacity(BATCH),
        }
    }

    /// Sends what is queued; what the socket does not take now is dropped.
    pub(crate) fn flush(&mut self) {
        let mut sent = 0;
        while sent < self.items.len() {
            let mut iovs: Vec<libc::iovec> = self.items[sent..]
                .iter()
                .map(|(start, len, _)| libc::iovec {
                    iov_base: self.bytes[*start..].as_ptr() as *mut libc::c_void,
                    iov_len: *len,
                })
                .collect();
            let mut hdrs: Vec<libc::mmsghdr> = self.items[sent..]
                .iter()
                .zip(iovs.iter_mut())
                .map(|((_, _, addr), iov)| {
                    // SAFETY: all-zero bytes are a valid mmsghdr.
                    let mut h: libc::mmsghdr = unsafe { zeroed() };
                    h.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
                    h.msg_hdr.msg_namelen = addr.len();
                    h.msg_hdr.msg_iov = iov;
                    h.msg_hdr.msg_iovlen = 1;
                    h
                })
                .collect();
            // SAFETY: each header points at one iovec over `self.bytes` and at its address,
            // all alive and unmoved for the call; sendmmsg only reads them.
            let n = unsafe {
                libc::sendmmsg(
                    self.fd,
                    hdrs.as_mut_ptr(),
                    hdrs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                let e = io::Error::last_os_error();
                if n < 0 && e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::debug!(target: "twistrs.udp",
                    "{} datagram(s) dropped: {e}", self.items.len() - sent);
                break;
            }
            sent += n as usize;
        }
        self.items.clear();
        self.bytes.clear();
    }
}

impl DatagramSink for Outbox {
    fn send_to(&mut self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.items
            .push((start, data.len(), socket2::SockAddr::from(to)));
        if self.items.len() >= BATCH {
            self.flush();
        }
        Ok(data.len())
    }
}
