//! Property tests of the mail plugin's sans-IO parts: the DATA reader and whole SMTP and POP3
//! sessions, on arbitrary input in arbitrary pieces.
//!
//! 256 cases per property by default; a longer run by hand is
//! `PROPTEST_CASES=20000 cargo test -p twistrs-mail prop`.

use std::rc::Rc;

use proptest::collection::vec;
use proptest::prelude::*;

use crate::config::{MailConfig, fixture};
use crate::data::{DataReader, Outcome};
use crate::pop3::Pop3;
use crate::smtp::{self, Smtp};
use twistrs_core::testing::mutate::{Edit, edits, mutate};
use twistrs_core::testing::pieces;

/// DATA fed in `parts`, bytes kept buffered as the session keeps them: the outcome and the
/// number of bytes the reader took before it.
fn read_data(parts: &[&[u8]], max: usize) -> (Option<Outcome>, usize) {
    let mut r = DataReader::new(max, true);
    let mut buf = Vec::new();
    let mut taken = 0;
    for p in parts {
        buf.extend_from_slice(p);
        let (used, out) = r.feed(&buf);
        assert!(
            buf.len() - used <= crate::data::MAX_LINE,
            "a partial line at most"
        );
        buf.drain(..used);
        taken += used;
        if out.is_some() {
            return (out, taken);
        }
    }
    (None, taken)
}

/// Input for a session: protocol words, line ends of every kind, dots and junk.
fn session_input(words: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        4 => proptest::sample::select(words).prop_map(|w| w.as_bytes().to_vec()),
        2 => prop_oneof![Just(b"\r\n".to_vec()), Just(b"\n".to_vec()), Just(b"\r".to_vec())],
        1 => Just(b".".to_vec()),
        1 => vec(any::<u8>(), 0..8),
    ];
    vec(token, 0..60).prop_map(|t| t.concat())
}

const SMTP_WORDS: &[&str] = &[
    "HELO c",
    "EHLO c",
    "MAIL FROM:<a@b>",
    "RCPT TO:<joe@example.com>",
    "RCPT TO:<x@y>",
    "DATA",
    "RSET",
    "NOOP",
    "QUIT",
    "VRFY joe",
    "AUTH PLAIN",
    "AUTH LOGIN",
    "am9l",
    "*",
    "Subject: x",
    "..dot",
    "MAIL FROM:<a@b> SIZE=99999",
];

const POP3_WORDS: &[&str] = &[
    "USER joe",
    "PASS secret",
    "PASS no",
    "APOP joe 0",
    "STAT",
    "LIST",
    "LIST 1",
    "UIDL",
    "UIDL 2",
    "RETR 1",
    "RETR 9",
    "TOP 1 0",
    "TOP 2 1",
    "DELE 1",
    "RSET",
    "NOOP",
    "CAPA",
    "QUIT",
    "user JOE@example.com",
];

/// A whole SMTP session over `parts`: the replies and the messages handed over.
fn smtp_session(cfg: &Rc<MailConfig>, parts: &[&[u8]]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut s = Smtp::new(cfg.clone(), "127.0.0.1".into());
    let mut out = Vec::new();
    let mut msgs = Vec::new();
    s.greeting(&mut out);
    'feed: for p in parts {
        s.feed(p);
        while let Some(a) = s.step(&mut out) {
            match a {
                smtp::Action::Deliver(job) => {
                    // The message only: the Received: header (job.head) carries the time.
                    msgs.push(job.data);
                    s.delivered(Ok(()), &mut out);
                }
                smtp::Action::Close => break 'feed,
                // No certificate in these configurations: STARTTLS is refused.
                smtp::Action::StartTls => {}
                smtp::Action::Delay(_) => {}
            }
        }
    }
    (out, msgs)
}

/// A whole POP3 session over `parts`, disk work done at once.
fn pop3_session(cfg: &Rc<MailConfig>, parts: &[&[u8]]) -> Vec<u8> {
    let mut p = Pop3::new(cfg.clone(), "<1.2@h>".into());
    let mut out = Vec::new();
    p.greeting(&mut out);
    'feed: for piece in parts {
        p.feed(piece);
        while let Some(a) = p.step(&mut out) {
            if crate::fuzz::pop3_act(&mut p, a, &mut out, &mut false) {
                break 'feed;
            }
        }
    }
    out
}

fn mail_config(dir: &std::path::Path) -> Rc<MailConfig> {
    let d = fixture::example_domain(dir);
    let joe = d.path.join("joe");
    std::fs::write(joe.join("new/1.M1P1Q1.h,S=20"), "Subject: one\n\n.one\n").unwrap();
    std::fs::write(
        joe.join("new/2.M1P1Q2.h,S=20"),
        "Subject: two\n\nbody\nmore\n",
    )
    .unwrap();
    Rc::new(MailConfig {
        default: Some(0),
        max_message: 300,
        ..fixture::config(vec![d])
    })
}

proptest! {
    #[test]
    fn data_ends_at_the_same_place_in_every_chunking(
        data in vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'x'), any::<u8>()], 0..400),
        cuts in vec(any::<usize>(), 0..30),
        max in 0usize..500,
    ) {
        let whole = read_data(&[&data], max);
        let cut = read_data(&pieces(&data, &cuts), max);
        prop_assert_eq!(cut, whole);
    }

    #[test]
    fn an_smtp_session_is_the_same_in_every_chunking(
        input in session_input(SMTP_WORDS),
        cuts in vec(any::<usize>(), 0..20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = mail_config(dir.path());
        let whole = smtp_session(&cfg, &[&input]);
        let cut = smtp_session(&cfg, &pieces(&input, &cuts));
        prop_assert_eq!(cut, whole);
    }

    #[test]
    fn a_pop3_session_is_the_same_in_every_chunking(
        input in session_input(POP3_WORDS),
        cuts in vec(any::<usize>(), 0..20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = mail_config(dir.path());
        let whole = pop3_session(&cfg, &[&input]);
        let cut = pop3_session(&cfg, &pieces(&input, &cuts));
        prop_assert_eq!(cut, whole);
    }
}

/// A mutated session of `seeds` (seed `i` with edits `e`, splicing from seed `j`) through
/// `check`, whole and in `cuts` pieces: both pass the check, and the answers are the same
/// unless STARTTLS/STLS threw input away.
fn mutated_session(
    seeds: &[Vec<u8>],
    check: crate::fuzz::Check,
    (i, j): (proptest::sample::Index, proptest::sample::Index),
    e: &[Edit],
    cuts: &[usize],
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::fuzz::config(dir.path());
    let input = mutate(
        &seeds[i.index(seeds.len())],
        e,
        &seeds[j.index(seeds.len())],
    );
    let whole = check(&cfg, &[&input]).map_err(TestCaseError::fail)?;
    let cut = check(&cfg, &pieces(&input, cuts)).map_err(TestCaseError::fail)?;
    prop_assert!(whole == cut || whole.1 || cut.1);
    Ok(())
}

// The campaigns of `fuzz.rs` in small form: valid sessions (AUTH, STARTTLS, DATA with dots)
// a few edits away from valid.
proptest! {
    /// Replies are code lines, nothing follows the close, the input kept is at most a line,
    /// messages keep their limit; the same in any pieces unless STARTTLS threw input away.
    #[test]
    fn mutated_smtp_sessions_answer_in_code_lines(
        i in any::<proptest::sample::Index>(),
        j in any::<proptest::sample::Index>(),
        e in edits(8),
        cuts in vec(any::<usize>(), 0..8),
    ) {
        mutated_session(&crate::fuzz::smtp_seeds(), crate::fuzz::check_smtp, (i, j), &e, &cuts)?;
    }

    /// The same of POP3: answers +OK or -ERR, the input kept at most a line.
    #[test]
    fn mutated_pop3_sessions_keep_their_invariants(
        i in any::<proptest::sample::Index>(),
        j in any::<proptest::sample::Index>(),
        e in edits(8),
        cuts in vec(any::<usize>(), 0..8),
    ) {
        mutated_session(&crate::fuzz::pop3_seeds(), crate::fuzz::check_pop3, (i, j), &e, &cuts)?;
    }
}
