//! Access log lines held until their response has left, so the line records the bytes that
//! reached the peer and a response cut short can be told from one that was delivered.

use std::collections::VecDeque;

/// A response written to the transport whose access log line waits for its last byte to
/// leave.
#[derive(Debug)]
pub struct Pending {
    /// The request line as the log shows it.
    pub line: String,
    pub status: u16,
    /// Body bytes of the response (what the access log counts).
    pub body: u64,
    /// The connection's `bytes_written` once the response was written: it has wholly left
    /// when `bytes_sent` reaches this.
    pub end: u64,
    /// As they came, in bytes (the access log escapes each).
    pub referer: Option<Vec<u8>>,
    pub agent: Option<Vec<u8>>,
    /// When the request was taken up: the access log's duration runs to its last byte.
    pub start: std::time::Instant,
}

impl Pending {
    /// Body bytes that had left once `sent` bytes of the connection had.
    pub fn body_sent(&self, sent: u64) -> u64 {
        let start = self.end.saturating_sub(self.body);
        sent.saturating_sub(start).min(self.body)
    }
}

/// One connection's responses written but not yet wholly sent, oldest first. The oldest lives
/// inline: the usual response, which leaves before the next request, costs no allocation;
/// pipelined responses wait behind it in a queue.
#[derive(Debug, Default)]
pub struct Outstanding {
    first: Option<Pending>,
    rest: VecDeque<Pending>,
    /// Bytes the waiting lines hold, so a client that never reads cannot make them grow
    /// without bound.
    held: usize,
}

impl Pending {
    /// The memory this line holds.
    fn size(&self) -> usize {
        std::mem::size_of::<Pending>()
            + self.line.capacity()
            + self.referer.as_ref().map_or(0, Vec::capacity)
            + self.agent.as_ref().map_or(0, Vec::capacity)
    }
}

impl Outstanding {
    pub fn held(&self) -> usize {
        self.held
    }

    /// Responses waiting (tests count them).
    #[cfg(test)]
    pub fn count(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    pub fn push(&mut self, p: Pending) {
        self.held += p.size();
        if self.first.is_none() {
            self.first = Some(p);
        } else {
            self.rest.push_back(p);
        }
    }

    /// The oldest response, if all of it had left once `sent` bytes of the connection had.
    pub fn pop_sent(&mut self, sent: u64) -> Option<Pending> {
        if self.first.as_ref()?.end > sent {
            return None;
        }
        self.pop()
    }

    /// The oldest response, sent or not.
    pub fn pop(&mut self) -> Option<Pending> {
        let p = self.first.take()?;
        self.held -= p.size();
        self.first = self.rest.pop_front();
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(line: &str, body: u64, end: u64) -> Pending {
        Pending {
            start: std::time::Instant::now(),
            line: line.into(),
            status: 200,
            body,
            end,
            referer: None,
            agent: None,
        }
    }

    #[test]
    fn responses_come_out_in_order_once_sent() {
        let mut o = Outstanding::default();
        o.push(pending("a", 10, 100));
        o.push(pending("b", 0, 150));
        o.push(pending("c", 50, 300));
        assert!(o.held() > 3 * std::mem::size_of::<Pending>());
        assert!(o.pop_sent(99).is_none(), "a has one byte to go");
        assert_eq!(o.pop_sent(160).map(|p| p.line), Some("a".into()));
        assert_eq!(o.pop_sent(160).map(|p| p.line), Some("b".into()));
        assert!(o.pop_sent(160).is_none());
        assert_eq!(
            o.pop().map(|p| p.line),
            Some("c".into()),
            "taken unsent at a close"
        );
        assert!(o.pop().is_none());
        assert_eq!(o.held(), 0);
    }

    #[test]
    fn body_bytes_sent_count_from_the_body_start() {
        // A 90-byte head at 0..90, a 1000-byte body at 90..1090.
        let p = pending("x", 1000, 1090);
        assert_eq!(p.body_sent(50), 0, "inside the head");
        assert_eq!(p.body_sent(590), 500);
        assert_eq!(p.body_sent(5000), 1000, "never more than the body");
    }
}
