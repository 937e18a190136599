//! `--metrics`: the Prometheus exposition on `GET /metrics`, counters matching what was sent,
//! checked by `promtool check metrics` when it is installed.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const LOCAL: &str = "tcp:0:interface=127.0.0.1";

/// The port a factory's "NAME starting on PORT" line names.
fn port_of(srv: &Server, name: &str) -> u16 {
    let prefix = format!("{name} starting on ");
    srv.wait_until(
        |l| l.iter().any(|x| x.contains(&prefix)),
        Duration::from_secs(10),
    )
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
fn get(port: u16, path: &str) -> (String, String) {
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
fn value(body: &str, name: &str, factory: &str) -> u64 {
    let prefix = format!("{name}{{factory=\"{factory}\",");
    body.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} for {factory} in:\n{body}"))
}

/// Scrapes until `cond` holds (the server counts a close when it sees it, after the client's).
fn scrape_until(port: u16, cond: impl Fn(&str) -> bool) -> String {
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
fn promtool_check(test: &str, body: &str) {
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

#[test]
fn metrics_are_refused_with_workers() {
    let (code, out, err) = run(&[
        "-n",
        "--workers",
        "2",
        "--metrics",
        LOCAL,
        "echo",
        "--listen",
        LOCAL,
    ]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("--metrics cannot be used with --workers"),
        "{out}{err}"
    );
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
    srv.term();
}
