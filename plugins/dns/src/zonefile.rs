//! BIND master files (RFC 1035 5) into a [`Zone`], with errors that name the file and line.
//!
//! The scanning (`$ORIGIN`, `$TTL`, `@`, relative names, parentheses, quoting, every record
//! type's text form) is `domain`'s zonefile scanner; `$GENERATE` is expanded before it
//! ([`crate::generate`]); this module follows `$INCLUDE` (relative
//! to the including file's directory, its origin defaulting to the current one), checks that
//! every record is inside the zone, and picks the apex from the SOA. As in twistd, a file
//! without `$ORIGIN` has its own base name as the initial origin (`example.com` is
//! `example.com.`).

use std::fmt;
use std::path::{Path, PathBuf};

use domain::base::RecordData;
use domain::base::iana::{Class, Rtype};
use domain::base::name::FlattenInto;
use domain::zonefile::inplace::{Entry, Zonefile};

use crate::bindsyntax;
use crate::generate;
use crate::name::{self, Dname};
use crate::zone::{Data, Zone, ZoneError};

/// Nested `$INCLUDE`s at most (BIND allows any depth; this bounds the recursion).
const MAX_INCLUDE_DEPTH: usize = 16;
/// Files one zone may read in all, the zone file included: without it, a file that includes
/// another twice, and so on down 16 levels, reads 65,536 files.
pub const MAX_FILES: usize = 1000;

/// One zone file (or `$INCLUDE`d file): 64 MiB is a zone of about a million records, more
/// than a server that holds every zone in memory should be handed by one file.
pub const ZONE_FILE_MAX: u64 = 64 << 20;

/// A zone file that cannot be loaded: the file, the line (when the error is on one) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// One record as read, with where it came from.
struct Read {
    owner: Dname,
    ttl: u32,
    data: Data,
    file: usize,
    line: usize,
}

/// Loads the zone of a master file, logging what was read otherwise than written.
pub fn load(path: &Path) -> Result<Zone, LoadError> {
    let (zone, warnings) = load_warning(path)?;
    for w in warnings {
        log::warn!(target: "twistrs.dns", "{w}");
    }
    Ok(zone)
}

/// The zone of a master file, and warnings (file, line and what was read otherwise than
/// written: a TTL over 2^31 - 1 read as 0).
pub fn load_warning(path: &Path) -> Result<(Zone, Vec<LoadError>), LoadError> {
    let origin = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(name::parse);
    let mut files = Vec::new();
    let mut records = Vec::new();
    let mut budget = generate::MAX_TOTAL;
    let mut ctx = Ctx {
        open: Vec::new(),
        files: &mut files,
        out: &mut records,
        budget: &mut budget,
        ttls: bindsyntax::Ttls::default(),
        warnings: Vec::new(),
    };
    read_file(path, origin, &mut ctx)?;
    let warnings = std::mem::take(&mut ctx.warnings);
    let err = |file: usize, line: usize, message: String| LoadError {
        file: files[file].clone(),
        line: Some(line),
        message,
    };
    let soa = records
        .iter()
        .filter(|r| r.data.rtype() == Rtype::SOA)
        .collect::<Vec<_>>();
    let apex = match soa.as_slice() {
        [] => {
            return Err(LoadError {
                file: path.to_path_buf(),
                line: None,
                message: "no SOA record: a zone file starts with its apex's SOA".into(),
            });
        }
        [one] => one.owner.clone(),
        [first, second, ..] => {
            return Err(err(
                second.file,
                second.line,
                format!("a second SOA record (the first is for {})", first.owner),
            ));
        }
    };
    let mut zone = Zone::new(apex);
    // The records move into the zone: a clone of a name's `Bytes` allocates a shared header
    // (32 bytes a name and a name in data) that the zone would keep. Only the CNAMEs and
    // DNAMEs stay here, to blame a line if `check` refuses the zone.
    let mut aliases = Vec::new();
    for r in records {
        if matches!(r.data.rtype(), Rtype::CNAME | Rtype::DNAME) {
            aliases.push(Read {
                owner: r.owner.clone(),
                data: r.data.clone(),
                ..r
            });
        }
        let (file, line) = (r.file, r.line);
        if let Err(e) = zone.insert(r.owner, r.ttl, r.data) {
            return Err(err(file, line, e.to_string()));
        }
    }
    if let Err(e) = zone.check() {
        // The line to blame: the first CNAME at the name, or for a second CNAME (or DNAME)
        // the first that is not the same as the first (duplicates are dropped, not refused).
        let rtype = match e {
            ZoneError::TwoOf(_, t) => t,
            _ => Rtype::CNAME,
        };
        let at = |r: &&Read| {
            r.data.rtype() == rtype
                && e.owner()
                    .is_some_and(|o| o.eq_ignore_ascii_case(&r.owner.to_string()))
        };
        let first = aliases.iter().find(at);
        let bad = match (&e, first) {
            (ZoneError::TwoOf(..), Some(f)) => aliases.iter().filter(at).find(|r| r.data != f.data),
            (_, f) => f,
        };
        return Err(match bad {
            Some(r) => err(r.file, r.line, e.to_string()),
            None => LoadError {
                file: path.to_path_buf(),
                line: None,
                message: e.to_string(),
            },
        });
    }
    Ok((zone, warnings))
}

/// What one zone's reading carries from file to file.
struct Ctx<'a> {
    /// The files being read (as the file system names them), to tell a loop.
    open: Vec<PathBuf>,
    files: &'a mut Vec<PathBuf>,
    out: &'a mut Vec<Read>,
    /// What `$GENERATE`s may still make.
    budget: &'a mut u64,
    /// The TTL a record without one takes: carried into an included file and back out.
    ttls: bindsyntax::Ttls,
    warnings: Vec<LoadError>,
}

/// Reads `path` and, depth first, what it includes.
fn read_file(path: &Path, origin: Option<Dname>, ctx: &mut Ctx<'_>) -> Result<(), LoadError> {
    let text = twistrs_core::files::read_config(path, ZONE_FILE_MAX).map_err(|e| LoadError {
        file: path.to_path_buf(),
        line: None,
        message: e.to_string(),
    })?;
    // Read again on SIGHUP, as the user privileges were dropped to: the launcher tries it.
    twistrs_core::reread::note_file(path);
    let file = ctx.files.len();
    ctx.files.push(path.to_path_buf());
    let (text, map) = generate::expand(&text, ctx.budget).map_err(|(line, message)| LoadError {
        file: path.to_path_buf(),
        line: Some(line),
        message,
    })?;
    // A line of the expanded text as a line of the file.
    let orig = |l: usize| match &map {
        Some(m) => m.get(l.wrapping_sub(1)).copied().unwrap_or(l),
        None => l,
    };
    ctx.open
        .push(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()));
    let r = read_entries(path, &text, file, origin, &orig, ctx);
    ctx.open.pop();
    r
}

/// Reads the entries of one file part by part: a part ends at an `$INCLUDE`, whose file is
/// read before the next part, which starts with the origin the part ended with (RFC 1035
/// 5.1: an included file's `$ORIGIN` ends with it) and the TTL state the included file
/// left (as BIND and NSD do).
fn read_entries(
    path: &Path,
    text: &[u8],
    file: usize,
    origin: Option<Dname>,
    orig: &dyn Fn(usize) -> usize,
    ctx: &mut Ctx<'_>,
) -> Result<(), LoadError> {
    let (mut from, mut origin) = (0, origin);
    loop {
        let part = bindsyntax::rewrite(text, from, &mut ctx.ttls).map_err(|(line, message)| {
            LoadError {
                file: path.to_path_buf(),
                line: Some(orig(line)),
                message,
            }
        })?;
        for (line, message) in &part.warnings {
            ctx.warnings.push(LoadError {
                file: path.to_path_buf(),
                line: Some(orig(*line)),
                message: message.clone(),
            });
        }
        origin = read_part(path, &part, file, origin, orig, ctx)?;
        match part.next {
            Some(n) => from = n,
            None => return Ok(()),
        }
    }
}

/// Reads one part of a file (its lines where the file has them) with `domain`'s scanner;
/// the origin at its end.
fn read_part(
    path: &Path,
    part: &bindsyntax::Part,
    file: usize,
    origin: Option<Dname>,
    orig: &dyn Fn(usize) -> usize,
    ctx: &mut Ctx<'_>,
) -> Result<Option<Dname>, LoadError> {
    let text = &part.text[..];
    let raw_lines = entry_lines(text);
    let lines: Vec<usize> = raw_lines.iter().copied().map(orig).collect();
    let mut entry = 0;
    let mut zf = Zonefile::with_capacity(text.len());
    zf.extend_from_slice(text);
    // The scanner wants a line end after the last entry.
    if !text.ends_with(b"\n") {
        zf.extend_from_slice(b"\n");
    }
    zf.set_default_class(Class::IN);
    if let Some(o) = origin {
        zf.set_origin(o);
    }
    loop {
        // The entry's line by its rank; the scanner's own count if the two ever disagree.
        let line = lines.get(entry).copied();
        let stand_in = raw_lines.get(entry).and_then(|l| {
            part.stand_ins
                .iter()
                .find(|(at, _)| at == l)
                .map(|&(_, code)| Rtype::from_int(code))
        });
        entry += 1;
        let read = match zf.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(zf.origin().ok()),
            Err(e) => {
                let mut e = scanner_error(path, line, &e.to_string());
                if line.is_none() {
                    e.line = e.line.map(orig);
                }
                return Err(e);
            }
        };
        let line = line.unwrap_or(0);
        let here = |message: String| LoadError {
            file: path.to_path_buf(),
            line: Some(line),
            message,
        };
        match read {
            Entry::Record(rec) => {
                if rec.class() != Class::IN {
                    return Err(here(format!("class {} (only IN is served)", rec.class())));
                }
                let ttl = rec.ttl().as_secs();
                let rec: domain::base::Record<Dname, Data> = rec
                    .try_flatten_into()
                    .map_err(|_| here("a name too long".into()))?;
                // Moved out, not cloned: a clone of the scanner's `Bytes` allocates a shared
                // header (32 bytes a name) that the zone would keep.
                let (owner, data) = rec.into_owner_and_data();
                let data = match stand_in {
                    Some(rtype) => own_type(&data, rtype).map_err(here)?,
                    None => data,
                };
                ctx.out.push(Read {
                    owner,
                    ttl,
                    data,
                    file,
                    line,
                });
            }
            Entry::Include { path: inc, origin } => {
                let inc = Path::new(inc.as_ref() as &str);
                let inc = if inc.is_absolute() {
                    inc.to_path_buf()
                } else {
                    path.parent().unwrap_or(Path::new(".")).join(inc)
                };
                if let Ok(c) = std::fs::canonicalize(&inc)
                    && ctx.open.contains(&c)
                {
                    return Err(here(format!(
                        "$INCLUDE {}: a loop (that file is being read already)",
                        inc.display()
                    )));
                }
                if ctx.open.len() > MAX_INCLUDE_DEPTH {
                    return Err(here(format!(
                        "$INCLUDE nested more than {MAX_INCLUDE_DEPTH} deep"
                    )));
                }
                if ctx.files.len() >= MAX_FILES {
                    return Err(here(format!(
                        "$INCLUDE {}: over {MAX_FILES} files read for one zone",
                        inc.display()
                    )));
                }
                let origin = origin.or_else(|| zf.origin().ok());
                read_file(&inc, origin, ctx)?;
            }
        }
    }
}

/// A record read with a stand-in type's text form (`bindsyntax`'s SPF as TXT, AFSDB as
/// MX, ...) as a record of its own type: the same wire data, held generically.
fn own_type(data: &Data, rtype: Rtype) -> Result<Data, String> {
    let mut wire = Vec::new();
    domain::base::rdata::ComposeRecordData::compose_rdata(data, &mut wire)
        .map_err(|_| format!("{rtype}: data too long"))?;
    domain::base::rdata::UnknownRecordData::from_octets(rtype, bytes::Bytes::from(wire))
        .map(Data::Unknown)
        .map_err(|_| format!("{rtype}: data too long"))
}

/// The scanner's "LINE:COL: message" as "FILE:LINE: message", the line being where the entry
/// starts (the scanner's own count can be past the entry's end by then).
fn scanner_error(path: &Path, line: Option<usize>, text: &str) -> LoadError {
    let mut parts = text.splitn(3, ':');
    let own = parts.next().and_then(|l| l.parse().ok());
    let mut message = parts.nth(1).unwrap_or(text).trim().to_string();
    // The scanner's words for a type whose text form it lacks (X25, HIP, NID, ...): say
    // what to write instead.
    if message.contains("unknown record type with concrete data") {
        message = "a record type whose text form is not read here (X25, HIP, NID, L32, \
                   ...): write it as RFC 3597's TYPEnn \\# LEN HEX"
            .into();
    }
    LoadError {
        file: path.to_path_buf(),
        line: line.or(own),
        message,
    }
}

/// The first line of each entry the scanner hands out (records and `$INCLUDE`s: `$ORIGIN`,
/// `$TTL` and blank or comment lines it keeps to itself), found with the same rules:
/// parentheses and quotes continue an entry over line ends, `;` starts a comment, `\`
/// escapes the next byte. The scanner does not say where an entry was.
fn entry_lines(text: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut line, mut parens, mut quoted, mut comment) = (1, 0usize, false, false);
    let mut start: Option<(usize, usize)> = None; // (line, byte) where the entry began
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if comment {
            if b == b'\n' {
                comment = false;
            } else {
                i += 1;
                continue;
            }
        }
        match b {
            b'\\' => {
                start.get_or_insert((line, i));
                i += 1; // the escaped byte
            }
            b'"' => {
                start.get_or_insert((line, i));
                quoted = !quoted;
            }
            _ if quoted => {
                if b == b'\n' {
                    line += 1;
                }
            }
            b';' => comment = true,
            b'(' => parens += 1,
            b')' => parens = parens.saturating_sub(1),
            b'\n' => {
                if parens == 0
                    && let Some((l, at)) = start.take()
                    && !is_directive(&text[at..])
                {
                    out.push(l);
                }
                line += 1;
            }
            b' ' | b'\t' | b'\r' => {}
            _ => {
                start.get_or_insert((line, i));
            }
        }
        i += 1;
    }
    if let Some((l, at)) = start
        && !is_directive(&text[at..])
    {
        out.push(l);
    }
    out
}

/// `$ORIGIN` and `$TTL`, which the scanner keeps to itself (in any case, as it reads them).
fn is_directive(entry: &[u8]) -> bool {
    let starts = |w: &[u8]| {
        entry
            .get(..w.len())
            .is_some_and(|e| e.eq_ignore_ascii_case(w))
    };
    starts(b"$ORIGIN") || starts(b"$TTL")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    }

    const ZONE: &str = "\
$TTL 300
@   IN SOA ns1 hostmaster ( 2024010101 ; serial
        3600 600 86400 60 )
    IN NS ns1
    IN MX 10 mail
ns1 IN A 192.0.2.1
mail 60 IN A 192.0.2.2
www IN CNAME @
$INCLUDE more.inc sub
";

    #[test]
    fn a_zone_with_include_and_origin_from_the_file_name() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "more.inc", "host A 192.0.2.9\n@ TXT \"in sub\"");
        let p = write(d.path(), "example.com", ZONE);
        let z = load(&p).unwrap();
        assert_eq!(z.apex.to_string(), "example.com");
        let key = |s: &str| name::key(&name::parse(s).unwrap());
        let mail = z.node(&key("mail.example.com")).unwrap();
        assert_eq!(mail.get(Rtype::A).unwrap().ttl, 60);
        let ns1 = z.node(&key("ns1.example.com")).unwrap();
        assert_eq!(ns1.get(Rtype::A).unwrap().ttl, 300);
        assert!(z.node(&key("host.sub.example.com")).is_some());
        assert!(
            z.node(&key("sub.example.com"))
                .unwrap()
                .get(Rtype::TXT)
                .is_some()
        );
        let t = z.soa_timers().unwrap();
        assert_eq!((t.serial, t.refresh, t.minimum), (2024010101, 3600, 60));
    }

    /// Loads `text` as file `name` in `dir`, which must fail at `line` saying `says`; the
    /// error, for more checks.
    fn fails(dir: &Path, name: &str, text: &str, line: Option<usize>, says: &str) -> LoadError {
        let e = load(&write(dir, name, text)).unwrap_err();
        assert_eq!(e.line, line, "{e}");
        assert!(e.message.contains(says), "{e}");
        e
    }

    const SOA: &str = "@ SOA ns hm 1 2 3 4 5\n";

    #[test]
    fn errors_name_the_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let e = fails(
            d.path(),
            "example.com",
            &format!("{SOA}; comment\n\nwww A 192.0.2.300\n"),
            Some(4),
            "",
        );
        let p = d.path().join("example.com");
        assert!(
            e.to_string().starts_with(&format!("{}:4:", p.display())),
            "{e}"
        );
        let bad = [
            (
                "example.org",
                "x.example.net. A 192.0.2.1\n",
                Some(2),
                "outside the zone",
            ),
            (
                "cname.test",
                "www A 192.0.2.1\nwww CNAME other\n",
                Some(3),
                "CNAME and other data",
            ),
        ];
        for (name, text, line, says) in bad {
            fails(d.path(), name, &format!("{SOA}{text}"), line, says);
        }
        fails(d.path(), "example.net", "www A 192.0.2.1\n", None, "no SOA");

        let e = fails(
            d.path(),
            "inc.test",
            &format!("{SOA}$INCLUDE missing.inc\n"),
            None,
            "",
        );
        assert!(e.file.ends_with("missing.inc"), "{e}");

        let e = fails(
            d.path(),
            "loop.test",
            &format!("{SOA}$INCLUDE loop.test\n"),
            Some(2),
            "a loop",
        );
        assert_eq!(e.file, d.path().join("loop.test"), "{e}");
    }

    /// Each file includes the next one twice: 2^11 reads without a cap, and no loop.
    #[test]
    fn includes_are_capped_in_depth_and_in_number() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..11 {
            let next = format!("$INCLUDE f{}.inc\n", i + 1);
            write(d.path(), &format!("f{i}.inc"), &format!("{next}{next}"));
        }
        write(d.path(), "f11.inc", "x A 192.0.2.1\n");
        let e = fails(
            d.path(),
            "wide.test",
            &format!("{SOA}$INCLUDE f0.inc\n"),
            Some(2),
            "over 1000 files",
        );
        assert!(e.file.to_string_lossy().contains(".inc"), "{e}");

        for i in 0..20 {
            write(
                d.path(),
                &format!("d{i}.inc"),
                &format!("$INCLUDE d{}.inc\n", i + 1),
            );
        }
        write(d.path(), "d20.inc", "x A 192.0.2.1\n");
        fails(
            d.path(),
            "deep.test",
            &format!("{SOA}$INCLUDE d0.inc\n"),
            Some(1),
            "16 deep",
        );
    }

    #[test]
    fn generate_makes_records_and_errors_keep_their_line() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "2.0.192.in-addr.arpa",
            &format!("{SOA}$GENERATE 1-254 $ PTR host$.example.\nx TXT after\n"),
        );
        let z = load(&p).unwrap();
        let key = |s: &str| name::key(&name::parse(s).unwrap());
        assert!(z.node(&key("254.2.0.192.in-addr.arpa")).is_some());
        assert!(z.node(&key("255.2.0.192.in-addr.arpa")).is_none());
        assert!(z.node(&key("x.2.0.192.in-addr.arpa")).is_some());

        let bad = [
            (
                "gen.test",
                "\n$GENERATE 250-256 h$ A 192.0.2.$\nok A 192.0.2.1\n",
                3,
                "",
            ),
            (
                "big.test",
                "$GENERATE 0-99999 h$ A 192.0.2.1\n",
                2,
                "over 65536",
            ),
            (
                "after.test",
                "$GENERATE 1-9 h$ A 192.0.2.$\nbad A 300.1.1.1\n",
                3,
                "",
            ),
        ];
        for (name, text, line, says) in bad {
            fails(d.path(), name, &format!("{SOA}{text}"), Some(line), says);
        }
    }

    /// The scanner takes directives in any case; so must the count of entries, or every
    /// error after a `$ttl` names the line before its own.
    #[test]
    fn lower_case_directives_keep_the_error_lines() {
        let d = tempfile::tempdir().unwrap();
        let text = format!("$origin case.test.\n{SOA}$ttl 300\nwww A 192.0.2.300\n");
        fails(d.path(), "case.test", &text, Some(4), "");
    }

    /// `\$` is a literal `$`, as in BIND, even where it starts the owner.
    #[test]
    fn generate_makes_names_with_a_literal_dollar() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "dollar.test",
            &format!("{SOA}$GENERATE 1-2 \\$h$ TXT a$$\n"),
        );
        let z = load(&p).unwrap();
        let key = |s: &str| name::key(&name::parse(s).unwrap());
        assert!(z.node(&key("$h2.dollar.test")).is_some());
    }

    const SIGNED: &str = "\
www CNAME ns
www RRSIG CNAME 13 3 300 20300101000000 20200101000000 1 example.com. AAAA
www NSEC x.example.com. CNAME RRSIG NSEC
";

    /// RRSIG and NSEC sit beside a CNAME in every signed zone (RFC 4035 2.5); any other
    /// type there, NSEC3 included, is still "other data".
    #[test]
    fn a_signed_cname_loads_and_other_data_beside_it_does_not() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "example.com", &format!("{SOA}{SIGNED}"));
        let z = load(&p).unwrap();
        let key = |s: &str| name::key(&name::parse(s).unwrap());
        let www = z.node(&key("www.example.com")).unwrap();
        for t in [Rtype::CNAME, Rtype::RRSIG, Rtype::NSEC] {
            assert!(www.get(t).is_some(), "{t}");
        }
        for other in [
            "www NSEC3 1 0 0 - 0123456789ABCDEFGHIJKLMNOPQRSTUV A",
            "www TXT x",
        ] {
            fails(
                d.path(),
                "example.com",
                &format!("{SOA}{SIGNED}{other}\n"),
                Some(2),
                "www.example.com has a CNAME and other data",
            );
        }
    }

    /// A second CNAME at a name is refused at its line, as BIND ("multiple RRs of singleton
    /// type") and NSD do; the same CNAME twice is a duplicate, dropped.
    /// So is a second DNAME (RFC 6672 2.4; BIND's "multiple RRs of singleton type").
    /// Before, both were loaded and the first one found was used.
    #[test]
    fn two_dnames_at_a_name_are_refused_at_the_second() {
        let d = tempfile::tempdir().unwrap();
        let text = format!(
            "{SOA}d DNAME a.example.net.
d DNAME A.example.NET.
d DNAME b.example.net.
"
        );
        fails(
            d.path(),
            "example.com",
            &text,
            Some(4),
            "d.example.com has more than one DNAME record",
        );
    }

    #[test]
    fn two_cnames_at_a_name_are_refused_at_the_second() {
        let d = tempfile::tempdir().unwrap();
        let text = format!("{SOA}t CNAME ns\nt CNAME NS.example.com.\nT CNAME other.\n");
        fails(
            d.path(),
            "example.com",
            &text,
            Some(4),
            "t.example.com has more than one CNAME record",
        );
        let p = write(
            d.path(),
            "example.com",
            &format!("{SOA}t CNAME ns\nt CNAME ns\n"),
        );
        let z = load(&p).unwrap();
        let key = |s: &str| name::key(&name::parse(s).unwrap());
        let t = z.node(&key("t.example.com")).unwrap();
        assert_eq!(t.get(Rtype::CNAME).unwrap().data.len(), 1);
    }

    /// The TTL (and the origin) of `name`'s `rtype` set.
    fn ttl_of(z: &Zone, name: &str, rtype: Rtype) -> u32 {
        let node = z.node(&name::key(&name::parse(name).unwrap()));
        node.and_then(|n| n.get(rtype))
            .unwrap_or_else(|| panic!("{name} {rtype}"))
            .ttl
    }

    /// `$TTL` goes into an included file, and one set there stays after it, as in BIND and
    /// NSD; the included file's `$ORIGIN` does not (RFC 1035 5.1). Before, the included file
    /// started with the scanner's 3600, a TTL in neither file.
    #[test]
    fn include_carries_the_ttl_in_and_out_but_not_the_origin() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "a.inc",
            "x A 192.0.2.77\n$TTL 42\n$ORIGIN sub.i.test.\ny A 192.0.2.78\n",
        );
        write(d.path(), "b.inc", "z A 192.0.2.79\n");
        let p = write(
            d.path(),
            "i.test",
            "$TTL 5400\n@ SOA ns h 1 2 3 4 600\nns A 192.0.2.1\n$INCLUDE a.inc\n\
             after A 192.0.2.5\nb 77 A 192.0.2.6\n$INCLUDE b.inc\nafter2 A 192.0.2.7\n",
        );
        let z = load(&p).unwrap();
        for (name, ttl) in [
            ("ns.i.test", 5400),
            ("x.i.test", 5400),
            ("y.sub.i.test", 42),
            ("after.i.test", 42),
            ("b.i.test", 77),
            ("z.i.test", 42),
            ("after2.i.test", 42),
        ] {
            assert_eq!(ttl_of(&z, name, Rtype::A), ttl, "{name}");
        }
        // Without $TTL, BIND carries the last TTL given.
        let p = write(
            d.path(),
            "j.test",
            "@ 500 SOA ns h 1 2 3 4 600\nns 700 A 192.0.2.1\n$INCLUDE b.inc\nq A 192.0.2.3\n",
        );
        let z = load(&p).unwrap();
        assert_eq!(ttl_of(&z, "z.j.test", Rtype::A), 700);
        assert_eq!(ttl_of(&z, "q.j.test", Rtype::A), 700);
        // Errors after an $INCLUDE keep their lines.
        fails(
            d.path(),
            "k.test",
            &format!("{SOA}$INCLUDE b.inc\n\nbad A 300.1.1.1\n"),
            Some(4),
            "",
        );
    }

    /// What RHEL and Fedora's default zone files hold: TTL and SOA timers with units.
    #[test]
    fn ttl_units_load() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "u.test",
            "$TTL 3H\n@ IN SOA @ rname.invalid. ( 0 1D 1H 1W 3H )\n\tNS @\n\tA 127.0.0.1\n\
             a 1h30m IN A 192.0.2.1\nb IN 1w A 192.0.2.2\n",
        );
        let z = load(&p).unwrap();
        assert_eq!(ttl_of(&z, "u.test", Rtype::A), 10_800);
        assert_eq!(ttl_of(&z, "a.u.test", Rtype::A), 5400);
        assert_eq!(ttl_of(&z, "b.u.test", Rtype::A), 604_800);
        let t = z.soa_timers().unwrap();
        assert_eq!(
            (t.refresh, t.retry, t.expire, t.minimum),
            (86_400, 3600, 604_800, 10_800)
        );
        // A bad $TTL is blamed on its own line, not the next record's.
        fails(
            d.path(),
            "v.test",
            &format!("{SOA}$TTL 1x\nwww A 192.0.2.1\n"),
            Some(2),
            "$TTL",
        );
    }

    /// RFC 2181 8: a TTL over 2^31 - 1 is read as 0, with a warning naming the file and
    /// line, as BIND does.
    #[test]
    fn ttls_over_the_maximum_are_zero_with_a_warning() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "m.test",
            &format!("{SOA}a 4294967295 A 192.0.2.1\nb 2147483647 A 192.0.2.2\n"),
        );
        let (z, w) = load_warning(&p).unwrap();
        assert_eq!(ttl_of(&z, "a.m.test", Rtype::A), 0);
        assert_eq!(ttl_of(&z, "b.m.test", Rtype::A), 2_147_483_647);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].to_string()
                .starts_with(&format!("{}:2: a TTL of 4294967295", p.display())),
            "{}",
            w[0]
        );
    }

    /// 8-bit bytes (UTF-8) in owners and strings load as those bytes, as in BIND and NSD.
    #[test]
    fn utf8_in_owners_and_strings_loads() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "u8.test",
            &format!("{SOA}é A 192.0.2.1 ; é\na TXT \"utf8 é\"\n"),
        );
        let z = load(&p).unwrap();
        let owner =
            Dname::from_octets(bytes::Bytes::from_static(b"\x02\xc3\xa9\x02u8\x04test\x00"))
                .unwrap();
        assert!(z.node(&name::key(&owner)).is_some());
        let txt = z
            .node(&name::key(&name::parse("a.u8.test").unwrap()))
            .and_then(|n| n.get(Rtype::TXT))
            .unwrap();
        match &txt.data[0] {
            domain::rdata::ZoneRecordData::Txt(t) => {
                assert_eq!(t.as_flat_slice(), Some("utf8 é".as_bytes()))
            }
            other => panic!("{other:?}"),
        }
    }

    /// A quoted `$GENERATE` right-hand side, as BIND reads it: one word, made into text.
    #[test]
    fn generate_with_a_quoted_right_hand_side() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "g.test",
            &format!("{SOA}$GENERATE 1-2 k$ TXT \"a b c d\"\n$GENERATE 1-2 v$ TXT \"v=$ x\"\n"),
        );
        let z = load(&p).unwrap();
        let strings = |n: &str| match &z
            .node(&name::key(&name::parse(n).unwrap()))
            .and_then(|n| n.get(Rtype::TXT))
            .unwrap()
            .data[0]
        {
            domain::rdata::ZoneRecordData::Txt(t) => t
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(strings("k2.g.test"), ["a", "b", "c", "d"]);
        assert_eq!(strings("v1.g.test"), ["v=1", "x"]);
    }

    /// A type whose text form the scanner lacks is refused at its line, saying what to
    /// write instead; the same record in RFC 3597's form loads.
    #[test]
    fn a_type_without_a_text_form_says_to_write_it_generically() {
        let d = tempfile::tempdir().unwrap();
        fails(
            d.path(),
            "t.test",
            &format!("{SOA}a X25 311061700956\n"),
            Some(2),
            "TYPEnn \\# LEN HEX",
        );
        let p = write(
            d.path(),
            "t.test",
            &format!("{SOA}a TYPE99 \\# 12 0b763d73706631202d616c6c\n"),
        );
        let z = load(&p).unwrap();
        let a = z
            .node(&name::key(&name::parse("a.t.test").unwrap()))
            .unwrap();
        assert!(a.get(Rtype::SPF).is_some());
    }

    /// SPF, AFSDB, RT, KX, URI, EUI48, EUI64 and LOC in their text forms (as BIND, NSD and, for
    /// SPF and AFSDB, twistd read them) load as records of their own types, with the wire
    /// data their RFCs give; relative names are completed by the origin. Before, each was
    /// an error that said to write it in RFC 3597's form.
    #[test]
    fn spf_afsdb_rt_kx_uri_eui_and_loc_records_are_read() {
        let d = tempfile::tempdir().unwrap();
        let text = format!(
            "{SOA}a SPF \"v=spf1 -all\" x\nafs AFSDB 1 db\nrt 60 RT 10 relay.t.test.\n\
             kx IN KX 10 KX.example.\nuri URI ( 10 1\n \"ftp://f/\\\"p\\\"\\033\" ) ; c\n\
             e48 EUI48 00-00-5e-00-53-2A\ne64 EUI64 00-00-5e-ef-10-00-00-2a\n"
        );
        let z = load(&write(d.path(), "t.test", &text)).unwrap();
        let wire = |owner: &str, rtype: Rtype| {
            let node = z
                .node(&name::key(&name::parse(owner).unwrap()))
                .unwrap_or_else(|| panic!("{owner}"));
            let set = node.get(rtype).unwrap_or_else(|| panic!("{owner} {rtype}"));
            let mut out = Vec::new();
            domain::base::rdata::ComposeRecordData::compose_rdata(&set.data[0], &mut out).unwrap();
            (set.ttl, out)
        };
        let name = |labels: &[&str]| {
            let mut out = Vec::new();
            for l in labels {
                out.push(l.len() as u8);
                out.extend_from_slice(l.as_bytes());
            }
            out.push(0);
            out
        };
        assert_eq!(wire("a.t.test", Rtype::SPF).1, b"\x0bv=spf1 -all\x01x");
        let mut afs = vec![0, 1];
        afs.extend(name(&["db", "t", "test"]));
        assert_eq!(wire("afs.t.test", Rtype::AFSDB).1, afs);
        let mut rt = vec![0, 10];
        rt.extend(name(&["relay", "t", "test"]));
        assert_eq!(wire("rt.t.test", Rtype::RT), (60, rt));
        let mut kx = vec![0, 10];
        kx.extend(name(&["KX", "example"]));
        assert_eq!(wire("kx.t.test", Rtype::KX).1, kx);
        let mut uri = vec![0, 10, 0, 1];
        uri.extend_from_slice(b"ftp://f/\"p\"\x21");
        assert_eq!(wire("uri.t.test", Rtype::URI).1, uri);
        assert_eq!(
            wire("e48.t.test", Rtype::EUI48).1,
            [0x00, 0x00, 0x5e, 0x00, 0x53, 0x2a]
        );
        assert_eq!(
            wire("e64.t.test", Rtype::EUI64).1,
            [0x00, 0x00, 0x5e, 0xef, 0x10, 0x00, 0x00, 0x2a]
        );
        // LOC (RFC 1876's first example): version, size 30 m, the default precisions, then
        // latitude and longitude in ms from 2^31, altitude in cm from -100,000 m.
        let loc = format!("{SOA}l LOC 42 21 54 N 71 06 18 W -24m 30m\n");
        let z = load(&write(d.path(), "l.test", &loc)).unwrap();
        let set = z
            .node(&name::key(&name::parse("l.l.test").unwrap()))
            .and_then(|n| n.get(Rtype::LOC))
            .expect("a LOC");
        let mut got = Vec::new();
        domain::base::rdata::ComposeRecordData::compose_rdata(&set.data[0], &mut got).unwrap();
        let mut want = vec![0, 0x33, 0x16, 0x13];
        want.extend_from_slice(&(2_147_483_648u32 + 152_514_000).to_be_bytes());
        want.extend_from_slice(&(2_147_483_648u32 - 255_978_000).to_be_bytes());
        want.extend_from_slice(&(10_000_000u32 - 2_400).to_be_bytes());
        assert_eq!(got, want);
        for (bad, says) in [
            ("91 N 0 E 0", "LOC: degrees 0 to 90 expected"),
            ("1 60 N 0 E 0", "LOC: minutes 0 to 59 expected"),
            ("1 2 3.4567 N 0 E 0", "LOC: seconds"),
            ("1 2 3 4 N 0 E 0", "LOC: expected N or S"),
            ("90 0 0.001 N 0 E 0", "LOC: over 90 degrees"),
            ("1 N 0 E", "LOC: no altitude"),
            ("1 N 0 E 0 1 2 3 4", "LOC: too many words"),
            ("1 N 0 E -100000.01m", "LOC: altitude"),
            ("1 N 0 E 0 90000000.01", "LOC: sizes"),
        ] {
            let text = format!("{SOA}l LOC {bad}\n");
            fails(d.path(), "l.test", &text, Some(2), says);
        }
        // Line numbers stay the file's, past a URI over two lines.
        let bad = format!("{SOA}u URI ( 1 2\n \"x\" )\ne EUI48 00-00\n");
        fails(
            d.path(),
            "t.test",
            &bad,
            Some(4),
            "EUI48: expected 6 hex pairs",
        );
        let bad = format!("{SOA}\nu URI 1 \"x\"\n");
        fails(
            d.path(),
            "t.test",
            &bad,
            Some(3),
            "URI: expected a priority",
        );
    }

    /// The wire data of `owner`'s `rtype` set's first record in `z`.
    fn wire_of(z: &Zone, owner: &str, rtype: Rtype) -> Vec<u8> {
        let set = z
            .node(&name::key(&name::parse(owner).unwrap()))
            .and_then(|n| n.get(rtype))
            .unwrap_or_else(|| panic!("{owner} {rtype}"));
        let mut out = Vec::new();
        domain::base::rdata::ComposeRecordData::compose_rdata(&set.data[0], &mut out).unwrap();
        out
    }

    fn hex(h: &str) -> Vec<u8> {
        let h: String = h.split_whitespace().collect();
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Each (owner, type, text form, wire data in hex) loads to that wire data, and to the
    /// same as its RFC 3597 form `TYPEnn \# LEN HEX` does.
    fn reads_as(d: &Path, cases: &[(&str, Rtype, &str, &str)]) {
        let text: String = cases
            .iter()
            .map(|(o, t, data, _)| format!("{o} {t} {data}\n"))
            .collect();
        let generic: String = cases
            .iter()
            .map(|(o, t, _, h)| {
                let w = hex(h);
                format!(
                    "{o} TYPE{} \\# {} {}\n",
                    t.to_int(),
                    w.len(),
                    h.replace(' ', "")
                )
            })
            .collect();
        let z = load(&write(d, "r.test", &format!("{SOA}{text}"))).unwrap();
        let g = load(&write(d, "g.test", &format!("{SOA}{generic}"))).unwrap();
        for (o, t, data, h) in cases {
            let got = wire_of(&z, &format!("{o}.r.test"), *t);
            assert_eq!(got, hex(h), "{o} {t} {data}");
            assert_eq!(got, wire_of(&g, &format!("{o}.g.test"), *t), "{o} {t}");
        }
    }

    /// DHCID (RFC 4701), SMIMEA (RFC 8162, TLSA's form) and CERT (RFC 4398, with its type
    /// and algorithm mnemonics) in their text forms load to the wire data BIND 9.18's
    /// `named-compilezone -F raw` wrote for the same lines. Before, each was an error that
    /// said to write it in RFC 3597's form.
    #[test]
    fn dhcid_smimea_and_cert_records_are_read() {
        let d = tempfile::tempdir().unwrap();
        reads_as(
            d.path(),
            &[
                (
                    "dh",
                    Rtype::DHCID,
                    "( AAIBY2/AuCccgoJbsaxcQc9TUapptP69l\n OjxfNuVAA2kjEA= )",
                    "0002 0163 6fc0 b827 1c82 825b b1ac 5c41 cf53 51aa 69b4 febd 94e8 \
                     f17c db95 000d a48c 40",
                ),
                (
                    "sm",
                    Rtype::SMIMEA,
                    "3 1 1 0123456789abcdef",
                    "03 01 01 0123456789abcdef",
                ),
                (
                    "c1",
                    Rtype::CERT,
                    "PKIX 12345 RSASHA256 AQID BAU=",
                    "0001 3039 08 0102030405",
                ),
                (
                    "c2",
                    Rtype::CERT,
                    "65535 0 255 AQIDBAU=",
                    "ffff 0000 ff 0102030405",
                ),
                (
                    "c3",
                    Rtype::CERT,
                    "iacpkix 1 ecdsap256sha256 AA==",
                    "0008 0001 0d 00",
                ),
            ],
        );
        for (bad, says) in [
            ("x DHCID", "DHCID: no base64 data"),
            ("x DHCID AA=!", "DHCID: bad base64"),
            ("x DHCID \"AA==\"", "DHCID: expected base64"),
            ("x SMIMEA 3 1 1 xyz", ""),
            ("x CERT PKIX 1 8", "CERT: no base64 data"),
            ("x CERT X509 1 8 AA==", "CERT: the type"),
            ("x CERT 65536 1 8 AA==", "CERT: the type"),
            ("x CERT PKIX 65536 8 AA==", "CERT: the key tag"),
            ("x CERT PKIX 1 256 AA==", "CERT: the algorithm"),
            ("x CERT PKIX 1 RSA AA==", "CERT: the algorithm"),
            ("x CERT PKIX", "CERT: expected a type"),
        ] {
            fails(
                d.path(),
                "b.test",
                &format!("{SOA}\n{bad}\n"),
                Some(3),
                says,
            );
        }
    }

    /// APL (RFC 3123) in its text form loads to the wire data BIND 9.18's
    /// `named-compilezone -F raw` wrote for the same lines: trailing zero bytes dropped, bits
    /// past the prefix kept, an empty list allowed. Errors are those BIND refuses.
    #[test]
    fn apl_records_are_read() {
        let d = tempfile::tempdir().unwrap();
        reads_as(
            d.path(),
            &[
                (
                    "a1",
                    Rtype::APL,
                    "1:192.168.32.0/21 !1:192.168.38.0/28",
                    "0001 15 03 c0a820 0001 1c 83 c0a826",
                ),
                (
                    "a2",
                    Rtype::APL,
                    "( 1:224.0.0.0/4\n 2:FF00:0:0:0:0:0:0:0/8 )",
                    "0001 04 01 e0 0002 08 01 ff",
                ),
                ("a3", Rtype::APL, "1:192.168.32.1/21", "0001 15 04 c0a82001"),
                (
                    "a4",
                    Rtype::APL,
                    "2:::/0 1:0.0.0.0/0",
                    "0002 00 00 0001 00 00",
                ),
                (
                    "a5",
                    Rtype::APL,
                    "2:2001:db8::1/128 01:1.2.0.0/8",
                    "0002 80 10 20010db8000000000000000000000001 0001 08 02 0102",
                ),
            ],
        );
        // An empty list is an APL record with no data, as BIND reads it.
        let z = load(&write(d.path(), "e.test", &format!("{SOA}e APL\n"))).unwrap();
        assert_eq!(wire_of(&z, "e.e.test", Rtype::APL), b"");
        for (bad, says) in [
            ("3:1.2.3.4/8", "APL: address family 3"),
            ("1:1.2.3.4/33", "APL: prefix 33 is over 32"),
            ("2:::/129", "APL: prefix 129 is over 128"),
            ("1:1.2.3.4/300", "APL: prefix 300 is too long"),
            (
                "1:1.2.3.4",
                "APL: \"1:1.2.3.4\" is not [!]afi:address/prefix",
            ),
            ("1:1.2.3/8", "APL: \"1.2.3\" is not an IPv4 address"),
            ("2:1.2.3.4/8", "is not an IPv6 address"),
            ("!!1:1.2.3.4/8", "is not [!]afi"),
            ("x:1.2.3.4/8", "is not [!]afi"),
            ("\"1:1.2.3.4/8\"", "is not [!]afi"),
        ] {
            fails(
                d.path(),
                "b.test",
                &format!("{SOA}\nx APL {bad}\n"),
                Some(3),
                says,
            );
        }
    }

    /// CSYNC (RFC 7477) in its text form loads to the wire data BIND 9.18's
    /// `named-compilezone -F raw` wrote for the same lines: the types as NSEC's bitmap, in
    /// any order and case, repeated, `TYPEnn`, over several windows, or none.
    #[test]
    fn csync_records_are_read() {
        let d = tempfile::tempdir().unwrap();
        reads_as(
            d.path(),
            &[
                (
                    "c1",
                    Rtype::CSYNC,
                    "66 3 A NS AAAA",
                    "00000042 0003 00 04 60000008",
                ),
                ("c2", Rtype::CSYNC, "0 0", "00000000 0000"),
                (
                    "c3",
                    Rtype::CSYNC,
                    "4294967295 65535 ( TYPE65535 a\n TYPE1 caa )",
                    &format!(
                        "ffffffff ffff 00 01 40 01 01 40 ff 20 {}01",
                        "00".repeat(31)
                    ),
                ),
                ("c4", Rtype::CSYNC, "1 0 A A", "00000001 0000 00 01 40"),
                (
                    "c5",
                    Rtype::CSYNC,
                    "1 0 NSEC3 RRSIG SIG",
                    "00000001 0000 00 07 00000080000220",
                ),
            ],
        );
        for (bad, says) in [
            ("4294967296 0 A", "CSYNC: the serial"),
            ("1 65536 A", "CSYNC: the flags"),
            ("1 0 FOO", "CSYNC: \"FOO\" is not a record type"),
            ("1 0 TYPE65536", "CSYNC: \"TYPE65536\" is not a record type"),
            ("1 0 \"A\"", "is not a record type"),
            ("1", "CSYNC: expected a serial"),
            ("x 0 A", "CSYNC: the serial"),
        ] {
            fails(
                d.path(),
                "b.test",
                &format!("{SOA}\nx CSYNC {bad}\n"),
                Some(3),
                says,
            );
        }
    }

    /// KEY (RFC 2535, DNSKEY's text form, with BIND's flag and protocol names) and SIG
    /// (RRSIG's text form) load to the wire data BIND 9.18's `named-compilezone -F raw`
    /// wrote for the same lines; a KEY whose flags say NOKEY has no key data.
    #[test]
    fn key_and_sig_records_are_read() {
        let d = tempfile::tempdir().unwrap();
        reads_as(
            d.path(),
            &[
                ("k1", Rtype::KEY, "256 3 8 AwEAAQ==", "0100 03 08 03010001"),
                ("k2", Rtype::KEY, "0xC000 3 8", "c000 03 08"),
                (
                    "k3",
                    Rtype::KEY,
                    "512 3 RSASHA1 AQID BAU=",
                    "0200 03 05 0102030405",
                ),
                ("k4", Rtype::KEY, "0400 DNSSEC 8 AQID", "0190 03 08 010203"),
                (
                    "k5",
                    Rtype::KEY,
                    "NOAUTH|HOST|SIG3 ipsec 253 AQID",
                    "8203 04 fd 010203",
                ),
                ("k6", Rtype::KEY, "zone|ksk ALL 8 AQID", "0101 ff 08 010203"),
                ("k7", Rtype::KEY, "NOKEY NONE 8", "c000 00 08"),
                (
                    "s1",
                    Rtype::SIG,
                    "A 8 3 300 20300101000000 20200101000000 12345 t.test. AQID",
                    "0001 08 03 0000012c 70dbd880 5e0be100 3039 0174047465737400 010203",
                ),
                (
                    "s2",
                    Rtype::SIG,
                    "TYPE65 RSASHA256 3 300 20300101000000 20200101000000 1 rel AQID",
                    "0041 08 03 0000012c 70dbd880 5e0be100 0001 0372656c0172047465737400 010203",
                ),
            ],
        );
        for (bad, says) in [
            ("x KEY 0xC000 3 8 AQID", "KEY: a key whose flags say NOKEY"),
            ("x KEY 256 3 8", "KEY: no base64 data"),
            ("x KEY 65536 3 8 AQID", "KEY: the flags"),
            ("x KEY 0x10000 3 8 AQID", "KEY: the flags"),
            ("x KEY 0xq 3 8 AQID", "KEY: the flags"),
            ("x KEY ZONE|BOGUS 3 8 AQID", "KEY: the flags"),
            ("x KEY 256 256 8 AQID", "KEY: the protocol"),
            ("x KEY 256 3 256 AQID", "KEY: the algorithm"),
            ("x KEY 256 3 8 \"AQID\"", "KEY: expected base64"),
            ("x KEY 256 3", "KEY: expected flags"),
            (
                "x SIG A 8 3 300 20300101000000 20200101000000 1 rel",
                "SIG: expected the type covered",
            ),
            (
                "x SIG A 8 3 300 20300101000000 20300101000000 1 rel AQ!D",
                "",
            ),
            (
                "x SIG A BOGUS 3 300 20300101000000 20300101000000 1 rel AQID",
                "",
            ),
        ] {
            fails(
                d.path(),
                "b.test",
                &format!("{SOA}\n{bad}\n"),
                Some(3),
                says,
            );
        }
        // SIG and KEY may sit beside a CNAME (RFC 2181 10.1), as BIND 9.18 loads them; NXT,
        // which BIND refuses there, may not.
        let beside = format!(
            "{SOA}w CNAME ns\nw SIG CNAME 8 3 300 20300101000000 20200101000000 1 c.test. AQID\n\
             w KEY 256 3 8 AQID\n"
        );
        let z = load(&write(d.path(), "c.test", &beside)).unwrap();
        assert_eq!(
            wire_of(&z, "w.c.test", Rtype::KEY),
            hex("0100 03 08 010203")
        );
        fails(
            d.path(),
            "c.test",
            &format!("{beside}w TYPE30 \\# 1 00\n"),
            Some(2),
            "w.c.test has a CNAME and other data",
        );
    }

    /// WKS (RFC 1035 3.4.2) in its text form loads to the wire data BIND 9.18's
    /// `named-compilezone -F raw` wrote for the same lines (Debian's netbase
    /// /etc/protocols and /etc/services): protocols and services by number, name or alias,
    /// a service name for the record's protocol (any protocol's when neither TCP nor UDP).
    #[test]
    fn wks_records_are_read() {
        let d = tempfile::tempdir().unwrap();
        let mut big = "00".repeat(8191);
        big.push_str("01");
        reads_as(
            d.path(),
            &[
                ("w1", Rtype::WKS, "192.0.2.1 6 smtp", "c0000201 06 00000040"),
                (
                    "w2",
                    Rtype::WKS,
                    "192.0.2.1 UDP domain ntp",
                    "c0000201 11 00000000000004000000000000000010",
                ),
                ("w3", Rtype::WKS, "192.0.2.1 17", "c0000201 11"),
                (
                    "w4",
                    Rtype::WKS,
                    "192.0.2.1 icmp smtp",
                    "c0000201 01 00000040",
                ),
                (
                    "w5",
                    Rtype::WKS,
                    "192.0.2.1 tcp SMTP 0025 mail",
                    "c0000201 06 00000040",
                ),
                ("w6", Rtype::WKS, "192.0.2.1 6 1 0", "c0000201 06 c0"),
                (
                    "w7",
                    Rtype::WKS,
                    "192.0.2.1 gre 65535",
                    &format!("c0000201 2f {big}"),
                ),
            ],
        );
        for (bad, says) in [
            ("192.0.2.1 256", "WKS: protocol \"256\""),
            ("192.0.2.1 Tcp www", "WKS: protocol \"Tcp\""),
            ("192.0.2.1 tcp nosuch", "WKS: service \"nosuch\""),
            ("192.0.2.1 udp smtp", "in /etc/services for udp"),
            ("192.0.2.1 tcp 65536", "WKS: service \"65536\""),
            ("192.0.2.1 6 -1", "WKS: service \"-1\""),
            ("192.0.2.1 6 25x", "WKS: service \"25x\""),
            ("192.0.2.1 tcp \"smtp\"", "WKS: service"),
            ("1.2.3 6 25", "WKS: \"1.2.3\" is not an IPv4 address"),
            ("192.0.2.1", "WKS: expected an IPv4 address"),
        ] {
            fails(
                d.path(),
                "b.test",
                &format!("{SOA}\nx WKS {bad}\n"),
                Some(3),
                says,
            );
        }
    }
}
