//! `--secondary IP[:PORT]/DOMAIN`: a zone copied from its primary by AXFR (RFC 5936).
//!
//! A refresh is one TCP connection: ask the SOA; if the primary's serial is newer than ours
//! (RFC 1982 arithmetic), or we have no copy, ask AXFR on the same connection and read
//! messages until the closing SOA. The state machine is sans-IO; `server.rs` runs it on the
//! reactor and sets the SOA's refresh and retry timers.

use std::net::SocketAddr;

use domain::base::iana::{Class, Rcode, Rtype};
use domain::base::message_builder::MessageBuilder;
use domain::base::name::FlattenInto;
use domain::base::{Message, ParsedName, Record};
use domain::rdata::ZoneRecordData;

use crate::name::{self, Dname};
use crate::zone::{Data, Zone};

/// How `--secondary` was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecondarySpec {
    pub primary: SocketAddr,
    pub apex: Dname,
}

impl SecondarySpec {
    /// twistd's `IP[:PORT]/DOMAIN` (port 53 by default; `[IPv6]:PORT` or a bare IPv6).
    pub fn parse(s: &str) -> Result<SecondarySpec, String> {
        let Some((addr, domain)) = s.split_once('/') else {
            return Err("Argument must be of the form IP[:port]/domain".into());
        };
        let primary = if let Ok(ip) = addr.parse::<std::net::IpAddr>() {
            SocketAddr::new(ip, 53)
        } else if let Ok(sa) = addr.parse::<SocketAddr>() {
            sa
        } else if let Some((ip, port)) = addr.rsplit_once(':') {
            let ip = ip
                .parse()
                .map_err(|_| format!("Invalid IP address {ip:?}"))?;
            let port = port
                .parse()
                .map_err(|_| format!("Specify an integer port number, not {port:?}"))?;
            SocketAddr::new(ip, port)
        } else {
            return Err(format!("Invalid IP address {addr:?}"));
        };
        let apex = name::parse(domain).ok_or_else(|| format!("Invalid domain {domain:?}"))?;
        Ok(SecondarySpec { primary, apex })
    }
}

/// What a refresh ended with.
#[derive(Debug)]
pub enum Outcome {
    /// The primary's serial is not newer.
    UpToDate(u32),
    /// A new copy, and the records left out of it.
    New(Zone, Outside),
    Failed(String),
}

/// Records of a transfer whose owners are outside the zone (glue for other zones, or junk):
/// left out of the copy, as NSD and Knot do (BIND keeps them but never serves them), and
/// reported once per transfer. Refusing the transfer instead would leave the zone unserved
/// for data no answer of ours could use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outside {
    pub count: usize,
    /// The first one's owner, for the log.
    pub first: Option<Dname>,
}

/// What to do after a message.
#[derive(Debug)]
pub enum Step {
    Send(Vec<u8>),
    More,
    Done(Outcome),
}

enum State {
    AskingSoa,
    Receiving {
        zone: Option<Zone>,
        soas: u32,
        records: usize,
        outside: Outside,
    },
    Finished,
}

/// One refresh of one zone, over one TCP connection.
pub struct Transfer {
    apex: Dname,
    have: Option<u32>,
    id: u16,
    state: State,
    /// Bytes of the primary's messages so far, and how many a transfer may take.
    received: usize,
    max_bytes: usize,
}

/// RFC 1982: is `a` newer than `b`?
pub fn serial_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

/// A zone transfer larger than this many records is refused (a runaway primary).
const MAX_RECORDS: usize = 5_000_000;
/// Nor may it take more bytes than this: messages without records (or records of 64 KiB)
/// would otherwise go on without end.
const MAX_BYTES: usize = 512 << 20;

impl Transfer {
    /// A refresh of `apex`, of which we hold serial `have` (or nothing).
    pub fn new(apex: Dname, have: Option<u32>) -> Transfer {
        Transfer {
            apex,
            have,
            id: 0,
            state: State::AskingSoa,
            received: 0,
            max_bytes: MAX_BYTES,
        }
    }

    fn question(&mut self, rtype: Rtype) -> Vec<u8> {
        self.id = self.id.wrapping_add(1);
        let mut mb = MessageBuilder::new_vec();
        mb.header_mut().set_id(self.id);
        let mut qb = mb.question();
        let _ = qb.push((&self.apex, rtype, Class::IN));
        qb.finish()
    }

    /// The first message: the SOA question, or AXFR when we have no copy.
    pub fn start(&mut self) -> Vec<u8> {
        if self.have.is_some() {
            self.question(Rtype::SOA)
        } else {
            self.axfr()
        }
    }

    fn axfr(&mut self) -> Vec<u8> {
        self.state = State::Receiving {
            zone: None,
            soas: 0,
            records: 0,
            outside: Outside::default(),
        };
        self.question(Rtype::AXFR)
    }

    fn fail(&mut self, why: impl Into<String>) -> Step {
        self.state = State::Finished;
        Step::Done(Outcome::Failed(why.into()))
    }

    /// One message from the primary.
    pub fn message(&mut self, msg: &[u8]) -> Step {
        self.received = self.received.saturating_add(msg.len());
        if self.received > self.max_bytes {
            return self.fail(format!("over {} MiB", self.max_bytes >> 20));
        }
        let Ok(m) = Message::from_octets(bytes::Bytes::copy_from_slice(msg)) else {
            return self.fail("a malformed message");
        };
        let h = m.header();
        if !h.qr() || h.id() != self.id {
            return self.fail("an answer to another question");
        }
        if h.rcode() != Rcode::NOERROR {
            return self.fail(format!("the primary answered {}", h.rcode()));
        }
        let Ok(answer) = m.answer() else {
            return self.fail("a malformed message");
        };
        let mut records = Vec::new();
        for rr in answer {
            let rec = rr.and_then(|r| r.into_record::<ZoneRecordData<_, ParsedName<_>>>());
            let Ok(Some(rec)) = rec else {
                return self.fail("a malformed record");
            };
            let rtype = rec.rtype();
            if rtype == Rtype::OPT || (128..=255).contains(&rtype.to_int()) {
                // RFC 6895 3.1: meta types live in one message, never in a zone; kept as
                // unknown data, a name in one (a TSIG's) would be served pointing elsewhere.
                return self.fail(format!("a record of meta type {rtype}"));
            }
            let class = rec.class();
            if class != Class::IN {
                // We ask for the IN zone, whose SOA and data are all IN (RFC 1034 4.2: zones
                // divide one class's data). Kept, another class's record (CH, HS, or the
                // query classes ANY and NONE) was served as IN data. BIND fails the transfer
                // (BADCLASS), and so does NSD.
                let class = if class == Class::ANY {
                    "ANY".to_string()
                } else {
                    class.to_string()
                };
                return self.fail(format!(
                    "a record of class {class}, not IN ({} {rtype})",
                    rec.owner()
                ));
            }
            let owned: Result<Record<Dname, Data>, _> = rec.try_flatten_into();
            match owned {
                Ok(r) => records.push(r),
                Err(_) => return self.fail("a malformed record"),
            }
        }
        match std::mem::replace(&mut self.state, State::Finished) {
            State::AskingSoa => {
                let serial = records.iter().find_map(|r| match r.data() {
                    ZoneRecordData::Soa(s) if name::key(r.owner()) == name::key(&self.apex) => {
                        Some(s.serial().into_int())
                    }
                    _ => None,
                });
                match (serial, self.have) {
                    (None, _) => self.fail("no SOA in the answer"),
                    (Some(s), Some(h)) if !serial_newer(s, h) => Step::Done(Outcome::UpToDate(h)),
                    _ => Step::Send(self.axfr()),
                }
            }
            State::Receiving {
                mut zone,
                mut soas,
                records: mut count,
                mut outside,
            } => {
                let apex = name::key(&self.apex);
                for r in records {
                    if soas >= 2 {
                        return self.fail("records after the closing SOA");
                    }
                    let key = name::key(r.owner());
                    let is_soa = r.data().rtype_is(Rtype::SOA);
                    if is_soa && key != apex {
                        // BIND's NOTZONETOP: an SOA belongs at the apex only; one below it
                        // was taken for the closing SOA and ended the transfer there.
                        return self
                            .fail(format!("an SOA record at {}, not at the apex", r.owner()));
                    }
                    if zone.is_none() {
                        if !is_soa {
                            return self.fail("the transfer does not start with the SOA");
                        }
                        zone = Some(Zone::new(self.apex.clone()));
                    }
                    if is_soa {
                        soas += 1;
                        if soas == 2 {
                            // RFC 5936 2.2: the transfer ends with the SOA it began with. A
                            // serial that changed means the zone changed under the transfer
                            // (BIND refuses it too): its records are of two versions.
                            let opened = zone.as_ref().and_then(Zone::soa_timers).map(|t| t.serial);
                            let closed = match r.data() {
                                ZoneRecordData::Soa(s) => Some(s.serial().into_int()),
                                _ => None,
                            };
                            if opened != closed {
                                let show = |s: Option<u32>| s.map_or("?".into(), |s| s.to_string());
                                return self.fail(format!(
                                    "the closing SOA's serial {} is not the opening one's {}",
                                    show(closed),
                                    show(opened)
                                ));
                            }
                            continue;
                        }
                    }
                    count += 1;
                    if count > MAX_RECORDS {
                        return self.fail("over 5,000,000 records");
                    }
                    if !name::is_within(&key, &apex) {
                        outside.count += 1;
                        outside.first.get_or_insert_with(|| r.owner().clone());
                        continue;
                    }
                    if let Some(z) = zone.as_mut() {
                        // Moved, not cloned: a clone of a name's `Bytes` allocates a shared
                        // header (32 bytes a name) that the zone would keep.
                        let ttl = r.ttl().as_secs();
                        let (owner, data) = r.into_owner_and_data();
                        if let Err(e) = z.insert(owner, ttl, data) {
                            return self.fail(e.to_string());
                        }
                    }
                }
                if soas >= 2 {
                    match zone {
                        Some(mut z) => match z.check() {
                            Ok(()) => Step::Done(Outcome::New(z, outside)),
                            Err(e) => self.fail(e.to_string()),
                        },
                        None => self.fail("an empty transfer"),
                    }
                } else {
                    self.state = State::Receiving {
                        zone,
                        soas,
                        records: count,
                        outside,
                    };
                    Step::More
                }
            }
            State::Finished => self.fail("a message after the end"),
        }
    }
}

/// `Rtype` test without the `RecordData` import dance at each call site.
trait RtypeIs {
    fn rtype_is(&self, t: Rtype) -> bool;
}

impl RtypeIs for Data {
    fn rtype_is(&self, t: Rtype) -> bool {
        use domain::base::RecordData;
        self.rtype() == t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::responder::{Reply, Responder, Via};
    use crate::zone::tests::{a, n, soa};
    use domain::base::Ttl;

    #[test]
    fn specs_parse_as_twistd_reads_them() {
        let s = SecondarySpec::parse("192.0.2.1/example.com").unwrap();
        assert_eq!(s.primary, "192.0.2.1:53".parse().unwrap());
        assert_eq!(s.apex.to_string(), "example.com");
        let s = SecondarySpec::parse("127.0.0.1:5353/example.com.").unwrap();
        assert_eq!(s.primary.port(), 5353);
        let s = SecondarySpec::parse("[::1]:5353/example.com").unwrap();
        assert_eq!(s.primary, "[::1]:5353".parse().unwrap());
        assert!(
            SecondarySpec::parse("192.0.2.1")
                .unwrap_err()
                .contains("IP[:port]/domain")
        );
        assert!(
            SecondarySpec::parse("192.0.2.1:x/e.com")
                .unwrap_err()
                .contains("integer port")
        );
    }

    #[test]
    fn serials_compare_as_rfc_1982_says() {
        assert!(serial_newer(2, 1));
        assert!(!serial_newer(1, 1));
        assert!(!serial_newer(1, 2));
        assert!(serial_newer(1, u32::MAX), "wraps around");
    }

    /// A transfer from our own AXFR answer: what a secondary of a twistrs primary reads.
    #[test]
    fn a_copy_from_our_own_transfer() {
        let mut primary = Responder::new(crate::tests::store());
        let apex = name::parse("example.com").unwrap();
        let mut t = Transfer::new(apex.clone(), Some(1));
        let soa_q = t.start();
        let Reply::Send(soa) = primary.respond(&soa_q, Via::Tcp, "127.0.0.1".parse().unwrap())
        else {
            panic!()
        };
        let Step::Send(axfr_q) = t.message(&soa) else {
            panic!("the primary's serial is newer: a transfer")
        };
        let Reply::Transfer(msgs) =
            primary.respond(&axfr_q, Via::Tcp, "127.0.0.1".parse().unwrap())
        else {
            panic!()
        };
        let msgs: Vec<Vec<u8>> = msgs.collect();
        let mut done = None;
        for (i, m) in msgs.iter().enumerate() {
            match t.message(m) {
                Step::More => assert!(i + 1 < msgs.len()),
                Step::Done(o) => done = Some(o),
                Step::Send(_) => panic!(),
            }
        }
        let Some(Outcome::New(z, outside)) = done else {
            panic!("{done:?}")
        };
        assert_eq!(z.soa_timers().unwrap().serial, 2024010101);
        let orig = primary.store().zone_at(&name::key(&apex)).unwrap();
        assert_eq!(z.len(), orig.len());
        assert_eq!(outside, Outside::default());

        // Up to date: no transfer.
        let mut again = Transfer::new(apex, Some(2024010101));
        let q = again.start();
        let Reply::Send(soa) = primary.respond(&q, Via::Tcp, "127.0.0.1".parse().unwrap()) else {
            panic!()
        };
        assert!(matches!(
            again.message(&soa),
            Step::Done(Outcome::UpToDate(2024010101))
        ));
        assert!(matches!(
            again.message(&soa),
            Step::Done(Outcome::Failed(_))
        ));
    }

    /// Meta types (OPT, TSIG, the question types: RFC 6895 3.1) are no zone data: a transfer
    /// holding one fails. Kept as unknown data, a TSIG's name pointing into the primary's
    /// message was served in our own answers, where it points elsewhere (found by fuzzing).
    #[test]
    fn a_transfer_with_meta_records_fails() {
        let mut primary = Responder::new(crate::tests::store());
        let apex = name::parse("example.com").unwrap();
        let axfr_q = Transfer::new(apex.clone(), None).start();
        let Reply::Transfer(msgs) =
            primary.respond(&axfr_q, Via::Tcp, "127.0.0.1".parse().unwrap())
        else {
            panic!()
        };
        let msgs: Vec<Vec<u8>> = msgs.collect();
        let [msg] = msgs.as_slice() else {
            panic!("one message")
        };
        // The question and the SOA, a record at the apex whose data is a pointer past the
        // message, and the SOA again: a whole transfer in one message.
        let soa_end = crate::message::read_rr(msg, 29).unwrap().4;
        for rtype in [41u16, 250, 255, 128] {
            let mut m = msg[..soa_end].to_vec();
            m[6..8].copy_from_slice(&3u16.to_be_bytes());
            m.extend_from_slice(&[0xC0, 12]);
            m.extend_from_slice(&rtype.to_be_bytes());
            m.extend_from_slice(&[0, 1, 0, 0, 0, 60, 0, 2, 0xC0, 0xFF]);
            m.extend_from_slice(&msg[29..soa_end]);
            let mut t = Transfer::new(apex.clone(), None);
            t.start();
            match t.message(&m) {
                Step::Done(Outcome::Failed(why)) => assert!(why.contains("meta type"), "{why}"),
                other => panic!("type {rtype}: {other:?}"),
            }
        }
    }

    /// One record of a made-up transfer of example.com: owner, class, data.
    type Rec = (&'static str, Class, Data);

    fn ns(target: &str) -> Data {
        ZoneRecordData::Ns(domain::rdata::Ns::new(n(target)))
    }

    /// A primary's message: an answer to id 1 holding `recs`, with the question (`qtype`
    /// of example.com) or without (an AXFR's later messages).
    fn message(qtype: Option<Rtype>, recs: &[Rec]) -> Vec<u8> {
        let mut mb = MessageBuilder::new_vec();
        let h = mb.header_mut();
        h.set_id(1);
        h.set_qr(true);
        h.set_aa(true);
        let mut qb = mb.question();
        if let Some(t) = qtype {
            qb.push((n("example.com"), t, Class::IN)).unwrap();
        }
        let mut ab = qb.answer();
        for (owner, class, data) in recs {
            ab.push((n(owner), *class, Ttl::from_secs(300), data))
                .unwrap();
        }
        ab.finish()
    }

    /// The transfer of `recs` in every chunking: each of the 2^(n-1) ways of cutting the
    /// records into consecutive messages (bit i of `cuts` ends a message after record i).
    fn chunkings(recs: &[Rec]) -> impl Iterator<Item = Vec<Vec<u8>>> + '_ {
        (0..1u32 << (recs.len() - 1)).map(move |cuts| {
            let mut msgs = Vec::new();
            let mut start = 0;
            for i in 0..recs.len() {
                if i + 1 == recs.len() || cuts & (1 << i) != 0 {
                    let qtype = msgs.is_empty().then_some(Rtype::AXFR);
                    msgs.push(message(qtype, &recs[start..=i]));
                    start = i + 1;
                }
            }
            msgs
        })
    }

    /// What a first transfer of example.com (AXFR at once, id 1) ends with, fed `msgs`: a
    /// copy only after the last message, a failure at any.
    fn outcome(msgs: &[Vec<u8>]) -> Outcome {
        let mut t = Transfer::new(n("example.com"), None);
        t.start();
        for (i, m) in msgs.iter().enumerate() {
            match t.message(m) {
                Step::More if i + 1 < msgs.len() => {}
                Step::Done(o @ Outcome::Failed(_)) => return o,
                Step::Done(o) if i + 1 == msgs.len() => return o,
                other => panic!("message {i} of {}: {other:?}", msgs.len()),
            }
        }
        panic!("no end after {} messages", msgs.len())
    }

    /// The zone: an SOA at each end, NS, glue, a name.
    fn zone_records() -> Vec<Rec> {
        vec![
            ("example.com", Class::IN, soa(1)),
            ("example.com", Class::IN, ns("ns1.example.com")),
            ("ns1.example.com", Class::IN, a("192.0.2.1")),
            ("www.example.com", Class::IN, a("192.0.2.3")),
            ("example.com", Class::IN, soa(1)),
        ]
    }

    /// A record of another class than the zone's IN (CH, HS, the query classes ANY and
    /// NONE, an unassigned one), anywhere in the transfer, SOAs included, fails it: kept,
    /// it was served as IN data. BIND (BADCLASS) and NSD refuse such a transfer too.
    #[test]
    fn a_record_of_another_class_fails_the_transfer_in_every_chunking() {
        let recs = zone_records();
        assert!(chunkings(&recs).all(|m| matches!(outcome(&m), Outcome::New(..))));
        let mut tried = 0;
        for (class, shown) in [
            (Class::CH, "CH"),
            (Class::HS, "HS"),
            (Class::ANY, "ANY"),
            (Class::NONE, "NONE"),
            (Class::from_int(42), "CLASS42"),
        ] {
            // Each record in turn of that class: the SOAs, the NS, glue, a name; and one
            // more record of that class beside the zone's.
            for i in 0..=recs.len() {
                let mut bad = recs.clone();
                if i < recs.len() {
                    bad[i].1 = class;
                } else {
                    bad.insert(2, ("www.example.com", class, a("192.0.2.9")));
                }
                for msgs in chunkings(&bad) {
                    match outcome(&msgs) {
                        Outcome::Failed(why) => assert!(
                            why.starts_with(&format!("a record of class {shown}, not IN (")),
                            "{why}"
                        ),
                        other => panic!("class {shown} at {i}: {other:?}"),
                    }
                    tried += 1;
                }
            }
        }
        assert_eq!(tried, 5 * (5 * 16 + 32));
        // The SOA answer of a refresh, of another class: no serial to go by.
        let mut t = Transfer::new(n("example.com"), Some(1));
        t.start();
        let soa_answer = message(Some(Rtype::SOA), &[("example.com", Class::CH, soa(2))]);
        match t.message(&soa_answer) {
            Step::Done(Outcome::Failed(why)) => assert!(why.contains("class CH"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    /// Records whose owners are outside the zone (glue for another zone, names above the
    /// apex, the root, a name that only ends in the apex's letters) are left out of the
    /// copy and counted, in every chunking; no node above the apex comes of them, and the
    /// store answers none of those names. Before, the first of them failed the transfer.
    #[test]
    fn records_outside_the_zone_are_ignored_in_every_chunking() {
        let recs: Vec<Rec> = vec![
            ("example.com", Class::IN, soa(1)),
            ("ns.example.net", Class::IN, a("192.0.2.66")),
            ("example.com", Class::IN, ns("ns.example.net")),
            ("com", Class::IN, a("192.0.2.67")),
            ("www.example.com", Class::IN, a("192.0.2.3")),
            ("", Class::IN, ns("a.root-servers.net")),
            ("xexample.com", Class::IN, a("192.0.2.68")),
            ("sub.example.com", Class::IN, ns("ns.sub.example.com")),
            ("ns.sub.example.com", Class::IN, a("192.0.2.53")),
            ("example.com", Class::IN, soa(1)),
        ];
        let mut copies = Vec::new();
        for msgs in chunkings(&recs) {
            let Outcome::New(z, outside) = outcome(&msgs) else {
                panic!("{:?}", outcome(&msgs))
            };
            assert_eq!(outside.count, 4);
            assert_eq!(outside.first, Some(n("ns.example.net")));
            assert_eq!(
                crate::zone::tests::names(&z),
                [
                    "example.com",
                    "ns.sub.example.com",
                    "sub.example.com",
                    "www.example.com"
                ]
            );
            copies.push(z);
        }
        assert_eq!(copies.len(), 512);
        // Served, the copy answers its own names, and none of the others.
        let mut store = crate::lookup::Store::default();
        store.add_zone(std::rc::Rc::new(copies.swap_remove(0)));
        for name in ["ns.example.net", "com", "", "xexample.com", "net"] {
            let q = n(name);
            let found = store.lookup(&name::key(&q), &q, Rtype::A);
            assert!(
                matches!(found, crate::lookup::Found::NotOurs),
                "{name:?}: {found:?}"
            );
        }
        let q = n("www.example.com");
        let crate::lookup::Found::Answer(ans) = store.lookup(&name::key(&q), &q, Rtype::A) else {
            panic!()
        };
        assert!(ans.aa && ans.answer.len() == 1, "{ans:?}");
    }

    /// An SOA anywhere but at the apex fails the transfer (BIND's NOTZONETOP): taken for
    /// the closing SOA, one below the apex ended the transfer there, its last records lost
    /// or refused as "after the closing SOA"; one outside the zone is not left out either.
    #[test]
    fn an_soa_not_at_the_apex_fails_the_transfer_in_every_chunking() {
        let recs = zone_records();
        for owner in ["sub.example.com", "example.net", "com"] {
            for (i, replace) in [(2, false), (4, true)] {
                let mut bad = recs.clone();
                if replace {
                    bad[i].0 = owner;
                } else {
                    bad.insert(i, (owner, Class::IN, soa(1)));
                }
                for msgs in chunkings(&bad) {
                    match outcome(&msgs) {
                        Outcome::Failed(why) => {
                            assert_eq!(why, format!("an SOA record at {owner}, not at the apex"))
                        }
                        other => panic!("{owner} at {i}: {other:?}"),
                    }
                }
            }
        }
    }

    /// A transfer whose closing SOA has another serial than its opening one fails in every
    /// chunking (RFC 5936 2.2: the zone changed under it); the same serial ends it.
    #[test]
    fn a_closing_soa_of_another_serial_fails_the_transfer_in_every_chunking() {
        let mut recs = zone_records();
        let last = recs.len() - 1;
        recs[last].2 = soa(2);
        for msgs in chunkings(&recs) {
            match outcome(&msgs) {
                Outcome::Failed(why) => {
                    assert_eq!(why, "the closing SOA's serial 2 is not the opening one's 1")
                }
                other => panic!("{other:?}"),
            }
        }
        for msgs in chunkings(&zone_records()) {
            assert!(matches!(outcome(&msgs), Outcome::New(..)));
        }
    }

    /// A primary that sends message after message without the closing SOA is cut off.
    #[test]
    fn an_endless_transfer_fails() {
        let mut primary = Responder::new(crate::tests::store());
        let apex = name::parse("example.com").unwrap();
        // The primary's SOA answer (same id as our AXFR question) opens the transfer.
        let soa_q = Transfer::new(apex.clone(), Some(0)).start();
        let Reply::Send(soa) = primary.respond(&soa_q, Via::Tcp, "127.0.0.1".parse().unwrap())
        else {
            panic!()
        };
        let mut t = Transfer::new(apex, None);
        t.max_bytes = 1 << 20;
        t.start();
        assert!(matches!(t.message(&soa), Step::More));
        // Then answers with no records, for ever.
        let mut empty = soa[..12].to_vec();
        empty[4..12].fill(0);
        for _ in 0..(1 << 20) / empty.len() + 1 {
            match t.message(&empty) {
                Step::More => {}
                Step::Done(Outcome::Failed(why)) => return assert!(why.contains("MiB"), "{why}"),
                other => panic!("{other:?}"),
            }
        }
        panic!("the transfer goes on");
    }

    /// The data of one record in zone-file text (owner and type included), in example.com.
    fn parsed(text: &str) -> Data {
        let mut zf = domain::zonefile::inplace::Zonefile::from(format!("{text}\n").as_str());
        zf.set_origin(n("example.com"));
        zf.set_default_class(Class::IN);
        match zf.next_entry() {
            Ok(Some(domain::zonefile::inplace::Entry::Record(r))) => {
                let r: Record<Dname, Data> = r.try_flatten_into().unwrap();
                r.data().clone()
            }
            other => panic!("{text}: {other:?}"),
        }
    }

    /// A signed zone's CNAME comes with its RRSIG and NSEC (RFC 4035 2.5): the transfer is
    /// copied, in every chunking. Before, every transfer of a signed zone with a CNAME
    /// failed ("has a CNAME and other data") and the zone stayed SERVFAIL.
    #[test]
    fn a_signed_cname_is_copied_and_two_cnames_fail_the_transfer() {
        let signed = [
            ("www.example.com", Class::IN, parsed("www CNAME ns1")),
            (
                "www.example.com",
                Class::IN,
                parsed(
                    "www RRSIG CNAME 13 3 300 20300101000000 20200101000000 1 example.com. AAAA",
                ),
            ),
            (
                "www.example.com",
                Class::IN,
                parsed("www NSEC x.example.com. CNAME RRSIG NSEC"),
            ),
        ];
        let mut recs = zone_records();
        recs.remove(3);
        recs.splice(3..3, signed.iter().cloned());
        for msgs in chunkings(&recs) {
            match outcome(&msgs) {
                Outcome::New(z, _) => {
                    let www = z.node(&name::key(&n("www.example.com"))).unwrap();
                    assert_eq!(www.rrsets.len(), 3);
                }
                other => panic!("{other:?}"),
            }
        }
        // BIND and NSD refuse two CNAMEs at a name (RFC 2181 10.1); so does the copy.
        recs.insert(
            4,
            ("www.example.com", Class::IN, parsed("www CNAME other.")),
        );
        for msgs in chunkings(&recs) {
            match outcome(&msgs) {
                Outcome::Failed(why) => {
                    assert_eq!(why, "www.example.com has more than one CNAME record")
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
