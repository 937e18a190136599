//! Conditional requests (RFC 9110 section 13), sans-IO: a request's preconditions evaluated
//! against what a response would carry, in the order of section 13.2.2.
//!
//! twistd evaluates only `If-Modified-Since`. nginx evaluates the others too but not in the
//! RFC's order, and answers 412 where the RFC says to ignore a field (an `If-Unmodified-Since`
//! that is no date, or that comes with an `If-Match`); here the RFC is followed (see the
//! README's "How twistrs differs").

/// What a response can be compared with: its entity tag (a strong one, with its quotes, as
/// `resource.rs` makes them) and its modification time in whole seconds, as its
/// Last-Modified says. A generated page (a listing) has neither.
#[derive(Clone, Copy, Debug, Default)]
pub struct Validators<'a> {
    pub etag: Option<&'a [u8]>,
    pub modified: Option<u64>,
}

/// A request's precondition fields as they came (several lines of one joined with `, `).
#[derive(Clone, Copy, Debug, Default)]
pub struct Preconditions<'a> {
    pub if_match: Option<&'a [u8]>,
    pub if_unmodified_since: Option<&'a [u8]>,
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
}

/// What the preconditions decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Go on to answer the request (Range and If-Range still to be looked at).
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// Evaluates the preconditions of a request for a representation that exists (the RFC's
/// section 13.2.1: a request that would not get a 2xx without them, a 404 or a redirect, is
/// answered as if they were not there, so the caller asks only for a response it would send
/// with a 200). `get_or_head`: an `If-None-Match` that matches gives 304 then, 412 otherwise,
/// and `If-Modified-Since` counts only then.
pub fn evaluate(p: &Preconditions<'_>, v: &Validators<'_>, get_or_head: bool) -> Outcome {
    // 1. If-Match, else 2. If-Unmodified-Since.
    if let Some(im) = p.if_match {
        if !if_match_holds(im, v) {
            return Outcome::Failed;
        }
    } else if let (Some(since), Some(modified)) =
        (p.if_unmodified_since.and_then(http_date), v.modified)
        && modified > since
    {
        return Outcome::Failed;
    }
    // 3. If-None-Match, else 4. If-Modified-Since.
    if let Some(inm) = p.if_none_match {
        if !if_none_match_holds(inm, v) {
            return if get_or_head {
                Outcome::NotModified
            } else {
                Outcome::Failed
            };
        }
    } else if get_or_head
        && let (Some(since), Some(modified)) = (p.if_modified_since.and_then(http_date), v.modified)
        // Not modified since: the time it names or later (twistd's and the RFC's test; nginx
        // by default wants the very second of Last-Modified).
        && modified <= since
    {
        return Outcome::NotModified;
    }
    Outcome::Proceed
}

/// Whether an `If-Range` lets a Range apply (RFC 9110 13.1.5): an entity tag that is the
/// response's, compared strongly (a weak tag never matches), or a date that is its
/// Last-Modified to the second. Anything else, a malformed value included, sends the whole
/// representation, which is always a right answer.
pub fn if_range_holds(value: &[u8], v: &Validators<'_>) -> bool {
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        // Exactly one tag, strong and the response's: counted as they come, nothing kept.
        let (mut count, mut first) = (0, None);
        let whole = each_tag(value, |weak, opaque| {
            count += 1;
            first.get_or_insert((weak, opaque));
        });
        return whole
            && count == 1
            && matches!(first, Some((false, opaque)) if Some(opaque) == v.etag);
    }
    matches!((http_date(value), v.modified), (Some(d), Some(m)) if d == m)
}

/// `If-Match` (RFC 9110 13.1.1): `*` holds for any representation there is; a list holds if
/// one of its tags matches the response's strongly (a weak tag never does). A value that is
/// neither does not hold (the RFC's "otherwise, the condition is false"): a client that asked
/// for a precondition gets 412 rather than a response it did not ask for.
fn if_match_holds(value: &[u8], v: &Validators<'_>) -> bool {
    if value == b"*" {
        return true;
    }
    let mut hit = false;
    let whole = each_tag(value, |weak, opaque| {
        hit |= !weak && Some(opaque) == v.etag;
    });
    whole && hit
}

/// `If-None-Match` (RFC 9110 13.1.2): `*` fails for any representation there is; a list fails
/// if one of its tags matches the response's weakly (`W/` aside). A value that is neither
/// holds (the RFC's "otherwise, the condition is true"): the response is sent.
fn if_none_match_holds(value: &[u8], v: &Validators<'_>) -> bool {
    if value == b"*" {
        return false;
    }
    let mut hit = false;
    let whole = each_tag(value, |_, opaque| hit |= Some(opaque) == v.etag);
    !(whole && hit)
}

/// Calls `f(weak, opaque)` for each entity tag of a list (`#entity-tag`, RFC 9110 8.8.3 and
/// 5.6.1: tags separated by commas and optional whitespace, empty elements allowed; the
/// opaque tag with its quotes, and a comma inside the quotes is part of it). False if the
/// value is not such a list.
fn each_tag<'a>(value: &'a [u8], mut f: impl FnMut(bool, &'a [u8])) -> bool {
    let etagc = |b: u8| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80;
    let ows = |b: u8| b == b' ' || b == b'\t';
    let mut i = 0;
    loop {
        while value.get(i).is_some_and(|b| ows(*b) || *b == b',') {
            i += 1;
        }
        if i == value.len() {
            return true;
        }
        let weak = value[i..].starts_with(b"W/");
        if weak {
            i += 2;
        }
        if value.get(i) != Some(&b'"') {
            return false;
        }
        let start = i;
        i += 1;
        while value.get(i).is_some_and(|b| etagc(*b)) {
            i += 1;
        }
        if value.get(i) != Some(&b'"') {
            return false;
        }
        i += 1;
        f(weak, &value[start..i]);
        while value.get(i).is_some_and(|b| ows(*b)) {
            i += 1;
        }
        match value.get(i) {
            None => return true,
            Some(b',') => {}
            Some(_) => return false,
        }
    }
}

/// An HTTP-date (any of the three forms a recipient must read, RFC 9110 5.6.7) in seconds
/// since 1970; None for anything else, a list of dates included.
fn http_date(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    let t = httpdate::parse_http_date(s).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    const ETAG: &[u8] = b"\"65937d25-0-a\"";
    /// Tue, 02 Jan 2024 03:04:05 GMT.
    const MTIME: u64 = 1_704_164_645;
    const LM: &str = "Tue, 02 Jan 2024 03:04:05 GMT";
    const EARLIER: &str = "Mon, 01 Jan 2024 00:00:00 GMT";
    const LATER: &str = "Wed, 01 Jan 2025 00:00:00 GMT";

    fn file() -> Validators<'static> {
        Validators {
            etag: Some(ETAG),
            modified: Some(MTIME),
        }
    }

    /// The outcome of a GET carrying `fields` (name, value; `{E}` is the file's tag).
    fn get(fields: &[(&str, &str)], v: &Validators<'_>) -> Outcome {
        ask(fields, v, true)
    }

    fn ask(fields: &[(&str, &str)], v: &Validators<'_>, get_or_head: bool) -> Outcome {
        let e = std::str::from_utf8(ETAG).unwrap();
        let mut slots: [Option<Vec<u8>>; 4] = Default::default();
        for (name, value) in fields {
            let i = [
                "If-Match",
                "If-Unmodified-Since",
                "If-None-Match",
                "If-Modified-Since",
            ]
            .iter()
            .position(|n| n == name)
            .unwrap();
            let value = value.replace("{E}", e).into_bytes();
            slots[i] = Some(value);
        }
        let p = Preconditions {
            if_match: slots[0].as_deref(),
            if_unmodified_since: slots[1].as_deref(),
            if_none_match: slots[2].as_deref(),
            if_modified_since: slots[3].as_deref(),
        };
        evaluate(&p, v, get_or_head)
    }

    #[test]
    fn if_match_compares_strongly_and_fails_with_412() {
        let f = file();
        for (value, want) in [
            ("{E}", Proceed),
            ("*", Proceed),
            ("\"nope\", {E}", Proceed),
            ("{E} , \"x\"", Proceed),
            ("\"x\",,{E},", Proceed),
            ("\t{E}\t", Proceed),
            ("\"nope\"", Failed),
            // A weak tag never matches strongly, its own tag's weak form included.
            ("W/{E}", Failed),
            ("W/\"nope\", W/{E}", Failed),
            // Neither `*` nor a list of tags: false, as nginx answers too.
            ("garbage", Failed),
            ("{E}, garbage", Failed),
            ("*, {E}", Failed),
            ("\"65937d25-0-a", Failed),
            ("65937d25-0-a", Failed),
            ("{E}x", Failed),
            // An empty list matches nothing.
            ("", Failed),
            (",", Failed),
        ] {
            assert_eq!(get(&[("If-Match", value)], &f), want, "If-Match: {value}");
        }
        // A comma inside the quotes is part of the tag.
        let odd = Validators {
            etag: Some(b"\"a,b\""),
            modified: None,
        };
        assert_eq!(get(&[("If-Match", "\"a,b\"")], &odd), Proceed);
        assert_eq!(get(&[("If-Match", "\"a\", \"b\"")], &odd), Failed);
        // Bytes above 0x7f may be in a tag (obs-text).
        let high = Validators {
            etag: Some(b"\"caf\xe9\""),
            modified: None,
        };
        let p = Preconditions {
            if_match: Some(b"\"x\", \"caf\xe9\""),
            ..Default::default()
        };
        assert_eq!(evaluate(&p, &high, true), Proceed);
        // A listing: there is a representation, but no tag to match.
        let listing = Validators::default();
        assert_eq!(get(&[("If-Match", "*")], &listing), Proceed);
        assert_eq!(get(&[("If-Match", "{E}")], &listing), Failed);
    }

    #[test]
    fn if_unmodified_since_only_without_if_match_and_only_a_date() {
        let f = file();
        for (value, want) in [
            (LM, Proceed),
            (LATER, Proceed),
            (EARLIER, Failed),
            // Not a date: ignored (nginx answers 412).
            ("garbage", Proceed),
            ("", Proceed),
            // Two dates are no date (RFC 9110 13.1.4).
            (&format!("{EARLIER}, {EARLIER}"), Proceed),
            // RFC 850 and asctime dates are read too.
            ("Monday, 01-Jan-24 00:00:00 GMT", Failed),
            ("Mon Jan  1 00:00:00 2024", Failed),
        ] {
            assert_eq!(
                get(&[("If-Unmodified-Since", value)], &f),
                want,
                "If-Unmodified-Since: {value}"
            );
        }
        // With an If-Match it is not looked at (nginx looks at both).
        assert_eq!(
            get(&[("If-Match", "{E}"), ("If-Unmodified-Since", EARLIER)], &f),
            Proceed
        );
        assert_eq!(
            get(&[("If-Match", "\"x\""), ("If-Unmodified-Since", LATER)], &f),
            Failed
        );
        // A listing has no date: ignored (nginx answers 412).
        assert_eq!(
            get(&[("If-Unmodified-Since", EARLIER)], &Validators::default()),
            Proceed
        );
    }

    #[test]
    fn if_none_match_compares_weakly_and_wins_over_if_modified_since() {
        let f = file();
        for (value, want) in [
            ("{E}", NotModified),
            ("W/{E}", NotModified),
            ("\"x\", {E}", NotModified),
            ("*", NotModified),
            ("\"x\"", Proceed),
            ("", Proceed),
            // Not a list of tags: true, the response is sent.
            ("garbage", Proceed),
            ("*, {E}", Proceed),
            ("{E}, garbage", Proceed),
        ] {
            assert_eq!(
                get(&[("If-None-Match", value)], &f),
                want,
                "If-None-Match: {value}"
            );
        }
        // For a method other than GET and HEAD a match fails instead.
        assert_eq!(ask(&[("If-None-Match", "{E}")], &f, false), Failed);
        assert_eq!(ask(&[("If-None-Match", "\"x\"")], &f, false), Proceed);
        // If-None-Match decides alone, If-Modified-Since is not looked at.
        assert_eq!(
            get(
                &[("If-None-Match", "{E}"), ("If-Modified-Since", EARLIER)],
                &f
            ),
            NotModified
        );
        assert_eq!(
            get(&[("If-None-Match", "\"x\""), ("If-Modified-Since", LM)], &f),
            Proceed
        );
        // A listing: `*` still matches what is there.
        let listing = Validators::default();
        assert_eq!(get(&[("If-None-Match", "*")], &listing), NotModified);
        assert_eq!(get(&[("If-None-Match", "{E}")], &listing), Proceed);
    }

    #[test]
    fn if_modified_since_as_twistd() {
        let f = file();
        for (value, want) in [
            (LM, NotModified),
            (LATER, NotModified),
            (EARLIER, Proceed),
            ("garbage", Proceed),
            (&format!("{LM}, {LM}"), Proceed),
        ] {
            assert_eq!(
                get(&[("If-Modified-Since", value)], &f),
                want,
                "If-Modified-Since: {value}"
            );
        }
        assert_eq!(
            ask(&[("If-Modified-Since", LM)], &f, false),
            Proceed,
            "only for GET and HEAD"
        );
        assert_eq!(
            get(&[("If-Modified-Since", LATER)], &Validators::default()),
            Proceed,
            "nothing to compare a listing with"
        );
    }

    #[test]
    fn the_order_of_section_13_2_2() {
        let f = file();
        // A failed If-Match or If-Unmodified-Since wins over a matching If-None-Match.
        assert_eq!(
            get(&[("If-Match", "\"x\""), ("If-None-Match", "{E}")], &f),
            Failed
        );
        assert_eq!(
            get(
                &[("If-Unmodified-Since", EARLIER), ("If-None-Match", "{E}")],
                &f
            ),
            Failed
        );
        assert_eq!(
            get(&[("If-Match", "{E}"), ("If-None-Match", "{E}")], &f),
            NotModified
        );
        assert_eq!(
            get(&[("If-Match", "{E}"), ("If-Modified-Since", LM)], &f),
            NotModified
        );
        assert_eq!(get(&[], &f), Proceed);
    }

    #[test]
    fn if_range_strong_tag_or_exact_date() {
        let f = file();
        let e = std::str::from_utf8(ETAG).unwrap();
        for (value, want) in [
            (e.to_string(), true),
            (format!("W/{e}"), false),
            ("\"stale\"".to_string(), false),
            (format!("{e}, {e}"), false),
            (format!("{e}x"), false),
            (LM.to_string(), true),
            (LATER.to_string(), false),
            (EARLIER.to_string(), false),
            ("garbage".to_string(), false),
            (String::new(), false),
        ] {
            assert_eq!(
                if_range_holds(value.as_bytes(), &f),
                want,
                "If-Range: {value}"
            );
        }
        assert!(!if_range_holds(LM.as_bytes(), &Validators::default()));
    }
}
