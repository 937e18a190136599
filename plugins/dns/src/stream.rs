//! DNS over TCP (RFC 1035 4.2.2, RFC 7766): each message behind a two-byte length.

use twistrs_core::line::InputBuffer;

/// What the input holds next.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message (its length prefix consumed).
    Message(Vec<u8>),
    /// Not all of it yet.
    Partial,
    /// A message announced longer than the limit: the stream cannot go on.
    TooLong(usize),
}

/// Takes the next message off `buf`, if it is all there.
pub fn next(buf: &mut InputBuffer, max: usize) -> Frame {
    let b = buf.peek();
    let Some(len) = b
        .get(..2)
        .map(|l| u16::from_be_bytes([l[0], l[1]]) as usize)
    else {
        return Frame::Partial;
    };
    if len > max {
        return Frame::TooLong(len);
    }
    let Some(msg) = b.get(2..2 + len) else {
        return Frame::Partial;
    };
    let msg = msg.to_vec();
    buf.consume(2 + len);
    buf.release_if_empty();
    Frame::Message(msg)
}

/// `msg` with its length in front (a message is at most 65535 bytes: `message` builds
/// none longer).
pub fn frame(msg: &[u8]) -> Vec<u8> {
    let len = u16::try_from(msg.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&msg[..len as usize]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_in_any_chunking() {
        let mut wire = frame(b"first");
        wire.extend(frame(b""));
        wire.extend(frame(b"third message"));
        for chunk in 1..wire.len() {
            let mut buf = InputBuffer::new();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.feed(piece);
                while let Frame::Message(m) = next(&mut buf, 100) {
                    got.push(m);
                }
            }
            assert_eq!(
                got,
                [b"first".to_vec(), Vec::new(), b"third message".to_vec()]
            );
        }
        let mut buf = InputBuffer::new();
        buf.feed(&[0x10, 0x00]);
        assert_eq!(next(&mut buf, 512), Frame::TooLong(4096));
    }
}
