//! The message handling as a whole, without sockets: query bytes in, answer bytes out, read
//! back with `domain`'s parser.

use std::io::Write;
use std::net::IpAddr;
use std::rc::Rc;

use domain::base::iana::{Rcode, Rtype};
use domain::base::{Message, ParsedName};
use domain::rdata::AllRecordData;

use crate::hosts::Hosts;
use crate::lookup::Store;
use crate::message::OUR_PAYLOAD;
use crate::responder::{Reply, Responder, Via};
use crate::zonefile;

pub(crate) const ZONE: &str = "\
$ORIGIN example.com.
$TTL 300
@        IN SOA ns1 hostmaster 2024010101 3600 600 86400 60
         IN NS  ns1
         IN NS  ns2.example.net.
         IN MX  10 mail
         IN TXT \"v=spf1 -all\"
         IN CAA 0 issue \"letsencrypt.org\"
ns1      IN A   192.0.2.1
mail     IN A   192.0.2.2
mail     IN AAAA 2001:db8::2
www      IN CNAME web
web      IN A   192.0.2.3
alias    IN CNAME www
away     IN CNAME www.example.org.
dangling IN CNAME nowhere
_sip._tcp IN SRV 0 5 5060 sip
sip      IN A   192.0.2.4
*.wild   IN A   192.0.2.5
*.wild   IN TXT \"wild\"
a.b.c    IN A   192.0.2.6
sub      IN NS  ns.sub
ns.sub   IN A   192.0.2.53
4.2.0.192.in-addr.arpa. IN PTR sip
big      IN TXT \"0123456789012345678901234567890123456789012345678901234567890123456789\"
";

/// The big name gets 40 TXT records: about 3 KB, over any UDP limit.
fn zone_text() -> String {
    let mut z = ZONE.replace("4.2.0.192.in-addr.arpa. IN PTR sip\n", "");
    for i in 0..40 {
        z.push_str(&format!("big IN TXT \"record {i:02} 0123456789012345678901234567890123456789012345678901234567890\"\n"));
    }
    z
}

pub(crate) fn store() -> Store {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("example.com");
    std::fs::File::create(&p)
        .unwrap()
        .write_all(zone_text().as_bytes())
        .unwrap();
    let mut s = Store::default();
    s.add_zone(Rc::new(zonefile::load(&p).unwrap()));
    let rev = d.path().join("2.0.192.in-addr.arpa");
    std::fs::write(
        &rev,
        "@ SOA ns1.example.com. hm.example.com. 1 2 3 4 5\n@ NS ns1.example.com.\n4 PTR sip.example.com.\n",
    )
    .unwrap();
    s.add_zone(Rc::new(zonefile::load(&rev).unwrap()));
    s.hosts = Some(Rc::new(Hosts::parse(
        "192.0.2.80 host.local\n2001:db8::80 host.local\n",
    )));
    s
}

pub(crate) fn query(name: &str, qtype: Rtype, edns: Option<u16>) -> Vec<u8> {
    let mut m = vec![
        0xAB,
        0xCD,
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        u8::from(edns.is_some()),
    ];
    m.extend_from_slice(crate::name::parse(name).unwrap().as_slice());
    m.extend_from_slice(&qtype.to_int().to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    if let Some(size) = edns {
        m.extend_from_slice(&[0, 0, 41]);
        m.extend_from_slice(&size.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    m
}

/// An answer read back: flags, and each section as `owner TYPE data` lines.
#[derive(Debug)]
pub(crate) struct Read {
    pub rcode: Rcode,
    pub aa: bool,
    pub tc: bool,
    pub ra: bool,
    pub id: u16,
    pub answer: Vec<String>,
    pub authority: Vec<String>,
    pub additional: Vec<String>,
    pub opt: Option<u16>,
    pub len: usize,
}

pub(crate) fn read(bytes: &[u8]) -> Read {
    let m = Message::from_octets(bytes).expect("a message");
    let h = m.header();
    let sections = m.sections().expect("sections");
    let lines = |sec: domain::base::message::RecordSection<'_, &[u8]>| -> Vec<String> {
        sec.filter_map(|r| {
            let r = r.expect("a record");
            if r.rtype() == Rtype::OPT {
                return None;
            }
            let rec = r
                .into_any_record::<AllRecordData<&[u8], ParsedName<&[u8]>>>()
                .expect("record data");
            Some(format!(
                "{} {} {} {}",
                rec.owner().to_string().to_lowercase(),
                rec.ttl().as_secs(),
                rec.rtype(),
                rec.data()
            ))
        })
        .collect()
    };
    Read {
        rcode: h.rcode(),
        aa: h.aa(),
        tc: h.tc(),
        ra: h.ra(),
        id: h.id(),
        answer: lines(sections.1),
        authority: lines(sections.2),
        additional: lines(sections.3),
        opt: m.opt().map(|o| o.udp_payload_size()),
        len: bytes.len(),
    }
}

const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));

fn ask_via(r: &mut Responder, name: &str, qtype: Rtype, via: Via, edns: Option<u16>) -> Read {
    match r.respond(&query(name, qtype, edns), via, PEER) {
        Reply::Send(b) => read(&b),
        other => panic!("{name} {qtype}: {other:?}"),
    }
}

fn ask(r: &mut Responder, name: &str, qtype: Rtype) -> Read {
    ask_via(r, name, qtype, Via::Udp, None)
}

#[test]
fn answers_each_record_type_with_aa() {
    let mut r = Responder::new(store());
    for (name, t, want) in [
        (
            "example.com",
            Rtype::SOA,
            "example.com 300 SOA ns1.example.com. hostmaster.example.com. 2024010101 3600 600 86400 60",
        ),
        (
            "example.com",
            Rtype::NS,
            "example.com 300 NS ns1.example.com.",
        ),
        (
            "example.com",
            Rtype::MX,
            "example.com 300 MX 10 mail.example.com.",
        ),
        (
            "example.com",
            Rtype::TXT,
            "example.com 300 TXT \"v=spf1 -all\"",
        ),
        (
            "example.com",
            Rtype::CAA,
            "example.com 300 CAA 0 issue \"letsencrypt.org\"",
        ),
        (
            "mail.example.com",
            Rtype::AAAA,
            "mail.example.com 300 AAAA 2001:db8::2",
        ),
        (
            "WEB.Example.COM",
            Rtype::A,
            "web.example.com 300 A 192.0.2.3",
        ),
        (
            "_sip._tcp.example.com",
            Rtype::SRV,
            "_sip._tcp.example.com 300 SRV 0 5 5060 sip.example.com",
        ),
        (
            "4.2.0.192.in-addr.arpa",
            Rtype::PTR,
            "4.2.0.192.in-addr.arpa 3600 PTR sip.example.com.",
        ),
        (
            "www.example.com",
            Rtype::CNAME,
            "www.example.com 300 CNAME web.example.com.",
        ),
    ] {
        let a = ask(&mut r, name, t);
        assert_eq!(a.rcode, Rcode::NOERROR, "{name} {t}");
        assert!(a.aa, "{name} {t}");
        assert!(!a.ra, "no recursion offered without -r");
        assert_eq!(a.id, 0xABCD);
        assert!(
            a.answer.iter().any(|l| l == want),
            "{name} {t}: {:?}",
            a.answer
        );
    }
}

#[test]
fn additional_addresses_for_mx_ns_and_srv() {
    let mut r = Responder::new(store());
    let mx = ask(&mut r, "example.com", Rtype::MX);
    assert!(
        mx.additional
            .contains(&"mail.example.com 300 A 192.0.2.2".to_string()),
        "{mx:?}"
    );
    assert!(
        mx.additional
            .contains(&"mail.example.com 300 AAAA 2001:db8::2".to_string())
    );
    let ns = ask(&mut r, "example.com", Rtype::NS);
    assert_eq!(ns.answer.len(), 2);
    assert_eq!(
        ns.additional,
        ["ns1.example.com 300 A 192.0.2.1"],
        "only in-zone targets"
    );
    let srv = ask(&mut r, "_sip._tcp.example.com", Rtype::SRV);
    assert_eq!(srv.additional, ["sip.example.com 300 A 192.0.2.4"]);
}

#[test]
fn cnames_are_followed_within_the_zone() {
    let mut r = Responder::new(store());
    let a = ask(&mut r, "alias.example.com", Rtype::A);
    assert_eq!(
        a.answer,
        [
            "alias.example.com 300 CNAME www.example.com.",
            "www.example.com 300 CNAME web.example.com.",
            "web.example.com 300 A 192.0.2.3"
        ]
    );
    assert!(a.aa);
    let away = ask(&mut r, "away.example.com", Rtype::A);
    assert_eq!(away.answer, ["away.example.com 300 CNAME www.example.org."]);
    assert_eq!(away.rcode, Rcode::NOERROR);
    let dangling = ask(&mut r, "dangling.example.com", Rtype::A);
    assert_eq!(
        dangling.rcode,
        Rcode::NXDOMAIN,
        "RFC 6604: the last name's code"
    );
    assert_eq!(dangling.answer.len(), 1);
    assert_eq!(dangling.authority.len(), 1, "with the SOA");
}

#[test]
fn negative_answers_carry_the_soa() {
    let mut r = Responder::new(store());
    let nx = ask(&mut r, "nope.example.com", Rtype::A);
    assert_eq!(nx.rcode, Rcode::NXDOMAIN);
    assert!(nx.aa && nx.answer.is_empty());
    // RFC 2308: the SOA's TTL is the lesser of its TTL and MINIMUM.
    assert_eq!(
        nx.authority,
        [
            "example.com 60 SOA ns1.example.com. hostmaster.example.com. 2024010101 3600 600 86400 60"
        ]
    );
    // With EDNS0 too (the OPT record carries the upper bits of the code, not the lower).
    let nx_edns = ask_via(&mut r, "nope.example.com", Rtype::A, Via::Udp, Some(1232));
    assert_eq!(nx_edns.rcode, Rcode::NXDOMAIN);
    assert_eq!(nx_edns.opt, Some(OUR_PAYLOAD));
    let nodata = ask(&mut r, "web.example.com", Rtype::AAAA);
    assert_eq!(nodata.rcode, Rcode::NOERROR);
    assert!(nodata.answer.is_empty());
    assert_eq!(nodata.authority.len(), 1);
    // An empty non-terminal exists: no data, not NXDOMAIN.
    let ent = ask(&mut r, "b.c.example.com", Rtype::A);
    assert_eq!(ent.rcode, Rcode::NOERROR);
    assert!(ent.answer.is_empty());
    assert_eq!(ent.authority.len(), 1);
}

#[test]
fn wildcards_follow_rfc_4592() {
    let mut r = Responder::new(store());
    let w = ask(&mut r, "anything.wild.example.com", Rtype::A);
    assert_eq!(w.answer, ["anything.wild.example.com 300 A 192.0.2.5"]);
    assert!(w.aa);
    let deep_a = ask(&mut r, "a.b.wild.example.com", Rtype::A);
    assert_eq!(deep_a.answer, ["a.b.wild.example.com 300 A 192.0.2.5"]);
    let deep = ask(&mut r, "x.y.wild.example.com", Rtype::TXT);
    assert_eq!(deep.answer, ["x.y.wild.example.com 300 TXT \"wild\""]);
    let nodata = ask(&mut r, "z.wild.example.com", Rtype::MX);
    assert_eq!(nodata.rcode, Rcode::NOERROR);
    assert!(nodata.answer.is_empty());
    // The wildcard does not cover the existing name itself, nor names below other nodes.
    assert_eq!(ask(&mut r, "wild.example.com", Rtype::A).answer.len(), 0);
    assert_eq!(
        ask(&mut r, "x.web.example.com", Rtype::A).rcode,
        Rcode::NXDOMAIN
    );
    // Nor a name under an existing empty non-terminal's sibling.
    assert_eq!(
        ask(&mut r, "q.c.example.com", Rtype::A).rcode,
        Rcode::NXDOMAIN
    );
}

#[test]
fn delegations_are_referrals_with_glue() {
    let mut r = Responder::new(store());
    for name in [
        "sub.example.com",
        "deep.host.sub.example.com",
        "ns.sub.example.com",
    ] {
        let d = ask(&mut r, name, Rtype::A);
        assert_eq!(d.rcode, Rcode::NOERROR, "{name}");
        assert!(!d.aa, "{name}: a referral is not authoritative");
        assert!(d.answer.is_empty(), "{name}");
        assert_eq!(
            d.authority,
            ["sub.example.com 300 NS ns.sub.example.com."],
            "{name}"
        );
        assert_eq!(
            d.additional,
            ["ns.sub.example.com 300 A 192.0.2.53"],
            "{name}"
        );
    }
}

#[test]
fn truncation_over_udp_and_the_whole_answer_over_tcp() {
    let mut r = Responder::new(store());
    let udp = ask(&mut r, "big.example.com", Rtype::TXT);
    assert!(udp.tc);
    assert!(udp.answer.is_empty());
    assert!(udp.len <= 512);
    let edns = ask_via(&mut r, "big.example.com", Rtype::TXT, Via::Udp, Some(4096));
    assert!(
        edns.tc && edns.len <= OUR_PAYLOAD as usize,
        "capped at our payload size"
    );
    assert_eq!(edns.opt, Some(OUR_PAYLOAD));
    let tcp = ask_via(&mut r, "big.example.com", Rtype::TXT, Via::Tcp, None);
    assert!(!tcp.tc);
    assert_eq!(tcp.answer.len(), 41);
    assert!(tcp.len > 2000);
    // A small answer is not truncated, with or without EDNS.
    let small = ask_via(&mut r, "web.example.com", Rtype::A, Via::Udp, Some(512));
    assert!(!small.tc);
    assert_eq!(small.opt, Some(OUR_PAYLOAD));
    assert!(ask(&mut r, "web.example.com", Rtype::A).opt.is_none());
}

#[test]
fn edns_versions_and_odd_questions() {
    let mut r = Responder::new(store());
    let mut q = query("web.example.com", Rtype::A, Some(1232));
    let l = q.len();
    q[l - 5] = 1; // EDNS version 1
    let Reply::Send(b) = r.respond(&q, Via::Udp, PEER) else {
        panic!()
    };
    let m = Message::from_octets(&b[..]).unwrap();
    assert_eq!(m.opt_rcode(), domain::base::iana::OptRcode::BADVERS);
    assert_eq!(ask(&mut r, "example.org", Rtype::A).rcode, Rcode::REFUSED);
    assert_eq!(
        ask(&mut r, "example.com", Rtype::AXFR).rcode,
        Rcode::FORMERR,
        "AXFR over UDP"
    );
    assert_eq!(
        ask(&mut r, "example.com", Rtype::IXFR).rcode,
        Rcode::FORMERR,
        "IXFR without the client's SOA"
    );
    let mut ch = query("version.bind", Rtype::TXT, None);
    let l = ch.len();
    ch[l - 1] = 3; // class CH
    let Reply::Send(b) = r.respond(&ch, Via::Udp, PEER) else {
        panic!()
    };
    assert_eq!(read(&b).rcode, Rcode::REFUSED);
}

#[test]
fn malformed_messages_never_panic() {
    let mut r = Responder::new(store());
    let good = query("web.example.com", Rtype::A, Some(1232));
    let mut sent = 0;
    for cut in 0..good.len() {
        match r.respond(&good[..cut], Via::Udp, PEER) {
            Reply::Drop => assert!(cut < 12),
            Reply::Send(b) => {
                sent += 1;
                assert_eq!(read(&b).rcode, Rcode::FORMERR, "cut at {cut}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(sent > 0);
    // Every byte flipped in turn: an answer or silence, never a panic.
    for i in 0..good.len() {
        for bit in 0..8 {
            let mut m = good.clone();
            m[i] ^= 1 << bit;
            let _ = r.respond(&m, Via::Udp, PEER);
        }
    }
    let mut notify = good.clone();
    notify[2] = 0x20;
    let Reply::Send(b) = r.respond(&notify, Via::Udp, PEER) else {
        panic!()
    };
    assert_eq!(read(&b).rcode, Rcode::NOTIMP);
}

#[test]
fn hosts_file_names_and_pointers() {
    let mut r = Responder::new(store());
    let a = ask(&mut r, "host.local", Rtype::A);
    assert_eq!(a.answer, ["host.local 3600 A 192.0.2.80"]);
    let aaaa = ask(&mut r, "host.local", Rtype::AAAA);
    assert_eq!(aaaa.answer, ["host.local 3600 AAAA 2001:db8::80"]);
    let ptr = ask(&mut r, "80.2.0.192.in-addr.arpa", Rtype::PTR);
    // The reverse zone loaded is authoritative for 2.0.192.in-addr.arpa: it answers first.
    assert_eq!(
        ptr.rcode,
        Rcode::NXDOMAIN,
        "zones come before the hosts file"
    );
    let v6 = crate::hosts::reverse_name("2001:db8::80".parse().unwrap()).to_string();
    let p6 = ask(&mut r, &v6, Rtype::PTR);
    assert_eq!(p6.answer, [format!("{v6} 3600 PTR host.local.")]);
    assert_eq!(ask(&mut r, "other.local", Rtype::A).rcode, Rcode::REFUSED);
}

#[test]
fn answers_are_remembered_per_query_and_forgotten_on_new_zones() {
    let mut r = Responder::new(store());
    let first = ask(&mut r, "web.example.com", Rtype::A);
    assert_eq!(r.memo_len(), 1);
    // Another id and another case: the same answer, this id, this case.
    let mut q = query("WeB.eXample.com", Rtype::A, None);
    q[0] = 0x55;
    let Reply::Send(b) = r.respond(&q, Via::Udp, PEER) else {
        panic!()
    };
    assert_eq!(r.memo_len(), 1, "a hit");
    assert_eq!(&b[..2], &[0x55, 0xCD]);
    assert_eq!(&b[12..12 + 17], &q[12..12 + 17], "the question as asked");
    assert_eq!(read(&b).answer, first.answer);
    r.set_store(Store::default());
    assert_eq!(r.memo_len(), 0);
    assert_eq!(
        ask(&mut r, "web.example.com", Rtype::A).rcode,
        Rcode::REFUSED
    );
}

#[test]
fn zone_transfers_to_loopback_only() {
    let mut r = Responder::new(store());
    let q = query("example.com", Rtype::AXFR, None);
    let Reply::Transfer(msgs) = r.respond(&q, Via::Tcp, PEER) else {
        panic!()
    };
    let msgs: Vec<Vec<u8>> = msgs.collect();
    let mut all = Vec::new();
    for m in &msgs {
        all.extend(read(m).answer);
    }
    assert!(all.first().unwrap().contains(" SOA "));
    assert!(all.last().unwrap().contains(" SOA "));
    assert!(all.iter().any(|l| l == "a.b.c.example.com 300 A 192.0.2.6"));
    assert!(
        all.iter()
            .any(|l| l == "*.wild.example.com 300 TXT \"wild\"")
    );
    let far: IpAddr = "192.0.2.200".parse().unwrap();
    let Reply::Send(b) = r.respond(&q, Via::Tcp, far) else {
        panic!()
    };
    assert_eq!(read(&b).rcode, Rcode::REFUSED);
    r.axfr = crate::responder::AxfrAllow(vec![("192.0.2.0".parse().unwrap(), 24)]);
    assert!(matches!(r.respond(&q, Via::Tcp, far), Reply::Transfer(_)));
    let sub = query("www.example.com", Rtype::AXFR, None);
    let Reply::Send(b) = r.respond(&sub, Via::Tcp, PEER) else {
        panic!()
    };
    assert_eq!(read(&b).rcode, Rcode::NOTAUTH);
}

#[test]
fn pending_secondaries_answer_servfail() {
    let mut s = store();
    s.add_pending(&crate::name::parse("example.net").unwrap());
    let mut r = Responder::new(s);
    assert_eq!(
        ask(&mut r, "www.example.net", Rtype::A).rcode,
        Rcode::SERVFAIL
    );
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes, over UDP or TCP: an answer whose id is the query's, or silence.
        #[test]
        fn any_message_gets_an_answer_or_silence(msg in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut r = Responder::new(store());
            for via in [Via::Udp, Via::Tcp] {
                match r.respond(&msg, via, PEER) {
                    Reply::Send(b) => {
                        prop_assert!(b.len() >= 12);
                        prop_assert_eq!(&b[..2], &msg[..2]);
                    }
                    Reply::Drop => prop_assert!(msg.len() < 12 || msg[2] & 0x80 != 0),
                    Reply::Transfer(_) | Reply::Forward(_) => {}
                }
            }
        }

        /// A valid query with random names and types: parsed back from the answer.
        #[test]
        fn answers_parse_back(label in "[a-z0-9*]{1,20}", t in any::<u16>(), edns in any::<bool>()) {
            let mut r = Responder::new(store());
            let q = query(&format!("{label}.wild.example.com"), Rtype::from_int(t), edns.then_some(1232));
            if let Reply::Send(b) = r.respond(&q, Via::Udp, PEER) {
                prop_assert!(Message::from_octets(&b[..]).is_ok());
                prop_assert!(b.len() <= 1232);
            }
        }
    }

    use crate::fuzz;
    use twistrs_core::testing::mutate::{edits, mutate};

    thread_local! {
        /// Built once per thread: a zone store costs files on disk. The memory of answers
        /// carries over between cases, which exercises it too.
        static RESPONDER: std::cell::RefCell<Responder> = std::cell::RefCell::new(Responder::new(store()));
        static SEEDS: Vec<Vec<u8>> = fuzz::query_seeds();
        static UPSTREAM: std::cell::RefCell<Responder> = std::cell::RefCell::new(Responder::new(store()));
        static TRANSFER: (Vec<u8>, Vec<Vec<u8>>) = fuzz::transfer_seed();
    }

    fn seed(i: proptest::sample::Index) -> (Vec<u8>, Vec<u8>) {
        SEEDS.with(|s| {
            (
                s[i.index(s.len())].clone(),
                s[(i.index(s.len()) + 1) % s.len()].clone(),
            )
        })
    }

    /// `PROPTEST_CASES` if set, else `n`.
    fn cases(n: u32) -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(n)
    }

    // The campaigns of `fuzz.rs` in small form: valid messages a few edits away from valid.
    proptest! {
        // Cheap cases: more of them than the default 256 (PROPTEST_CASES still decides).
        #![proptest_config(ProptestConfig::with_cases(cases(1024)))]
        /// A query a few edits from valid, over UDP and TCP: the answer carries its id, parses
        /// to the last record and fits the client's limit; asked again, the same answer.
        #[test]
        fn mutated_queries_get_well_formed_answers(i in any::<proptest::sample::Index>(), e in edits(6)) {
            let (q, other) = seed(i);
            let msg = mutate(&q, &e, &other);
            RESPONDER.with(|r| -> Result<(), TestCaseError> {
                let mut r = r.borrow_mut();
                for via in [Via::Udp, Via::Tcp] {
                    let first = fuzz::check_respond(&mut r, &msg, via).map_err(TestCaseError::fail)?;
                    let again = fuzz::check_respond(&mut r, &msg, via).map_err(TestCaseError::fail)?;
                    if let (Reply::Send(a), Reply::Send(b)) = (first, again) {
                        prop_assert_eq!(a, b);
                    }
                }
                Ok(())
            })?;
        }

        /// An upstream answer a few edits from valid, over UDP or TCP: the client gets an
        /// answer with its id that parses to the last record, fresh or from the cache.
        #[test]
        fn mutated_upstream_answers_are_relayed_well_formed(
            i in any::<proptest::sample::Index>(),
            e in edits(6),
            tcp in any::<bool>(),
        ) {
            let (q, other) = seed(i);
            let Some(req) = fuzz::forward_req(&q).filter(|f| f.qtype != Rtype::AXFR) else {
                return Ok(());
            };
            let via = if tcp { Via::Tcp } else { Via::Udp };
            UPSTREAM.with(|up| {
                let mut up = up.borrow_mut();
                let other = fuzz::upstream(&mut up, &other, Via::Tcp);
                fuzz::forward_once(&req, |sent| mutate(&fuzz::upstream(&mut up, sent, via), &e, &other), tcp)
            })
            .map_err(TestCaseError::fail)?;
        }

        /// A primary's SOA answer or transfer a few edits from valid: the secondary fails, or
        /// keeps a zone whose answers (its transfer included) parse.
        #[test]
        fn mutated_transfers_keep_only_zones_that_can_be_served(
            e in edits(6),
            soa_or_transfer in any::<bool>(),
        ) {
            let (soa, msgs) = TRANSFER.with(Clone::clone);
            let r = if soa_or_transfer {
                fuzz::run_transfer(&mutate(&soa, &e, &msgs[0]), &msgs)
            } else {
                let m: Vec<Vec<u8>> = msgs.iter().map(|m| mutate(m, &e, &soa)).collect();
                fuzz::run_transfer(&soa, &m)
            };
            r.map_err(TestCaseError::fail)?;
        }
    }
}
