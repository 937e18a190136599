//! BIND's `$GENERATE start-stop[/step] lhs [ttl] [class] type rhs`, expanded into plain
//! records before a file reaches `domain`'s scanner (which has no `$GENERATE`).
//!
//! In `lhs` and `rhs`, `$` is the counter, `${offset[,width[,base]]}` the counter plus
//! `offset`, zero-padded to `width`, in base `d`, `o`, `x`, `X`, `n` or `N` (nibbles, low
//! first, each followed by a dot, as for ip6.arpa), and `\$` (or `$$`) a literal `$`, as
//! BIND's manual says. Each expanded record takes the `$GENERATE`'s line, so an error in one
//! still names the file and line.

use std::borrow::Cow;

/// Records one `$GENERATE` may make (BIND has no limit; 65,536 covers any /16 of PTRs).
pub const MAX_RANGE: u64 = 65_536;
/// Records every `$GENERATE` of one zone may make together.
pub const MAX_TOTAL: u64 = 1_000_000;
/// The longest text of one generated record: an owner and a target of 255 octets, each
/// octet escaped (`\DDD`), with the TTL, class and type between. The record limits bound
/// memory only if records are bounded too: 65,536 copies of a 100 KB line are 6.5 GB.
const MAX_RECORD: usize = 2 * 1024 + 64;

/// The expanded text, and for each of its lines the line it came from (`None`: unchanged).
pub type Expanded<'a> = (Cow<'a, [u8]>, Option<Vec<usize>>);

/// `text` with each `$GENERATE` replaced by its records, and for each line of the result
/// the line of `text` it came from (`None`: the text had no `$GENERATE` and is unchanged).
/// `budget` is what the zone may still generate. An error is (line, why).
pub fn expand<'a>(text: &'a [u8], budget: &mut u64) -> Result<Expanded<'a>, (usize, String)> {
    if !contains_ci(text, b"$GENERATE") {
        return Ok((Cow::Borrowed(text), None));
    }
    let mut out = Vec::with_capacity(text.len());
    let mut map = Vec::new();
    let (mut parens, mut quoted) = (0usize, false);
    for (i, line) in text.split_inclusive(|b| *b == b'\n').enumerate() {
        let n = i + 1;
        let at_start = parens == 0 && !quoted;
        if at_start
            && starts_ci(line, b"$GENERATE")
            && line.get(9).is_some_and(u8::is_ascii_whitespace)
        {
            let s =
                std::str::from_utf8(line).map_err(|_| (n, "$GENERATE: not UTF-8".to_string()))?;
            for rec in generate(strip_comment(s), budget).map_err(|e| (n, e))? {
                out.extend_from_slice(rec.as_bytes());
                out.push(b'\n');
                map.push(n);
            }
            continue;
        }
        track(line, &mut parens, &mut quoted);
        out.extend_from_slice(line);
        map.push(n);
    }
    Ok((Cow::Owned(out), Some(map)))
}

/// Follows parentheses and quotes over one line, as the scanner does.
fn track(line: &[u8], parens: &mut usize, quoted: &mut bool) {
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'\\' => i += 1,
            b'"' => *quoted = !*quoted,
            _ if *quoted => {}
            b';' => return,
            b'(' => *parens += 1,
            b')' => *parens = parens.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
}

fn strip_comment(s: &str) -> &str {
    let b = s.as_bytes();
    let (mut i, mut quoted) = (0, false);
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'"' => quoted = !quoted,
            b';' if !quoted => return &s[..i],
            _ => {}
        }
        i += 1;
    }
    s
}

fn starts_ci(line: &[u8], word: &[u8]) -> bool {
    line.len() >= word.len() && line[..word.len()].eq_ignore_ascii_case(word)
}

fn contains_ci(text: &[u8], word: &[u8]) -> bool {
    text.windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word))
}

/// The records of one `$GENERATE` line (its comment removed).
pub fn generate(line: &str, budget: &mut u64) -> Result<Vec<String>, String> {
    let t = tokens(line)?;
    let t: Vec<&str> = t.iter().map(String::as_str).collect();
    if t.len() < 5 || t.len() > 7 {
        return Err("$GENERATE takes start-stop[/step] lhs [ttl] [class] type rhs".into());
    }
    let (start, stop, step) = range(t[1])?;
    let count = (stop - start) / step + 1;
    if count > MAX_RANGE {
        return Err(format!(
            "$GENERATE {}: {count} records, over {MAX_RANGE}",
            t[1]
        ));
    }
    if count > *budget {
        return Err(format!(
            "$GENERATE {}: over {MAX_TOTAL} generated records in one zone",
            t[1]
        ));
    }
    *budget -= count;
    let (lhs, middle, rhs) = (t[2], t[3..t.len() - 1].join(" "), t[t.len() - 1]);
    let mut out = Vec::with_capacity(count as usize);
    // By rank, not by adding `step` to the counter: past `stop`, that sum can overflow.
    for k in 0..count {
        let i = start + k * step;
        let rec = format!("{} {middle} {}", substitute(lhs, i)?, substitute(rhs, i)?);
        if rec.len() > MAX_RECORD {
            return Err(format!(
                "$GENERATE {}: a record longer than {MAX_RECORD} bytes",
                t[1]
            ));
        }
        out.push(rec);
    }
    Ok(out)
}

/// The words of a `$GENERATE` line. A word in double quotes is one word, its quotes
/// dropped: BIND reads the right-hand side as one quoted string and hands what it makes
/// (`"a b c d"`: four strings of a TXT) to the record parser, as here.
fn tokens(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => {
                        word.push('\\');
                        word.extend(chars.next());
                    }
                    Some(c) => word.push(c),
                    None => return Err("$GENERATE: a quote not closed".into()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                word.push(c);
                if c == '\\' {
                    word.extend(chars.next());
                }
            }
        }
        out.push(word);
    }
    Ok(out)
}

fn range(s: &str) -> Result<(u64, u64, u64), String> {
    let bad = || format!("$GENERATE: bad range {s:?} (start-stop[/step])");
    let (r, step) = match s.split_once('/') {
        Some((r, st)) => (r, st.parse::<u64>().map_err(|_| bad())?),
        None => (s, 1),
    };
    let (a, b) = r.split_once('-').ok_or_else(bad)?;
    let (a, b) = (
        a.parse::<u32>().map_err(|_| bad())?,
        b.parse::<u32>().map_err(|_| bad())?,
    );
    if a > b || step == 0 {
        return Err(bad());
    }
    Ok((a.into(), b.into(), step))
}

/// `$`, `${offset,width,base}`, `\$` and `$$` in `pat` for counter `i`.
fn substitute(pat: &str, i: u64) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = pat.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            // Kept escaped, as BIND does (the scanner reads `\$` as `$`): a bare `$` that
            // starts a generated line would be taken for a directive.
            '\\' if chars.peek().is_some_and(|(_, n)| *n == '$') => {
                chars.next();
                out.push_str("\\$");
            }
            '\\' => {
                out.push('\\');
                if let Some((_, n)) = chars.next() {
                    out.push(n);
                }
            }
            '$' if chars.peek().is_some_and(|(_, n)| *n == '$') => {
                chars.next();
                out.push_str("\\$");
            }
            '$' if chars.peek().is_some_and(|(_, n)| *n == '{') => {
                let rest = &pat[at + 2..];
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("$GENERATE: no closing brace in {pat:?}"))?;
                out.push_str(&modifier(&rest[..end], i)?);
                for _ in 0..end + 2 {
                    chars.next();
                }
            }
            '$' => out.push_str(&i.to_string()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `offset[,width[,base]]` applied to `i`.
fn modifier(spec: &str, i: u64) -> Result<String, String> {
    let bad = || format!("$GENERATE: bad modifier ${{{spec}}}");
    let mut parts = spec.split(',');
    let offset: i64 = match parts.next().map(str::trim) {
        Some("") | None => 0,
        Some(o) => o.parse().map_err(|_| bad())?,
    };
    let width: usize = match parts.next() {
        Some(w) => w.trim().parse().map_err(|_| bad())?,
        None => 0,
    };
    if width > 255 {
        return Err(bad());
    }
    let base = parts.next().map_or("d", str::trim);
    if parts.next().is_some() {
        return Err(bad());
    }
    let v = i64::try_from(i)
        .ok()
        .and_then(|i| i.checked_add(offset))
        .filter(|v| *v >= 0)
        .ok_or_else(|| format!("$GENERATE: ${{{spec}}} makes {i} negative"))? as u64;
    Ok(match base {
        "d" => format!("{v:0width$}"),
        "o" => format!("{v:0width$o}"),
        "x" => format!("{v:0width$x}"),
        "X" => format!("{v:0width$X}"),
        "n" | "N" => nibbles(v, width, base == "N"),
        _ => return Err(bad()),
    })
}

/// BIND's nibble form (its `nibbles()` in lib/dns/master.c): hex digits low first, a dot
/// after each while digits or `width` (dots counted) remain.
fn nibbles(v: u64, width: usize, upper: bool) -> String {
    let (mut v, mut width, mut out) = (v, width, String::new());
    loop {
        let c = char::from_digit((v & 15) as u32, 16).unwrap_or('0');
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        v >>= 4;
        width = width.saturating_sub(1);
        if width > 0 || v != 0 {
            out.push('.');
            width = width.saturating_sub(1);
        }
        if v == 0 && width == 0 {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_one(line: &str) -> Result<Vec<String>, String> {
        generate(line, &mut MAX_TOTAL.clone())
    }

    #[test]
    fn counters_and_modifiers_as_bind_writes_them() {
        assert_eq!(
            expand_one("$GENERATE 1-3 host$ A 192.0.2.$").unwrap(),
            [
                "host1 A 192.0.2.1",
                "host2 A 192.0.2.2",
                "host3 A 192.0.2.3"
            ]
        );
        assert_eq!(
            expand_one("$GENERATE 0-4/2 $ 60 IN PTR h${10,3,d}.example.").unwrap(),
            [
                "0 60 IN PTR h010.example.",
                "2 60 IN PTR h012.example.",
                "4 60 IN PTR h014.example."
            ]
        );
        assert_eq!(
            expand_one("$GENERATE 255-255 x${0,4,x}-${0,0,X}-${-255,2,o} CNAME \\$a$$").unwrap(),
            ["x00ff-FF-00 CNAME \\$a\\$"]
        );
        // BIND's manual: ${0,3,n} of 10 is "a.0", 16 is "0.1".
        assert_eq!(nibbles(10, 3, false), "a.0");
        assert_eq!(nibbles(16, 3, false), "0.1");
        assert_eq!(nibbles(0xab, 8, true), "B.A.0.0.");
        assert_eq!(nibbles(5, 0, false), "5");
    }

    #[test]
    fn bad_lines_and_ranges_are_refused() {
        assert!(
            expand_one("$GENERATE 1-3 host$ A")
                .unwrap_err()
                .contains("takes")
        );
        assert!(
            expand_one("$GENERATE 3-1 h$ A 1.2.3.$")
                .unwrap_err()
                .contains("bad range")
        );
        assert!(
            expand_one("$GENERATE 1-3/0 h$ A 1.2.3.$")
                .unwrap_err()
                .contains("bad range")
        );
        assert!(
            expand_one("$GENERATE 0-65536 h$ A 1.2.3.4")
                .unwrap_err()
                .contains("over 65536")
        );
        assert!(
            expand_one("$GENERATE 1-2 h${-5} A 1.2.3.4")
                .unwrap_err()
                .contains("negative")
        );
        assert!(
            expand_one("$GENERATE 1-2 h${0,1,q} A 1.2.3.4")
                .unwrap_err()
                .contains("modifier")
        );
        assert!(
            expand_one("$GENERATE 1-2 h${0 A 1.2.3.4")
                .unwrap_err()
                .contains("brace")
        );
        let mut budget = 100;
        assert!(generate("$GENERATE 1-60 h$ A 1.2.3.4", &mut budget).is_ok());
        assert!(
            generate("$GENERATE 1-60 g$ A 1.2.3.4", &mut budget)
                .unwrap_err()
                .contains("in one zone")
        );
    }

    #[test]
    fn expansion_keeps_lines_and_skips_parentheses() {
        let text = b"@ SOA ns hm ( 1 2\n$GENERATE 1-2 x A 1.2.3.4 )\n$generate 1-2 h$ A 192.0.2.$ ; c\nlast A 1.2.3.4";
        let (out, map) = expand(text, &mut MAX_TOTAL.clone()).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "@ SOA ns hm ( 1 2\n$GENERATE 1-2 x A 1.2.3.4 )\nh1 A 192.0.2.1\nh2 A 192.0.2.2\nlast A 1.2.3.4"
        );
        assert_eq!(map.unwrap(), [1, 2, 3, 3, 4]);
        let (out, map) = expand(b"a A 1.2.3.4\n", &mut 0).unwrap();
        assert!(matches!(out, Cow::Borrowed(_)) && map.is_none());
        let e = expand(b"\n$GENERATE 1-2 h$ A\n", &mut 10).unwrap_err();
        assert_eq!(e.0, 2);
    }

    /// A step past the range makes one record: the counter's next value is never computed
    /// (it overflowed: a panic, or in a release build a wrapped counter and a record at 0).
    #[test]
    fn a_step_beyond_the_range_makes_one_record() {
        assert_eq!(
            expand_one("$GENERATE 1-2/18446744073709551615 h$ A 1.2.3.4").unwrap(),
            ["h1 A 1.2.3.4"]
        );
        assert_eq!(
            expand_one("$GENERATE 4294967290-4294967295/4 h$ A 1.2.3.4").unwrap(),
            ["h4294967290 A 1.2.3.4", "h4294967294 A 1.2.3.4"]
        );
    }

    /// BIND keeps `\$` escaped in what it generates, and the zone parser reads it as a `$`;
    /// a bare `$` at the start of a generated line would be read as a directive instead.
    #[test]
    fn a_literal_dollar_stays_escaped() {
        assert_eq!(
            expand_one("$GENERATE 1-1 \\$h$ A 1.2.3.4").unwrap(),
            ["\\$h1 A 1.2.3.4"]
        );
        assert_eq!(
            expand_one("$GENERATE 1-1 $$h$ TXT a$$").unwrap(),
            ["\\$h1 TXT a\\$"]
        );
    }

    /// A line 65,536 records copy is bounded: one generated record longer than any owner,
    /// TTL, class, type and target could be is an error, before 65,536 copies are made.
    #[test]
    fn a_generated_record_longer_than_any_record_is_refused() {
        let long = "x".repeat(100_000);
        for line in [
            format!("$GENERATE 0-1 h$ {long} A 1.2.3.4"),
            format!("$GENERATE 0-1 {long}$ A 1.2.3.4"),
            format!("$GENERATE 0-1 h$ TXT {long}"),
        ] {
            let e = expand_one(&line).unwrap_err();
            assert!(e.contains("longer than"), "{e}");
        }
        // The longest owner and target BIND could write (every octet escaped) still fit.
        let name = vec!["\\065".repeat(62); 4].join(".");
        let ok = format!("$GENERATE 1-2 {name}$ 2147483647 IN TYPE65535 {name}$");
        assert_eq!(expand_one(&ok).unwrap().len(), 2);
    }

    /// A quoted right-hand side is one word, made into the record text without its quotes,
    /// as BIND does: `"a b c d"` is four strings, `"v=$ x"` is `v=1 x`.
    #[test]
    fn a_quoted_right_hand_side_is_one_word() {
        assert_eq!(
            expand_one("$GENERATE 1-2 k$ TXT \"a b c d\"").unwrap(),
            ["k1 TXT a b c d", "k2 TXT a b c d"]
        );
        assert_eq!(
            expand_one("$GENERATE 1-2 v$ 60 IN TXT \"v=$ x\"").unwrap(),
            ["v1 60 IN TXT v=1 x", "v2 60 IN TXT v=2 x"]
        );
        assert!(
            expand_one("$GENERATE 1-2 v$ TXT \"v=$ x")
                .unwrap_err()
                .contains("not closed")
        );
        assert!(
            expand_one("$GENERATE 1-2 v$ TXT \"a\" \"b\" \"c\" \"d\"")
                .unwrap_err()
                .contains("takes")
        );
    }
}
