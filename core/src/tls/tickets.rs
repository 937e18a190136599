//! Stateless TLS session tickets that every process of one service can open: the workers of
//! a `--workers` master, and a restart's successor, as nginx's workers share their ticket keys.
//!
//! rustls's default (a session cache in each process's memory) resumes a session only in the
//! process that made it, so with workers or after a restart most clients paid a full
//! handshake again. Here a ticket is the session state sealed with ChaCha20-Poly1305, under the
//! key of the current 6-hour period. The keys come from a chain: a 32-byte value per period,
//! each the HKDF-SHA256 of the one before (the first from the OS random source, made by the
//! first process that needs it), and each period's key the HKDF of its value. A process keeps
//! only the value of the period before the current one and overwrites it as time moves on, so
//! what its memory holds opens no ticket more than 12 hours old: a service that runs (and
//! restarts) for months does not keep one key for months. The launcher hands the value and its
//! period to workers and successors (an inherited pipe, never argv, the environment, the log
//! or a file); keys rotate with no coordination, since every process derives the same key for
//! the same period. A ticket is accepted in the period it was made in and the next, so it
//! lives at least 6 hours (the lifetime told to clients) and at most 12, as rustls's own
//! ticketer. No early data (0-RTT) is offered: `max_early_data_size` stays 0.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(feature = "aws-lc-rs")]
use aws_lc_rs as crypto;
#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
use ring as crypto;

use crypto::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use crypto::hkdf;
use crypto::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// The length of a chain value.
const VALUE_LEN: usize = 32;
/// What a worker or successor is handed: a period's number (big-endian) and its chain value.
pub const HANDOVER_LEN: usize = PERIOD_LEN + VALUE_LEN;
/// One key period; the lifetime told to clients.
const PERIOD_SECS: u64 = 6 * 60 * 60;
const AEAD: &aead::Algorithm = &aead::CHACHA20_POLY1305;
const NONCE_LEN: usize = 12;
const PERIOD_LEN: usize = 4;
/// Longer tickets are refused before any decryption (a partitioning-oracle attack needs long
/// ones). A session's state without client certificates (never asked for) is a few hundred
/// bytes at most: the SNI name and the ALPN protocol (up to 255 each), the secret.
const MAX_TICKET: usize = 2048;

/// Takes the chain handed over by this process's predecessor or master, before any
/// handshake. False if this process had one already (it is kept).
pub fn set_ticket_handover(handover: [u8; HANDOVER_LEN]) -> bool {
    let (period, value) = handover.split_at(PERIOD_LEN);
    let (Ok(period), Ok(value)) = (period.try_into(), value.try_into()) else {
        return false;
    };
    one().set_chain(Chain {
        period: u32::from_be_bytes(period),
        value,
    })
}

/// The chain to hand to a worker or successor: the value of the period before the current
/// one (so that it opens the tickets of both), made from the OS random source if this
/// process has none yet; `None` only if the random source fails.
pub fn ticket_handover() -> Option<[u8; HANDOVER_LEN]> {
    let t = one();
    let mut chain = t.chain.lock().ok()?;
    let c = advanced(&mut chain, period_now())?;
    let mut out = [0u8; HANDOVER_LEN];
    out[..PERIOD_LEN].copy_from_slice(&c.period.to_be_bytes());
    out[PERIOD_LEN..].copy_from_slice(&c.value);
    Some(out)
}

/// Moves this process's chain on to the period before the current one and forgets the keys
/// of periods that no longer open anything, as a handshake in a new period does. Called at
/// each period's start by a process that may make no handshake for months (a `--workers`
/// master, an idle worker): otherwise it would keep a value that opens every ticket made
/// since, by any process of the service. Makes no chain. Returns how long until the next
/// period starts, when to call again.
pub fn forget_expired_tickets() -> Duration {
    one().forget(period_now());
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // A second past the boundary, so that the next call is in the new period.
    Duration::from_secs(PERIOD_SECS - secs % PERIOD_SECS + 1)
}

/// The ticketer every server config of this process shares (a reload keeps it).
pub(crate) fn ticketer() -> Arc<dyn ProducesTickets> {
    one()
}

fn one() -> Arc<Tickets> {
    static ONE: OnceLock<Arc<Tickets>> = OnceLock::new();
    ONE.get_or_init(|| Arc::new(Tickets::default())).clone()
}

/// A period's chain value.
struct Chain {
    period: u32,
    value: [u8; VALUE_LEN],
}

/// The chain moved on to the period before `now` (the oldest whose tickets still open),
/// made now if there is none; `None` if the random source fails. A chain already past `now`
/// (the clock was set back by more than a period after it moved on) cannot go back: it is
/// replaced by a new one, or no ticket would be made until the clock caught up, in this
/// process and in every worker and successor it hands the chain to. Tickets made under the
/// old chain then open nowhere, and until the next restart this process's tickets open only
/// here (each process that sees the clock go back makes its own).
fn advanced(chain: &mut Option<Chain>, now: u32) -> Option<&Chain> {
    let oldest = now.saturating_sub(1);
    if chain.as_ref().is_some_and(|c| c.period > now) {
        log::warn!(target: "twistrs.tls",
            "The clock went back past the TLS session tickets' key period: new keys, so \
             sessions resumed before make a full handshake.");
        *chain = None;
    }
    if chain.is_none() {
        let mut value = [0u8; VALUE_LEN];
        SystemRandom::new().fill(&mut value).ok()?;
        *chain = Some(Chain {
            period: oldest,
            value,
        });
    }
    let c = chain.as_mut()?;
    while c.period < oldest {
        // A process asleep for months catches up a step per period: four a day.
        c.value = expand(&c.value, b"next")?;
        c.period += 1;
    }
    Some(c)
}

/// HKDF-SHA256 of `value` with `label` as the info.
fn expand(value: &[u8; VALUE_LEN], label: &[u8]) -> Option<[u8; VALUE_LEN]> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"twistrs session tickets").extract(value);
    let info = [label];
    let okm = prk.expand(&info, hkdf::HKDF_SHA256).ok()?;
    let mut out = [0u8; VALUE_LEN];
    okm.fill(&mut out).ok()?;
    Some(out)
}

/// The period `now` is in.
fn period_now() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs / PERIOD_SECS).unwrap_or(u32::MAX)
}

/// The chain and the keys of the last two periods derived from it (the chain itself is made
/// only on first need: `--check`, which builds configs, makes none).
#[derive(Default)]
pub(crate) struct Tickets {
    chain: Mutex<Option<Chain>>,
    keys: Mutex<Vec<(u32, LessSafeKey)>>,
}

impl fmt::Debug for Tickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tickets").finish_non_exhaustive()
    }
}

impl Tickets {
    /// Takes `chain` unless one is there already.
    fn set_chain(&self, chain: Chain) -> bool {
        let Ok(mut c) = self.chain.lock() else {
            return false;
        };
        if c.is_some() {
            return false;
        }
        *c = Some(chain);
        true
    }

    /// Forgets what opens only tickets older than the period before `now` (`forget_expired_tickets`).
    fn forget(&self, now: u32) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.retain(|(p, _)| (now.saturating_sub(1)..=now).contains(p));
        }
        if let Ok(mut chain) = self.chain.lock()
            && chain.is_some()
        {
            let _ = advanced(&mut chain, now);
        }
    }

    /// Runs `f` with the key of `period` (`now` or the one before), derived from the chain
    /// unless it is one of the last two used; `None` for a period the chain has moved past.
    fn with_key<R>(
        &self,
        now: u32,
        period: u32,
        f: impl FnOnce(&LessSafeKey) -> Option<R>,
    ) -> Option<R> {
        let mut keys = self.keys.lock().ok()?;
        // Keys of periods that no longer open anything go, so memory holds none; so do keys
        // of periods ahead of a clock set back (they may come from a chain replaced now).
        keys.retain(|(p, _)| (now.saturating_sub(1)..=now).contains(p));
        if let Some((_, k)) = keys.iter().find(|(p, _)| *p == period) {
            return f(k);
        }
        let k = {
            let mut chain = self.chain.lock().ok()?;
            let c = advanced(&mut chain, now)?;
            if period < c.period {
                return None;
            }
            let mut value = c.value;
            for _ in c.period..period {
                value = expand(&value, b"next")?;
            }
            let key = expand(&value, b"key")?;
            LessSafeKey::new(UnboundKey::new(AEAD, &key).ok()?)
        };
        keys.push((period, k));
        let (_, k) = keys.last()?;
        f(k)
    }

    /// `PERIOD || NONCE || sealed(plain) || TAG`, the period authenticated too; sealed in
    /// place in the ticket's own buffer (one copy of the state).
    fn seal(&self, now: u32, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        // Random: a counter would tell how many tickets this process made.
        SystemRandom::new().fill(&mut nonce).ok()?;
        let head = now.to_be_bytes();
        let mut out = Vec::with_capacity(PERIOD_LEN + NONCE_LEN + plain.len() + AEAD.tag_len());
        out.extend_from_slice(&head);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self.with_key(now, now, |k| {
            k.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(head),
                &mut out[PERIOD_LEN + NONCE_LEN..],
            )
            .ok()
        })?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    /// The plaintext of a ticket made in period `now` or the one before it; `None` for any
    /// other ticket (older, another service's, altered, or not one at all).
    fn open(&self, now: u32, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() > MAX_TICKET || ticket.len() < PERIOD_LEN + NONCE_LEN + AEAD.tag_len() {
            return None;
        }
        let (head, rest) = ticket.split_at(PERIOD_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let head: [u8; PERIOD_LEN] = head.try_into().ok()?;
        let period = u32::from_be_bytes(head);
        if period != now && Some(period) != now.checked_sub(1) {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = sealed.to_vec();
        let len = self.with_key(now, period, |k| {
            k.open_in_place(nonce, Aad::from(head), &mut body)
                .ok()
                .map(|p| p.len())
        })?;
        body.truncate(len);
        Some(body)
    }
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        // A ticket made at the end of its period still has the whole next one.
        PERIOD_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal(period_now(), plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open(period_now(), cipher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ticketer whose chain holds `value` for `period`, as a hand-over leaves it.
    fn at(period: u32, value: u8) -> Tickets {
        let t = Tickets::default();
        assert!(t.set_chain(Chain {
            period,
            value: [value; VALUE_LEN],
        }));
        t
    }

    #[test]
    fn a_ticket_opens_in_its_period_and_the_next_only() {
        let t = at(999, 7);
        let sealed = t.seal(1000, b"session state").unwrap();
        assert_ne!(&sealed[PERIOD_LEN + NONCE_LEN..][..13], b"session state");
        assert_eq!(t.open(1000, &sealed).unwrap(), b"session state");
        assert_eq!(t.open(1001, &sealed).unwrap(), b"session state");
        assert_eq!(t.open(1002, &sealed), None, "two periods on: expired");
        assert_eq!(at(999, 7).open(999, &sealed), None, "from the future");
    }

    #[test]
    fn another_process_with_the_same_chain_opens_it_and_no_other_chain_does() {
        let sealed = at(4, 7).seal(5, b"x").unwrap();
        assert_eq!(at(4, 7).open(5, &sealed).unwrap(), b"x");
        assert_eq!(at(4, 8).open(5, &sealed), None);
        // A process handed the chain a period later (at 5, derived from 4) opens it too.
        let later = Tickets::default();
        let mut value = [7; VALUE_LEN];
        value = expand(&value, b"next").unwrap();
        assert!(later.set_chain(Chain { period: 5, value }));
        assert_eq!(later.open(6, &sealed).unwrap(), b"x");
    }

    #[test]
    fn the_chain_moves_on_and_what_it_held_is_gone() {
        let t = at(4, 7);
        let old = t.seal(5, b"old").unwrap();
        // Twelve hours on, the chain and the keys hold period 6 and later only.
        let new = t.seal(7, b"new").unwrap();
        assert_eq!(t.open(7, &old), None);
        assert_eq!(t.chain.lock().unwrap().as_ref().unwrap().period, 6);
        assert!(t.keys.lock().unwrap().iter().all(|(p, _)| *p >= 6));
        assert_eq!(t.open(7, &new).unwrap(), b"new");
        // A hand-over now gives period 6's value, from which 5's cannot be had.
        {
            let mut chain = t.chain.lock().unwrap();
            let c = advanced(&mut chain, 7).unwrap();
            assert_eq!(c.period, 6);
        }
        // Nothing derived from what is held now opens the old ticket, even asked for its
        // period with a clock turned back (which, past the chain, makes a new one).
        assert_eq!(t.open(6, &old), None);
        assert_eq!(t.open(5, &old), None);
    }

    /// A process that makes no handshake (a `--workers` master) still lets go of what it
    /// held as periods pass, and one that has no chain is not given one.
    #[test]
    fn forgetting_moves_the_chain_on_without_a_handshake() {
        let t = at(4, 7);
        let old = t.seal(5, b"old").unwrap();
        t.forget(8);
        assert_eq!(t.chain.lock().unwrap().as_ref().unwrap().period, 7);
        assert!(t.keys.lock().unwrap().is_empty());
        assert_eq!(t.open(5, &old), None);
        let none = Tickets::default();
        none.forget(8);
        assert!(none.chain.lock().unwrap().is_none());
        let wait = forget_expired_tickets();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(PERIOD_SECS + 1));
    }

    #[test]
    fn an_altered_or_malformed_ticket_is_refused() {
        let t = at(4, 7);
        let sealed = t.seal(5, b"state").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(t.open(5, &bad), None, "byte {i} flipped");
            // The period moved on by one, the altered period is one that is accepted.
            assert_eq!(t.open(6, &bad), None, "byte {i} flipped, a period later");
        }
        for len in 0..sealed.len() {
            assert_eq!(t.open(5, &sealed[..len]), None, "cut to {len}");
        }
        assert_eq!(t.open(5, &vec![0; MAX_TICKET + 1]), None);
    }

    #[test]
    fn keys_differ_by_period_and_nonces_by_ticket() {
        let t = at(4, 7);
        let one = t.seal(5, b"same").unwrap();
        let two = t.seal(5, b"same").unwrap();
        assert_ne!(one, two);
        // The period's bytes say 6; under 6's key it does not open.
        let mut moved = one.clone();
        moved[..PERIOD_LEN].copy_from_slice(&6u32.to_be_bytes());
        assert_eq!(t.open(6, &moved), None);
        // Periods in turn, forward only: the cache of keys never gives a wrong one.
        for p in [5u32, 6, 6, 9, 10, 10, 11] {
            let s = t.seal(p, b"p").unwrap();
            assert_eq!(t.open(p, &s).unwrap(), b"p");
        }
    }

    #[test]
    fn a_hand_over_round_trips_and_a_second_one_is_refused() {
        let h = ticket_handover().unwrap();
        let period = u32::from_be_bytes(h[..PERIOD_LEN].try_into().unwrap());
        assert_eq!(period, period_now() - 1);
        assert_eq!(
            ticket_handover().unwrap(),
            h,
            "the same chain until the period ends"
        );
        assert!(!set_ticket_handover(h), "this process has a chain already");
    }

    #[test]
    fn a_clock_set_back_past_the_chain_gets_a_new_chain_not_silence() {
        let t = at(99, 7);
        let ahead = t.seal(100, b"ahead").unwrap();
        // The clock goes back a day: the chain (at 99) cannot reach period 96.
        let back = t.seal(96, b"back").expect("tickets are made again at once");
        assert_eq!(t.open(96, &back).unwrap(), b"back");
        assert_eq!(t.chain.lock().unwrap().as_ref().unwrap().period, 95);
        // What the old chain sealed opens nowhere now, even once the clock is right again.
        assert_eq!(t.open(100, &ahead), None);
        // A step back within the chain's reach keeps it.
        let t = at(99, 7);
        assert!(t.seal(100, b"x").is_some());
        assert!(t.seal(99, b"y").is_some());
        assert_eq!(t.chain.lock().unwrap().as_ref().unwrap().period, 99);
    }

    #[test]
    fn the_lifetime_is_one_period() {
        assert_eq!(Tickets::default().lifetime(), 6 * 3600);
    }
}
