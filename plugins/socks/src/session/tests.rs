//! The session on the core's relay harness (string transports, a manual clock): the whole
//! exchange in every chunking, the relay it asks for, the replies, and the log line.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use twistrs_core::client::{ConnectError, Destination, Host as DestHost};
use twistrs_core::testing::RelayHarness;

use super::Socks;
use crate::config::Config;
use crate::connlog::ConnLog;
use crate::negotiate::{Failure, reply5};
use crate::rules::{Rule, Rules};

/// A session with `rules`, logging to a file in `dir`.
fn session(dir: &std::path::Path, rules: &[(bool, &str)]) -> RelayHarness<Socks> {
    session_with(dir, rules, None)
}

/// A session with `rules` and, if given, `--auth` logins.
fn session_with(
    dir: &std::path::Path,
    rules: &[(bool, &str)],
    creds: Option<&[(&str, &str)]>,
) -> RelayHarness<Socks> {
    let log = ConnLog::file(dir.join("socks.log")).unwrap();
    let creds = creds.map(|c| {
        Rc::new(
            c.iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect::<twistrs_core::auth::Credentials>(),
        )
    });
    let cfg = Config {
        creds,
        rules: Rules(
            rules
                .iter()
                .map(|(a, r)| Rule::parse(*a, r).unwrap())
                .collect(),
        ),
        request_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(3600),
        log: Rc::new(RefCell::new(log)),
    };
    let mut h = RelayHarness::new(Socks::new(Rc::new(cfg)));
    h.connect();
    h
}

/// The destination answers "response", both sides close, the relay ends.
fn respond_and_end(h: &mut RelayHarness<Socks>) {
    h.dest_feed(b"response");
    assert_eq!(h.take_output(), b"response");
    h.eof();
    h.dest_eof();
    h.take_output();
    h.dest_take_output();
    assert!(h.ended().is_some());
}

fn log_of(h: &RelayHarness<Socks>, dir: &std::path::Path) -> String {
    h.proto.cfg.log.borrow_mut().flush();
    std::fs::read_to_string(dir.join("socks.log")).unwrap()
}

const CONNECT: &[u8] = b"\x05\x01\x00\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x50early";

#[test]
fn a_connect_relayed_in_every_chunking() {
    for chunk in 1..=CONNECT.len() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = session(dir.path(), &[]);
        h.feed_chunked(CONNECT, chunk);
        let req = h.relay_request().expect("a relay");
        assert_eq!(
            req.dest,
            Destination::Tcp {
                host: DestHost::Ip([10, 0, 0, 1].into()),
                port: 80
            },
            "chunk {chunk}"
        );
        // What came with the request's last piece is forwarded by the request; what came
        // after it waited, unread, and flows once joined: "early" arrives whole either way.
        let forwarded = req.forward.clone();
        assert!(b"early".starts_with(&forwarded), "chunk {chunk}");
        h.connected();
        let bound = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(h.take_output(), [&[5u8, 0][..], &reply5(0, bound)].concat());
        assert_eq!(h.dest_take_output(), b"early", "chunk {chunk}");
        h.feed(b" and more");
        assert_eq!(h.dest_take_output(), b" and more");
        respond_and_end(&mut h);
        let log = log_of(&h, dir.path());
        assert!(
            log.contains("version=5 command=CONNECT dest=10.0.0.1:80 address=10.0.0.1:80")
                && log.contains(" result=ok up=14 down=8 "),
            "chunk {chunk}: {log}"
        );
    }
}

/// The line's `down` leaves out the SOCKS replies, whose length depends on the version and
/// on the family of the address connected to.
#[test]
fn down_counts_only_relayed_bytes_for_socks4_and_ipv6() {
    let v6 = [
        &b"\x05\x01\x00\x05\x01\x00\x04"[..],
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
        b"\x00\x50",
    ]
    .concat();
    let v4 = b"\x04\x01\x00\x50\x0a\x00\x00\x01me\x00".to_vec();
    for (request, replies) in [(v6, 2 + 22), (v4, 8)] {
        let dir = tempfile::tempdir().unwrap();
        let mut h = session(dir.path(), &[]);
        h.feed(&request);
        assert!(h.relay_request().is_some());
        h.connected();
        assert_eq!(h.take_output().len(), replies);
        h.feed(b"up");
        respond_and_end(&mut h);
        let log = log_of(&h, dir.path());
        assert!(log.contains(" result=ok up=2 down=8 "), "{log}");
    }
}

#[test]
fn the_rules_refuse_before_any_connect() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = session(dir.path(), &[(false, "10.0.0.0/8:80")]);
    h.feed(CONNECT);
    assert!(h.relay_request().is_none());
    let want = [
        &[5u8, 0][..],
        &reply5(Failure::NotAllowed.code5(), ([0, 0, 0, 0], 0).into()),
    ]
    .concat();
    assert_eq!(h.take_output(), want);
    assert!(h.lost().is_some() || h.write_closed());
    drop(h);
}

#[test]
fn connect_failures_get_their_codes() {
    let cases: Vec<(ConnectError, &[u8])> = vec![
        (
            ConnectError::Io(io::ErrorKind::ConnectionRefused.into()),
            &[5, 5],
        ),
        (ConnectError::TimedOut(Duration::from_secs(30)), &[5, 6]),
        (
            ConnectError::NameNotResolved {
                host: "x".into(),
                error: io::ErrorKind::NotFound.into(),
            },
            &[5, 4],
        ),
        (ConnectError::Io(io::Error::from_raw_os_error(101)), &[5, 3]),
    ];
    for (err, code) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut h = session(dir.path(), &[]);
        h.feed(CONNECT);
        let why = err.to_string();
        h.connect_failed(err);
        let out = h.take_output();
        assert_eq!(&out[2..4], code, "{why}");
        let log = log_of(&h, dir.path());
        assert!(log.contains("result=failed"), "{log}");
    }
    // SOCKS4: 91 for any failure.
    let dir = tempfile::tempdir().unwrap();
    let mut h = session(dir.path(), &[]);
    h.feed(b"\x04\x01\x00\x50\x0a\x00\x00\x01\x00");
    h.connect_failed(ConnectError::Io(io::ErrorKind::ConnectionRefused.into()));
    assert_eq!(h.take_output(), [0, 91, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn a_request_that_does_not_arrive_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = session(dir.path(), &[]);
    h.feed(b"\x05\x01\x00\x05\x01");
    assert_eq!(h.take_output(), [5, 0]);
    h.advance(Duration::from_secs(29));
    assert!(h.take_output().is_empty());
    h.advance(Duration::from_secs(2));
    assert_eq!(h.take_output(), reply5(1, ([0, 0, 0, 0], 0).into()));
    h.eof();
    assert!(h.lost().is_some());
    let log = log_of(&h, dir.path());
    assert!(
        log.contains("the request did not arrive within 30 s"),
        "{log}"
    );
    // The greeting said SOCKS5: the line says so, not version=-.
    assert!(log.contains(" version=5 command=- "), "{log}");

    // SOCKS4 has no greeting: its request's first byte is the version.
    let dir = tempfile::tempdir().unwrap();
    let mut h = session(dir.path(), &[]);
    h.feed(b"\x04\x01\x00\x50");
    h.advance(Duration::from_secs(31));
    assert_eq!(h.take_output(), [0, 91, 0, 0, 0, 0, 0, 0]);
    let log = log_of(&h, dir.path());
    assert!(log.contains(" version=4 command=- "), "{log}");
    assert!(
        log.contains("the request did not arrive within 30 s"),
        "{log}"
    );
}

/// A join the core could not make (a BIND peer gone first) ends its relay unjoined: the
/// line says `failed`, not `ok`.
#[test]
fn a_relay_never_joined_is_logged_as_failed() {
    use twistrs_core::Address;
    use twistrs_core::relay::{Ending, RelayEnd, Side};
    let dir = tempfile::tempdir().unwrap();
    let h = session(dir.path(), &[]);
    let end = |joined| RelayEnd {
        system: String::new(),
        client: Address::Tcp("127.0.0.1:5000".parse().unwrap()),
        dest: Address::Tcp("127.0.0.1:6000".parse().unwrap()),
        to_dest: 0,
        to_client: 0,
        duration: Duration::ZERO,
        ended_by: Side::Dest,
        reason: "the destination closed before the relay was joined".into(),
        clean: false,
        joined,
        ending: Ending::Closed,
    };
    (h.proto.on_end(0))(&end(false));
    (h.proto.on_end(0))(&end(true));
    let log = log_of(&h, dir.path());
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].contains(" result=failed up=0 down=0 "), "{log}");
    assert!(
        lines[0].ends_with(" reason=\"the destination closed before the relay was joined\""),
        "{log}"
    );
    assert!(lines[1].contains(" result=ok "), "{log}");
}

/// A relay idle for --timeout is closed by it, and the line says so (not "Connection was
/// aborted", which read as if a side had cut it).
#[test]
fn an_idle_relay_is_logged_as_closed_by_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = session(dir.path(), &[]);
    h.feed(CONNECT);
    h.connected();
    h.take_output();
    assert_eq!(h.dest_take_output(), b"early");
    h.advance(Duration::from_secs(3601));
    assert!(h.ended().is_some(), "closed by the idle timeout");
    let log = log_of(&h, dir.path());
    assert!(log.contains(" result=ok up=5 down=0 duration="), "{log}");
    assert!(
        log.trim_end().ends_with(
            " reason=\"closed by the idle timeout: nothing carried either way for 3600 s\""
        ),
        "{log}"
    );
}

/// A graceful stop lets a request whose name is being looked up go on (as one connecting
/// already does): it was closed without a reply, its line blaming the client.
#[test]
fn a_stop_lets_a_request_resolving_its_name_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = session(dir.path(), &[]);
    // The lookup's answer never comes here (no reactor delivers it): the stop must not close.
    h.feed(b"\x05\x01\x00\x05\x01\x00\x03\x11slow.test.invalid\x00\x50");
    assert_eq!(h.take_output(), [5, 0]);
    h.stop_requested();
    h.advance(Duration::from_secs(5));
    assert!(h.lost().is_none(), "the request goes on through the stop");
    // Its own deadline still holds, and the client hears why.
    h.advance(Duration::from_secs(26));
    assert_eq!(h.take_output(), reply5(6, ([0, 0, 0, 0], 0).into()));
    h.eof();
    let log = log_of(&h, dir.path());
    assert!(
        log.contains("reason=\"slow.test.invalid:80 did not resolve within 30 s\""),
        "{log}"
    );
}

/// A refusal's line says what is known of who asked for what: the user of a failed login,
/// and the command and destination of a SOCKS4 request refused because a login is
/// required; a waiting BIND's line names the port it opened, not the peer's address with
/// port 0.
#[test]
fn refusal_lines_say_who_asked_for_what() {
    let logins: &[(&str, &str)] = &[("joe", "secret")];
    let dir = tempfile::tempdir().unwrap();
    let mut h = session_with(dir.path(), &[], Some(logins));
    h.feed(b"\x05\x01\x02\x01\x03joe\x05wrong");
    assert_eq!(h.take_output(), [5, 2, 1, 1]);
    let log = log_of(&h, dir.path());
    assert!(
        log.contains(" version=5 command=- dest=- address=- user=\"joe\" result=refused "),
        "{log}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut h = session_with(dir.path(), &[], Some(logins));
    h.feed(b"\x04\x01\x00\x50\x0a\x00\x00\x01bob\x00");
    assert_eq!(h.take_output(), [0, 91, 0, 0, 0, 0, 0, 0]);
    let log = log_of(&h, dir.path());
    assert!(
        log.contains(
            " version=4 command=CONNECT dest=10.0.0.1:80 address=- user=\"bob\" result=refused "
        ),
        "{log}"
    );
}
