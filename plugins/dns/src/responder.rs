//! One message in, what to send out: the sans-IO core of the server.
//!
//! The zones' answers are computed by `lookup` and put on the wire by `message`; those
//! answers are remembered by the exact query (less its id, the name's case folded) so a repeated
//! question costs a hash look-up and a copy, as NSD's precompiled answers do. The memory is
//! dropped whenever the zones change. Questions outside the zones go to the forwarder (`-r`)
//! or are refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

use bytes::Bytes;
use domain::base::Name;
use domain::base::iana::{Class, Opcode, OptRcode, Rcode, Rtype};

use crate::axfr::ZoneCopy;
use crate::lookup::{Answer, Chased, Found, Rr, Store};
use crate::message::{self, Edns, Parsed, Query, Shape};
use crate::name;

/// Answers remembered, in bytes of keys and answers, before the memory starts over.
const MEMO_BYTES: usize = 8 << 20;

/// How the message arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Udp,
    Tcp,
}

/// What to send back.
#[derive(Debug)]
pub enum Reply {
    Send(Vec<u8>),
    /// A zone transfer over TCP: its messages, made as they are taken.
    Transfer(ZoneCopy),
    /// Nothing (no header to answer, or a response).
    Drop,
    /// Not ours, and `-r` is on: ask the upstream servers.
    Forward(Forward),
}

/// A question to forward, with what the client's answer needs.
#[derive(Clone, Debug)]
pub struct Forward {
    pub id: u16,
    pub rd: bool,
    pub cd: bool,
    /// The question section as the client sent it (name case included).
    pub question: Vec<u8>,
    /// The question's name, lower case: the cache's key with `qtype` and `qclass`.
    pub key: Box<[u8]>,
    pub qtype: Rtype,
    pub qclass: Class,
    pub edns: Option<Edns>,
    /// The largest answer the client takes.
    pub limit: usize,
    /// Set when `question` is the target of a CNAME chain from our zones: the client asked
    /// another question, and its answer starts with the chain.
    pub chase: Option<Rc<Chase>>,
}

impl Forward {
    /// The question section the client sent: the one its answer repeats.
    pub fn client_question(&self) -> &[u8] {
        self.chase.as_ref().map_or(&self.question, |c| &c.question)
    }
}

/// A CNAME chain from our data that leaves it (`-r`): what the client asked, and the records
/// that lead to the name forwarded.
#[derive(Debug)]
pub struct Chase {
    /// The client's question section, as sent.
    pub question: Vec<u8>,
    /// The chain's records (CNAMEs, a DNAME): owner, TTL, data.
    pub records: Vec<(name::Dname, u32, crate::zone::Data)>,
}

/// Who may transfer zones (AXFR): loopback always, and these networks.
#[derive(Clone, Debug, Default)]
pub struct AxfrAllow(pub Vec<(IpAddr, u8)>);

impl AxfrAllow {
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        peer.is_loopback()
            || self.0.iter().any(|(net, bits)| match (net, peer) {
                (IpAddr::V4(n), IpAddr::V4(p)) => prefix_eq(&n.octets(), &p.octets(), *bits),
                (IpAddr::V6(n), IpAddr::V6(p)) => prefix_eq(&n.octets(), &p.octets(), *bits),
                _ => false,
            })
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = (bits as usize).min(a.len() * 8);
    let (whole, rest) = (bits / 8, bits % 8);
    a[..whole] == b[..whole] && (rest == 0 || (a[whole] ^ b[whole]) & (0xFFu8 << (8 - rest)) == 0)
}

/// The server's state that answers depend on.
pub struct Responder {
    store: Rc<Store>,
    memo: HashMap<Box<[u8]>, Box<[u8]>>,
    memo_bytes: usize,
    /// `-r`: questions outside the zones are forwarded.
    pub recursion: bool,
    pub axfr: AxfrAllow,
    /// `-v`: one log line per question.
    pub verbose: u8,
}

impl Responder {
    pub fn new(store: Store) -> Responder {
        Responder {
            store: Rc::new(store),
            memo: HashMap::new(),
            memo_bytes: 0,
            recursion: false,
            axfr: AxfrAllow::default(),
            verbose: 0,
        }
    }

    pub fn store(&self) -> &Rc<Store> {
        &self.store
    }

    /// New zones (a reload, a transfer): answers remembered are forgotten.
    pub fn set_store(&mut self, store: Store) {
        self.store = Rc::new(store);
        self.memo.clear();
        self.memo_bytes = 0;
    }

    /// Answers remembered (for tests and diagnostics).
    pub fn memo_len(&self) -> usize {
        self.memo.len()
    }

    /// The reply to one message from `peer`.
    pub fn respond(&mut self, msg: &[u8], via: Via, peer: IpAddr) -> Reply {
        let memo_key = memo_key(msg, via);
        if let Some(k) = &memo_key
            && let Some(hit) = self.memo.get(k)
        {
            let mut out = hit.to_vec();
            // The id, and the name's case as this client wrote it (the key holds the name's
            // length, so the remembered answer's question has the same).
            let n = name::name_len(msg, 12).unwrap_or(0);
            if let (Some(to), Some(from)) = (out.get_mut(..12 + n), msg.get(..12 + n)) {
                to[..2].copy_from_slice(&from[..2]);
                to[12..].copy_from_slice(&from[12..]);
            }
            let reply = Reply::Send(out);
            if self.verbose > 0
                && let Parsed::Query(q) = message::parse(msg)
            {
                self.log(&q, peer, &reply);
            }
            return reply;
        }
        let q = match message::parse(msg) {
            Parsed::Query(q) => q,
            Parsed::Drop => return Reply::Drop,
            Parsed::Error {
                id,
                flags,
                rcode,
                question,
                edns,
            } => {
                if self.verbose > 0 {
                    log::info!(target: "twistrs.dns", "{}", error_line(flags, rcode, question, peer));
                }
                return Reply::Send(message::error(id, flags, rcode, question, edns));
            }
        };
        let reply = self.answer(&q, via, peer);
        // A forwarded question is logged by the server, which knows whether the cache answered.
        if self.verbose > 0 && !matches!(reply.0, Reply::Forward(_)) {
            self.log(&q, peer, &reply.0);
        }
        if let (Some(k), Cached::Yes(bytes)) = (memo_key, &reply.1) {
            self.remember(k, bytes);
        }
        reply.0
    }

    fn remember(&mut self, key: Box<[u8]>, answer: &[u8]) {
        let size = key.len() + answer.len();
        if self.memo_bytes + size > MEMO_BYTES {
            self.memo.clear();
            self.memo_bytes = 0;
        }
        self.memo_bytes += size;
        self.memo.insert(key, answer.into());
    }

    fn log(&self, q: &Query<'_>, peer: IpAddr, reply: &Reply) {
        let name = Name::from_slice(q.qname).map_or_else(|_| "?".into(), |n| n.to_string());
        let what = match reply {
            Reply::Send(b) => summary(b),
            // Its messages are made as the connection's output drains; the stream says if it
            // never all left.
            Reply::Transfer(c) => format!(
                "a transfer of serial {}, sending",
                c.zone().soa_timers().map_or(0, |t| t.serial)
            ),
            Reply::Drop => "nothing".into(),
            Reply::Forward(_) => "forwarded".into(),
        };
        log::info!(target: "twistrs.dns", "{} {} from {peer}: {what}", name, q.qtype);
    }

    fn answer(&self, q: &Query<'_>, via: Via, peer: IpAddr) -> (Reply, Cached) {
        let ra = self.recursion;
        let refuse = |rcode| (Reply::Send(message::refuse(q, rcode, ra)), Cached::No);
        if q.edns.is_some_and(|e| e.version > 0) {
            return refuse(OptRcode::BADVERS);
        }
        if q.qclass != Class::IN && q.qclass != Class::ANY {
            return refuse(OptRcode::REFUSED);
        }
        match q.qtype {
            Rtype::OPT => return refuse(OptRcode::FORMERR),
            Rtype::AXFR if via == Via::Udp => return refuse(OptRcode::FORMERR),
            Rtype::AXFR => return (self.transfer(q, peer), Cached::No),
            Rtype::IXFR => return (self.ixfr(q, via, peer), Cached::No),
            Rtype::MAILA | Rtype::MAILB => return refuse(OptRcode::NOTIMP),
            _ => {}
        }
        let key = name::key_of(q.qname);
        let Ok(qname) = Name::from_octets(Bytes::copy_from_slice(q.qname)) else {
            return refuse(OptRcode::FORMERR);
        };
        let limit = match via {
            Via::Udp => q.udp_limit(),
            Via::Tcp => u16::MAX as usize,
        };
        let found = if self.recursion {
            self.store.lookup_recursive(&key, &qname, q.qtype, q.rd)
        } else {
            Chased::Found(self.store.lookup(&key, &qname, q.qtype))
        };
        let found = match found {
            Chased::Found(f) => f,
            Chased::Out { cnames, target } => {
                let records = cnames
                    .answer
                    .iter()
                    .flat_map(|rr| {
                        rr.data
                            .iter()
                            .map(|d| (rr.owner.clone(), rr.ttl, d.clone()))
                    })
                    .collect();
                let mut question = target.as_slice().to_vec();
                question.extend_from_slice(&q.qtype.to_int().to_be_bytes());
                question.extend_from_slice(&q.qclass.to_int().to_be_bytes());
                let forward = Forward {
                    id: q.id,
                    rd: q.rd,
                    cd: q.cd,
                    question,
                    key: name::key(&target),
                    qtype: q.qtype,
                    qclass: q.qclass,
                    edns: q.edns,
                    limit,
                    chase: Some(Rc::new(Chase {
                        question: q.question().to_vec(),
                        records,
                    })),
                };
                return (Reply::Forward(forward), Cached::No);
            }
        };
        match found {
            Found::Answer(mut ans) => {
                // RFC 6895 3.2: an answer to QCLASS * is not authoritative (this server
                // holds class IN only), as NSD answers it.
                ans.aa &= q.qclass != Class::ANY;
                let bytes = message::answer(q, &ans, Shape { limit, ra });
                let tc = bytes.get(2).is_some_and(|f| f & 0x02 != 0);
                let cached = if tc {
                    Cached::No
                } else {
                    Cached::Yes(bytes.clone())
                };
                (Reply::Send(bytes), cached)
            }
            Found::Pending => refuse(OptRcode::SERVFAIL),
            Found::NotOurs if self.recursion => (
                Reply::Forward(Forward {
                    id: q.id,
                    rd: q.rd,
                    cd: q.cd,
                    question: q.question().to_vec(),
                    key,
                    qtype: q.qtype,
                    qclass: q.qclass,
                    edns: q.edns,
                    limit,
                    chase: None,
                }),
                Cached::No,
            ),
            Found::NotOurs => refuse(OptRcode::REFUSED),
        }
    }

    /// IXFR (RFC 1995), without a history of changes: a client whose serial (the SOA in its
    /// authority section) is ours or newer gets our SOA alone, one older the whole zone as
    /// AXFR sends it (RFC 1995 4), over TCP; over UDP our SOA alone, and the client asks
    /// again over TCP (RFC 1995 2). BIND and NSD answer so. Who may ask, and NOTAUTH for a
    /// name that is no zone's apex, as for AXFR; FORMERR without the client's SOA.
    fn ixfr(&self, q: &Query<'_>, via: Via, peer: IpAddr) -> Reply {
        let zone = match self.transfer_zone(q, peer) {
            Ok(z) => z,
            Err(refused) => return refused,
        };
        let (Some(theirs), Some(soa), Some(ours)) = (q.soa_serial, zone.soa(), zone.soa_timers())
        else {
            return Reply::Send(message::refuse(q, OptRcode::FORMERR, self.recursion));
        };
        let current = theirs == ours.serial || crate::secondary::serial_newer(theirs, ours.serial);
        if via == Via::Tcp && !current {
            return self.send_zone(q, zone, peer);
        }
        let ans = Answer {
            aa: true,
            answer: vec![Rr::of(&zone.apex, soa)],
            ..Answer::default()
        };
        let limit = match via {
            Via::Udp => q.udp_limit(),
            Via::Tcp => u16::MAX as usize,
        };
        Reply::Send(message::answer(
            q,
            &ans,
            Shape {
                limit,
                ra: self.recursion,
            },
        ))
    }

    /// AXFR (RFC 5936): the zone's SOA, every record, the SOA again, in messages of up to
    /// 16 KiB (`ZoneCopy`); refused to clients not allowed, NOTAUTH for a name that is no zone's apex.
    /// An IXFR answered whole is the same, its question IXFR.
    fn transfer(&self, q: &Query<'_>, peer: IpAddr) -> Reply {
        match self.transfer_zone(q, peer) {
            Ok(zone) => self.send_zone(q, zone, peer),
            Err(refused) => refused,
        }
    }

    /// The zone a transfer (AXFR or IXFR) of `q` is for, if `peer` may have it; else the
    /// refusal: REFUSED to a client not allowed, NOTAUTH for a name that is no zone's apex.
    fn transfer_zone(&self, q: &Query<'_>, peer: IpAddr) -> Result<&Rc<crate::zone::Zone>, Reply> {
        if !self.axfr.allows(peer) {
            log::warn!(target: "twistrs.dns", "Zone transfer refused to {peer}");
            return Err(Reply::Send(message::refuse(
                q,
                OptRcode::REFUSED,
                self.recursion,
            )));
        }
        self.store
            .zone_at(&name::key_of(q.qname))
            .ok_or_else(|| Reply::Send(message::refuse(q, OptRcode::NOTAUTH, self.recursion)))
    }

    /// `zone` whole, as AXFR sends it (an IXFR answered whole too, its question IXFR), made
    /// a message at a time as the connection's output has room.
    fn send_zone(&self, q: &Query<'_>, zone: &Rc<crate::zone::Zone>, peer: IpAddr) -> Reply {
        if zone.soa().is_none() {
            return Reply::Send(message::refuse(q, OptRcode::SERVFAIL, self.recursion));
        }
        Reply::Transfer(ZoneCopy::new(zone.clone(), q.msg, self.recursion, peer))
    }
}

/// An answer as a log line tells it: `NOERROR, 2 answers`.
pub(crate) fn summary(b: &[u8]) -> String {
    let rcode = b.get(3).map_or(0, |f| f & 0xF);
    let an = b.get(6..8).map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
    format!(
        "{}, {an} answers",
        Rcode::checked_from_int(rcode).unwrap_or(Rcode::SERVFAIL)
    )
}

/// The `-v` line of an error answer to a message that is no query we answer: a NOTIFY
/// (RFC 1996) is well formed, and only not acted on (a secondary here refreshes on the SOA's
/// timers), as are the other opcodes.
fn error_line(flags: u16, rcode: Rcode, question: Option<&[u8]>, peer: IpAddr) -> String {
    let opcode = Opcode::from_int(((flags >> 11) & 0xF) as u8);
    let zone = question
        .and_then(|q| Name::from_slice(q.get(..name::name_len(q, 0)?)?).ok())
        .map_or_else(|| "?".into(), |n| n.to_string());
    match opcode {
        Opcode::NOTIFY => format!("NOTIFY for {zone} from {peer}: not acted on (NOTIMP)"),
        Opcode::QUERY => format!("{rcode} to a malformed message from {peer}"),
        op => format!("Opcode {op} for {zone} from {peer}: {rcode}"),
    }
}

/// Whether an answer may be remembered for the next identical query.
enum Cached {
    Yes(Vec<u8>),
    No,
}

/// The query less its id, the name folded to lower case, and how it came: the same key is
/// the same answer as long as the zones stay.
fn memo_key(msg: &[u8], via: Via) -> Option<Box<[u8]>> {
    if msg.len() < 12 || msg.len() > message::CLASSIC_UDP || msg[2] & 0x80 != 0 {
        return None;
    }
    let n = name::name_len(msg, 12)?;
    let mut k = Vec::with_capacity(msg.len() - 1);
    k.push(via as u8);
    k.extend_from_slice(&msg[2..12]);
    k.extend(msg[12..12 + n].iter().map(u8::to_ascii_lowercase));
    k.extend_from_slice(&msg[12 + n..]);
    Some(k.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notify_is_logged_as_a_notify_not_as_malformed() {
        let peer = IpAddr::from([127, 0, 0, 1]);
        let q = b"\x07example\x03com\x00\x00\x06\x00\x01";
        assert_eq!(
            error_line(0x2400, Rcode::NOTIMP, Some(q), peer),
            "NOTIFY for example.com from 127.0.0.1: not acted on (NOTIMP)"
        );
        assert_eq!(
            error_line(0x0800, Rcode::NOTIMP, Some(q), peer),
            "Opcode IQUERY(1) for example.com from 127.0.0.1: NOTIMP"
        );
        assert_eq!(
            error_line(0x0000, Rcode::FORMERR, None, peer),
            "FORMERR to a malformed message from 127.0.0.1"
        );
        assert_eq!(
            error_line(0x2800, Rcode::NOTIMP, Some(b"\x07exa"), peer),
            "Opcode UPDATE(5) for ? from 127.0.0.1: NOTIMP"
        );
    }
}
