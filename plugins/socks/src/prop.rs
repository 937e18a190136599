//! Property tests of the sans-IO parsers: the negotiation and the UDP header.
//!
//! 256 cases per property by default; a longer run by hand is
//! `PROPTEST_CASES=100000 cargo test -p twistrs-socks prop`.

use proptest::collection::vec;
use proptest::prelude::*;
use twistrs_core::testing::mutate::{edits, mutate};
use twistrs_core::testing::pieces;

use crate::fuzz;
use crate::negotiate::Step;
use crate::negotiate::tests::{run, run_parts};

/// Input that looks like SOCKS often enough to reach every state.
fn socksish() -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        Just(b"\x05\x01\x00".to_vec()),
        Just(b"\x05\x02\x00\x02".to_vec()),
        Just(b"\x05\x01\x02\x01\x01u\x01p".to_vec()),
        Just(b"\x04\x01\x00\x50".to_vec()),
        Just(b"\x04\x02\x00\x50\x00\x00\x00\x01".to_vec()),
        vec(any::<u8>(), 0..4),
    ];
    let tail = vec(
        prop_oneof![
            Just(0u8),
            Just(1u8),
            Just(3u8),
            Just(4u8),
            Just(5u8),
            any::<u8>()
        ],
        0..80,
    );
    (start, tail).prop_map(|(mut a, b)| {
        a.extend(b);
        a
    })
}

proptest! {
    #[test]
    fn the_negotiation_is_the_same_in_every_chunking(
        data in socksish(),
        cuts in vec(any::<usize>(), 0..8),
        creds in any::<bool>(),
    ) {
        let c: Option<&[(&str, &str)]> = if creds { Some(&[("u", "p")]) } else { None };
        let whole = run(c, &data, data.len());
        prop_assert_eq!(run_parts(c, &pieces(&data, &cuts)), whole.clone());
        // At most one request or refusal, and it is the last step.
        let ends = whole.0.iter().filter(|s| !matches!(s, Step::Send(_))).count();
        prop_assert!(ends <= 1);
        if ends == 1 {
            prop_assert!(!matches!(whole.0.last(), Some(Step::Send(_))));
        }
    }

    #[test]
    fn any_datagram_parses_or_is_dropped_without_panic(d in vec(any::<u8>(), 0..64)) {
        let _ = crate::udp_header::parse(&d);
    }
}

/// `PROPTEST_CASES` if set, else `n`.
fn cases(n: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(n)
}

// The campaigns of `fuzz.rs` in small form: valid negotiations and datagrams a few edits
// away from valid.
proptest! {
    // Cheap cases: more of them than the default 256 (PROPTEST_CASES still decides).
    #![proptest_config(ProptestConfig::with_cases(cases(2048)))]
    /// Every reply well formed, at most one request or refusal and last, names a resolver
    /// takes, the buffer bounded, the same outcome in any pieces.
    #[test]
    fn mutated_negotiations_keep_their_invariants(
        i in any::<proptest::sample::Index>(),
        j in any::<proptest::sample::Index>(),
        e in edits(6),
        cuts in vec(any::<usize>(), 0..6),
        creds in any::<bool>(),
    ) {
        let seeds = fuzz::seeds();
        let input = mutate(&seeds[i.index(seeds.len())], &e, &seeds[j.index(seeds.len())]);
        let c: Option<&[(&str, &str)]> = if creds { Some(&[("u", "p"), ("joe", "pw")]) } else { None };
        fuzz::check_negotiation(c, &input, &cuts).map_err(TestCaseError::fail)?;
    }

    /// A datagram header that parses wraps back to the same destination and payload.
    #[test]
    fn mutated_datagrams_parse_back(e in edits(6), six in any::<bool>()) {
        let from = if six { "[::1]:7" } else { "10.0.0.1:53" };
        let mut d = Vec::new();
        crate::udp_header::wrap_into(&mut d, from.parse().unwrap(), b"payload");
        let d = mutate(&d, &e, b"\x03\x09localhost");
        fuzz::check_datagram(&d).map_err(TestCaseError::fail)?;
    }
}
