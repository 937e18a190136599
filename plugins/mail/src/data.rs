//! The SMTP DATA phase, sans-IO: message bytes in, the message as stored and its end out.
//!
//! The end of the data is `CRLF . CRLF` and nothing else: a `.` line ends it only when the
//! line before it (or the DATA command itself) ended with CRLF and so does the `.` line.
//! `\n.\n`, `\r\n.\n` and `\n.\r\n` are message content, so a client cannot hide a second
//! message with another envelope inside one DATA (SMTP smuggling, CVE-2023-51766 and kin).
//! A line ending in a bare LF is taken as a line end, as postfix's default
//! `smtpd_forbid_bare_newline = normalize` does; a bare CR inside a line is content. Messages
//! are stored with LF line ends; the size is counted as transmitted, every line with its
//! CRLF (RFC 1870), after dot-unstuffing. The buffer that holds them is taken from the
//! process's budget (`crate::memory`) as it grows; past it the rest is read and thrown away.

use crate::memory::Reservation;

/// The longest message line taken, before its CRLF: twistd's (its SMTP is a
/// `LineOnlyReceiver`, `MAX_LENGTH` 16384). RFC 5321 4.5.3.1.6 says 1000 octets with the
/// CRLF, but HTML mailers send longer lines, and postfix takes any length: refusing them
/// bounces mail twistd and postfix deliver.
pub const MAX_TEXT: usize = 16_384;
/// [`MAX_TEXT`] and the CRLF.
pub const MAX_LINE: usize = MAX_TEXT + 2;

/// How a DATA transfer ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The whole message, LF line ends, dot-unstuffed.
    Message(Vec<u8>),
    /// Over the size limit (552).
    TooBig,
    /// A line over [`MAX_TEXT`] octets before its CRLF (500).
    LongLine,
    /// The process's budget for message data could not hold it (452).
    NoStorage,
}

/// Reads one DATA transfer.
#[derive(Debug)]
pub struct DataReader {
    max_size: usize,
    /// The last line ended with CRLF (the DATA command's own line counts as one).
    prev_crlf: bool,
    /// Inside a line over the limit: its bytes are skipped up to its LF.
    skipping: bool,
    /// The last skipped byte was a CR (the over-long line may end in CRLF).
    skipped_cr: bool,
    long_line: bool,
    too_big: bool,
    /// The budget ran out: the rest is read and thrown away.
    no_storage: bool,
    /// Some line ended in a bare LF.
    pub bare_lf: bool,
    /// Octets as transmitted: every line with its CRLF, after unstuffing.
    wire: usize,
    /// Octets the message takes stored (LF line ends), counted even once it is not kept: one
    /// larger than the whole budget can never fit, and its refusal is permanent.
    stored: usize,
    data: Vec<u8>,
    /// The budget's octets for `data`: its capacity, not its length.
    memory: Reservation,
}

impl DataReader {
    /// A reader for messages of at most `max_size` octets; `after_crlf` says whether the DATA
    /// command line ended with CRLF.
    pub fn new(max_size: usize, after_crlf: bool) -> Self {
        DataReader {
            max_size,
            prev_crlf: after_crlf,
            skipping: false,
            skipped_cr: false,
            long_line: false,
            too_big: false,
            no_storage: false,
            bare_lf: false,
            wire: 0,
            stored: 0,
            data: Vec::new(),
            memory: Reservation::default(),
        }
    }

    /// Takes the buffer's octets from `memory` (without it, they are counted nowhere).
    pub fn with_memory(mut self, memory: Reservation) -> Self {
        self.memory = memory;
        self
    }

    /// The reservation of the message returned by the outcome, for the delivery to hold.
    pub fn take_memory(&mut self) -> Reservation {
        std::mem::take(&mut self.memory)
    }

    /// The message will not be stored: its octets go back now, not at the end of DATA.
    fn drop_data(&mut self) {
        self.data = Vec::new();
        self.memory.release();
    }

    /// Octets received so far, as transmitted.
    pub fn size(&self) -> usize {
        self.wire
    }

    /// Takes what it can from `input`: how many bytes it used, and the outcome once the end
    /// of the data was in them. Bytes after the end are left for the command phase; a partial
    /// line is left in `input` (at most [`MAX_LINE`] bytes) until its LF arrives.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Outcome>) {
        let mut used = 0;
        while used < input.len() {
            let rest = &input[used..];
            let lf = memchr::memchr(b'\n', rest);
            if self.skipping {
                match lf {
                    Some(i) => {
                        let cr = if i > 0 {
                            rest[i - 1] == b'\r'
                        } else {
                            self.skipped_cr
                        };
                        self.skipping = false;
                        self.prev_crlf = cr;
                        used += i + 1;
                    }
                    None => {
                        self.skipped_cr = rest.last() == Some(&b'\r');
                        used += rest.len();
                    }
                }
                continue;
            }
            let Some(i) = lf else {
                if rest.len() >= MAX_LINE {
                    // No LF within the limit: the line is too long whatever follows.
                    self.long_line = true;
                    self.drop_data();
                    self.skipping = true;
                    self.skipped_cr = rest.last() == Some(&b'\r');
                    used += rest.len();
                }
                break;
            };
            used += i + 1;
            if self.line(&rest[..i]) {
                return (used, Some(self.finish()));
            }
        }
        (used, None)
    }

    /// One line without its LF; true if it is the end of the data.
    fn line(&mut self, line: &[u8]) -> bool {
        let crlf = line.last() == Some(&b'\r');
        let text = if crlf { &line[..line.len() - 1] } else { line };
        if text == b"." && crlf && self.prev_crlf {
            return true;
        }
        self.prev_crlf = crlf;
        if !crlf {
            self.bare_lf = true;
        }
        if line.len() + 1 > MAX_LINE {
            self.long_line = true;
            self.drop_data();
            return false;
        }
        // A leading dot is transparency (RFC 5321 4.5.2); a lone "." that did not end the
        // data (its line or the one before ended in a bare LF) is kept as it is.
        let content = match text.split_first() {
            Some((b'.', tail)) if !tail.is_empty() => tail,
            _ => text,
        };
        self.wire += content.len() + 2;
        self.stored += content.len() + 1;
        if self.wire > self.max_size && !self.too_big {
            self.too_big = true;
            self.drop_data();
        }
        if !self.too_big && !self.long_line && !self.no_storage {
            if self.make_room(content.len() + 1) {
                self.data.extend_from_slice(content);
                self.data.push(b'\n');
            } else {
                self.no_storage = true;
                self.drop_data();
            }
        }
        false
    }

    /// Makes room for `n` more octets, taking the buffer's whole capacity from the budget,
    /// not just its length: a growing buffer holds up to twice what it has read. It doubles
    /// as a `Vec` would (so a message costs a logarithmic number of copies), never past the
    /// size limit, and only as far as it needs when doubling would not fit the budget.
    fn make_room(&mut self, n: usize) -> bool {
        let need = self.data.len() + n;
        let cap = self.data.capacity();
        if need <= cap {
            return true;
        }
        let doubled = cap.saturating_mul(2).min(self.max_size).max(need);
        let target = if self.memory.try_grow(doubled - cap) {
            doubled
        } else if doubled > need && self.memory.try_grow(need - cap) {
            need
        } else {
            return false;
        };
        self.data.reserve_exact(target - self.data.len());
        // The allocator may hand out more than was asked: counted whatever the limit, as it
        // is held.
        self.memory
            .grow(self.data.capacity().saturating_sub(target));
        true
    }

    fn finish(&mut self) -> Outcome {
        // Past the whole budget it would never fit, however often the client retried: as
        // permanent as past --max-message-size.
        if self.too_big || (self.no_storage && self.memory.limit().is_some_and(|l| self.stored > l))
        {
            Outcome::TooBig
        } else if self.long_line {
            Outcome::LongLine
        } else if self.no_storage {
            // Temporary, so it comes after the permanent refusals: a retry would meet them.
            Outcome::NoStorage
        } else {
            Outcome::Message(std::mem::take(&mut self.data))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in `chunk`-byte pieces as a session would (unused bytes stay buffered);
    /// the outcome and what is left buffered after the end.
    fn read(input: &[u8], chunk: usize, max: usize) -> (Option<Outcome>, Vec<u8>) {
        let mut r = DataReader::new(max, true);
        let mut buf: Vec<u8> = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            let (used, out) = r.feed(&buf);
            buf.drain(..used);
            if out.is_some() {
                return (out, buf);
            }
        }
        (None, buf)
    }

    fn message(m: &[u8]) -> Option<Outcome> {
        Some(Outcome::Message(m.to_vec()))
    }

    #[test]
    fn only_crlf_dot_crlf_ends_the_data_in_every_chunking() {
        let cases: &[(&[u8], Option<Outcome>)] = &[
            (b"a\r\n..b\r\n.\r\n", message(b"a\n.b\n")),
            // The smuggling variants are content; the real end comes after them.
            (
                b"one\n.\nMAIL FROM:<x@evil>\r\n.\r\n",
                message(b"one\n.\nMAIL FROM:<x@evil>\n"),
            ),
            (b"one\r\n.\nRCPT\r\n.\r\n", message(b"one\n.\nRCPT\n")),
            (b"one\n.\r\nDATA\r\n.\r\n", message(b"one\n.\nDATA\n")),
            // A bare CR is neither a line end nor an end of data.
            (b"x\r.\r\ny\r\n.\r\n", message(b"x\r.\ny\n")),
            // Nothing but the end.
            (b".\r\n", message(b"")),
        ];
        for (input, want) in cases {
            for chunk in 1..=input.len() {
                let (out, _) = read(input, chunk, 1000);
                assert_eq!(
                    &out,
                    want,
                    "{:?} chunk {chunk}",
                    String::from_utf8_lossy(input)
                );
            }
        }
        // Without the end, nothing ends.
        for input in [
            &b"a\n.\n"[..],
            b"a\r\n.\n",
            b"a\n.\r\n",
            b"a\r\n.",
            b"a\r\n.\r",
        ] {
            assert_eq!(read(input, 1, 1000).0, None, "{input:?}");
        }
    }

    #[test]
    fn past_the_memory_budget_the_rest_is_read_and_refused_in_every_chunking() {
        use crate::memory::{DataMemory, Reservation};
        let input = b"12345678\r\n12345678\r\n12345678\r\n.\r\nNOOP\r\n";
        // The message takes 27 octets stored. Beside another session's 14 of a budget of 40 it
        // does not fit now (452, a retry may); past a budget of 26 it never can (552).
        let refused = Some(Outcome::NoStorage);
        let never = Some(Outcome::TooBig);
        for (budget, other, fits, refusal) in [
            (27, 0, true, None),
            (40, 14, false, refused),
            (26, 0, false, never),
        ] {
            let pool = DataMemory::new(budget);
            let mut held = Reservation::new(&pool);
            assert!(held.try_grow(other));
            for chunk in 1..=input.len() {
                let mut r = DataReader::new(1000, true).with_memory(Reservation::new(&pool));
                let mut buf: Vec<u8> = Vec::new();
                let mut out = None;
                for piece in input.chunks(chunk) {
                    buf.extend_from_slice(piece);
                    let (used, end) = r.feed(&buf);
                    buf.drain(..used);
                    if end.is_some() {
                        out = end;
                        break;
                    }
                }
                assert!(b"NOOP\r\n".starts_with(&buf), "read to the end: {buf:?}");
                if fits {
                    assert_eq!(out, message(b"12345678\n".repeat(3).as_slice()));
                    let memory = r.take_memory();
                    assert_eq!((memory.bytes(), pool.used()), (27, 27));
                    drop(memory);
                } else {
                    assert_eq!(out, refusal, "budget {budget}, chunk {chunk}");
                    assert_eq!(pool.used(), other, "given back as soon as it is refused");
                }
                drop(r);
                assert_eq!(pool.used(), other);
            }
        }
        // Too big and over the budget: 552, permanent, not 452.
        let pool = DataMemory::new(5);
        let mut r = DataReader::new(15, true).with_memory(Reservation::new(&pool));
        assert_eq!(r.feed(input).1, Some(Outcome::TooBig));
    }

    #[test]
    fn the_budget_counts_the_buffer_doubling_within_the_size_limit_and_the_budget() {
        use crate::memory::{DataMemory, Reservation};
        // Six lines of 10 octets stored (11 on the wire).
        let mut input = b"123456789\r\n".repeat(6);
        input.extend_from_slice(b".\r\n");
        // (size limit, budget, the buffer after each line)
        for (max, budget, caps) in [
            (1000, 1000, [10, 20, 40, 40, 80, 80]),
            // Doubling stops at the size limit: a message never holds more than it may be.
            (66, 1000, [10, 20, 40, 40, 66, 66]),
            // Near the budget it grows only as far as it needs.
            (1000, 60, [10, 20, 40, 40, 50, 60]),
        ] {
            for chunk in [1, 7, 11] {
                let pool = DataMemory::new(budget);
                let mut r = DataReader::new(max, true).with_memory(Reservation::new(&pool));
                let mut buf: Vec<u8> = Vec::new();
                let mut seen = Vec::new();
                let mut out = None;
                for piece in input.chunks(chunk) {
                    buf.extend_from_slice(piece);
                    let (used, end) = r.feed(&buf);
                    buf.drain(..used);
                    assert_eq!(pool.used(), r.memory.bytes());
                    if end.is_none() {
                        assert_eq!(r.memory.bytes(), r.data.capacity(), "the whole buffer");
                    }
                    if seen.last() != Some(&r.data.capacity()) && r.data.capacity() > 0 {
                        seen.push(r.data.capacity());
                    }
                    if end.is_some() {
                        out = end;
                        break;
                    }
                }
                let Some(Outcome::Message(m)) = out else {
                    panic!("{max} {budget} chunk {chunk}: {out:?}")
                };
                assert_eq!(m.len(), 60);
                if seen.last() != Some(&m.capacity()) {
                    seen.push(m.capacity());
                }
                let mut want = caps.to_vec();
                want.dedup();
                assert_eq!(seen, want, "{max} {budget} chunk {chunk}");
                assert_eq!(
                    (r.memory.bytes(), pool.used()),
                    (m.capacity(), m.capacity())
                );
            }
        }
    }

    #[test]
    fn the_data_command_line_must_end_in_crlf_too() {
        let mut r = DataReader::new(1000, false);
        assert_eq!(
            r.feed(b".\r\n"),
            (3, None),
            "after DATA\\n, .CRLF is content"
        );
        assert_eq!(
            r.feed(b"x\r\n.\r\n"),
            (6, Some(Outcome::Message(b".\nx\n".to_vec())))
        );
    }

    #[test]
    fn bytes_after_the_end_are_left_for_the_commands() {
        let input = b"hi\r\n.\r\nQUIT\r\n";
        let mut r = DataReader::new(1000, true);
        let (used, out) = r.feed(input);
        assert_eq!(out, message(b"hi\n"));
        assert_eq!(&input[used..], b"QUIT\r\n");
    }

    #[test]
    fn size_is_counted_as_transmitted() {
        // Ten lines of 7 octets and an empty one: 81 stored with LF, 92 on the wire.
        let mut input = b"1234567\n".repeat(10);
        input.extend_from_slice(b"\r\n.\r\n");
        for chunk in [1, 5, input.len()] {
            let fits = read(&input, chunk, 92).0;
            assert!(
                matches!(&fits, Some(Outcome::Message(m)) if m.len() == 81),
                "{fits:?}"
            );
            assert_eq!(
                read(&input, chunk, 91).0,
                Some(Outcome::TooBig),
                "chunk {chunk}"
            );
        }
        let mut r = DataReader::new(1000, true);
        r.feed(b"1234567\r\n..x\r\n");
        assert_eq!(r.size(), 9 + 4, "CRLF counted, the stuffing dot not");
    }

    #[test]
    fn over_long_lines_refuse_the_message_and_keep_the_framing() {
        let long = vec![b'y'; 20_000];
        for end in [&b"\r\n"[..], b"\n"] {
            let mut input = long.clone();
            input.extend_from_slice(end);
            input.extend_from_slice(b"ok\r\n.\r\nNOOP\r\n");
            for chunk in [1, 3, 999, 1000, 1001, 4096, MAX_LINE, input.len()] {
                let (out, rest) = read(&input, chunk, 1 << 20);
                assert_eq!(out, Some(Outcome::LongLine), "chunk {chunk}");
                assert!(b"NOOP\r\n".starts_with(&rest), "chunk {chunk}: {rest:?}");
            }
        }
        // An over-long line ending in a bare LF does not make the next ".CRLF" an end.
        let mut input = long.clone();
        input.extend_from_slice(b"\n.\r\nz\r\n.\r\n");
        let mut r = DataReader::new(1 << 20, true);
        let (used, out) = r.feed(&input);
        assert_eq!(out, Some(Outcome::LongLine));
        assert_eq!(
            used,
            input.len(),
            "the end is the last line, not the first dot"
        );
        // Exactly MAX_TEXT octets and the CRLF is allowed (and kept whole), as twistd takes
        // it; one more is not. Before, the limit was RFC 5321's 1000 with the CRLF.
        let mut ok = vec![b'a'; MAX_TEXT];
        ok.extend_from_slice(b"\r\n.\r\n");
        match DataReader::new(1 << 20, true).feed(&ok).1 {
            Some(Outcome::Message(m)) => assert_eq!(m.len(), MAX_TEXT + 1, "the line and its LF"),
            other => panic!("{other:?}"),
        }
        let mut bad = vec![b'a'; MAX_TEXT + 1];
        bad.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(
            DataReader::new(1 << 20, true).feed(&bad).1,
            Some(Outcome::LongLine)
        );
    }
}
