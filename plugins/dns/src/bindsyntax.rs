//! BIND zone-file syntax that `domain`'s scanner lacks, rewritten into what it reads.
//!
//! - TTLs with units (`1D`, `1h30m`, `1W`: s, m, h, d, w in either case, as BIND's
//!   `dns_ttl_fromtext`) in `$TTL`, in records' TTL fields and in the SOA's four timers.
//! - A TTL above 2^31 - 1 is read as 0, with a warning (RFC 2181 8, as BIND does).
//! - 8-bit bytes (UTF-8 in TXT strings and owner names) are written `\DDD`, which BIND and
//!   NSD read as those bytes, and the scanner does too.
//! - A record without a TTL is given the one in force (`$TTL`, else the last one given)
//!   explicitly: that state then follows `$INCLUDE` into the included file and back out of
//!   it, as BIND and NSD do, while each file's scanner starts afresh.
//!
//! - Types whose text form the scanner lacks but one it reads has the same shape are read
//!   as that one (SPF as TXT; AFSDB, RT and KX as MX; SMIMEA as TLSA; SIG as RRSIG) and noted
//!   ([`Part::stand_ins`]), for the loader to give the records their own type; URI, EUI48,
//!   EUI64, LOC, DHCID, CERT, APL, CSYNC, KEY and WKS are written in RFC 3597's generic form (`TYPEnn \# LEN HEX`).
//!
//! Only tokens are rewritten, found with the scanner's rules (quotes, `;` comments,
//! parentheses, `\` escapes), and no line end is added or removed, so every line number
//! stays what the file says.

/// The largest TTL (RFC 2181 8): above it, a TTL is read as 0.
pub const MAX_TTL: u32 = 0x7fff_ffff;

/// The TTLs a record without one takes: `$TTL`'s, else the last record's that gave one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ttls {
    pub dollar: Option<u32>,
    pub last: Option<u32>,
}

impl Ttls {
    fn current(&self) -> Option<u32> {
        self.dollar.or(self.last)
    }
}

/// A file's entries rewritten, up to and including its next `$INCLUDE`.
#[derive(Debug)]
pub struct Part {
    /// Line ends up to the first entry's line, then the entries: line numbers as in the file.
    pub text: Vec<u8>,
    /// Where the entries after the `$INCLUDE` start (`None`: the file's end was reached).
    pub next: Option<usize>,
    /// (line, why) of what was read otherwise than written.
    pub warnings: Vec<(usize, String)>,
    /// (line, type) of the records written with a stand-in type: the record read on that
    /// line is of the type given (its data in the stand-in's wire form, which is its own).
    pub stand_ins: Vec<(usize, u16)>,
}

/// One token of an entry: its bytes in the text, and whether it was in quotes.
#[derive(Clone, Copy, Debug)]
struct Tok {
    start: usize,
    end: usize,
    quoted: bool,
}

/// One entry: where it is, its first line, its tokens and its comments.
struct Entry {
    start: usize,
    end: usize,
    line: usize,
    toks: Vec<Tok>,
    comments: Vec<(usize, usize)>,
}

/// Rewrites the entries of `text` from byte `from` (a line start) on, up to the next
/// `$INCLUDE` or the end. `ttls` is the state at `from`, left as it is after the part.
/// An error is (line, why).
pub fn rewrite(text: &[u8], from: usize, ttls: &mut Ttls) -> Result<Part, (usize, String)> {
    let mut line = 1 + text[..from.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    let mut out = vec![b'\n'; line - 1];
    let mut warnings = Vec::new();
    let mut stand_ins = Vec::new();
    let mut at = from;
    while at < text.len() {
        let (entry, lines) = scan_entry(text, at, line);
        at = entry.end;
        line += lines;
        let (edits, raw, include) = edits(text, &entry, ttls, &mut warnings, &mut stand_ins)?;
        emit(text, &entry, &edits, raw, &mut out);
        if include {
            let next = (at < text.len()).then_some(at);
            return Ok(Part {
                text: out,
                next,
                warnings,
                stand_ins,
            });
        }
    }
    Ok(Part {
        text: out,
        next: None,
        warnings,
        stand_ins,
    })
}

/// The entry at `at` (a line start) on `line`, and how many line ends it spans.
fn scan_entry(text: &[u8], at: usize, line: usize) -> (Entry, usize) {
    let mut e = Entry {
        start: at,
        end: text.len(),
        line,
        toks: Vec::new(),
        comments: Vec::new(),
    };
    let (mut lines, mut parens) = (0, 0usize);
    let mut cur: Option<Tok> = None;
    let mut i = at;
    let close = |cur: &mut Option<Tok>, toks: &mut Vec<Tok>, end: usize| {
        if let Some(mut t) = cur.take() {
            t.end = end;
            toks.push(t);
        }
    };
    while i < text.len() {
        let b = text[i];
        if cur.is_some_and(|t| t.quoted) {
            match b {
                b'\\' => {
                    i += 1;
                    if text.get(i) == Some(&b'\n') {
                        lines += 1;
                    }
                }
                b'"' => close(&mut cur, &mut e.toks, i + 1),
                b'\n' => lines += 1,
                _ => {}
            }
            i += 1;
            continue;
        }
        match b {
            b'\\' => {
                cur.get_or_insert(Tok {
                    start: i,
                    end: i,
                    quoted: false,
                });
                i += 1;
                if text.get(i) == Some(&b'\n') {
                    lines += 1;
                }
            }
            b'"' => {
                close(&mut cur, &mut e.toks, i);
                cur = Some(Tok {
                    start: i,
                    end: i,
                    quoted: true,
                });
            }
            b';' => {
                close(&mut cur, &mut e.toks, i);
                let end = text[i..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(text.len(), |n| i + n);
                e.comments.push((i, end));
                i = end;
                continue;
            }
            b'(' | b')' => {
                close(&mut cur, &mut e.toks, i);
                if b == b'(' {
                    parens += 1;
                } else {
                    parens = parens.saturating_sub(1);
                }
            }
            b'\n' => {
                close(&mut cur, &mut e.toks, i);
                lines += 1;
                if parens == 0 {
                    e.end = i + 1;
                    return (e, lines);
                }
            }
            b' ' | b'\t' | b'\r' => close(&mut cur, &mut e.toks, i),
            _ => {
                cur.get_or_insert(Tok {
                    start: i,
                    end: i,
                    quoted: false,
                });
            }
        }
        i += 1;
    }
    close(&mut cur, &mut e.toks, text.len().min(i));
    (e, lines)
}

/// One change to an entry: the bytes `start..end` of the text replaced by `with` (an
/// insertion when the two are equal).
struct Edit {
    start: usize,
    end: usize,
    with: Vec<u8>,
}

/// An entry's edits, the token to keep as written, and whether it is an `$INCLUDE`.
type Edits = (Vec<Edit>, Option<Tok>, bool);

/// The edits of one entry, the token (if any) whose 8-bit bytes must stay as they are (an
/// `$INCLUDE`'s file name), and whether the entry is an `$INCLUDE`.
fn edits(
    text: &[u8],
    e: &Entry,
    ttls: &mut Ttls,
    warnings: &mut Vec<(usize, String)>,
    stand_ins: &mut Vec<(usize, u16)>,
) -> Result<Edits, (usize, String)> {
    let mut edits = Vec::new();
    let Some(first) = e.toks.first() else {
        return Ok((edits, None, false));
    };
    let word = |t: &Tok| &text[t.start..t.end];
    let owner = !matches!(text[e.start], b' ' | b'\t');
    if owner && !first.quoted && word(first).first() == Some(&b'$') {
        let dir = word(first);
        let arg = e.toks.get(1);
        if dir.eq_ignore_ascii_case(b"$TTL") {
            let Some(arg) = arg else {
                return Err((e.line, "$TTL without a TTL".into()));
            };
            let v = ttl_value(word(arg)).map_err(|why| (e.line, format!("$TTL: {why}")))?;
            let v = cap(v, e.line, "$TTL", warnings);
            ttls.dollar = Some(v);
            edits.push(replace(arg, v));
        } else if dir.eq_ignore_ascii_case(b"$INCLUDE") {
            return Ok((edits, arg.copied(), true));
        }
        return Ok((edits, None, false));
    }
    // The owner, then a TTL and a class in either order (either may be left out), the type.
    let mut k = usize::from(owner);
    let mut given = None;
    for _ in 0..2 {
        match e.toks.get(k) {
            Some(t) if !t.quoted && word(t).first().is_some_and(u8::is_ascii_digit) => {
                given = Some(*t);
                k += 1;
            }
            Some(t) if !t.quoted && is_class(word(t)) => k += 1,
            _ => break,
        }
    }
    match given {
        Some(t) => {
            let v = ttl_value(word(&t)).map_err(|why| (e.line, format!("TTL: {why}")))?;
            let v = cap(v, e.line, "a TTL", warnings);
            ttls.last = Some(v);
            if v.to_string().as_bytes() != word(&t) {
                edits.push(replace(&t, v));
            }
        }
        None => {
            if let Some(v) = ttls.current() {
                let at = if owner { first.end } else { first.start };
                let with = if owner {
                    format!(" {v}")
                } else {
                    format!("{v} ")
                };
                edits.push(Edit {
                    start: at,
                    end: at,
                    with: with.into_bytes(),
                });
            }
        }
    }
    if let Some(t) = e.toks.get(k).filter(|t| !t.quoted) {
        let name = String::from_utf8_lossy(word(t)).to_ascii_uppercase();
        if let Some(&(_, code, stand_in)) = STAND_INS.iter().find(|(n, ..)| *n == name) {
            edits.push(Edit {
                start: t.start,
                end: t.end,
                with: stand_in.as_bytes().to_vec(),
            });
            stand_ins.push((e.line, code));
            // The scanner's RRSIG takes an empty signature; BIND refuses one.
            if name == "SIG" && e.toks.len() <= k + 9 {
                return Err((
                    e.line,
                    "SIG: expected the type covered, algorithm, labels, \
                                     TTL, expiration, inception, key tag, signer and base64"
                        .into(),
                ));
            }
            // SIG's algorithm as a mnemonic (BIND reads RSASHA256 and the like), which the
            // scanner's RRSIG takes only as a number.
            if name == "SIG"
                && let Some(alg) = e.toks.get(k + 2).filter(|a| !a.quoted)
                && let Some(n) = number_or_name(word(alg), 0xff, &ALGORITHMS)
            {
                edits.push(replace(alg, n));
            }
        } else if let Some(&(_, code)) = GENERIC.iter().find(|(n, _)| *n == name) {
            let data = &e.toks[k + 1..];
            let words: Vec<(&[u8], bool)> = data.iter().map(|d| (word(d), d.quoted)).collect();
            let wire = generic_rdata(&name, &words).map_err(|why| (e.line, why))?;
            let hex: String = wire.iter().map(|b| format!("{b:02x}")).collect();
            let with = format!("TYPE{code} \\# {} {hex}", wire.len());
            edits.push(Edit {
                start: t.start,
                end: t.end,
                with: with.trim_end().as_bytes().to_vec(),
            });
            // The data's tokens go; what is between them (blanks, parentheses, line ends,
            // comments) stays.
            for d in data {
                edits.push(Edit {
                    start: d.start,
                    end: d.end,
                    with: Vec::new(),
                });
            }
        }
    }
    // The SOA's refresh, retry, expire and minimum (the serial is a plain number in BIND).
    if e.toks
        .get(k)
        .is_some_and(|t| word(t).eq_ignore_ascii_case(b"SOA"))
    {
        for t in e.toks.iter().skip(k + 4).take(4) {
            let w = word(t);
            if !t.quoted && !w.iter().all(u8::is_ascii_digit) {
                let v = ttl_value(w).map_err(|why| (e.line, format!("SOA: {why}")))?;
                edits.push(replace(t, v));
            }
        }
    }
    Ok((edits, None, false))
}

/// Types read with another's text form, whose data has the same shape on the wire: (name,
/// code, stand-in). SPF is TXT's strings (RFC 7208 3.1); AFSDB (RFC 1183 1), RT (RFC 1183
/// 3.3) and KX (RFC 2230) are a 16-bit number and a name, as MX is.
/// SMIMEA is TLSA's text and wire form (RFC 8162 2.1); SIG is RRSIG's (RFC 4034 3 took
/// RFC 2535's SIG over).
const STAND_INS: [(&str, u16, &str); 6] = [
    ("SPF", 99, "TXT"),
    ("AFSDB", 18, "MX"),
    ("RT", 21, "MX"),
    ("KX", 36, "MX"),
    ("SMIMEA", 53, "TLSA"),
    ("SIG", 24, "RRSIG"),
];

/// Types without names in their data, written here in RFC 3597's generic form.
const GENERIC: [(&str, u16); 10] = [
    ("URI", 256),
    ("EUI48", 108),
    ("EUI64", 109),
    ("LOC", 29),
    ("DHCID", 49),
    ("CERT", 37),
    ("APL", 42),
    ("CSYNC", 62),
    ("KEY", 25),
    ("WKS", 11),
];

/// The wire form of a [`GENERIC`] type's data, from its words (each with whether it was
/// quoted).
fn generic_rdata(name: &str, words: &[(&[u8], bool)]) -> Result<Vec<u8>, String> {
    match name {
        // RFC 7553 4.5: priority, weight, and the target URI as one quoted string.
        "URI" => {
            let [(prio, false), (weight, false), (target, true)] = words else {
                return Err("URI: expected a priority, a weight and a quoted target".into());
            };
            let number = |w: &[u8], what: &str| {
                std::str::from_utf8(w)
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok())
                    .ok_or_else(|| format!("URI: the {what} is not a number up to 65535"))
            };
            let mut out = Vec::new();
            out.extend_from_slice(&number(prio, "priority")?.to_be_bytes());
            out.extend_from_slice(&number(weight, "weight")?.to_be_bytes());
            let inside = target
                .strip_prefix(b"\"")
                .and_then(|t| t.strip_suffix(b"\""))
                .ok_or("URI: the target's quote is not closed")?;
            let target = unescape(inside)?;
            if target.is_empty() {
                return Err("URI: an empty target".into());
            }
            out.extend_from_slice(&target);
            Ok(out)
        }
        "LOC" => loc_rdata(words),
        // RFC 4701 3.4: one base64 blob, which may be split by blanks.
        "DHCID" => base64_words("DHCID", words),
        "CERT" => cert_rdata(words),
        "APL" => apl_rdata(words),
        "CSYNC" => csync_rdata(words),
        "KEY" => key_rdata(words),
        "WKS" => wks_rdata(words),
        // RFC 7043 3.2 and 4.2: hex pairs joined by hyphens, 6 or 8 of them.
        _ => {
            let want = if name == "EUI48" { 6 } else { 8 };
            let why = || format!("{name}: expected {want} hex pairs joined by '-'");
            let [(w, false)] = words else {
                return Err(why());
            };
            let pairs: Vec<&[u8]> = w.split(|b| *b == b'-').collect();
            if pairs.len() != want {
                return Err(why());
            }
            pairs
                .iter()
                .map(|p| {
                    std::str::from_utf8(p)
                        .ok()
                        .filter(|p| p.len() == 2)
                        .and_then(|p| u8::from_str_radix(p, 16).ok())
                        .ok_or_else(why)
                })
                .collect()
        }
    }
}

/// The bytes of base64 words joined (blanks may split the blob, as in BIND), at least one.
fn base64_words(what: &str, words: &[(&[u8], bool)]) -> Result<Vec<u8>, String> {
    let mut text = String::new();
    for (w, quoted) in words {
        let w = std::str::from_utf8(w)
            .ok()
            .filter(|_| !quoted)
            .ok_or_else(|| format!("{what}: expected base64"))?;
        text.push_str(w);
    }
    if text.is_empty() {
        return Err(format!("{what}: no base64 data"));
    }
    domain::utils::base64::decode::<Vec<u8>>(&text).map_err(|e| format!("{what}: bad base64 ({e})"))
}

/// A number up to `max`, or one of `names` (in any case), as BIND reads CERT's fields.
fn number_or_name(w: &[u8], max: u32, names: &[(&str, u32)]) -> Option<u32> {
    let w = std::str::from_utf8(w).ok()?;
    if w.bytes().all(|b| b.is_ascii_digit()) {
        return w.parse::<u32>().ok().filter(|v| *v <= max);
    }
    names
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(w))
        .map(|&(_, v)| v)
}

/// CERT's certificate types (RFC 4398 2.1), as BIND names them.
const CERT_TYPES: [(&str, u32); 10] = [
    ("PKIX", 1),
    ("SPKI", 2),
    ("PGP", 3),
    ("IPKIX", 4),
    ("ISPKI", 5),
    ("IPGP", 6),
    ("ACPKIX", 7),
    ("IACPKIX", 8),
    ("URI", 253),
    ("OID", 254),
];

/// DNSSEC algorithm mnemonics (RFC 4034 A.1 and its successors), as BIND's
/// `dns_secalg_fromtext` reads them.
const ALGORITHMS: [(&str, u32); 17] = [
    ("RSAMD5", 1),
    ("DH", 2),
    ("DSA", 3),
    ("ECC", 4),
    ("RSASHA1", 5),
    ("NSEC3DSA", 6),
    ("NSEC3RSASHA1", 7),
    ("RSASHA256", 8),
    ("RSASHA512", 10),
    ("ECCGOST", 12),
    ("ECDSAP256SHA256", 13),
    ("ECDSAP384SHA384", 14),
    ("ED25519", 15),
    ("ED448", 16),
    ("INDIRECT", 252),
    ("PRIVATEDNS", 253),
    ("PRIVATEOID", 254),
];

/// CERT's data (RFC 4398 2.2): type, key tag, algorithm, then the certificate in base64.
fn cert_rdata(words: &[(&[u8], bool)]) -> Result<Vec<u8>, String> {
    let [(ctype, false), (tag, false), (alg, false), rest @ ..] = words else {
        return Err("CERT: expected a type, a key tag, an algorithm and base64".into());
    };
    let ctype = number_or_name(ctype, 0xffff, &CERT_TYPES)
        .ok_or("CERT: the type is not a number up to 65535 or PKIX, SPKI, PGP, ...")?;
    let tag =
        number_or_name(tag, 0xffff, &[]).ok_or("CERT: the key tag is not a number up to 65535")?;
    let alg = number_or_name(alg, 0xff, &ALGORITHMS)
        .ok_or("CERT: the algorithm is not a number up to 255 or a mnemonic (RSASHA256, ...)")?;
    let mut out = Vec::new();
    out.extend_from_slice(&(ctype as u16).to_be_bytes());
    out.extend_from_slice(&(tag as u16).to_be_bytes());
    out.push(alg as u8);
    out.extend(base64_words("CERT", rest)?);
    Ok(out)
}

/// APL's data (RFC 3123 4): items `[!]afi:address/prefix`, none or more, for address
/// families 1 (IPv4) and 2 (IPv6), each the address's bytes without the trailing zeros.
/// As BIND, bits past the prefix are kept and duplicates are not merged.
fn apl_rdata(words: &[(&[u8], bool)]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for (w, quoted) in words {
        let text = std::str::from_utf8(w).unwrap_or("");
        let why = || format!("APL: {text:?} is not [!]afi:address/prefix");
        if *quoted {
            return Err(why());
        }
        let (negate, item) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (afi, rest) = item.split_once(':').ok_or_else(why)?;
        let (addr, prefix) = rest.rsplit_once('/').ok_or_else(why)?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(afi) || !digits(prefix) {
            return Err(why());
        }
        let afi: u16 = afi.parse().map_err(|_| why())?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("APL: prefix {prefix} is too long"))?;
        let (bytes, max) = match afi {
            1 => (
                addr.parse::<std::net::Ipv4Addr>()
                    .map_err(|_| format!("APL: {addr:?} is not an IPv4 address"))?
                    .octets()
                    .to_vec(),
                32,
            ),
            2 => (
                addr.parse::<std::net::Ipv6Addr>()
                    .map_err(|_| format!("APL: {addr:?} is not an IPv6 address"))?
                    .octets()
                    .to_vec(),
                128,
            ),
            _ => return Err(format!("APL: address family {afi} (1 and 2 are read)")),
        };
        if prefix > max {
            return Err(format!("APL: prefix {prefix} is over {max}"));
        }
        let len = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        out.extend_from_slice(&afi.to_be_bytes());
        out.push(prefix);
        out.push(len as u8 | if negate { 0x80 } else { 0 });
        out.extend_from_slice(&bytes[..len]);
    }
    Ok(out)
}

/// CSYNC's data (RFC 7477 2.1.1): SOA serial, flags, and the types as NSEC's bitmap.
fn csync_rdata(words: &[(&[u8], bool)]) -> Result<Vec<u8>, String> {
    let [(serial, false), (flags, false), types @ ..] = words else {
        return Err("CSYNC: expected a serial, flags and types".into());
    };
    let serial = number_or_name(serial, u32::MAX, &[])
        .ok_or("CSYNC: the serial is not a number up to 4294967295")?;
    let flags = number_or_name(flags, 0xffff, &[])
        .ok_or("CSYNC: the flags are not a number up to 65535")?;
    let mut out = Vec::new();
    out.extend_from_slice(&serial.to_be_bytes());
    out.extend_from_slice(&(flags as u16).to_be_bytes());
    out.extend(type_bitmap("CSYNC", types)?);
    Ok(out)
}

/// RFC 4034 4.1.2's type bitmap of type names (mnemonics or `TYPEnn`, in any order, any
/// repeated), as NSEC and CSYNC hold it; none makes an empty bitmap, as BIND writes it.
fn type_bitmap(what: &str, words: &[(&[u8], bool)]) -> Result<Vec<u8>, String> {
    // domain's NSEC builder: any order, repeats merged, none an empty bitmap.
    let mut b = domain::rdata::dnssec::RtypeBitmapBuilder::new_vec();
    for (w, quoted) in words {
        let text = String::from_utf8_lossy(w);
        let rtype = (!quoted)
            .then(|| text.parse::<domain::base::iana::Rtype>().ok())
            .flatten()
            .ok_or_else(|| format!("{what}: {text:?} is not a record type"))?;
        b.add(rtype)
            .map_err(|_| format!("{what}: the type bitmap is too long"))?;
    }
    Ok(b.finalize().as_slice().to_vec())
}

/// KEY's flags (RFC 2535 3.1.2) as BIND's `dns_keyflags_fromtext` names them, joined by `|`.
const KEY_FLAGS: [(&str, u32); 32] = [
    ("NOCONF", 0x4000),
    ("NOAUTH", 0x8000),
    ("NOKEY", 0xc000),
    ("FLAG2", 0x2000),
    ("EXTEND", 0x1000),
    ("FLAG4", 0x0800),
    ("FLAG5", 0x0400),
    ("USER", 0),
    ("ZONE", 0x0100),
    ("HOST", 0x0200),
    ("NTYP3", 0x0300),
    ("FLAG8", 0x0080),
    ("FLAG9", 0x0040),
    ("FLAG10", 0x0020),
    ("FLAG11", 0x0010),
    ("SIG0", 0),
    ("SIG1", 1),
    ("SIG2", 2),
    ("SIG3", 3),
    ("SIG4", 4),
    ("SIG5", 5),
    ("SIG6", 6),
    ("SIG7", 7),
    ("SIG8", 8),
    ("SIG9", 9),
    ("SIG10", 10),
    ("SIG11", 11),
    ("SIG12", 12),
    ("SIG13", 13),
    ("SIG14", 14),
    ("SIG15", 15),
    ("KSK", 1),
];

/// KEY's protocols (RFC 2535 3.1.3) as BIND's `dns_secproto_fromtext` names them.
const KEY_PROTOCOLS: [(&str, u32); 6] = [
    ("NONE", 0),
    ("TLS", 1),
    ("EMAIL", 2),
    ("DNSSEC", 3),
    ("IPSEC", 4),
    ("ALL", 255),
];

/// KEY's data (RFC 2535 3.1, DNSKEY's text form): flags (a decimal or `0x` hex number, or
/// names joined by `|`), protocol, algorithm, and the key in base64, which a key whose
/// flags say NOKEY (both top bits) has none of, as BIND reads it.
fn key_rdata(words: &[(&[u8], bool)]) -> Result<Vec<u8>, String> {
    let [(flags, false), (proto, false), (alg, false), rest @ ..] = words else {
        return Err("KEY: expected flags, a protocol, an algorithm and base64".into());
    };
    let text = std::str::from_utf8(flags).unwrap_or("");
    let hex = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()));
    let flags = match hex {
        Some(h) => u32::from_str_radix(h, 16).ok().filter(|v| *v <= 0xffff),
        None if text.bytes().all(|b| b.is_ascii_digit()) => number_or_name(flags, 0xffff, &[]),
        None => text.split('|').try_fold(0, |v, name| {
            KEY_FLAGS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|&(_, f)| v | f)
        }),
    }
    .ok_or("KEY: the flags are not a number up to 65535 or names (ZONE|SIG1, ...)")?;
    let proto = number_or_name(proto, 0xff, &KEY_PROTOCOLS)
        .ok_or("KEY: the protocol is not a number up to 255 or DNSSEC, IPSEC, ...")?;
    let alg = number_or_name(alg, 0xff, &ALGORITHMS)
        .ok_or("KEY: the algorithm is not a number up to 255 or a mnemonic (RSASHA256, ...)")?;
    let mut out = Vec::new();
    out.extend_from_slice(&(flags as u16).to_be_bytes());
    out.push(proto as u8);
    out.push(alg as u8);
    if flags & 0xc000 == 0xc000 {
        if !rest.is_empty() {
            return Err("KEY: a key whose flags say NOKEY has no key data".into());
        }
    } else {
        out.extend(base64_words("KEY", rest)?);
    }
    Ok(out)
}

/// WKS's data (RFC 1035 3.4.2): an IPv4 address, a protocol (a number, or a name or alias
/// in /etc/protocols), and services (numbers, or names or aliases in /etc/services for the
/// protocol when it is TCP or UDP, for any otherwise) as a bitmap of ports, as BIND reads it
/// with `getprotobyname` and `getservbyname`.
fn wks_rdata(words: &[(&[u8], bool)]) -> Result<Vec<u8>, String> {
    let [(addr, false), (proto, false), services @ ..] = words else {
        return Err("WKS: expected an IPv4 address, a protocol and services".into());
    };
    let addr = std::str::from_utf8(addr).unwrap_or("");
    let addr: std::net::Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("WKS: {addr:?} is not an IPv4 address"))?;
    let proto = std::str::from_utf8(proto).unwrap_or("");
    let proto = number(proto, 0xff)
        .or_else(|| {
            lookup(
                &std::fs::read_to_string("/etc/protocols").ok()?,
                proto,
                None,
            )
        })
        .ok_or_else(|| {
            format!("WKS: protocol {proto:?} is not a number up to 255 or in /etc/protocols")
        })?;
    let by = match proto {
        6 => Some("tcp"),
        17 => Some("udp"),
        _ => None,
    };
    // /etc/services read once for the record, and only if a service is named.
    let file = std::cell::OnceCell::new();
    let known = || -> &str {
        file.get_or_init(|| std::fs::read_to_string("/etc/services").unwrap_or_default())
    };
    let mut bits = Vec::new();
    for (w, quoted) in services {
        let text = std::str::from_utf8(w).unwrap_or("");
        let port = (!quoted)
            .then(|| {
                number(text, 0xffff)
                    .or_else(|| lookup(known(), &text.to_ascii_lowercase(), Some(by)))
                    .or_else(|| lookup(known(), text, Some(by)))
            })
            .flatten()
            .ok_or_else(|| {
                format!(
                    "WKS: service {text:?} is not a port up to 65535 or in /etc/services{}",
                    by.map(|b| format!(" for {b}")).unwrap_or_default()
                )
            })? as usize;
        if bits.len() <= port / 8 {
            bits.resize(port / 8 + 1, 0);
        }
        bits[port / 8] |= 0x80 >> (port % 8);
    }
    let mut out = addr.octets().to_vec();
    out.push(proto as u8);
    out.extend(bits);
    Ok(out)
}

/// A decimal number up to `max`.
fn number(w: &str, max: u32) -> Option<u32> {
    (!w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
        .then(|| w.parse::<u32>().ok().filter(|v| *v <= max))
        .flatten()
}

/// The number of `name` (its first word or an alias) in `text`, /etc/protocols (`by` is `None`)
/// or /etc/services (`by` the protocol its entry must be for, if any), as glibc finds it.
fn lookup(text: &str, name: &str, by: Option<Option<&str>>) -> Option<u32> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut f = line.split_whitespace();
        let first = f.next()?;
        let value = f.next()?;
        if first != name && !f.clone().any(|a| a == name) {
            return None;
        }
        let (num, proto) = match by {
            None => (value, None),
            Some(_) => {
                let (n, p) = value.split_once('/')?;
                (n, Some(p))
            }
        };
        if let Some(Some(want)) = by
            && proto != Some(want)
        {
            return None;
        }
        num.parse().ok()
    })
}

/// LOC's data (RFC 1876 3): `d1 [m1 [s1]] N|S d2 [m2 [s2]] E|W alt[m] [size[m] [hp[m]
/// [vp[m]]]]`, sizes and precisions 1m, 10000m and 10m when left out, as BIND reads it.
fn loc_rdata(words: &[(&[u8], bool)]) -> Result<Vec<u8>, String> {
    let why = |what: &str| format!("LOC: {what}");
    let mut w = words.iter().map(|(w, quoted)| {
        if *quoted {
            Err(why("a quoted word"))
        } else {
            std::str::from_utf8(w).map_err(|_| why("not ASCII"))
        }
    });
    // Degrees, minutes and seconds up to the hemisphere letter, in thousandths of seconds
    // from the equator or the meridian, offset by 2^31 (south and west below it).
    let mut angle = |max_deg: u32, hemis: [&str; 2]| -> Result<u32, String> {
        let mut parts = Vec::new();
        let sign = loop {
            let word = w.next().ok_or_else(|| why("too few words"))??;
            if let Some(i) = hemis.iter().position(|h| word.eq_ignore_ascii_case(h)) {
                break if i == 0 { 1 } else { -1 };
            }
            if parts.len() == 3 {
                return Err(why(&format!("expected {} or {}", hemis[0], hemis[1])));
            }
            parts.push(word);
        };
        let num = |s: &str, max: u32| s.parse::<u32>().ok().filter(|v| *v <= max);
        let deg = parts
            .first()
            .and_then(|d| num(d, max_deg))
            .ok_or_else(|| why(&format!("degrees 0 to {max_deg} expected")))?;
        let min = match parts.get(1) {
            Some(m) => num(m, 59).ok_or_else(|| why("minutes 0 to 59 expected"))?,
            None => 0,
        };
        let msec = match parts.get(2) {
            Some(s) => fixed(s, 3)
                .filter(|v| (0..60_000).contains(v))
                .ok_or_else(|| why("seconds 0 to 59.999 expected"))?,
            None => 0,
        };
        let total = i64::from(deg) * 3_600_000 + i64::from(min) * 60_000 + msec;
        if total > i64::from(max_deg) * 3_600_000 {
            return Err(why(&format!("over {max_deg} degrees")));
        }
        u32::try_from((1i64 << 31) + sign * total).map_err(|_| why("out of range"))
    };
    let lat = angle(90, ["N", "S"])?;
    let lon = angle(180, ["E", "W"])?;
    let metres = |s: &str| fixed(s.strip_suffix(['m', 'M']).unwrap_or(s), 2);
    let alt = w.next().ok_or_else(|| why("no altitude"))??;
    let alt = metres(alt)
        .filter(|cm| (-10_000_000..=4_284_967_295).contains(cm))
        .ok_or_else(|| why("altitude -100000.00 to 42849672.95 m expected"))?;
    // Size, horizontal and vertical precision: centimetres as a digit times a power of ten.
    let mut prec = [0x12u8, 0x16, 0x13];
    for p in &mut prec {
        let Some(word) = w.next() else { break };
        let cm = metres(word?)
            .filter(|cm| (0..=9_000_000_000).contains(cm))
            .ok_or_else(|| why("sizes 0 to 90000000.00 m expected"))?;
        let (mut base, mut exp) = (cm, 0u8);
        while base >= 10 {
            base /= 10;
            exp += 1;
        }
        *p = (base as u8) << 4 | exp;
    }
    if w.next().is_some() {
        return Err(why("too many words"));
    }
    let mut out = vec![0, prec[0], prec[1], prec[2]];
    out.extend_from_slice(&lat.to_be_bytes());
    out.extend_from_slice(&lon.to_be_bytes());
    out.extend_from_slice(&((alt + 10_000_000) as u32).to_be_bytes());
    Ok(out)
}

/// A decimal number with at most `places` digits after its point, in units of its last
/// place (`fixed("-2.5", 2)` is -250).
fn fixed(s: &str, places: u32) -> Option<i64> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty()
        || int.len() > 12
        || !digits(int)
        || !digits(frac)
        || frac.len() > places as usize
    {
        return None;
    }
    let mut v: i64 = int.parse().ok()?;
    for i in 0..places as usize {
        v = v * 10 + frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
    }
    Some(if neg { -v } else { v })
}

/// The bytes of a quoted string's inside: `\DDD` is the byte DDD, `\X` is X.
fn unescape(w: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(w.len());
    let mut i = 0;
    while i < w.len() {
        if w[i] != b'\\' {
            out.push(w[i]);
            i += 1;
            continue;
        }
        let digits = w
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(u8::is_ascii_digit));
        if let Some(d) = digits {
            let v = d.iter().fold(0u32, |v, c| v * 10 + u32::from(c - b'0'));
            out.push(u8::try_from(v).map_err(|_| format!("\\{v} is over 255"))?);
            i += 4;
        } else {
            let Some(&c) = w.get(i + 1) else {
                return Err("a string ends with a lone backslash".into());
            };
            out.push(c);
            i += 2;
        }
    }
    Ok(out)
}

fn replace(t: &Tok, v: u32) -> Edit {
    Edit {
        start: t.start,
        end: t.end,
        with: v.to_string().into_bytes(),
    }
}

/// `v`, or 0 with a warning if it is over [`MAX_TTL`] (RFC 2181 8; BIND does the same).
fn cap(v: u32, line: usize, what: &str, warnings: &mut Vec<(usize, String)>) -> u32 {
    if v <= MAX_TTL {
        return v;
    }
    warnings.push((
        line,
        format!("{what} of {v} is over {MAX_TTL} (RFC 2181 8): read as 0"),
    ));
    0
}

/// The classes a record may name (the scanner refuses all but IN later, with the line).
fn is_class(w: &[u8]) -> bool {
    ["IN", "CH", "CS", "HS", "NONE", "ANY"]
        .iter()
        .any(|c| w.eq_ignore_ascii_case(c.as_bytes()))
        || (w.len() > 5
            && w[..5].eq_ignore_ascii_case(b"CLASS")
            && w[5..].iter().all(u8::is_ascii_digit))
}

/// A TTL as BIND reads one: a decimal number of seconds, or numbers each followed by a
/// unit (`1h30m`; a number without a unit after one with is refused, as BIND does).
pub fn ttl_value(w: &[u8]) -> Result<u32, String> {
    let shown = String::from_utf8_lossy(w);
    if !w.is_empty() && w.iter().all(u8::is_ascii_digit) {
        return std::str::from_utf8(w)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or_else(|| format!("{shown} is over 4294967295"));
    }
    let bad = || format!("{shown:?} is no TTL (seconds, or units as in 1h30m: s m h d w)");
    if w.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut i = 0;
    while i < w.len() {
        let digits = w[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = std::str::from_utf8(&w[i..i + digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{shown} is over 4294967295"))?;
        let unit = match w.get(i + digits).map(u8::to_ascii_lowercase) {
            Some(b's') => 1,
            Some(b'm') => 60,
            Some(b'h') => 3600,
            Some(b'd') => 86_400,
            Some(b'w') => 604_800,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .filter(|t| *t <= u64::from(u32::MAX))
            .ok_or_else(|| format!("{shown} is over 4294967295 seconds"))?;
        i += digits + 1;
    }
    u32::try_from(total).map_err(|_| bad())
}

/// Writes the entry with its edits, each 8-bit byte outside comments (and outside `raw`)
/// as `\DDD` (a `\` before such a byte escaped it: the two become one `\DDD`).
fn emit(text: &[u8], e: &Entry, edits: &[Edit], raw: Option<Tok>, out: &mut Vec<u8>) {
    let mut edits = edits.iter().peekable();
    let mut comments = e.comments.iter().peekable();
    let mut i = e.start;
    while i < e.end {
        while let Some(ed) = edits.peek()
            && ed.start == i
        {
            out.extend_from_slice(&ed.with);
            i = ed.end;
            edits.next();
        }
        if i >= e.end {
            break;
        }
        if let Some(&&(cs, ce)) = comments.peek()
            && cs == i
        {
            out.extend_from_slice(&text[cs..ce]);
            i = ce;
            comments.next();
            continue;
        }
        let kept = raw.is_some_and(|t| (t.start..t.end).contains(&i));
        let b = text[i];
        match b {
            b'\\' if !kept && text.get(i + 1).is_some_and(|n| *n >= 0x80) => {
                out.extend_from_slice(format!("\\{:03}", text[i + 1]).as_bytes());
                i += 2;
            }
            b'\\' => {
                out.push(b);
                if let Some(n) = text.get(i + 1)
                    && i + 1 < e.end
                {
                    out.push(*n);
                }
                i += 2;
            }
            0x80.. if !kept => {
                out.extend_from_slice(format!("\\{b:03}").as_bytes());
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    // An edit at the very end (an insertion after the last byte).
    for ed in edits {
        if ed.start >= e.end {
            out.extend_from_slice(&ed.with);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole of `text` rewritten (through its `$INCLUDE`s), from a fresh state.
    fn all(text: &str) -> (String, Vec<(usize, String)>) {
        let mut ttls = Ttls::default();
        let mut from = 0;
        let mut out = String::new();
        let mut warnings = Vec::new();
        loop {
            let p = rewrite(text.as_bytes(), from, &mut ttls).unwrap();
            let t = String::from_utf8(p.text).unwrap();
            out.push_str(t.trim_start_matches('\n'));
            warnings.extend(p.warnings);
            match p.next {
                Some(n) => from = n,
                None => return (out, warnings),
            }
        }
    }

    #[test]
    fn ttl_units_as_bind_reads_them() {
        for (w, v) in [
            ("1D", 86_400),
            ("1h30m", 5400),
            ("1W", 604_800),
            ("3H", 10_800),
            ("1d2h3m4s", 93_784),
            ("1H1H", 7200),
            ("30", 30),
            ("0", 0),
            ("4294967295", u32::MAX),
        ] {
            assert_eq!(ttl_value(w.as_bytes()), Ok(v), "{w}");
        }
        for w in [
            "1h30",
            "1x",
            "h",
            "",
            "4294967296",
            "10000000w",
            "1.5h",
            "-1",
        ] {
            assert!(ttl_value(w.as_bytes()).is_err(), "{w}");
        }
    }

    /// `$TTL`, records' TTLs in either place beside the class, and the SOA's timers; a
    /// record without a TTL gets the one in force; comments and quotes are left alone.
    #[test]
    fn ttls_with_units_become_seconds() {
        let (out, w) = all("$TTL 3H\n\
             @ IN SOA ns h ( 1 ; serial 1d\n 1D 1H 1W 3H )\n\
             a 1W IN A 192.0.2.1\n\
             b IN 1h A 192.0.2.2\n\
             \x20 TXT \"1h\" ; 1w\n\
             c TXT 1d\n");
        assert_eq!(
            out,
            "$TTL 10800\n\
             @ 10800 IN SOA ns h ( 1 ; serial 1d\n 86400 3600 604800 10800 )\n\
             a 604800 IN A 192.0.2.1\n\
             b IN 3600 A 192.0.2.2\n\
             \x20 10800 TXT \"1h\" ; 1w\n\
             c 10800 TXT 1d\n"
        );
        assert!(w.is_empty());
    }

    /// Without `$TTL`, a record takes the last TTL given, as BIND (and the scanner) do; the
    /// first ones, before any, are left to the scanner.
    #[test]
    fn without_dollar_ttl_the_last_ttl_is_taken() {
        let (out, _) = all("@ SOA ns h 1 2 3 4 5\nns 700 A 192.0.2.1\nq A 192.0.2.2\n");
        assert_eq!(
            out,
            "@ SOA ns h 1 2 3 4 5\nns 700 A 192.0.2.1\nq 700 A 192.0.2.2\n"
        );
    }

    #[test]
    fn ttls_over_two_to_the_31_are_zero_with_a_warning() {
        let (out, w) = all(
            "\n$TTL 4294967295\na A 192.0.2.1\nb 2147483648 A 192.0.2.2\nc 2147483647 A 192.0.2.3\n",
        );
        assert_eq!(
            out,
            "$TTL 0\na 0 A 192.0.2.1\nb 0 A 192.0.2.2\nc 2147483647 A 192.0.2.3\n"
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].0, 2);
        assert!(w[0].1.contains("$TTL of 4294967295"), "{w:?}");
        assert_eq!(w[1].0, 4);
    }

    #[test]
    fn bad_ttls_name_their_line() {
        let mut t = Ttls::default();
        let e = rewrite(b"a A 1.2.3.4\n$TTL 1x\nb A 1.2.3.4\n", 0, &mut t).unwrap_err();
        assert_eq!(e.0, 2, "{e:?}");
        let e = rewrite(b"\n\na 1h30 A 1.2.3.4\n", 0, &mut t).unwrap_err();
        assert_eq!(e.0, 3, "{e:?}");
        let e = rewrite(b"@ SOA ns h 1 2 3h 4 5x\n", 0, &mut t).unwrap_err();
        assert!(e.1.contains("SOA"), "{e:?}");
    }

    /// UTF-8 in names and strings is written as `\DDD`; in comments and in an `$INCLUDE`'s
    /// file name it stays.
    #[test]
    fn eight_bit_bytes_are_escaped() {
        let (out, _) = all("é A 192.0.2.1 ; é\na TXT \"utf8 é\" \\é\n$INCLUDE dé.inc\n");
        assert_eq!(
            out,
            "\\195\\169 A 192.0.2.1 ; é\na TXT \"utf8 \\195\\169\" \\195\\169\n$INCLUDE dé.inc\n"
        );
    }

    /// A part ends after each `$INCLUDE`; the next starts on the following line, with line
    /// ends before it so that its lines keep their numbers; the state carries over.
    #[test]
    fn parts_end_at_each_include() {
        let text = b"$TTL 1h\na A 1.2.3.4\n$INCLUDE x\nb A 1.2.3.4\n";
        let mut t = Ttls::default();
        let p = rewrite(text, 0, &mut t).unwrap();
        assert_eq!(p.text, b"$TTL 3600\na 3600 A 1.2.3.4\n$INCLUDE x\n");
        let next = p.next.unwrap();
        // The included file sets $TTL 42: it holds after the $INCLUDE, as in BIND and NSD.
        t.dollar = Some(42);
        let p = rewrite(text, next, &mut t).unwrap();
        assert_eq!(p.text, b"\n\n\nb 42 A 1.2.3.4\n");
        assert_eq!(p.next, None);
    }
}
