//! The relay's logic on string transports: the same connection code as in the reactor.

use std::io;
use std::time::Duration;

use super::*;
use crate::client::ConnectError;
use crate::testing::RelayHarness;

/// Asks for a relay as soon as it is connected; writes `reply` to the client once joined.
#[derive(Default)]
struct Forwarder {
    forward: Vec<u8>,
    reply: Vec<u8>,
    idle: Option<Duration>,
    /// Bytes that reached the protocol: only what came before the request.
    seen: Vec<u8>,
    failed: Option<String>,
    connected_to: Option<Address>,
}

impl Protocol for Forwarder {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.connect_relay(
            RelayRequest::new(Destination::tcp("192.0.2.7", 6665))
                .forward(std::mem::take(&mut self.forward))
                .idle_timeout(self.idle),
        );
    }
    fn data_received(&mut self, _t: &mut Transport<'_>, data: &[u8]) {
        self.seen.extend_from_slice(data);
    }
    fn relay_connected(&mut self, t: &mut Transport<'_>, out: &Outgoing) {
        self.connected_to = Some(out.peer.clone());
        t.write(&self.reply);
    }
    fn relay_connection_failed(&mut self, t: &mut Transport<'_>, e: &ConnectError) {
        self.failed = Some(e.to_string());
        t.lose_connection();
    }
}

fn joined(fwd: Forwarder) -> RelayHarness<Forwarder> {
    let mut h = RelayHarness::new(fwd);
    h.connect();
    assert!(h.relay_request().is_some(), "asked for a relay");
    h.connected();
    h
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn forwarded_bytes_and_the_reply_go_first_then_both_ways() {
    let mut h = RelayHarness::new(Forwarder {
        forward: b"past the request|".to_vec(),
        reply: b"REPLY|".to_vec(),
        ..Default::default()
    });
    h.connect();
    let req = h.relay_request().expect("a request");
    assert_eq!(req.dest, Destination::tcp("192.0.2.7", 6665));
    assert_eq!(req.connect_timeout, CONNECT_TIMEOUT);
    // What the client sends while the connection is made waits, unread.
    h.feed(b"early|");
    assert!(
        h.reading_paused() && h.unread() == 6,
        "not read before the join"
    );
    h.dest_feed(b"banner|");
    h.connected();
    assert_eq!(
        h.proto
            .connected_to
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("192.0.2.7:6665")
    );
    assert_eq!(h.dest_take_output(), b"past the request|early|");
    h.dest_feed(b"banner|");
    assert_eq!(
        h.take_output(),
        b"REPLY|banner|",
        "the reply before the destination's bytes"
    );
    // The destination reads nothing between the pieces: each waits in its output, and the
    // harness would panic if that made the relay spin.
    for chunk in 1..=7 {
        let data = pattern(1000, chunk as u8);
        h.feed_chunked(&data, chunk);
        assert_eq!(
            h.dest_take_output(),
            data,
            "to the destination in {chunk}-byte pieces"
        );
        h.dest_feed(&data);
        assert_eq!(h.take_output(), data, "back to the client");
    }
    assert!(
        h.proto.seen.is_empty(),
        "no byte of the relay passed through the protocol"
    );
    assert!(h.lost().is_none() && h.dest_lost().is_none());
}

#[test]
fn a_destination_that_does_not_read_stops_the_client_being_read() {
    let mut h = joined(Forwarder::default());
    let data = pattern(4 << 20, 1);
    h.feed(&data);
    assert!(h.reading_paused(), "the client is no longer read");
    let queued = h.dest_buffered();
    assert!(
        (64 << 10..=128 << 10).contains(&queued),
        "the high-water mark plus one read at most: {queued}"
    );
    assert!(
        h.unread() >= data.len() - (128 << 10),
        "the rest waits with the client"
    );
    // The destination reads: everything arrives, intact and in order.
    assert_eq!(h.dest_take_output(), data);
    assert!(!h.reading_paused() && h.unread() == 0);
}

#[test]
fn a_client_that_does_not_read_stops_the_destination_being_read() {
    let mut h = joined(Forwarder::default());
    let data = pattern(4 << 20, 2);
    h.dest_feed(&data);
    assert!(h.dest_reading_paused());
    let queued = h.buffered();
    assert!((64 << 10..=128 << 10).contains(&queued), "{queued}");
    // One direction backed up does not hold the other back.
    h.feed(b"still flowing");
    assert_eq!(h.dest_take_output(), b"still flowing");
    assert_eq!(h.take_output(), data);
}

#[test]
fn a_half_close_is_carried_through_and_the_reply_still_flows_back() {
    let mut h = joined(Forwarder::default());
    h.feed(b"request").eof();
    assert_eq!(h.dest_take_output(), b"request");
    assert!(h.dest_write_closed(), "the destination got the FIN");
    assert!(
        !h.write_closed() && h.lost().is_none(),
        "the client's side stays open"
    );
    h.dest_feed(b"the reply, ");
    h.dest_feed(b"in two parts");
    assert_eq!(h.take_output(), b"the reply, in two parts");
    h.dest_eof();
    assert!(
        h.write_closed(),
        "then the destination's FIN reaches the client"
    );
    assert!(h.lost().is_some_and(Reason::is_clean));
    assert!(h.dest_lost().is_some_and(Reason::is_clean));
    let end = h.ended().expect("ended");
    assert_eq!((end.to_dest, end.to_client), (7, 23));
    assert!(end.clean, "{end:?}");
    assert_eq!(end.system, "Test,0,127.0.0.1", "the client's log system");
}

#[test]
fn the_other_way_round_the_client_keeps_sending_after_the_destination_closed_its_side() {
    let mut h = joined(Forwarder::default());
    h.dest_feed(b"greeting").dest_eof();
    assert_eq!(h.take_output(), b"greeting");
    assert!(h.write_closed());
    h.feed(b"more from the client");
    assert_eq!(h.dest_take_output(), b"more from the client");
    h.eof();
    assert!(h.dest_write_closed());
    assert!(h.lost().is_some() && h.dest_lost().is_some());
    assert_eq!(h.ended().map(|e| e.to_dest), Some(20));
}

#[test]
fn a_reset_on_either_side_closes_both() {
    let mut h = joined(Forwarder::default());
    h.dest_feed(&pattern(300_000, 3));
    h.reset();
    assert!(matches!(h.lost(), Some(Reason::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset));
    assert!(matches!(h.dest_lost(), Some(Reason::Aborted)));
    let end = h.ended().expect("ended");
    assert_eq!(end.ended_by, Side::Client);
    assert!(!end.clean);
    assert_eq!(end.ending, Ending::Closed);
    assert!(
        end.why()
            .starts_with("the client closed first: Connection was lost: "),
        "{}",
        end.why()
    );

    let mut h = joined(Forwarder::default());
    h.feed(b"unsent");
    h.dest_reset();
    assert!(matches!(h.dest_lost(), Some(Reason::Io(_))));
    assert!(
        matches!(h.lost(), Some(Reason::Aborted)),
        "aborted, not lingering"
    );
    assert_eq!(h.ended().map(|e| e.ended_by), Some(Side::Dest));
}

#[test]
fn a_clean_close_of_one_side_lets_the_other_flush_first() {
    /// Closes its client a second after the join (a protocol's own decision).
    struct Closer;
    impl Protocol for Closer {
        fn connection_made(&mut self, t: &mut Transport<'_>) {
            t.connect_relay(RelayRequest::new(Destination::tcp("192.0.2.1", 1)));
        }
        fn data_received(&mut self, _t: &mut Transport<'_>, _d: &[u8]) {}
        fn relay_connected(&mut self, t: &mut Transport<'_>, _out: &Outgoing) {
            t.call_later(Duration::from_secs(1), 1);
        }
        fn timer_fired(&mut self, t: &mut Transport<'_>, _key: u64) {
            t.lose_connection();
        }
    }
    let mut h = RelayHarness::new(Closer);
    h.connect();
    h.connected();
    let data = pattern(200_000, 4);
    h.feed(&data);
    assert!(h.dest_buffered() > 0, "the destination reads nothing yet");
    // What the relay read from the client by now; the rest is dropped by the client
    // side's lingering close.
    let read = data.len() - h.unread();
    h.advance(Duration::from_secs(1));
    h.take_output();
    assert!(
        h.lost().is_some_and(Reason::is_clean),
        "the client side closed"
    );
    assert!(
        h.dest_lost().is_none(),
        "the destination still has bytes to take"
    );
    let got = h.dest_take_output();
    assert!(got == data[..read], "{} of {read} bytes", got.len());
    assert!(h.dest_lost().is_some_and(Reason::is_clean));
    let end = h.ended().expect("ended");
    assert!(end.clean && end.ended_by == Side::Client, "{end:?}");
    assert_eq!(end.to_dest as usize, read);
}

#[test]
fn idle_relays_time_out_and_traffic_keeps_them_open() {
    let mut h = joined(Forwarder {
        idle: Some(Duration::from_secs(10)),
        ..Default::default()
    });
    h.advance(Duration::from_secs(8));
    h.feed(b"keep");
    h.dest_take_output();
    h.advance(Duration::from_secs(8));
    assert!(
        h.lost().is_none() && h.dest_lost().is_none(),
        "activity moved the deadline"
    );
    h.advance(Duration::from_secs(3));
    assert!(
        h.lost().is_some() && h.dest_lost().is_some(),
        "idle for 10 s: both closed"
    );
    let end = h.ended().expect("ended");
    assert!(!end.clean);
    // The relay's idle timeout closed it, not a side: the end says so.
    assert_eq!(end.ending, Ending::Idle(Duration::from_secs(10)), "{end:?}");
    assert_eq!(
        end.why(),
        "closed by the idle timeout: nothing carried either way for 10 s"
    );
}

/// A relay is idle only when neither side made progress: a destination held back by a
/// slow client (not read, sending nothing) is not idle while the client's kernel queue
/// leaves, which its own idle check now sees through its peer; once the reader stops taking
/// anything for a whole window, both close, by the idle timeout.
#[test]
fn a_side_held_back_by_backpressure_is_not_idle_while_its_peer_drains() {
    let mut h = joined(Forwarder {
        idle: Some(Duration::from_secs(10)),
        ..Default::default()
    });
    // More than the client takes: its output passes the high-water mark, the destination
    // is no longer read.
    h.dest_feed(&vec![7u8; 1 << 20]);
    assert!(
        h.read_paused(Side::Dest),
        "backpressure holds the destination"
    );
    let mut queued = 900_000;
    h.set_kernel_queue(Side::Client, queued);
    for _ in 0..4 {
        h.advance(Duration::from_secs(10));
        assert!(
            h.lost().is_none() && h.dest_lost().is_none(),
            "the client's kernel queue is leaving: not idle"
        );
        queued -= 100_000;
        h.set_kernel_queue(Side::Client, queued);
    }
    // The reader stops: the same bytes a whole window later.
    h.advance(Duration::from_secs(10));
    h.advance(Duration::from_secs(10));
    assert!(
        h.lost().is_some() && h.dest_lost().is_some(),
        "idle: both closed"
    );
    let end = h.ended().expect("ended");
    assert_eq!(end.ending, Ending::Idle(Duration::from_secs(10)), "{end:?}");
}

/// The same the other way: an upload to a destination that reads slowly holds the client
/// back, and the destination's kernel queue leaving keeps the client's check from finding
/// the relay idle.
#[test]
fn a_client_held_back_by_a_slow_destination_is_not_idle_either() {
    let mut h = joined(Forwarder {
        idle: Some(Duration::from_secs(10)),
        ..Default::default()
    });
    h.feed(&vec![9u8; 1 << 20]);
    assert!(h.reading_paused(), "backpressure holds the client");
    h.set_kernel_queue(Side::Dest, 500_000);
    h.advance(Duration::from_secs(10));
    h.set_kernel_queue(Side::Dest, 400_000);
    h.advance(Duration::from_secs(10));
    assert!(h.lost().is_none() && h.dest_lost().is_none(), "not idle");
}

#[test]
fn a_graceful_stop_leaves_relays_to_finish() {
    let mut h = joined(Forwarder::default());
    h.stop_requested();
    h.advance(Duration::from_secs(60));
    assert!(
        h.lost().is_none() && h.dest_lost().is_none(),
        "not closed by the stop"
    );
    h.feed(b"still relaying").eof();
    assert_eq!(h.dest_take_output(), b"still relaying");
    h.dest_eof();
    assert!(h.lost().is_some_and(Reason::is_clean));
}

#[test]
fn a_failed_connection_is_reported_and_closes_the_client_by_default() {
    /// Takes the default `relay_connection_failed`.
    struct Default_;
    impl Protocol for Default_ {
        fn connection_made(&mut self, t: &mut Transport<'_>) {
            t.connect_relay(RelayRequest::new(Destination::tcp("h.invalid", 1)));
        }
        fn data_received(&mut self, _t: &mut Transport<'_>, _d: &[u8]) {}
    }
    let mut h = RelayHarness::new(Default_);
    h.connect();
    h.connect_failed(ConnectError::Io(io::ErrorKind::ConnectionRefused.into()));
    h.take_output();
    assert!(
        h.lost().is_some_and(Reason::is_clean),
        "closed after its (empty) flush"
    );
    assert!(h.ended().is_none(), "no relay was joined");

    let mut h = RelayHarness::new(Forwarder::default());
    h.connect();
    h.connect_failed(ConnectError::TimedOut(Duration::from_secs(3)));
    assert_eq!(h.proto.failed.as_deref(), Some("no connection within 3 s"));
}

#[test]
fn a_second_request_is_ignored() {
    struct Twice;
    impl Protocol for Twice {
        fn connection_made(&mut self, t: &mut Transport<'_>) {
            t.connect_relay(RelayRequest::new(Destination::tcp("192.0.2.1", 1)));
            t.connect_relay(RelayRequest::new(Destination::tcp("192.0.2.2", 2)));
        }
        fn data_received(&mut self, _t: &mut Transport<'_>, _d: &[u8]) {}
    }
    let mut h = RelayHarness::new(Twice);
    h.connect();
    let mut n = 0;
    while let Some(crate::reactor::Command::ConnectRelay(r)) = h.handle().pop_command() {
        assert_eq!(r.request.dest, Destination::tcp("192.0.2.1", 1));
        n += 1;
    }
    assert_eq!(n, 1);
}
