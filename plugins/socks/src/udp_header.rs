//! RFC 1928's UDP request header, sans-IO: `RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA`.
//!
//! Fragments (FRAG other than 0) are dropped, as the RFC allows a server that does not
//! reassemble them to do.

use std::net::SocketAddr;

use crate::negotiate::{Addr, Target, push_addr, read_addr};

/// Why a datagram from the client was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    Truncated,
    Fragment(u8),
    AddressType(u8),
    BadName,
}

/// The destination and payload of a datagram from the client.
pub fn parse(d: &[u8]) -> Result<(Target, &[u8]), Dropped> {
    let head = d.get(..4).ok_or(Dropped::Truncated)?;
    if head[2] != 0 {
        return Err(Dropped::Fragment(head[2]));
    }
    match read_addr(d.get(3..).unwrap_or_default()) {
        Addr::Short => Err(Dropped::Truncated),
        Addr::Type(a) => Err(Dropped::AddressType(a)),
        Addr::Read(None, ..) => Err(Dropped::BadName),
        Addr::Read(Some(host), port, len) => {
            Ok((Target { host, port }, d.get(3 + len..).unwrap_or_default()))
        }
    }
}

/// A datagram from `from` for the client, behind its header, in `d` (cleared first: a port
/// reuses one buffer for every datagram).
pub fn wrap_into(d: &mut Vec<u8>, from: SocketAddr, data: &[u8]) {
    d.clear();
    d.reserve(data.len() + 22);
    d.extend_from_slice(&[0, 0, 0]);
    push_addr(d, from);
    d.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(from: SocketAddr, data: &[u8]) -> Vec<u8> {
        let mut d = b"left from the last one".to_vec();
        wrap_into(&mut d, from, data);
        d
    }

    #[test]
    fn headers_both_ways() {
        let from: SocketAddr = "10.0.0.1:53".parse().unwrap();
        let d = wrap(from, b"answer");
        assert_eq!(d, b"\x00\x00\x00\x01\x0a\x00\x00\x01\x00\x35answer");
        let (t, data) = parse(&d).unwrap();
        assert_eq!((t, data), (Target::ip(from), &b"answer"[..]));
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:53".parse().unwrap();
        assert_eq!(
            wrap(mapped, b"answer"),
            d,
            "the source as the client named it"
        );
        let six: SocketAddr = "[::1]:7".parse().unwrap();
        let empty = wrap(six, b"");
        let (t, data) = parse(&empty).unwrap();
        assert_eq!((t, data), (Target::ip(six), &b""[..]));
        let (t, data) = parse(b"\x00\x00\x00\x03\x09localhost\x00\x07hi").unwrap();
        assert_eq!(t.to_string(), "localhost:7");
        assert_eq!(data, b"hi");
        // A bracketed literal is the address, as in a request: no lookup of "[::1]".
        let (t, _) = parse(b"\x00\x00\x00\x03\x05[::1]\x00\x07").unwrap();
        assert_eq!(t, Target::ip(six));
    }

    #[test]
    fn bad_datagrams_are_dropped_without_panic() {
        assert_eq!(
            parse(b"\x00\x00\x01\x01\x0a\x00\x00\x01\x00\x35x"),
            Err(Dropped::Fragment(1))
        );
        assert_eq!(parse(b"\x00\x00\x00\x02"), Err(Dropped::AddressType(2)));
        assert_eq!(
            parse(b"\x00\x00\x00\x03\x00\x00\x35"),
            Err(Dropped::BadName)
        );
        let full = wrap("[::1]:7".parse().unwrap(), b"");
        for n in 0..full.len() {
            assert_eq!(parse(&full[..n]), Err(Dropped::Truncated), "{n}");
        }
    }
}
