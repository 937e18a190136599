//! Mutation fuzzing of the network-facing parsers, from valid messages: the responder's
//! queries (UDP and TCP, framed), the forwarder's upstream answers, the secondary's AXFR.
//!
//! The campaigns are `#[ignore]`d and run by hand for as long as `FUZZ_SECS` says (60 s
//! each by default); `FUZZ_SEED` replays one:
//! `FUZZ_SECS=300 cargo test --release -p twistrs-dns fuzz_ -- --ignored --nocapture`.
//! The committed properties (`prop` in `tests.rs`) run the same checks on a few hundred
//! cases in every `cargo test`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use domain::base::iana::Rtype;
use domain::base::{Message, ParsedName};
use domain::rdata::AllRecordData;
use twistrs_core::line::InputBuffer;
use twistrs_core::testing::mutate::{campaign, mutate};

use crate::forward::{Action, Client, Family, Forwarder, ResolvConf};
use crate::lookup::Store;
use crate::message::{self, Parsed};
use crate::responder::{Forward, Reply, Responder, Via};
use crate::secondary::{Outcome, Step, Transfer};
use crate::stream::{self, Frame};
use crate::tests::{query, store};

const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));

/// Every record of every section parses, names and data included: what a client's parser
/// asks of an answer. The id is checked by the caller.
pub(crate) fn well_formed(b: &[u8]) -> Result<(), String> {
    let m = Message::from_octets(b).map_err(|e| format!("header: {e}"))?;
    let (q, an, ns, ar) = m.sections().map_err(|e| format!("question: {e}"))?;
    let questions = q.count();
    if questions != usize::from(m.header_counts().qdcount()) {
        return Err("a question does not parse".into());
    }
    for (i, sec) in [an, ns, ar].into_iter().enumerate() {
        for (n, r) in sec.enumerate() {
            let r = r.map_err(|e| format!("section {i} record {n}: {e}"))?;
            if r.rtype() != Rtype::OPT {
                r.into_any_record::<AllRecordData<&[u8], ParsedName<&[u8]>>>()
                    .map_err(|e| format!("section {i} record {n} data: {e}"))?;
            }
        }
    }
    Ok(())
}

/// The queries the campaigns start from: every kind of answer the test zone gives.
pub(crate) fn query_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (name, t) in [
        ("www.example.com", Rtype::A),
        ("WEB.Example.com", Rtype::AAAA),
        ("big.example.com", Rtype::TXT),
        ("nope.example.com", Rtype::A),
        ("x.wild.example.com", Rtype::TXT),
        ("ns.sub.example.com", Rtype::A),
        ("sub.example.com", Rtype::NS),
        ("alias.example.com", Rtype::A),
        ("dangling.example.com", Rtype::A),
        ("_sip._tcp.example.com", Rtype::SRV),
        ("4.2.0.192.in-addr.arpa", Rtype::PTR),
        ("host.local", Rtype::A),
        ("example.com", Rtype::ANY),
        ("example.com", Rtype::SOA),
        ("example.com", Rtype::MX),
        ("example.com", Rtype::AXFR),
        ("www.example.org", Rtype::A),
    ] {
        seeds.push(query(name, t, None));
        seeds.push(query(name, t, Some(4096)));
    }
    // An OPT with an option, a cookie (RFC 7873): option bytes after the fixed part.
    let mut cookie = query("web.example.com", Rtype::A, Some(1232));
    let n = cookie.len();
    cookie[n - 2..].copy_from_slice(&[0, 12]);
    cookie.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    seeds.push(cookie);
    seeds
}

/// What the responder answers `msg` with, checked: an answer carries the query's id, parses
/// to the last record, and fits the client's UDP limit.
pub(crate) fn check_respond(r: &mut Responder, msg: &[u8], via: Via) -> Result<Reply, String> {
    let reply = r.respond(msg, via, PEER);
    let id = msg.get(..2);
    match &reply {
        Reply::Send(b) => {
            if b.get(..2) != id {
                return Err(format!("id {:?} for {:?}", b.get(..2), id));
            }
            well_formed(b).map_err(|e| format!("{e}: answered {b:02x?}"))?;
            if b[2] & 0x80 == 0 {
                return Err("QR not set".into());
            }
            if via == Via::Udp {
                let limit = match message::parse(msg) {
                    Parsed::Query(q) => q.udp_limit(),
                    _ => message::CLASSIC_UDP,
                };
                if b.len() > limit {
                    return Err(format!("{} bytes over UDP, limit {limit}", b.len()));
                }
            }
        }
        Reply::Transfer(msgs) => {
            for m in &msgs.clone().collect::<Vec<_>>() {
                if m.get(..2) != id {
                    return Err("a transfer message with another id".into());
                }
                well_formed(m).map_err(|e| format!("{e}: transfer {m:02x?}"))?;
            }
        }
        Reply::Drop => {
            if msg.len() >= 12 && msg[2] & 0x80 == 0 {
                return Err("a query dropped".into());
            }
        }
        Reply::Forward(_) => {}
    }
    Ok(reply)
}

#[test]
#[ignore]
fn fuzz_respond() {
    let store = store();
    let seeds = query_seeds();
    let mut r = Responder::new(store);
    let mut fwd = Responder::new(crate::tests::store());
    fwd.recursion = true;
    campaign("respond", |rng| {
        let seed = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let msg = mutate(seed, &rng.edits(6), other);
        let via = if rng.below(2) == 0 {
            Via::Udp
        } else {
            Via::Tcp
        };
        let resp = if rng.below(4) == 0 { &mut fwd } else { &mut r };
        let first = check_respond(resp, &msg, via).map_err(|e| format!("{e}: {msg:02x?}"))?;
        // Again: from the memory of answers now, and the same.
        let again = check_respond(resp, &msg, via).map_err(|e| format!("{e}: {msg:02x?}"))?;
        if let (Reply::Send(a), Reply::Send(b)) = (&first, &again)
            && a != b
        {
            return Err(format!("a remembered answer differs: {msg:02x?}"));
        }
        Ok(())
    });
}

#[test]
#[ignore]
fn fuzz_tcp_stream() {
    let seeds = query_seeds();
    let mut r = Responder::new(store());
    campaign("stream", |rng| {
        let mut wire = Vec::new();
        for _ in 0..1 + rng.below(4) {
            wire.extend(stream::frame(&seeds[rng.below(seeds.len())]));
        }
        let other = stream::frame(&seeds[rng.below(seeds.len())]);
        let wire = mutate(&wire, &rng.edits(4), &other);
        let mut buf = InputBuffer::new();
        let chunk = 1 + rng.below(wire.len().max(1));
        for piece in wire.chunks(chunk) {
            buf.feed(piece);
            loop {
                match stream::next(&mut buf, crate::server::MAX_TCP_QUERY) {
                    Frame::Partial => break,
                    Frame::TooLong(n) if n > crate::server::MAX_TCP_QUERY => return Ok(()),
                    Frame::TooLong(n) => return Err(format!("{n} is not too long")),
                    Frame::Message(m) => {
                        check_respond(&mut r, &m, Via::Tcp)
                            .map_err(|e| format!("{e}: {m:02x?}"))?;
                    }
                }
            }
            if buf.len() > crate::server::MAX_TCP_QUERY + 2 {
                return Err(format!("{} bytes buffered", buf.len()));
            }
        }
        Ok(())
    });
}

fn conf() -> ResolvConf {
    ResolvConf::parse("nameserver 127.0.0.1#5301\noptions timeout:1 attempts:2\n")
}

/// A question to forward, as the responder hands it over.
pub(crate) fn forward_req(msg: &[u8]) -> Option<Forward> {
    let mut r = Responder::new(Store::default());
    r.recursion = true;
    match r.respond(msg, Via::Udp, PEER) {
        Reply::Forward(f) => Some(f),
        _ => None,
    }
}

/// The client's answers among `actions`, checked: its id, fully parsed.
fn check_replies(actions: &[Action], req: &Forward) -> Result<(), String> {
    for a in actions {
        if let Action::Reply { bytes, .. } = a {
            if bytes.get(..2) != Some(&req.id.to_be_bytes()[..]) {
                return Err("a relayed answer with another id".into());
            }
            well_formed(bytes).map_err(|e| format!("relayed: {e}: {bytes:02x?}"))?;
            if bytes.len() > req.limit.max(message::CLASSIC_UDP) {
                return Err(format!("{} bytes, limit {}", bytes.len(), req.limit));
            }
        }
        if let Action::Keep { req, answer } = a {
            let mut c = crate::cache::Cache::new(4);
            let t0 = Instant::now();
            c.store(req, answer.clone(), t0);
            if let Some(b) = c.answer(req, t0 + Duration::from_secs(1)) {
                well_formed(&b).map_err(|e| format!("from the cache: {e}: {b:02x?}"))?;
            }
        }
    }
    Ok(())
}

/// One forwarded question answered by `answer(query we sent)`: the replies checked.
pub(crate) fn forward_once(
    req: &Forward,
    answer: impl FnOnce(&[u8]) -> Vec<u8>,
    tcp: bool,
) -> Result<(), String> {
    let mut f = Forwarder::new(conf());
    let client = Client::Tcp {
        conn: twistrs_core::testing::conn_id(1),
        peer: std::net::Ipv4Addr::LOCALHOST.into(),
    };
    let a = f.start(req.clone(), client);
    let [Action::OpenUdp { token, .. }] = a.as_slice() else {
        return Err(format!("{a:?}"));
    };
    let token = *token;
    let a = f.opened(token, Family::V4, twistrs_core::testing::port_id(1));
    let Some((sent, to)) = a.iter().find_map(|x| match x {
        Action::Send { bytes, to, .. } => Some((bytes.clone(), *to)),
        _ => None,
    }) else {
        return Err(format!("{a:?}"));
    };
    let msg = answer(&sent);
    let a = if tcp {
        f.tcp_answer(token, &msg)
    } else {
        f.datagram(token, Family::V4, to, &msg)
    };
    check_replies(&a, req).map_err(|e| format!("{e}; upstream sent {msg:02x?}"))
}

/// The answer of the test zone's server to what the forwarder sent.
pub(crate) fn upstream(up: &mut Responder, sent: &[u8], via: Via) -> Vec<u8> {
    match up.respond(sent, via, PEER) {
        Reply::Send(b) => b,
        Reply::Transfer(m) => m.collect::<Vec<_>>().concat(),
        _ => Vec::new(),
    }
}

#[test]
#[ignore]
fn fuzz_forwarder() {
    let reqs: Vec<Forward> = query_seeds()
        .iter()
        .filter_map(|q| forward_req(q))
        .filter(|f| f.qtype != Rtype::AXFR)
        .collect();
    let mut up = Responder::new(store());
    let seeds = query_seeds();
    let others: Vec<Vec<u8>> = seeds
        .iter()
        .map(|q| upstream(&mut up, q, Via::Tcp))
        .collect();
    campaign("forwarder", |rng| {
        let req = &reqs[rng.below(reqs.len())];
        let tcp = rng.below(3) == 0;
        let via = if tcp { Via::Tcp } else { Via::Udp };
        let edits = rng.edits(6);
        let other = &others[rng.below(others.len())];
        forward_once(
            req,
            |sent| mutate(&upstream(&mut up, sent, via), &edits, other),
            tcp,
        )
    });
}

/// The messages of a transfer of the test zone, with the SOA answer first: what a secondary
/// with serial 1 reads from a twistrs primary.
pub(crate) fn transfer_seed() -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut primary = Responder::new(store());
    let apex = crate::name::parse("example.com").expect("a name");
    let mut t = Transfer::new(apex, Some(1));
    let soa_q = t.start();
    let Reply::Send(soa) = primary.respond(&soa_q, Via::Tcp, PEER) else {
        panic!("no SOA answer")
    };
    let Step::Send(axfr_q) = t.message(&soa) else {
        panic!("no transfer")
    };
    let Reply::Transfer(msgs) = primary.respond(&axfr_q, Via::Tcp, PEER) else {
        panic!("no transfer")
    };
    let msgs: Vec<Vec<u8>> = msgs.collect();
    (soa, msgs)
}

/// A transfer fed `soa` then `msgs`: it ends, or asks for more; never past the messages.
pub(crate) fn run_transfer(soa: &[u8], msgs: &[Vec<u8>]) -> Result<(), String> {
    let apex = crate::name::parse("example.com").expect("a name");
    let mut t = Transfer::new(apex, Some(1));
    t.start();
    match t.message(soa) {
        Step::Send(_) => {}
        Step::Done(_) => return Ok(()),
        Step::More => return Err("More after the SOA answer".into()),
    }
    for m in msgs {
        match t.message(m) {
            Step::More => {}
            Step::Send(_) => return Err("a question during the transfer".into()),
            Step::Done(Outcome::New(z, _)) => {
                // A copy that the responder can serve: its own transfer parses.
                let mut s = Store::default();
                s.add_zone(std::rc::Rc::new(z));
                let mut r = Responder::new(s);
                for q in query_seeds() {
                    check_respond(&mut r, &q, Via::Tcp)
                        .map_err(|e| format!("{e}; asked {q:02x?}; primary sent {m:02x?}"))?;
                }
                return Ok(());
            }
            Step::Done(_) => return Ok(()),
        }
    }
    Ok(())
}

#[test]
#[ignore]
fn fuzz_secondary() {
    let (soa, msgs) = transfer_seed();
    campaign("secondary", |rng| {
        let mut soa = soa.clone();
        let mut msgs = msgs.clone();
        let edits = rng.edits(6);
        match rng.below(4) {
            0 => soa = mutate(&soa, &edits, &msgs[0]),
            1 => {
                // Messages dropped, repeated or swapped.
                let i = rng.below(msgs.len());
                match rng.below(3) {
                    0 => drop(msgs.remove(i)),
                    1 => msgs.insert(i, msgs[i].clone()),
                    _ => {
                        let j = rng.below(msgs.len());
                        msgs.swap(i, j)
                    }
                }
            }
            _ => {
                let i = rng.below(msgs.len());
                let other = msgs[rng.below(msgs.len())].clone();
                msgs[i] = mutate(&msgs[i], &edits, &other);
            }
        }
        run_transfer(&soa, &msgs)
    });
}
