//! A zone transfer served (AXFR, or an IXFR answered whole), made one message at a time.
//!
//! The copy holds the zone as it was when the transfer began (an `Rc`, shared with the store
//! until a reload or a refresh replaces it there), and a position in it: the TCP connection
//! asks for the next message only while its output has room, so a client that reads slowly
//! holds about the output's high-water mark and one message, not a copy of the whole zone
//! (20,000 names are some 0.7 MB), and every message comes from the one version: the first
//! and last SOA are the same, whatever reloads meanwhile.

use std::net::IpAddr;
use std::rc::Rc;

use domain::base::iana::{Class, OptRcode, Rtype};
use domain::base::message_builder::{MessageBuilder, StaticCompressor};
use domain::base::{Name, Ttl};

use crate::message::{self, Parsed};
use crate::name::Dname;
use crate::zone::{Data, Zone};

/// An AXFR message's size (RFC 5936 leaves it to the server; BIND's is 16 KiB).
pub const AXFR_MESSAGE: usize = 16 * 1024;

/// Where the next record comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// The opening SOA.
    First,
    /// Record `rec` of set `set` of the zone's `node`th name (the SOA's set skipped).
    Body {
        node: usize,
        set: usize,
        rec: usize,
    },
    /// The closing SOA.
    Last,
    Done,
}

/// A transfer of one zone to one client: an iterator of its messages, each made when asked
/// for.
#[derive(Clone)]
pub struct ZoneCopy {
    zone: Rc<Zone>,
    /// The client's query, read again for each message's id, question and OPT.
    query: Box<[u8]>,
    ra: bool,
    peer: IpAddr,
    at: At,
    /// Messages made so far: the first carries the question.
    made: usize,
}

impl std::fmt::Debug for ZoneCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ZoneCopy({}, {:?}, {} made)",
            self.zone.apex, self.at, self.made
        )
    }
}

impl ZoneCopy {
    /// A transfer of `zone` answering `query` (a query `message::parse` took); `ra` is the
    /// server's RA bit for an error answer.
    pub fn new(zone: Rc<Zone>, query: &[u8], ra: bool, peer: IpAddr) -> ZoneCopy {
        ZoneCopy {
            zone,
            query: query.into(),
            ra,
            peer,
            at: At::First,
            made: 0,
        }
    }

    /// The zone being sent.
    pub fn zone(&self) -> &Rc<Zone> {
        &self.zone
    }
}

/// The SOA record of `zone`, as a transfer opens and closes with it.
fn soa(zone: &Zone) -> Option<(&Dname, u32, &Data)> {
    let set = zone.soa()?;
    Some((&zone.apex, set.ttl, set.data.first()?))
}

/// Moves `at` onto the next record there is, from where it is (a body position past the end
/// of its set or node moves on; the SOA's set is the first and last record's, not the body's).
fn settle(zone: &Zone, at: &mut At) {
    if *at == At::First && soa(zone).is_none() {
        *at = At::Done;
    }
    while let At::Body { node, set, rec } = *at {
        let Some(n) = zone.node_at(node) else {
            *at = At::Last;
            break;
        };
        match n.rrsets.get(set) {
            None => {
                *at = At::Body {
                    node: node + 1,
                    set: 0,
                    rec: 0,
                }
            }
            Some(s) if s.rtype == Rtype::SOA || rec >= s.data.len() => {
                *at = At::Body {
                    node,
                    set: set + 1,
                    rec: 0,
                }
            }
            Some(_) => break,
        }
    }
}

/// The record at `at` (settled).
fn record(zone: &Zone, at: At) -> Option<(&Dname, u32, &Data)> {
    match at {
        At::First | At::Last => soa(zone),
        At::Body { node, set, rec } => {
            let n = zone.node_at(node)?;
            let s = n.rrsets.get(set)?;
            Some((&n.name, s.ttl, s.data.get(rec)?))
        }
        At::Done => None,
    }
}

/// The record after `at`.
fn step(zone: &Zone, at: &mut At) {
    *at = match *at {
        At::First => At::Body {
            node: 0,
            set: 0,
            rec: 0,
        },
        At::Body { node, set, rec } => At::Body {
            node,
            set,
            rec: rec + 1,
        },
        At::Last | At::Done => At::Done,
    };
    settle(zone, at);
}

impl Iterator for ZoneCopy {
    type Item = Vec<u8>;

    /// The next message: as many records as fit in [`AXFR_MESSAGE`], each message with an
    /// OPT if the question had one. A record larger than a message ends the transfer with
    /// SERVFAIL in its place (the client cannot have the zone whole).
    fn next(&mut self) -> Option<Vec<u8>> {
        let ZoneCopy {
            zone,
            query,
            at,
            made,
            ra,
            peer,
        } = self;
        let zone: &Zone = zone;
        if *at == At::First {
            settle(zone, at);
        }
        if *at == At::Done {
            return None;
        }
        let Parsed::Query(q) = message::parse(query) else {
            *at = At::Done;
            return None;
        };
        let target = StaticCompressor::new(Vec::with_capacity(AXFR_MESSAGE));
        let Ok(mut mb) = MessageBuilder::from_target(target);
        let opt = if q.edns.is_some() {
            message::OPT_LEN
        } else {
            0
        };
        mb.set_push_limit(AXFR_MESSAGE - opt);
        let h = mb.header_mut();
        h.set_id(q.id);
        h.set_qr(true);
        h.set_aa(true);
        let mut qb = mb.question();
        if *made == 0
            && let Ok(n) = Name::from_slice(q.qname)
        {
            let _ = qb.push((n, q.qtype, Class::IN));
        }
        let mut ab = qb.answer();
        let mut pushed = 0;
        while let Some((owner, ttl, d)) = record(zone, *at) {
            if ab.push((owner, Class::IN, Ttl::from_secs(ttl), d)).is_err() {
                break;
            }
            pushed += 1;
            step(zone, at);
        }
        *made += 1;
        if pushed == 0 {
            // A record larger than a message: the transfer cannot go on.
            let owner = record(zone, *at).map_or_else(String::new, |r| r.0.to_string());
            log::warn!(target: "twistrs.dns",
                "Transfer of zone {} to {}: the record at {owner} does not fit in a message; SERVFAIL",
                zone.apex, peer);
            *at = At::Done;
            return Some(message::refuse(&q, OptRcode::SERVFAIL, *ra));
        }
        // Each message answers the client's OPT with ours (RFC 6891 7), as BIND's do.
        let mut add = ab.additional();
        if let Some(e) = q.edns {
            message::push_opt(&mut add, OptRcode::NOERROR, e);
        }
        Some(add.finish().into_target())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::zone::tests::{a, n, soa as soa_data};

    /// A zone `example.com` with serial `serial` and `names` more names, `PREFIXi`, each
    /// with an A record.
    pub(crate) fn zone(serial: u32, names: usize, prefix: &str) -> Zone {
        let mut z = Zone::new(n("example.com"));
        z.insert(n("example.com"), 300, soa_data(serial)).unwrap();
        z.insert(n("ns1.example.com"), 300, a("192.0.2.1")).unwrap();
        for i in 0..names {
            let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            z.insert(n(&format!("{prefix}{i}.example.com")), 300, a(&ip))
                .unwrap();
        }
        z.check().unwrap();
        z
    }

    /// The messages of a transfer of `zone` answering `query`, built at once as the
    /// responder built them before transfers were made a message at a time: the reference
    /// the copy made piece by piece must equal byte for byte.
    pub(crate) fn at_once(zone: &Zone, query: &[u8]) -> Vec<Vec<u8>> {
        let Parsed::Query(q) = message::parse(query) else {
            panic!("not a query")
        };
        let soa = zone.soa().unwrap();
        let mut records = Vec::new();
        let soa_rec = soa.data.first().map(|d| (&zone.apex, soa.ttl, d));
        records.extend(soa_rec);
        for node in zone.nodes() {
            for set in node.rrsets.iter().filter(|s| s.rtype != Rtype::SOA) {
                records.extend(set.data.iter().map(|d| (&node.name, set.ttl, d)));
            }
        }
        records.extend(soa_rec);
        let mut out = Vec::new();
        let mut i = 0;
        while i < records.len() {
            let target = StaticCompressor::new(Vec::with_capacity(AXFR_MESSAGE));
            let Ok(mut mb) = MessageBuilder::from_target(target);
            let opt = if q.edns.is_some() {
                message::OPT_LEN
            } else {
                0
            };
            mb.set_push_limit(AXFR_MESSAGE - opt);
            let h = mb.header_mut();
            h.set_id(q.id);
            h.set_qr(true);
            h.set_aa(true);
            let mut qb = mb.question();
            if out.is_empty()
                && let Ok(n) = Name::from_slice(q.qname)
            {
                let _ = qb.push((n, q.qtype, Class::IN));
            }
            let mut ab = qb.answer();
            let first = i;
            while let Some((owner, ttl, d)) = records.get(i) {
                if ab
                    .push((*owner, Class::IN, Ttl::from_secs(*ttl), *d))
                    .is_err()
                {
                    break;
                }
                i += 1;
            }
            assert!(i > first, "a record larger than a message");
            let mut add = ab.additional();
            if let Some(e) = q.edns {
                message::push_opt(&mut add, OptRcode::NOERROR, e);
            }
            out.push(add.finish().into_target());
        }
        out
    }

    /// Made a message at a time, a transfer is the one built at once, byte for byte, with
    /// and without EDNS, for a zone of one message and of many; the apex's other records
    /// and every name come once, the SOA first and last.
    #[test]
    fn a_copy_made_message_by_message_is_the_one_built_at_once() {
        let peer = IpAddr::from([127, 0, 0, 1]);
        for names in [0, 3, 5000] {
            let z = Rc::new(zone(7, names, "h"));
            for edns in [None, Some(1232)] {
                let q = crate::tests::query("example.com", Rtype::AXFR, edns);
                let got: Vec<Vec<u8>> = ZoneCopy::new(z.clone(), &q, false, peer).collect();
                assert_eq!(got, at_once(&z, &q), "{names} names, {edns:?}");
                let records: Vec<String> = got
                    .iter()
                    .flat_map(|m| crate::tests::read(m).answer)
                    .collect();
                assert_eq!(records.len(), names + 3, "{names} names");
                assert!(records[0].contains(" SOA ") && records[names + 2] == records[0]);
            }
        }
    }

    /// A record too large for a message ends the transfer with SERVFAIL in its place, after
    /// the messages before it (built at once, the transfer was that SERVFAIL alone).
    #[test]
    fn a_record_larger_than_a_message_ends_the_transfer_with_servfail() {
        let peer = IpAddr::from([127, 0, 0, 1]);
        // One TXT record of 20,000 bytes (in strings of 255).
        let big = Data::Txt(domain::rdata::Txt::build_from_slice(&[b'x'; 20_000]).unwrap());
        for before in [0, 3000] {
            let mut z = zone(1, before, "h");
            z.insert(n("big.example.com"), 300, big.clone()).unwrap();
            let q = crate::tests::query("example.com", Rtype::AXFR, None);
            let got: Vec<Vec<u8>> = ZoneCopy::new(Rc::new(z), &q, false, peer).collect();
            let (last, sent) = got.split_last().unwrap();
            assert_eq!(
                crate::tests::read(last).rcode,
                domain::base::iana::Rcode::SERVFAIL,
                "{before}"
            );
            let records: usize = sent
                .iter()
                .map(|m| crate::tests::read(m).answer.len())
                .sum();
            assert_eq!(records, before + 2, "the SOA and the names before it");
        }
    }
}
