//! Stateless TLS session tickets that every process of one service can open: the workers of
//! a `--workers` master, and a restart's successor, as nginx's workers share their ticket keys.
//!
//! rustls's default (a session cache in each process's memory) resumes a session only in the
//! process that made it, so with workers or after a restart most clients paid a full
//! handshake again. Here a ticket is the session state sealed with ChaCha20-Poly1305, under a
//! key derived (HKDF-SHA256) from a 32-byte secret and the number of the current 6-hour
//! period. The secret is made from the OS random source by the first process that needs it and
//! handed to the others by the launcher (an inherited pipe, never argv, the environment, the
//! log or a file); keys rotate without any coordination, since every process derives the same
//! key for the same period. A ticket is accepted in the period it was made in and the next, so
//! it lives at least 6 hours (the lifetime told to clients) and at most 12, as rustls's own
//! ticketer. No early data (0-RTT) is offered: `max_early_data_size` stays 0.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(feature = "aws-lc-rs")]
use aws_lc_rs as crypto;
#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
use ring as crypto;

use crypto::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use crypto::hkdf;
use crypto::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// The length of the shared secret.
pub const SECRET_LEN: usize = 32;
/// One key period; the lifetime told to clients.
const PERIOD_SECS: u64 = 6 * 60 * 60;
const AEAD: &aead::Algorithm = &aead::CHACHA20_POLY1305;
const NONCE_LEN: usize = 12;
const PERIOD_LEN: usize = 4;
/// Longer tickets are refused before any decryption (a partitioning-oracle attack needs long
/// ones). A session's state without client certificates (never asked for) is a few hundred
/// bytes at most: the SNI name and the ALPN protocol (up to 255 each), the secret.
const MAX_TICKET: usize = 2048;

static SECRET: OnceLock<[u8; SECRET_LEN]> = OnceLock::new();

/// Sets the secret handed over by this process's predecessor or master, before any
/// handshake. False if there was one already (it is kept).
pub fn set_ticket_secret(secret: [u8; SECRET_LEN]) -> bool {
    SECRET.set(secret).is_ok()
}

/// The secret, made from the OS random source on first need (the first ticket, or the first
/// hand-over to a worker or successor); `None` only if the random source fails.
pub fn ticket_secret() -> Option<&'static [u8; SECRET_LEN]> {
    if let Some(s) = SECRET.get() {
        return Some(s);
    }
    let mut s = [0u8; SECRET_LEN];
    SystemRandom::new().fill(&mut s).ok()?;
    // Another thread may have set one meanwhile: theirs is kept, and returned.
    let _ = SECRET.set(s);
    SECRET.get()
}

/// The ticketer every server config of this process shares (a reload keeps it).
pub(crate) fn ticketer() -> Arc<dyn ProducesTickets> {
    static ONE: OnceLock<Arc<Tickets>> = OnceLock::new();
    ONE.get_or_init(|| Arc::new(Tickets::default())).clone()
}

/// The secret's per-period keys, derived as they are first needed (the secret itself is
/// read only then: `--check`, which builds configs, makes none).
#[derive(Default)]
pub(crate) struct Tickets {
    /// The last two periods' keys.
    keys: Mutex<Vec<(u32, LessSafeKey)>>,
}

impl fmt::Debug for Tickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tickets").finish_non_exhaustive()
    }
}

/// The period `now` is in.
fn period_now() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs / PERIOD_SECS).unwrap_or(u32::MAX)
}

/// The key of `period`: HKDF-SHA256 of the secret, with the period's number as the info.
fn derive(secret: &[u8; SECRET_LEN], period: u32) -> Option<LessSafeKey> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"twistrs session tickets").extract(secret);
    let info = period.to_be_bytes();
    let info = [&info[..]];
    let okm = prk.expand(&info, hkdf::HKDF_SHA256).ok()?;
    let mut key = [0u8; 32];
    okm.fill(&mut key).ok()?;
    Some(LessSafeKey::new(UnboundKey::new(AEAD, &key).ok()?))
}

impl Tickets {
    /// Runs `f` with the key of `period`, derived from `secret` unless it is one of the last
    /// two used.
    fn with_key<R>(
        &self,
        secret: &[u8; SECRET_LEN],
        period: u32,
        f: impl FnOnce(&LessSafeKey) -> Option<R>,
    ) -> Option<R> {
        let mut keys = self.keys.lock().ok()?;
        if let Some((_, k)) = keys.iter().find(|(p, _)| *p == period) {
            return f(k);
        }
        let k = derive(secret, period)?;
        // The oldest goes.
        if keys.len() >= 2 {
            keys.sort_by_key(|(p, _)| *p);
            keys.remove(0);
        }
        keys.push((period, k));
        let (_, k) = keys.last()?;
        f(k)
    }

    /// `PERIOD || NONCE || sealed(plain) || TAG`, the period authenticated too.
    fn seal(&self, secret: &[u8; SECRET_LEN], period: u32, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        // Random: a counter would tell how many tickets this process made.
        SystemRandom::new().fill(&mut nonce).ok()?;
        let head = period.to_be_bytes();
        let mut out = Vec::with_capacity(PERIOD_LEN + NONCE_LEN + plain.len() + AEAD.tag_len());
        out.extend_from_slice(&head);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        let tag = self.with_key(secret, period, |k| {
            k.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(head),
                &mut body,
            )
            .ok()
        })?;
        out.extend_from_slice(&body);
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    /// The plaintext of a ticket made in period `now` or the one before it; `None` for any
    /// other ticket (older, another service's, altered, or not one at all).
    fn open(&self, secret: &[u8; SECRET_LEN], now: u32, ticket: &[u8]) -> Option<Vec<u8>> {
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
        let len = self.with_key(secret, period, |k| {
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
        self.seal(ticket_secret()?, period_now(), plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open(ticket_secret()?, period_now(), cipher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; SECRET_LEN] = [7; SECRET_LEN];
    const B: [u8; SECRET_LEN] = [8; SECRET_LEN];

    #[test]
    fn a_ticket_opens_in_its_period_and_the_next_only() {
        let t = Tickets::default();
        let sealed = t.seal(&A, 1000, b"session state").unwrap();
        assert_ne!(&sealed[PERIOD_LEN + NONCE_LEN..][..13], b"session state");
        assert_eq!(t.open(&A, 1000, &sealed).unwrap(), b"session state");
        assert_eq!(t.open(&A, 1001, &sealed).unwrap(), b"session state");
        assert_eq!(t.open(&A, 1002, &sealed), None, "two periods on: expired");
        assert_eq!(t.open(&A, 999, &sealed), None, "from the future");
    }

    #[test]
    fn another_process_with_the_same_secret_opens_it_and_no_other_secret_does() {
        let sealed = Tickets::default().seal(&A, 5, b"x").unwrap();
        assert_eq!(Tickets::default().open(&A, 5, &sealed).unwrap(), b"x");
        assert_eq!(Tickets::default().open(&B, 5, &sealed), None);
    }

    #[test]
    fn an_altered_or_malformed_ticket_is_refused() {
        let t = Tickets::default();
        let sealed = t.seal(&A, 5, b"state").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(t.open(&A, 5, &bad), None, "byte {i} flipped");
            // The period moved on by one, the altered period is one that is accepted.
            assert_eq!(
                t.open(&A, 6, &bad),
                None,
                "byte {i} flipped, a period later"
            );
        }
        for len in 0..sealed.len() {
            assert_eq!(t.open(&A, 5, &sealed[..len]), None, "cut to {len}");
        }
        assert_eq!(t.open(&A, 5, &vec![0; MAX_TICKET + 1]), None);
    }

    #[test]
    fn keys_differ_by_period_and_nonces_by_ticket() {
        let t = Tickets::default();
        let one = t.seal(&A, 5, b"same").unwrap();
        let two = t.seal(&A, 5, b"same").unwrap();
        assert_ne!(one, two);
        // The period's bytes say 5; under 6's key it does not open.
        let mut moved = one.clone();
        moved[..PERIOD_LEN].copy_from_slice(&6u32.to_be_bytes());
        assert_eq!(t.open(&A, 6, &moved), None);
        // Many periods in turn: the cache of two keys never gives a wrong one.
        for p in [5u32, 9, 5, 10, 9, 5] {
            let s = t.seal(&A, p, b"p").unwrap();
            assert_eq!(t.open(&A, p, &s).unwrap(), b"p");
        }
    }

    #[test]
    fn the_lifetime_is_one_period() {
        assert_eq!(Tickets::default().lifetime(), 6 * 3600);
    }
}
