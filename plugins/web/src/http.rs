//! The HTTP/1.1 protocol: requests in (pipelined), responses out in order.
//!
//! Each connection buffers only an unfinished request head; bodies are counted and dropped as
//! they arrive. Responses are written into the transport as each request completes: headers
//! from one reused buffer, small bodies from the file cache, large ones with sendfile. When the
//! output backs up, the protocol stops taking requests until the reactor says it drained.
//! Each response's access log line is written once its last byte has left (or, with the
//! bytes that did leave, when the connection is lost first).

use std::cell::RefCell;
use std::ffi::OsString;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use twistrs_core::line::InputBuffer;
use twistrs_core::{DelayedCall, Protocol, Reason, Transport};

use crate::access::{AccessLog, Line};
use crate::cond::{self, Outcome, Validators};
use crate::idle::IdleList;
use crate::path::{self, PathError};
use crate::pending::{Outstanding, Pending};
use crate::request::{self, Body, ChunkProgress, ChunkedDiscard, Head, Limits, Method, Request};
use crate::resource::{Entry, Found, Root};
use crate::response::{self, Ranges};

/// Stop taking pipelined requests while this much output waits (files included): the
/// reactor's high-water mark, as mail's sessions stop a step. A client that pipelines GETs of
/// a cached 256 KiB file (or of a large listing) and reads nothing then holds this and one
/// response; with 1 MiB here it held 1.3 MiB per connection.
const PIPELINE_OUTPUT_MAX: usize = 64 * 1024;
/// Stop taking pipelined requests while the access lines of unsent responses hold this much
/// (a fat head can earn a 200-byte answer; its line waits until the answer has left).
const PENDING_LOG_MAX: usize = 64 * 1024;
/// Timer key: the request head did not arrive in time.
const HEAD_TIMER: u64 = 1;
/// Timer key: a request body (read only to be thrown away) is arriving too slowly.
const BODY_TIMER: u64 = 2;
/// After `--timeout`, a body must keep arriving at this many bytes a second on average
/// (Apache's `RequestReadTimeout body=20,MinRate=500`; postfix's `smtpd_min_data_rate`):
/// the idle timeout alone lets a client that sends a byte now and then hold the connection
/// for as long as its 1 MiB body takes.
const BODY_MIN_RATE: u64 = 500;

/// What every connection of one `web` service shares.
pub struct Site {
    /// Set when the service starts (after `--chroot`, see `WebService`); empty without
    /// `--path`: twistd's demo page.
    pub root: std::cell::OnceCell<Root>,
    pub indexes: Vec<OsString>,
    pub ignore_ext: Vec<String>,
    pub allow_ignore_ext: bool,
    pub no_listing: bool,
    pub extra_headers: Vec<String>,
    pub limits: Limits,
    pub timeout: Duration,
    pub access: Rc<RefCell<AccessLog>>,
    pub boundary: String,
    /// What `--metrics` shows of the requests answered.
    pub metrics: crate::metrics::WebMetrics,
    /// With `--max-connections`: the keep-alive connections idle between requests, the ones
    /// given up for a newcomer at the limit. None without a limit: nothing to keep then.
    pub idle: Option<RefCell<IdleList>>,
}

enum State {
    Head,
    Body(u64),
    Chunked(ChunkedDiscard),
}

/// One HTTP connection.
pub struct Http {
    site: Rc<Site>,
    input: InputBuffer,
    /// How much of an unfinished head was there when it was last parsed.
    partial_head: usize,
    state: State,
    /// No further requests: `Connection: close`, an error, EOF.
    done: bool,
    /// Graceful stop: finish the request whose bytes have arrived, then close.
    stopping: bool,
    /// The output is backed up; wait for `resume_producing`.
    waiting: bool,
    head_timer: Option<DelayedCall>,
    /// A body still coming after the bytes at hand: when its wait began, how much of it
    /// has come, and its deadline. None for a body that came whole with its head: most
    /// requests with a body need no timer.
    body: Option<(Instant, u64, DelayedCall)>,
    scratch: Vec<u8>,
    /// The peer's address as the access log shows it.
    client: String,
    /// Responses whose access log line waits for them to leave.
    outstanding: Outstanding,
    /// Where the last response that queued a file ends in the output: no request is taken
    /// while one is still leaving, so a connection holds one open file at a time. Pipelined
    /// `Range: bytes=0-0` requests of a large file (each a few hundred bytes of output, each
    /// an open descriptor until sent) held some 350 descriptors per connection before.
    file_end: u64,
}

/// How a response is framed: whether the connection stays open, a HEAD (headers only),
/// an HTTP/1.0 client (which needs `Connection: keep-alive` said).
#[derive(Clone, Copy)]
struct Framing {
    keep_alive: bool,
    head_only: bool,
    http10: bool,
}

/// What a response was, for the access log.
struct Sent {
    status: u16,
    bytes: u64,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What a file's response carries to compare preconditions with.
fn validators(e: &Entry) -> Validators<'_> {
    Validators {
        etag: Some(e.etag.as_bytes()),
        modified: Some(unix_secs(e.mtime)),
    }
}

impl Http {
    pub fn new(site: Rc<Site>) -> Self {
        Http {
            site,
            input: InputBuffer::new(),
            partial_head: 0,
            state: State::Head,
            done: false,
            stopping: false,
            waiting: false,
            head_timer: None,
            body: None,
            scratch: Vec::with_capacity(512),
            client: String::new(),
            outstanding: Outstanding::default(),
            file_end: 0,
        }
    }

    /// Lists the connection as idle if it is a keep-alive connection between requests: a
    /// response sent and all of it gone from this process, no request begun, nothing more
    /// to answer. Only such a connection may be closed for a newcomer at the limit, so no
    /// request or response is ever cut (a fresh connection that has not asked yet is not
    /// one: under a burst each would be closed before its request was read).
    fn note_idle(&self, t: &Transport<'_>) {
        let Some(idle) = &self.site.idle else {
            return;
        };
        if !self.done
            && !self.waiting
            && !self.stopping
            && matches!(self.state, State::Head)
            && self.input.is_empty()
            && t.bytes_written() > 0
            && t.all_sent()
        {
            idle.borrow_mut().list(t.id());
        }
    }

    /// The connection is busy (bytes came) or gone: not one to give up.
    fn note_busy(&self, t: &Transport<'_>) {
        if let Some(idle) = &self.site.idle {
            idle.borrow_mut().unlist(t.id());
        }
    }

    fn cancel_head_timer(&mut self) {
        if let Some(t) = self.head_timer.take() {
            t.cancel();
        }
    }

    /// The body has all come (or the connection is going).
    fn body_done(&mut self) {
        if let Some((_, _, timer)) = self.body.take() {
            timer.cancel();
        }
    }

    /// The body is not all here after `n` more bytes of it: counts them, and starts its
    /// deadline the first time.
    fn body_incomplete(&mut self, t: &mut Transport<'_>, n: usize) {
        match &mut self.body {
            Some((_, read, _)) => *read += n as u64,
            None => {
                let timer = t.call_later(self.site.timeout, BODY_TIMER);
                self.body = Some((t.handle().now(), n as u64, timer));
            }
        }
    }

    /// Takes requests from the input while the output has room.
    fn process(&mut self, t: &mut Transport<'_>) {
        while !self.done && !self.waiting {
            match &mut self.state {
                State::Body(left) => {
                    let take = (*left).min(self.input.len() as u64);
                    self.input.consume(take as usize);
                    *left -= take;
                    if *left > 0 {
                        self.body_incomplete(t, take as usize);
                        return;
                    }
                    self.body_done();
                    self.state = State::Head;
                }
                State::Chunked(d) => match d.feed(self.input.peek()) {
                    ChunkProgress::NeedMore => {
                        let n = self.input.len();
                        self.input.clear();
                        self.body_incomplete(t, n);
                        return;
                    }
                    ChunkProgress::Done(n) => {
                        self.input.consume(n);
                        self.body_done();
                        self.state = State::Head;
                    }
                    ChunkProgress::Error(r) => {
                        // The body of a request already answered (and logged): no request
                        // line of its own.
                        self.reject(t, r.status, r.why, None);
                        return;
                    }
                },
                State::Head => {
                    // Blank lines between pipelined requests are allowed.
                    let blank = self
                        .input
                        .peek()
                        .iter()
                        .take_while(|b| **b == b'\r' || **b == b'\n')
                        .count();
                    self.input.consume(blank);
                    if self.input.is_empty() {
                        // While stopping, an idle connection is closed by the grace timeout
                        // set in `stop_requested`, so a request already on its way is read.
                        self.cancel_head_timer();
                        self.input.release_if_empty();
                        return;
                    }
                    // A head can only end at a new LF: a head arriving a byte at a time is
                    // not parsed again per byte (past the limits it is, to refuse it).
                    let buf = self.input.peek();
                    let limits = &self.site.limits;
                    if self.partial_head > 0
                        && buf.len() <= limits.max_request_line.min(limits.max_header_bytes)
                        && memchr::memchr(b'\n', buf.get(self.partial_head..).unwrap_or(&[]))
                            .is_none()
                    {
                        return;
                    }
                    match request::parse_head(buf, limits) {
                        Head::Partial => {
                            self.partial_head = buf.len();
                            if self.head_timer.is_none() {
                                self.head_timer = Some(t.call_later(self.site.timeout, HEAD_TIMER));
                            }
                            return;
                        }
                        Head::Error(r) => {
                            let head = request::refused(buf, limits);
                            self.reject(t, r.status, r.why, head);
                            return;
                        }
                        Head::Complete(req, used) => {
                            self.partial_head = 0;
                            self.input.consume(used);
                            self.cancel_head_timer();
                            self.state = match req.body {
                                Some(Body::Length(n)) => State::Body(n),
                                Some(Body::Chunked) => {
                                    State::Chunked(ChunkedDiscard::new(self.site.limits.max_body))
                                }
                                _ => State::Head,
                            };
                            self.request(t, req);
                            if self.backed_up(t) {
                                // Stop reading too: the input would grow while we wait.
                                self.waiting = true;
                                t.pause_producing();
                            }
                        }
                    }
                }
            }
        }
    }

    /// Too much waits to leave to take another request: output, the access lines that
    /// wait for it, or a file (an open descriptor).
    fn backed_up(&self, t: &Transport<'_>) -> bool {
        t.buffered() >= PIPELINE_OUTPUT_MAX
            || self.outstanding.held() >= PENDING_LOG_MAX
            || t.bytes_sent() < self.file_end
    }

    /// A body's deadline: `--timeout`, then one more second for every `BODY_MIN_RATE` bytes
    /// that came. Its request has been answered already (the body is thrown away), so a body
    /// still short of it is logged and the connection closed once the answer has left.
    fn body_timer_fired(&mut self, t: &mut Transport<'_>) {
        let Some((start, read, _)) = self.body.take() else {
            return;
        };
        if self.done {
            return;
        }
        if self.waiting {
            // Not reading because our own output is backed up: the client is not late, and
            // its clock starts again.
            let timer = t.call_later(self.site.timeout, BODY_TIMER);
            self.body = Some((t.handle().now(), 0, timer));
            return;
        }
        let allowed = self.site.timeout + Duration::from_secs(read / BODY_MIN_RATE);
        let elapsed = t.handle().now().saturating_duration_since(start);
        if elapsed < allowed {
            let timer = t.call_later(allowed - elapsed, BODY_TIMER);
            self.body = Some((start, read, timer));
            return;
        }
        log::info!(target: &t.system(),
            "Request body from {} too slow: {read} bytes in {} s (--timeout {} s, then {BODY_MIN_RATE} bytes/s); closing",
            t.peer(), elapsed.as_secs(), self.site.timeout.as_secs());
        self.done = true;
        self.input.clear();
        self.state = State::Head;
        t.lose_connection();
    }

    /// Answers a request that cannot be parsed or framed, and closes. `head` is its request
    /// line when that came whole and well formed, with the User-Agent and Referer read
    /// before it was refused (`request::refused`): the access log shows them, as nginx's
    /// does, or `-` without them.
    fn reject(
        &mut self,
        t: &mut Transport<'_>,
        status: u16,
        why: &str,
        head: Option<request::Refused>,
    ) {
        log::info!(target: &t.system(), "Bad request from {}: {why} ({status})", t.peer());
        self.done = true;
        self.input.clear();
        self.cancel_head_timer();
        let f = Framing {
            keep_alive: false,
            // The answer to a HEAD has no body, refused or not.
            head_only: head.as_ref().is_some_and(|h| h.line.starts_with("HEAD ")),
            http10: false,
        };
        let sent = self.error(t, status, f);
        let (line, referer, agent) = match head {
            Some(h) => (h.line, h.referer, h.agent),
            None => ("-".to_string(), None, None),
        };
        self.outstanding.push(Pending {
            line,
            status: sent.status,
            body: sent.bytes,
            end: t.bytes_written(),
            referer,
            agent,
            start: std::time::Instant::now(),
        });
        t.lose_connection();
    }

    /// The access log line of a response, with the body bytes that left.
    fn log(&self, p: &Pending, bytes: u64) {
        let duration = p.start.elapsed();
        self.site.metrics.record(&p.line, p.status, bytes, duration);
        self.site.access.borrow_mut().log(&Line {
            client: if self.client.is_empty() {
                "-"
            } else {
                &self.client
            },
            request: &p.line,
            status: p.status,
            bytes,
            referer: p.referer.as_deref(),
            agent: p.agent.as_deref(),
            duration,
        });
    }

    /// Logs the responses that have wholly left, in order.
    fn log_sent(&mut self, t: &Transport<'_>) {
        let sent = t.bytes_sent();
        while let Some(p) = self.outstanding.pop_sent(sent) {
            self.log(&p, p.body);
        }
    }

    fn request(&mut self, t: &mut Transport<'_>, mut req: Request) {
        // While stopping, every request that has arrived is answered: the connection stays
        // open only for the requests pipelined behind this one (`Connection: close` on the
        // last), so none is lost to the close.
        let more = !self.input.is_empty() || !matches!(self.state, State::Head);
        let keep_alive = req.keep_alive && (!self.stopping || more);
        let sent = self.respond(t, &req, keep_alive);
        self.outstanding.push(Pending {
            line: req.line(),
            status: sent.status,
            body: sent.bytes,
            end: t.bytes_written(),
            referer: req.referer.take(),
            agent: req.user_agent.take(),
            start: std::time::Instant::now(),
        });
        if !keep_alive {
            self.done = true;
            t.lose_connection();
        }
    }

    fn respond(&mut self, t: &mut Transport<'_>, req: &Request, keep_alive: bool) -> Sent {
        let has_body = !matches!(req.body, Some(Body::None) | None);
        let method = req.method();
        let f = Framing {
            keep_alive,
            head_only: method == Method::Head,
            http10: req.minor == 0,
        };
        if method == Method::Other {
            // A body we never asked for (Expect: 100-continue) is not read: close instead.
            let f = Framing {
                keep_alive: keep_alive && !(has_body && req.expect_continue),
                ..f
            };
            self.scratch.clear();
            response::begin(&mut self.scratch, 405, &self.site.extra_headers);
            response::header(&mut self.scratch, "Allow", "GET, HEAD");
            return self.finish_error(t, 405, f);
        }
        if req.expect_continue && has_body {
            t.write(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let url = match path::decode(&req.target) {
            Ok(u) => u,
            Err(PathError::BadTarget) => {
                return self.error(t, 400, f);
            }
            Err(PathError::Forbidden(why)) => {
                log::info!(target: &t.system(), "Refused {:?}: {why}", req.target);
                return self.error(t, 404, f);
            }
        };
        let site = self.site.clone();
        let Some(root) = site.root.get() else {
            return self.demo(t, req, &url.raw, f);
        };
        if root.hide_dotfiles && url.has_dotfile() {
            return self.error(t, 404, f);
        }
        let rel = url.relative();
        match root.find(&rel) {
            Found::File(e) if !url.trailing_slash || !root.is_dir() => self.file(t, req, &e, f),
            Found::File(_) => self.error(t, 404, f),
            Found::Dir(fd) => {
                if !url.trailing_slash {
                    let query = req.target.find('?').map_or("", |i| &req.target[i..]);
                    let loc = format!("{}{query}", url.with_slash());
                    return self.redirect(t, &loc, f);
                }
                for idx in &site.indexes {
                    let mut p = if rel == "." {
                        OsString::new()
                    } else {
                        rel.clone()
                    };
                    if !p.is_empty() {
                        p.push("/");
                    }
                    p.push(idx);
                    match root.find(&p) {
                        Found::File(e) => return self.file(t, req, &e, f),
                        Found::Failed(e) => return self.failed(t, req, &e, f),
                        // An index that is there but refused hides the directory still: 403,
                        // as twistd and nginx answer, never the listing it was put there to
                        // hide.
                        Found::Forbidden(why) => {
                            log::info!(target: &t.system(), "Forbidden {:?}: index {idx:?}: {why}", req.target);
                            return self.error(t, 403, f);
                        }
                        Found::Dir(_) | Found::NotFound => {}
                    }
                }
                if site.no_listing {
                    return self.error(t, 403, f);
                }
                // Opened first, so a directory that cannot be read is a 403 whatever the
                // preconditions say (RFC 9110 13.2.1: they apply to what would be a 200);
                // read only once they have passed: a listing has no ETag and no date (its
                // sizes change without the directory's mtime), so nothing read from it
                // decides a 304 or a 412.
                let dir = match root.open_listing(&fd) {
                    Ok(dir) => dir,
                    Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => {
                        log::info!(target: &t.system(), "Forbidden {:?}: cannot list: permission denied", req.target);
                        return self.error(t, 403, f);
                    }
                    Err(e) => return self.failed(t, req, &io::Error::from(e), f),
                };
                if let Some(sent) = self.preconditions(t, req, &Validators::default(), None, f) {
                    return sent;
                }
                let entries = root.read_listing(dir);
                let html = response::listing(&url.raw, &entries, |n| {
                    crate::resource::content_type(n, &root.default_type)
                });
                self.page(t, 200, "text/html; charset=utf-8", html.as_bytes(), f)
            }
            Found::NotFound if url.trailing_slash => self.error(t, 404, f),
            Found::NotFound => match self.ignored_extension(root, &url.segments, &rel) {
                Found::File(e) => self.file(t, req, &e, f),
                Found::Failed(e) => self.failed(t, req, &e, f),
                _ => self.error(t, 404, f),
            },
            Found::Forbidden(why) => {
                log::info!(target: &t.system(), "Forbidden {:?}: {why}", req.target);
                self.error(t, 403, f)
            }
            Found::Failed(e) => self.failed(t, req, &e, f),
        }
    }

    /// A file that exists, or may, but could not be opened or read (no descriptor left, an
    /// I/O error): 500, with the error in the log, as nginx does.
    fn failed(&mut self, t: &mut Transport<'_>, req: &Request, e: &io::Error, f: Framing) -> Sent {
        log::error!(target: &t.system(), "Cannot serve {:?}: {e}", req.target);
        self.error(t, 500, f)
    }

    /// `--ignore-ext` and `--allow-ignore-ext`: `/page` may serve `page.html`. The first
    /// candidate that is a file, or that failed to open, decides.
    fn ignored_extension(&self, root: &Root, segs: &[OsString], rel: &OsString) -> Found {
        for ext in &self.site.ignore_ext {
            let mut p = rel.clone();
            p.push(ext);
            if let found @ (Found::File(_) | Found::Failed(_)) = root.find(&p) {
                return found;
            }
        }
        if self.site.allow_ignore_ext {
            let Some((last, parent)) = segs.split_last() else {
                return Found::NotFound;
            };
            let mut dir = OsString::new();
            for (i, s) in parent.iter().enumerate() {
                if i > 0 {
                    dir.push("/");
                }
                dir.push(s);
            }
            if dir.is_empty() {
                dir.push(".");
            }
            for name in root.with_any_extension(&dir, last) {
                let p = if dir == "." {
                    name
                } else {
                    let mut p = dir.clone();
                    p.push("/");
                    p.push(name);
                    p
                };
                if let found @ (Found::File(_) | Found::Failed(_)) = root.find(&p) {
                    return found;
                }
            }
        }
        Found::NotFound
    }

    /// Evaluates the request's preconditions for a response that would be a 200 (RFC 9110
    /// 13.2.1: a 404 or a redirect ignores them), and answers 304 or 412 when they say so.
    /// `file`: the file the response would carry, whose validators a 304 repeats; None for a
    /// generated page (a listing), which has none.
    fn preconditions(
        &mut self,
        t: &mut Transport<'_>,
        req: &Request,
        v: &Validators<'_>,
        file: Option<&Entry>,
        f: Framing,
    ) -> Option<Sent> {
        let get_or_head = matches!(req.method(), Method::Get | Method::Head);
        match cond::evaluate(&req.preconditions(), v, get_or_head) {
            Outcome::Proceed => None,
            Outcome::NotModified => {
                self.scratch.clear();
                response::begin(&mut self.scratch, 304, &self.site.extra_headers);
                if let Some(e) = file {
                    response::header(&mut self.scratch, "ETag", &e.etag);
                    response::header(&mut self.scratch, "Last-Modified", &e.last_modified);
                }
                response::end(&mut self.scratch, f.keep_alive, f.http10);
                t.write(&self.scratch);
                Some(Sent {
                    status: 304,
                    bytes: 0,
                })
            }
            // twistd's error page, as for every other error; the connection stays open.
            Outcome::Failed => Some(self.error(t, 412, f)),
        }
    }

    fn file(&mut self, t: &mut Transport<'_>, req: &Request, e: &Rc<Entry>, f: Framing) -> Sent {
        let Framing {
            keep_alive,
            head_only,
            http10,
        } = f;
        let v = validators(e);
        if let Some(sent) = self.preconditions(t, req, &v, Some(e), f) {
            return sent;
        }
        let extra = &self.site.extra_headers;
        self.scratch.clear();
        let range_applies = req
            .if_range
            .as_deref()
            .is_none_or(|ir| cond::if_range_holds(ir, &v));
        let ranges = if range_applies {
            response::parse_ranges(req.range.as_deref(), e.size)
        } else {
            Ranges::Whole
        };
        let common = |buf: &mut Vec<u8>| {
            response::header(buf, "Last-Modified", &e.last_modified);
            response::header(buf, "ETag", &e.etag);
            response::header(buf, "Accept-Ranges", "bytes");
            if let Some(enc) = e.encoding {
                response::header(buf, "Content-Encoding", enc);
            }
        };
        match ranges {
            Ranges::Whole => {
                response::begin(&mut self.scratch, 200, extra);
                response::header(&mut self.scratch, "Content-Type", &e.content_type);
                response::header(&mut self.scratch, "Content-Length", e.size);
                common(&mut self.scratch);
                response::end(&mut self.scratch, keep_alive, http10);
                t.write(&self.scratch);
                if !head_only && send_body(t, e, 0, e.size) {
                    self.file_end = t.bytes_written();
                }
                Sent {
                    status: 200,
                    bytes: if head_only { 0 } else { e.size },
                }
            }
            Ranges::Unsatisfiable => {
                response::begin(&mut self.scratch, 416, extra);
                response::header(
                    &mut self.scratch,
                    "Content-Range",
                    format_args!("bytes */{}", e.size),
                );
                response::header(&mut self.scratch, "Content-Length", 0);
                response::end(&mut self.scratch, keep_alive, http10);
                t.write(&self.scratch);
                Sent {
                    status: 416,
                    bytes: 0,
                }
            }
            Ranges::Parts(parts) if parts.len() == 1 => {
                let (a, b) = parts[0];
                response::begin(&mut self.scratch, 206, extra);
                response::header(&mut self.scratch, "Content-Type", &e.content_type);
                response::header(
                    &mut self.scratch,
                    "Content-Range",
                    format_args!("bytes {a}-{b}/{}", e.size),
                );
                response::header(&mut self.scratch, "Content-Length", b - a + 1);
                common(&mut self.scratch);
                response::end(&mut self.scratch, keep_alive, http10);
                t.write(&self.scratch);
                if !head_only && send_body(t, e, a, b - a + 1) {
                    self.file_end = t.bytes_written();
                }
                Sent {
                    status: 206,
                    bytes: if head_only { 0 } else { b - a + 1 },
                }
            }
            Ranges::Parts(parts) => {
                let boundary = &self.site.boundary;
                let part_heads: Vec<String> = parts
                    .iter()
                    .map(|(a, b)| {
                        format!(
                            "\r\n--{boundary}\r\nContent-Type: {}\r\nContent-Range: bytes {a}-{b}/{}\r\n\r\n",
                            e.content_type, e.size
                        )
                    })
                    .collect();
                let tail = format!("\r\n--{boundary}--\r\n");
                let len: u64 = part_heads.iter().map(|h| h.len() as u64).sum::<u64>()
                    + parts.iter().map(|(a, b)| b - a + 1).sum::<u64>()
                    + tail.len() as u64;
                response::begin(&mut self.scratch, 206, extra);
                response::header(
                    &mut self.scratch,
                    "Content-Type",
                    format_args!("multipart/byteranges; boundary={boundary}"),
                );
                response::header(&mut self.scratch, "Content-Length", len);
                common(&mut self.scratch);
                response::end(&mut self.scratch, keep_alive, http10);
                t.write(&self.scratch);
                if !head_only {
                    for (h, (a, b)) in part_heads.iter().zip(&parts) {
                        t.write(h.as_bytes());
                        if send_body(t, e, *a, b - a + 1) {
                            self.file_end = t.bytes_written();
                        }
                    }
                    t.write(tail.as_bytes());
                }
                Sent {
                    status: 206,
                    bytes: if head_only { 0 } else { len },
                }
            }
        }
    }

    fn redirect(&mut self, t: &mut Transport<'_>, loc: &str, f: Framing) -> Sent {
        let body = response::redirect_page(loc);
        self.scratch.clear();
        response::begin(&mut self.scratch, 302, &self.site.extra_headers);
        response::header(&mut self.scratch, "Location", loc);
        self.body(t, 302, "text/html; charset=utf-8", body.as_bytes(), f)
    }

    /// Without `--path`: a test page at `/`, as twistd's demo root.
    fn demo(&mut self, t: &mut Transport<'_>, req: &Request, raw: &str, f: Framing) -> Sent {
        if raw != "/" {
            return self.error(t, 404, f);
        }
        if let Some(sent) = self.preconditions(t, req, &Validators::default(), None, f) {
            return sent;
        }
        let body = b"<html><head><title>twistrs web</title></head><body>Hello! This is a twistrs web test page.</body></html>";
        self.page(t, 200, "text/html; charset=utf-8", body, f)
    }

    /// A generated page with a status.
    fn page(
        &mut self,
        t: &mut Transport<'_>,
        status: u16,
        ctype: &str,
        body: &[u8],
        f: Framing,
    ) -> Sent {
        self.scratch.clear();
        response::begin(&mut self.scratch, status, &self.site.extra_headers);
        self.body(t, status, ctype, body, f)
    }

    /// Ends a begun head with a body.
    fn body(
        &mut self,
        t: &mut Transport<'_>,
        status: u16,
        ctype: &str,
        body: &[u8],
        f: Framing,
    ) -> Sent {
        response::header(&mut self.scratch, "Content-Type", ctype);
        response::header(&mut self.scratch, "Content-Length", body.len());
        response::end(&mut self.scratch, f.keep_alive, f.http10);
        t.write(&self.scratch);
        if f.head_only {
            return Sent { status, bytes: 0 };
        }
        t.write(body);
        Sent {
            status,
            bytes: body.len() as u64,
        }
    }

    fn error(&mut self, t: &mut Transport<'_>, status: u16, f: Framing) -> Sent {
        self.scratch.clear();
        response::begin(&mut self.scratch, status, &self.site.extra_headers);
        self.finish_error(t, status, f)
    }

    /// Ends a begun head with twistd's error page.
    fn finish_error(&mut self, t: &mut Transport<'_>, status: u16, f: Framing) -> Sent {
        let page = response::error_page(status);
        self.body(t, status, "text/html; charset=utf-8", page.as_bytes(), f)
    }
}

/// The body bytes `[offset, offset+len)` of a file: from the cache, or with sendfile; true
/// if the open file was queued.
fn send_body(t: &mut Transport<'_>, e: &Entry, offset: u64, len: u64) -> bool {
    if let Some(b) = &e.body {
        let (a, z) = (offset as usize, (offset + len) as usize);
        if let Some(slice) = b.get(a..z) {
            t.write(slice);
        }
        false
    } else if let Some(f) = &e.file {
        t.send_file(f.clone(), offset, len);
        true
    } else {
        false
    }
}

impl Protocol for Http {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        self.client = t.peer().host_string();
        t.register_producer();
        t.set_timeout(Some(self.site.timeout));
    }

    fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
        self.note_busy(t);
        self.log_sent(t);
        if self.done {
            return;
        }
        self.input.feed(data);
        self.process(t);
    }

    fn read_eof(&mut self, t: &mut Transport<'_>) {
        self.done = true;
        self.cancel_head_timer();
        t.lose_connection();
    }

    /// Logs what was sent; a response cut short is logged with the bytes that left, and
    /// said so in the main log.
    fn connection_lost(&mut self, t: &mut Transport<'_>, reason: &Reason) {
        self.note_busy(t);
        self.cancel_head_timer();
        self.body_done();
        self.log_sent(t);
        let sent = t.bytes_sent();
        while let Some(p) = self.outstanding.pop() {
            let got = p.body_sent(sent);
            self.log(&p, got);
            log::info!(target: &t.system(),
                "Response to {:?} interrupted after {got} of {} bytes: {reason}", p.line, p.body);
        }
    }

    fn pause_producing(&mut self) {
        self.waiting = true;
    }

    /// Also where a connection is seen to go idle: the reactor calls this on each drive once
    /// the output is below the low-water mark, so also once the last response has left.
    fn resume_producing(&mut self, t: &mut Transport<'_>) {
        self.log_sent(t);
        if self.waiting && !self.backed_up(t) {
            self.waiting = false;
            t.resume_producing();
            self.process(t);
        }
        self.note_idle(t);
    }

    /// Idle between requests: close. A client that stopped reading a response: abort.
    fn timeout_connection(&mut self, t: &mut Transport<'_>) {
        if !self.input.is_empty() && !self.done && matches!(self.state, State::Head) {
            let head = request::refused(self.input.peek(), &self.site.limits);
            self.reject(t, 408, "request head timed out", head);
        } else if t.buffered() > 0 {
            t.abort_connection();
        } else {
            self.done = true;
            t.lose_connection();
        }
    }

    /// A request head that has not arrived within the timeout (a slow client): 408.
    fn timer_fired(&mut self, t: &mut Transport<'_>, key: u64) {
        self.log_sent(t);
        if key == HEAD_TIMER {
            self.head_timer = None;
            if !self.input.is_empty() && !self.done {
                let head = request::refused(self.input.peek(), &self.site.limits);
                self.reject(t, 408, "request head timed out", head);
            }
        } else if key == BODY_TIMER {
            self.body_timer_fired(t);
        }
    }

    /// Graceful stop: answer every request that has arrived (the last with
    /// `Connection: close`), and close an idle connection only after a grace period, so a
    /// request already on its way (sent, not yet read) is still answered. A keep-alive client
    /// that sends nothing for the grace period is closed then.
    fn stop_requested(&mut self, t: &mut Transport<'_>) {
        self.stopping = true;
        t.set_timeout(Some(twistrs_core::STOP_GRACE));
        if !self.input.is_empty() && !self.waiting {
            self.process(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twistrs_core::testing::Harness;

    fn site(dir: &std::path::Path) -> Rc<Site> {
        site_logging(dir, crate::access::AccessLog::main())
    }

    fn site_logging(dir: &std::path::Path, access: crate::access::AccessLog) -> Rc<Site> {
        Rc::new(Site {
            root: Root::open(dir, false, false, "text/html".into())
                .unwrap()
                .into(),
            indexes: vec!["index.html".into()],
            ignore_ext: Vec::new(),
            allow_ignore_ext: false,
            no_listing: false,
            extra_headers: Vec::new(),
            limits: Limits::default(),
            timeout: Duration::from_secs(60),
            access: Rc::new(RefCell::new(access)),
            boundary: "b".into(),
            metrics: Default::default(),
            idle: None,
        })
    }

    #[test]
    fn unsent_responses_hold_a_bounded_amount_of_log_lines() {
        // A client pipelining fat heads for small answers and reading none: each answer's
        // access line waits for it to leave, so the protocol must stop taking requests (and
        // reading) before those lines hold much, well before the output itself is large.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "x").unwrap();
        let mut h = Harness::new(Http::new(site(dir.path())));
        h.connect();
        let req = format!(
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\nUser-Agent: {}\r\n\r\n",
            "u".repeat(15 * 1024)
        );
        let input = req.repeat(400);
        // In 64 KiB reads, as the reactor delivers them.
        h.feed_chunked(input.as_bytes(), 64 * 1024);
        let held = h.proto.outstanding.held();
        assert!(
            held <= PENDING_LOG_MAX + req.len(),
            "{held} bytes of log lines held"
        );
        assert!(h.reading_paused(), "reading stops meanwhile");
        // The client reads: answers leave, their lines are written, the protocol takes the
        // next requests, until all 400 are answered.
        let mut answers = 0;
        for _ in 0..400 {
            let out = h.take_output();
            if out.is_empty() {
                break;
            }
            answers += out.windows(13).filter(|w| w == b"HTTP/1.1 206 ").count();
            assert!(h.proto.outstanding.held() <= PENDING_LOG_MAX + req.len());
        }
        assert_eq!(answers, 400);
        assert_eq!(h.proto.outstanding.held(), 0);
        assert!(!h.reading_paused());
    }

    #[test]
    fn pipelined_requests_to_a_client_that_reads_nothing_hold_one_step_of_output() {
        // A cached file of 200 KB asked for 300 times in 64 KiB reads by a client that reads
        // nothing: the protocol stops taking requests once the output holds the reactor's
        // high-water mark (64 KiB), so the connection holds that and one response, not 60 MB
        // (nor the 1 MiB and a response of an older budget).
        let dir = tempfile::tempdir().unwrap();
        let size = 200_000;
        std::fs::write(dir.path().join("c.bin"), vec![b'c'; size]).unwrap();
        let mut h = Harness::new(Http::new(site(dir.path())));
        h.connect();
        let req = "GET /c.bin HTTP/1.1\r\nHost: x\r\n\r\n";
        h.feed_chunked(req.repeat(300).as_bytes(), 64 * 1024);
        let held = h.output().len();
        assert!(
            held < 64 * 1024 + size + 1024,
            "{held} bytes held for the client"
        );
        assert!(h.reading_paused(), "reading stops meanwhile");
        let out = h.take_all_output();
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("HTTP/1.1 200 ").count(), 300, "all answered");
        assert!(!h.reading_paused());
    }

    #[test]
    fn pipelined_requests_for_a_large_file_hold_one_open_file() {
        // Each response with a file region keeps the file open until it has left: pipelined
        // one-byte ranges of a file too large for the cache (a few hundred bytes of output
        // each) held a descriptor per response, hundreds per connection. One at a time now.
        let dir = tempfile::tempdir().unwrap();
        let size = 300_000;
        std::fs::write(dir.path().join("big.bin"), vec![b'b'; size]).unwrap();
        let mut h = Harness::new(Http::new(site(dir.path())));
        h.connect();
        let req = "GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\n\r\n";
        h.feed(req.repeat(200).as_bytes());
        assert_eq!(
            h.proto.outstanding.count(),
            1,
            "one response (one open file) waits for the client"
        );
        let out = h.take_all_output();
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("HTTP/1.1 206 ").count(), 200, "all answered");
        assert_eq!(h.proto.outstanding.count(), 0);
    }

    /// The status line and the body of the one response in `out`.
    fn answer(out: &[u8]) -> (String, String) {
        let text = String::from_utf8_lossy(out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.lines().next().unwrap_or_default().to_string();
        (status, body.to_string())
    }

    #[test]
    fn preconditions_on_files_listings_ranges_and_head() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "0123456789").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let site = site(dir.path());
        let ask = |req: &str| {
            let mut h = Harness::new(Http::new(site.clone()));
            h.connect().feed(req.as_bytes());
            let out = h.take_output();
            (answer(&out), h.disconnecting(), out)
        };
        let ((_, _), _, out) = ask("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
        let text = String::from_utf8_lossy(&out).into_owned();
        let etag = text
            .lines()
            .find_map(|l| l.strip_prefix("ETag: "))
            .unwrap()
            .to_string();
        let get = |fields: &str| format!("GET /a.txt HTTP/1.1\r\nHost: x\r\n{fields}\r\n");

        // A failed If-Match: 412 with twistd's error page, and the connection stays open.
        let ((status, body), closing, _) = ask(&get("If-Match: \"nope\"\r\n"));
        assert_eq!(status, "HTTP/1.1 412 Precondition Failed");
        assert_eq!(body, response::error_page(412));
        assert!(
            body.contains("<title>412 - Precondition Failed</title>"),
            "{body}"
        );
        assert!(!closing, "a 412 keeps the connection");
        for (fields, want) in [
            (format!("If-Match: {etag}\r\n"), "200"),
            ("If-Match: *\r\n".to_string(), "200"),
            (format!("If-Match: W/{etag}\r\n"), "412"),
            (format!("If-Match: \"x\"\r\nIf-Match: {etag}\r\n"), "200"),
            (
                "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:01 GMT\r\n".into(),
                "412",
            ),
            ("If-Unmodified-Since: never\r\n".into(), "200"),
            (
                format!("If-Match: \"x\"\r\nIf-None-Match: {etag}\r\n"),
                "412",
            ),
            (
                format!("If-Match: {etag}\r\nIf-None-Match: {etag}\r\n"),
                "304",
            ),
            // Preconditions come before the Range: a failed one is 412, never 206 or 416.
            ("Range: bytes=0-1\r\nIf-Match: \"x\"\r\n".into(), "412"),
            ("Range: bytes=50-60\r\nIf-Match: \"x\"\r\n".into(), "412"),
            (format!("Range: bytes=0-1\r\nIf-Match: {etag}\r\n"), "206"),
            (format!("Range: bytes=0-1\r\nIf-Range: W/{etag}\r\n"), "200"),
        ] {
            let ((status, _), _, _) = ask(&get(&fields));
            assert!(
                status.starts_with(&format!("HTTP/1.1 {want} ")),
                "{fields:?}: {status}"
            );
        }
        // HEAD: the 412 without its body.
        let ((status, body), _, _) =
            ask("HEAD /a.txt HTTP/1.1\r\nHost: x\r\nIf-Match: \"x\"\r\n\r\n");
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("HTTP/1.1 412 Precondition Failed", "")
        );
        // A listing has no validators: `*` is all that matches it. The directory is read
        // only for a 200: a 304 or a 412 is answered without reading it.
        let list = |fields: &str| format!("GET /sub/ HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
        let read = || site.root.get().unwrap().listings_read.get();
        for (fields, want) in [
            ("If-Match: *\r\n", "200"),
            ("If-Match: \"x\"\r\n", "412"),
            (
                "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:01 GMT\r\n",
                "200",
            ),
            ("If-None-Match: *\r\n", "304"),
            ("HEAD", "304"),
            ("If-None-Match: \"x\"\r\n", "200"),
        ] {
            let before = read();
            let req = match fields {
                "HEAD" => "HEAD /sub/ HTTP/1.1\r\nHost: x\r\nIf-None-Match: *\r\n\r\n".into(),
                _ => list(fields),
            };
            let ((status, body), _, _) = ask(&req);
            assert!(
                status.starts_with(&format!("HTTP/1.1 {want} ")),
                "{fields:?}: {status}"
            );
            assert_eq!(
                read() - before,
                usize::from(want == "200"),
                "{fields:?}: reads"
            );
            if want == "200" {
                assert!(body.contains("Directory listing for /sub/"), "{body}");
            }
        }
        // What would not be a 200 ignores them (RFC 9110 13.2.1): a 404, a redirect.
        for req in [
            "GET /missing HTTP/1.1\r\nHost: x\r\nIf-Match: *\r\n\r\n",
            "GET /sub HTTP/1.1\r\nHost: x\r\nIf-Match: \"x\"\r\n\r\n",
            "POST /a.txt HTTP/1.1\r\nHost: x\r\nIf-Match: \"x\"\r\n\r\n",
        ] {
            let ((status, _), _, _) = ask(req);
            assert!(!status.contains(" 412 "), "{req:?}: {status}");
        }
    }

    #[test]
    fn a_refused_head_is_logged_with_its_request_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "x").unwrap();
        let log = dir.path().join("access.log");
        let site = site_logging(
            dir.path(),
            crate::access::AccessLog::file(log.clone()).unwrap(),
        );
        for (req, chunk) in [
            (
                &b"GET /a.txt?bad HTTP/1.1\r\nHost: x\r\nUser-Agent: u\r\nBad Header: y\r\n\r\n"[..],
                1,
            ),
            (
                b"HEAD /h HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
                7,
            ),
            (b"GET /a\"b HTTP/1.1\r\nX: y\r\n\r\n", 100),
            (b"GET /a b.txt HTTP/1.1\r\nHost: x\r\n\r\n", 1),
        ] {
            let mut h = Harness::new(Http::new(site.clone()));
            h.connect().feed_chunked(req, chunk);
            let out = h.take_output();
            let (status, body) = answer(&out);
            assert!(status.starts_with("HTTP/1.1 400 "), "{status}");
            assert_eq!(
                body.is_empty(),
                req.starts_with(b"HEAD"),
                "a HEAD's 400 has no body"
            );
        }
        // A head that timed out after its line.
        let mut h = Harness::new(Http::new(site.clone()));
        h.connect()
            .feed(b"GET /slow HTTP/1.1\r\nHost: x\r\nReferer: r\r\nUser-Agent: cut sh");
        h.advance(Duration::from_secs(61));
        assert!(answer(&h.take_output()).0.starts_with("HTTP/1.1 408 "));
        site.access.borrow_mut().flush();
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        for (line, (want, fields)) in lines.iter().zip([
            // With the User-Agent and Referer read before the refused field, as nginx.
            (r#""GET /a.txt?bad HTTP/1.1" 400 "#, r#" "-" "u""#),
            (r#""HEAD /h HTTP/1.1" 400 - "#, r#" "-" "-""#),
            (r#""GET /a\"b HTTP/1.1" 400 "#, r#" "-" "-""#),
            // A malformed line: `-`, as it is in every chunking.
            (r#""-" 400 "#, r#" "-" "-""#),
            // A User-Agent cut short by the timeout is not logged.
            (r#""GET /slow HTTP/1.1" 408 "#, r#" "r" "-""#),
        ]) {
            assert!(line.contains(want), "{want} not in {line}");
            assert!(line.ends_with(fields), "{fields} not at the end of {line}");
        }
    }

    #[test]
    fn heads_in_every_chunking_and_the_limits_without_a_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "0123456789").unwrap();
        let input =
            b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n\r\nHEAD /a.txt HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut whole = Harness::new(Http::new(site(dir.path())));
        whole.connect().feed(input);
        let want = whole.take_output();
        let text = String::from_utf8_lossy(&want).into_owned();
        assert_eq!(text.matches("HTTP/1.1 200 ").count(), 2, "{text}");
        // Dates may tick between runs: compare without them.
        let undated = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .lines()
                .filter(|l| !l.starts_with("Date:"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        for chunk in 1..input.len() {
            let mut h = Harness::new(Http::new(site(dir.path())));
            h.connect().feed_chunked(input, chunk);
            assert_eq!(undated(&h.take_output()), undated(&want), "chunk {chunk}");
        }
        // A request line that never ends is refused once past its limit, a byte at a time.
        let mut h = Harness::new(Http::new(site(dir.path())));
        h.connect();
        let long = vec![b'a'; Limits::default().max_request_line + 2];
        h.feed(b"GET /").feed_chunked(&long, 1);
        assert!(
            String::from_utf8_lossy(&h.take_output()).starts_with("HTTP/1.1 414 "),
            "414 without a newline ever arriving"
        );
    }

    #[test]
    fn a_body_deadline_only_for_a_body_not_all_there() {
        // A body that came whole with its head needs no deadline: no timer is made (a timer
        // made and cancelled at once stays in the reactor's heap until it is compacted).
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "x").unwrap();
        let whole: [&[u8]; 2] = [
            b"POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
        ];
        for req in whole {
            let mut h = Harness::new(Http::new(site(dir.path())));
            h.connect().feed(req);
            let out = String::from_utf8_lossy(&h.take_output()).into_owned();
            assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
            assert_eq!(h.handle().timer_count(), 0, "a timer for a whole body");
            assert!(h.proto.body.is_none());
        }
        // A body still coming has its deadline; the rest of it ends it.
        let part = b"POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe";
        let mut h = Harness::new(Http::new(site(dir.path())));
        h.connect().feed(part);
        assert!(h.proto.body.as_ref().is_some_and(|(_, _, d)| d.active()));
        h.feed(b"llo");
        assert!(h.proto.body.is_none(), "the deadline ends with the body");
        // One that trickles in (never idle for `--timeout`) is cut at its deadline.
        let part = b"POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhe";
        let mut h = Harness::new(Http::new(site(dir.path())));
        h.connect().feed(part);
        for _ in 0..5 {
            h.advance(Duration::from_secs(10)).feed(b"x");
        }
        assert!(!h.disconnecting(), "cut before its deadline");
        h.advance(Duration::from_secs(10));
        assert!(h.disconnecting(), "a body too slow is cut at 60 s");
    }
}
