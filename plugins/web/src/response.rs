//! Building responses: status lines and headers into a reused buffer, twistd's error pages,
//! its directory listing, and byte ranges.

use std::cell::RefCell;
use std::ffi::OsString;
use std::io::Write;
use std::time::SystemTime;

use std::os::unix::ffi::OsStrExt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};

pub const SERVER: &str = concat!("twistrs/", env!("CARGO_PKG_VERSION"));

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        412 => "Precondition Failed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

thread_local! {
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// The Date header value, formatted once per second.
pub fn with_date<R>(f: impl FnOnce(&str) -> R) -> R {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        f(&d.1)
    })
}

/// Starts a response: status line, Server, Date, and the `--add-header` lines.
pub fn begin(buf: &mut Vec<u8>, status: u16, extra: &[String]) {
    let _ = write!(
        buf,
        "HTTP/1.1 {status} {}\r\nServer: {SERVER}\r\n",
        reason(status)
    );
    with_date(|d| {
        buf.extend_from_slice(b"Date: ");
        buf.extend_from_slice(d.as_bytes());
        buf.extend_from_slice(b"\r\n");
    });
    for h in extra {
        buf.extend_from_slice(h.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
}

pub fn header(buf: &mut Vec<u8>, name: &str, value: impl std::fmt::Display) {
    let _ = write!(buf, "{name}: {value}\r\n");
}

/// Ends the head; says whether the connection stays open.
pub fn end(buf: &mut Vec<u8>, keep_alive: bool, http10: bool) {
    if !keep_alive {
        buf.extend_from_slice(b"Connection: close\r\n");
    } else if http10 {
        buf.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    buf.extend_from_slice(b"\r\n");
}

/// twistd's error page (`resource.ErrorPage`), byte for byte: its template starts and ends
/// with a newline.
pub fn error_page(status: u16) -> String {
    let (title, detail) = match status {
        404 => ("No Such Resource", "File not found."),
        403 => ("Forbidden Resource", "Sorry, resource is forbidden."),
        405 => (
            "Method Not Allowed",
            "Only GET and HEAD are supported here.",
        ),
        _ => (reason(status), reason(status)),
    };
    format!(
        "\n<html>\n  <head><title>{status} - {title}</title></head>\n  <body>\n    <h1>{title}</h1>\n    <p>{detail}</p>\n  </body>\n</html>\n"
    )
}

/// twistd's redirect body (`util.redirectTo`).
pub fn redirect_page(location: &str) -> String {
    let l = html_escape::encode_double_quoted_attribute(location);
    format!(
        "\n<html>\n    <head>\n        <meta http-equiv=\"refresh\" content=\"0;URL={l}\">\n    </head>\n    <body bgcolor=\"#FFFFFF\" text=\"#000000\">\n    <a href=\"{l}\">click here</a>\n    </body>\n</html>\n"
    )
}

/// Characters left as they are in listing links; everything else is percent-encoded.
const LINK: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// twistd's size format: `%iB`, `%iK`, `%iM`, `%iG`, 1024-based, truncated.
pub fn format_size(n: u64) -> String {
    const K: u64 = 1024;
    match n {
        n if n < K => format!("{n}B"),
        n if n < K * K => format!("{}K", n / K),
        n if n < K * K * K => format!("{}M", n / (K * K)),
        n => format!("{}G", n / (K * K * K)),
    }
}

/// The directory listing in twistd's look: directories first, then files; every name
/// HTML-escaped in text and percent-encoded in links.
pub fn listing(
    url_path: &str,
    entries: &[(OsString, bool, u64)],
    typer: impl Fn(&OsString) -> (String, Option<&'static str>),
) -> String {
    // The path as the names it is made of, as twistd and nginx title it (`/dir with space/`,
    // not `/dir%20with%20space/`).
    let decoded = percent_encoding::percent_decode_str(url_path).decode_utf8_lossy();
    let title = html_escape::encode_text(&decoded);
    let mut out = format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<title>Directory listing for {title}</title>\n<style>\n\
         .even-dir {{ background-color: #efe0ef }}\n.even {{ background-color: #eee }}\n\
         .odd-dir {{background-color: #f0d0ef }}\n.odd {{ background-color: #dedede }}\n\
         .icon {{ text-align: center }}\n.listing {{\n    margin-left: auto;\n    margin-right: auto;\n    width: 50%;\n    padding: 0.1em;\n    }}\n\n\
         body {{ border: 0; padding: 0; margin: 0; background-color: #efefef; }}\n\
         h1 {{padding: 0.1em; background-color: #777; color: white; border-bottom: thin white dashed;}}\n\n\
         </style>\n</head>\n\n<body>\n<h1>Directory listing for {title}</h1>\n\n\
         <table>\n    <thead>\n        <tr>\n            <th>Filename</th>\n            <th>Size</th>\n\
         \x20           <th>Content type</th>\n            <th>Content encoding</th>\n        </tr>\n    </thead>\n    <tbody>\n"
    );
    for (i, (name, is_dir, size)) in entries.iter().enumerate() {
        let shown = name.to_string_lossy();
        // The name's own bytes, so a name that is not UTF-8 links to itself.
        let link: String = percent_encode(name.as_bytes(), LINK).collect();
        let class = if i % 2 == 0 { "odd" } else { "even" };
        let (text, href, size, kind, enc) = if *is_dir {
            (
                format!("{}/", html_escape::encode_text(&shown)),
                format!("{link}/"),
                String::new(),
                "[Directory]".to_string(),
                String::new(),
            )
        } else {
            let (t, e) = typer(name);
            (
                html_escape::encode_text(&shown).into_owned(),
                link,
                format_size(*size),
                format!("[{}]", html_escape::encode_text(&t)),
                e.map_or(String::new(), |e| format!("[{e}]")),
            )
        };
        let _ = std::fmt::Write::write_fmt(
            &mut out,
            format_args!(
                "<tr class=\"{class}\">\n    <td><a href=\"{href}\">{text}</a></td>\n    <td>{size}</td>\n    <td>{kind}</td>\n    <td>{enc}</td>\n</tr>\n"
            ),
        );
    }
    out.push_str("    </tbody>\n</table>\n\n</body>\n</html>\n");
    out
}

/// What a Range header asks of a body of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    /// No usable Range header: send everything (malformed ones are ignored, as twistd does).
    Whole,
    /// Nothing requested lies inside the body: 416.
    Unsatisfiable,
    /// Inclusive (first, last) byte positions, in the order asked.
    Parts(Vec<(u64, u64)>),
}

/// Most ranges one request may ask for; more is treated as no Range at all.
const MAX_RANGES: usize = 16;

pub fn parse_ranges(header: Option<&str>, len: u64) -> Ranges {
    // The unit is compared case-insensitively (RFC 9110 14.1), as nginx does.
    let spec = header.map(str::trim).and_then(|h| {
        let (unit, set) = h.split_once('=')?;
        unit.eq_ignore_ascii_case("bytes").then_some(set)
    });
    let Some(spec) = spec else {
        return Ranges::Whole;
    };
    let mut parts = Vec::new();
    let mut asked = 0;
    // Empty list elements (`bytes=0-1,`) are allowed and skipped (RFC 9110 5.6.1), as twistd
    // does.
    for item in spec.split(',').filter(|i| !i.trim().is_empty()) {
        asked += 1;
        if asked > MAX_RANGES {
            return Ranges::Whole;
        }
        let Some((a, b)) = item.trim().split_once('-') else {
            return Ranges::Whole;
        };
        let (a, b) = (a.trim(), b.trim());
        let range = match (a.is_empty(), b.is_empty()) {
            (true, true) => return Ranges::Whole,
            (true, false) => {
                let Ok(n) = b.parse::<u64>() else {
                    return Ranges::Whole;
                };
                if n == 0 || len == 0 {
                    None
                } else {
                    Some((len.saturating_sub(n), len - 1))
                }
            }
            (false, _) => {
                let Ok(first) = a.parse::<u64>() else {
                    return Ranges::Whole;
                };
                let last = if b.is_empty() {
                    u64::MAX
                } else {
                    match b.parse::<u64>() {
                        Ok(l) if l >= first => l,
                        _ => return Ranges::Whole,
                    }
                };
                (first < len).then(|| (first, last.min(len - 1)))
            }
        };
        parts.extend(range);
    }
    // Ranges that add up to more than the body (overlapping ones: `0-,0-,0-`) are served as
    // the whole body, as nginx does (RFC 9110 14.2 lets a server ignore them): a multipart
    // body is then never larger than the file, where sixteen copies of a cached 256 KiB file
    // were 4 MiB of output for one request of a hundred bytes.
    let total = parts
        .iter()
        .map(|(a, b)| b - a + 1)
        .fold(0u64, u64::saturating_add);
    if asked == 0 || total > len {
        Ranges::Whole
    } else if parts.is_empty() {
        Ranges::Unsatisfiable
    } else {
        Ranges::Parts(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let p = |h: &str, len| parse_ranges(Some(h), len);
        assert_eq!(p("bytes=2-4", 10), Ranges::Parts(vec![(2, 4)]));
        assert_eq!(p("bytes=5-", 10), Ranges::Parts(vec![(5, 9)]));
        assert_eq!(p("bytes=-3", 10), Ranges::Parts(vec![(7, 9)]));
        assert_eq!(p("bytes=-30", 10), Ranges::Parts(vec![(0, 9)]));
        assert_eq!(p("bytes=8-100", 10), Ranges::Parts(vec![(8, 9)]));
        assert_eq!(p("bytes=0-0, 4-5", 10), Ranges::Parts(vec![(0, 0), (4, 5)]));
        assert_eq!(p("bytes=10-", 10), Ranges::Unsatisfiable);
        assert_eq!(p("bytes=20-30", 10), Ranges::Unsatisfiable);
        assert_eq!(p("bytes=5-2", 10), Ranges::Whole, "malformed: ignored");
        assert_eq!(p("items=1-2", 10), Ranges::Whole);
        assert_eq!(
            p("Bytes=2-4", 10),
            Ranges::Parts(vec![(2, 4)]),
            "the unit's case"
        );
        assert_eq!(
            p("bytes=2-4,", 10),
            Ranges::Parts(vec![(2, 4)]),
            "empty elements"
        );
        assert_eq!(
            p("bytes=, 2-4 ,,6-", 10),
            Ranges::Parts(vec![(2, 4), (6, 9)])
        );
        assert_eq!(p("bytes=,", 10), Ranges::Whole, "no range at all");
        assert_eq!(p("bytes = 2-4", 10), Ranges::Whole, "no spaces around '='");
        assert_eq!(p("bytes=x-2", 10), Ranges::Whole);
        let many = format!("bytes={}", vec!["0-0"; 17].join(","));
        assert_eq!(p(&many, 10), Ranges::Whole, "too many ranges");
        // Ranges that add up to more than the body: the whole body (nginx's rule).
        assert_eq!(p("bytes=0-,0-", 10), Ranges::Whole, "overlapping copies");
        assert_eq!(p("bytes=0-5,4-9", 10), Ranges::Whole, "11 bytes of 10");
        assert_eq!(
            p("bytes=0-4,5-9", 10),
            Ranges::Parts(vec![(0, 4), (5, 9)]),
            "all of it, in parts"
        );
        assert_eq!(
            p("bytes=0-0,0-0", 10),
            Ranges::Parts(vec![(0, 0), (0, 0)]),
            "overlapping, but no more than the body"
        );
        assert_eq!(parse_ranges(None, 10), Ranges::Whole);
    }

    #[test]
    fn error_pages_are_twistds_byte_for_byte() {
        // As twistd 26.10's web answers a missing path (curl | od -c), newlines included.
        assert_eq!(
            error_page(404),
            "\n<html>\n  <head><title>404 - No Such Resource</title></head>\n  <body>\n    \
             <h1>No Such Resource</h1>\n    <p>File not found.</p>\n  </body>\n</html>\n"
        );
        // And an unreadable file (twistd's `ForbiddenResource`), 163 bytes.
        assert_eq!(
            error_page(403),
            "\n<html>\n  <head><title>403 - Forbidden Resource</title></head>\n  <body>\n    \
             <h1>Forbidden Resource</h1>\n    <p>Sorry, resource is forbidden.</p>\n  </body>\n</html>\n"
        );
    }

    #[test]
    fn sizes_and_listing() {
        assert_eq!(format_size(1023), "1023B");
        assert_eq!(format_size(1024 * 5 + 7), "5K");
        assert_eq!(format_size(3 << 20), "3M");
        assert_eq!(format_size(2 << 30), "2G");
        let entries = vec![
            (OsString::from("sub <dir>"), true, 0),
            (OsString::from("a&b \"q\".txt"), false, 2048),
        ];
        let html = listing("/x/", &entries, |_| ("text/plain".into(), None));
        assert!(html.contains("Directory listing for /x/"));
        assert!(
            html.contains("<a href=\"sub%20%3Cdir%3E/\">sub &lt;dir&gt;/</a>"),
            "{html}"
        );
        assert!(html.contains("a&amp;b \"q\".txt"));
        assert!(html.contains("href=\"a%26b%20%22q%22.txt\""));
        assert!(html.contains("<td>2K</td>") && html.contains("[Directory]"));
        let dir_at = html.find("sub &lt;dir&gt;").unwrap();
        assert!(dir_at < html.find("a&amp;b").unwrap(), "directories first");
    }
}
