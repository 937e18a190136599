//! The sans-IO HTTP/1.x request parser: bytes in, a request head or an error status out.
//!
//! httparse does the grammar; this module adds what a server needs around it: limits (request
//! line 414, header bytes and count 431, body 413), the framing of the body that follows
//! (Content-Length or chunked, read and thrown away), keep-alive and `Expect: 100-continue`.

/// The most header fields any request may carry (the default limit).
pub const MAX_HEADERS: usize = 100;

/// Limits on what a client may send.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_request_line: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body: u64,
}

/// The bytes a request head may take, and the chunk extensions and trailer fields of one
/// body ([`ChunkedDiscard`]).
const HEAD_BYTES_MAX: usize = 16 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: 8 * 1024,
            max_header_bytes: HEAD_BYTES_MAX,
            max_headers: MAX_HEADERS,
            max_body: 1024 * 1024,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Other,
}

/// How the request's body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug, Default, Clone)]
pub struct Request {
    pub method_name: String,
    pub target: String,
    /// The minor version: 0 or 1.
    pub minor: u8,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub host: Option<String>,
    /// User-Agent and Referer as they came, bytes that are not UTF-8 included: the access log
    /// escapes each byte, as twistd does.
    pub user_agent: Option<Vec<u8>>,
    pub referer: Option<Vec<u8>>,
    /// The precondition fields, as they came (`cond.rs` reads them). A field sent on several
    /// lines is one list joined with `, ` (RFC 9110 5.3): two `If-Match` lines are one list
    /// of tags, and two dates are no valid date, which RFC 9110 13.1.3 and 13.1.4 say to
    /// ignore.
    pub if_match: Option<Vec<u8>>,
    pub if_unmodified_since: Option<Vec<u8>>,
    pub if_none_match: Option<Vec<u8>>,
    pub if_modified_since: Option<Vec<u8>>,
    pub if_range: Option<Vec<u8>>,
    pub range: Option<String>,
    pub body: Option<Body>,
}

impl Request {
    pub fn method(&self) -> Method {
        match self.method_name.as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            _ => Method::Other,
        }
    }

    /// The request line as the access log shows it.
    pub fn line(&self) -> String {
        format!("{} {} HTTP/1.{}", self.method_name, self.target, self.minor)
    }

    /// The precondition fields, for `cond::evaluate`.
    pub fn preconditions(&self) -> crate::cond::Preconditions<'_> {
        crate::cond::Preconditions {
            if_match: self.if_match.as_deref(),
            if_unmodified_since: self.if_unmodified_since.as_deref(),
            if_none_match: self.if_none_match.as_deref(),
            if_modified_since: self.if_modified_since.as_deref(),
        }
    }
}

/// An error status and a reason for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub why: &'static str,
}

fn reject(status: u16, why: &'static str) -> Reject {
    Reject { status, why }
}

/// What `parse_head` found.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // returned by value once per request; boxing would allocate
pub enum Head {
    /// A whole head, and how many bytes it took.
    Complete(Request, usize),
    /// More bytes are needed.
    Partial,
    Error(Reject),
}

fn header_str(v: &[u8]) -> Option<String> {
    std::str::from_utf8(v).ok().map(|s| s.trim().to_string())
}

/// A value kept as its bytes: for the access log, which escapes each byte as twistd does (a
/// User-Agent that is not UTF-8 is logged, not dropped for a `-`), and for the precondition
/// fields, whose entity tags may hold any byte above 0x7f (RFC 9110 8.8.3).
fn header_bytes(v: &[u8]) -> Vec<u8> {
    v.trim_ascii().to_vec()
}

/// Adds one line of a field to what came before of it: one list, joined with `, `.
fn append_field(slot: &mut Option<Vec<u8>>, v: &[u8]) {
    match slot {
        Some(list) => {
            list.extend_from_slice(b", ");
            list.extend_from_slice(v.trim_ascii());
        }
        None => *slot = Some(header_bytes(v)),
    }
}

/// The first line of `buf` after the empty lines a client may send before a request (RFC
/// 9112 2.2, which httparse skips too), without its LF (its CR, if any, is the caller's to
/// strip: the length limit counts it), and whether its end has come.
fn first_line(buf: &[u8]) -> (&[u8], bool) {
    let start = buf.iter().position(|b| !matches!(b, b'\r' | b'\n'));
    let buf = &buf[start.unwrap_or(buf.len())..];
    let (line, whole) = match memchr::memchr(b'\n', buf) {
        Some(end) => (&buf[..end], true),
        None => (buf, false),
    };
    (line, whole)
}

/// The request line at the start of `buf`, when it has arrived whole and is well formed (a
/// method, a target, `HTTP/1.x`): what the access log shows for a head refused after its
/// line (a bad field, too many or too large fields, a bad Content-Length, a missing Host, a
/// head that timed out). None for a line cut short, too long (414) or malformed (400, 505):
/// a malformed line can be refused before its end has come, so whether it was whole would
/// depend on how its bytes arrived; a refused line is logged as `-` whatever the chunking.
pub fn request_line(buf: &[u8], limits: &Limits) -> Option<String> {
    let (line, true) = first_line(buf) else {
        return None;
    };
    if line.len() > limits.max_request_line {
        return None;
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // The line alone, as a head without fields: httparse's verdict on it, whatever follows.
    let mut probe = Vec::with_capacity(line.len() + 4);
    probe.extend_from_slice(line);
    probe.extend_from_slice(b"\r\n\r\n");
    let mut no_fields = [];
    let mut req = httparse::Request::new(&mut no_fields);
    match req.parse(&probe) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return None;
    };
    Some(format!("{method} {path} HTTP/1.{minor}"))
}

/// What the access log shows of a head refused after its request line arrived whole and well
/// formed: that line, and the User-Agent and Referer among the fields read before the one
/// that got it refused, as nginx logs them (twistd logs no line at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub line: String,
    pub agent: Option<Vec<u8>>,
    pub referer: Option<Vec<u8>>,
}

/// The request line and the logged fields of a refused head (`buf` as it was when it was
/// refused); None when the line itself was refused or cut short (`request_line`).
///
/// The fields are read from the bytes already buffered, one whole line at a time, in order,
/// and the reading stops where nginx stops: at the end of the head, at a line cut short, at
/// one httparse refuses, at a second or malformed Host (refused at that line; a bad
/// Content-Length or Transfer-Encoding is refused only once the head is read, so the fields
/// after it are logged), after `max_headers` fields, and at `max_header_bytes`. So what is
/// logged does not depend on how the bytes arrived, and it is never more than a head within
/// the limits holds. A field sent twice is logged as its last line, as for a head that is
/// served (twistd's `getHeader`; nginx logs the first).
pub fn refused(buf: &[u8], limits: &Limits) -> Option<Refused> {
    let line = request_line(buf, limits)?;
    let mut r = Refused {
        line,
        agent: None,
        referer: None,
    };
    let window = &buf[..buf.len().min(limits.max_header_bytes)];
    let start = window.iter().position(|b| !matches!(b, b'\r' | b'\n'));
    let mut rest = &window[start.unwrap_or(window.len())..];
    // Past the request line, which came whole (it may end beyond the window).
    rest = match memchr::memchr(b'\n', rest) {
        Some(end) => &rest[end + 1..],
        None => &[],
    };
    let mut probe = Vec::new();
    let mut host = false;
    for _ in 0..limits.max_headers.min(MAX_HEADERS) {
        let Some(end) = memchr::memchr(b'\n', rest) else {
            break;
        };
        let field = &rest[..end];
        rest = &rest[end + 1..];
        let field = field.strip_suffix(b"\r").unwrap_or(field);
        if field.is_empty() {
            break;
        }
        // httparse's verdict on this line alone, as it judged it in the head.
        probe.clear();
        probe.extend_from_slice(field);
        probe.extend_from_slice(b"\r\n\r\n");
        let mut one = [httparse::EMPTY_HEADER; 1];
        let Ok(httparse::Status::Complete((_, [h]))) = httparse::parse_headers(&probe, &mut one)
        else {
            break;
        };
        if h.name.eq_ignore_ascii_case("host") {
            if host || host_value(h.value).is_none() {
                break;
            }
            host = true;
        } else if h.name.eq_ignore_ascii_case("user-agent") {
            r.agent = Some(header_bytes(h.value));
        } else if h.name.eq_ignore_ascii_case("referer") {
            r.referer = Some(header_bytes(h.value));
        }
    }
    Some(r)
}

/// A Host value as RFC 9112 3.2 allows it (`uri-host [":" port]`), or None for a 400: bytes
/// that are not UTF-8 too, as any other byte outside a host (`café` in UTF-8 is a 400; `\xff`
/// was taken for an empty Host).
fn host_value(v: &[u8]) -> Option<String> {
    let v = header_str(v)?;
    v.bytes().all(host_byte).then_some(v)
}

/// A byte a Host value may hold: RFC 3986's unreserved, sub-delims, `%`, and `:[]` for the
/// port and IPv6 literals.
fn host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&b)
}

/// Whether a request line httparse found no HTTP/1.x in is a well-formed one naming another
/// version (`GET / HTTP/2.0`: 505, `Some(true)`) rather than a malformed one (`GET /a b.txt
/// HTTP/1.1`, a lowercase `http/1.1`, `HTTP/0.9`: 400, as nginx and twistd answer). None while
/// the line has not ended and its version so far may still become another one (`HTTP/2`,
/// `HTTP/2.`): the line's end decides, so the answer does not depend on where its bytes were
/// cut (cut after `HTTP/2` it was 505 even for `HTTP/2x`, after `HTTP/2.` 400 for `HTTP/2.0`).
fn names_other_version(buf: &[u8]) -> Option<bool> {
    let (line, whole) = first_line(buf);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|b| *b == b' ');
    let (Some(_), Some(_), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Some(false);
    };
    let major = |m: &u8| m.is_ascii_digit() && *m >= b'2';
    match version.strip_prefix(b"HTTP/") {
        Some([m, b'.', minor]) if major(m) && minor.is_ascii_digit() => whole.then_some(true),
        Some([m]) if major(m) => whole.then_some(true),
        Some([m, b'.']) if major(m) && !whole => None,
        _ => Some(false),
    }
}

/// Parses one request head from the start of `buf`.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Head {
    // Tolerate the empty lines some clients send between requests (RFC 9112 2.2).
    let line_end = buf.iter().position(|b| *b == b'\n');
    match line_end {
        None if buf.len() > limits.max_request_line => {
            return Head::Error(reject(414, "request line too long"));
        }
        Some(n) if n > limits.max_request_line => {
            return Head::Error(reject(414, "request line too long"));
        }
        _ => {}
    }
    // On the stack: no allocation per request. `max_headers` can only lower the limit.
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage[..limits.max_headers.min(MAX_HEADERS)]);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_header_bytes {
                return Head::Error(reject(431, "request header fields too large"));
            }
            return Head::Partial;
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Head::Error(reject(431, "too many header fields"));
        }
        Err(httparse::Error::Version) => match names_other_version(buf) {
            Some(true) => return Head::Error(reject(505, "HTTP version not supported")),
            Some(false) => return Head::Error(reject(400, "malformed request")),
            // The line's end decides; it is bounded by the request line's limit, above.
            None if buf.len() > limits.max_header_bytes => {
                return Head::Error(reject(431, "request header fields too large"));
            }
            None => return Head::Partial,
        },
        Err(_) => return Head::Error(reject(400, "malformed request")),
    };
    if used > limits.max_header_bytes {
        return Head::Error(reject(431, "request header fields too large"));
    }
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Head::Error(reject(400, "malformed request"));
    };
    let mut r = Request {
        method_name: method.to_string(),
        target: path.to_string(),
        minor,
        keep_alive: minor == 1,
        ..Request::default()
    };
    let mut length: Option<u64> = None;
    let mut chunked = false;
    // A `close` anywhere wins over any `keep-alive` (RFC 9112 9.6), in whatever order.
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            // RFC 9110 8.6: `1*DIGIT`, nothing else; Rust's parse would take `+5`, which
            // twistd, nginx and any proxy in front refuse or read otherwise.
            let digits = |v: &String| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
            let Some(n) = header_str(h.value)
                .filter(digits)
                .and_then(|v| v.parse::<u64>().ok())
            else {
                return Head::Error(reject(400, "invalid Content-Length"));
            };
            if length.is_some_and(|l| l != n) {
                return Head::Error(reject(400, "conflicting Content-Length"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let v = header_str(h.value).unwrap_or_default().to_ascii_lowercase();
            if v.rsplit(',').next().map(str::trim) != Some("chunked") {
                return Head::Error(reject(501, "unsupported Transfer-Encoding"));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            let v = header_str(h.value).unwrap_or_default().to_ascii_lowercase();
            for token in v.split(',').map(str::trim) {
                match token {
                    "close" => close = true,
                    "keep-alive" => r.keep_alive = true,
                    _ => {}
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            let v = header_str(h.value).unwrap_or_default();
            if v.eq_ignore_ascii_case("100-continue") {
                // RFC 9110 10.1.1: ignored in an HTTP/1.0 request (no 1xx for such a client).
                r.expect_continue = minor == 1;
            } else {
                return Head::Error(reject(417, "unsupported expectation"));
            }
        } else if name.eq_ignore_ascii_case("host") {
            // RFC 9112 3.2: two Host fields, or one that is no `uri-host [":" port]`, is a 400.
            if r.host.is_some() {
                return Head::Error(reject(400, "more than one Host"));
            }
            let Some(v) = host_value(h.value) else {
                return Head::Error(reject(400, "invalid Host"));
            };
            r.host = Some(v);
        } else if name.eq_ignore_ascii_case("user-agent") {
            r.user_agent = Some(header_bytes(h.value));
        } else if name.eq_ignore_ascii_case("referer") {
            r.referer = Some(header_bytes(h.value));
        } else if name.eq_ignore_ascii_case("if-match") {
            append_field(&mut r.if_match, h.value);
        } else if name.eq_ignore_ascii_case("if-unmodified-since") {
            append_field(&mut r.if_unmodified_since, h.value);
        } else if name.eq_ignore_ascii_case("if-none-match") {
            append_field(&mut r.if_none_match, h.value);
        } else if name.eq_ignore_ascii_case("if-modified-since") {
            append_field(&mut r.if_modified_since, h.value);
        } else if name.eq_ignore_ascii_case("range") {
            r.range = header_str(h.value);
        } else if name.eq_ignore_ascii_case("if-range") {
            append_field(&mut r.if_range, h.value);
        }
    }
    // RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing (a proxy
    // on the way may not have read it as chunked): answered, then the connection closes, as
    // twistd does, so nothing after it is taken as the next request.
    if close || (chunked && minor == 0) {
        r.keep_alive = false;
    }
    if chunked && length.is_some() {
        // Both framings at once is the request-smuggling pattern (RFC 9112 6.1).
        return Head::Error(reject(400, "both Content-Length and Transfer-Encoding"));
    }
    r.body = Some(if chunked {
        Body::Chunked
    } else {
        match length {
            Some(n) if n > limits.max_body => {
                return Head::Error(reject(413, "request body too large"));
            }
            Some(0) | None => Body::None,
            Some(n) => Body::Length(n),
        }
    });
    if minor == 1 && r.host.is_none() {
        // RFC 9112 3.2: every HTTP/1.1 request names its host (HTTP/1.0 need not).
        return Head::Error(reject(400, "missing Host"));
    }
    Head::Complete(r, used)
}

/// Reads and drops a chunked body, byte by byte as it arrives, within a size limit.
#[derive(Debug, Clone)]
pub struct ChunkedDiscard {
    state: ChunkState,
    size: u64,
    digits: u8,
    total: u64,
    max: u64,
    /// Bytes of chunk extensions and trailer fields so far: bounded apart from the data,
    /// which they do not count in, or a client could send them for ever.
    meta: usize,
}

/// The most bytes of chunk extensions and trailer fields one body may carry, as for a head.
const CHUNK_META_MAX: usize = HEAD_BYTES_MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    FinalLf,
    Done,
}

/// What feeding a chunked body gave.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkProgress {
    /// Consumed everything given; more body to come.
    NeedMore,
    /// The body ended after this many bytes of the input.
    Done(usize),
    Error(Reject),
}

impl ChunkedDiscard {
    pub fn new(max: u64) -> Self {
        ChunkedDiscard {
            state: ChunkState::Size,
            size: 0,
            digits: 0,
            total: 0,
            max,
            meta: 0,
        }
    }

    /// Consumes body bytes from `input`.
    pub fn feed(&mut self, input: &[u8]) -> ChunkProgress {
        let bad = ChunkProgress::Error(reject(400, "malformed chunked body"));
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            if matches!(
                self.state,
                ChunkState::Extension | ChunkState::TrailerStart | ChunkState::TrailerLine
            ) {
                self.meta += 1;
                if self.meta > CHUNK_META_MAX {
                    return ChunkProgress::Error(reject(
                        400,
                        "chunk extensions or trailer fields too large",
                    ));
                }
            }
            match self.state {
                ChunkState::Size => match (b as char).to_digit(16) {
                    Some(d) => {
                        self.digits += 1;
                        if self.digits > 15 {
                            return ChunkProgress::Error(reject(413, "chunk too large"));
                        }
                        self.size = self.size * 16 + u64::from(d);
                    }
                    None if self.digits == 0 => return bad,
                    None if b == b';' || b == b' ' || b == b'\t' => {
                        self.state = ChunkState::Extension
                    }
                    None if b == b'\r' => self.state = ChunkState::SizeLf,
                    None if b == b'\n' => self.size_done(),
                    None => return bad,
                },
                ChunkState::Extension => {
                    if b == b'\n' {
                        self.size_done();
                    } else if b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    }
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return bad;
                    }
                    self.size_done();
                }
                ChunkState::Data => {
                    let take = (self.size as usize).min(input.len() - i);
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => match b {
                    b'\r' => self.state = ChunkState::DataLf,
                    b'\n' => self.restart(),
                    _ => return bad,
                },
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return bad;
                    }
                    self.restart();
                }
                ChunkState::TrailerStart => match b {
                    b'\r' => self.state = ChunkState::FinalLf,
                    b'\n' => {
                        self.state = ChunkState::Done;
                        return ChunkProgress::Done(i + 1);
                    }
                    _ => self.state = ChunkState::TrailerLine,
                },
                ChunkState::TrailerLine => {
                    if b == b'\n' {
                        self.state = ChunkState::TrailerStart;
                    }
                }
                ChunkState::FinalLf => {
                    if b != b'\n' {
                        return bad;
                    }
                    self.state = ChunkState::Done;
                    return ChunkProgress::Done(i + 1);
                }
                ChunkState::Done => return ChunkProgress::Done(i),
            }
            if self.total > self.max {
                return ChunkProgress::Error(reject(413, "request body too large"));
            }
            i += 1;
        }
        if self.total > self.max {
            return ChunkProgress::Error(reject(413, "request body too large"));
        }
        ChunkProgress::NeedMore
    }

    fn size_done(&mut self) {
        self.total += self.size;
        self.state = if self.size == 0 {
            ChunkState::TrailerStart
        } else {
            ChunkState::Data
        };
    }

    fn restart(&mut self) {
        self.state = ChunkState::Size;
        self.size = 0;
        self.digits = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in `chunk`-byte pieces into a growing buffer, as a connection would.
    fn head_in_pieces(input: &[u8], chunk: usize, limits: &Limits) -> Head {
        let mut buf = Vec::new();
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            match parse_head(&buf, limits) {
                Head::Partial => continue,
                other => return other,
            }
        }
        Head::Partial
    }

    #[test]
    fn a_request_parses_the_same_in_every_chunking() {
        let raw = b"GET /a%20b/?q=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8.0\r\nRange: bytes=0-1\r\nIf-None-Match: \"e\"\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let first_len = raw.len() - b"GET / HTTP/1.1\r\n\r\n".len();
        for chunk in 1..=raw.len() {
            match head_in_pieces(raw, chunk, &Limits::default()) {
                Head::Complete(r, used) => {
                    assert_eq!(used, first_len, "chunk {chunk}");
                    assert_eq!(r.method(), Method::Get);
                    assert_eq!(r.target, "/a%20b/?q=1");
                    assert_eq!(r.minor, 1);
                    assert!(!r.keep_alive, "Connection: close");
                    assert_eq!(r.user_agent.as_deref(), Some(&b"curl/8.0"[..]));
                    assert_eq!(r.range.as_deref(), Some("bytes=0-1"));
                    assert_eq!(r.if_none_match.as_deref(), Some(&b"\"e\""[..]));
                    assert_eq!(r.body, Some(Body::None));
                }
                other => panic!("chunk {chunk}: {other:?}"),
            }
        }
    }

    #[test]
    fn keep_alive_defaults_by_version() {
        let h = |raw: &[u8]| match parse_head(raw, &Limits::default()) {
            Head::Complete(r, _) => r,
            other => panic!("{other:?}"),
        };
        assert!(!h(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(h(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(h(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").keep_alive);
        assert!(
            !h(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
                .expect_continue,
            "an HTTP/1.0 client gets no 100 Continue"
        );
        let chunked10 =
            h(b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(
            !chunked10.keep_alive,
            "an HTTP/1.0 chunked body: faulty framing, closed after"
        );
        // `close` wins, in one field or two, before or after a `keep-alive`.
        for closing in [
            "Connection: close, keep-alive\r\n",
            "Connection: keep-alive, close\r\n",
            "Connection: close\r\nConnection: keep-alive\r\n",
            "Connection: Keep-Alive\r\nConnection: Close\r\n",
        ] {
            for v in ["1.0", "1.1"] {
                let raw = format!("GET / HTTP/{v}\r\nHost: x\r\n{closing}\r\n");
                assert!(!h(raw.as_bytes()).keep_alive, "{raw:?}");
            }
        }
        assert!(
            h(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
                .expect_continue
        );
    }

    #[test]
    fn host_is_required_in_http11_once_and_well_formed() {
        let status = |raw: &[u8]| match parse_head(raw, &Limits::default()) {
            Head::Complete(..) => 200,
            Head::Error(r) => r.status,
            Head::Partial => 0,
        };
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400, "missing");
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: u@h\r\n\r\n"), 400);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: \xff\r\n\r\n"),
            400,
            "not UTF-8"
        );
        assert_eq!(status(b"GET / HTTP/1.0\r\nHost: a\xffb\r\n\r\n"), 400);
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: café\r\n\r\n".as_bytes()),
            400
        );
        assert_eq!(status(b"GET / HTTP/1.0\r\n\r\n"), 200);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"), 200, "empty");
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"), 200);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: xn--b-5ga.example:8080\r\n\r\n"),
            200
        );
    }

    #[test]
    fn limits_and_malformed_heads_get_their_status() {
        let small = Limits {
            max_request_line: 64,
            max_header_bytes: 256,
            max_headers: 4,
            max_body: 100,
        };
        let status = |raw: Vec<u8>| match head_in_pieces(&raw, 1, &small) {
            Head::Error(r) => r.status,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            status(format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100)).into_bytes()),
            414
        );
        assert_eq!(
            status(format!("GET /{}", "a".repeat(100)).into_bytes()),
            414,
            "no line end yet"
        );
        let many: String = (0..5).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            status(format!("GET / HTTP/1.1\r\n{many}\r\n").into_bytes()),
            431
        );
        assert_eq!(
            status(format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(300)).into_bytes()),
            431
        );
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n".to_vec()), 505);
        assert_eq!(status(b"GET / HTTP/3\r\n\r\n".to_vec()), 505);
        // Not another version: a malformed line (a space in the path, a lowercase or
        // missing version, HTTP/0.9), 400 as nginx and twistd answer.
        for bad in [
            "GET /a b.txt HTTP/1.1",
            "GET / http/1.1",
            "GET / HTTP/0.9",
            "GET / HTTP/1",
            "GET / FTP/2.0",
            // Another version's start, then not one: 400 byte by byte too.
            "GET / HTTP/2x",
            "GET / HTTP/2.x",
            "GET / HTTP/2.0x",
        ] {
            assert_eq!(status(format!("{bad}\r\n\r\n").into_bytes()), 400, "{bad}");
        }
        assert_eq!(status(b"GET\x01 / HTTP/1.1\r\n\r\n".to_vec()), 400);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n".to_vec()),
            413
        );
        for bad in ["x", "+5", "-1", "5 5", "0x5", "", "5,5"] {
            assert_eq!(
                status(
                    format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {bad}\r\n\r\n")
                        .into_bytes()
                ),
                400,
                "Content-Length: {bad}"
            );
        }
        assert_eq!(
            status(
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
                    .to_vec()
            ),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec()),
            501
        );
    }

    /// The User-Agent and Referer of a refused head: those read before the field that got
    /// it refused, as nginx 1.22 logs them, the same however the bytes arrived.
    #[test]
    fn a_refused_head_keeps_the_fields_read_before_it_in_every_chunking() {
        let small = Limits {
            max_request_line: 64,
            max_header_bytes: 256,
            max_headers: 4,
            max_body: 100,
        };
        let ur = "User-Agent: ua\r\nReferer: ref\r\n";
        let long = "a".repeat(300);
        type Want = (u16, Option<&'static [u8]>, Option<&'static [u8]>);
        let cases: Vec<(Vec<u8>, Want)> = vec![
            // Refused at a line: the fields before it, none after it.
            (
                format!("GET / HTTP/1.1\r\nHost: x\r\n{ur}Bad Header: y\r\n\r\n").into(),
                (400, Some(b"ua"), Some(b"ref")),
            ),
            (
                format!("GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n{ur}\r\n").into(),
                (400, None, None),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: ua\r\nHost: y\r\nReferer: r\r\n\r\n"
                    .to_vec(),
                (400, Some(b"ua"), None),
            ),
            (
                b"GET / HTTP/1.1\r\nReferer: r\r\nHost: a b\r\nUser-Agent: ua\r\n\r\n".to_vec(),
                (400, None, Some(b"r")),
            ),
            // Refused once the head is read: all its fields, those after the bad one too.
            (
                format!("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n{ur}\r\n").into(),
                (400, Some(b"ua"), Some(b"ref")),
            ),
            (
                format!("POST / HTTP/1.1\r\nHost: x\r\n{ur}Transfer-Encoding: gzip\r\n\r\n").into(),
                (501, Some(b"ua"), Some(b"ref")),
            ),
            (
                format!("GET / HTTP/1.1\r\n{ur}\r\n").into(),
                (400, Some(b"ua"), Some(b"ref")),
            ),
            (
                format!("PUT / HTTP/1.1\r\nHost: x\r\n{ur}Content-Length: 101\r\n\r\n").into(),
                (413, Some(b"ua"), Some(b"ref")),
            ),
            // Too many fields: those before the one past the limit.
            (
                format!("GET / HTTP/1.1\r\n{ur}X: 1\r\nX: 2\r\nX: 3\r\n\r\n").into(),
                (431, Some(b"ua"), Some(b"ref")),
            ),
            (
                b"GET / HTTP/1.1\r\nReferer: r\r\nX: 1\r\nX: 2\r\nX: 3\r\nUser-Agent: ua\r\n\r\n"
                    .to_vec(),
                (431, None, Some(b"r")),
            ),
            // Too large: the whole lines within the limit.
            (
                format!("GET / HTTP/1.1\r\nReferer: r\r\nUser-Agent: {long}\r\n\r\n").into(),
                (431, None, Some(b"r")),
            ),
            // The last of two, and bytes that are no UTF-8, as for a head that is served.
            (
                b"GET / HTTP/1.1\r\nUser-Agent: one\r\nUser-Agent: a\xffb\r\nExpect: x\r\n\r\n"
                    .to_vec(),
                (417, Some(b"a\xffb"), None),
            ),
        ];
        for (input, want) in cases {
            let shown = String::from_utf8_lossy(&input).into_owned();
            for chunk in 1..=input.len() {
                let mut buf = Vec::new();
                let mut got = None;
                for piece in input.chunks(chunk) {
                    buf.extend_from_slice(piece);
                    match parse_head(&buf, &small) {
                        Head::Partial => continue,
                        Head::Error(r) => {
                            let f = refused(&buf, &small).expect("a whole request line");
                            got = Some((r.status, f.agent, f.referer));
                            break;
                        }
                        Head::Complete(..) => panic!("{shown:?} accepted"),
                    }
                }
                let want = (
                    want.0,
                    want.1.map(<[u8]>::to_vec),
                    want.2.map(<[u8]>::to_vec),
                );
                assert_eq!(got, Some(want), "{shown:?} in pieces of {chunk}");
            }
        }
        // A head that timed out: the whole lines that came.
        let f = refused(b"GET / HTTP/1.1\r\nUser-Agent: ua\r\nReferer: r", &small).unwrap();
        assert_eq!((f.agent.as_deref(), f.referer), (Some(&b"ua"[..]), None));
        // A line refused: nothing.
        assert_eq!(
            refused(b"GET /a b HTTP/1.1\r\nUser-Agent: ua\r\n\r\n", &small),
            None
        );
    }

    /// What the access log shows for a refused head: its request line when that came whole
    /// and well formed, `-` (None) otherwise, the same however the bytes arrived.
    #[test]
    fn a_refused_head_keeps_its_request_line_in_every_chunking() {
        let small = Limits {
            max_request_line: 64,
            max_header_bytes: 256,
            max_headers: 4,
            max_body: 100,
        };
        let many: String = (0..5).map(|i| format!("X-{i}: y\r\n")).collect();
        let big = format!("X: {}\r\n", "b".repeat(300));
        let cases: Vec<(Vec<u8>, u16, Option<&str>)> = vec![
            (
                b"GET /a.txt?q HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n".to_vec(),
                400,
                Some("GET /a.txt?q HTTP/1.1"),
            ),
            (
                b"\r\nHEAD / HTTP/1.0\r\nContent-Length: +5\r\n\r\n".to_vec(),
                400,
                Some("HEAD / HTTP/1.0"),
            ),
            (
                b"GET / HTTP/1.1\nUser-Agent: a\n\n".to_vec(),
                400,
                Some("GET / HTTP/1.1"),
            ),
            (
                b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n".to_vec(),
                413,
                Some("POST /up HTTP/1.1"),
            ),
            (
                format!("GET /m HTTP/1.1\r\n{many}\r\n").into_bytes(),
                431,
                Some("GET /m HTTP/1.1"),
            ),
            (
                format!("GET /b HTTP/1.1\r\n{big}\r\n").into_bytes(),
                431,
                Some("GET /b HTTP/1.1"),
            ),
            // The line itself refused: `-`, whether or not its end had come.
            (
                format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100)).into_bytes(),
                414,
                None,
            ),
            (b"GET /a b.txt HTTP/1.1\r\n\r\n".to_vec(), 400, None),
            (b"GET /a\xff.txt HTTP/1.1\r\n\r\n".to_vec(), 400, None),
            (b"GET / HTTP/2.0\r\n\r\n".to_vec(), 505, None),
            (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
                400,
                None,
            ),
        ];
        for (input, status, want) in cases {
            let shown = String::from_utf8_lossy(&input).into_owned();
            for chunk in 1..=input.len() {
                let mut buf = Vec::new();
                let mut got = None;
                for piece in input.chunks(chunk) {
                    buf.extend_from_slice(piece);
                    match parse_head(&buf, &small) {
                        Head::Partial => continue,
                        Head::Error(r) => {
                            got = Some((r.status, request_line(&buf, &small)));
                            break;
                        }
                        Head::Complete(..) => panic!("{shown:?} accepted"),
                    }
                }
                assert_eq!(
                    got,
                    Some((status, want.map(String::from))),
                    "{shown:?} in pieces of {chunk}"
                );
            }
        }
        // A line cut short (a head that timed out before its line ended) is `-` too.
        assert_eq!(request_line(b"GET /a.txt HT", &small), None);
        assert_eq!(
            request_line(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n", &small).as_deref(),
            Some("GET /a.txt HTTP/1.1")
        );
        assert_eq!(request_line(b"\r\n\r\n", &small), None);
    }

    #[test]
    fn precondition_fields_on_several_lines_are_one_list() {
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\nIf-Match: \"a\"\r\nif-match:  \"b\" \r\n\
            If-None-Match: \"\xe9\"\r\nIf-Modified-Since: Mon, 01 Jan 2024 00:00:00 GMT\r\n\
            If-Modified-Since: Tue, 02 Jan 2024 00:00:00 GMT\r\nIf-Unmodified-Since: x\r\n\
            If-Range: \"r\"\r\n\r\n";
        let Head::Complete(r, _) = parse_head(raw, &Limits::default()) else {
            panic!("not parsed");
        };
        assert_eq!(r.if_match.as_deref(), Some(&b"\"a\", \"b\""[..]));
        assert_eq!(r.if_none_match.as_deref(), Some(&b"\"\xe9\""[..]));
        assert_eq!(
            r.if_modified_since.as_deref(),
            Some(&b"Mon, 01 Jan 2024 00:00:00 GMT, Tue, 02 Jan 2024 00:00:00 GMT"[..])
        );
        assert_eq!(r.if_unmodified_since.as_deref(), Some(&b"x"[..]));
        assert_eq!(r.if_range.as_deref(), Some(&b"\"r\""[..]));
    }

    #[test]
    fn user_agent_and_referer_are_kept_as_their_bytes() {
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: a\xffb\r\nReferer: r\xfe\r\n\r\n";
        let Head::Complete(r, _) = parse_head(raw, &Limits::default()) else {
            panic!("not parsed");
        };
        // For the access log, which escapes each as twistd does.
        assert_eq!(r.user_agent.as_deref(), Some(&b"a\xffb"[..]));
        assert_eq!(r.referer.as_deref(), Some(&b"r\xfe"[..]));
    }

    #[test]
    fn chunked_bodies_are_skipped_in_every_chunking() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for chunk in 1..=body.len() {
            let mut d = ChunkedDiscard::new(1000);
            let mut done_at = None;
            let mut offset = 0;
            for piece in body.chunks(chunk) {
                match d.feed(piece) {
                    ChunkProgress::NeedMore => offset += piece.len(),
                    ChunkProgress::Done(n) => {
                        done_at = Some(offset + n);
                        break;
                    }
                    ChunkProgress::Error(e) => panic!("chunk {chunk}: {e:?}"),
                }
            }
            assert_eq!(done_at, Some(body.len() - 4), "chunk {chunk}");
        }
        let mut d = ChunkedDiscard::new(10);
        assert!(matches!(
            d.feed(b"ff\r\n"),
            ChunkProgress::Error(Reject { status: 413, .. })
        ));
        let mut d = ChunkedDiscard::new(10);
        assert!(matches!(
            d.feed(b"zz\r\n"),
            ChunkProgress::Error(Reject { status: 400, .. })
        ));
        // Extensions and trailers, outside the data's limit, have one of their own: else a
        // client keeps the connection reading one endless extension (or trailer) for ever.
        for (head, endless) in [(&b"1;"[..], &b"x"[..]), (b"0\r\n", b"T: v\r\n")] {
            let mut d = ChunkedDiscard::new(1000);
            assert_eq!(d.feed(head), ChunkProgress::NeedMore);
            let mut fed = 0;
            let cut = loop {
                match d.feed(&endless.repeat(1024)) {
                    ChunkProgress::NeedMore => fed += endless.len() * 1024,
                    other => break other,
                }
                assert!(fed < 1 << 20, "still reading after {fed} bytes");
            };
            assert!(
                matches!(cut, ChunkProgress::Error(Reject { status: 400, .. })),
                "{cut:?}"
            );
        }
    }
}
