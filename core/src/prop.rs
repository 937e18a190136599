//! Property tests of the core's sans-IO parsers: endpoint strings and line framing.
//!
//! 256 cases per property by default; a longer run by hand is
//! `PROPTEST_CASES=100000 cargo test -p twistrs-core prop`.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::endpoint::Endpoint;
use crate::line::{Line, LineReceiver};
use crate::testing::pieces;

/// The lines a receiver gives for `data` fed in `parts`: `None` for an over-long line.
fn frame(delim: &'static [u8], max: usize, parts: &[&[u8]]) -> (Vec<Option<Vec<u8>>>, usize) {
    let mut r = LineReceiver::new(delim, max);
    let mut out = Vec::new();
    for p in parts {
        r.feed(p);
        while let Some(l) = r.next_line() {
            out.push(match l {
                Line::Complete(b) => Some(b.to_vec()),
                Line::TooLong => None,
            });
        }
        assert!(
            r.buffered() <= max + delim.len() + p.len(),
            "bounded buffer"
        );
    }
    (out, r.buffered())
}

/// The same framing done the obvious way on the whole input.
fn reference(delim: &[u8], max: usize, data: &[u8]) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(delim.len()).position(|w| w == delim) {
        let line = &rest[..i];
        out.push((line.len() <= max).then(|| line.to_vec()));
        rest = &rest[i + delim.len()..];
    }
    // An unfinished line already over the limit has been reported.
    if rest.len() > max + delim.len() - 1 {
        out.push(None);
    }
    out
}

proptest! {
    #[test]
    fn any_endpoint_string_parses_or_is_refused_without_panic(s in "\\PC{0,60}") {
        let _ = s.parse::<Endpoint>();
    }

    #[test]
    fn a_parsed_endpoint_prints_back_to_itself(
        kind in prop_oneof![Just("tcp"), Just("tcp6"), Just("udp"), Just("unix")],
        port in 0u16..,
        iface in prop_oneof![Just(None), Just(Some("127.0.0.1")), Just(Some("\\:\\:1"))],
        backlog in prop::option::of(1u32..5000),
        path in "[a-zA-Z0-9/._ =:\\\\-]{1,30}",
        mode in prop::option::of(0u32..0o777),
    ) {
        let mut s = if kind == "unix" {
            format!("unix:address={}", crate::endpoint::quote_argument(&path))
        } else {
            format!("{kind}:{port}")
        };
        if kind != "unix" && let Some(i) = iface {
            s.push_str(&format!(":interface={i}"));
        }
        if kind != "udp" && let Some(b) = backlog {
            s.push_str(&format!(":backlog={b}"));
        }
        if kind == "unix" && let Some(m) = mode {
            s.push_str(&format!(":mode={m:o}"));
        }
        let Ok(ep) = s.parse::<Endpoint>() else {
            // tcp6 with an IPv4 interface and the like may be refused; refusal is fine.
            return Ok(());
        };
        let again: Endpoint = ep.to_string().parse().expect("its own string parses");
        prop_assert_eq!(again, ep);
    }

    #[test]
    fn lines_are_the_same_in_every_chunking(
        data in vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), any::<u8>()], 0..300),
        cuts in vec(any::<usize>(), 0..20),
        max in 0usize..40,
        crlf in any::<bool>(),
    ) {
        let delim: &'static [u8] = if crlf { b"\r\n" } else { b"\n" };
        let (whole, left) = frame(delim, max, &[&data]);
        let (cut, left_cut) = frame(delim, max, &pieces(&data, &cuts));
        prop_assert_eq!(&cut, &whole);
        prop_assert_eq!(left_cut, left);
        prop_assert_eq!(whole, reference(delim, max, &data));
    }
}
