//! Mutation fuzzing of the request head, paths, ranges and chunked bodies from valid
//! requests, by hand: `FUZZ_SECS=300 cargo test --release -p twistrs-web fuzz_ -- --ignored
//! --nocapture` (`FUZZ_SEED` replays a run).

use twistrs_core::testing::mutate::{campaign, mutate};
use twistrs_core::testing::pieces;

use crate::cond::{Validators, evaluate, if_range_holds};
use crate::path::decode;
use crate::request::{ChunkProgress, ChunkedDiscard, Head, Limits, parse_head, refused};
use crate::response::{Ranges, parse_ranges};

fn seeds() -> Vec<Vec<u8>> {
    [
        "GET /index.html HTTP/1.1\r\nHost: example.com:8080\r\nRange: bytes=0-9,20-,-5\r\nIf-Range: \"x\"\r\n\r\n",
        "GET /a%20b/%2e%2E/c?x=%2f HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-continue\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n",
        "PUT http://h/x/./y/ HTTP/1.1\nHost: [::1]:80\nContent-Length: 3\n\nabc",
        "HEAD /%00/%5c HTTP/1.1\r\nHost: h\r\nRange: bytes=5-2\r\nConnection: close\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: h\r\nUser-Agent: u/1\r\nReferer: http://r/\r\nIf-Match: \"x\", W/\"y\"\r\nIf-None-Match: *\r\nIf-Unmodified-Since: Tue, 02 Jan 2024 03:04:05 GMT\r\nIf-Modified-Since: Mon Jan  1 00:00:00 2024\r\nIf-Range: W/\"x\"\r\n\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// One input: the head's outcome within its limits; a path that decodes names nothing
/// outside the root; ranges inside the file; a chunked body ends at the same place in pieces.
fn check(input: &[u8], cuts: &[usize]) -> Result<(), String> {
    let limits = Limits::default();
    let (req, used) = match parse_head(input, &limits) {
        Head::Complete(req, used) => (req, used),
        Head::Error(_) => {
            // What the access log would show: a line of the input, if anything, and the
            // User-Agent and Referer bytes as they are in it.
            if let Some(r) = refused(input, &limits) {
                let shown = [
                    Some(r.line.as_bytes()),
                    r.agent.as_deref(),
                    r.referer.as_deref(),
                ];
                for field in shown.into_iter().flatten() {
                    if !input
                        .windows(field.len().max(1))
                        .any(|w| w.starts_with(field))
                    {
                        let field = String::from_utf8_lossy(field);
                        return Err(format!("logged {field:?} not in the input"));
                    }
                }
            }
            return Ok(());
        }
        Head::Partial => return Ok(()),
    };
    for (etag, modified) in [(&b"\"x\""[..], 1_704_164_645), (b"\"\"", 0)] {
        let v = Validators {
            etag: Some(etag),
            modified: Some(modified),
        };
        let _ = evaluate(&req.preconditions(), &v, true);
        if let Some(ir) = &req.if_range {
            let _ = if_range_holds(ir, &v);
        }
    }
    if used > input.len() {
        return Err("used past the input".into());
    }
    if let Ok(p) = decode(&req.target) {
        for s in &p.segments {
            let b = s.as_encoded_bytes();
            if b.is_empty() || b == b"." || b == b".." || b.iter().any(|c| b"/\\\0".contains(c)) {
                return Err(format!("segment {s:?} of {:?}", req.target));
            }
        }
    }
    for len in [0, 1, 10, 1 << 40] {
        if let Ranges::Parts(parts) = parse_ranges(req.range.as_deref(), len)
            && (parts.is_empty() || parts.iter().any(|(a, b)| a > b || *b >= len))
        {
            return Err(format!("{parts:?} of {len} for {:?}", req.range));
        }
    }
    let body = &input[used..];
    let whole = {
        let mut d = ChunkedDiscard::new(1 << 20);
        format!("{:?}", d.feed(body))
    };
    let mut d = ChunkedDiscard::new(1 << 20);
    let mut at = 0;
    let mut got = format!("{:?}", ChunkProgress::NeedMore);
    for p in pieces(body, cuts) {
        match d.feed(p) {
            ChunkProgress::NeedMore => at += p.len(),
            ChunkProgress::Done(k) => {
                got = format!("{:?}", ChunkProgress::Done(at + k));
                break;
            }
            e => {
                got = format!("{e:?}");
                break;
            }
        }
    }
    if got != whole {
        return Err(format!("chunked: {got} in pieces, {whole} whole"));
    }
    Ok(())
}

#[test]
#[ignore]
fn fuzz_request() {
    let seeds = seeds();
    campaign("request", |rng| {
        let seed = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let input = mutate(seed, &rng.edits(6), other);
        let cuts: Vec<usize> = (0..rng.below(6)).map(|_| rng.below(1 << 20)).collect();
        check(&input, &cuts).map_err(|e| format!("{e}: {:?}", String::from_utf8_lossy(&input)))
    });
}
