//! `--hosts-file`: hosts(5) lines as A and AAAA records, and the PTR names of their addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use domain::base::RecordData;
use domain::base::iana::Rtype;
use domain::rdata::{A, Aaaa, Ptr, ZoneRecordData};

use crate::name::{self, Dname};
use crate::zone::{Data, Node, Rrset};

/// Twisted's hosts resolver answers with a TTL of an hour.
pub const TTL: u32 = 3600;

/// A hosts file, even a large block list, is well under 16 MiB.
pub const HOSTS_MAX: u64 = 16 << 20;

/// The names of a hosts file, each with its addresses; the `in-addr.arpa`/`ip6.arpa` name of
/// each address with its first name (the canonical one, hosts(5)).
#[derive(Debug, Default)]
pub struct Hosts {
    nodes: HashMap<Box<[u8]>, Node>,
}

impl Hosts {
    pub fn load(path: &Path) -> Result<Hosts, String> {
        let text = twistrs_core::files::read_config_string(path, HOSTS_MAX)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Hosts::parse(&text))
    }

    /// Reads hosts(5) text: `ADDRESS NAME [ALIAS...]`, `#` comments; lines with an address
    /// or a name that does not parse are skipped, as the C library skips them.
    pub fn parse(text: &str) -> Hosts {
        let mut h = Hosts::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let Some(Ok(addr)) = words.next().map(|a| a.parse::<IpAddr>()) else {
                continue;
            };
            let names: Vec<Dname> = words.filter_map(name::parse).collect();
            if let Some(first) = names.first() {
                h.add(&reverse_name(addr), Data::Ptr(Ptr::new(first.clone())));
            }
            for n in &names {
                let data = match addr {
                    IpAddr::V4(a) => ZoneRecordData::A(A::new(a)),
                    IpAddr::V6(a) => ZoneRecordData::Aaaa(Aaaa::new(a)),
                };
                h.add(n, data);
            }
        }
        h
    }

    fn add(&mut self, owner: &Dname, data: Data) {
        let node = self.nodes.entry(name::key(owner)).or_insert_with(|| Node {
            name: owner.clone(),
            rrsets: Vec::new(),
        });
        let rtype = data.rtype();
        match node.rrsets.iter_mut().find(|s| s.rtype == rtype) {
            // A second line for an address keeps its first name as the PTR.
            Some(_) if rtype == Rtype::PTR => {}
            Some(s) if !s.data.contains(&data) => s.data.push(data),
            Some(_) => {}
            None => node.rrsets.push(Rrset {
                rtype,
                ttl: TTL,
                data: vec![data],
            }),
        }
    }

    pub fn node(&self, key: &[u8]) -> Option<&Node> {
        self.nodes.get(key)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// `4.3.2.1.in-addr.arpa` or the nibbles of an IPv6 address under `ip6.arpa` (RFC 3596).
pub fn reverse_name(addr: IpAddr) -> Dname {
    let text = match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(a) => {
            let mut s = String::with_capacity(72);
            for b in a.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xF, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    };
    name::parse(&text).unwrap_or_else(Dname::root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_addresses_and_pointers() {
        let h = Hosts::parse(
            "# comment\n127.0.0.1 localhost\n192.0.2.7 Web.Example.test web # alias\n\
             2001:db8::1 web.example.test\nnot-an-address foo\n192.0.2.7 other.test\n",
        );
        let web = h
            .node(&name::key(&name::parse("web.example.test").unwrap()))
            .unwrap();
        assert_eq!(web.get(Rtype::A).unwrap().data.len(), 1);
        assert_eq!(web.get(Rtype::AAAA).unwrap().data.len(), 1);
        assert!(h.node(&name::key(&name::parse("web").unwrap())).is_some());
        assert!(h.node(&name::key(&name::parse("foo").unwrap())).is_none());
        let ptr = reverse_name("192.0.2.7".parse().unwrap());
        assert_eq!(ptr.to_string(), "7.2.0.192.in-addr.arpa");
        let p = h.node(&name::key(&ptr)).unwrap().get(Rtype::PTR).unwrap();
        assert_eq!(p.data.len(), 1);
        assert!(
            p.data[0].to_string().starts_with("Web.Example.test"),
            "{}",
            p.data[0]
        );
        let v6 = reverse_name("2001:db8::1".parse().unwrap()).to_string();
        assert!(
            v6.starts_with("1.0.0.0.") && v6.ends_with("8.b.d.0.1.0.0.2.ip6.arpa"),
            "{v6}"
        );
    }
}
