//! Zone loading in the dns plugin against dig and dnspython: BIND syntax BIND and NSD accept,
//! signed CNAMEs, and CNAME sets refused, from a file and from a transfer.

use crate::dns::{Dns, answers, fake_primary, wait_log};
use crate::support::*;

/// A server of the zone file `name` holding `text`, with `more` files beside it (`-v`).
fn serve(name: &str, text: &str, more: &[(&str, &str)]) -> Dns {
    let mut files = vec![(name, text)];
    files.extend_from_slice(more);
    let zone = format!("{{dir}}/{name}");
    Dns::start(&files, &["--bindzone", &zone, "-v"])
}

/// `dig +noall +answer NAME TYPE` at `d`, normalised.
fn ask(d: &Dns, name: &str, rtype: &str) -> Vec<String> {
    answers(&d.dig(&["+noall", "+answer", name, rtype]))
}

const SIGNED: &str = "\
$ORIGIN s.test.
$TTL 300
@   SOA ns h 1 1 1 600 60
@   NS ns
ns  A 192.0.2.1
www CNAME ns
www RRSIG CNAME 13 3 300 20300101000000 20200101000000 1 s.test. AAAA
www NSEC ns.s.test. CNAME RRSIG NSEC
";

/// RRSIG and NSEC beside a CNAME (every signed zone with a CNAME has them, RFC 4035 2.5):
/// the file loads, the CNAME is followed, and a secondary copies the zone. Before, the file
/// stopped the start and every transfer failed ("has a CNAME and other data").
#[test]
fn dns_zone_a_signed_cname_is_served_and_copied() {
    let p = serve("s.test", SIGNED, &[]);
    let want = [
        "www.s.test. 300 IN CNAME ns.s.test.",
        "ns.s.test. 300 IN A 192.0.2.1",
    ];
    assert_eq!(ask(&p, "www.s.test", "A"), want);
    let nsec = ask(&p, "www.s.test", "NSEC");
    assert_eq!(
        nsec,
        ["www.s.test. 300 IN NSEC ns.s.test. CNAME RRSIG NSEC"]
    );
    let s = Dns::start(
        &[],
        &["--secondary", &format!("127.0.0.1:{}/s.test", p.port)],
    );
    wait_log(&s, "Transferred zone s.test serial 1", 15);
    assert_eq!(ask(&s, "www.s.test", "A"), want);
    assert_eq!(ask(&s, "www.s.test", "NSEC"), nsec);
}

/// Two CNAMEs at one name stop the start with the file and the second one's line, as BIND
/// and NSD refuse the zone. Before, both were served and BIND could not copy the zone.
#[test]
fn dns_zone_two_cnames_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("two.test");
    std::fs::write(
        &zone,
        "$TTL 300\n@ SOA ns h 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\nt CNAME ns\nt CNAME other.example.\n",
    )
    .unwrap();
    let z = zone.display().to_string();
    let (code, _, err) = run_in(
        dir.path(),
        &["-n", "--pidfile=", "dns", "-p", "0", "--bindzone", &z],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("{z}:6: t.two.test has more than one CNAME record")),
        "{err}"
    );
}

/// A transfer with two CNAMEs at a name fails with a log line that says so, and the copy
/// from before stays; BIND and NSD refuse such a transfer too. Before, it was taken in.
#[test]
fn dns_zone_a_secondary_refuses_two_cnames_and_keeps_its_copy() {
    let p = fake_primary("cnames");
    let s = Dns::start(
        &[],
        &["--secondary", &format!("127.0.0.1:{}/example.com", p.port)],
    );
    let from = format!("from 127.0.0.1:{}", p.port);
    wait_log(
        &s,
        &format!("Transferred zone example.com serial 1 {from}"),
        15,
    );
    wait_log(
        &s,
        &format!(
            "Transfer of zone example.com {from} failed: www.example.com has more than one CNAME record"
        ),
        15,
    );
    assert!(p.has("axfr 2"));
    assert_eq!(
        ask(&s, "www.example.com", "CNAME"),
        ["www.example.com. 300 IN CNAME ns1.example.com."]
    );
    let soa = ask(&s, "example.com", "SOA");
    assert!(
        soa.len() == 1 && soa[0].contains(" 1 1 1 600 60"),
        "{soa:?}"
    );
}

/// TTLs with units, as in RHEL and Fedora's default zone files (`$TTL 3H`, SOA timers
/// `1D 1H 1W 3H`) and in records' TTL fields on either side of the class. Before, the
/// start failed ("expected rtype").
#[test]
fn dns_zone_ttl_units_load() {
    let d = serve(
        "u.test",
        "$TTL 3H\n@ IN SOA ns rname.invalid. ( 1 1D 1H 1W 3H )\n\tNS ns\n\
         ns 1h30m IN A 192.0.2.1\nw IN 1w A 192.0.2.2\n",
        &[],
    );
    assert_eq!(
        ask(&d, "u.test", "SOA"),
        ["u.test. 10800 IN SOA ns.u.test. rname.invalid. 1 86400 3600 604800 10800"]
    );
    assert_eq!(ask(&d, "u.test", "NS"), ["u.test. 10800 IN NS ns.u.test."]);
    assert_eq!(
        ask(&d, "ns.u.test", "A"),
        ["ns.u.test. 5400 IN A 192.0.2.1"]
    );
    assert_eq!(
        ask(&d, "w.u.test", "A"),
        ["w.u.test. 604800 IN A 192.0.2.2"]
    );
}

/// The including file's `$TTL` holds in the included file, and one set there holds after
/// it, as in BIND and NSD. Before, the included records had TTL 3600, in neither file.
#[test]
fn dns_zone_include_carries_the_ttl() {
    let d = serve(
        "i.test",
        "$TTL 5400\n@ SOA ns h 1 2 3 4 600\n@ NS ns\nns A 192.0.2.1\n$INCLUDE inc.db\nafter A 192.0.2.2\n",
        &[("inc.db", "x A 192.0.2.77\n$TTL 42\ny A 192.0.2.78\n")],
    );
    assert_eq!(ask(&d, "x.i.test", "A"), ["x.i.test. 5400 IN A 192.0.2.77"]);
    assert_eq!(ask(&d, "y.i.test", "A"), ["y.i.test. 42 IN A 192.0.2.78"]);
    assert_eq!(
        ask(&d, "after.i.test", "A"),
        ["after.i.test. 42 IN A 192.0.2.2"]
    );
}

/// UTF-8 in a TXT string and in an owner name is served as those bytes, as BIND and NSD
/// load it. Before, the start failed ("bad symbol").
#[test]
fn dns_zone_utf8_in_strings_and_owners() {
    let d = serve(
        "u8.test",
        "$TTL 300\n@ SOA ns h 1 2 3 4 600\n@ NS ns\nns A 192.0.2.1\na TXT \"utf8 é\"\né A 192.0.2.9 ; é\n",
        &[],
    );
    assert_eq!(
        ask(&d, "a.u8.test", "TXT"),
        ["a.u8.test. 300 IN TXT \"utf8 \\195\\169\""]
    );
    assert_eq!(
        ask(&d, "\\195\\169.u8.test", "A"),
        ["\\195\\169.u8.test. 300 IN A 192.0.2.9"]
    );
}

/// A TTL over 2^31 - 1 is served as 0, with a warning naming the file and line (RFC 2181
/// 8; BIND does the same). Before, 4294967295 was served.
#[test]
fn dns_zone_a_ttl_over_the_maximum_is_zero_with_a_warning() {
    let d = serve(
        "m.test",
        "$TTL 300\n@ SOA ns h 1 2 3 4 600\n@ NS ns\nns 4294967295 A 192.0.2.1\n",
        &[],
    );
    assert_eq!(ask(&d, "ns.m.test", "A"), ["ns.m.test. 0 IN A 192.0.2.1"]);
    let want = format!(
        "{}:4: a TTL of 4294967295 is over 2147483647 (RFC 2181 8): read as 0",
        d.path("m.test").display()
    );
    assert!(d.srv.log_contains(&want), "{want}: {:?}", d.srv.lines());
}

/// `$GENERATE` takes a quoted right-hand side as one word and makes it into record text,
/// as BIND does. Before, `"a b c d"` stopped the start and `"v=$ x"` kept its `$`.
#[test]
fn dns_zone_generate_with_a_quoted_right_hand_side() {
    let d = serve(
        "g.test",
        "$TTL 300\n@ SOA ns h 1 2 3 4 600\n@ NS ns\nns A 192.0.2.1\n\
         $GENERATE 1-2 k$ TXT \"a b c d\"\n$GENERATE 1-2 v$ TXT \"v=$ x\"\n",
        &[],
    );
    assert_eq!(
        ask(&d, "k2.g.test", "TXT"),
        ["k2.g.test. 300 IN TXT \"a\" \"b\" \"c\" \"d\""]
    );
    assert_eq!(
        ask(&d, "v1.g.test", "TXT"),
        ["v1.g.test. 300 IN TXT \"v=1\" \"x\""]
    );
}

const MORE_TYPES: &str = "\
$TTL 300
@    SOA ns h 1 1 1 600 60
@    NS ns
ns   A 192.0.2.1
@    SPF \"v=spf1 -all\"
afs  AFSDB 1 db
rt   RT 10 relay.t.test.
kx   KX 10 kx.example.
uri  URI ( 10 1
       \"ftp://ftp1.example.com/public\" )
e48  EUI48 00-00-5e-00-53-2a
e64  EUI64 00-00-5e-ef-10-00-00-2a
loc  LOC 42 21 54 N 71 06 18 W -24m 30m
";

/// SPF, AFSDB, RT, KX, URI, EUI48, EUI64 and LOC in their text forms (a zone file twistd reads,
/// for SPF and AFSDB; BIND and NSD read them all) are served as dig reads them back. Before,
/// each stopped the start with "write it as RFC 3597's TYPEnn \# LEN HEX".
#[test]
fn dns_zone_spf_afsdb_rt_kx_uri_eui_and_loc_are_read_in_their_text_forms() {
    let d = serve("t.test", MORE_TYPES, &[]);
    for (name, rtype, want) in [
        ("t.test", "SPF", "t.test. 300 IN SPF \"v=spf1 -all\""),
        (
            "afs.t.test",
            "AFSDB",
            "afs.t.test. 300 IN AFSDB 1 db.t.test.",
        ),
        ("rt.t.test", "RT", "rt.t.test. 300 IN RT 10 relay.t.test."),
        ("kx.t.test", "KX", "kx.t.test. 300 IN KX 10 kx.example."),
        (
            "uri.t.test",
            "URI",
            "uri.t.test. 300 IN URI 10 1 \"ftp://ftp1.example.com/public\"",
        ),
        (
            "e48.t.test",
            "EUI48",
            "e48.t.test. 300 IN EUI48 00-00-5e-00-53-2a",
        ),
        (
            "e64.t.test",
            "EUI64",
            "e64.t.test. 300 IN EUI64 00-00-5e-ef-10-00-00-2a",
        ),
        (
            "loc.t.test",
            "LOC",
            "loc.t.test. 300 IN LOC 42 21 54.000 N 71 6 18.000 W -24.00m 30m 10000m 10m",
        ),
    ] {
        assert_eq!(ask(&d, name, rtype), [want], "{name} {rtype}");
    }
}

const CERT_TYPES: &str = "\
$TTL 300
@    SOA ns h 1 1 1 600 60
@    NS ns
ns   A 192.0.2.1
dh   DHCID ( AAIBY2/AuCccgoJbsaxcQc9TUapptP69l
             OjxfNuVAA2kjEA= )
sm   SMIMEA 3 1 1 0123456789abcdef
c1   CERT PKIX 12345 RSASHA256 AQID BAU=
c2   CERT iacpkix 1 13 AA==
apl  APL 1:192.168.32.0/21 !2:2001:db8::/32
@    CSYNC 66 3 A NS AAAA
key  KEY ZONE|SIG1 DNSSEC RSASHA256 AwEAAQ==
wks  WKS 192.0.2.1 tcp smtp http 0
key  SIG KEY RSASHA256 3 300 20300101000000 20200101000000 12345 t.test. AQID
";

/// DHCID, SMIMEA, CERT, APL, CSYNC, KEY, SIG and WKS in their text forms are served as dig prints them back, the
/// mnemonics as BIND 9.18's `named-compilezone -F text` wrote them for the same zone.
/// Before, each stopped the start with "write it as RFC 3597's TYPEnn \# LEN HEX".
#[test]
fn dns_zone_rarer_types_are_read_in_their_text_forms() {
    let d = serve("t.test", CERT_TYPES, &[]);
    for (name, rtype, want) in [
        (
            "dh.t.test",
            "DHCID",
            "dh.t.test. 300 IN DHCID AAIBY2/AuCccgoJbsaxcQc9TUapptP69lOjxfNuVAA2kjEA=",
        ),
        (
            "sm.t.test",
            "SMIMEA",
            "sm.t.test. 300 IN SMIMEA 3 1 1 0123456789ABCDEF",
        ),
        (
            "c1.t.test",
            "CERT",
            "c1.t.test. 300 IN CERT PKIX 12345 RSASHA256 AQIDBAU=",
        ),
        (
            "c2.t.test",
            "CERT",
            "c2.t.test. 300 IN CERT IACPKIX 1 ECDSAP256SHA256 AA==",
        ),
        (
            "apl.t.test",
            "APL",
            "apl.t.test. 300 IN APL 1:192.168.32.0/21 !2:2001:db8::/32",
        ),
        ("t.test", "CSYNC", "t.test. 300 IN CSYNC 66 3 A NS AAAA"),
        (
            "key.t.test",
            "KEY",
            "key.t.test. 300 IN KEY 257 3 8 AwEAAQ==",
        ),
        (
            "key.t.test",
            "SIG",
            "key.t.test. 300 IN SIG KEY 8 3 300 20300101000000 20200101000000 12345 t.test. AQID",
        ),
    ] {
        assert_eq!(ask(&d, name, rtype), [want], "{name} {rtype}");
    }
}
