//! The dns plugin's answers where an interop audit against BIND and NSD found twistrs apart:
//! CNAME loops, DNAME, IXFR, the DO bit, TC and class ANY headers, malformed EDNS, NOTIFY's
//! log line. With dig and raw datagrams on 127.0.0.1.

use std::time::Duration;

use crate::dns::{Dns, answers, raw_udp, wait_log};

const ZONE: &str = "\
$ORIGIN dn.test.
$TTL 300
@ SOA ns h 5 1 1 600 60
@ NS ns
ns A 192.0.2.1
self CNAME self
a CNAME b
b CNAME a
*.w CNAME next.w
d 120 DNAME t.dn.test.
host.t A 192.0.2.2
long DNAME aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc.dn.test.
";

/// The zone with a name of 40 TXT records (about 3 KB: over any UDP size).
fn zone() -> String {
    let mut z = ZONE.to_string();
    for i in 0..40 {
        z.push_str(&format!(
            "big TXT \"record {i:02} 0123456789012345678901234567890123456789012345678901234567\"\n"
        ));
    }
    z
}

fn server() -> Dns {
    Dns::start(
        &[("dn.test", &zone())],
        &["--bindzone", "{dir}/dn.test", "-v"],
    )
}

/// Status line and answer section of `dig +norec ARGS`.
fn ask(d: &Dns, args: &[&str]) -> (String, Vec<String>) {
    let mut all = vec!["+norec", "+noall", "+comments", "+answer"];
    all.extend_from_slice(args);
    let out = d.dig(&all);
    let status = out
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map_or_else(String::new, |s| s.split(',').next().unwrap_or("").into());
    (status, answers(&out))
}

/// Loops end at the first name met again, each CNAME once, NOERROR (NSD's answer); before,
/// the same records came 8 times.
#[test]
fn dns_cname_loops_answer_each_cname_once() {
    let d = server();
    for (name, want) in [
        (
            "self.dn.test",
            vec!["self.dn.test. 300 IN CNAME self.dn.test."],
        ),
        (
            "a.dn.test",
            vec![
                "a.dn.test. 300 IN CNAME b.dn.test.",
                "b.dn.test. 300 IN CNAME a.dn.test.",
            ],
        ),
        (
            "x.w.dn.test",
            vec![
                "x.w.dn.test. 300 IN CNAME next.w.dn.test.",
                "next.w.dn.test. 300 IN CNAME next.w.dn.test.",
            ],
        ),
    ] {
        let (status, got) = ask(&d, &[name, "A"]);
        assert_eq!(status, "NOERROR", "{name}");
        assert_eq!(got, want, "{name}");
    }
}

/// RFC 6672: a name below a DNAME gets the DNAME, a CNAME made from it, and the target's
/// records; a new name over 255 bytes is YXDOMAIN. Before: NXDOMAIN.
#[test]
fn dns_dname_is_followed() {
    let d = server();
    let (status, got) = ask(&d, &["host.d.dn.test", "A"]);
    assert_eq!(status, "NOERROR");
    assert_eq!(
        got,
        [
            "d.dn.test. 120 IN DNAME t.dn.test.",
            "host.d.dn.test. 120 IN CNAME host.t.dn.test.",
            "host.t.dn.test. 300 IN A 192.0.2.2",
        ]
    );
    let long = format!("{}.x.long.dn.test", "q".repeat(60));
    let (status, got) = ask(&d, &[&long, "A"]);
    assert_eq!(status, "YXDOMAIN");
    assert_eq!(got.len(), 1, "the DNAME alone: {got:?}");
}

/// A secondary (of a twistrs primary) answers from its copy with the same synthesis.
#[test]
fn dns_dname_is_followed_in_a_secondary_zone() {
    let p = server();
    let s = Dns::start(
        &[],
        &["--secondary", &format!("127.0.0.1:{}/dn.test", p.port)],
    );
    wait_log(&s, "Transferred zone dn.test serial 5", 30);
    let (status, got) = ask(&s, &["host.d.dn.test", "A"]);
    assert_eq!(status, "NOERROR");
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[1], "host.d.dn.test. 120 IN CNAME host.t.dn.test.");
}

/// RFC 1995 without a history: over TCP an older serial gets the whole zone, a current one
/// the SOA alone; over UDP the SOA. Before: NOTIMP, and NSD secondaries fell back to a full
/// AXFR at every refresh.
#[test]
fn dns_ixfr_gets_the_zone_or_the_soa() {
    let d = server();
    let soa = "dn.test. 300 IN SOA ns.dn.test. h.dn.test. 5 1 1 600 60";
    let whole = d.dig(&["+noall", "+answer", "dn.test", "ixfr=4"]);
    let got = answers(&whole);
    assert_eq!(got.first().map(String::as_str), Some(soa), "{whole}");
    assert_eq!(got.last().map(String::as_str), Some(soa), "{whole}");
    assert!(
        got.iter()
            .any(|l| l == "host.t.dn.test. 300 IN A 192.0.2.2"),
        "{whole}"
    );
    for serial in ["ixfr=5", "ixfr=6"] {
        let out = d.dig(&["+noall", "+answer", "dn.test", serial]);
        assert_eq!(answers(&out), [soa], "TCP {serial}");
    }
    let out = d.dig(&["+notcp", "+noall", "+answer", "dn.test", "ixfr=4"]);
    assert_eq!(answers(&out), [soa], "UDP");
    // As AXFR: NOTAUTH below the apex.
    let out = d.dig(&["+noall", "+comments", "host.t.dn.test", "ixfr=4"]);
    assert!(out.contains("status: NOTAUTH"), "{out}");
    assert!(
        d.srv
            .log_contains("dn.test IXFR from 127.0.0.1: a transfer of serial 5, sending"),
        "{:?}",
        d.srv.lines()
    );
}

/// RFC 3225 3: the DO bit is copied. A truncated answer keeps AA (and its rcode), as BIND's
/// and NSD's; an answer to QCLASS * has no AA (RFC 6895 3.2, as NSD).
#[test]
fn dns_do_bit_tc_and_class_any_headers() {
    let d = server();
    let out = d.dig(&["+norec", "+dnssec", "dn.test", "SOA"]);
    assert!(out.contains("; EDNS: version: 0, flags: do;"), "{out}");
    let out = d.dig(&["+norec", "dn.test", "SOA"]);
    assert!(out.contains("; EDNS: version: 0, flags:;"), "{out}");
    let out = d.dig(&["+norec", "+ignore", "big.dn.test", "TXT"]);
    assert!(out.contains("flags: qr aa tc;"), "{out}");
    let out = d.dig(&["+norec", "-c", "ANY", "host.t.dn.test", "A"]);
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains("flags: qr;"), "{out}");
}

/// A raw query for host.t.dn.test A with `counts` (QD, AN, NS, AR) and `tail` after the
/// question.
fn raw(counts: [u8; 4], tail: &[u8]) -> Vec<u8> {
    let mut m = vec![
        0x12, 0x34, 0, 0, 0, counts[0], 0, counts[1], 0, counts[2], 0, counts[3],
    ];
    if counts[0] == 1 {
        m.extend_from_slice(b"\x04host\x01t\x02dn\x04test\x00\x00\x01\x00\x01");
    }
    m.extend_from_slice(tail);
    m
}

/// An OPT (payload 1232) with the DO bit `dnssec` and `rdata`.
fn opt(dnssec: bool, rdata: &[u8]) -> Vec<u8> {
    let mut o = vec![0, 0, 41, 4, 0xD0, 0, 0, if dnssec { 0x80 } else { 0 }, 0];
    o.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    o.extend_from_slice(rdata);
    o
}

/// rcode, ANCOUNT, and whether an OPT with DO came back (None: no OPT).
fn shape(a: &[u8]) -> (u8, u16, Option<bool>) {
    let an = u16::from_be_bytes([a[6], a[7]]);
    let ar = u16::from_be_bytes([a[10], a[11]]);
    // Our OPT is the last record: root owner, type 41, then class, TTL (DO in its 3rd byte).
    let opt = (ar > 0 && a.len() >= 11 && a[a.len() - 11..a.len() - 8] == [0, 0, 41])
        .then(|| a[a.len() - 4] & 0x80 != 0);
    (a[3] & 0xF, an, opt)
}

/// FORMERR as BIND and NSD give it: an OPT in the answer section, an EDNS option longer
/// than the OPT; a FORMERR to a message with an OPT carries one (RFC 6891 7). Bytes after
/// the last record are ignored, as BIND and NSD do (before: FORMERR).
#[test]
fn dns_malformed_edns_and_trailing_bytes_as_bind_answers() {
    let d = server();
    let wait = Duration::from_secs(3);
    let get = |m: &[u8]| shape(&raw_udp(d.port, m, wait).expect("an answer"));
    assert_eq!(get(&raw([1, 1, 0, 0], &opt(false, &[]))), (1, 0, None));
    let bad_option = opt(false, &[0, 10, 0, 20, b'a', b'b', b'c', b'd']);
    assert_eq!(get(&raw([1, 0, 0, 1], &bad_option)), (1, 0, None));
    assert_eq!(get(&raw([0, 0, 0, 1], &opt(true, &[]))), (1, 0, Some(true)));
    assert_eq!(get(&raw([1, 0, 0, 0], b"\x01\x02\x03")), (0, 1, None));
    let mut tail = opt(true, &[]);
    tail.extend_from_slice(b"junk");
    let a = raw_udp(d.port, &raw([1, 0, 0, 1], &tail), wait).expect("an answer");
    assert_eq!((a[3] & 0xF, u16::from_be_bytes([a[6], a[7]])), (0, 1));
}

/// A NOTIFY is logged as one (not acted on), still answered NOTIMP; before, as "a malformed
/// message".
#[test]
fn dns_a_notify_is_logged_as_a_notify() {
    let d = server();
    let mut m = raw([1, 0, 0, 0], &[]);
    m[2] = 0x24; // opcode 4, AA
    let a = raw_udp(d.port, &m, Duration::from_secs(3)).expect("an answer");
    assert_eq!(a[3] & 0xF, 4, "NOTIMP");
    wait_log(
        &d,
        "NOTIFY for host.t.dn.test from 127.0.0.1: not acted on (NOTIMP)",
        5,
    );
    assert!(!d.srv.log_contains("malformed"), "{:?}", d.srv.lines());
}
