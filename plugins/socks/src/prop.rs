//! Property tests of the sans-IO parsers: the negotiation and the UDP header.
//!
//! 256 cases per property by default; a longer run by hand is
//! `PROPTEST_CASES=100000 cargo test -p twistrs-socks prop`.

use proptest::collection::vec;
use proptest::prelude::*;
use twistrs_core::testing::pieces;

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
