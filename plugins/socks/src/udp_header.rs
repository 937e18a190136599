//! RFC 1928's UDP request header, sans-IO: `RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA`.
//!
//! Fragments (FRAG other than 0) are dropped, as the RFC allows a server that does not
//! reassemble them to do.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::negotiate::{Host, Target, push_addr};

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
    let (start, len) = match head[3] {
        1 => (4, 4),
        4 => (4, 16),
        3 => (5, usize::from(*d.get(4).ok_or(Dropped::Truncated)?)),
        a => return Err(Dropped::AddressType(a)),
    };
    let addr = d.get(start..start + len).ok_or(Dropped::Truncated)?;
    let port = d
        .get(start + len..start + len + 2)
        .ok_or(Dropped::Truncated)?;
    let port = u16::from_be_bytes([port[0], port[1]]);
    let host = match head[3] {
        1 => <[u8; 4]>::try_from(addr).map(|o| Host::Ip(Ipv4Addr::from(o).into())),
        4 => <[u8; 16]>::try_from(addr).map(|o| Host::Ip(Ipv6Addr::from(o).into())),
        _ => match std::str::from_utf8(addr) {
            Ok(n) if !n.is_empty() && n.bytes().all(|b| b > b' ' && b != 0x7f) => {
                Ok(match n.parse() {
                    Ok(ip) => Host::Ip(ip),
                    Err(_) => Host::Name(n.to_string()),
                })
            }
            _ => return Err(Dropped::BadName),
        },
    }
    .map_err(|_| Dropped::Truncated)?;
    Ok((Target { host, port }, &d[start + len + 2..]))
}

/// A datagram from `from` for the client, behind its header.
pub fn wrap(from: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(data.len() + 22);
    d.extend_from_slice(&[0, 0, 0]);
    push_addr(&mut d, from);
    d.extend_from_slice(data);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_both_ways() {
        let from: SocketAddr = "10.0.0.1:53".parse().unwrap();
        let d = wrap(from, b"answer");
        assert_eq!(d, b"\x00\x00\x00\x01\x0a\x00\x00\x01\x00\x35answer");
        let (t, data) = parse(&d).unwrap();
        assert_eq!((t, data), (Target::ip(from), &b"answer"[..]));
        let six: SocketAddr = "[::1]:7".parse().unwrap();
        let empty = wrap(six, b"");
        let (t, data) = parse(&empty).unwrap();
        assert_eq!((t, data), (Target::ip(six), &b""[..]));
        let (t, data) = parse(b"\x00\x00\x00\x03\x09localhost\x00\x07hi").unwrap();
        assert_eq!(t.to_string(), "localhost:7");
        assert_eq!(data, b"hi");
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
