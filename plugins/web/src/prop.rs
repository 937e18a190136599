//! Property tests of the sans-IO parsers: the request head, the chunked-body skipper, ranges,
//! the preconditions.
//!
//! Each property runs 256 cases by default (cheap enough for every `cargo test`); a longer run
//! by hand is `PROPTEST_CASES=100000 cargo test -p twistrs-web prop`.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::cond::{Outcome, Preconditions, Validators, evaluate, if_range_holds};
use crate::request::{Body, ChunkProgress, ChunkedDiscard, Head, Limits, parse_head, refused};
use crate::response::{Ranges, parse_ranges};

/// One header line's name and value, from the fields the parser acts on and arbitrary ones.
fn header() -> impl Strategy<Value = (String, String)> {
    let known = prop_oneof![
        Just(("Host".to_string(), "example.com:8080".to_string())),
        Just(("Connection".to_string(), "close".to_string())),
        Just(("Connection".to_string(), "keep-alive".to_string())),
        Just(("Expect".to_string(), "100-continue".to_string())),
        Just(("Transfer-Encoding".to_string(), "chunked".to_string())),
        "[0-9]{1,7}".prop_map(|n| ("Content-Length".to_string(), n)),
        "bytes=[0-9]{0,3}-[0-9]{0,3}".prop_map(|r| ("Range".to_string(), r)),
        "[ -~]{0,20}".prop_map(|v| ("User-Agent".to_string(), v)),
        "[ -~]{0,20}".prop_map(|v| ("Referer".to_string(), v)),
        "(\\*|(W/)?\"[a-z0-9-]{0,8}\"(, ?(W/)?\"[a-z0-9-]{0,8}\"){0,3})"
            .prop_map(|v| ("If-Match".to_string(), v)),
        "(W/)?\"[a-z0-9-]{0,8}\"".prop_map(|v| ("If-None-Match".to_string(), v)),
        Just((
            "If-Unmodified-Since".to_string(),
            "Tue, 02 Jan 2024 03:04:05 GMT".to_string()
        )),
    ];
    let any = (
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}",
        "[!-~]([ -~]{0,20}[!-~])?",
    )
        .prop_map(|(n, v)| (n, v));
    prop_oneof![known, any]
}

/// A well-formed request head, ending with its blank line.
fn valid_head() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        Just("GET".to_string()),
        Just("HEAD".to_string()),
        "[A-Z]{1,8}"
    ];
    let target = "/[A-Za-z0-9._~%/?=&-]{0,40}";
    (method, target, 0u8..=1, vec(header(), 0..8), any::<bool>()).prop_map(
        |(m, t, minor, headers, bare_lf)| {
            let eol = if bare_lf { "\n" } else { "\r\n" };
            let mut s = format!("{m} {t} HTTP/1.{minor}{eol}");
            for (n, v) in headers {
                s.push_str(&format!("{n}: {v}{eol}"));
            }
            s.push_str(eol);
            s.into_bytes()
        },
    )
}

fn limits() -> impl Strategy<Value = Limits> {
    (1usize..300, 1usize..600, 0usize..12, 0u64..1000).prop_map(|(line, bytes, n, body)| Limits {
        max_request_line: line,
        max_header_bytes: bytes,
        max_headers: n,
        max_body: body,
    })
}

/// The outcome of feeding a chunked body: where it ended (an offset into the whole input),
/// an error status, or still open.
#[derive(Debug, PartialEq, Eq)]
enum Fed {
    Done(usize),
    Error(u16),
    NeedMore,
}

/// Feeds `input` to a fresh skipper in pieces of the given sizes (the rest in one piece).
fn feed_in_pieces(input: &[u8], max: u64, sizes: &[usize]) -> Fed {
    let mut d = ChunkedDiscard::new(max);
    let mut at = 0;
    let mut sizes = sizes.iter();
    while at < input.len() {
        let n = sizes
            .next()
            .map_or(input.len() - at, |s| (*s).min(input.len() - at));
        match d.feed(&input[at..at + n]) {
            ChunkProgress::NeedMore => at += n,
            ChunkProgress::Done(k) => {
                assert!(k <= n, "Done({k}) past the {n} bytes given");
                return Fed::Done(at + k);
            }
            ChunkProgress::Error(r) => return Fed::Error(r.status),
        }
    }
    Fed::NeedMore
}

/// A well-formed chunked body (chunks, extensions, trailers), ending with its last CRLF.
fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
    let chunk = (
        vec(any::<u8>(), 1..300),
        prop::option::of("[a-z]{1,5}(=[a-z0-9]{1,5})?"),
        any::<bool>(),
    );
    (vec(chunk, 0..6), vec("[A-Za-z]{1,8}: [a-z]{0,8}", 0..3)).prop_map(|(chunks, trailers)| {
        let mut out = Vec::new();
        for (data, ext, upper) in chunks {
            let size = if upper {
                format!("{:X}", data.len())
            } else {
                format!("{:x}", data.len())
            };
            out.extend_from_slice(size.as_bytes());
            if let Some(e) = ext {
                out.extend_from_slice(format!(";{e}").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        for t in trailers {
            out.extend_from_slice(t.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    })
}

/// One entity tag: weak or not, and its opaque tag (with its quotes) from a few characters,
/// `,` and bytes above 0x7f among them, so that tags often repeat.
fn tag() -> impl Strategy<Value = (bool, Vec<u8>)> {
    let etagc = prop_oneof![Just(b'a'), Just(b'b'), Just(b','), Just(b'!'), Just(0xe9u8)];
    (any::<bool>(), vec(etagc, 0..3)).prop_map(|(weak, inner)| {
        let mut opaque = vec![b'"'];
        opaque.extend(inner);
        opaque.push(b'"');
        (weak, opaque)
    })
}

/// A Range header whose positions lie around a file of `len` bytes: inside, at the end,
/// past it, open-ended, and suffixes.
fn ranges_near(len: u64) -> impl Strategy<Value = String> {
    let pos = prop_oneof![
        0..=len.saturating_add(2),
        Just(len.saturating_sub(1)),
        any::<u64>()
    ];
    let item = prop_oneof![
        (pos.clone(), pos.clone()).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        pos.clone().prop_map(|a| format!("{a}-")),
        pos.prop_map(|n| format!("-{n}")),
    ];
    vec(item, 1..18).prop_map(|items| format!("bytes={}", items.join(",")))
}

proptest! {
    /// No input makes the head parser panic, and what it returns keeps within the limits: a
    /// head it waits on never exceeds the header bytes (so a connection's buffer is bounded),
    /// and a head it accepts fits every limit.
    #[test]
    fn head_parser_never_panics_and_keeps_its_limits(
        buf in prop_oneof![
            vec(any::<u8>(), 0..1024),
            valid_head(),
            // A head still arriving.
            (valid_head(), any::<prop::sample::Index>())
                .prop_map(|(h, i)| h[..i.index(h.len())].to_vec()),
        ],
        l in limits(),
    ) {
        match parse_head(&buf, &l) {
            Head::Partial => {
                prop_assert!(buf.len() <= l.max_header_bytes);
                if !buf.contains(&b'\n') {
                    prop_assert!(buf.len() <= l.max_request_line);
                }
            }
            Head::Complete(req, used) => {
                prop_assert!(used <= buf.len() && used <= l.max_header_bytes);
                let head = &buf[..used];
                let line = head.iter().position(|b| *b == b'\n').unwrap_or(used);
                prop_assert!(line <= l.max_request_line);
                let lines = head.iter().filter(|b| **b == b'\n').count();
                prop_assert!(lines >= 2 && lines - 2 <= l.max_headers);
                if let Some(Body::Length(n)) = req.body {
                    prop_assert!(n <= l.max_body);
                }
            }
            Head::Error(r) => {
                prop_assert!([400, 413, 414, 417, 431, 501, 505].contains(&r.status), "{:?}", r);
            }
        }
    }

    /// A head arriving in two pieces, split anywhere, waits until it is whole and then parses
    /// as it does in one piece, whatever follows it.
    #[test]
    fn a_head_split_anywhere_parses_the_same(head in valid_head(), next in vec(any::<u8>(), 0..64)) {
        let l = Limits::default();
        for k in 0..head.len() {
            prop_assert!(matches!(parse_head(&head[..k], &l), Head::Partial), "prefix {}", k);
        }
        let whole = format!("{:?}", parse_head(&head, &l));
        let mut pipelined = head.clone();
        pipelined.extend_from_slice(&next);
        prop_assert_eq!(format!("{:?}", parse_head(&pipelined, &l)), whole);
    }

    /// The chunked skipper never panics, and how the input is cut into pieces never changes
    /// where the body ends or which error it gets.
    #[test]
    fn chunked_skipper_is_indifferent_to_pieces(
        input in prop_oneof![vec(any::<u8>(), 0..1024), chunked_body()],
        sizes in vec(1usize..64, 0..40),
        max in 0u64..2000,
    ) {
        let whole = feed_in_pieces(&input, max, &[]);
        prop_assert_eq!(feed_in_pieces(&input, max, &sizes), whole);
        let bytewise = vec![1; input.len()];
        prop_assert_eq!(feed_in_pieces(&input, max, &bytewise), feed_in_pieces(&input, max, &[]));
    }

    /// A well-formed chunked body, fed in any pieces, ends exactly at its last byte.
    #[test]
    fn a_chunked_body_ends_where_it_ends(
        body in chunked_body(),
        sizes in vec(1usize..64, 0..40),
    ) {
        let mut input = body.clone();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        prop_assert_eq!(feed_in_pieces(&input, 1 << 20, &sizes), Fed::Done(body.len()));
    }

    /// No field values make the preconditions panic, and they answer as the RFC's order
    /// says whatever the values: a 304 only for GET or HEAD, a 412 never from If-None-Match
    /// of a GET, If-Modified-Since never against an If-None-Match.
    #[test]
    fn preconditions_never_panic_and_keep_their_order(
        fields in vec(prop::option::of(vec(any::<u8>(), 0..40)), 4),
        etag in prop::option::of(vec(any::<u8>(), 0..12)),
        modified in prop::option::of(any::<u64>()),
        get_or_head in any::<bool>(),
    ) {
        let p = Preconditions {
            if_match: fields[0].as_deref(),
            if_unmodified_since: fields[1].as_deref(),
            if_none_match: fields[2].as_deref(),
            if_modified_since: fields[3].as_deref(),
        };
        let v = Validators { etag: etag.as_deref(), modified };
        let got = evaluate(&p, &v, get_or_head);
        if got == Outcome::NotModified {
            prop_assert!(get_or_head);
        }
        if p.if_match.is_none() && p.if_unmodified_since.is_none() {
            prop_assert!(got != Outcome::Failed || !get_or_head);
        }
        // Without If-None-Match, If-Modified-Since alone may give 304; with it, its value
        // does not count.
        if p.if_none_match.is_some() {
            let without = Preconditions { if_modified_since: None, ..p };
            prop_assert_eq!(evaluate(&without, &v, get_or_head), got);
        }
        if let Some(ir) = fields[0].as_deref() {
            let _ = if_range_holds(ir, &v);
        }
    }

    /// A list of entity tags, however it is spaced and with empty elements, matches a
    /// response's tag as RFC 9110 8.8.3.2 says: If-Match when one of its strong tags is
    /// that tag, If-None-Match when one of its tags, weak or strong, has its opaque tag.
    #[test]
    fn a_list_of_tags_matches_as_the_rfc_compares(
        tags in vec(tag(), 0..5),
        seps in vec(prop_oneof![Just(","), Just(", "), Just(" ,\t"), Just(",,"), Just(" , , ")], 5),
        (_, ours) in tag(),
    ) {
        let mut list = Vec::new();
        for (i, (weak, opaque)) in tags.iter().enumerate() {
            if i > 0 {
                list.extend_from_slice(seps[i].as_bytes());
            }
            if *weak {
                list.extend_from_slice(b"W/");
            }
            list.extend_from_slice(opaque);
        }
        let v = Validators { etag: Some(&ours), modified: None };
        let strong = tags.iter().any(|(weak, o)| !weak && *o == ours);
        let weak = tags.iter().any(|(_, o)| *o == ours);
        let im = Preconditions { if_match: Some(&list), ..Default::default() };
        prop_assert_eq!(evaluate(&im, &v, true) == Outcome::Proceed, strong, "If-Match: {:?}", String::from_utf8_lossy(&list));
        let inm = Preconditions { if_none_match: Some(&list), ..Default::default() };
        prop_assert_eq!(evaluate(&inm, &v, true) == Outcome::NotModified, weak, "If-None-Match: {:?}", String::from_utf8_lossy(&list));
    }

    /// A head refused after its request line shows that line, and the same User-Agent and
    /// Referer, whatever the pieces it came in; a head refused in its line shows `-`
    /// whatever the pieces too.
    #[test]
    fn a_refused_head_shows_the_same_line_in_any_pieces(
        buf in prop_oneof![
            vec(any::<u8>(), 0..300),
            (valid_head(), vec(any::<u8>(), 1..8), any::<prop::sample::Index>()).prop_map(|(mut h, junk, i)| {
                // Junk put somewhere into a valid head, often making it refused.
                let at = i.index(h.len());
                h.splice(at..at, junk);
                h
            }),
        ],
        cut in vec(1usize..40, 0..20),
    ) {
        let l = Limits::default();
        let mut whole = None;
        for k in 1..=buf.len() {
            if let Head::Error(r) = parse_head(&buf[..k], &l) {
                whole = Some((r.status, refused(&buf[..k], &l)));
                break;
            }
        }
        let mut at = 0;
        let mut sizes = cut.iter().chain(std::iter::repeat(&usize::MAX));
        let mut pieces = None;
        while at < buf.len() {
            at = at.saturating_add(*sizes.next().unwrap_or(&1)).min(buf.len());
            if let Head::Error(r) = parse_head(&buf[..at], &l) {
                pieces = Some((r.status, refused(&buf[..at], &l)));
                break;
            }
            if matches!(parse_head(&buf[..at], &l), Head::Complete(..)) {
                break;
            }
        }
        if pieces.is_some() {
            prop_assert_eq!(pieces, whole);
        }
    }

    /// No Range header makes the range parser panic, every range it returns lies inside
    /// the file, and together they are no larger than the file.
    #[test]
    fn every_range_lies_inside_the_file(
        (header, len) in prop_oneof![
            (any::<String>(), any::<u64>()),
            ("bytes= ?([0-9]{0,21} ?- ?[0-9]{0,21} ?, ?){0,20}", any::<u64>()),
            prop_oneof![0u64..100, any::<u64>()].prop_flat_map(|len| (ranges_near(len), Just(len))),
        ],
    ) {
        match parse_ranges(Some(&header), len) {
            Ranges::Parts(parts) => {
                prop_assert!(!parts.is_empty() && parts.len() <= 16);
                let mut total = 0u64;
                for (a, b) in parts {
                    prop_assert!(a <= b && b < len, "{}-{} of {}", a, b, len);
                    total += b - a + 1;
                }
                prop_assert!(total <= len, "{} bytes of {}", total, len);
            }
            Ranges::Whole | Ranges::Unsatisfiable => {}
        }
    }
}
