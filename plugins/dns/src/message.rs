//! Queries off the wire and answers onto it: header and question checks (FORMERR, NOTIMP),
//! EDNS0 (RFC 6891), and truncation with TC when an answer does not fit.
//!
//! Parsing a query is done by hand on the bytes (one pass, no allocation): a query is a header,
//! one question and at most an OPT record, and whatever else arrives must be refused without a
//! panic. Answers are composed with `domain`'s message builder (name compression, record
//! data in its wire form).

use domain::base::iana::{Class, Opcode, OptRcode, Rcode, Rtype};
use domain::base::message_builder::{
    AdditionalBuilder, MessageBuilder, PushError, StaticCompressor,
};
use domain::base::{Message, Name, ParsedName, Ttl};
use domain::rdata::AllRecordData;

use crate::lookup::{Answer, Rr};
use crate::name;
use crate::responder::{Chase, Forward};

/// The EDNS0 payload size we offer and cap clients at (the DNS flag day 2020 value: no
/// fragmentation on common paths).
pub const OUR_PAYLOAD: u16 = 1232;
/// A UDP answer without EDNS0 (RFC 1035 4.2.1).
pub const CLASSIC_UDP: usize = 512;
/// An OPT record without options.
pub const OPT_LEN: usize = 11;

/// RFC 6891 6.1.2: the client's EDNS0 record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A query that can be answered.
#[derive(Clone, Copy, Debug)]
pub struct Query<'q> {
    /// The whole message as received.
    pub msg: &'q [u8],
    pub id: u16,
    pub opcode: u8,
    pub rd: bool,
    pub cd: bool,
    /// The question's name, as sent (its case is echoed back).
    pub qname: &'q [u8],
    pub qtype: Rtype,
    pub qclass: Class,
    pub edns: Option<Edns>,
    /// The serial of the first SOA in the authority section: the copy an IXFR client has
    /// (RFC 1995 3).
    pub soa_serial: Option<u32>,
}

impl Query<'_> {
    /// The question section as sent: name, type, class.
    pub fn question(&self) -> &[u8] {
        &self.msg[12..12 + self.qname.len() + 4]
    }

    /// The largest answer this client takes over UDP (RFC 6891 6.2.3, 6.2.5).
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => (e.payload as usize).clamp(CLASSIC_UDP, OUR_PAYLOAD as usize),
            None => CLASSIC_UDP,
        }
    }
}

/// What a datagram or a TCP message turned out to be.
#[derive(Debug)]
pub enum Parsed<'q> {
    Query(Query<'q>),
    /// Answer with this code: the header (and the question, when one could be read) echoed,
    /// and an OPT if the message had a well-formed one (RFC 6891 7).
    Error {
        id: u16,
        flags: u16,
        rcode: Rcode,
        question: Option<&'q [u8]>,
        edns: Option<Edns>,
    },
    /// No header to answer, or a response (answering those makes loops): silence.
    Drop,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Skips a possibly compressed name; returns the offset after it.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *msg.get(at)?;
        match len & 0xC0 {
            0xC0 => return (at + 2 <= msg.len()).then_some(at + 2),
            0 if len == 0 => return Some(at + 1),
            0 => at += 1 + len as usize,
            _ => return None,
        }
    }
    None
}

/// One record's type, class, TTL and where its data lies: `(rtype, class, ttl, rdata, end)`.
pub(crate) fn read_rr(msg: &[u8], at: usize) -> Option<(u16, u16, u32, usize, usize)> {
    let p = skip_name(msg, at)?;
    let rtype = u16_at(msg, p)?;
    let class = u16_at(msg, p + 2)?;
    let ttl = u32::from_be_bytes(msg.get(p + 4..p + 8)?.try_into().ok()?);
    let len = u16_at(msg, p + 8)? as usize;
    let data = p + 10;
    let end = data + len;
    (end <= msg.len()).then_some((rtype, class, ttl, data, end))
}

/// The EDNS0 fields of an OPT record's TTL and class.
fn edns_of(class: u16, ttl: u32) -> Edns {
    Edns {
        payload: class,
        version: (ttl >> 16) as u8,
        dnssec_ok: ttl & 0x8000 != 0,
    }
}

/// The OPT of a message that is no query we answer (a bad question, another opcode), if
/// its records can be walked to it: the error then carries an OPT, as BIND's does.
fn find_opt(msg: &[u8], counts: [usize; 4]) -> Option<Edns> {
    let mut at = 12;
    for _ in 0..counts[0] {
        at = skip_name(msg, at)? + 4;
    }
    for _ in 0..counts[1] + counts[2] {
        at = read_rr(msg, at)?.4;
    }
    for _ in 0..counts[3] {
        let (rtype, class, ttl, _, end) = read_rr(msg, at)?;
        if rtype == Rtype::OPT.to_int() && msg.get(at) == Some(&0) {
            return Some(edns_of(class, ttl));
        }
        at = end;
    }
    None
}

/// True if the OPT's RDATA is a whole number of options (RFC 6891 6.1.2): one whose length
/// runs past it is a malformed message, FORMERR as BIND and NSD answer.
fn options_fit(rdata: &[u8]) -> bool {
    let mut at = 0;
    while at < rdata.len() {
        match u16_at(rdata, at + 2) {
            Some(len) if at + 4 + len as usize <= rdata.len() => at += 4 + len as usize,
            _ => return false,
        }
    }
    true
}

/// An SOA's serial, in its RDATA at `at` (after the two names).
fn soa_serial(msg: &[u8], at: usize) -> Option<u32> {
    let p = skip_name(msg, skip_name(msg, at)?)?;
    Some(u32::from_be_bytes(msg.get(p..p + 4)?.try_into().ok()?))
}

/// Reads a query: a header, one question, and in the additional section at most one OPT.
/// Bytes after the last record are ignored, as BIND and NSD ignore them.
pub fn parse(msg: &[u8]) -> Parsed<'_> {
    let (Some(id), Some(flags)) = (u16_at(msg, 0), u16_at(msg, 2)) else {
        return Parsed::Drop;
    };
    if msg.len() < 12 || flags & 0x8000 != 0 {
        return Parsed::Drop;
    }
    let count = |i: usize| u16_at(msg, 4 + 2 * i).unwrap_or(0) as usize;
    let (qd, an, ns, ar) = (count(0), count(1), count(2), count(3));
    let opcode = ((flags >> 11) & 0xF) as u8;
    let err = |rcode, question| Parsed::Error {
        id,
        flags,
        rcode,
        question,
        edns: None,
    };
    let err_opt = |rcode, question| Parsed::Error {
        id,
        flags,
        rcode,
        question,
        edns: find_opt(msg, [qd, an, ns, ar]),
    };
    let question = match (qd, name::name_len(msg, 12)) {
        (1, Some(n)) if msg.len() >= 12 + n + 4 => Some(&msg[12..12 + n + 4]),
        _ => None,
    };
    if opcode != Opcode::QUERY.to_int() {
        return err_opt(Rcode::NOTIMP, question);
    }
    let Some(q) = question else {
        return err_opt(Rcode::FORMERR, None);
    };
    let qlen = q.len() - 4;
    let mut at = 12 + q.len();
    let mut serial = None;
    for i in 0..an + ns {
        match read_rr(msg, at) {
            // An OPT belongs in the additional section alone (RFC 6891 6.1.1).
            Some((rtype, ..)) if rtype == Rtype::OPT.to_int() => {
                return err(Rcode::FORMERR, Some(q));
            }
            Some((rtype, _, _, data, end)) => {
                if i >= an && serial.is_none() && rtype == Rtype::SOA.to_int() {
                    serial = soa_serial(msg, data);
                }
                at = end;
            }
            None => return err(Rcode::FORMERR, Some(q)),
        }
    }
    let mut edns = None;
    for _ in 0..ar {
        let Some((rtype, class, ttl, data, end)) = read_rr(msg, at) else {
            return err(Rcode::FORMERR, Some(q));
        };
        if rtype == Rtype::OPT.to_int() {
            // One OPT, owned by the root (RFC 6891 6.1.1), its options whole.
            if edns.is_some() || msg.get(at) != Some(&0) || !options_fit(&msg[data..end]) {
                return err(Rcode::FORMERR, Some(q));
            }
            edns = Some(edns_of(class, ttl));
        }
        at = end;
    }
    Parsed::Query(Query {
        msg,
        id,
        opcode,
        rd: flags & 0x0100 != 0,
        cd: flags & 0x0010 != 0,
        qname: &msg[12..12 + qlen],
        qtype: Rtype::from_int(u16_at(q, qlen).unwrap_or(0)),
        qclass: Class::from_int(u16_at(q, qlen + 2).unwrap_or(0)),
        edns,
        soa_serial: serial,
    })
}

/// How an answer is sent: what fits, and the header bits that are not the answer's.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Largest message: the UDP limit, or 65535 over TCP.
    pub limit: usize,
    /// RA: recursion (forwarding) is offered.
    pub ra: bool,
}

type Builder = MessageBuilder<StaticCompressor<Vec<u8>>>;

fn start(id: u16, rd: bool, cd: bool, ra: bool, rcode: Rcode, aa: bool) -> Builder {
    let target = StaticCompressor::new(Vec::with_capacity(512));
    let mut mb = match MessageBuilder::from_target(target) {
        Ok(mb) => mb,
        // A Vec always has room for a header.
        Err(never) => match never {},
    };
    let h = mb.header_mut();
    h.set_id(id);
    h.set_qr(true);
    h.set_opcode(Opcode::QUERY);
    h.set_rd(rd);
    h.set_cd(cd);
    h.set_ra(ra);
    h.set_aa(aa);
    h.set_rcode(rcode);
    mb
}

/// Our OPT, answering the client's `edns`: its DO bit copied (RFC 3225 3).
pub fn push_opt(
    add: &mut AdditionalBuilder<StaticCompressor<Vec<u8>>>,
    rcode: OptRcode,
    edns: Edns,
) {
    add.as_builder_mut().clear_push_limit();
    let _ = add.opt(|o| {
        o.set_udp_payload_size(OUR_PAYLOAD);
        o.set_dnssec_ok(edns.dnssec_ok);
        // OptBuilder::set_rcode rewrites the header's code too: only for extended codes
        // (BADVERS), or an NXDOMAIN would leave as NOERROR.
        if rcode.ext() != 0 {
            o.set_rcode(rcode);
        }
        Ok(())
    });
}

fn push_set<F>(mut push: F, rr: &Rr<'_>) -> Result<(), PushError>
where
    F: FnMut(&Rr<'_>, &crate::zone::Data) -> Result<(), PushError>,
{
    rr.data.iter().try_for_each(|d| push(rr, d))
}

/// The answer to `q`, shaped to fit: over the limit, an empty answer with TC set (the client
/// asks again over TCP); additional records that do not fit are left out, unless they are a
/// referral's glue.
pub fn answer(q: &Query<'_>, ans: &Answer<'_>, shape: Shape) -> Vec<u8> {
    let opt = q.edns.is_some();
    let rcode = ans.rcode;
    let mut mb = start(q.id, q.rd, q.cd, shape.ra, rcode, ans.aa);
    mb.set_push_limit(shape.limit.saturating_sub(if opt { OPT_LEN } else { 0 }));
    let Some(qname) = Name::from_slice(q.qname).ok() else {
        return error(q.id, 0, Rcode::SERVFAIL, None, None);
    };
    let mut qb = mb.question();
    if qb.push((qname, q.qtype, q.qclass)).is_err() {
        return error(q.id, 0, Rcode::SERVFAIL, None, None);
    }
    let mut ab = qb.answer();
    let mut full = ans
        .answer
        .iter()
        .try_for_each(|rr| {
            push_set(
                |rr, d| ab.push((&rr.owner, Class::IN, Ttl::from_secs(rr.ttl), d)),
                rr,
            )
        })
        .is_err();
    let mut nb = ab.authority();
    full = full
        || ans
            .authority
            .iter()
            .try_for_each(|rr| {
                push_set(
                    |rr, d| nb.push((&rr.owner, Class::IN, Ttl::from_secs(rr.ttl), d)),
                    rr,
                )
            })
            .is_err();
    let mut add = nb.additional();
    if !full {
        for (i, rr) in ans.additional.iter().enumerate() {
            let pushed = push_set(
                |rr, d| add.push((&rr.owner, Class::IN, Ttl::from_secs(rr.ttl), d)),
                rr,
            );
            if pushed.is_err() {
                // Glue a referral needs makes the answer truncated; other additions are
                // left out from here on (RFC 2181 9).
                full = i < ans.required_glue;
                break;
            }
        }
    }
    if full {
        return truncated(q, shape, ans.rcode, ans.aa);
    }
    if let Some(e) = q.edns {
        push_opt(&mut add, OptRcode::NOERROR, e);
    }
    add.finish().into_target()
}

/// The client's answer to a question whose CNAME chain (`chase`) left our zones, its target
/// forwarded: the client's question, the chain's records, then the records of `upstream`
/// (the upstream's answer for the target, a whole message) under its code, not AA; TC if
/// the chain and the answer do not fit, additional records left out when they do not.
/// None if `upstream` does not read back.
pub fn chased(req: &Forward, chase: &Chase, upstream: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_octets(upstream).ok()?;
    let rcode = msg.header().rcode();
    let opt = req.edns.is_some();
    let mut mb = start(req.id, req.rd, req.cd, true, rcode, false);
    mb.set_push_limit(req.limit.saturating_sub(if opt { OPT_LEN } else { 0 }));
    let n = name::name_len(&chase.question, 0)?;
    let qname = Name::from_slice(chase.question.get(..n)?).ok()?;
    let (qtype, qclass) = (u16_at(&chase.question, n)?, u16_at(&chase.question, n + 2)?);
    let mut qb = mb.question();
    qb.push((qname, Rtype::from_int(qtype), Class::from_int(qclass)))
        .ok()?;
    let mut ab = qb.answer();
    let mut full = chase.records.iter().any(|(owner, ttl, d)| {
        ab.push((owner, Class::IN, Ttl::from_secs(*ttl), d))
            .is_err()
    });
    for rec in msg
        .answer()
        .ok()?
        .into_records::<AllRecordData<_, ParsedName<_>>>()
    {
        full = full || ab.push(rec.ok()?).is_err();
    }
    let mut nb = ab.authority();
    for rec in msg
        .authority()
        .ok()?
        .into_records::<AllRecordData<_, ParsedName<_>>>()
    {
        full = full || nb.push(rec.ok()?).is_err();
    }
    let mut add = nb.additional();
    for rec in msg
        .additional()
        .ok()?
        .into_records::<AllRecordData<_, ParsedName<_>>>()
    {
        if full || add.push(rec.ok()?).is_err() {
            break;
        }
    }
    if full {
        let mut mb = start(req.id, req.rd, req.cd, true, rcode, false);
        mb.header_mut().set_tc(true);
        return Some(with_question(
            mb,
            &chase.question,
            req.edns,
            OptRcode::NOERROR,
        ));
    }
    if let Some(e) = req.edns {
        push_opt(&mut add, OptRcode::NOERROR, e);
    }
    Some(add.finish().into_target())
}

/// Header and question with TC set, and our OPT if the client sent one. The answer's AA
/// and rcode stay, as BIND's and NSD's: TC says only that sections were left out.
fn truncated(q: &Query<'_>, shape: Shape, rcode: Rcode, aa: bool) -> Vec<u8> {
    let mut mb = start(q.id, q.rd, q.cd, shape.ra, rcode, aa);
    mb.header_mut().set_tc(true);
    with_question(mb, q.question(), q.edns, OptRcode::NOERROR)
}

fn with_question(mb: Builder, question: &[u8], edns: Option<Edns>, rcode: OptRcode) -> Vec<u8> {
    let parsed = name::name_len(question, 0).and_then(|n| {
        let qname = Name::from_slice(&question[..n]).ok()?;
        Some((qname, u16_at(question, n)?, u16_at(question, n + 2)?))
    });
    let mut add = match parsed {
        Some((qname, t, c)) => {
            let mut qb = mb.question();
            if qb
                .push((qname, Rtype::from_int(t), Class::from_int(c)))
                .is_err()
            {
                qb.header_mut().set_rcode(Rcode::SERVFAIL);
            }
            qb.additional()
        }
        None => mb.additional(),
    };
    if let Some(e) = edns {
        push_opt(&mut add, rcode, e);
    }
    add.finish().into_target()
}

/// An error answer: the id, opcode and RD of `flags`, the question if there was one, our
/// OPT if the message had one.
pub fn error(
    id: u16,
    flags: u16,
    rcode: Rcode,
    question: Option<&[u8]>,
    edns: Option<Edns>,
) -> Vec<u8> {
    let mut mb = start(
        id,
        flags & 0x0100 != 0,
        flags & 0x0010 != 0,
        false,
        rcode,
        false,
    );
    mb.header_mut()
        .set_opcode(Opcode::from_int(((flags >> 11) & 0xF) as u8));
    with_question(mb, question.unwrap_or(&[]), edns, OptRcode::NOERROR)
}

/// An error answer to a parsed query (REFUSED, SERVFAIL, NOTIMP...), with our OPT if the
/// client sent EDNS0; BADVERS for an EDNS version we do not speak (RFC 6891 6.1.3).
pub fn refuse(q: &Query<'_>, rcode: OptRcode, ra: bool) -> Vec<u8> {
    let mb = start(q.id, q.rd, q.cd, ra, rcode.rcode(), false);
    with_question(mb, q.question(), q.edns, rcode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::query;

    #[test]
    fn queries_parse_and_malformed_ones_are_refused() {
        let m = query("www.Example.com", Rtype::AAAA, Some(4096));
        let Parsed::Query(q) = parse(&m) else {
            panic!("not a query")
        };
        assert_eq!(q.id, 0xABCD);
        assert!(q.rd);
        assert_eq!(q.qtype, Rtype::AAAA);
        assert_eq!(q.qname, b"\x03www\x07Example\x03com\x00");
        assert_eq!(q.edns.unwrap().payload, 4096);
        assert_eq!(q.udp_limit(), OUR_PAYLOAD as usize);

        assert!(matches!(parse(&m[..11]), Parsed::Drop), "no header");
        let mut resp = m.clone();
        resp[2] |= 0x80;
        assert!(matches!(parse(&resp), Parsed::Drop), "a response");
        for cut in 12..m.len() {
            assert!(
                matches!(
                    parse(&m[..cut]),
                    Parsed::Error {
                        rcode: Rcode::FORMERR,
                        ..
                    }
                ),
                "cut at {cut}"
            );
        }
        let mut two_q = m.clone();
        two_q[5] = 2;
        assert!(matches!(
            parse(&two_q),
            Parsed::Error {
                rcode: Rcode::FORMERR,
                ..
            }
        ));
        let mut notify = m.clone();
        notify[2] = 0x20; // opcode 4
        assert!(matches!(
            parse(&notify),
            Parsed::Error {
                rcode: Rcode::NOTIMP,
                question: Some(_),
                ..
            }
        ));
        // Bytes after the last record are ignored, as BIND and NSD ignore them.
        let mut trailing = m.clone();
        trailing.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(parse(&trailing), Parsed::Query(_)));
        let mut two_opt = m.clone();
        two_opt[11] = 2;
        two_opt.extend_from_slice(&[0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(
            parse(&two_opt),
            Parsed::Error {
                rcode: Rcode::FORMERR,
                ..
            }
        ));
    }

    #[test]
    fn errors_echo_the_header_and_question() {
        let m = query("example.com", Rtype::A, None);
        let e = error(0x1234, 0x0100, Rcode::FORMERR, Some(&m[12..]), None);
        assert_eq!(&e[..2], &[0x12, 0x34]);
        assert_eq!(e[2], 0x81, "QR and RD");
        assert_eq!(e[3] & 0xF, 1, "FORMERR");
        assert_eq!(&e[4..6], &[0, 1], "the question");
        assert_eq!(&e[12..], &m[12..]);
        let bare = error(7, 0, Rcode::FORMERR, None, None);
        assert_eq!(bare.len(), 12);
    }
}
