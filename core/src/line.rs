//! Input framing for stream protocols: a buffer consumed through a read cursor, and Twisted's
//! `LineReceiver` on top of it.
//!
//! Taking a line (or a parsed request head) off the front advances a cursor; the bytes after
//! it are never moved for that. The buffer compacts itself only when the consumed prefix is at
//! least as large as what is left, so each byte is moved at most a bounded number of times:
//! framing costs O(n) in the input however it is chunked, where draining the front of a `Vec`
//! per line costs O(n²) on a buffer of many short lines.
//!
//! The receiver is sans-IO and pull-driven: bytes go in with `feed`, and the protocol takes
//! [`Line`]s out with `next_line` when it is ready for them, so a session that must wait (for
//! the disk, for a login delay) simply stops asking, and what was pipelined stays buffered.

/// Bytes received and not yet consumed, with a read cursor.
#[derive(Debug, Default)]
pub struct InputBuffer {
    buf: Vec<u8>,
    pos: usize,
}

impl InputBuffer {
    /// An empty buffer (no allocation until the first `feed`).
    pub fn new() -> Self {
        InputBuffer::default()
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if self.pos == self.buf.len() {
            // Everything was consumed: start again at the front, keeping the allocation.
            self.release_if_empty();
        } else if self.pos >= 4096 && self.pos >= self.buf.len() - self.pos {
            // Move what is left to the front only when the consumed part is the larger one,
            // so every byte is moved at most once per doubling: amortised O(1) per byte.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The unconsumed bytes.
    pub fn peek(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Marks `n` bytes (at most what is buffered) as consumed. The bytes stay where they are
    /// until the next `feed`, so a slice taken just before is still the same data.
    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }

    /// Once everything is consumed, starts again at the front, and gives back an allocation
    /// over 64 KiB so an idle connection does not keep the peak of a burst.
    pub fn release_if_empty(&mut self) {
        if self.pos == self.buf.len() {
            self.clear();
        }
    }

    /// Unconsumed bytes.
    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops everything buffered; a large allocation is given back, so an idle connection
    /// does not keep the peak of a burst.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
        if self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::new();
        }
    }
}

/// What [`LineReceiver::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A whole line, without its delimiter.
    Complete(&'a [u8]),
    /// A line longer than the maximum (Twisted's `lineLengthExceeded`): its bytes are thrown
    /// away up to and including the next delimiter, and this is reported once per such line,
    /// as soon as the limit is passed.
    TooLong,
}

/// Twisted's `LineReceiver` as a sans-IO buffer: a delimiter, a maximum line length, and a
/// raw mode for data that is not line-framed.
#[derive(Debug)]
pub struct LineReceiver {
    input: InputBuffer,
    delimiter: &'static [u8],
    max_length: usize,
    /// How far past the cursor the delimiter is known to be absent, so a line that arrives
    /// in many pieces is scanned once, not once per piece.
    scanned: usize,
    /// Throwing away the rest of an over-long line.
    discarding: bool,
    raw: bool,
}

impl LineReceiver {
    /// A receiver splitting on `delimiter` (not empty), with lines of at most `max_length`
    /// bytes, delimiter not counted.
    pub fn new(delimiter: &'static [u8], max_length: usize) -> Self {
        assert!(!delimiter.is_empty(), "a line delimiter cannot be empty");
        LineReceiver {
            input: InputBuffer::new(),
            delimiter,
            max_length,
            scanned: 0,
            discarding: false,
            raw: false,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.input.feed(data);
    }

    /// The next line, or `None` when no whole line (nor an over-long one) is buffered, or in
    /// raw mode.
    pub fn next_line(&mut self) -> Option<Line<'_>> {
        loop {
            if self.raw {
                return None;
            }
            let d = self.delimiter;
            let from = self.scanned.saturating_sub(d.len() - 1);
            let found = memchr::memmem::find(&self.input.peek()[from..], d).map(|i| from + i);
            match found {
                Some(end) => {
                    self.scanned = 0;
                    if std::mem::take(&mut self.discarding) {
                        self.input.consume(end + d.len());
                        continue;
                    }
                    if end > self.max_length {
                        self.input.consume(end + d.len());
                        return Some(Line::TooLong);
                    }
                    let start = self.input.pos;
                    self.input.consume(end + d.len());
                    return Some(self.line_at(start, end));
                }
                None => {
                    let len = self.input.len();
                    // Keep the last delimiter-length-minus-one bytes: a delimiter may straddle
                    // the next piece.
                    if self.discarding {
                        let keep = (d.len() - 1).min(len);
                        self.input.consume(len - keep);
                        self.scanned = keep;
                        return None;
                    }
                    if len > self.max_length + d.len() - 1 {
                        let keep = d.len() - 1;
                        self.input.consume(len - keep);
                        self.scanned = keep;
                        self.discarding = true;
                        return Some(Line::TooLong);
                    }
                    self.scanned = len;
                    self.input.release_if_empty();
                    return None;
                }
            }
        }
    }

    fn line_at(&self, start: usize, len: usize) -> Line<'_> {
        match self.input.buf.get(start..start + len) {
            Some(line) => Line::Complete(line),
            // Unreachable: consumed bytes stay in place until the next `feed`.
            None => Line::TooLong,
        }
    }

    /// Switches to raw mode (Twisted's `setRawMode`): lines are no longer split out, and the
    /// protocol reads the bytes with `raw`/`consume`.
    pub fn set_raw_mode(&mut self) {
        self.raw = true;
    }

    /// Back to lines (Twisted's `setLineMode`); what is still buffered is split into lines.
    pub fn set_line_mode(&mut self) {
        self.raw = false;
        self.scanned = 0;
    }

    /// True in raw mode.
    pub fn is_raw(&self) -> bool {
        self.raw
    }

    /// The buffered bytes not yet taken (in raw mode: the raw data).
    pub fn raw(&self) -> &[u8] {
        self.input.peek()
    }

    /// Consumes `n` raw bytes.
    pub fn consume(&mut self, n: usize) {
        self.input.consume(n);
        self.scanned = self.scanned.saturating_sub(n);
    }

    /// Bytes buffered and not yet taken.
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    /// Drops everything buffered (Twisted's `clearLineBuffer`), e.g. after STARTTLS.
    pub fn clear(&mut self) {
        self.input.clear();
        self.scanned = 0;
        self.discarding = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of `input` fed in `chunk`-byte pieces, `None` for a too-long one.
    fn lines(delim: &'static [u8], max: usize, input: &[u8], chunk: usize) -> Vec<Option<Vec<u8>>> {
        let mut r = LineReceiver::new(delim, max);
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            r.feed(piece);
            while let Some(l) = r.next_line() {
                out.push(match l {
                    Line::Complete(b) => Some(b.to_vec()),
                    Line::TooLong => None,
                });
            }
        }
        out
    }

    #[test]
    fn the_same_lines_in_every_chunking() {
        let input = b"one\r\ntwo\r\n\r\nthree has \r and \n inside\r\nunfinished";
        let want: Vec<Option<Vec<u8>>> = vec![
            Some(b"one".to_vec()),
            Some(b"two".to_vec()),
            Some(Vec::new()),
            Some(b"three has \r and \n inside".to_vec()),
        ];
        for chunk in 1..=input.len() {
            assert_eq!(lines(b"\r\n", 100, input, chunk), want, "chunk {chunk}");
        }
    }

    #[test]
    fn over_long_lines_are_reported_once_and_skipped() {
        let input = b"ok\nxxxxxxxxxxxxxxxxxxxx\nfine\n0123456789\nyyyyyyyyyyy\n";
        let want = vec![
            Some(b"ok".to_vec()),
            None,
            Some(b"fine".to_vec()),
            Some(b"0123456789".to_vec()),
            None,
        ];
        for chunk in 1..=input.len() {
            assert_eq!(lines(b"\n", 10, input, chunk), want, "chunk {chunk}");
        }
        // A multi-byte delimiter straddling pieces while an over-long line is skipped.
        let input = b"aaaaaaaaaaaaaaaa\r\nb\r\n";
        for chunk in 1..=input.len() {
            assert_eq!(
                lines(b"\r\n", 4, input, chunk),
                vec![None, Some(b"b".to_vec())],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn an_over_long_line_never_grows_the_buffer() {
        let mut r = LineReceiver::new(b"\n", 100);
        let mut reported = 0;
        for _ in 0..10_000 {
            r.feed(&[b'x'; 1000]);
            while let Some(l) = r.next_line() {
                assert_eq!(l, Line::TooLong);
                reported += 1;
            }
            assert!(r.buffered() <= 1000, "{}", r.buffered());
        }
        assert_eq!(reported, 1, "one report per line");
        r.feed(b"\nafter\n");
        assert_eq!(r.next_line(), Some(Line::Complete(b"after")));
    }

    #[test]
    fn raw_mode_and_back() {
        let mut r = LineReceiver::new(b"\r\n", 100);
        r.feed(b"DATA\r\nraw bytes\r\n.\r\nNOOP\r\n");
        assert_eq!(r.next_line(), Some(Line::Complete(b"DATA")));
        r.set_raw_mode();
        assert_eq!(r.next_line(), None);
        let raw = r.raw();
        let end = raw.windows(5).position(|w| w == b"\r\n.\r\n").unwrap() + 5;
        assert_eq!(&raw[..end], b"raw bytes\r\n.\r\n");
        r.consume(end);
        r.set_line_mode();
        assert_eq!(r.next_line(), Some(Line::Complete(b"NOOP")));
        assert_eq!(r.next_line(), None);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn many_short_lines_cost_linear_time() {
        // 4 MiB of 2-byte lines in one piece: with a drain per line this moves ~4 TiB.
        let input = b"x\n".repeat(2 << 20);
        let mut r = LineReceiver::new(b"\n", 10);
        r.feed(&input);
        let started = std::time::Instant::now();
        let mut n = 0;
        while let Some(Line::Complete(_)) = r.next_line() {
            n += 1;
        }
        assert_eq!(n, 2 << 20);
        // Generous even for a debug build on a loaded machine; quadratic would take hours.
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn the_buffer_compacts_without_moving_per_line() {
        let mut b = InputBuffer::new();
        let mut model = std::collections::VecDeque::new();
        for i in 0..100_000u32 {
            let line = format!("{i}\n").into_bytes();
            b.feed(&line);
            model.extend(line);
            if i % 3 == 0 {
                let n = b
                    .peek()
                    .iter()
                    .position(|c| *c == b'\n')
                    .map_or(0, |p| p + 1);
                b.consume(n);
                model.drain(..n);
            }
            assert!(
                b.buf.len() <= 2 * b.len() + 4096 + 16,
                "consumed prefix compacted"
            );
        }
        assert!(
            b.peek() == model.make_contiguous(),
            "the same bytes, in order"
        );
    }
}
