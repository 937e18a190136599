//! Mutation fuzzing of whole SMTP and POP3 sessions from valid ones (AUTH, STARTTLS/STLS,
//! DATA with dot-stuffing), by hand:
//! `FUZZ_SECS=300 cargo test --release -p twistrs-mail fuzz_ -- --ignored --nocapture`
//! (`FUZZ_SEED` replays a run). `prop.rs` keeps a small form of it in every `cargo test`.

use std::collections::HashMap;
use std::rc::Rc;

use base64::Engine;
use twistrs_core::testing::mutate::{campaign, mutate};
use twistrs_core::testing::pieces;

use crate::config::{MailConfig, Tls, fixture};
use crate::pop3::{self, Pop3};
use crate::smtp::{self, Smtp};

/// Valid SMTP sessions: plain, ESMTP with AUTH PLAIN and LOGIN, STARTTLS, dots in DATA.
pub(crate) fn smtp_seeds() -> Vec<Vec<u8>> {
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    vec![
        b"HELO client\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nRCPT TO:<x@elsewhere.org>\r\nDATA\r\nSubject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n".to_vec(),
        format!(
            "EHLO c\r\nAUTH PLAIN {}\r\nMAIL FROM:<a@b> SIZE=99\r\nRCPT TO:<joe@example.com>\r\nDATA\r\nSubject: x\r\n\r\n..\r\n.x\r\n.\r\nRSET\r\nVRFY joe\r\nQUIT\r\n",
            b64(b"\0joe\0secret")
        )
        .into_bytes(),
        format!(
            "EHLO c\r\nAUTH LOGIN\r\n{}\r\n{}\r\nMAIL FROM:<>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\nbody\nbare lf\r\n.\r\nQUIT\r\n",
            b64(b"joe"),
            b64(b"secret")
        )
        .into_bytes(),
        b"EHLO c\r\nAUTH PLAIN\r\nAGpvZQBzZWNyZXQ=\r\nAUTH LOGIN\r\n*\r\nHELP\r\nQUIT\r\n".to_vec(),
        b"EHLO c\r\nSTARTTLS\r\nEHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\n.\r\nQUIT\r\n".to_vec(),
    ]
}

/// Valid POP3 sessions: USER/PASS, APOP, STLS, every transaction command.
pub(crate) fn pop3_seeds() -> Vec<Vec<u8>> {
    let digest = format!("{:x}", md5::compute(b"<1.2@h>secret"));
    vec![
        b"CAPA\r\nUSER joe\r\nPASS secret\r\nSTAT\r\nLIST\r\nLIST 1\r\nUIDL\r\nUIDL 2\r\nRETR 1\r\nTOP 2 1\r\nDELE 1\r\nRSET\r\nNOOP\r\nQUIT\r\n".to_vec(),
        format!("APOP joe {digest}\r\nRETR 2\r\nDELE 2\r\nLIST 2\r\nQUIT\r\n").into_bytes(),
        b"STLS\r\nUSER joe@example.com\r\nPASS no\r\nUSER joe\r\nPASS secret\r\nTOP 1 0\r\nQUIT\r\n"
            .to_vec(),
    ]
}

pub(crate) fn config(dir: &std::path::Path) -> Rc<MailConfig> {
    let d = fixture::example_domain(dir);
    let joe = d.path.join("joe");
    std::fs::write(joe.join("new/1.M1P1Q1.h,S=20"), "Subject: one\n\n.one\n").expect("mail");
    std::fs::write(
        joe.join("new/2.M1P1Q2.h,S=24"),
        "Subject: two\n\nbody\nmore\n",
    )
    .expect("mail");
    Rc::new(MailConfig {
        hostname: "mx.test".into(),
        esmtp: true,
        auth: Some(HashMap::from([("joe".to_string(), "secret".to_string())])),
        default: Some(0),
        max_message: 300,
        max_recipients: 2,
        ..fixture::config(vec![d])
    })
}

/// Lines of replies: each a 3-digit code, a space or a dash (or nothing), CRLF.
fn smtp_replies_ok(out: &[u8]) -> Result<(), String> {
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        return Err(format!(
            "a reply without CRLF: {:?}",
            String::from_utf8_lossy(out)
        ));
    }
    for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let ok = line.len() >= 4
            && line[..3].iter().all(u8::is_ascii_digit)
            && matches!(line[3], b' ' | b'-' | b'\r')
            && line.ends_with(b"\r")
            && !line[..line.len() - 1].contains(&b'\r');
        if !ok {
            return Err(format!("a reply line {:?}", String::from_utf8_lossy(line)));
        }
    }
    Ok(())
}

/// A session checker: `check_smtp` or `check_pop3`.
pub(crate) type Check = fn(&Rc<MailConfig>, &[&[u8]]) -> Result<(Vec<u8>, bool), String>;

/// A whole SMTP session over `parts`, checked: replies well formed, nothing after the close,
/// input kept at most a line (outside DATA, which the reader consumes as it comes), every
/// message within the size limit. Also says whether STARTTLS was taken, after which the
/// outcome depends on the pieces: what came in the same piece behind it is thrown away.
pub(crate) fn check_smtp(cfg: &Rc<MailConfig>, parts: &[&[u8]]) -> Result<(Vec<u8>, bool), String> {
    let mut s = Smtp::new(cfg.clone(), "127.0.0.1".into());
    s.set_tls(Tls::Offered);
    let mut out = Vec::new();
    s.greeting(&mut out);
    let mut closed = false;
    let mut tls = false;
    for p in parts {
        s.feed(p);
        while let Some(a) = s.step(&mut out) {
            match a {
                smtp::Action::Deliver(job) => {
                    // Our Received: header (a few hundred bytes) and the message.
                    let len = job.head.len() + job.data.len();
                    if len > cfg.max_message + 400 || job.targets.len() > 2 {
                        return Err(format!("a job of {len} bytes"));
                    }
                    s.delivered(Ok(()), &mut out);
                }
                smtp::Action::Close => closed = true,
                smtp::Action::StartTls => tls = true,
                smtp::Action::Delay(_) => {}
            }
        }
        if s.pending_input() > crate::data::MAX_LINE.max(smtp::MAX_LINE) + 2 && !closed {
            return Err(format!("{} bytes pending", s.pending_input()));
        }
        if closed {
            break;
        }
    }
    let before = out.len();
    if closed {
        s.feed(b"NOOP\r\n");
        if s.step(&mut out).is_some() || out.len() != before {
            return Err("an answer after the close".into());
        }
    }
    smtp_replies_ok(&out)?;
    Ok((out, tls))
}

/// Carries out one POP3 action as the server would, disk work done at once (deletions are
/// not: the next case sees the same mailbox); notes STLS in `tls`. True once the session is
/// over.
pub(crate) fn pop3_act(p: &mut Pop3, a: pop3::Action, out: &mut Vec<u8>, tls: &mut bool) -> bool {
    match a {
        pop3::Action::Delay(_, r) => out.extend_from_slice(&r),
        pop3::Action::Close => return true,
        pop3::Action::StartTls => *tls = true,
        pop3::Action::Open(dir) => p.opened(crate::mailbox::open(&dir), out),
        pop3::Action::Send { path, size, top } => match std::fs::read(path) {
            Ok(d) => {
                out.extend_from_slice(format!("+OK {size} octets\r\n").as_bytes());
                let mut e = crate::mailbox::Encoder::new(top);
                e.feed(&d, out);
                e.finish(out);
                p.sent(Ok(()), out);
            }
            Err(e) => p.sent(Err(e.to_string()), out),
        },
        pop3::Action::Update(_) => return p.updated(0, out).is_some(),
    }
    false
}

/// A whole POP3 session over `parts`, disk work done at once; checked: every answer to a
/// command starts +OK or -ERR, the input kept is at most a line. Also says whether STLS was
/// taken (see `check_smtp`).
pub(crate) fn check_pop3(cfg: &Rc<MailConfig>, parts: &[&[u8]]) -> Result<(Vec<u8>, bool), String> {
    let mut p = Pop3::new(cfg.clone(), "<1.2@h>".into());
    p.set_tls(Tls::Offered);
    let mut out = Vec::new();
    p.greeting(&mut out);
    let mut tls = false;
    'feed: for piece in parts {
        p.feed(piece);
        while let Some(a) = p.step(&mut out) {
            if pop3_act(&mut p, a, &mut out, &mut tls) {
                break 'feed;
            }
        }
        if p.pending_input() > 512 + 2 {
            return Err(format!("{} bytes pending", p.pending_input()));
        }
    }
    if !out.starts_with(b"+OK") || !out.ends_with(b"\r\n") {
        return Err(format!("{:?}", String::from_utf8_lossy(&out)));
    }
    Ok((out, tls))
}

#[test]
#[ignore]
fn fuzz_smtp() {
    let dir = tempfile::tempdir().expect("a directory");
    let cfg = config(dir.path());
    let seeds = smtp_seeds();
    campaign("smtp", |rng| {
        let seed = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let input = mutate(seed, &rng.edits(8), other);
        let cuts: Vec<usize> = (0..rng.below(8)).map(|_| rng.below(1 << 20)).collect();
        let whole = check_smtp(&cfg, &[&input]);
        let cut = check_smtp(&cfg, &pieces(&input, &cuts));
        let input_text = String::from_utf8_lossy(&input);
        match (whole, cut) {
            (Ok(a), Ok(b)) if a == b || a.1 || b.1 => Ok(()),
            (Ok(_), Ok(_)) => Err(format!("differs in pieces: {input_text:?} {cuts:?}")),
            (Err(e), _) | (_, Err(e)) => Err(format!("{e}: {input_text:?} {cuts:?}")),
        }
    });
}

#[test]
#[ignore]
fn fuzz_pop3() {
    let dir = tempfile::tempdir().expect("a directory");
    let cfg = config(dir.path());
    let seeds = pop3_seeds();
    campaign("pop3", |rng| {
        let seed = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let input = mutate(seed, &rng.edits(8), other);
        let cuts: Vec<usize> = (0..rng.below(8)).map(|_| rng.below(1 << 20)).collect();
        let whole = check_pop3(&cfg, &[&input]);
        let cut = check_pop3(&cfg, &pieces(&input, &cuts));
        let input_text = String::from_utf8_lossy(&input);
        match (whole, cut) {
            (Ok(a), Ok(b)) if a == b || a.1 || b.1 => Ok(()),
            (Ok(_), Ok(_)) => Err(format!("differs in pieces: {input_text:?} {cuts:?}")),
            (Err(e), _) | (_, Err(e)) => Err(format!("{e}: {input_text:?} {cuts:?}")),
        }
    });
}
