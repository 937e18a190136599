//! `handshake` mode: CONNS connections at a time, each a new TCP connection with a full
//! TLS 1.3 handshake, one `GET PATH` with `Connection: close`, the whole response (status
//! 200, exactly Content-Length bytes of body) and the server's close; then the next one.
//! With `--resume 1` each handshake resumes a session with a ticket an earlier connection was
//! given (a returning client: no certificate, no signature). Prints handshakes per second on
//! one line, with how many were full and how many resumed.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use rustls::{ClientConfig, HandshakeKind};

use crate::Failure;
use crate::args::HandshakeArgs;
use crate::connect::ignore_eintr;
use crate::hist::Hist;
use crate::sys;
use crate::tls::{TlsConn, client_config};

/// A connection that has not finished by then is an error (the servers' own handshake
/// timeouts are 10 s or more).
const CONN_TIMEOUT: Duration = Duration::from_secs(10);
/// Response heads are short; anything longer is an error.
const MAX_HEAD: usize = 16 * 1024;
const MAX_REPORTED: u64 = 5;

/// What has arrived of one response.
#[derive(Default)]
struct Resp {
    head: Vec<u8>,
    /// Content-Length, once the head is complete.
    len: Option<usize>,
    body: usize,
}

impl Resp {
    fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        if self.len.is_none() {
            let take = data
                .len()
                .min((MAX_HEAD + 4).saturating_sub(self.head.len()));
            self.head.extend_from_slice(&data[..take]);
            let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                if self.head.len() > MAX_HEAD {
                    return Err("response head longer than 16 KiB".into());
                }
                return Ok(());
            };
            self.len = Some(parse_head(&self.head[..end])?);
            // What came after the head in this read is body.
            let extra = self.head.len() - (end + 4);
            data = &data[take - extra..];
        }
        self.body += data.len();
        match self.len {
            Some(len) if self.body > len => Err(format!(
                "{} body bytes where Content-Length is {len}",
                self.body
            )),
            _ => Ok(()),
        }
    }

    fn complete(&self) -> bool {
        self.len == Some(self.body)
    }
}

/// The Content-Length of a `200` response head (without its blank line).
fn parse_head(head: &[u8]) -> Result<usize, String> {
    let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut parts = status.split(' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("bad status line {status:?}"));
    };
    if !version.starts_with("HTTP/1.") || code != "200" {
        return Err(format!("status line {status:?}, not 200"));
    }
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            return value
                .trim()
                .parse()
                .map_err(|_| format!("bad Content-Length {value:?}"));
        }
    }
    Err("no Content-Length in the response".into())
}

struct Slot {
    conn: Option<TlsConn>,
    resp: Resp,
    started: Instant,
}

struct Stats {
    done: u64,
    full: u64,
    other: u64,
    body_bytes: u64,
    errors: u64,
    hist: Hist,
    /// Protocol, cipher suite and key exchange of the first connection that completed.
    first: Option<String>,
}

pub fn run(a: &HandshakeArgs) -> Result<(), Failure> {
    let mut config = client_config(&a.cert, a.verify).map_err(Failure::Run)?;
    if a.resume {
        // Room for every connection's tickets: each takes one and is given more.
        let mut c = (*config).clone();
        c.resumption = rustls::client::Resumption::in_memory_sessions(4 * a.conns.max(64));
        config = Arc::new(c);
    }
    sys::raise_nofile(a.conns as u64 + 16).map_err(Failure::Run)?;
    let mut poll = Poll::new().map_err(|e| Failure::Run(format!("epoll_create: {e}")))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: twistrs-bench\r\nConnection: close\r\n\r\n",
        a.path
    );
    let mut st = Stats {
        done: 0,
        full: 0,
        other: 0,
        body_bytes: 0,
        errors: 0,
        hist: Hist::new(),
        first: None,
    };
    let now = Instant::now();
    let mut slots: Vec<Slot> = (0..a.conns)
        .map(|_| Slot {
            conn: None,
            resp: Resp::default(),
            started: now,
        })
        .collect();
    for (i, slot) in slots.iter_mut().enumerate() {
        open(&poll, a, &config, &request, i, slot, &mut st);
    }

    let mut events = Events::with_capacity(1024);
    let measure_from = now + a.warmup;
    let mut measuring = false;
    let (mut t0, mut cpu0) = (now, sys::cpu_time());
    let mut end = measure_from + a.secs;
    let mut last_sweep = now;
    loop {
        let now = Instant::now();
        if !measuring && now >= measure_from {
            measuring = true;
            (st.done, st.full, st.other, st.body_bytes) = (0, 0, 0, 0);
            st.hist.clear();
            (t0, cpu0) = (now, sys::cpu_time());
            end = now + a.secs;
        }
        if now >= end {
            break;
        }
        let next = if measuring { end } else { measure_from };
        let wait = (next - now).min(Duration::from_millis(100));
        poll.poll(&mut events, Some(wait))
            .or_else(|e| ignore_eintr(e, "epoll_wait"))
            .map_err(Failure::Run)?;
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(slot) = slots.get_mut(i) else {
                continue;
            };
            let Some(conn) = slot.conn.as_mut() else {
                continue;
            };
            let resp = &mut slot.resp;
            let outcome = conn.pump(&mut |data| resp.feed(data));
            let finished = match outcome {
                Err(e) => Some(Err(e)),
                Ok(()) if conn.eof && slot.resp.complete() => Some(Ok(())),
                Ok(()) if conn.eof => Some(Err(format!(
                    "the server closed after {} body bytes (head {} bytes, Content-Length {:?}; {}, {} ms after the connect)",
                    slot.resp.body,
                    slot.resp.head.len(),
                    slot.resp.len,
                    if conn.tls.is_handshaking() {
                        "during the handshake"
                    } else {
                        "after the handshake"
                    },
                    slot.started.elapsed().as_millis(),
                ))),
                Ok(()) => None,
            };
            if let Some(result) = finished {
                finish(
                    &poll,
                    slot,
                    result,
                    measuring && Instant::now() < end,
                    &mut st,
                );
                open(&poll, a, &config, &request, i, slot, &mut st);
            }
        }
        // Connections that hang are errors; looked at every 100 ms.
        let now = Instant::now();
        if now - last_sweep >= Duration::from_millis(100) {
            last_sweep = now;
            for (i, slot) in slots.iter_mut().enumerate() {
                if slot.conn.is_some() && now - slot.started > CONN_TIMEOUT {
                    let e = format!("no whole response and close within {CONN_TIMEOUT:?}");
                    finish(&poll, slot, Err(e), false, &mut st);
                    open(&poll, a, &config, &request, i, slot, &mut st);
                } else if slot.conn.is_none() {
                    open(&poll, a, &config, &request, i, slot, &mut st);
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (sys::cpu_time() - cpu0).as_secs_f64();
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "handshakes_per_sec={:.0} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} errors={} done={} \
         full={} resumed={} body_bytes_per_resp={} secs={:.3} conns={} client_cpu={:.2} {}",
        st.done as f64 / secs,
        ms(st.hist.quantile(0.50)),
        ms(st.hist.quantile(0.99)),
        ms(st.hist.max()),
        st.errors,
        st.done,
        st.full,
        st.other,
        st.body_bytes.checked_div(st.done).unwrap_or(0),
        secs,
        a.conns,
        cpu / secs,
        st.first.as_deref().unwrap_or("tls=none"),
    );
    let _ = io::stdout().flush();
    Ok(())
}

/// Starts a new connection in `slot` with the request queued (rustls sends it once the
/// handshake is done); a failure to start is counted and retried by the next sweep. The
/// connection is driven from its first (writable) event on, never from here: all its
/// plaintext must go through the slot's response.
fn open(
    poll: &Poll,
    a: &HandshakeArgs,
    config: &Arc<ClientConfig>,
    request: &str,
    i: usize,
    slot: &mut Slot,
    st: &mut Stats,
) {
    slot.resp = Resp::default();
    slot.started = Instant::now();
    let started = TlsConn::start(poll, a.addr, Token(i), config).and_then(|mut c| {
        c.tls
            .writer()
            .write_all(request.as_bytes())
            .map_err(|e| format!("queueing the request: {e}"))?;
        Ok(c)
    });
    match started {
        Ok(c) => slot.conn = Some(c),
        Err(e) => report(st, &e),
    }
}

/// Closes the connection of `slot`, counting it when `count` (inside the measured window).
fn finish(poll: &Poll, slot: &mut Slot, result: Result<(), String>, count: bool, st: &mut Stats) {
    let Some(mut conn) = slot.conn.take() else {
        return;
    };
    let _ = poll.registry().deregister(&mut conn.sock);
    match result {
        Ok(()) => {
            if st.first.is_none() {
                st.first = Some(describe(&conn));
            }
            if count {
                st.done += 1;
                st.hist.record(slot.started.elapsed().as_nanos() as u64);
                st.body_bytes += slot.resp.body as u64;
                if conn.tls.handshake_kind() == Some(HandshakeKind::Full) {
                    st.full += 1;
                } else {
                    st.other += 1;
                }
            }
        }
        Err(e) => report(st, &e),
    }
}

fn report(st: &mut Stats, e: &str) {
    st.errors += 1;
    if st.errors <= MAX_REPORTED {
        eprintln!("twistrs-bench: connection error: {e}");
    }
}

/// `tls=TLSv1_3 suite=... kx=...` of a finished connection.
fn describe(c: &TlsConn) -> String {
    let version = c
        .tls
        .protocol_version()
        .map_or("none".into(), |v| format!("{v:?}"));
    let suite = c
        .tls
        .negotiated_cipher_suite()
        .map_or("none".into(), |s| format!("{:?}", s.suite()));
    let kx = c
        .tls
        .negotiated_key_exchange_group()
        .map_or("none".into(), |g| format!("{:?}", g.name()));
    format!("tls={version} suite={suite} kx={kx}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_split_anywhere_is_complete_at_its_length() {
        let whole = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nX: y\r\n\r\nhello";
        for cut in 0..whole.len() {
            let mut r = Resp::default();
            r.feed(&whole[..cut])
                .unwrap_or_else(|e| panic!("{cut}: {e}"));
            assert!(!r.complete() || cut == whole.len());
            r.feed(&whole[cut..])
                .unwrap_or_else(|e| panic!("{cut}: {e}"));
            assert!(r.complete(), "{cut}");
        }
    }

    #[test]
    fn wrong_status_extra_bytes_and_no_length_are_errors() {
        let mut r = Resp::default();
        assert!(
            r.feed(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .is_err()
        );
        let mut r = Resp::default();
        assert!(
            r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab")
                .is_err()
        );
        let mut r = Resp::default();
        assert!(r.feed(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }
}
