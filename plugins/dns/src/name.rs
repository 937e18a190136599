//! Domain names as lookup keys: the uncompressed wire form in lower case.
//!
//! Zones, hosts and caches are maps keyed by this form, so a query's name is looked up after
//! one pass over its bytes, and a name's ancestors are its suffixes (drop the first label).

use bytes::Bytes;
use domain::base::Name;

/// An owned domain name (the crate's type, for record data and answers).
pub type Dname = Name<Bytes>;

/// The longest name on the wire, root label included (RFC 1035 2.3.4).
pub const MAX_NAME: usize = 255;

/// Reads an uncompressed name at `msg[at..]` (a question's name: RFC 1035 allows no pointer
/// there worth following). Returns its length on the wire, or `None` if it is malformed,
/// compressed or longer than 255 bytes.
pub fn name_len(msg: &[u8], at: usize) -> Option<usize> {
    let mut pos = at;
    loop {
        let len = *msg.get(pos)? as usize;
        if len & 0xC0 != 0 {
            return None;
        }
        pos += 1 + len;
        if pos - at > MAX_NAME || pos > msg.len() {
            return None;
        }
        if len == 0 {
            return Some(pos - at);
        }
    }
}

/// The lookup key of a wire name: the same bytes with ASCII letters in lower case (length
/// octets are below 64 and so never letters).
pub fn key_of(wire: &[u8]) -> Box<[u8]> {
    wire.to_ascii_lowercase().into_boxed_slice()
}

/// The key of a domain name.
pub fn key(name: &Dname) -> Box<[u8]> {
    key_of(name.as_slice())
}

/// The parent of a key (the name without its first label), or `None` at the root.
pub fn parent(key: &[u8]) -> Option<&[u8]> {
    let first = *key.first()? as usize;
    if first == 0 {
        return None;
    }
    key.get(1 + first..)
}

/// The name and its ancestors up to the root, nearest first.
pub fn suffixes(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::successors(Some(key), |k| parent(k))
}

/// True if `key` is `apex` or below it.
pub fn is_within(key: &[u8], apex: &[u8]) -> bool {
    suffixes(key).any(|s| s == apex)
}

/// Labels in a key (the root has none).
pub fn label_count(key: &[u8]) -> usize {
    suffixes(key).count() - 1
}

/// The name of a key (a valid key always makes one).
pub fn from_key(key: &[u8]) -> Option<Dname> {
    Name::from_octets(Bytes::copy_from_slice(key)).ok()
}

/// `*.` followed by `key`, the wildcard a closest encloser may hold (RFC 4592).
pub fn wildcard_of(key: &[u8]) -> Vec<u8> {
    let mut w = Vec::with_capacity(key.len() + 2);
    w.extend_from_slice(&[1, b'*']);
    w.extend_from_slice(key);
    w
}

/// A name from text (`www.example.com`), absolute, for options and tests.
pub fn parse(text: &str) -> Option<Dname> {
    let t = text.trim_end_matches('.');
    if t.is_empty() {
        return Some(Name::root_bytes());
    }
    Name::bytes_from_str(&format!("{t}.")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ancestors() {
        let n = parse("WWW.Example.COM").unwrap();
        let k = key(&n);
        assert_eq!(&*k, b"\x03www\x07example\x03com\x00");
        let up: Vec<&[u8]> = suffixes(&k).collect();
        assert_eq!(up.len(), 4);
        assert_eq!(up[3], b"\x00");
        assert!(is_within(&k, b"\x03com\x00"));
        assert!(!is_within(b"\x03com\x00", &k));
        assert_eq!(label_count(&k), 3);
        assert_eq!(&wildcard_of(b"\x03com\x00"), b"\x01*\x03com\x00");
        assert_eq!(from_key(&k).unwrap().to_string(), "www.example.com");
    }

    #[test]
    fn wire_names_are_checked() {
        assert_eq!(name_len(b"\x03www\x00rest", 0), Some(5));
        assert_eq!(name_len(b"\x03ww", 0), None, "cut short");
        assert_eq!(name_len(b"\xc0\x0c", 0), None, "a pointer");
        assert_eq!(name_len(b"\x40abc", 0), None, "a 64-byte label");
        let mut long = Vec::new();
        for _ in 0..64 {
            long.extend_from_slice(b"\x03abc");
        }
        long.push(0);
        assert_eq!(name_len(&long, 0), None, "over 255 bytes");
        assert_eq!(name_len(b"", 0), None);
    }
}
