//! The dns plugin's forwarder (`-r`, `--resolv-conf`) and its cache (`-c`) against
//! upstreams that are twistrs themselves: one with zones, one without (REFUSED), one whose
//! secondary zone never arrives (SERVFAIL). dig asks; nothing else is needed.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use crate::dns::{
    Dns, ScriptPeer, answers, dig, eventually, primary, python_with_dnspython, query,
};
use crate::support::{read_n, skip};

/// A forwarder to `servers` in that order (one try each, `timeout` seconds), with `args`.
fn forwarder(servers: &[u16], timeout: u32, args: &[&str]) -> Dns {
    let mut conf: String = servers
        .iter()
        .map(|p| format!("nameserver 127.0.0.1#{p}\n"))
        .collect();
    conf.push_str(&format!("options timeout:{timeout} attempts:1\n"));
    let mut all = vec!["--resolv-conf", "{dir}/resolv.conf"];
    all.extend_from_slice(args);
    Dns::start(&[("resolv.conf", &conf)], &all)
}

/// A server without zones: REFUSED to every question (logged with -v).
fn refuser() -> Dns {
    Dns::start(&[], &["-v"])
}

/// A server whose only zone, example.com, is a secondary of a closed port: SERVFAIL for
/// its names, for good.
fn failer() -> Dns {
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let spec = format!("127.0.0.1:{closed}/example.com");
    Dns::start(&[], &["--secondary", &spec, "-v"])
}

fn status(out: &str) -> &str {
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("none")
}

/// With resolv.conf naming a server that refuses (or fails) before one that answers, the
/// answer is the second's, as glibc's resolver gets with the same file; when every server
/// refuses or fails, the client gets SERVFAIL, not an upstream's REFUSED. Before, the
/// first server's REFUSED or SERVFAIL was relayed and the second never asked.
#[test]
fn dns_fwd_a_refusing_or_failing_server_hands_over_to_the_next() {
    let up = primary();
    let (refuse, fail) = (refuser(), failer());
    let www = "www.example.com A from";
    assert_eq!(status(&refuse.dig(&["www.example.com", "A"])), "REFUSED");
    assert_eq!(status(&fail.dig(&["www.example.com", "A"])), "SERVFAIL");
    for (first, code) in [(&refuse, "REFUSED"), (&fail, "SERVFAIL")] {
        let fwd = forwarder(&[first.port, up.port], 3, &[]);
        let asked = first.count(www);
        let out = fwd.dig(&[
            "+time=8",
            "+noall",
            "+comments",
            "+answer",
            "www.example.com",
            "A",
        ]);
        assert_eq!(status(&out), "NOERROR", "after a {code}: {out}");
        assert_eq!(
            answers(&out),
            [
                "www.example.com. 300 IN CNAME web.example.com.",
                "web.example.com. 300 IN A 192.0.2.3"
            ]
        );
        eventually(
            "the first server to log the question",
            Duration::from_secs(5),
            || first.count(www) > asked,
        );
    }
    // Every server refuses or fails: SERVFAIL (RA set: we do recurse), both asked.
    let fwd = forwarder(&[refuse.port, fail.port], 3, &[]);
    let before = (refuse.count(www), fail.count(www));
    let out = fwd.dig(&["+time=8", "+noall", "+comments", "www.example.com", "A"]);
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    assert!(out.contains("flags: qr rd ra"), "{out}");
    eventually(
        "both servers to log the question",
        Duration::from_secs(5),
        || refuse.count(www) > before.0 && fail.count(www) > before.1,
    );
}

const NEG_TEST: &str = "\
$ORIGIN neg.test.
$TTL 300
@ 2 SOA ns h 1 2 3 4 2
@ NS ns
ns A 192.0.2.1
cn2nodata 60 CNAME a
a TXT \"x\"
";

const UP_TEST: &str = "\
$ORIGIN up.test.
$TTL 300
@ 300 SOA ns h 1 2 3 4 300
@ NS ns
ns A 192.0.2.1
cn2 2 CNAME nothere
zero 0 A 192.0.2.7
";

/// An answer is kept no longer than its shortest TTL, negative ones no longer than the
/// SOA's too (RFC 2308 5), and a TTL of 0 is not kept: a 60 s CNAME to NODATA whose SOA
/// says 2 s, and a 2 s CNAME to NXDOMAIN whose SOA says 300 s, are both asked again once
/// 2 s passed. Before, they were kept 60 s and 300 s, the CNAME served at TTL 0, and a
/// change upstream hidden meanwhile. Every TTL served from the cache is at least 1.
#[test]
fn dns_fwd_the_cache_keeps_an_answer_for_its_shortest_ttl() {
    let up = Dns::start(
        &[("neg.test", NEG_TEST), ("up.test", UP_TEST)],
        &[
            "--bindzone",
            "{dir}/neg.test",
            "--bindzone",
            "{dir}/up.test",
            "-v",
        ],
    );
    let fwd = forwarder(&[up.port], 2, &["-c"]);
    let asked = |name: &str| up.count(&format!("{name} A from"));
    let nodata = fwd.dig(&[
        "+noall",
        "+comments",
        "+answer",
        "+authority",
        "cn2nodata.neg.test",
        "A",
    ]);
    assert_eq!(status(&nodata), "NOERROR", "{nodata}");
    assert!(
        nodata.contains("CNAME") && nodata.contains("SOA"),
        "{nodata}"
    );
    let nx = fwd.dig(&[
        "+noall",
        "+comments",
        "+answer",
        "+authority",
        "cn2.up.test",
        "A",
    ]);
    assert_eq!(status(&nx), "NXDOMAIN", "{nx}");
    assert!(nx.contains("CNAME") && nx.contains("SOA"), "{nx}");
    for _ in 0..2 {
        fwd.dig(&["zero.up.test", "A"]);
    }
    eventually(
        "the TTL 0 answer asked twice",
        Duration::from_secs(5),
        || asked("zero.up.test") == 2,
    );
    for name in ["cn2nodata.neg.test", "cn2.up.test"] {
        assert_eq!(asked(name), 1, "{name}");
        eventually(
            &format!("{name} asked again"),
            Duration::from_secs(10),
            || {
                let out = fwd.dig(&["+noall", "+answer", "+authority", name, "A"]);
                for rr in answers(&out) {
                    let ttl = rr.split(' ').nth(1).and_then(|t| t.parse::<u32>().ok());
                    assert!(ttl.is_some_and(|t| t >= 1), "{rr} from the cache");
                }
                asked(name) >= 2
            },
        );
    }
}

/// The client's DO bit comes back in the OPT of a forwarded answer, of the same answer
/// from the cache and of the forwarder's SERVFAIL (RFC 3225 3); with -v, a cache hit is
/// logged as one, and a forwarded answer with its code and count, as the zones' are.
/// Before, the OPT's flags were always empty, and a cache hit was logged `forwarded`.
#[test]
fn dns_fwd_the_do_bit_and_the_log_lines_of_cache_hits() {
    let up = primary();
    let fwd = forwarder(&[up.port], 2, &["-c", "-v"]);
    let edns = |out: &str| {
        out.lines()
            .find(|l| l.contains("EDNS:"))
            .unwrap_or("no EDNS line")
            .to_string()
    };
    for round in ["forwarded", "from the cache"] {
        let out = fwd.dig(&["+dnssec", "+noall", "+comments", "www.example.com", "A"]);
        assert_eq!(status(&out), "NOERROR", "{round}: {out}");
        assert!(edns(&out).contains("flags: do;"), "{round}: {}", edns(&out));
        let line = format!("www.example.com A from 127.0.0.1: {round}, NOERROR, 2 answers");
        fwd.srv
            .wait_until(
                |l| l.iter().any(|x| x.contains(&line)),
                Duration::from_secs(5),
            )
            .unwrap_or_else(|| panic!("{line}: {:?}", fwd.srv.lines()));
    }
    assert_eq!(
        up.count("www.example.com A from"),
        1,
        "the second from the cache"
    );
    assert_eq!(fwd.count(": forwarded"), 1, "{:?}", fwd.srv.lines());
    let plain = fwd.dig(&["+noall", "+comments", "www.example.com", "A"]);
    assert!(edns(&plain).contains("flags:;"), "{}", edns(&plain));

    let refuse = refuser();
    let dead = forwarder(&[refuse.port], 2, &[]);
    let out = dig(
        dead.port,
        &["+dnssec", "+noall", "+comments", "www.example.com", "A"],
    );
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    assert!(edns(&out).contains("flags: do;"), "{}", edns(&out));
}

/// An upstream that answers every question with one TXT record saying which of DO and CD
/// the question it got had set, and prints the same for each question.
const BITS_UPSTREAM: &str = r#"
import socket, time
import dns.flags, dns.message, dns.rrset
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(1)
print(s.getsockname()[1], flush=True)
end = time.time() + 120
while time.time() < end:
    try:
        data, peer = s.recvfrom(4096)
    except socket.timeout:
        continue
    q = dns.message.from_wire(data)
    bits = "do=%d cd=%d" % (q.ednsflags & dns.flags.DO != 0, q.flags & dns.flags.CD != 0)
    print(bits, flush=True)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "TXT", '"%s"' % bits))
    s.sendto(r.to_wire(), peer)
"#;

/// A client's DO bit goes up to the forwarder's upstream (a validating client behind the
/// forwarder gets the RRSIGs it asks for, as behind BIND or dnsmasq), and the cache keeps
/// answers to questions with and without DO, and with and without CD, apart. Before, the
/// forwarder's question never had DO, and the first answer kept for a name was given to
/// every client, whatever bits it asked with.
#[test]
fn dns_fwd_the_do_and_cd_bits_go_up_and_key_the_cache() {
    let up = ScriptPeer::start(python_with_dnspython(), BITS_UPSTREAM, &[]);
    let fwd = forwarder(&[up.port], 2, &["-c"]);
    let cases: [(&[&str], &str); 4] = [
        (&[], "do=0 cd=0"),
        (&["+dnssec"], "do=1 cd=0"),
        (&["+cd"], "do=0 cd=1"),
        (&["+dnssec", "+cd"], "do=1 cd=1"),
    ];
    for round in ["forwarded", "from the cache"] {
        for (flags, want) in cases {
            let mut args = vec!["+noall", "+answer", "x.example.org", "TXT"];
            args.extend_from_slice(flags);
            let got = answers(&fwd.dig(&args));
            assert_eq!(got.len(), 1, "{round} {flags:?}: {got:?}");
            assert!(
                got[0].ends_with(&format!("\"{want}\"")),
                "{round} {flags:?}: {got:?}"
            );
        }
    }
    for (_, want) in cases {
        assert_eq!(
            up.count(want),
            1,
            "asked with {want} once, then from the cache"
        );
    }
}

/// `count` upstreams that never answer: UDP sockets nobody reads (the kernel keeps what
/// comes, for `asked` to read afterwards).
fn dead_upstreams(count: usize) -> Vec<UdpSocket> {
    (0..count)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("a UDP port"))
        .collect()
}

/// What a dead upstream was sent: the source of each datagram, and its id.
fn asked(s: &UdpSocket) -> Vec<(SocketAddr, u16)> {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    for _ in 0..100 {
        match s.recv_from(&mut buf) {
            Ok((n, from)) if n >= 2 => got.push((from, u16::from_be_bytes([buf[0], buf[1]]))),
            _ => break,
        }
    }
    got
}

/// A stub client: asks `q` from one port, and asks again with the same bytes (the same id)
/// every second until an answer comes, as glibc's resolver and dig retry; listens for
/// `listen` in all. Each answer, with when it came.
fn stub_ask(port: u16, q: &[u8], listen: Duration) -> Vec<(Duration, Vec<u8>)> {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t0 = Instant::now();
    c.send_to(q, ("127.0.0.1", port)).unwrap();
    let mut next = Duration::from_secs(1);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < listen {
        let now = t0.elapsed();
        let wait = if got.is_empty() {
            next.min(listen)
        } else {
            listen
        };
        c.set_read_timeout(Some(
            wait.saturating_sub(now).max(Duration::from_millis(10)),
        ))
        .unwrap();
        match c.recv_from(&mut buf) {
            Ok((n, _)) => got.push((t0.elapsed(), buf[..n].to_vec())),
            Err(_) if got.is_empty() && t0.elapsed() >= next => {
                c.send_to(q, ("127.0.0.1", port)).unwrap();
                next += Duration::from_secs(1);
            }
            Err(_) => {}
        }
    }
    got
}

/// With three upstreams that never answer and resolv.conf's defaults (2 s a try, 2 rounds),
/// a client gets SERVFAIL within 5 s: the forwarder's tries are spread over its 4 s
/// deadline, every server asked twice. Before, it asked them one after another for 2 s
/// each and answered after 12 s, when glibc's stub (timeout:5) and dig (+time=5) had given
/// up and asked again, each retry starting another 12 s round of tries. The client's
/// retries (the same id from the same port, once a second) join the question: one answer,
/// and the upstreams see one question (one source port, one id), whose answer a second
/// client asking meanwhile gets too.
///
/// The bound is not a measure of speed: 4 s is the deadline the forwarder sets itself, a
/// protocol timer under the 5 s a stub waits, and the extra second is the margin for a
/// loaded machine. Nothing here is quick: the tries wait out their timers.
#[test]
fn dns_fwd_dead_upstreams_are_servfail_within_a_stubs_wait() {
    let dead = dead_upstreams(3);
    let conf: String = dead
        .iter()
        .map(|s| format!("nameserver 127.0.0.1#{}\n", s.local_addr().unwrap().port()))
        .collect();
    let fwd = Dns::start(
        &[("resolv.conf", &conf)],
        &["--resolv-conf", "{dir}/resolv.conf", "-v"],
    );
    let q = query("www.example.com", 1);
    let port = fwd.port;
    // The second client starts half a second off the first's schedule: its retries (once a
    // second) then fall at 2.5 and 3.5 s, not at the 4 s deadline itself, where a retry that
    // arrives just after the SERVFAIL is rightly answered again from the failure remembered
    // (seen once in CI: two answers 8 us apart).
    let other = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let mut q2 = query("WWW.example.com", 1);
        q2[..2].copy_from_slice(&[0x56, 0x78]);
        stub_ask(port, &q2, Duration::from_secs(6))
    });
    let got = stub_ask(fwd.port, &q, Duration::from_secs(7));
    let theirs = other.join().unwrap();
    assert_eq!(
        got.len(),
        1,
        "one answer to a question and its retries: {got:?}"
    );
    let (when, answer) = &got[0];
    assert_eq!(answer[..2], q[..2], "the client's id");
    assert_eq!(answer[3] & 0x0f, 2, "SERVFAIL: {answer:?}");
    assert!(
        *when < Duration::from_secs(5),
        "SERVFAIL after {when:?}: a stub resolver gave up at 5 s"
    );
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(theirs[0].1[..2], [0x56, 0x78]);
    assert_eq!(
        theirs[0].1[3] & 0x0f,
        2,
        "SERVFAIL to the second client too"
    );
    // Every server asked in both rounds, by one question: one port, one id.
    let tries: Vec<Vec<(SocketAddr, u16)>> = dead.iter().map(asked).collect();
    let sources: BTreeSet<_> = tries.iter().flatten().collect();
    assert!(
        tries.iter().all(|t| t.len() == 2) && sources.len() == 1,
        "{tries:?}"
    );
    assert_eq!(
        fwd.count_reaching("forwarded, SERVFAIL", 2),
        2,
        "{:?}",
        fwd.srv.lines()
    );
}

/// An upstream that answers every question with `A 192.0.2.77` after the delay given as its
/// first argument (seconds), and prints `asked` for each; on 127.0.0.1, or the address given
/// as its second.
const SLOW_UPSTREAM: &str = r#"
import socket, sys, threading, time
import dns.message, dns.rrset
delay = float(sys.argv[1])
host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((host, 0))
s.settimeout(1)
print(s.getsockname()[1], flush=True)
def answer(data, peer):
    q = dns.message.from_wire(data)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", "192.0.2.77"))
    s.sendto(r.to_wire(), peer)
end = time.time() + 120
while time.time() < end:
    try:
        data, peer = s.recvfrom(4096)
    except socket.timeout:
        continue
    print("asked", flush=True)
    threading.Timer(delay, answer, (data, peer)).start()
"#;

/// A slow upstream (an answer 1.5 s after each question) beside dead ones is waited for,
/// first or last in resolv.conf: the tries to the dead ones go out meanwhile, and the slow
/// one's answer still counts (BIND asks its forwarders so, 1.2 s apart). Last of three, it
/// is asked 1.33 s in and answers at 2.83 s, within the 4 s deadline.
#[test]
fn dns_fwd_a_slow_upstream_beside_dead_ones_is_waited_for() {
    let slow = ScriptPeer::start(python_with_dnspython(), SLOW_UPSTREAM, &["1.5"]);
    let dead = dead_upstreams(2);
    let d: Vec<String> = dead
        .iter()
        .map(|s| format!("nameserver 127.0.0.1#{}\n", s.local_addr().unwrap().port()))
        .collect();
    let s = format!("nameserver 127.0.0.1#{}\n", slow.port);
    for (order, conf) in [
        ("first", format!("{s}{}{}", d[0], d[1])),
        ("last", format!("{}{}{s}", d[0], d[1])),
    ] {
        let fwd = Dns::start(
            &[("resolv.conf", &conf)],
            &["--resolv-conf", "{dir}/resolv.conf"],
        );
        let name = format!("{order}.example.org");
        let out = fwd.dig(&["+time=8", "+noall", "+comments", "+answer", &name, "A"]);
        assert_eq!(status(&out), "NOERROR", "slow upstream {order}: {out}");
        assert_eq!(answers(&out), [format!("{name}. 300 IN A 192.0.2.77")]);
    }
    for s in &dead {
        assert!(!asked(s).is_empty(), "the dead ones were asked too");
    }
}

const PARENT: &str = "\
$ORIGIN example.test.
$TTL 300
@ SOA ns h 1 3600 600 86400 60
@ NS ns
ns A 127.0.0.1
www A 192.0.2.1
child NS ns.child
ns.child A 127.0.0.1
into CNAME www.child
";

const CHILD: &str = "\
$ORIGIN child.example.test.
$TTL 300
@ SOA ns h 1 3600 600 86400 60
@ NS ns
ns A 127.0.0.1
www A 192.0.2.88
";

/// With -r, a name below a delegation in our zone, asked with RD, gets the upstream's
/// answer, as from BIND with forwarders and `recursion yes` (checked side by side: BIND
/// relayed its forwarder's answer, twistd answers NXDOMAIN below the cut). Before, it got
/// the referral, which a stub resolver cannot follow (glibc's found no address). Without
/// RD, or without -r, the referral stays, for a resolver that iterates.
#[test]
fn dns_fwd_a_name_below_our_delegation_is_forwarded_with_rd() {
    let up = Dns::start(
        &[("child.example.test", CHILD)],
        &["--bindzone", "{dir}/child.example.test", "-v"],
    );
    let conf = format!(
        "nameserver 127.0.0.1#{}\noptions timeout:2 attempts:1\n",
        up.port
    );
    let fwd = Dns::start(
        &[("example.test", PARENT), ("resolv.conf", &conf)],
        &[
            "--bindzone",
            "{dir}/example.test",
            "--resolv-conf",
            "{dir}/resolv.conf",
        ],
    );
    let ask = |d: &Dns, rd: &str, name: &str| {
        d.dig(&[
            rd,
            "+noall",
            "+comments",
            "+answer",
            "+authority",
            name,
            "A",
        ])
    };
    let out = ask(&fwd, "+rec", "www.child.example.test");
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(out.contains("flags: qr rd ra;"), "not authoritative: {out}");
    assert_eq!(
        answers(&out),
        ["www.child.example.test. 300 IN A 192.0.2.88"]
    );
    let out = ask(&fwd, "+rec", "into.example.test");
    assert_eq!(
        answers(&out),
        [
            "into.example.test. 300 IN CNAME www.child.example.test.",
            "www.child.example.test. 300 IN A 192.0.2.88"
        ],
        "{out}"
    );
    assert_eq!(up.count_reaching("www.child.example.test A from", 2), 2);

    let referral = ["child.example.test. 300 IN NS ns.child.example.test."];
    let out = ask(&fwd, "+norec", "www.child.example.test");
    assert_eq!(answers(&out), referral, "without RD: {out}");
    let auth = Dns::start(
        &[("example.test", PARENT)],
        &["--bindzone", "{dir}/example.test"],
    );
    let out = ask(&auth, "+rec", "www.child.example.test");
    assert_eq!(answers(&out), referral, "without -r: {out}");
    assert_eq!(
        up.count("www.child.example.test A from"),
        2,
        "asked no more"
    );
}

/// resolv.conf naming a dead server of one family before a live one of the other (an IPv6
/// router's and an IPv4 one's): the live one is asked from a port of its own family and
/// answers, either way round, as glibc (a socket per server) and twistd (a port per try, of
/// the server's family) get it. Before, the question's one port was the first server's
/// family: an IPv4 server asked from the IPv6 port answered to it from `::ffff:127.0.0.1`,
/// not the address listed, and was ignored; an IPv6 server could not be sent to from the
/// IPv4 port at all. Either way, SERVFAIL after 4 s.
#[test]
fn dns_fwd_servers_of_both_families_are_asked() {
    if UdpSocket::bind("[::1]:0").is_err() {
        skip(
            "dns_fwd_servers_of_both_families_are_asked",
            "no IPv6 loopback",
        );
        return;
    }
    for (dead_at, live_at) in [("[::1]:0", "127.0.0.1"), ("127.0.0.1:0", "::1")] {
        let dead = UdpSocket::bind(dead_at).unwrap();
        let live = ScriptPeer::start(python_with_dnspython(), SLOW_UPSTREAM, &["0", live_at]);
        let live_addr = SocketAddr::new(live_at.parse().unwrap(), live.port);
        let conf = format!(
            "nameserver {}\nnameserver {live_addr}\noptions timeout:1 attempts:1\n",
            dead.local_addr().unwrap()
        );
        let fwd = Dns::start(
            &[("resolv.conf", &conf)],
            &["--resolv-conf", "{dir}/resolv.conf"],
        );
        let out = fwd.dig(&[
            "+time=8",
            "+noall",
            "+comments",
            "+answer",
            "both.example.org",
            "A",
        ]);
        let case = format!("{dead_at} dead, {live_addr} live");
        assert_eq!(status(&out), "NOERROR", "{case}: {out}");
        assert_eq!(
            answers(&out),
            ["both.example.org. 300 IN A 192.0.2.77"],
            "{case}"
        );
        assert_eq!(asked(&dead).len(), 1, "{case}: the dead one asked first");
        assert_eq!(live.count_reaching("asked", 1), 1, "{case}");
    }
}

/// Asks `q` once from a port of its own; the answer and how long it took, or None after
/// `wait`.
fn ask_once(port: u16, q: &[u8], wait: Duration) -> Option<(Duration, Vec<u8>)> {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(wait)).unwrap();
    let t0 = Instant::now();
    c.send_to(q, ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = c.recv_from(&mut buf).ok()?;
    Some((t0.elapsed(), buf[..n].to_vec()))
}

/// A question that ran out the forwarder's deadline (its upstreams dead) gets SERVFAIL at
/// once when asked again within a second, the upstreams not asked, as from BIND
/// (`servfail-ttl`, 1 s): glibc asks again at once after a SERVFAIL, and waited out a second
/// deadline (`getent` took 8 s). After the second, a new chase. With `-c` or without: it is
/// no cache of records. Before, each time a new chase.
#[test]
fn dns_fwd_a_question_that_ran_out_its_deadline_fails_at_once_for_a_second() {
    for args in [&[][..], &["-c"][..]] {
        let dead = dead_upstreams(2);
        let conf: String = dead
            .iter()
            .map(|s| format!("nameserver 127.0.0.1#{}\n", s.local_addr().unwrap().port()))
            .chain(["options timeout:1 attempts:1\n".to_string()])
            .collect();
        let mut all = vec!["--resolv-conf", "{dir}/resolv.conf", "-v"];
        all.extend_from_slice(args);
        let fwd = Dns::start(&[("resolv.conf", &conf)], &all);
        let servfail = |what: &str, got: Option<(Duration, Vec<u8>)>, id: &[u8]| {
            let (took, answer) = got.unwrap_or_else(|| panic!("{args:?} {what}: no answer"));
            assert_eq!(answer[..2], *id, "{args:?} {what}: the client's id");
            assert_eq!(answer[3] & 0x0f, 2, "{args:?} {what}: SERVFAIL {answer:?}");
            took
        };
        let q = query("www.example.com", 1);
        let first = ask_once(fwd.port, &q, Duration::from_secs(6));
        servfail("the first", first, &q[..2]);
        let t_failed = Instant::now();
        let tries = |d: &[UdpSocket]| d.iter().map(|s| asked(s).len()).collect::<Vec<_>>();
        assert_eq!(
            tries(&dead),
            [1, 1],
            "{args:?}: each dead upstream asked once"
        );

        // Asked again at once (another id, another case): SERVFAIL without asking.
        let mut again_q = query("WWW.example.com", 1);
        again_q[..2].copy_from_slice(&[0x43, 0x21]);
        let took = servfail(
            "asked again",
            ask_once(fwd.port, &again_q, Duration::from_secs(6)),
            &[0x43, 0x21],
        );
        assert!(
            took < Duration::from_millis(500),
            "{args:?}: {took:?}, the deadline (2 s) waited out again"
        );
        assert_eq!(tries(&dead), [0, 0], "{args:?}: no upstream asked again");
        let remembered = "WWW.example.com A from 127.0.0.1: a failure remembered, SERVFAIL";
        assert_eq!(
            fwd.count_reaching(remembered, 1),
            1,
            "{args:?}: {:?}",
            fwd.srv.lines()
        );

        // A second on: a new chase.
        std::thread::sleep(Duration::from_millis(1200).saturating_sub(t_failed.elapsed()));
        let third = ask_once(fwd.port, &again_q, Duration::from_secs(6));
        let took = servfail("a second later", third, &[0x43, 0x21]);
        assert!(took >= Duration::from_secs(1), "{args:?}: {took:?}");
        assert_eq!(tries(&dead), [1, 1], "{args:?}: asked anew");
    }
}

/// A client that pipelines forwarded queries for large answers (a wildcard's 60 KB TXT set
/// upstream, fetched over TCP after the truncated UDP answer) and reads nothing: the server
/// keeps at most 16 of its questions upstream, and takes the next ones as answers leave, so
/// it holds about 16 answers for it. Before, every query read was forwarded at once (up to
/// the forwarder's 1,024 in flight) and every answer written as it came: 18 MB held for
/// such a client of 1,500 queries. Then every answer arrives, whole.
#[test]
fn dns_fwd_pipelined_tcp_queries_for_large_answers_wait_for_the_reader() {
    let mut zone = "$ORIGIN big.test.\n$TTL 300\n@ SOA ns h 1 2 3 4 300\n@ NS ns\nns A 192.0.2.1\n"
        .to_string();
    for i in 0..240 {
        zone.push_str(&format!("*.wild TXT \"{i:04}{}\"\n", "x".repeat(240)));
    }
    let up = Dns::start(&[("big.test", &zone)], &["--bindzone", "{dir}/big.test"]);
    let fwd = forwarder(&[up.port], 5, &[]);
    // Each question in flight holds a UDP port of its own until its (truncated) answer
    // comes; a TCP connection then, which lingers after it for a while.
    let udp_ports = || udp_sockets(fwd.srv.pid());
    const N: usize = 400;
    let mut input = Vec::new();
    for i in 0..N {
        let q = query(&format!("n{i}.wild.big.test"), 16);
        input.extend_from_slice(&(q.len() as u16).to_be_bytes());
        input.extend_from_slice(&q);
    }
    // A small receive buffer: the kernel holds little of what the client does not read.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&SocketAddr::from(([127, 0, 0, 1], fwd.port)).into())
        .unwrap();
    let mut c: std::net::TcpStream = sock.into();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // One question first, read whole: the answer is large.
    c.write_all(&input[..input.len() / N]).unwrap();
    let len = read_n(&mut c, 2);
    let size = u16::from_be_bytes([len[0], len[1]]) as usize;
    assert!(size > 60_000, "{size}");
    read_n(&mut c, size);
    let (before, rss_before) = (udp_ports(), fwd.srv.rss_kib());
    c.write_all(&input[input.len() / N..]).unwrap();
    // While nothing is read: the questions upstream at once (each holds a port), and memory.
    let (mut most, mut grew) = (0, 0);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        most = most.max(udp_ports().saturating_sub(before));
        grew = grew.max(fwd.srv.rss_kib().saturating_sub(rss_before));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        most <= 16,
        "{most} UDP ports open upstream at once for one connection's {N} questions"
    );
    assert!(
        grew < 6 * 1024,
        "the server grew by {grew} KiB for {N} unread answers of {size} bytes"
    );
    for i in 1..N {
        let len = read_n(&mut c, 2);
        let msg = read_n(&mut c, u16::from_be_bytes([len[0], len[1]]) as usize);
        assert_eq!((msg.len() > 60_000, msg[3] & 0xF), (true, 0), "answer {i}");
    }
}

/// The UDP sockets process `pid` holds: its descriptors that are sockets listed in its
/// network namespace's `/proc/net/udp` (and `udp6`).
fn udp_sockets(pid: u32) -> usize {
    let mut udp = std::collections::HashSet::new();
    for table in ["udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        // The inode is the tenth column.
        udp.extend(
            text.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(9)?.parse::<u64>().ok()),
        );
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    l.to_str()?
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse::<u64>()
                        .ok()
                })
                .filter(|i| udp.contains(i))
                .count()
        })
        .unwrap_or(0)
}

/// A client that sends forwarded queries over TCP and half-closes at once (`printf ... | nc
/// -N`) gets every answer: they come from upstream after its EOF. Before, the EOF closed the
/// connection once the output had left, and answers still upstream were lost.
#[test]
fn dns_fwd_a_half_closed_tcp_client_gets_the_answers_still_upstream() {
    let up = primary();
    let fwd = forwarder(&[up.port], 3, &[]);
    let names = ["www.example.com", "web.example.com", "mail.example.com"];
    let mut input = Vec::new();
    for n in names {
        let q = query(n, 1);
        input.extend_from_slice(&(q.len() as u16).to_be_bytes());
        input.extend_from_slice(&q);
    }
    let mut c = std::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], fwd.port))).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(&input).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut c, &mut got).unwrap();
    let mut answers = 0;
    let mut at = 0;
    while at + 2 <= got.len() {
        let len = u16::from_be_bytes([got[at], got[at + 1]]) as usize;
        let msg = &got[at + 2..at + 2 + len];
        assert_eq!(msg[3] & 0xF, 0, "NOERROR");
        answers += 1;
        at += 2 + len;
    }
    assert_eq!(
        (answers, at),
        (3, got.len()),
        "every answer, whole, then the end"
    );
}
