//! The negotiation fed in every chunking, down to one byte at a time.

use super::*;
use std::net::Ipv6Addr;

/// What a negotiation gives for `input` fed in `chunk`-byte pieces: every step in order, and
/// the bytes left behind the request.
pub(crate) fn run(
    creds: Option<&[(&str, &str)]>,
    input: &[u8],
    chunk: usize,
) -> (Vec<Step>, Vec<u8>) {
    run_parts(creds, &input.chunks(chunk.max(1)).collect::<Vec<_>>())
}

/// What a negotiation gives for `parts` fed in turn; its buffer stays bounded throughout.
pub(crate) fn run_parts(creds: Option<&[(&str, &str)]>, parts: &[&[u8]]) -> (Vec<Step>, Vec<u8>) {
    let creds = creds.map(|c| {
        Rc::new(
            c.iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect::<Credentials>(),
        )
    });
    let mut n = Negotiator::new(creds);
    let mut steps = Vec::new();
    for piece in parts {
        n.feed(piece);
        while let Some(s) = n.next_step() {
            steps.push(s);
        }
        assert!(n.done() || n.buffered() <= 2 * MAX_FIELD + 10, "bounded");
    }
    (steps, n.take_rest())
}

/// The same outcome in every chunking; returns it.
pub(crate) fn every_chunking(creds: Option<&[(&str, &str)]>, input: &[u8]) -> (Vec<Step>, Vec<u8>) {
    let whole = run(creds, input, input.len());
    for chunk in 1..input.len() {
        assert_eq!(run(creds, input, chunk), whole, "chunk {chunk}");
    }
    whole
}

fn request(version: Version, cmd: Cmd, host: Host, port: u16, user: Option<&str>) -> Step {
    Step::Request(Request {
        version,
        cmd,
        target: Target { host, port },
        user: user.map(str::to_string),
    })
}

fn v4(a: [u8; 4]) -> Host {
    Host::Ip(Ipv4Addr::from(a).into())
}

fn name(n: &str) -> Host {
    Host::Name(n.into())
}

#[test]
fn socks4_connect_and_bind_with_data_behind() {
    let input = b"\x04\x01\x00\x50\x7f\x00\x00\x01joe\x00GET / HTTP/1.0\r\n\r\n";
    let (steps, rest) = every_chunking(None, input);
    assert_eq!(
        steps,
        [request(
            Version::V4,
            Cmd::Connect,
            v4([127, 0, 0, 1]),
            80,
            Some("joe")
        )]
    );
    assert_eq!(rest, b"GET / HTTP/1.0\r\n\r\n");
    let (steps, _) = every_chunking(None, b"\x04\x02\x1f\x90\x0a\x01\x02\x03\x00");
    assert_eq!(
        steps,
        [request(
            Version::V4,
            Cmd::Bind,
            v4([10, 1, 2, 3]),
            8080,
            Some("")
        )]
    );
}

#[test]
fn socks4a_names_and_address_literals() {
    let (steps, rest) = every_chunking(
        None,
        b"\x04\x01\x01\xbb\x00\x00\x00\x01u\x00example.com\x00x",
    );
    assert_eq!(
        steps,
        [request(
            Version::V4,
            Cmd::Connect,
            name("example.com"),
            443,
            Some("u")
        )]
    );
    assert_eq!(rest, b"x");
    let (steps, _) = every_chunking(None, b"\x04\x01\x00\x50\x00\x00\x00\x07\x00127.0.0.1\x00");
    assert_eq!(
        steps,
        [request(
            Version::V4,
            Cmd::Connect,
            v4([127, 0, 0, 1]),
            80,
            Some("")
        )]
    );
}

#[test]
fn socks4_limits_and_refusals() {
    // A user id that does not end within 255 bytes: 91 as soon as that is known.
    let mut long = b"\x04\x01\x00\x50\x7f\x00\x00\x01".to_vec();
    long.extend([b'u'; 300]);
    let (steps, _) = every_chunking(None, &long);
    assert_eq!(
        steps,
        [Step::Close(
            vec![0, 91, 0, 0, 0, 0, 0, 0],
            Refusal::TooLong("SOCKS4 user id")
        )]
    );
    // 255 bytes and the NUL are fine.
    let mut ok = b"\x04\x01\x00\x50\x7f\x00\x00\x01".to_vec();
    ok.extend([b'u'; 255]);
    ok.push(0);
    assert!(matches!(
        every_chunking(None, &ok).0[..],
        [Step::Request(_)]
    ));
    let mut name = b"\x04\x01\x00\x50\x00\x00\x00\x01\x00".to_vec();
    name.extend([b'h'; 256]);
    assert_eq!(
        every_chunking(None, &name).0,
        [Step::Close(
            reply4(None),
            Refusal::TooLong("SOCKS4a host name")
        )]
    );
    assert_eq!(
        every_chunking(None, b"\x04\x03\x00\x50\x7f\x00\x00\x01\x00").0,
        [Step::Close(reply4(None), Refusal::Command(3))]
    );
    assert_eq!(
        every_chunking(None, b"\x04\x01\x00\x50\x00\x00\x00\x01\x00bad name\x00").0,
        [Step::Close(reply4(None), Refusal::BadName)]
    );
    // With --auth, SOCKS4 (no password) is refused with 91.
    assert_eq!(
        every_chunking(
            Some(&[("joe", "pw")]),
            b"\x04\x01\x00\x50\x7f\x00\x00\x01joe\x00"
        )
        .0,
        [Step::Close(reply4(None), Refusal::Socks4WithAuth)]
    );
}

#[test]
fn socks5_connect_every_address_type() {
    let ipv4 = b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50hello";
    let (steps, rest) = every_chunking(None, ipv4);
    assert_eq!(
        steps,
        [
            Step::Send(vec![5, 0]),
            request(Version::V5, Cmd::Connect, v4([127, 0, 0, 1]), 80, None)
        ]
    );
    assert_eq!(rest, b"hello");
    let mut ipv6 = b"\x05\x02\x02\x00\x05\x01\x00\x04".to_vec();
    ipv6.extend(Ipv6Addr::LOCALHOST.octets());
    ipv6.extend(443u16.to_be_bytes());
    assert_eq!(
        every_chunking(None, &ipv6).0,
        [
            Step::Send(vec![5, 0]),
            request(
                Version::V5,
                Cmd::Connect,
                Host::Ip(Ipv6Addr::LOCALHOST.into()),
                443,
                None
            )
        ]
    );
    let domain = b"\x05\x01\x00\x05\x01\x00\x03\x0bexample.com\x00\x50";
    assert_eq!(
        every_chunking(None, domain).0[1],
        request(Version::V5, Cmd::Connect, name("example.com"), 80, None)
    );
    let literal = b"\x05\x01\x00\x05\x03\x00\x03\x05[::1]\x00\x35";
    assert_eq!(
        every_chunking(None, literal).0[1],
        request(
            Version::V5,
            Cmd::UdpAssociate,
            Host::Ip(Ipv6Addr::LOCALHOST.into()),
            53,
            None
        )
    );
    let bind = b"\x05\x01\x00\x05\x02\x00\x01\x0a\x00\x00\x01\x00\x15";
    assert_eq!(
        every_chunking(None, bind).0[1],
        request(Version::V5, Cmd::Bind, v4([10, 0, 0, 1]), 21, None)
    );
}

#[test]
fn socks5_username_password() {
    let creds: &[(&str, &str)] = &[("joe", "s3cret")];
    let login = b"\x05\x02\x00\x02\x01\x03joe\x06s3cret\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50";
    assert_eq!(
        every_chunking(Some(creds), login).0,
        [
            Step::Send(vec![5, 2]),
            Step::Send(vec![1, 0]),
            request(
                Version::V5,
                Cmd::Connect,
                v4([127, 0, 0, 1]),
                80,
                Some("joe")
            )
        ]
    );
    let wrong = b"\x05\x01\x02\x01\x03joe\x06s3creT\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50";
    assert_eq!(
        every_chunking(Some(creds), wrong).0,
        [
            Step::Send(vec![5, 2]),
            Step::Close(vec![1, 1], Refusal::AuthFailed("joe".into()))
        ]
    );
    let unknown = b"\x05\x01\x02\x01\x03ann\x06s3cret";
    assert_eq!(
        every_chunking(Some(creds), unknown).0[1],
        Step::Close(vec![1, 1], Refusal::AuthFailed("ann".into()))
    );
    let version = b"\x05\x01\x02\x05\x03joe\x06s3cret";
    assert_eq!(
        every_chunking(Some(creds), version).0[1],
        Step::Close(vec![1, 1], Refusal::BadAuthVersion(5))
    );
    // With --auth, "no authentication" alone is not accepted; without, a client that offers
    // only username/password (or nothing) is refused.
    for (creds, greeting) in [
        (Some(creds), &b"\x05\x01\x00"[..]),
        (None, b"\x05\x01\x02"),
        (None, b"\x05\x00"),
    ] {
        let auth_required = creds.is_some();
        assert_eq!(
            every_chunking(creds, greeting).0,
            [Step::Close(
                vec![5, 0xff],
                Refusal::NoMethod { auth_required }
            )],
            "{greeting:?}"
        );
    }
}

#[test]
fn socks5_malformed_requests_get_their_codes() {
    let greet = b"\x05\x01\x00";
    let close = |code: u8, why: Refusal| Step::Close(reply5(code, UNSPECIFIED), why);
    let cases: Vec<(&[u8], Step)> = vec![
        (
            b"\x05\x09\x00\x01\x7f\x00\x00\x01\x00\x50",
            close(7, Refusal::Command(9)),
        ),
        (
            b"\x05\x01\x00\x02\x7f\x00",
            close(8, Refusal::AddressType(2)),
        ),
        (b"\x04\x01\x00\x01", close(1, Refusal::BadRequestVersion(4))),
        (b"\x05\x01\x00\x03\x00\x00\x50", close(4, Refusal::BadName)),
        (
            b"\x05\x01\x00\x03\x03a\x00b\x00\x50",
            close(4, Refusal::BadName),
        ),
    ];
    for (req, want) in cases {
        let input = [&greet[..], req].concat();
        assert_eq!(
            every_chunking(None, &input).0,
            [Step::Send(vec![5, 0]), want],
            "{req:?}"
        );
    }
}

#[test]
fn not_socks_and_cut_short() {
    assert_eq!(
        every_chunking(None, b"GET / HTTP/1.1\r\n").0,
        [Step::Close(Vec::new(), Refusal::NotSocks(b'G'))]
    );
    // A client that stops in the middle gets the refusal of the message it was sending, and
    // the version its first byte said is known for the log.
    let cases: &[(&[u8], Vec<u8>, Option<Version>)] = &[
        (b"", vec![], None),
        (b"\x05\x02\x00", vec![5, 0xff], Some(Version::V5)),
        (
            b"\x05\x01\x00\x05\x01\x00\x01\x7f",
            reply5(1, UNSPECIFIED),
            Some(Version::V5),
        ),
        (b"\x05\x01\x00", reply5(1, UNSPECIFIED), Some(Version::V5)),
        (b"\x04", reply4(None), Some(Version::V4)),
        (
            b"\x04\x01\x00\x50\x7f\x00\x00\x01jo",
            reply4(None),
            Some(Version::V4),
        ),
    ];
    for (input, want, version) in cases {
        let mut n = Negotiator::new(None);
        n.feed(input);
        while let Some(Step::Send(_)) = n.next_step() {}
        assert_eq!(n.version(), *version, "{input:?}");
        assert_eq!(&n.cut_short(), want, "{input:?}");
        assert!(n.done());
    }
    let mut n = Negotiator::new(Some(Rc::new(
        [("a".to_string(), "b".to_string())].into_iter().collect(),
    )));
    n.feed(b"\x05\x01\x02\x01\x01a");
    assert_eq!(n.next_step(), Some(Step::Send(vec![5, 2])));
    assert_eq!(n.next_step(), None);
    assert_eq!(n.version(), Some(Version::V5), "in the login");
    assert_eq!(n.cut_short(), [1, 1]);
}

#[test]
fn replies() {
    let a: SocketAddr = "10.1.2.3:1080".parse().unwrap();
    assert_eq!(reply(Version::V4, Ok(a)), [0, 90, 4, 56, 10, 1, 2, 3]);
    assert_eq!(
        reply(Version::V4, Err(Failure::Refused)),
        [0, 91, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(reply(Version::V5, Ok(a)), [5, 0, 0, 1, 10, 1, 2, 3, 4, 56]);
    // An IPv4 client of an IPv6 (dual-stack) listener: its addresses come IPv4-mapped, and
    // are the IPv4 address it knows (SOCKS4 has no other way to give the BIND port).
    let mapped: SocketAddr = "[::ffff:10.1.2.3]:1080".parse().unwrap();
    assert_eq!(reply(Version::V4, Ok(mapped)), reply(Version::V4, Ok(a)));
    assert_eq!(reply(Version::V5, Ok(mapped)), reply(Version::V5, Ok(a)));
    let six: SocketAddr = "[::1]:80".parse().unwrap();
    let r = reply(Version::V5, Ok(six));
    assert_eq!(&r[..4], [5, 0, 0, 4]);
    assert_eq!(r.len(), 4 + 16 + 2);
    for (f, code) in [
        (Failure::General, 1),
        (Failure::NotAllowed, 2),
        (Failure::NetworkUnreachable, 3),
        (Failure::HostUnreachable, 4),
        (Failure::Refused, 5),
        (Failure::TtlExpired, 6),
        (Failure::CommandNotSupported, 7),
        (Failure::AddressTypeNotSupported, 8),
    ] {
        assert_eq!(
            reply(Version::V5, Err(f)),
            [5, code, 0, 1, 0, 0, 0, 0, 0, 0]
        );
    }
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    assert_eq!(Failure::of_io(&refused), Failure::Refused);
    let timed_out = std::io::Error::from(std::io::ErrorKind::TimedOut);
    assert_eq!(Failure::of_io(&timed_out), Failure::TtlExpired);
}
