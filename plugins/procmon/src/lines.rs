//! A child's output as log lines: split at newlines, with a bound on a line's length.
//!
//! Sans-IO: bytes go in as they arrive, lines come out through a closure. A line longer than
//! the bound is cut into pieces of the bound's size, as journald's `LineMax` does, so a child
//! that writes without ever ending a line costs at most the bound in memory and loses nothing.

/// Twisted's `LineReceiver.MAX_LENGTH`.
pub const MAX_LINE: usize = 16 * 1024;

/// The unfinished line of one stream.
#[derive(Debug)]
pub struct Lines {
    buf: Vec<u8>,
    max: usize,
}

impl Lines {
    /// Lines of at most `max` bytes (at least 1).
    pub fn new(max: usize) -> Self {
        Lines {
            buf: Vec::new(),
            max: max.max(1),
        }
    }

    /// Takes `data`; calls `emit` with each finished line (without its newline) and with each
    /// `max`-byte piece of a longer one.
    pub fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8])) {
        while !data.is_empty() {
            let room = self.max - self.buf.len();
            // One byte past the room: a newline right after a full line ends that line.
            let window = &data[..data.len().min(room + 1)];
            if let Some(i) = memchr::memchr(b'\n', window) {
                if self.buf.is_empty() {
                    emit(&data[..i]);
                } else {
                    self.buf.extend_from_slice(&data[..i]);
                    emit(&self.buf);
                    self.buf.clear();
                }
                data = &data[i + 1..];
            } else if data.len() > room {
                self.buf.extend_from_slice(&data[..room]);
                emit(&self.buf);
                self.buf.clear();
                data = &data[room..];
            } else {
                self.buf.extend_from_slice(data);
                break;
            }
        }
        if self.buf.is_empty() && self.buf.capacity() > self.max {
            self.buf = Vec::new();
        }
    }

    /// The stream ended: a last line without its newline is still a line.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.buf.is_empty() {
            emit(&self.buf);
        }
        self.buf = Vec::new();
    }

    /// Bytes held for an unfinished line.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// A line as text for the log: UTF-8 as it is, other bytes as `\xNN`, and control
/// characters but the tab escaped too (`\x00`, `\x1b`, `\u{9b}`): a NUL would make the log
/// a binary file to grep, and escape sequences would be played by the terminal that shows
/// it. A CR before the newline is part of a CRLF line end, and left out.
pub fn text(line: &[u8]) -> String {
    use std::fmt::Write;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut s = String::with_capacity(line.len());
    for chunk in line.utf8_chunks() {
        let valid = chunk.valid();
        // 0xc2 leads U+0080..U+00BF, which holds the C1 controls.
        if valid
            .bytes()
            .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f || b == 0xc2)
        {
            for c in valid.chars() {
                match c {
                    '\t' => s.push(c),
                    c if c.is_ascii_control() => {
                        let _ = write!(s, "\\x{:02x}", c as u32);
                    }
                    c if c.is_control() => {
                        let _ = write!(s, "\\u{{{:x}}}", c as u32);
                    }
                    c => s.push(c),
                }
            }
        } else {
            s.push_str(valid);
        }
        for b in chunk.invalid() {
            // Into the line itself: no String per byte.
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(chunks: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, usize) {
        let mut l = Lines::new(max);
        let mut out = Vec::new();
        let mut peak = 0;
        for c in chunks {
            l.feed(c, |line| out.push(line.to_vec()));
            peak = peak.max(l.pending());
        }
        l.finish(|line| out.push(line.to_vec()));
        (out, peak)
    }

    #[test]
    fn lines_pieces_and_a_last_line_without_newline() {
        let (out, _) = split(&[b"one\ntw", b"o\n\nthree"], 16);
        assert_eq!(out, [&b"one"[..], b"two", b"", b"three"]);
        // A line of exactly the bound is one line; one byte more makes two pieces.
        let (out, _) = split(&[b"abcd\nabcde\n"], 4);
        assert_eq!(out, [&b"abcd"[..], b"abcd", b"e"]);
        let (out, _) = split(&[b"ab", b"cd", b"\n"], 4);
        assert_eq!(out, [&b"abcd"[..]]);
    }

    #[test]
    fn an_endless_line_is_held_to_the_bound() {
        let chunk = vec![b'x'; 7000];
        let chunks: Vec<&[u8]> = (0..100).map(|_| chunk.as_slice()).collect();
        let (out, peak) = split(&chunks, MAX_LINE);
        assert!(peak <= MAX_LINE, "{peak}");
        assert_eq!(out.iter().map(Vec::len).sum::<usize>(), 700_000);
        assert!(out.iter().all(|l| l.len() <= MAX_LINE));
    }

    #[test]
    fn text_keeps_utf8_and_shows_other_bytes() {
        assert_eq!(text("héllo".as_bytes()), "héllo");
        assert_eq!(text(b"a\xffb"), "a\\xffb");
    }

    /// Found comparing the logs of twistd procmon and twistrs procmon: a NUL, an escape
    /// sequence or a bell went into the log as they were (twistd's too, for a UTF-8 line).
    #[test]
    fn text_escapes_control_characters_but_the_tab() {
        assert_eq!(
            text(b"nul\x00 esc\x1b[31mred bel\x07 del\x7f\ttab"),
            "nul\\x00 esc\\x1b[31mred bel\\x07 del\\x7f\ttab"
        );
        assert_eq!(text("c1 \u{9b}31m °C".as_bytes()), "c1 \\u{9b}31m °C");
        assert_eq!(text(b"cr\rinside"), "cr\\x0dinside");
        assert_eq!(text(b"crlf\r"), "crlf", "a CRLF line end is a line end");
    }

    proptest! {
        /// However the output is cut into reads, the lines are the same, and joined again
        /// (pieces without, lines with their newline) they are the output.
        #[test]
        fn chunking_changes_nothing(data in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'a'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..10),
            max in 1usize..40) {
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c <= data.len()).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts { chunks.push(&data[at..c]); at = c; }
            chunks.push(&data[at..]);
            let (whole, _) = split(&[&data], max);
            let (pieces, peak) = split(&chunks, max);
            prop_assert_eq!(&whole, &pieces);
            prop_assert!(peak <= max);
            prop_assert!(pieces.iter().all(|l| l.len() <= max));
            let joined: usize = pieces.iter().map(Vec::len).sum::<usize>()
                + data.iter().filter(|b| **b == b'\n').count();
            prop_assert_eq!(joined, data.len());
        }
    }
}
