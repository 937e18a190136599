//! Upstream answers: checked, made independent of the query that fetched them, relayed to the
//! client with its own id and flags, and kept by their TTL (`-c`).
//!
//! An upstream answer is kept as the bytes after its question, less its OPT record, with the
//! offset of each record's TTL. Compression pointers in them point at offsets that stay the
//! same as long as the question in front has the same length, which a question for the same
//! name always has; so relaying is a header, the client's question, the bytes with the TTLs
//! lowered by the time spent in the cache, and an OPT if the client sent one.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use domain::base::iana::{Rcode, Rtype};
use domain::base::{ParsedName, ParsedRecord};
use domain::dep::octseq::Parser;
use domain::rdata::AllRecordData;

use crate::message::{OUR_PAYLOAD, read_rr};
use crate::name;
use crate::responder::Forward;

/// Answers kept at most; the oldest goes first.
pub const MAX_ENTRIES: usize = 10_000;
/// The longest an answer is kept, whatever its TTL says (Unbound's cache-max-ttl).
pub const MAX_TTL: u32 = 86_400;

/// An upstream answer, ready to relay.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// RCODE (the low four bits).
    pub rcode: u8,
    /// Answer, authority and additional records (no OPT).
    counts: [u16; 3],
    body: Vec<u8>,
    /// Offsets in `body` of each record's TTL.
    ttls: Vec<usize>,
    /// The message offset `body` started at (header and question before it).
    offset: usize,
    /// How long it may be kept: the lowest TTL of all its records (none may be served past
    /// its own, RFC 1035 3.2.1), and for a negative answer (NXDOMAIN, or NODATA, after a
    /// CNAME chain too) no longer than its SOA's MINIMUM either (RFC 2308 5); 0 if it is not
    /// to be kept (a TTL of 0, a negative answer without an SOA, an error).
    pub keep: u32,
}

/// Why an upstream message is not an answer to our question.
#[derive(Debug, PartialEq, Eq)]
pub enum Bad {
    /// Not our id, not our question, not a response: ignore it and wait on.
    NotOurs,
    /// Truncated: ask again over TCP.
    Truncated,
    /// Broken: try another server.
    Malformed,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

impl Upstream {
    /// Roughly what it holds in memory, for the cache's budget.
    pub fn size(&self) -> usize {
        std::mem::size_of::<Upstream>() + self.body.len() + 8 * self.ttls.len()
    }

    /// Its answer, authority and additional records (the additional less any OPT).
    pub fn counts(&self) -> [u16; 3] {
        self.counts
    }

    /// Reads `msg` as the answer to `query` (the message we sent).
    pub fn parse(msg: &[u8], query: &[u8]) -> Result<Upstream, Bad> {
        if msg.len() < 12 || msg[..2] != query[..2] || msg[2] & 0x80 == 0 {
            return Err(Bad::NotOurs);
        }
        let qlen = name::name_len(query, 12).ok_or(Bad::Malformed)? + 4;
        let q_ours = query.get(12..12 + qlen).ok_or(Bad::Malformed)?;
        let q_theirs = msg.get(12..12 + qlen).ok_or(Bad::NotOurs)?;
        // The name in any case (some servers echo it in their own), type and class exactly.
        let (name_ours, tc_ours) = q_ours.split_at(qlen - 4);
        let (name_theirs, tc_theirs) = q_theirs.split_at(qlen - 4);
        if u16_at(msg, 4) != Some(1)
            || !name_ours.eq_ignore_ascii_case(name_theirs)
            || tc_ours != tc_theirs
        {
            return Err(Bad::NotOurs);
        }
        if msg[2] & 0x02 != 0 {
            return Err(Bad::Truncated);
        }
        let rcode = msg[3] & 0xF;
        let count = |i: usize| u16_at(msg, 6 + 2 * i).unwrap_or(0);
        let (an, ns, ar) = (count(0), count(1), count(2));
        // The sections' bounds as indexes: the counts are the sender's, and their sum may
        // pass u16::MAX.
        let (an_end, ns_end) = (an as usize, an as usize + ns as usize);
        let offset = 12 + qlen;
        let qtype = u16_at(query, 12 + qlen - 4).unwrap_or(0);
        let mut at = offset;
        let mut ttls = Vec::new();
        let mut min_ttl = u32::MAX;
        let mut soa_minimum: Option<u32> = None;
        // A record of the type asked for (any, for ANY): otherwise a NOERROR is NODATA.
        let mut answered = false;
        let mut kept_ar = 0;
        let mut end = offset;
        for i in 0..ns_end + ar as usize {
            let (rtype, _class, ttl, data, next) = read_rr(msg, at).ok_or(Bad::Malformed)?;
            if rtype == Rtype::OPT.to_int() {
                if next != msg.len() {
                    // Records after the OPT would have to move, breaking pointers to them.
                    return Err(Bad::Malformed);
                }
                at = next;
                continue;
            }
            ttls.push(data - 6 - offset);
            // Every section counts: each record is served with its TTL counted down, and
            // none may reach 0 from the cache. A TTL with the top bit set is 0 (RFC 2181 8).
            min_ttl = min_ttl.min(if ttl >> 31 == 0 { ttl } else { 0 });
            if i < an_end {
                answered |= rtype == qtype || qtype == Rtype::ANY.to_int();
            } else if i < ns_end && rtype == Rtype::SOA.to_int() {
                // The MINIMUM field ends the SOA's data (RFC 1035 3.3.13).
                let minimum = msg
                    .get(next - 4..next)
                    .map(|m| u32::from_be_bytes([m[0], m[1], m[2], m[3]]))
                    .unwrap_or(0);
                soa_minimum = Some(soa_minimum.map_or(minimum, |m| m.min(minimum)));
            }
            if i >= ns_end {
                kept_ar += 1;
            }
            at = next;
            end = next;
        }
        if at != msg.len()
            || !names_parse(&msg[..end], offset, &ttls, ns_end + usize::from(kept_ar))
        {
            return Err(Bad::Malformed);
        }
        let keep = match Rcode::checked_from_int(rcode) {
            Some(Rcode::NOERROR) if answered => min_ttl,
            // Negative: kept by the SOA's TTL and MINIMUM (its TTL is among the records'),
            // and not at all without an SOA (RFC 2308 5).
            Some(Rcode::NOERROR | Rcode::NXDOMAIN) => soa_minimum.map_or(0, |m| m.min(min_ttl)),
            _ => 0,
        };
        Ok(Upstream {
            rcode,
            counts: [an, ns, kept_ar],
            body: msg[offset..end].to_vec(),
            ttls,
            offset,
            keep: keep.min(MAX_TTL),
        })
    }

    /// The answer for the client of `req`, with TTLs lowered by `age` seconds; TC if it
    /// does not fit the client's limit.
    pub fn relay(&self, req: &Forward, age: u32) -> Vec<u8> {
        if let Some(chase) = &req.chase {
            // Whole, for the target's question, then read back behind the chain.
            let plain = Forward {
                chase: None,
                edns: None,
                limit: usize::MAX,
                ..req.clone()
            };
            let whole = self.relay(&plain, age);
            return crate::message::chased(req, chase, &whole)
                .unwrap_or_else(|| crate::forward::servfail_bytes(req));
        }
        let opt = req.edns.is_some();
        let size = 12 + req.question.len() + self.body.len() + if opt { 11 } else { 0 };
        let fits = size <= req.limit && 12 + req.question.len() == self.offset;
        let mut out = Vec::with_capacity(if fits {
            size
        } else {
            12 + req.question.len() + 11
        });
        out.extend_from_slice(&req.id.to_be_bytes());
        let mut f1 = 0x80 | u8::from(req.rd);
        let cd = if req.cd { 0x10 } else { 0 };
        let mut f2 = 0x80 | cd | self.rcode;
        let (an, ns, ar) = if fits {
            (self.counts[0], self.counts[1], self.counts[2])
        } else {
            f1 |= 0x02;
            f2 &= 0xF0;
            (0, 0, 0)
        };
        out.extend_from_slice(&[f1, f2, 0, 1]);
        for c in [an, ns, ar + u16::from(opt)] {
            out.extend_from_slice(&c.to_be_bytes());
        }
        out.extend_from_slice(&req.question);
        if fits {
            let start = out.len();
            out.extend_from_slice(&self.body);
            for &t in &self.ttls {
                let at = start + t;
                if let Some(b) = out.get_mut(at..at + 4) {
                    let ttl = u32::from_be_bytes([b[0], b[1], b[2], b[3]]).saturating_sub(age);
                    b.copy_from_slice(&ttl.to_be_bytes());
                }
            }
        }
        if let Some(edns) = req.edns {
            out.extend_from_slice(&opt_record(edns.dnssec_ok));
        }
        out
    }
}

/// The OPT of a forwarded answer: our payload size, and the client's DO bit, which RFC 3225
/// 3 says MUST be copied into the response.
pub fn opt_record(dnssec_ok: bool) -> [u8; 11] {
    let [p0, p1] = OUR_PAYLOAD.to_be_bytes();
    let flags = if dnssec_ok { 0x80 } else { 0 };
    [0, 0, 41, p0, p1, 0, 0, flags, 0, 0, 0]
}

/// Whether the `records` records from `offset` parse, owners and data, as they are relayed:
/// every name with its compression pointers (backward only, no loop: `domain`'s parser sees
/// to that) kept clear of what the relayed answer changes: the header (the client's id,
/// flags and counts), the TTLs (`ttls`, from `offset`: lowered by the time in the cache) and
/// the upstream OPT (replaced by ours or left out: `msg` is cut where the relayed records
/// end). `read_rr` only skips owners: without this, an answer unreadable at the client would
/// be relayed and kept for a day.
fn names_parse(msg: &[u8], offset: usize, ttls: &[usize], records: usize) -> bool {
    // Two copies with what changes filled in two ways. 0x40 and 0x41 are undefined label
    // types, so a name whose label starts there fails to parse; a compression pointer whose
    // low byte is there points one byte apart in the two copies, so its name comes out
    // different (parsing one copy alone took that name for valid: found by fuzzing).
    let blank = |fill: u8| {
        let mut copy = msg.to_vec();
        copy[..12].fill(fill);
        for &t in ttls {
            if let Some(ttl) = copy.get_mut(offset + t..offset + t + 4) {
                ttl.fill(fill);
            }
        }
        copy
    };
    let (a, b) = (blank(0x40), blank(0x41));
    let (mut pa, mut pb) = (
        Parser::from_ref(a.as_slice()),
        Parser::from_ref(b.as_slice()),
    );
    if pa.advance(offset).is_err() || pb.advance(offset).is_err() {
        return false;
    }
    (0..records).all(|_| {
        let (Ok(ra), Ok(rb)) = (ParsedRecord::parse(&mut pa), ParsedRecord::parse(&mut pb)) else {
            return false;
        };
        let (Ok(ra), Ok(rb)) = (
            ra.into_any_record::<AllRecordData<&[u8], ParsedName<&[u8]>>>(),
            rb.into_any_record::<AllRecordData<&[u8], ParsedName<&[u8]>>>(),
        ) else {
            return false;
        };
        ra.owner() == rb.owner() && ra.data() == rb.data()
    })
}

/// The question's name (lower case), type and class, and the client's DO and CD bits: an
/// answer asked for with DO carries the upstream's RRSIGs and NSECs, and one asked for with
/// CD may be data a validating upstream would have refused, so neither is given to a client
/// that asked otherwise (as BIND and Unbound key theirs).
pub(crate) type Key = (Box<[u8]>, u16, u16, u8);

struct Entry {
    answer: Rc<Upstream>,
    stored: Instant,
    /// Which store made it: the eviction order names entries by key and serial, so a key
    /// stored again after it expired is not evicted in place of its first copy.
    serial: u64,
    /// What it costs the budget.
    bytes: usize,
}

/// The bytes all answers together may hold, whatever `--cache-size` allows in count.
pub const MAX_BYTES: usize = 64 << 20;

/// Upstream answers by question, until their TTL runs out; bounded in count and in bytes.
pub struct Cache {
    map: HashMap<Key, Entry>,
    order: VecDeque<(Key, u64)>,
    max: usize,
    max_bytes: usize,
    bytes: usize,
    serial: u64,
}

impl Cache {
    pub fn new(max: usize) -> Cache {
        Cache::with_budget(max, MAX_BYTES)
    }

    fn with_budget(max: usize, max_bytes: usize) -> Cache {
        Cache {
            map: HashMap::new(),
            order: VecDeque::new(),
            max: max.max(1),
            max_bytes,
            bytes: 0,
            serial: 0,
        }
    }

    pub(crate) fn key(req: &Forward) -> Key {
        let dnssec_ok = req.edns.is_some_and(|e| e.dnssec_ok);
        let bits = u8::from(dnssec_ok) | u8::from(req.cd) << 1;
        (
            req.key.clone(),
            req.qtype.to_int(),
            req.qclass.to_int(),
            bits,
        )
    }

    fn remove(&mut self, key: &Key) {
        if let Some(e) = self.map.remove(key) {
            self.bytes -= e.bytes;
        }
    }

    /// The client's answer from the cache, if a live one is there.
    pub fn answer(&mut self, req: &Forward, now: Instant) -> Option<Vec<u8>> {
        self.answer_by(&Cache::key(req), req, now)
    }

    /// `answer`, with `req`'s key (`Cache::key`) built already: the server builds it once
    /// per forwarded question, for the cache, the failures remembered and the forwarder.
    pub fn answer_by(&mut self, key: &Key, req: &Forward, now: Instant) -> Option<Vec<u8>> {
        let e = self.map.get(key)?;
        let age = now.saturating_duration_since(e.stored);
        if age >= Duration::from_secs(u64::from(e.answer.keep)) {
            self.remove(key);
            return None;
        }
        Some(e.answer.relay(req, age.as_secs() as u32))
    }

    /// Keeps `answer` for `req`'s question (if its TTL allows).
    pub fn store(&mut self, req: &Forward, answer: Rc<Upstream>, now: Instant) {
        if answer.keep == 0 {
            return;
        }
        let key = Cache::key(req);
        let bytes = key.0.len() + answer.size();
        if bytes > self.max_bytes {
            return;
        }
        self.remove(&key);
        // Oldest first until both the count and the bytes fit; a position whose entry has
        // gone (expired, or stored again since) frees nothing and is skipped.
        while self.map.len() >= self.max || self.bytes + bytes > self.max_bytes {
            let Some((old, serial)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|e| e.serial == serial) {
                self.remove(&old);
            }
        }
        // Positions of entries already gone are dropped as they reach the front.
        while self.order.len() > 2 * self.max {
            if let Some((old, serial)) = self.order.pop_front()
                && self.map.get(&old).is_some_and(|e| e.serial == serial)
            {
                self.remove(&old);
            }
        }
        self.serial += 1;
        self.order.push_back((key.clone(), self.serial));
        self.bytes += bytes;
        self.map.insert(
            key,
            Entry {
                answer,
                stored: now,
                serial: self.serial,
                bytes,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::query;

    /// Counts from upstream that add up past u16::MAX are a malformed answer, not a panic.
    #[test]
    fn huge_section_counts_are_malformed() {
        let q = query("example.com", Rtype::A, Some(1232));
        let mut m = q[..12 + 13 + 4].to_vec();
        m[2] |= 0x80;
        m[6..12].copy_from_slice(&[0xFF, 0xFF, 0, 1, 0, 0]);
        // One A record, then nothing: the counts promise far more.
        m.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        assert_eq!(Upstream::parse(&m, &q).unwrap_err(), Bad::Malformed);
    }

    /// The question must be ours: the name in any case, but the type and class exactly (type
    /// A is 0x0041 and 0x0061 is another type, which an ASCII-blind comparison took for it).
    #[test]
    fn an_answer_to_another_type_is_not_ours() {
        let q = query("example.com", Rtype::A, Some(1232));
        let good = cname_answer(&q, b"\x03www\xC0\x0C");
        let mut upper = good.clone();
        upper[13..20].make_ascii_uppercase();
        assert!(
            Upstream::parse(&upper, &q).is_ok(),
            "the name's case is free"
        );
        let q_aaaa_like = query("example.com", Rtype::from_int(0x41), Some(1232));
        let mut other = cname_answer(&q_aaaa_like, b"\x03www\xC0\x0C");
        other[26] = 0x61;
        assert_eq!(
            Upstream::parse(&other, &q_aaaa_like).unwrap_err(),
            Bad::NotOurs
        );
        let mut class = good.clone();
        class[28] = 0x41;
        assert_eq!(Upstream::parse(&class, &q).unwrap_err(), Bad::NotOurs);
    }

    /// An upstream answer of one CNAME to `target` (its wire form), without OPT.
    fn cname_answer(q: &[u8], target: &[u8]) -> Vec<u8> {
        let mut m = q[..12 + 13 + 4].to_vec();
        m[2] |= 0x80;
        m[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
        m.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, target.len() as u8]);
        m.extend_from_slice(target);
        m
    }

    /// A pointer whose low byte is a TTL's first byte: its target moves as the cache lowers
    /// the TTL. Filled with one value, the TTL made it point at a valid name (the check took
    /// it for good and the client got a name pointing into its header: found by fuzzing the
    /// forwarder); a second fill points one byte on, and the answer is refused.
    #[test]
    fn a_pointer_made_of_a_ttl_byte_is_refused() {
        let q = query("example.com", Rtype::A, Some(1232));
        let answer = |owner: u8| {
            let mut m = q[..29].to_vec();
            m[2] |= 0x80;
            m[6..12].copy_from_slice(&[0, 3, 0, 0, 0, 0]);
            // At 29, a TXT whose one string holds, at 64 (0x40), the name a.example.com.
            m.extend_from_slice(&[0xC0, 12, 0, 16, 0, 1, 0, 0, 0, 60, 0, 27, 26]);
            m.extend_from_slice(&[b'x'; 22]);
            m.extend_from_slice(&[1, b'a', 0xC0, 12]);
            // At 68, an A of class 0x00C0, its TTL's first byte (0) at 74.
            m.extend_from_slice(&[0xC0, 12, 0, 1, 0, 0xC0, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
            // At 84, an A owned by `owner`.
            m.extend_from_slice(&[0xC0, owner, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 2]);
            m
        };
        assert_eq!(answer(0x40).len(), 100);
        assert!(
            Upstream::parse(&answer(0x40), &q).is_ok(),
            "a.example.com itself"
        );
        // At the class's low byte 0xC0 (73): a pointer whose low byte is the TTL's.
        assert_eq!(
            Upstream::parse(&answer(73), &q).unwrap_err(),
            Bad::Malformed
        );
    }

    /// Names in record data are checked, not only owners: a pointer forward (here the SOA's
    /// RNAME at offset 0x7f of a 117-byte message, found by fuzzing the forwarder) or into
    /// the header, which the client's answer does not share, is a malformed answer, never
    /// relayed nor kept.
    #[test]
    fn names_in_record_data_must_parse_in_the_relayed_answer() {
        let q = query("example.com", Rtype::A, Some(1232));
        let good = cname_answer(&q, b"\x03www\xC0\x0C");
        assert!(Upstream::parse(&good, &q).is_ok());
        // At offset 41, pointing at itself, then forward.
        for p in [41, 43, 0x7f] {
            let bad = cname_answer(&q, &[0xC0, p]);
            assert_eq!(
                Upstream::parse(&bad, &q).unwrap_err(),
                Bad::Malformed,
                "{p}"
            );
        }
        // At ARCOUNT's low byte: the root here (0 records), a label of our question's
        // length byte then garbage in an answer with an OPT for the client.
        let into_header = cname_answer(&q, &[0xC0, 11]);
        assert_eq!(crate::fuzz::well_formed(&into_header), Ok(()), "as it came");
        assert_eq!(
            Upstream::parse(&into_header, &q).unwrap_err(),
            Bad::Malformed
        );
        // The fuzzer's: an SOA's RNAME pointing forward.
        let mut soa = q[..29].to_vec();
        soa[2] |= 0x80;
        soa[3] = 3;
        soa[6..12].copy_from_slice(&[0, 0, 0, 1, 0, 0]);
        soa.extend_from_slice(&[0xC0, 12, 0, 6, 0, 1, 0, 0, 0, 60, 0, 39]);
        soa.extend_from_slice(b"\x03ns1\xC0\x0C\x0ahostmaster\xC0\x7f");
        soa.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5]);
        assert_eq!(Upstream::parse(&soa, &q).unwrap_err(), Bad::Malformed);
        soa[59] = 12;
        assert!(Upstream::parse(&soa, &q).is_ok(), "the same, pointing back");
        // A name pointing into a TTL, which the cache lowers (found by fuzzing too): the
        // A record's TTL 00 00 01 00 at 35; the CNAME's owner at its third byte reads as
        // the label "\0", then the root (the A's RDLENGTH), but as the root once 1 s passed.
        let mut into_ttl = q[..29].to_vec();
        into_ttl[2] |= 0x80;
        into_ttl[6..12].copy_from_slice(&[0, 2, 0, 0, 0, 0]);
        into_ttl.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 1, 0, 0, 4, 192, 0, 2, 1]);
        into_ttl.extend_from_slice(&[0xC0, 37, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xC0, 12]);
        assert_eq!(crate::fuzz::well_formed(&into_ttl), Ok(()), "as it came");
        assert_eq!(Upstream::parse(&into_ttl, &q).unwrap_err(), Bad::Malformed);
        // A name whose labels run on into the upstream's OPT, which is not relayed (found by
        // fuzzing too): the owner points at the question's class, whose low byte 1 is read
        // as a label, then the pointer's own 0x1C as one of 28 bytes over the record's
        // header and its TXT data, to the root label that is the OPT's owner.
        let mut into_opt = q[..29].to_vec();
        into_opt[2] |= 0x80;
        into_opt[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 1]);
        into_opt.extend_from_slice(&[0xC0, 28, 0, 16, 0, 1, 0, 0, 0, 60, 0, 18, 17]);
        into_opt.extend_from_slice(&[b'x'; 17]);
        into_opt.extend_from_slice(&[0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(crate::fuzz::well_formed(&into_opt), Ok(()), "as it came");
        assert_eq!(Upstream::parse(&into_opt, &q).unwrap_err(), Bad::Malformed);
    }

    /// One record of [`upstream`]: owner, type, TTL, data (names uncompressed).
    type Rec<'a> = (&'a str, Rtype, u32, Vec<u8>);

    fn wire(name: &str) -> Vec<u8> {
        crate::name::parse(name)
            .expect("a name")
            .as_slice()
            .to_vec()
    }

    /// An SOA's data with MINIMUM `minimum`.
    fn soa(minimum: u32) -> Vec<u8> {
        let mut d = wire("ns.example.com");
        d.extend(wire("h.example.com"));
        for n in [1u32, 2, 3, 4, minimum] {
            d.extend(n.to_be_bytes());
        }
        d
    }

    /// The upstream's answer to `q` (the query sent, with its OPT): its header and
    /// question, then the three sections, and an OPT last.
    fn upstream(q: &[u8], rcode: u8, sections: [&[Rec<'_>]; 3]) -> Vec<u8> {
        let qend = 12 + crate::name::name_len(q, 12).expect("a question") + 4;
        let mut m = q[..qend].to_vec();
        m[2] |= 0x80;
        m[3] = 0x80 | rcode;
        let [an, ns, ar] = sections.map(|s| s.len() as u16);
        for (i, c) in [an, ns, ar + 1].into_iter().enumerate() {
            m[6 + 2 * i..8 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
        for (owner, rtype, ttl, data) in sections.iter().flat_map(|s| s.iter()) {
            m.extend(wire(owner));
            m.extend(rtype.to_int().to_be_bytes());
            m.extend([0, 1]);
            m.extend(ttl.to_be_bytes());
            m.extend((data.len() as u16).to_be_bytes());
            m.extend(data);
        }
        m.extend(opt_record(false));
        m
    }

    const A: [u8; 4] = [192, 0, 2, 1];

    /// The lifetime is the least TTL of every record, in every section, and for a negative
    /// answer (NXDOMAIN, NODATA, after a CNAME too) no more than the SOA's MINIMUM; a
    /// negative answer without an SOA, or a record with TTL 0, is not kept. Before, the
    /// answer section alone counted for a positive answer and the SOA alone for a negative
    /// one: a CNAME of 60 s to NODATA with MINIMUM 3 was kept 60 s; a CNAME of 5 s to
    /// NXDOMAIN with MINIMUM 300, 300 s, its CNAME served at TTL 0 from the fifth second.
    #[test]
    fn an_answer_is_kept_by_the_least_ttl_of_all_its_records() {
        let q = query("x.example.com", Rtype::A, Some(1232));
        let cname = |ttl| ("x.example.com", Rtype::CNAME, ttl, wire("a.example.com"));
        let soa = |ttl, min| ("example.com", Rtype::SOA, ttl, soa(min));
        let a = |ttl| ("a.example.com", Rtype::A, ttl, A.to_vec());
        let ns = |ttl| ("example.com", Rtype::NS, ttl, wire("ns.example.com"));
        let keep = |rcode, sections: [&[Rec<'_>]; 3]| {
            Upstream::parse(&upstream(&q, rcode, sections), &q)
                .expect("an answer")
                .keep
        };
        // NODATA after a CNAME: the SOA's MINIMUM, not the CNAME's 60.
        assert_eq!(keep(0, [&[cname(60)], &[soa(3, 3)], &[]]), 3);
        // NXDOMAIN after a CNAME: the CNAME's 5, not the MINIMUM's 300.
        assert_eq!(keep(3, [&[cname(5)], &[soa(300, 300)], &[]]), 5);
        // The SOA's own TTL bounds it too, and MINIMUM does when it is lower.
        assert_eq!(keep(3, [&[], &[soa(30, 300)], &[]]), 30);
        assert_eq!(keep(0, [&[], &[soa(300, 40)], &[]]), 40);
        // Positive: authority and additional records count as the answer's do.
        assert_eq!(keep(0, [&[cname(300), a(200)], &[ns(10)], &[]]), 10);
        assert_eq!(keep(0, [&[a(200)], &[], &[ns(7)]]), 7);
        assert_eq!(keep(0, [&[a(200)], &[], &[]]), 200);
        // Not kept: TTL 0 anywhere (RFC 1035 3.2.1: not cached), a TTL with the top bit
        // set (RFC 2181 8: as 0), a negative answer without an SOA (RFC 2308 5).
        assert_eq!(keep(0, [&[a(0)], &[], &[]]), 0);
        assert_eq!(keep(3, [&[cname(0)], &[soa(300, 300)], &[]]), 0);
        assert_eq!(keep(0, [&[a(1 << 31)], &[], &[]]), 0);
        assert_eq!(keep(3, [&[], &[], &[]]), 0);
        assert_eq!(
            keep(0, [&[cname(60)], &[], &[]]),
            0,
            "NODATA without an SOA"
        );
        // At most a day.
        assert_eq!(keep(0, [&[a(1 << 30)], &[], &[]]), MAX_TTL);
    }

    /// What the cache serves never holds a record past its TTL: every TTL is at least 1
    /// until the answer expires. Before, the answers above were served with TTLs floored
    /// at 0 (a CNAME of 5 s for 300 s).
    #[test]
    fn a_cached_answer_never_outlives_a_record() {
        let r = crate::forward::tests::req("x.example.com", Rtype::A);
        let q = query("x.example.com", Rtype::A, Some(1232));
        let cname = |ttl| {
            (
                "x.example.com",
                Rtype::CNAME,
                ttl,
                wire("nothere.example.com"),
            )
        };
        let nx = upstream(
            &q,
            3,
            [
                &[cname(5)],
                &[("example.com", Rtype::SOA, 300, soa(300))],
                &[],
            ],
        );
        let up = Rc::new(Upstream::parse(&nx, &q).expect("an answer"));
        let mut c = Cache::new(10);
        let t0 = Instant::now();
        c.store(&r, up, t0);
        for s in 0..5 {
            let hit = c
                .answer(&r, t0 + Duration::from_millis(1000 * s + 999))
                .unwrap_or_else(|| panic!("kept at {s} s"));
            let got = crate::tests::read(&hit);
            assert_eq!(got.rcode, Rcode::NXDOMAIN);
            let ttl = |line: &String| line.split(' ').nth(1).and_then(|t| t.parse::<u32>().ok());
            assert_eq!(ttl(&got.answer[0]), Some(5 - s as u32), "{got:?}");
            assert!(got.authority.iter().all(|l| ttl(l) >= Some(1)), "{got:?}");
        }
        assert!(
            c.answer(&r, t0 + Duration::from_secs(5)).is_none(),
            "expired with the CNAME"
        );
    }

    /// The client's DO bit is copied into the OPT of what is relayed, fresh or from the
    /// cache, and of the forwarder's SERVFAIL (RFC 3225 3); without DO the flags stay 0.
    /// Before, the OPT's flags were always 0.
    #[test]
    fn the_do_bit_is_copied_into_forwarded_answers() {
        let q = query("x.example.com", Rtype::A, Some(1232));
        let pos = upstream(
            &q,
            0,
            [&[("x.example.com", Rtype::A, 60, A.to_vec())], &[], &[]],
        );
        let up = Upstream::parse(&pos, &q).expect("an answer");
        // The OPT is the last 11 bytes; its flags' first byte the 8th of them.
        let do_flag = |b: &[u8]| b[b.len() - 11..][7] & 0x80 != 0;
        for dnssec_ok in [false, true] {
            let mut r = crate::forward::tests::req("x.example.com", Rtype::A);
            r.edns = Some(crate::message::Edns {
                payload: 1232,
                version: 0,
                dnssec_ok,
            });
            assert_eq!(do_flag(&up.relay(&r, 0)), dnssec_ok);
            assert_eq!(do_flag(&up.relay(&r, 30)), dnssec_ok, "from the cache");
            r.limit = 20;
            let tc = up.relay(&r, 0);
            assert!(tc[2] & 0x02 != 0 && do_flag(&tc) == dnssec_ok, "truncated");
            let crate::forward::Action::Reply { bytes, .. } =
                crate::forward::servfail(crate::forward::tests::client(), &r)
            else {
                panic!("a reply")
            };
            assert_eq!(do_flag(&bytes), dnssec_ok, "SERVFAIL");
        }
    }

    /// An answer kept for a question with DO (RRSIGs and all) or CD (perhaps data a
    /// validating upstream refuses) is not given to a client that asked without, nor the
    /// other way round. Before, the cache's key was the question alone.
    #[test]
    fn answers_are_kept_apart_by_the_do_and_cd_bits() {
        let t0 = Instant::now();
        let with = |dnssec_ok: bool, cd: bool| {
            let mut r = crate::forward::tests::req("web.example.com", Rtype::A);
            r.edns = Some(crate::message::Edns {
                payload: 1232,
                version: 0,
                dnssec_ok,
            });
            r.cd = cd;
            r
        };
        let bits = [(false, false), (true, false), (false, true), (true, true)];
        for (i, &(d, c)) in bits.iter().enumerate() {
            let mut cache = Cache::new(16);
            let r = with(d, c);
            cache.store(&r, crate::forward::tests::kept_answer(&r), t0);
            for (j, &(d2, c2)) in bits.iter().enumerate() {
                assert_eq!(
                    cache.answer(&with(d2, c2), t0).is_some(),
                    i == j,
                    "kept for DO={d} CD={c}, asked DO={d2} CD={c2}"
                );
            }
        }
    }

    fn kept(name: &str) -> (Forward, Rc<Upstream>) {
        let r = crate::forward::tests::req(name, Rtype::A);
        let a = crate::forward::tests::kept_answer(&r);
        (r, a)
    }

    /// A key stored again after its first copy expired is not evicted in the first copy's
    /// place: the oldest live entry goes.
    #[test]
    fn a_key_stored_again_is_evicted_by_its_new_age() {
        let t0 = Instant::now();
        let mut c = Cache::new(2);
        let (a, answer) = kept("a.example.com");
        let (b, _) = kept("b.example.com");
        c.store(&a, answer.clone(), t0);
        c.store(&b, answer.clone(), t0);
        let later = t0 + Duration::from_secs(u64::from(answer.keep));
        assert!(c.answer(&a, later).is_none(), "expired");
        c.store(&a, answer.clone(), later);
        let (d, _) = kept("d.example.com");
        c.store(&d, answer.clone(), later);
        assert!(c.answer(&a, later).is_some(), "the fresh copy stays");
        assert!(c.answer(&b, later).is_none(), "the oldest went");
    }

    /// However many answers `--cache-size` allows, their bytes are bounded.
    #[test]
    fn the_cache_is_bounded_in_bytes() {
        let t0 = Instant::now();
        let (a, answer) = kept("a.example.com");
        let one = a.key.len() + answer.size();
        let mut c = Cache::with_budget(1000, 3 * one);
        for i in 0..10 {
            let (r, _) = kept(&format!("n{i}.example.com"));
            c.store(&r, answer.clone(), t0);
        }
        assert!(c.bytes <= 3 * one, "{} > {}", c.bytes, 3 * one);
        assert!(c.len() <= 3 && !c.is_empty());
        let total: usize = c.map.values().map(|e| e.bytes).sum();
        assert_eq!(total, c.bytes, "the budget is what the entries hold");
    }
}
