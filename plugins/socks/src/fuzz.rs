//! Mutation fuzzing of the negotiation and the UDP header from valid requests, by hand:
//! `FUZZ_SECS=300 cargo test --release -p twistrs-socks fuzz_ -- --ignored --nocapture`
//! (`FUZZ_SEED` replays a run). `prop.rs` keeps a small form of it in every `cargo test`.

use std::net::SocketAddr;

use twistrs_core::client::Host;
use twistrs_core::testing::mutate::{campaign, mutate};
use twistrs_core::testing::pieces;

use crate::negotiate::tests::run_parts;
use crate::negotiate::{MAX_FIELD, Step, Target, reply4, reply5};
use crate::udp_header;

/// Whole valid negotiations: every version, command, address type and the login.
pub(crate) fn seeds() -> Vec<Vec<u8>> {
    let mut v6 = b"\x05\x02\x02\x00\x05\x01\x00\x04".to_vec();
    v6.extend(std::net::Ipv6Addr::LOCALHOST.octets());
    v6.extend(443u16.to_be_bytes());
    vec![
        b"\x04\x01\x00\x50\x7f\x00\x00\x01joe\x00GET / HTTP/1.0\r\n\r\n".to_vec(),
        b"\x04\x02\x1f\x90\x0a\x01\x02\x03\x00".to_vec(),
        b"\x04\x01\x01\xbb\x00\x00\x00\x01u\x00example.com\x00x".to_vec(),
        b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50hello".to_vec(),
        b"\x05\x01\x00\x05\x01\x00\x03\x0bexample.com\x00\x50".to_vec(),
        b"\x05\x01\x00\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00".to_vec(),
        b"\x05\x01\x00\x05\x02\x00\x03\x05[::1]\x00\x50".to_vec(),
        b"\x05\x02\x00\x02\x01\x01u\x01p\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50".to_vec(),
        b"\x05\x01\x02\x01\x03joe\x02pw\x05\x01\x00\x03\x09localhost\x1f\x90".to_vec(),
        v6,
    ]
}

/// The replies a negotiation may send: method choices, login answers, and SOCKS4 and
/// SOCKS5 refusals (successes are sent by the session, not here).
fn a_reply(b: &[u8]) -> bool {
    matches!(b, [] | [5, 0] | [5, 2] | [5, 0xFF] | [1, 0] | [1, 1])
        || b == reply4(None)
        || (b.len() == 10 && b[..3] == [5, b[1], 0] && b[1] != 0 && b == reply5(b[1], UNSPEC))
}

const UNSPEC: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// One negotiation of `input` in the given pieces, checked: every reply well formed, at most
/// one request or refusal and nothing after it, names fit for a resolver, the buffer bounded
/// (`run_parts` asserts it), and the same outcome as in one piece.
pub(crate) fn check_negotiation(
    creds: Option<&[(&str, &str)]>,
    input: &[u8],
    cuts: &[usize],
) -> Result<(), String> {
    let whole = run_parts(creds, &[input]);
    let cut = run_parts(creds, &pieces(input, cuts));
    if cut != whole {
        return Err(format!("{cut:?} in pieces, {whole:?} whole"));
    }
    let steps = &whole.0;
    let ends = steps
        .iter()
        .position(|s| !matches!(s, Step::Send(_)))
        .unwrap_or(steps.len());
    if ends + 1 < steps.len() {
        return Err(format!("steps after the end: {steps:?}"));
    }
    for s in steps {
        match s {
            Step::Send(b) | Step::Close(b, _) if !a_reply(b) => {
                return Err(format!("a malformed reply {b:02x?}"));
            }
            Step::Request(r) => {
                if let Host::Name(n) = &r.target.host
                    && (n.is_empty()
                        || n.len() > MAX_FIELD
                        || n.bytes().any(|b| b <= b' ' || b == 0x7f))
                {
                    return Err(format!("a name no resolver takes: {n:?}"));
                }
            }
            _ => {}
        }
    }
    if ends == steps.len() && input.len() > 2 * MAX_FIELD + 10 + 16 && !whole.1.is_empty() {
        // Still negotiating after more input than any negotiation needs.
        return Err(format!("{} bytes and no end", input.len()));
    }
    Ok(())
}

/// A datagram's header, checked: what parses, wrapped again from its address, parses the same.
pub(crate) fn check_datagram(d: &[u8]) -> Result<(), String> {
    let Ok((t, data)) = udp_header::parse(d) else {
        return Ok(());
    };
    if data.len() > d.len() {
        return Err("more data than the datagram".into());
    }
    if let Some(a) = t.addr() {
        let mut again = Vec::new();
        udp_header::wrap_into(&mut again, a, data);
        let (t2, data2) = udp_header::parse(&again).map_err(|e| format!("{e:?}"))?;
        if (t2, data2)
            != (
                Target::ip(SocketAddr::new(a.ip().to_canonical(), a.port())),
                data,
            )
        {
            return Err(format!("{d:02x?} wraps to {again:02x?}"));
        }
    }
    Ok(())
}

#[test]
#[ignore]
fn fuzz_negotiation() {
    let seeds = seeds();
    campaign("negotiation", |rng| {
        let seed = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let input = mutate(seed, &rng.edits(6), other);
        let cuts: Vec<usize> = (0..rng.below(6)).map(|_| rng.below(1 << 20)).collect();
        let creds: Option<&[(&str, &str)]> = match rng.below(3) {
            0 => Some(&[("u", "p"), ("joe", "pw")]),
            _ => None,
        };
        check_negotiation(creds, &input, &cuts).map_err(|e| format!("{e}: {input:02x?}"))
    });
}

#[test]
#[ignore]
fn fuzz_udp_header() {
    let mut seeds = Vec::new();
    for from in ["10.0.0.1:53", "[::1]:7", "[::ffff:10.0.0.1]:53"] {
        let mut d = Vec::new();
        udp_header::wrap_into(&mut d, from.parse().unwrap(), b"payload");
        seeds.push(d);
    }
    seeds.push(b"\x00\x00\x00\x03\x09localhost\x00\x07hi".to_vec());
    seeds.push(b"\x00\x00\x00\x03\x05[::1]\x00\x07".to_vec());
    campaign("udp header", |rng| {
        let seed = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let d = mutate(seed, &rng.edits(6), other);
        check_datagram(&d).map_err(|e| format!("{e}: {d:02x?}"))
    });
}
