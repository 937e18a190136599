//! Answers BIND and NSD give and twistrs did not (CNAME loops, DNAME, IXFR, the DO bit,
//! TC and class ANY headers, malformed EDNS): query bytes in, answer bytes out.

use std::net::IpAddr;
use std::rc::Rc;

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};

use crate::lookup::Store;
use crate::responder::{Reply, Responder, Via};
use crate::tests::{Read, query, read, store};
use crate::zonefile;

const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));

/// Loops, DNAMEs and a delegation, in the zone `loop.test`.
const LOOPS: &str = "\
$ORIGIN loop.test.
$TTL 300
@ SOA ns h 5 2 3 600 60
@ NS ns
ns A 192.0.2.1
www A 192.0.2.7
self CNAME self
a CNAME b
b CNAME a
*.w CNAME next.w
d 120 DNAME t.loop.test.
host.t A 192.0.2.2
cn CNAME host.d
loopd DNAME loopd.loop.test.
twice CNAME x.d
x.t CNAME y.d
y.t A 192.0.2.3
long DNAME aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc.loop.test.
ext DNAME example.org.
sub NS ns.sub
ns.sub A 192.0.2.53
tosub DNAME sub.loop.test.
";

fn loops() -> Responder {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("loop.test");
    std::fs::write(&p, LOOPS).unwrap();
    let mut s = Store::default();
    s.add_zone(Rc::new(zonefile::load(&p).unwrap()));
    Responder::new(s)
}

fn send(r: &mut Responder, msg: &[u8], via: Via) -> Vec<u8> {
    match r.respond(msg, via, PEER) {
        Reply::Send(b) => b,
        other => panic!("{other:?}"),
    }
}

fn ask(r: &mut Responder, name: &str, qtype: Rtype) -> Read {
    read(&send(r, &query(name, qtype, None), Via::Udp))
}

#[test]
fn a_cname_loop_answers_each_cname_once() {
    let mut r = loops();
    for (name, want) in [
        (
            "self.loop.test",
            vec!["self.loop.test 300 CNAME self.loop.test."],
        ),
        (
            "a.loop.test",
            vec![
                "a.loop.test 300 CNAME b.loop.test.",
                "b.loop.test 300 CNAME a.loop.test.",
            ],
        ),
        (
            "x.w.loop.test",
            vec![
                "x.w.loop.test 300 CNAME next.w.loop.test.",
                "next.w.loop.test 300 CNAME next.w.loop.test.",
            ],
        ),
    ] {
        let a = ask(&mut r, name, Rtype::A);
        assert_eq!(a.rcode, Rcode::NOERROR, "{name}");
        assert!(a.aa, "{name}");
        assert_eq!(a.answer, want, "{name}");
    }
}

#[test]
fn names_below_a_dname_get_a_synthesised_cname() {
    let mut r = loops();
    let a = ask(&mut r, "Host.D.loop.test", Rtype::A);
    assert_eq!(a.rcode, Rcode::NOERROR);
    assert!(a.aa);
    assert_eq!(
        a.answer,
        [
            "d.loop.test 120 DNAME t.loop.test.",
            // The DNAME's TTL; the owner as asked (lower-cased by `read`), and its labels in the
            // target as BIND writes them.
            "host.d.loop.test 120 CNAME Host.t.loop.test.",
            "host.t.loop.test 300 A 192.0.2.2",
        ]
    );
    // The synthesised name keeps the client's case.
    let b = send(&mut r, &query("Host.D.loop.test", Rtype::A, None), Via::Udp);
    let m = Message::from_octets(&b[..]).unwrap();
    let cname = m.answer().unwrap().nth(1).unwrap().unwrap();
    assert_eq!(cname.owner().to_string(), "Host.D.loop.test");

    // A CNAME into a DNAME, and a DNAME met twice in one chain (its set once).
    let a = ask(&mut r, "cn.loop.test", Rtype::A);
    assert_eq!(a.answer.len(), 4, "{a:?}");
    assert_eq!(a.answer[3], "host.t.loop.test 300 A 192.0.2.2");
    let a = ask(&mut r, "twice.loop.test", Rtype::A);
    assert_eq!(
        a.answer,
        [
            "twice.loop.test 300 CNAME x.d.loop.test.",
            "d.loop.test 120 DNAME t.loop.test.",
            "x.d.loop.test 120 CNAME x.t.loop.test.",
            "x.t.loop.test 300 CNAME y.d.loop.test.",
            "y.d.loop.test 120 CNAME y.t.loop.test.",
            "y.t.loop.test 300 A 192.0.2.3",
        ]
    );

    // A DNAME onto itself: the loop ends, each record once.
    let a = ask(&mut r, "x.loopd.loop.test", Rtype::A);
    assert_eq!(a.rcode, Rcode::NOERROR);
    assert_eq!(
        a.answer,
        [
            "loopd.loop.test 300 DNAME loopd.loop.test.",
            "x.loopd.loop.test 300 CNAME x.loopd.loop.test.",
        ]
    );

    // Out of the zone: the DNAME and the CNAME, not followed. Into a delegation: a referral,
    // AA kept for the synthesised CNAME.
    let a = ask(&mut r, "www.ext.loop.test", Rtype::A);
    assert_eq!(
        a.answer,
        [
            "ext.loop.test 300 DNAME example.org.",
            "www.ext.loop.test 300 CNAME www.example.org.",
        ]
    );
    let a = ask(&mut r, "foo.tosub.loop.test", Rtype::A);
    assert!(a.aa);
    assert_eq!(a.answer.len(), 2);
    assert_eq!(a.authority, ["sub.loop.test 300 NS ns.sub.loop.test."]);

    // A name that ends up nowhere: NXDOMAIN after the CNAME (RFC 6604).
    let a = ask(&mut r, "nothere.d.loop.test", Rtype::A);
    assert_eq!(a.rcode, Rcode::NXDOMAIN);
    assert_eq!(a.answer.len(), 2);

    // The DNAME's own name is not rewritten.
    let a = ask(&mut r, "d.loop.test", Rtype::DNAME);
    assert_eq!(a.answer, ["d.loop.test 120 DNAME t.loop.test."]);
    let a = ask(&mut r, "d.loop.test", Rtype::A);
    assert!(a.answer.is_empty() && a.rcode == Rcode::NOERROR, "{a:?}");
}

#[test]
fn a_synthesised_name_too_long_is_yxdomain() {
    let mut r = loops();
    let name = format!("{}.x.long.loop.test", "q".repeat(60));
    let a = ask(&mut r, &name, Rtype::A);
    assert_eq!(a.rcode, Rcode::YXDOMAIN);
    assert_eq!(a.answer.len(), 1, "the DNAME alone: {a:?}");
    assert!(a.answer[0].contains(" DNAME "));
    let a = ask(&mut r, "x.long.loop.test", Rtype::A);
    assert_eq!(a.rcode, Rcode::NXDOMAIN, "{a:?}");
}

/// `query` with the DO bit set in its OPT.
fn with_do(mut q: Vec<u8>) -> Vec<u8> {
    let l = q.len();
    q[l - 4] |= 0x80;
    q
}

fn dnssec_ok(b: &[u8]) -> Option<bool> {
    Message::from_octets(b)
        .unwrap()
        .opt()
        .map(|o| o.dnssec_ok())
}

#[test]
fn the_do_bit_is_copied_into_the_answer() {
    let mut r = Responder::new(store());
    for (name, t) in [
        ("web.example.com", Rtype::A),
        ("nope.example.com", Rtype::A),
        ("example.org", Rtype::A),
        ("big.example.com", Rtype::TXT),
    ] {
        let b = send(&mut r, &with_do(query(name, t, Some(1232))), Via::Udp);
        assert_eq!(dnssec_ok(&b), Some(true), "{name}");
        let b = send(&mut r, &query(name, t, Some(1232)), Via::Udp);
        assert_eq!(dnssec_ok(&b), Some(false), "{name}");
    }
    let mut notify = with_do(query("example.com", Rtype::SOA, Some(1232)));
    notify[2] = 0x20;
    let b = send(&mut r, &notify, Via::Udp);
    assert_eq!(b[3] & 0xF, 4, "NOTIMP");
    assert_eq!(dnssec_ok(&b), Some(true), "an error carries the OPT too");
}

#[test]
fn a_truncated_answer_keeps_aa_and_its_rcode() {
    let mut r = Responder::new(store());
    let a = ask(&mut r, "big.example.com", Rtype::TXT);
    assert!(a.tc && a.aa, "{a:?}");
    assert_eq!(a.rcode, Rcode::NOERROR);
    // An NXDOMAIN that does not fit: a query name long enough that its SOA goes over 512.
    let long = format!(
        "{}.{}.{}.{}.example.com",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(40)
    );
    let q = query(&long, Rtype::A, None);
    let Some(crate::message::Parsed::Query(pq)) = Some(crate::message::parse(&q)) else {
        panic!()
    };
    let store = store();
    let key = crate::name::key_of(pq.qname);
    let qname = crate::name::from_key(pq.qname).unwrap();
    let crate::lookup::Found::Answer(ans) = store.lookup(&key, &qname, Rtype::A) else {
        panic!()
    };
    assert_eq!(ans.rcode, Rcode::NXDOMAIN);
    let b = crate::message::answer(
        &pq,
        &ans,
        crate::message::Shape {
            limit: q.len() + 20,
            ra: false,
        },
    );
    let a = read(&b);
    assert!(a.tc && a.aa, "{a:?}");
    assert_eq!(a.rcode, Rcode::NXDOMAIN);
}

#[test]
fn qclass_any_is_answered_without_aa() {
    let mut r = Responder::new(store());
    let mut q = query("web.example.com", Rtype::A, None);
    let l = q.len();
    q[l - 1] = 255;
    let a = read(&send(&mut r, &q, Via::Udp));
    assert_eq!(a.rcode, Rcode::NOERROR);
    assert!(!a.aa);
    assert_eq!(a.answer, ["web.example.com 300 A 192.0.2.3"]);
    assert!(ask(&mut r, "web.example.com", Rtype::A).aa, "class IN");
}

/// The OPT record of `query`: owner, type, payload, TTL, RDATA.
fn opt(rdata: &[u8]) -> Vec<u8> {
    let mut o = vec![0, 0, 41, 4, 0xD0, 0, 0, 0, 0];
    o.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    o.extend_from_slice(rdata);
    o
}

#[test]
fn malformed_edns_is_formerr_and_trailing_bytes_are_ignored() {
    let mut r = Responder::new(store());
    let plain = query("web.example.com", Rtype::A, None);

    // An OPT in the answer section.
    let mut m = plain.clone();
    m[7] = 1;
    m.extend(opt(&[]));
    let b = send(&mut r, &m, Via::Udp);
    assert_eq!(read(&b).rcode, Rcode::FORMERR);
    assert_eq!(dnssec_ok(&b), None, "no OPT: BIND's and NSD's answer");

    // An option running past the OPT's RDATA, and one cut in its header.
    for rdata in [&[0, 10, 0, 20, b'a', b'b', b'c', b'd'][..], &[0, 10][..]] {
        let mut m = plain.clone();
        m[11] = 1;
        m.extend(opt(rdata));
        assert_eq!(read(&send(&mut r, &m, Via::Udp)).rcode, Rcode::FORMERR);
    }
    // A whole option (a cookie) is fine.
    let mut m = plain.clone();
    m[11] = 1;
    m.extend(opt(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]));
    assert_eq!(read(&send(&mut r, &m, Via::Udp)).rcode, Rcode::NOERROR);

    // No question but an OPT: FORMERR with an OPT (RFC 6891 7), the DO bit copied.
    let mut m = vec![0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    m.extend(opt(&[]));
    m[12 + 7] = 0x80;
    let b = send(&mut r, &m, Via::Udp);
    assert_eq!(b[3] & 0xF, 1, "FORMERR");
    assert_eq!(dnssec_ok(&b), Some(true));

    // Bytes after the last record: answered, as BIND and NSD do.
    let mut m = query("web.example.com", Rtype::A, Some(1232));
    m.extend_from_slice(&[1, 2, 3]);
    let a = read(&send(&mut r, &m, Via::Udp));
    assert_eq!(a.rcode, Rcode::NOERROR);
    assert_eq!(a.answer, ["web.example.com 300 A 192.0.2.3"]);
}

/// An IXFR query for `zone` whose client holds `serial` (its SOA in the authority
/// section, the owner a pointer to the question's name).
fn ixfr(zone: &str, serial: u32) -> Vec<u8> {
    let mut q = query(zone, Rtype::IXFR, None);
    q[9] = 1;
    q.extend_from_slice(&[0xC0, 12, 0, 6, 0, 1, 0, 0, 0, 0]);
    let mut rdata = vec![0, 0];
    rdata.extend_from_slice(&serial.to_be_bytes());
    rdata.extend_from_slice(&[0; 16]);
    q.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    q.extend(rdata);
    q
}

const SOA: &str =
    "example.com 300 SOA ns1.example.com. hostmaster.example.com. 2024010101 3600 600 86400 60";

#[test]
fn ixfr_is_answered_with_the_soa_or_the_whole_zone() {
    let mut r = Responder::new(store());
    // Over UDP: our SOA, whatever the client's serial.
    for serial in [1, 2024010101, 2024010102] {
        let a = read(&send(&mut r, &ixfr("example.com", serial), Via::Udp));
        assert_eq!(a.rcode, Rcode::NOERROR);
        assert!(a.aa);
        assert_eq!(a.answer, [SOA], "UDP, serial {serial}");
    }
    // Over TCP, a client as new as we are (RFC 1982: 1 is newer than 2024010101 + 2^31).
    for serial in [
        2024010101,
        2024010102,
        2024010101u32.wrapping_add(0x7FFF_FFFF),
    ] {
        let a = read(&send(&mut r, &ixfr("example.com", serial), Via::Tcp));
        assert_eq!(a.answer, [SOA], "TCP, serial {serial}");
    }
    // Older: the zone as AXFR sends it, the question IXFR.
    let Reply::Transfer(msgs) = r.respond(&ixfr("example.com", 7), Via::Tcp, PEER) else {
        panic!("no transfer")
    };
    let msgs: Vec<Vec<u8>> = msgs.collect();
    let m = Message::from_octets(&msgs[0][..]).unwrap();
    assert_eq!(m.sole_question().unwrap().qtype(), Rtype::IXFR);
    let all: Vec<String> = msgs.iter().flat_map(|m| read(m).answer).collect();
    assert_eq!(all.first().map(String::as_str), Some(SOA));
    assert_eq!(all.last().map(String::as_str), Some(SOA));
    assert!(all.iter().any(|l| l == "web.example.com 300 A 192.0.2.3"));

    // As for AXFR: a name that is no apex, a client not allowed; and FORMERR with no SOA.
    let a = read(&send(&mut r, &ixfr("www.example.com", 7), Via::Tcp));
    assert_eq!(a.rcode, Rcode::NOTAUTH);
    let far: IpAddr = "192.0.2.200".parse().unwrap();
    for via in [Via::Udp, Via::Tcp] {
        let Reply::Send(b) = r.respond(&ixfr("example.com", 7), via, far) else {
            panic!()
        };
        assert_eq!(read(&b).rcode, Rcode::REFUSED);
    }
    let a = read(&send(
        &mut r,
        &query("example.com", Rtype::IXFR, None),
        Via::Tcp,
    ));
    assert_eq!(a.rcode, Rcode::FORMERR);
}

/// Every message of a zone transfer asked for with EDNS carries our OPT (RFC 6891 7: a
/// responder answers a request's OPT with its own), the client's DO bit copied, and still
/// fits the transfer's message size; asked without, none does. Before, no message had one.
#[test]
fn every_transfer_message_answers_the_clients_opt() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("big.test");
    let mut text = String::from("@ SOA ns hm 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n");
    for i in 0..2000 {
        text.push_str(&format!("t{i} TXT \"{}\"\n", "x".repeat(100)));
    }
    std::fs::write(&p, text).unwrap();
    let mut s = Store::default();
    s.add_zone(Rc::new(zonefile::load(&p).unwrap()));
    let mut r = Responder::new(s);
    for (edns, dnssec_ok) in [(None, false), (Some(1232), false), (Some(1232), true)] {
        let mut q = query("big.test", Rtype::AXFR, edns);
        if dnssec_ok {
            let n = q.len();
            q[n - 4] = 0x80;
        }
        let Reply::Transfer(msgs) = r.respond(&q, Via::Tcp, PEER) else {
            panic!("no transfer")
        };
        let msgs: Vec<Vec<u8>> = msgs.collect();
        assert!(msgs.len() > 5, "{} messages", msgs.len());
        let mut records = 0;
        for m in &msgs {
            assert!(m.len() <= 16 * 1024, "{} bytes", m.len());
            let got = read(m);
            records += got.answer.len();
            assert_eq!(got.opt.is_some(), edns.is_some(), "{edns:?}");
            let msg = Message::from_octets(&m[..]).unwrap();
            let opt = msg.opt();
            assert_eq!(opt.is_some_and(|o| o.dnssec_ok()), dnssec_ok);
        }
        assert_eq!(records, 2000 + 2 + 2, "every record, the SOA twice");
    }
}

/// The name a forwarded question asks for.
fn forwarded_name(f: &crate::responder::Forward) -> String {
    domain::base::Name::from_slice(&f.question[..f.question.len() - 4])
        .unwrap()
        .to_string()
}

/// With `-r` and RD, a name at or below a delegation of ours is forwarded, as BIND with
/// forwarders and `recursion yes` forwards it (found side by side: BIND relayed the
/// upstream's answer, twistrs sent the referral, which a stub resolver cannot follow;
/// twistd answers NXDOMAIN below the cut); a chain that ends below the cut has its records
/// and its target forwarded. The DS at the cut is the parent's (ours), and without RD or
/// without `-r` the referral stays.
#[test]
fn names_below_a_delegation_are_forwarded_with_recursion_and_rd() {
    let mut r = loops();
    r.recursion = true;
    for (name, qtype) in [
        ("www.sub.loop.test", Rtype::A),
        ("WWW.Sub.loop.test", Rtype::MX),
        ("sub.loop.test", Rtype::NS),
        ("sub.loop.test", Rtype::A),
        ("a.b.sub.loop.test", Rtype::CNAME),
    ] {
        match r.respond(&query(name, qtype, None), Via::Udp, PEER) {
            Reply::Forward(f) => {
                assert_eq!(forwarded_name(&f), name);
                assert!(f.chase.is_none() && f.rd);
            }
            other => panic!("{name} {qtype}: {other:?}"),
        }
    }
    let Reply::Forward(f) = r.respond(&query("x.tosub.loop.test", Rtype::A, None), Via::Udp, PEER)
    else {
        panic!("the chain into the cut is not forwarded")
    };
    assert_eq!(forwarded_name(&f), "x.sub.loop.test");
    let chase = f.chase.as_ref().expect("a chase");
    assert_eq!(chase.records.len(), 2, "the DNAME and its CNAME: {chase:?}");
    let ds = ask(&mut r, "sub.loop.test", Rtype::DS);
    assert!(
        ds.aa && ds.rcode == Rcode::NOERROR && ds.answer.is_empty(),
        "{ds:?}"
    );

    // Without RD, or without -r: the referral.
    let mut norec = query("www.sub.loop.test", Rtype::A, None);
    norec[2] &= !0x01;
    for recursion in [true, false] {
        let mut r = loops();
        r.recursion = recursion;
        for q in [&norec, &query("www.sub.loop.test", Rtype::A, None)] {
            if recursion && q[2] & 0x01 != 0 {
                continue;
            }
            let a = read(&send(&mut r, q, Via::Udp));
            assert_eq!(a.authority, ["sub.loop.test 300 NS ns.sub.loop.test."]);
            assert!(a.answer.is_empty() && !a.aa && a.ra == recursion, "{a:?}");
        }
    }
}
