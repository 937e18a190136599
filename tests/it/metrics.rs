//! `--metrics`: the Prometheus exposition on `GET /metrics`, counters matching what was sent,
//! checked by `promtool check metrics` when it is installed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::dns::query as dns_query;
use crate::support::*;

const LOCAL: &str = "tcp:0:interface=127.0.0.1";

/// The port a factory's "NAME starting on PORT" line names.
pub(crate) fn port_of(srv: &Server, name: &str) -> u16 {
    port_of_within(srv, name, Duration::from_secs(10))
}

/// [`port_of`], waiting up to `limit` for the line: for starts slower than most (dns zones).
pub(crate) fn port_of_within(srv: &Server, name: &str, limit: Duration) -> u16 {
    let prefix = format!("{name} starting on ");
    srv.wait_until(|l| l.iter().any(|x| x.contains(&prefix)), limit)
        .unwrap_or_else(|| panic!("no {name} listener: {:?}", srv.lines()));
    srv.lines()
        .iter()
        .find_map(|l| {
            let p = &l[l.find(&prefix)? + prefix.len()..];
            p.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no {name} port: {:?}", srv.lines()))
}

/// One raw HTTP/1.1 request; (status line, body).
pub(crate) fn get(port: u16, path: &str) -> (String, String) {
    let mut c = connect(SocketAddr::from(([127, 0, 0, 1], port)));
    send(
        &mut c,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let text = String::from_utf8(read_to_end(&mut c)).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The value of `name`'s series for factory `factory`.
pub(crate) fn value(body: &str, name: &str, factory: &str) -> u64 {
    let prefix = format!("{name}{{factory=\"{factory}\",");
    body.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} for {factory} in:\n{body}"))
}

/// Scrapes until `cond` holds (the server counts a close when it sees it, after the client's).
pub(crate) fn scrape_until(port: u16, cond: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = get(port, "/metrics");
        if cond(&body) || Instant::now() > end {
            return body;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `promtool check metrics` on `body`, or a recorded skip when promtool is not installed.
pub fn promtool_check(test: &str, body: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        skip(
            test,
            "promtool (Debian's prometheus package) is not installed",
        );
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool rejects the exposition: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_count_what_was_sent_and_promtool_accepts_them() {
    let mut srv = Server::start(&[
        "--metrics",
        LOCAL,
        "echo",
        "--listen",
        LOCAL,
        "--max-connections",
        "3",
    ]);
    let (metrics, echo) = (port_of(&srv, "Metrics"), port_of(&srv, "Echo"));
    let echo_addr = SocketAddr::from(([127, 0, 0, 1], echo));

    // Five connections, seven bytes each way.
    for _ in 0..5 {
        let mut c = connect(echo_addr);
        send(&mut c, b"1234567");
        assert_eq!(read_n(&mut c, 7), b"1234567");
    }
    let body = scrape_until(metrics, |b| {
        value(b, "twistrs_connections_open", "Echo") == 0
    });
    assert_eq!(
        value(&body, "twistrs_connections_accepted_total", "Echo"),
        5,
        "{body}"
    );
    assert_eq!(
        value(&body, "twistrs_connections_open", "Echo"),
        0,
        "{body}"
    );
    assert_eq!(
        value(&body, "twistrs_received_bytes_total", "Echo"),
        35,
        "{body}"
    );
    assert_eq!(
        value(&body, "twistrs_sent_bytes_total", "Echo"),
        35,
        "{body}"
    );
    assert_eq!(
        value(&body, "twistrs_connection_limit_pauses_total", "Echo"),
        0,
        "{body}"
    );
    for name in [
        "process_start_time_seconds ",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "twistrs_build_info{version=\"",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{body}"
        );
    }

    // Under load: three held open (the limit), a fourth waits in the backlog; bytes of the
    // live ones count already.
    let mut held: Vec<_> = (0..3)
        .map(|_| {
            let mut c = connect(echo_addr);
            send(&mut c, b"ab");
            assert_eq!(read_n(&mut c, 2), b"ab");
            c
        })
        .collect();
    let waiting = connect(echo_addr);
    let body = scrape_until(metrics, |b| {
        value(b, "twistrs_connection_limit_pauses_total", "Echo") == 1
    });
    assert_eq!(
        value(&body, "twistrs_connections_open", "Echo"),
        3,
        "{body}"
    );
    assert_eq!(
        value(&body, "twistrs_connections_accepted_total", "Echo"),
        8,
        "{body}"
    );
    assert_eq!(
        value(&body, "twistrs_connection_limit_pauses_total", "Echo"),
        1,
        "{body}"
    );
    assert_eq!(
        value(&body, "twistrs_received_bytes_total", "Echo"),
        41,
        "{body}"
    );
    promtool_check(
        "metrics_count_what_was_sent_and_promtool_accepts_them",
        &body,
    );
    held.clear();
    drop(waiting);

    // Only /metrics is served; the scrape connections themselves count too.
    assert_eq!(get(metrics, "/").0, "HTTP/1.1 404 Not Found");
    let (status, body) = get(metrics, "/metrics?x=1");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        value(&body, "twistrs_connections_accepted_total", "Metrics") >= 3,
        "{body}"
    );
    srv.term();
}

#[test]
fn metrics_bound_the_request_head() {
    let mut srv = Server::start(&["--metrics", LOCAL, "echo", "--listen", LOCAL]);
    let metrics = port_of(&srv, "Metrics");
    let mut c = connect(SocketAddr::from(([127, 0, 0, 1], metrics)));
    // A head that never ends: answered 431 and closed once past the limit, not buffered on.
    let _ = c.write_all(format!("GET /metrics HTTP/1.1\r\nX: {}", "a".repeat(20_000)).as_bytes());
    let mut reply = Vec::new();
    let _ = c.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
    srv.term();
}

#[test]
fn metrics_drop_a_head_that_trickles_in() {
    let mut srv = Server::start(&["--metrics", LOCAL, "echo", "--listen", LOCAL]);
    let metrics = port_of(&srv, "Metrics");
    let mut c = connect(SocketAddr::from(([127, 0, 0, 1], metrics)));
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("read timeout");
    // A byte every half second never leaves the connection idle, but the head never ends:
    // it is dropped by the whole-head deadline (10 s), not kept for as long as it trickles.
    let _ = c.write_all(b"GET /metrics HTTP/1.1\r\nX: ");
    let start = Instant::now();
    let mut closed = false;
    while !closed && start.elapsed() < Duration::from_secs(20) {
        let mut byte = [0u8; 1];
        closed = match c.read(&mut byte) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        } || c.write_all(b"a").is_err();
    }
    assert!(
        closed,
        "a trickling head was kept for {:?}",
        start.elapsed()
    );
    srv.term();
}

/// Clients trickling request heads that never end at 127.0.0.1:`port`, as a soak found
/// them: `n` connections, each sending one byte every half second, reconnecting when closed.
pub struct SlowHeads {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl SlowHeads {
    pub fn start(port: u16, n: usize) -> SlowHeads {
        const HEAD: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let thread = std::thread::spawn(move || {
            // Each connection and how much of its head it sent.
            let mut conns: Vec<Option<(TcpStream, usize)>> = (0..n).map(|_| None).collect();
            let mut closed = 0;
            let end = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::SeqCst) && Instant::now() < end {
                let round = Instant::now();
                for slot in conns.iter_mut() {
                    if let Some((c, _)) = slot {
                        let mut b = [0u8; 64];
                        let gone = match c.read(&mut b) {
                            Ok(_) => true,
                            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                        };
                        if gone {
                            closed += 1;
                            *slot = None;
                        }
                    }
                    if slot.is_none() {
                        *slot = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                            .ok()
                            .filter(|c| c.set_nonblocking(true).is_ok())
                            .map(|c| (c, 0));
                    }
                    if let Some((c, sent)) = slot {
                        let byte = HEAD.get(*sent).copied().unwrap_or(b'a');
                        if c.write(&[byte]).is_ok() {
                            *sent += 1;
                        }
                    }
                }
                while !flag.load(Ordering::SeqCst) && round.elapsed() < Duration::from_millis(500) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            closed
        });
        SlowHeads {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops them; how many times one was found closed by the server (and opened again).
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("slow heads thread"))
    }
}

impl Drop for SlowHeads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One scrape that must be answered within `limit` of connecting: the body of a 200, or why
/// there is none.
pub fn scrape_within(port: u16, limit: Duration) -> Result<String, String> {
    let start = Instant::now();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = TcpStream::connect_timeout(&addr, limit).map_err(|e| e.to_string())?;
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(format!("no whole answer within {limit:?}"));
        }
        c.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("after {:?}: {e}", start.elapsed())),
        }
    }
    let text = String::from_utf8_lossy(&text);
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200 OK") => Ok(body.to_string()),
        _ => Err(format!("not a 200: {text}")),
    }
}

#[test]
fn metrics_answer_a_scrape_while_slow_heads_hold_every_slot() {
    let mut srv = Server::start(&["--metrics", LOCAL, "echo", "--listen", LOCAL]);
    let metrics = port_of(&srv, "Metrics");
    // Below the limit nothing is closed early: ten slow heads stay past the grace, and a
    // scrape is answered as ever.
    let few = SlowHeads::start(metrics, 10);
    std::thread::sleep(Duration::from_millis(1500));
    let body = scrape_within(metrics, Duration::from_secs(5)).expect("a scrape, no attack");
    assert_eq!(
        value(&body, "twistrs_connection_limit_closes_total", "Metrics"),
        0,
        "{body}"
    );
    assert_eq!(few.stop(), 0, "a slow head below the limit was closed");

    // A hundred, more than the 64 slots: each scrape still gets in promptly, the slow heads
    // that waited longest being closed for it (without that, it waits in the backlog until
    // the head deadline frees slots, 10 s).
    let many = SlowHeads::start(metrics, 100);
    std::thread::sleep(Duration::from_millis(1500));
    let mut body = String::new();
    for round in 0..3 {
        let asked = Instant::now();
        body = scrape_within(metrics, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("scrape {round} under slow heads: {e}"));
        assert!(body.contains("twistrs_build_info{"), "{body}");
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "{:?}",
            asked.elapsed()
        );
        std::thread::sleep(Duration::from_millis(1500));
    }
    assert!(
        value(&body, "twistrs_connection_limit_closes_total", "Metrics") > 0,
        "{body}"
    );
    assert!(
        value(&body, "twistrs_connections_open", "Metrics") <= 64,
        "{body}"
    );
    assert!(many.stop() > 0, "no slow head was closed");
    promtool_check(
        "metrics_answer_a_scrape_while_slow_heads_hold_every_slot",
        &body,
    );
    srv.term();
}

#[test]
fn web_requests_are_counted_by_method_and_class() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "0123456789").unwrap();
    let mut srv = Server::start(&[
        "--metrics",
        LOCAL,
        "web",
        "--path",
        dir.path().to_str().unwrap(),
        "--listen",
        LOCAL,
    ]);
    let (metrics, web) = (port_of(&srv, "Metrics"), port_of(&srv, "Site"));
    for _ in 0..3 {
        let (status, body) = get(web, "/a.txt");
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("HTTP/1.1 200 OK", "0123456789")
        );
    }
    for _ in 0..2 {
        assert!(get(web, "/missing").0.contains(" 404 "));
    }
    let series =
        |code: &str| format!("twistrs_web_requests_total{{method=\"GET\",code=\"{code}\"}} ");
    // A response is counted once its last byte has left, which the client may see first.
    let body = scrape_until(metrics, |b| {
        b.contains(&format!("{}3\n", series("2xx"))) && b.contains(&format!("{}2\n", series("4xx")))
    });
    assert!(body.contains(&format!("{}3\n", series("2xx"))), "{body}");
    assert!(body.contains(&format!("{}2\n", series("4xx"))), "{body}");
    assert!(
        body.contains("twistrs_web_request_duration_seconds_count 5\n"),
        "{body}"
    );
    let bytes: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("twistrs_web_response_bytes_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no response bytes:\n{body}"));
    assert!(
        bytes >= 30,
        "three 10-byte bodies and two error pages: {bytes}\n{body}"
    );
    promtool_check("web_requests_are_counted_by_method_and_class", &body);
    srv.term();
}

#[test]
fn mail_messages_and_pop3_logins_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let dom = format!("example.com={}", dir.path().join("example.com").display());
    let mut srv = Server::start(&[
        "--metrics",
        LOCAL,
        "mail",
        "-H",
        "mx.test",
        "-d",
        &dom,
        "-u",
        "joe=secret",
        "-s",
        LOCAL,
        "-p",
        LOCAL,
    ]);
    srv.wait_until(|l| count_ports(l) >= 3, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("mail did not start: {:?}", srv.lines()));
    let metrics = port_of(&srv, "Metrics");
    let (smtp, pop3) = (port_of(&srv, "SMTP"), port_of(&srv, "VirtualPOP3"));
    let (code, out, err) = crate::mail::py(
        r#"
import smtplib, poplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
for i in range(2):
    s.sendmail('a@b.example', ['joe@example.com'], 'Subject: %d\r\n\r\nhi\r\n' % i)
try:
    s.sendmail('a@b.example', ['nobody@example.com'], 'Subject: x\r\n\r\nx\r\n')
except smtplib.SMTPRecipientsRefused:
    pass
s.quit()
p = poplib.POP3('127.0.0.1', int(sys.argv[2]), timeout=10)
p.user('joe@example.com'); p.pass_('secret'); p.quit()
p = poplib.POP3('127.0.0.1', int(sys.argv[2]), timeout=10)
p.user('joe@example.com')
try:
    p.pass_('wrong')
except poplib.error_proto:
    pass
print('done')
"#,
        &[&smtp.to_string(), &pop3.to_string()],
    );
    assert_eq!(code, 0, "{out}{err}");
    let body = scrape_until(metrics, |b| {
        b.contains("twistrs_mail_pop3_logins_total{result=\"failed\"} 1\n")
    });
    for want in [
        "twistrs_mail_messages_total{result=\"accepted\",reason=\"\"} 2\n",
        "twistrs_mail_messages_total{result=\"failed\",reason=\"local_error\"} 0\n",
        "twistrs_mail_recipients_refused_total 1\n",
        "twistrs_mail_delivery_seconds_count 2\n",
        "twistrs_mail_pop3_logins_total{result=\"ok\"} 1\n",
        "twistrs_mail_pop3_logins_total{result=\"failed\"} 1\n",
    ] {
        assert!(body.contains(want), "{want} missing:\n{body}");
    }
    promtool_check("mail_messages_and_pop3_logins_are_counted", &body);
    // The data held in memory: a message in the middle of its DATA shows, and once it is on
    // the disk (the delivery thread gives its octets back) the gauge is 0 again.
    assert_eq!(must(&body, "twistrs_mail_data_memory_bytes"), 0, "{body}");
    let mut c = connect(SocketAddr::from(([127, 0, 0, 1], smtp)));
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    crate::mail::until_code(&mut c, "220");
    send(
        &mut c,
        b"HELO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<joe@example.com>\r\n",
    );
    for _ in 0..3 {
        let reply = crate::mail::until_code(&mut c, "250");
        assert!(reply.starts_with("250"), "{reply}");
    }
    send(&mut c, b"DATA\r\n");
    crate::mail::until_code(&mut c, "354");
    send(
        &mut c,
        // Whole lines: a line is counted once it is stored.
        format!(
            "Subject: held\r\n\r\n{}",
            format!("{}\r\n", "y".repeat(78)).repeat(100)
        )
        .as_bytes(),
    );
    let body = scrape_until(metrics, |b| {
        series(b, "twistrs_mail_data_memory_bytes").is_some_and(|v| v >= 5000)
    });
    assert!(
        must(&body, "twistrs_mail_data_memory_bytes") >= 5000,
        "{body}"
    );
    send(&mut c, b".\r\n");
    assert!(crate::mail::until_code(&mut c, "250").contains("250"));
    let body = scrape_until(metrics, |b| {
        series(b, "twistrs_mail_data_memory_bytes") == Some(0)
    });
    assert_eq!(must(&body, "twistrs_mail_data_memory_bytes"), 0, "{body}");
    srv.term();
}

/// Asserts that each series has its value.
fn assert_series<S: AsRef<str>>(body: &str, want: &[(S, i64)]) {
    for (s, want) in want {
        let s = s.as_ref();
        assert_eq!(series(body, s), Some(*want), "{s}:\n{body}");
    }
}

/// The value of the series whose line starts with `series` (name and labels, as rendered).
fn series(body: &str, series: &str) -> Option<i64> {
    let prefix = format!("{series} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

/// `series`'s value, failing the test with the scrape when it is missing.
fn must(body: &str, s: &str) -> i64 {
    series(body, s).unwrap_or_else(|| panic!("no {s} in:\n{body}"))
}

/// A TCP server on 127.0.0.1 that echoes whatever each connection sends, on a thread of its
/// own, for `conns` connections (then the thread ends).
fn echo_backend(conns: usize) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().take(conns) {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    port
}

/// A port nothing listens on (bound, then closed again).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn wire_datagrams_are_counted_per_udp_listener() {
    let mut srv = Server::start(&[
        "--metrics",
        LOCAL,
        "echo",
        "--listen",
        "udp:0:interface=127.0.0.1",
        "--listen",
        LOCAL,
    ]);
    let metrics = port_of(&srv, "Metrics");
    // The UDP listener's line comes first (the order of --listen).
    let udp_port = port_of(&srv, "Echo");
    for msg in [&b"abc"[..], b"defgh"] {
        assert_eq!(udp_ask(udp_port, msg), msg);
    }
    let s = "twistrs_datagrams_received_total{protocol=\"Echo\",listener=\"udp:0:interface=127.0.0.1\"}";
    let body = scrape_until(metrics, |b| series(b, s) == Some(2));
    assert_eq!(must(&body, s), 2, "{body}");
    assert_eq!(
        must(
            &body,
            "twistrs_datagram_received_bytes_total{protocol=\"Echo\",listener=\"udp:0:interface=127.0.0.1\"}"
        ),
        8
    );
    promtool_check("wire_datagrams_are_counted_per_udp_listener", &body);
    srv.term();
}

/// One DNS question as a TCP client sends it (length-prefixed); the answer's rcode.
fn dns_tcp(port: u16, msg: &[u8]) -> u8 {
    let mut c = connect(SocketAddr::from(([127, 0, 0, 1], port)));
    let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    send(&mut c, &framed);
    let len = read_n(&mut c, 2);
    let answer = read_n(&mut c, usize::from(u16::from_be_bytes([len[0], len[1]])));
    answer[3] & 0x0f
}

/// The DNS port of a dns server started with `-p 0` (its TCP factory's line).
fn dns_port(srv: &Server) -> u16 {
    port_of(srv, "DNSServerFactory")
}

#[test]
fn dns_queries_answers_cache_and_reloads_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("example.com");
    std::fs::write(
        &zone,
        "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns hostmaster 1 3600 600 86400 60\n\
         @ IN NS ns\nns IN A 192.0.2.1\nwww IN A 192.0.2.3\n",
    )
    .unwrap();
    let zone_arg = zone.to_str().unwrap();
    let mut primary = Server::start(&dns_args(&["--metrics", LOCAL], &["--bindzone", zone_arg]));
    let (metrics, port) = (port_of(&primary, "Metrics"), dns_port(&primary));
    // Two answers from the zone over UDP (one NXDOMAIN), one over TCP, one AXFR.
    assert_eq!(udp_ask(port, &dns_query("www.example.com", 1))[3] & 0x0f, 0);
    assert_eq!(
        udp_ask(port, &dns_query("nope.example.com", 1))[3] & 0x0f,
        3
    );
    assert_eq!(dns_tcp(port, &dns_query("www.example.com", 1)), 0);
    assert_eq!(dns_tcp(port, &dns_query("example.com", 252)), 0);
    // MAILB is not implemented: this server's own error, not an answer from the zone.
    assert_eq!(udp_ask(port, &dns_query("example.com", 253))[3] & 0x0f, 4);
    // An EDNS version this server does not speak: BADVERS, an extended rcode whose header
    // part is 0 (NOERROR's), so it must be read from the OPT record.
    let mut v1 = dns_query("www.example.com", 1);
    v1[11] = 1;
    v1.extend_from_slice(&[0, 0, 41, 4, 208, 0, 1, 0, 0, 0, 0]);
    let a = udp_ask(port, &v1);
    assert_eq!((a[3] & 0x0f, a[a.len() - 6]), (0, 1), "BADVERS: {a:?}");
    primary.signal(libc::SIGHUP);
    let body = scrape_until(metrics, |b| {
        series(b, "twistrs_dns_reloads_total{result=\"ok\"}") == Some(1)
    });
    assert_series(
        &body,
        &[
            ("twistrs_dns_queries_total{transport=\"udp\"}", 4),
            ("twistrs_dns_queries_total{transport=\"tcp\"}", 2),
            ("twistrs_dns_responses_total{rcode=\"NOERROR\"}", 2),
            ("twistrs_dns_responses_total{rcode=\"NXDOMAIN\"}", 1),
            ("twistrs_dns_answers_total{source=\"zone\"}", 3),
            ("twistrs_dns_answers_total{source=\"error\"}", 2),
            ("twistrs_dns_responses_total{rcode=\"other\"}", 1),
            ("twistrs_dns_responses_total{rcode=\"NOTIMP\"}", 1),
            ("twistrs_dns_answers_total{source=\"forwarded\"}", 0),
            ("twistrs_dns_axfr_served_total", 1),
            ("twistrs_dns_reloads_total{result=\"ok\"}", 1),
            ("twistrs_dns_reloads_total{result=\"failed\"}", 0),
            (
                "twistrs_datagrams_received_total{protocol=\"DNSDatagramProtocol\",listener=\"udp:0:interface=127.0.0.1\"}",
                4,
            ),
        ],
    );
    promtool_check("dns_queries_answers_cache_and_reloads_are_counted", &body);

    // A forwarder with a cache: asked twice, the upstream once; then a dead upstream.
    let conf = dir.path().join("resolv.conf");
    std::fs::write(
        &conf,
        format!("nameserver 127.0.0.1#{port}\noptions timeout:1 attempts:1\n"),
    )
    .unwrap();
    let mut fwd = Server::start(&dns_args(
        &["--metrics", LOCAL],
        &["-c", "--resolv-conf", conf.to_str().unwrap()],
    ));
    let (fmetrics, fport) = (port_of(&fwd, "Metrics"), dns_port(&fwd));
    for _ in 0..2 {
        assert_eq!(
            udp_ask(fport, &dns_query("www.example.com", 1))[3] & 0x0f,
            0
        );
    }
    let body = scrape_until(fmetrics, |b| {
        series(b, "twistrs_dns_answers_total{source=\"cache\"}") == Some(1)
    });
    assert_series(
        &body,
        &[
            ("twistrs_dns_answers_total{source=\"forwarded\"}", 1),
            ("twistrs_dns_answers_total{source=\"cache\"}", 1),
            ("twistrs_dns_cache_misses_total", 1),
            ("twistrs_dns_cache_entries", 1),
            ("twistrs_dns_responses_total{rcode=\"NOERROR\"}", 2),
            ("twistrs_dns_forward_timeouts_total", 0),
        ],
    );
    promtool_check("dns_queries_answers_cache_and_reloads_are_counted", &body);
    fwd.term();

    // A secondary copying the zone (an AXFR served by the primary, a transfer in), and a
    // forwarder whose upstream never answers (a timeout, then SERVFAIL).
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_conf = dir.path().join("dead.conf");
    std::fs::write(
        &dead_conf,
        format!(
            "nameserver 127.0.0.1#{}\noptions timeout:1 attempts:1\n",
            silent.local_addr().unwrap().port()
        ),
    )
    .unwrap();
    let from = format!("127.0.0.1:{port}/example.com");
    let mut other = Server::start(&dns_args(
        &["--metrics", LOCAL],
        &[
            "--secondary",
            &from,
            "--resolv-conf",
            dead_conf.to_str().unwrap(),
        ],
    ));
    let (ometrics, oport) = (port_of(&other, "Metrics"), dns_port(&other));
    assert_eq!(udp_ask(oport, &dns_query("nope.invalid", 1))[3] & 0x0f, 2);
    let body = scrape_until(ometrics, |b| {
        series(b, "twistrs_dns_zone_transfers_in_total{result=\"ok\"}") == Some(1)
    });
    assert_series(
        &body,
        &[
            ("twistrs_dns_zone_transfers_in_total{result=\"ok\"}", 1),
            ("twistrs_dns_zone_transfers_in_total{result=\"failed\"}", 0),
            ("twistrs_dns_forward_timeouts_total", 1),
            ("twistrs_dns_answers_total{source=\"forwarded\"}", 1),
            ("twistrs_dns_responses_total{rcode=\"SERVFAIL\"}", 1),
        ],
    );
    promtool_check("dns_queries_answers_cache_and_reloads_are_counted", &body);
    other.term();
    let body = get(metrics, "/metrics").1;
    assert_eq!(
        series(&body, "twistrs_dns_axfr_served_total"),
        Some(2),
        "{body}"
    );
    primary.term();
}

#[test]
fn procmon_starts_restarts_and_exits_are_counted() {
    let mut srv = Server::start(&[
        "--metrics",
        LOCAL,
        "procmon",
        "-t",
        "0.5",
        "-m",
        "0.1",
        "-M",
        "0.2",
        "--name",
        "flaky",
        "sh",
        "-c",
        "exit 3",
    ]);
    let metrics = port_of(&srv, "Metrics");
    let name = "flaky";
    let errors = format!("twistrs_procmon_exits_total{{process=\"{name}\",status=\"error\"}}");
    let body = scrape_until(metrics, |b| series(b, &errors).is_some_and(|n| n >= 2));
    let starts = must(
        &body,
        &format!("twistrs_procmon_starts_total{{process=\"{name}\"}}"),
    );
    let restarts = must(
        &body,
        &format!("twistrs_procmon_restarts_total{{process=\"{name}\"}}"),
    );
    let ended = must(&body, &errors);
    assert!(ended >= 2, "{body}");
    assert_eq!(restarts, starts - 1, "every start after the first: {body}");
    assert!(
        starts == ended || starts == ended + 1,
        "each start ends once: {body}"
    );
    assert_eq!(
        must(
            &body,
            &format!("twistrs_procmon_exits_total{{process=\"{name}\",status=\"signal\"}}")
        ),
        0
    );
    promtool_check("procmon_starts_restarts_and_exits_are_counted", &body);
    srv.term();

    // A program that stays up: running, started once, never restarted.
    let mut srv = Server::start(&[
        "--metrics",
        LOCAL,
        "procmon",
        "--name",
        "steady",
        "sleep",
        "60",
    ]);
    let metrics = port_of(&srv, "Metrics");
    let running = "twistrs_procmon_running{process=\"steady\"}";
    let body = scrape_until(metrics, |b| series(b, running) == Some(1));
    assert_series(
        &body,
        &[
            (running, 1),
            ("twistrs_procmon_starts_total{process=\"steady\"}", 1),
            ("twistrs_procmon_restarts_total{process=\"steady\"}", 0),
            (
                "twistrs_procmon_exits_total{process=\"steady\",status=\"error\"}",
                0,
            ),
        ],
    );
    srv.term();
}

#[test]
fn inetd_sessions_and_refusals_by_max_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("inetd.conf");
    let services = dir.path().join("services");
    std::fs::write(&services, "").unwrap();
    // The file names a port picked free just before; another test may bind it before inetd
    // does: then the start is tried again on another (bounded), as the inetd tests do.
    let (mut srv, port) = (0..5)
        .find_map(|_| {
            let port = crate::inetd::free_ports(1)[0];
            std::fs::write(
                &conf,
                format!("{port} stream tcp nowait.2 root /bin/echo echo hi\n"),
            )
            .unwrap();
            let mut srv = Server::spawn(&[
                "--metrics",
                LOCAL,
                "inetd",
                "-f",
                conf.to_str().unwrap(),
                "--services",
                services.to_str().unwrap(),
                "--interface",
                "127.0.0.1",
            ]);
            let taken = |l: &[String]| l.iter().any(|x| x.contains("Couldn't listen"));
            srv.wait_until(
                |l| l.iter().filter(|x| x.contains(" starting on ")).count() >= 2 || taken(l),
                Duration::from_secs(10),
            )
            .unwrap_or_else(|| panic!("inetd did not start: {:?}", srv.lines()));
            if taken(&srv.lines()) {
                srv.wait(Duration::from_secs(10));
                return None;
            }
            Some((srv, port))
        })
        .expect("5 ports in a row taken before inetd bound them");
    let metrics = port_of(&srv, "Metrics");
    // Two programs a minute: the third connection is closed unanswered.
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let answers: Vec<Vec<u8>> = (0..3).map(|_| read_to_end(&mut connect(addr))).collect();
    assert_eq!(answers, [b"hi\n".to_vec(), b"hi\n".to_vec(), Vec::new()]);
    let body = scrape_until(metrics, |b| {
        b.lines()
            .any(|l| l.starts_with("twistrs_inetd_children_running{") && l.ends_with(" 0"))
            && b.contains("twistrs_inetd_refused_total{")
    });
    let value_of = |name: &str| -> i64 {
        body.lines()
            .find(|l| l.starts_with(&format!("{name}{{service=")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}:\n{body}"))
    };
    assert_eq!(value_of("twistrs_inetd_sessions_total"), 2, "{body}");
    assert_eq!(value_of("twistrs_inetd_refused_total"), 1, "{body}");
    assert_eq!(value_of("twistrs_inetd_start_failures_total"), 0, "{body}");
    assert_eq!(value_of("twistrs_inetd_children_running"), 0, "{body}");
    promtool_check("inetd_sessions_and_refusals_by_max_are_counted", &body);
    srv.term();
}

#[test]
fn portforward_relays_and_failed_connects_are_counted() {
    let backend = echo_backend(2);
    let dest = format!("--dest_port={backend}");
    let mut srv = Server::start(&[
        "--metrics",
        LOCAL,
        "portforward",
        "--port=tcp:0:interface=127.0.0.1",
        "--host=127.0.0.1",
        &dest,
    ]);
    let (metrics, fwd) = (port_of(&srv, "Metrics"), port_of(&srv, "ProxyFactory"));
    for _ in 0..2 {
        let mut c = connect(SocketAddr::from(([127, 0, 0, 1], fwd)));
        send(&mut c, b"ping");
        assert_eq!(read_n(&mut c, 4), b"ping");
    }
    let open = "twistrs_relays_open{plugin=\"portforward\"}";
    let body = scrape_until(metrics, |b| {
        series(b, "twistrs_relays_total{plugin=\"portforward\"}") == Some(2)
            && series(b, open) == Some(0)
    });
    assert_series(
        &body,
        &[
            ("twistrs_relays_total{plugin=\"portforward\"}", 2),
            (open, 0),
            (
                "twistrs_relay_bytes_total{plugin=\"portforward\",direction=\"to_dest\"}",
                8,
            ),
            (
                "twistrs_relay_bytes_total{plugin=\"portforward\",direction=\"to_client\"}",
                8,
            ),
            (
                "twistrs_relay_connect_failures_total{plugin=\"portforward\",reason=\"refused\"}",
                0,
            ),
        ],
    );
    srv.term();

    // A destination that refuses.
    let dest = format!("--dest_port={}", closed_port());
    let mut srv = Server::start(&[
        "--metrics",
        LOCAL,
        "portforward",
        "--port=tcp:0:interface=127.0.0.1",
        "--host=127.0.0.1",
        &dest,
    ]);
    let (metrics, fwd) = (port_of(&srv, "Metrics"), port_of(&srv, "ProxyFactory"));
    let mut c = connect(SocketAddr::from(([127, 0, 0, 1], fwd)));
    assert!(read_to_end(&mut c).is_empty(), "closed unanswered");
    let refused = "twistrs_relay_connect_failures_total{plugin=\"portforward\",reason=\"refused\"}";
    let body = scrape_until(metrics, |b| series(b, refused) == Some(1));
    assert_eq!(series(&body, refused), Some(1), "{body}");
    assert_eq!(
        series(&body, "twistrs_relays_total{plugin=\"portforward\"}"),
        Some(0)
    );
    promtool_check("portforward_relays_and_failed_connects_are_counted", &body);
    srv.term();
}

#[test]
fn socks_requests_refusals_auth_failures_and_relays_are_counted() {
    let backend = echo_backend(1);
    let mut srv = Server::start(&[
        "--metrics",
        LOCAL,
        "socks",
        "--listen",
        LOCAL,
        "--auth",
        "memory:joe:s3cret",
    ]);
    let metrics = port_of(&srv, "Metrics");
    let proxy = SocketAddr::from(([127, 0, 0, 1], port_of(&srv, "SOCKS")));
    let login = |c: &mut std::net::TcpStream, pass: &[u8]| -> u8 {
        send(c, b"\x05\x01\x02");
        assert_eq!(read_n(c, 2), [5, 2]);
        let mut a = vec![1, 3];
        a.extend_from_slice(b"joe");
        a.push(pass.len() as u8);
        a.extend_from_slice(pass);
        send(c, &a);
        read_n(c, 2)[1]
    };
    let connect5 = |port: u16| {
        let mut r = vec![5, 1, 0, 1, 127, 0, 0, 1];
        r.extend(port.to_be_bytes());
        r
    };
    // A relay carrying five bytes each way.
    let mut c = connect(proxy);
    assert_eq!(login(&mut c, b"s3cret"), 0);
    send(&mut c, &connect5(backend));
    assert_eq!(read_n(&mut c, 10)[1], 0, "succeeded");
    send(&mut c, b"hello");
    assert_eq!(read_n(&mut c, 5), b"hello");
    drop(c);
    // A wrong password; a refused destination; SOCKS4 where a password is required.
    let mut c = connect(proxy);
    assert_eq!(login(&mut c, b"wrong"), 1);
    let mut c = connect(proxy);
    assert_eq!(login(&mut c, b"s3cret"), 0);
    send(&mut c, &connect5(closed_port()));
    assert_eq!(read_n(&mut c, 10)[1], 5, "connection refused");
    let mut c = connect(proxy);
    send(&mut c, b"\x04\x01\x00\x50\x7f\x00\x00\x01joe\x00");
    assert_eq!(read_n(&mut c, 8)[1], 91);

    let body = scrape_until(metrics, |b| {
        series(b, "twistrs_relays_open{plugin=\"socks\"}") == Some(0)
            && series(b, "twistrs_relays_total{plugin=\"socks\"}") == Some(1)
    });
    // Only the combinations that exist: SOCKS4 has no UDP ASSOCIATE.
    let requests: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("twistrs_socks_requests_total{"))
        .collect();
    assert_eq!(requests.len(), 5, "{requests:?}");
    assert!(
        !body.contains("version=\"4\",command=\"udp_associate\""),
        "{requests:?}"
    );
    assert_eq!(
        series(
            &body,
            "twistrs_socks_requests_total{version=\"5\",command=\"udp_associate\"}"
        ),
        Some(0)
    );
    assert_series(
        &body,
        &[
            (
                "twistrs_socks_requests_total{version=\"5\",command=\"connect\"}",
                2,
            ),
            (
                "twistrs_socks_requests_total{version=\"4\",command=\"connect\"}",
                0,
            ),
            (
                "twistrs_socks_failures_total{reply=\"connection_refused\"}",
                1,
            ),
            ("twistrs_socks_failures_total{reply=\"not_allowed\"}", 0),
            (
                "twistrs_socks_negotiations_refused_total{reason=\"auth_failed\"}",
                1,
            ),
            (
                "twistrs_socks_negotiations_refused_total{reason=\"socks4_with_auth\"}",
                1,
            ),
            ("twistrs_relays_total{plugin=\"socks\"}", 1),
            ("twistrs_relays_open{plugin=\"socks\"}", 0),
            (
                "twistrs_relay_bytes_total{plugin=\"socks\",direction=\"to_dest\"}",
                5,
            ),
            (
                "twistrs_relay_connect_failures_total{plugin=\"socks\",reason=\"refused\"}",
                1,
            ),
        ],
    );
    promtool_check(
        "socks_requests_refusals_auth_failures_and_relays_are_counted",
        &body,
    );
    srv.term();
}

#[test]
fn two_listeners_of_one_factory_have_series_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let unix = format!("unix:{}", path.display());
    let mut srv = Server::start(&[
        "--metrics",
        LOCAL,
        "echo",
        "--listen",
        LOCAL,
        "--listen",
        &unix,
    ]);
    let (metrics, tcp) = (port_of(&srv, "Metrics"), port_of(&srv, "Echo"));
    srv.wait_until(
        |l| l.iter().any(|x| x.contains("Echo starting on '")),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| panic!("no unix listener: {:?}", srv.lines()));
    // Two connections over TCP (3 bytes each), one over the UNIX socket (5 bytes).
    for _ in 0..2 {
        let mut c = connect(SocketAddr::from(([127, 0, 0, 1], tcp)));
        send(&mut c, b"abc");
        assert_eq!(read_n(&mut c, 3), b"abc");
    }
    let mut u = std::os::unix::net::UnixStream::connect(&path).expect("connect to the socket");
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    send(&mut u, b"hello");
    assert_eq!(read_n(&mut u, 5), b"hello");
    drop(u);
    // The endpoint as the listener normalised it (`unix:PATH:mode=666:...`).
    let prefix = "twistrs_connections_accepted_total{factory=\"Echo\",listener=\"unix:";
    let first = get(metrics, "/metrics").1;
    let escaped = first
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_once('"'))
        .map(|(tail, _)| format!("unix:{tail}"))
        .unwrap_or_else(|| panic!("no series for the unix listener:\n{first}"));
    assert!(escaped.starts_with(&unix), "{escaped}");
    let on =
        |name: &str, listener: &str| format!("{name}{{factory=\"Echo\",listener=\"{listener}\"}}");
    let body = scrape_until(metrics, |b| {
        series(b, &on("twistrs_connections_open", LOCAL)) == Some(0)
            && series(b, &on("twistrs_connections_open", &escaped)) == Some(0)
            && series(b, &on("twistrs_received_bytes_total", &escaped)) == Some(5)
    });
    assert_series(
        &body,
        &[
            (on("twistrs_connections_accepted_total", LOCAL), 2),
            (on("twistrs_connections_accepted_total", &escaped), 1),
            (on("twistrs_received_bytes_total", LOCAL), 6),
            (on("twistrs_received_bytes_total", &escaped), 5),
            (on("twistrs_sent_bytes_total", &escaped), 5),
        ],
    );
    promtool_check(
        "two_listeners_of_one_factory_have_series_of_their_own",
        &body,
    );
    srv.term();
}

/// A SOCKS BIND whose client is gone before its peer connects was never a relay: only the
/// BIND that was joined is counted in `twistrs_relays_total`, and neither stays open.
#[test]
fn a_socks_bind_never_joined_is_not_counted_as_a_relay() {
    let srv = Server::start(&["--metrics", LOCAL, "socks", "--listen", LOCAL]);
    let metrics = port_of(&srv, "Metrics");
    let proxy = SocketAddr::from(([127, 0, 0, 1], port_of(&srv, "SOCKS")));
    let bind = || {
        let mut c = connect(proxy);
        send(&mut c, b"\x05\x01\x00");
        assert_eq!(read_n(&mut c, 2), [5, 0]);
        send(&mut c, &[5, 2, 0, 1, 127, 0, 0, 1, 0, 0]);
        let r = read_n(&mut c, 10);
        assert_eq!(r[1], 0, "the first BIND reply");
        (c, u16::from_be_bytes([r[8], r[9]]))
    };
    // Joined: the peer connects while the client waits.
    let (mut c, port) = bind();
    let mut p = connect(SocketAddr::from(([127, 0, 0, 1], port)));
    assert_eq!(read_n(&mut c, 10)[1], 0, "the second BIND reply");
    send(&mut p, b"hi");
    assert_eq!(read_n(&mut c, 2), b"hi");
    drop((c, p));
    // Never joined: the client resets first (SO_LINGER 0), which ends the BIND.
    let (c, _port) = bind();
    reset_on_close(&c);
    drop(c);
    let failed = |l: &[String]| {
        l.iter()
            .any(|x| x.contains("command=BIND") && x.contains("result=failed"))
    };
    assert!(
        srv.wait_until(failed, Duration::from_secs(5)).is_some(),
        "the unjoined BIND is logged as failed"
    );
    let body = scrape_until(metrics, |b| {
        series(b, "twistrs_relays_open{plugin=\"socks\"}") == Some(0)
    });
    assert_eq!(
        series(&body, "twistrs_relays_total{plugin=\"socks\"}"),
        Some(1),
        "{body}"
    );
}

/// Runs `python3 -c SCRIPT ARGS...`; its stdout, the test failing with its stderr if it fails.
fn python3(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The certificate's notAfter in seconds since 1970, as Python's ssl module reads it.
fn not_after(cert: &std::path::Path) -> i64 {
    let script = "import ssl, sys; \
        print(int(ssl.cert_time_to_seconds(ssl._ssl._test_decode_cert(sys.argv[1])['notAfter'])))";
    python3(script, &[&cert.display().to_string()])
        .trim()
        .parse()
        .expect("a number")
}

/// `n` TLS 1.3 sessions to `port` that each echo one line (Python's ssl, verification off:
/// the certificate is self-signed).
fn tls_echoes(port: u16, n: usize) {
    let script = "import socket, ssl, sys\n\
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n\
        ctx.check_hostname = False\n\
        ctx.verify_mode = ssl.CERT_NONE\n\
        for i in range(int(sys.argv[2])):\n\
        \x20   with socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5) as s:\n\
        \x20       with ctx.wrap_socket(s) as t:\n\
        \x20           t.sendall(b'hi\\n')\n\
        \x20           assert t.recv(3) == b'hi\\n'\n";
    python3(script, &[&port.to_string(), &n.to_string()]);
}

/// Handshakes done and failed are counted per listener, and each certificate in service has
/// its expiry, which follows a reload (and stays when the reload fails).
#[test]
fn tls_handshakes_failures_and_certificate_expiry_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let first = crate::tls::self_signed(dir.path(), "first");
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    std::fs::copy(&first.key, &key).unwrap();
    std::fs::copy(&first.cert, &cert).unwrap();
    let listen = format!(
        "ssl:0:interface=127.0.0.1:privateKey={}:certKey={}",
        key.display(),
        cert.display()
    );
    let mut srv = Server::start(&["--metrics", LOCAL, "echo", "--listen", &listen]);
    let (metrics, tls) = (port_of(&srv, "Metrics"), port_of(&srv, "Echo (TLS)"));
    tls_echoes(tls, 2);
    // Two that fail: plaintext, and a client gone before it said anything.
    let mut c = connect(SocketAddr::from(([127, 0, 0, 1], tls)));
    send(&mut c, b"GET / HTTP/1.0\r\n\r\n");
    let _ = read_to_end(&mut c);
    drop(connect(SocketAddr::from(([127, 0, 0, 1], tls))));
    // The endpoint as the listener normalised it (its keywords in their own order).
    let prefix = "twistrs_connections_accepted_total{factory=\"Echo\",listener=\"";
    let listen = get(metrics, "/metrics")
        .1
        .lines()
        .find_map(|l| Some(l.strip_prefix(prefix)?.split_once('"')?.0.to_string()))
        .unwrap_or_else(|| panic!("no Echo listener in the metrics"));
    assert!(listen.starts_with("ssl:0:"), "{listen}");
    let on = |name: &str| format!("{name}{{factory=\"Echo\",listener=\"{listen}\"}}");
    let expiry = |file: &std::path::Path| {
        format!(
            "twistrs_tls_certificate_expiry_timestamp_seconds{{factory=\"Echo\",listener=\"{listen}\",file=\"{}\"}}",
            file.display()
        )
    };
    let body = scrape_until(metrics, |b| {
        series(b, &on("twistrs_tls_handshake_failures_total")) == Some(2)
            && series(b, &on("twistrs_connections_open")) == Some(0)
    });
    assert_series(
        &body,
        &[
            (on("twistrs_tls_handshakes_total"), 2),
            (on("twistrs_tls_handshake_failures_total"), 2),
            (expiry(&cert), not_after(&first.cert)),
        ],
    );
    // The metrics listener itself is plaintext: no TLS series of its own.
    assert!(
        !body
            .lines()
            .any(|l| l.starts_with("twistrs_tls_") && l.contains("factory=\"Metrics\"")),
        "{body}"
    );
    promtool_check(
        "tls_handshakes_failures_and_certificate_expiry_are_reported",
        &body,
    );

    // A certificate valid for longer, then a reload: the new expiry is the one in service.
    crate::tls::openssl(
        dir.path(),
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
         -subj /CN=localhost -keyout second-key.pem -out second-cert.pem",
    );
    let second = dir.path().join("second-cert.pem");
    std::fs::copy(dir.path().join("second-key.pem"), &key).unwrap();
    std::fs::copy(&second, &cert).unwrap();
    let later = not_after(&second);
    assert_ne!(later, not_after(&first.cert));
    srv.signal(libc::SIGHUP);
    let body = scrape_until(metrics, |b| series(b, &expiry(&cert)) == Some(later));
    assert_eq!(series(&body, &expiry(&cert)), Some(later), "{body}");
    // A reload that fails keeps the certificate in service, and its expiry.
    std::fs::write(&cert, "garbage").unwrap();
    srv.signal(libc::SIGHUP);
    srv.wait_until(
        |l| l.iter().any(|x| x.contains("Certificates not reloaded")),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| panic!("no failed reload: {:?}", srv.lines()));
    let body = get(metrics, "/metrics").1;
    assert_eq!(series(&body, &expiry(&cert)), Some(later), "{body}");
    srv.term();
}

/// With `--workers 2` and a `tls:` directory: one expiry per certificate file, the same as
/// each worker's (not the sum of theirs), and the workers' handshakes added up.
#[test]
fn with_workers_a_tls_directory_has_one_expiry_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let a = crate::tls::self_signed(&certs, "a");
    crate::tls::openssl(
        &certs,
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 40 \
         -subj /CN=b.test -addext subjectAltName=DNS:b.test -keyout b-key.pem -out b-cert.pem",
    );
    // self_signed also left a.pem (key and certificate in one): keep one file per pair.
    std::fs::remove_file(&a.both).unwrap();
    let b = certs.join("b-cert.pem");
    let listen = format!("tls:{}:port=0:interface=127.0.0.1", certs.display());
    let mut srv = Server::start(&[
        "--workers",
        "2",
        "--metrics",
        LOCAL,
        "echo",
        "--listen",
        &listen,
    ]);
    let (metrics, tls) = (port_of(&srv, "Metrics"), port_of(&srv, "Echo (TLS)"));
    tls_echoes(tls, 6);
    let prefix = "twistrs_tls_handshakes_total{factory=\"Echo\",listener=\"";
    let body = scrape_until(metrics, |b| {
        b.lines()
            .any(|l| l.starts_with(prefix) && l.ends_with(" 6"))
    });
    let label = body
        .lines()
        .find_map(|l| Some(l.strip_prefix(prefix)?.split_once('"')?.0.to_string()))
        .unwrap_or_else(|| panic!("no handshakes series:\n{body}"));
    let expiry = |file: &std::path::Path| {
        format!(
            "twistrs_tls_certificate_expiry_timestamp_seconds{{factory=\"Echo\",listener=\"{label}\",file=\"{}\"}}",
            file.display()
        )
    };
    assert_series(
        &body,
        &[
            (
                format!("twistrs_tls_handshakes_total{{factory=\"Echo\",listener=\"{label}\"}}"),
                6,
            ),
            (expiry(&a.cert), not_after(&a.cert)),
            (expiry(&b), not_after(&b)),
        ],
    );
    let files = body
        .lines()
        .filter(|l| l.starts_with("twistrs_tls_certificate_expiry_timestamp_seconds{"))
        .count();
    assert_eq!(files, 2, "one series per certificate file:\n{body}");
    promtool_check(
        "with_workers_a_tls_directory_has_one_expiry_per_file",
        &body,
    );
    srv.term();
}
