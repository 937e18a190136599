//! One connection's life, the same code for a socket in the reactor and for the string
//! transport of [`crate::testing`]: read and hand bytes to the protocol, flush, producer flow
//! control, and the close phases of [`Phase`].
//!
//! A drive is four steps, each small: `flush` what is queued, `read` until the socket is
//! drained (or the protocol paused, the output backed up, the turn's budget spent),
//! `produce` (pause or resume a streaming producer), and `settle` (carry out the close the
//! protocol asked for once its output has left). The reactor adds only what is its own: the
//! poll registration, the slab slot, the factory's connection count.

use std::io::{self, Read};
use std::time::Duration;

use crate::error::Reason;
use crate::output::Socket;
use crate::protocol::Protocol;
use crate::reactor::{Command, Handle};
use crate::timer::Target;
use crate::transport::{ConnState, Flag, IDLE_KEY, Phase, Producer, Transport};

/// How many reads one connection gets per turn before others have their go.
pub(crate) const READS_PER_TURN: usize = 16;
/// How long a closing connection waits for the peer's EOF before it closes anyway.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// Timer key of the lingering close.
pub(crate) const LINGER_KEY: u64 = u64::MAX - 1;
/// The most a lingering connection reads and drops in one go before closing anyway.
const LINGER_BYTES: usize = 256 * 1024;
/// How long a TLS handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Timer key of the TLS handshake's deadline.
pub(crate) const HANDSHAKE_KEY: u64 = u64::MAX - 2;

/// At most this many "TLS failed" lines a second: each is one client's junk (plaintext on a
/// TLS port, an old version), so a flood of them would otherwise write a line per
/// connection. The ones left out are counted, and the next line logged says how many
/// (`twistrs_tls_handshake_failures_total` counts every one).
const TLS_FAILED_LINES_PER_SEC: u32 = 10;

thread_local! {
    /// The current second's start, the lines logged in it, and the lines left out since the
    /// last one logged.
    static TLS_FAILED: std::cell::Cell<Option<(std::time::Instant, u32, u64)>> =
        const { std::cell::Cell::new(None) };
}

/// Logs a TLS failure, within [`TLS_FAILED_LINES_PER_SEC`]; the connection's log system is
/// made (a formatted string) only for a line that is written, not for each one left out.
fn log_tls_failure(system: impl FnOnce() -> String, e: &io::Error) {
    let now = std::time::Instant::now();
    let (start, n, left_out) = match TLS_FAILED.get() {
        Some((start, n, left_out)) if now.duration_since(start) < Duration::from_secs(1) => {
            (start, n, left_out)
        }
        Some((_, _, left_out)) => (now, 0, left_out),
        None => (now, 0, 0),
    };
    if n >= TLS_FAILED_LINES_PER_SEC {
        TLS_FAILED.set(Some((start, n, left_out + 1)));
        return;
    }
    let system = system();
    if left_out > 0 {
        log::info!(target: &system,
            "TLS failed: {e}; closing ({left_out} more TLS failures not logged before this one: \
             at most {TLS_FAILED_LINES_PER_SEC} lines a second).");
    } else {
        log::info!(target: &system, "TLS failed: {e}; closing.");
    }
    TLS_FAILED.set(Some((start, n + 1, 0)));
}

/// Gives a connection whose socket just became TLS its handshake deadline.
pub(crate) fn arm_handshake_timer(st: &mut ConnState, handle: &Handle) {
    let t = handle
        .timers()
        .schedule(HANDSHAKE_TIMEOUT, Target::Conn(st.id, HANDSHAKE_KEY));
    st.track_timer(t);
}

/// What `settle` found to do.
enum Settled {
    Nothing,
    /// The socket became TLS: read the handshake that may already be waiting.
    Upgraded,
    Close(Reason),
}

/// What a drive needs from its surroundings.
pub(crate) struct Driver<'a> {
    pub(crate) handle: &'a Handle,
    /// The read buffer, shared by every connection of a reactor.
    pub(crate) buf: &'a mut [u8],
    /// Output above this stops reading from the peer and pauses a producer.
    pub(crate) high: usize,
    /// Output below this resumes them.
    pub(crate) low: usize,
    /// A relay's side whose idle check is due: its peer's last activity and the bytes its
    /// kernel still holds for its own peer (`relay::step_joined` looks, only then: one
    /// ioctl per check, none on the hot path). A relay is idle only when neither side made
    /// progress: a destination held back by a slow client reads nothing and sends nothing,
    /// while the client's socket drains steadily.
    pub(crate) relay_peer: Option<(crate::timer::Tick, u32)>,
}

impl<'a> Driver<'a> {
    /// A driver for one drive, with `cfg`'s water marks and no relay peer.
    pub(crate) fn new(
        handle: &'a Handle,
        buf: &'a mut [u8],
        cfg: &crate::reactor::ReactorConfig,
    ) -> Self {
        Driver {
            handle,
            buf,
            high: cfg.high_water,
            low: cfg.low_water,
            relay_peer: None,
        }
    }
}

/// What the owner of a connection must do after a drive.
#[derive(Debug)]
pub(crate) enum After {
    /// Nothing: wait for readiness or a callback.
    Settled,
    /// Drive it again this turn: work is left and no readiness edge will bring it back.
    Again,
    /// Close it (and tell the protocol) with this reason.
    Close(Reason),
}

/// A connection's socket and state; the protocol is passed in, so the reactor can keep a
/// `Box<dyn Protocol>` and a test harness its concrete protocol.
pub(crate) struct Conn<S> {
    pub(crate) socket: S,
    pub(crate) st: ConnState,
}

/// Reads and drops input of a closing connection; `Some` once it should close.
fn linger_read(socket: &mut impl Read, buf: &mut [u8]) -> Option<Reason> {
    let mut total = 0;
    loop {
        match socket.read(buf) {
            Ok(0) => return Some(Reason::Done),
            Ok(n) => {
                total += n;
                if total > LINGER_BYTES {
                    return Some(Reason::Done);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Some(Reason::Done),
        }
    }
}

impl<S: Socket> Conn<S> {
    /// For a TLS connection (from its start, or after STARTTLS), whether its handshake has
    /// completed; `None` for plaintext. Counted by the metrics when it closes.
    pub(crate) fn tls_done(&self) -> Option<bool> {
        self.st.is(Flag::Secure).then(|| !self.socket.handshaking())
    }

    pub(crate) fn new(socket: S, st: ConnState) -> Self {
        Conn { socket, st }
    }

    /// Runs one protocol callback, then settles the connection.
    pub(crate) fn callback(
        &mut self,
        p: &mut dyn Protocol,
        d: &mut Driver<'_>,
        f: impl FnOnce(&mut dyn Protocol, &mut Transport<'_>),
    ) -> After {
        let mut t = Transport::new(&mut self.st, d.handle);
        f(p, &mut t);
        self.drive(p, d, false, false)
    }

    /// Handles readiness (or a re-drive, with both false).
    pub(crate) fn drive(
        &mut self,
        p: &mut dyn Protocol,
        d: &mut Driver<'_>,
        readable: bool,
        writable: bool,
    ) -> After {
        match self.st.phase() {
            Phase::Lingering => return self.linger(d, readable, writable),
            Phase::Closed => return After::Settled,
            _ => {}
        }
        let sent_before = self.st.out.sent;
        let exchanged = self.exchange(p, d, readable, writable);
        // Output progress counts as activity for the idle timeout, as input does: a download
        // that is moving is never cut (nginx's send_timeout is between two writes too).
        if self.st.out.sent != sent_before {
            self.st.last_activity = d.handle.tick();
        }
        match exchanged {
            Err(r) => After::Close(r),
            Ok(again) => match self.settle(d) {
                Settled::Close(r) => After::Close(r),
                Settled::Upgraded => After::Again,
                Settled::Nothing if again => After::Again,
                Settled::Nothing => After::Settled,
            },
        }
    }

    /// Reads, flushes and produces until nothing changes; `Ok(true)` if work is left for
    /// another turn. Bounded: each side can free or fill room for the other.
    fn exchange(
        &mut self,
        p: &mut dyn Protocol,
        d: &mut Driver<'_>,
        readable: bool,
        writable: bool,
    ) -> Result<bool, Reason> {
        if writable {
            self.flush()?;
        }
        let mut want_read = readable || self.st.is(Flag::ReadPending);
        let mut reads = 0;
        for _ in 0..4 {
            if want_read {
                want_read = false;
                self.read(p, d, &mut reads)?;
            }
            if self.st.phase() == Phase::Aborted {
                return Ok(false);
            }
            self.flush()?;
            if self.produce(p, d) {
                continue;
            }
            let budget_spent = reads >= READS_PER_TURN;
            if self.st.is(Flag::ReadPending)
                && !budget_spent
                && !self.st.is(Flag::ReadPaused)
                && self.st.reads()
                && self.st.buffered() < d.low
            {
                // Output drained below the low-water mark: read what was left waiting.
                want_read = true;
                continue;
            }
            return Ok(budget_spent && self.st.is(Flag::ReadPending));
        }
        Ok(true)
    }

    /// Queues `data` and sends at once what the socket takes, without a copy when nothing is
    /// queued before it (a relay's bytes, straight from the read buffer). A send error is left
    /// for the next drive, which meets it again and closes.
    pub(crate) fn write_through(&mut self, data: &[u8], now: crate::timer::Tick) {
        if !self.st.accepts_output() {
            return;
        }
        let before = self.st.out.sent;
        let _ = self.st.out.write_through(&mut self.socket, data);
        if self.st.out.sent != before {
            self.st.last_activity = now;
        }
    }

    /// Writes what is queued until the socket would block.
    fn flush(&mut self) -> Result<(), Reason> {
        self.st.out.flush(&mut self.socket).map_err(Reason::Io)
    }

    /// Reads until the socket is drained, the protocol pauses, the output backs up past the
    /// high-water mark, or this turn's budget is spent (then `read_pending` says so).
    fn read(
        &mut self,
        p: &mut dyn Protocol,
        d: &mut Driver<'_>,
        reads: &mut usize,
    ) -> Result<(), Reason> {
        self.st.set(Flag::ReadPending, false);
        if self.st.awaits_handshake() && self.st.reads() {
            self.read_handshake(p, d)?;
        }
        loop {
            if !self.st.reads() {
                return Ok(());
            }
            // A relay's side is not held back by its own output: that is its peer's to
            // wait for (the producer pauses it), this side's input goes elsewhere. Nor is a
            // TLS handshake: the output waits for its end, which only reading brings (a
            // protocol that writes past the mark at once, chargen, waited for the handshake's
            // deadline); the read that ends it is the last before the mark holds again.
            let backed_up = self.st.buffered() >= d.high
                && self.st.link().peer().is_none()
                && !self.socket.handshaking();
            if self.st.is(Flag::ReadPaused) || backed_up || *reads >= READS_PER_TURN {
                self.st.set(Flag::ReadPending, true);
                return Ok(());
            }
            match self.socket.read(d.buf) {
                Ok(0) => {
                    self.st.set(Flag::EofReceived, true);
                    p.read_eof(&mut Transport::new(&mut self.st, d.handle));
                    return Ok(());
                }
                Ok(n) => {
                    *reads += 1;
                    self.st.received += n as u64;
                    self.st.last_activity = d.handle.tick();
                    let data = &d.buf[..n];
                    let mut t = Transport::new(&mut self.st, d.handle);
                    p.data_received(&mut t, data);
                    // A short read drained the socket: epoll will report new data (but not a
                    // FIN it already reported, nor a TLS close the socket layer holds).
                    if n < d.buf.len() && !self.st.is(Flag::PeerClosed) && !self.socket.read_ahead()
                    {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.took_input(d);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_failed(e)),
            }
        }
    }

    /// A read that returned nothing may still have taken bytes from the socket (TLS
    /// handshake records, an alert, a ticket): the peer is there and sending, which counts as
    /// activity for the idle timeout (it ran from the accept through a whole handshake
    /// before) and as progress for a handshake at `--max-connections`.
    fn took_input(&mut self, d: &Driver<'_>) {
        if self.socket.took_input() {
            self.st.last_activity = d.handle.tick();
        }
    }

    /// Why a read that failed with `e` closes the connection; a TLS failure is logged.
    fn read_failed(&self, e: io::Error) -> Reason {
        if e.kind() == io::ErrorKind::InvalidData {
            // Only TLS says so: plaintext or garbage on a TLS port, an old version.
            log_tls_failure(|| self.st.system(), &e);
        }
        Reason::Io(e)
    }

    /// Reads the TLS handshake of a connection whose relay waits for it to end (reading is
    /// otherwise paused: `Transport::connect_relay`). Plaintext that came with the client's
    /// last handshake message is kept for the destination; once the handshake is done, the
    /// relay's connect is asked for again, now to be made. Bounded as `read` is: a handshake
    /// takes a few reads.
    fn read_handshake(&mut self, p: &mut dyn Protocol, d: &mut Driver<'_>) -> Result<(), Reason> {
        for _ in 0..READS_PER_TURN {
            if !self.socket.handshaking() {
                if let Some(r) = self.st.take_deferred_relay() {
                    d.handle.push(Command::ConnectRelay(r));
                }
                return Ok(());
            }
            match self.socket.read(d.buf) {
                // The end of the input came in the read that ended the handshake (a client
                // half-closing behind its Finished): the relay is made all the same, and its
                // join reads the end again (a socket's end, or TLS's close_notify, stays).
                Ok(0) if !self.socket.handshaking() => {}
                Ok(0) => {
                    self.st.set(Flag::EofReceived, true);
                    p.read_eof(&mut Transport::new(&mut self.st, d.handle));
                    return Ok(());
                }
                Ok(n) => {
                    self.st.received += n as u64;
                    self.st.last_activity = d.handle.tick();
                    self.st.keep_for_relay(&d.buf[..n]);
                }
                // The read that ends a handshake may bring no plaintext: the loop then asks.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.took_input(d);
                    if self.socket.handshaking() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_failed(e)),
            }
        }
        // Only a run of interruptions gets here: the next drive goes on.
        self.st.set(Flag::ReadPending, true);
        Ok(())
    }

    /// Producer flow control (Twisted's `IPushProducer`): pause above the high-water mark,
    /// resume below the low one. True if the producer wrote more.
    fn produce(&mut self, p: &mut dyn Protocol, d: &mut Driver<'_>) -> bool {
        if self.st.producer == Producer::None || !self.st.accepts_output() {
            return false;
        }
        let buffered = self.st.buffered();
        if buffered >= d.high {
            if self.st.producer == Producer::Producing {
                self.st.producer = Producer::Paused;
                p.pause_producing();
            }
            false
        } else if buffered < d.low {
            self.st.producer = Producer::Producing;
            p.resume_producing(&mut Transport::new(&mut self.st, d.handle));
            // Only new output is work: output that is merely still waiting for room in the
            // socket (a relay's side whose peer reads slowly) would otherwise spin.
            self.st.buffered() > buffered
        } else {
            false
        }
    }

    /// Once the output has left, carries out what the protocol asked for: a TLS upgrade, or
    /// the close.
    fn settle(&mut self, d: &mut Driver<'_>) -> Settled {
        if self.st.phase() == Phase::Aborted {
            return Settled::Close(Reason::Aborted);
        }
        if self.st.buffered() > 0 || self.socket.pending() {
            return Settled::Nothing;
        }
        if let Some(config) = self.st.take_upgrade() {
            return match self.socket.start_tls(config) {
                Ok(()) => {
                    self.st.set(Flag::Secure, true);
                    self.st.set(Flag::ReadPending, true);
                    arm_handshake_timer(&mut self.st, d.handle);
                    Settled::Upgraded
                }
                Err(e) => Settled::Close(Reason::Io(e)),
            };
        }
        match self.close_step(d) {
            Some(r) => Settled::Close(r),
            None => Settled::Nothing,
        }
    }

    /// The phase changes of a close whose output has left.
    fn close_step(&mut self, d: &mut Driver<'_>) -> Option<Reason> {
        match self.st.phase() {
            Phase::Losing => {
                if self.st.is(Flag::EofReceived) {
                    // The peer closed first. Over TLS its close_notify is answered with ours
                    // (a close without it looks like a truncation attack to the client), and
                    // the close waits for it to leave if the socket has no room now. A peer
                    // gone before its handshake ended is owed nothing.
                    if !self.st.is(Flag::Secure)
                        || self.socket.handshaking()
                        || self.socket.shutdown_write().is_err()
                        || !self.socket.pending()
                    {
                        return Some(Reason::Done);
                    }
                    self.linger_until(d);
                    return None;
                }
                if self.socket.shutdown_write().is_err() {
                    return Some(Reason::Done);
                }
                self.linger_until(d);
                // Whatever already arrived is dropped now; the rest as it comes.
                linger_read(&mut self.socket, d.buf)
            }
            Phase::HalfClosing => {
                self.st.set_phase(Phase::HalfClosed);
                if let Err(e) = self.socket.shutdown_write() {
                    return Some(Reason::Io(e));
                }
                self.st.is(Flag::EofReceived).then_some(Reason::Done)
            }
            Phase::HalfClosed if self.st.is(Flag::EofReceived) => Some(Reason::Done),
            _ => None,
        }
    }

    /// Enters `Lingering`, for at most `LINGER_TIME`.
    fn linger_until(&mut self, d: &mut Driver<'_>) {
        self.st.set_phase(Phase::Lingering);
        let linger = d
            .handle
            .timers()
            .schedule(LINGER_TIME, Target::Conn(self.st.id, LINGER_KEY));
        self.st.track_timer(linger);
    }

    /// A lingering connection became readable: drop what came, close at EOF. (TLS records
    /// of the close, close_notify, still go out as the socket takes them; once they have,
    /// a connection whose peer already closed is done.)
    fn linger(&mut self, d: &mut Driver<'_>, readable: bool, writable: bool) -> After {
        if writable && self.socket.flush_pending().is_err() {
            return After::Close(Reason::Done);
        }
        if self.st.is(Flag::EofReceived) && !self.socket.pending() {
            return After::Close(Reason::Done);
        }
        if readable && let Some(r) = linger_read(&mut self.socket, d.buf) {
            return After::Close(r);
        }
        After::Settled
    }

    /// A timer aimed at this connection came due.
    pub(crate) fn timer(&mut self, p: &mut dyn Protocol, d: &mut Driver<'_>, key: u64) -> After {
        match key {
            // A close asked for during a TLS handshake lingers until it ends (the handshake
            // deadline bounds it), so a slow client still gets what was written.
            LINGER_KEY if self.st.phase() == Phase::Lingering && self.socket.handshaking() => {
                self.linger_until(d);
                After::Settled
            }
            LINGER_KEY if self.st.phase() == Phase::Lingering => After::Close(Reason::Done),
            LINGER_KEY => After::Settled,
            HANDSHAKE_KEY if self.socket.handshaking() => {
                log::info!(target: &self.st.system(),
                    "TLS handshake not done after {HANDSHAKE_TIMEOUT:?}; closing.");
                After::Close(Reason::Io(io::ErrorKind::TimedOut.into()))
            }
            HANDSHAKE_KEY => After::Settled,
            IDLE_KEY => {
                let now = d.handle.tick();
                // A relay's side: the relay's progress is both sides'. Between two looks a
                // kernel queue only shrinks unless a write (activity) came, so the sum of the
                // two moves exactly when either does.
                let peer = d.relay_peer.take();
                if let Some((at, _)) = peer {
                    self.st.last_activity = self.st.last_activity.max(at);
                }
                if self.st.idle_due(now, d.handle.timers())
                    && !self.st.output_moving(
                        self.socket
                            .queued_out()
                            .saturating_add(peer.map_or(0, |(_, q)| q)),
                        now,
                        d.handle.timers(),
                    )
                {
                    log::info!(target: &self.st.system(), "Timing out idle connection.");
                    self.st.mark_timed_out();
                    self.callback(p, d, |p, t| p.timeout_connection(t))
                } else {
                    After::Settled
                }
            }
            k => self.callback(p, d, |p, t| p.timer_fired(t, k)),
        }
    }

    /// The server is stopping: tells the protocol, once.
    pub(crate) fn stop_requested(&mut self, p: &mut dyn Protocol, d: &mut Driver<'_>) -> After {
        if self.st.is(Flag::Stopping) {
            return After::Settled;
        }
        self.st.set(Flag::Stopping, true);
        self.callback(p, d, |p, t| p.stop_requested(t))
    }

    /// The server drains after a hand-over: a protocol that serves through it
    /// (`Protocol::serves_through_handover`) goes on, and hears `stop_requested` later;
    /// any other hears it now.
    pub(crate) fn handover_requested(&mut self, p: &mut dyn Protocol, d: &mut Driver<'_>) -> After {
        if p.serves_through_handover() {
            return After::Settled;
        }
        self.stop_requested(p, d)
    }

    /// The connection is gone: its timers are cancelled and the protocol told, once. Twisted's
    /// transport is still there in connectionLost: the protocol can read what was sent, and
    /// anything it writes now is dropped.
    pub(crate) fn lost(&mut self, p: &mut dyn Protocol, d: &mut Driver<'_>, reason: &Reason) {
        if self.st.phase() == Phase::Closed {
            return;
        }
        self.st.cancel_timers(d.handle.timers());
        self.st.set_phase(Phase::Closed);
        p.connection_lost(&mut Transport::new(&mut self.st, d.handle), reason);
    }
}
