//! The mail plugin as real peers see it: what an audit against postfix, dovecot, getmail,
//! fetchmail and curl found, each pinned with a client CI has (Python, curl, raw sockets).

use std::time::Duration;

use crate::mail::{Mail, new_files, py};
use crate::support::*;

/// A Python SMTP/POP3 dialogue: `talk(port, [line, ...])` sends each line (CRLF added) and
/// prints the whole reply to it, multi-line replies joined by `|`.
const TALK: &str = r#"
import socket, sys
def talk(port, lines, pop=False):
    s = socket.create_connection(('127.0.0.1', port), timeout=10)
    f = s.makefile('rb')
    def reply():
        got = []
        while True:
            l = f.readline().decode('latin1').rstrip('\r\n')
            got.append(l)
            if pop or len(l) < 4 or l[3] != '-':
                return '|'.join(got)
    print('<', reply())
    for l in lines:
        s.sendall(l.encode('latin1') + b'\r\n')
        print(l, '->', reply())
    s.close()
"#;

fn talk(port: &str, body: &str) -> String {
    let (code, out, err) = py(&format!("{TALK}\n{body}"), &[port]);
    assert_eq!(code, 0, "{out}{err}");
    out
}

/// Final delivery writes the envelope sender as `Return-Path:` (RFC 5321 4.4 "MUST"), first,
/// as postfix's local and virtual delivery and dovecot do: without it getmail and fetchmail
/// said `Return-Path: <unknown>`, and the envelope sender was lost once the message was
/// stored. A quoted local part is quoted again, and `<>` stays `<>`.
#[test]
fn final_delivery_writes_the_return_path_first() {
    let m = Mail::start(&["-E"]);
    let out = talk(
        &m.smtp(),
        r#"
talk(int(sys.argv[1]), ['EHLO c', 'MAIL FROM:<"a b"@x.test>', 'RCPT TO:<joe@example.com>', 'DATA',
    'Subject: one\r\n\r\nbody\r\n.', 'MAIL FROM:<>', 'RCPT TO:<ann@example.com>', 'DATA',
    'Subject: bounce\r\n\r\nbody\r\n.', 'QUIT'])
"#,
    );
    assert_eq!(out.matches("-> 250 2.0.0").count(), 2, "{out}");
    let joe = new_files(&m.maildir("joe"));
    assert!(
        joe[0].starts_with(
            "Return-Path: <\"a b\"@x.test>\nDelivered-To: joe@example.com\nReceived: from c "
        ),
        "{joe:?}"
    );
    let ann = new_files(&m.maildir("ann"));
    assert!(
        ann[0].starts_with("Return-Path: <>\nDelivered-To: ann@example.com\n"),
        "{ann:?}"
    );
    // What a POP3 client reads, as getmail takes the sender from it.
    let (code, out, err) = py(
        r#"
import poplib, sys
p = poplib.POP3('127.0.0.1', int(sys.argv[1]), timeout=10)
p.user('joe@example.com'); p.pass_('secret')
print(p.retr(1)[1][0])
p.quit()
"#,
        &[&m.pop3()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("b'Return-Path: <\"a b\"@x.test>'"), "{out}");
}

/// The `Received:` header names the recipient only when there is one (RFC 5321 4.4's FOR
/// takes one path), as postfix does. It listed them all, and every copy has the same header:
/// each recipient saw the others, a Bcc recipient included.
#[test]
fn received_shows_no_recipient_to_another() {
    let m = Mail::start(&[]);
    let (code, out, err) = py(
        r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
s.helo('c')
# ann is a Bcc: in the envelope only.
print(s.sendmail('a@b.test', ['joe@example.com', 'ann@example.com'], 'To: joe@example.com\r\nSubject: bcc\r\n\r\nhi\r\n'))
s.quit()
"#,
        &[&m.smtp()],
    );
    assert_eq!(code, 0, "{out}{err}");
    let joe = new_files(&m.maildir("joe"));
    assert_eq!(joe.len(), 1);
    assert!(!joe[0].contains("ann@"), "the Bcc shows: {}", joe[0]);
    assert!(
        joe[0].contains(")\n\tby mx.test with smtp id "),
        "{}",
        joe[0]
    );
    let ann = new_files(&m.maildir("ann"));
    assert!(
        !ann[0].replace("To: joe@example.com\n", "").contains("joe@"),
        "{}",
        ann[0]
    );
    // One recipient: named, as before.
    let (code, out, err) = py(
        r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
s.helo('c')
print(s.sendmail('a@b.test', ['ann@example.com'], 'Subject: one\r\n\r\nhi\r\n'))
s.quit()
"#,
        &[&m.smtp()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        new_files(&m.maildir("ann"))
            .iter()
            .any(|f| f.contains("\n\tfor <ann@example.com>; ")),
        "{:?}",
        new_files(&m.maildir("ann"))
    );
}

/// AUTH LOGIN with an initial response, the user name (`curl --sasl-ir`, RFC 4954 4), as
/// dovecot's and Cyrus's SASL take it: it was ignored and the user name asked for again,
/// so curl answered with the password and then had nothing left to give.
#[test]
fn auth_login_takes_the_user_name_as_an_initial_response() {
    let m = Mail::start(&["-E", "--auth", "memory:joe:secret"]);
    let msg = m.dir.path().join("msg");
    std::fs::write(&msg, "Subject: curl\r\n\r\nbody\r\n").unwrap();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-m",
            "20",
            "-v",
            "--sasl-ir",
            "--login-options",
            "AUTH=LOGIN",
        ])
        .arg(format!("smtp://127.0.0.1:{}", m.smtp()))
        .args(["--mail-from", "a@b.test", "--mail-rcpt", "joe@example.com"])
        .args(["--user", "joe:secret", "-T"])
        .arg(&msg)
        .output()
        .expect("curl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("> AUTH LOGIN am9l") && err.contains("< 235 2.7.0"),
        "{err}"
    );
    assert_eq!(new_files(&m.maildir("joe")).len(), 1);
}

/// A client that sends its message and goes before reading the 250 has its
/// message delivered, as postfix does, exactly once; and the log says so. The line was
/// the session's, written when it heard back from the disk, and a session whose
/// connection was gone by then never did: a message in the mailbox the log never
/// mentioned.
#[test]
fn a_message_whose_client_left_before_its_250_is_delivered_once_and_logged() {
    let m = Mail::start(&[]);
    let mut s = connect(format!("127.0.0.1:{}", m.smtp()).parse().unwrap());
    send(
        &mut s,
        b"HELO c\r\nMAIL FROM:<gone@b.test>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\n\
          Subject: gone\r\n\r\nbody\r\n.\r\n",
    );
    // Closed at once: the server's first reply is answered with a reset, while the message
    // is on its way to the disk.
    drop(s);
    let logged = m.srv.wait_until(
        |l| {
            l.iter()
                .any(|l| l.contains("from <gone@b.test> to <joe@example.com>"))
        },
        Duration::from_secs(10),
    );
    assert_eq!(new_files(&m.maildir("joe")).len(), 1);
    assert!(logged.is_some(), "no log line: {:?}", m.srv.lines());
}

/// `RCPT TO:<Postmaster>`, with no domain, MUST be accepted (RFC 5321 4.5.1); it got 501
/// Invalid recipient address, as `<>` does. It is the postmaster of the default domain (or
/// the first): delivered where `postmaster@DOMAIN` is, and 550 where that is refused.
#[test]
fn rcpt_to_postmaster_without_a_domain_is_ours() {
    let m = Mail::start(&["-u", "postmaster=pm"]);
    let out = talk(
        &m.smtp(),
        r#"
talk(int(sys.argv[1]), ['HELO c', 'MAIL FROM:<a@b.test>', 'RCPT TO:<>', 'RCPT TO:<Postmaster>',
    'DATA', 'Subject: pm\r\n\r\nbody\r\n.', 'QUIT'])
"#,
    );
    assert!(out.contains("RCPT TO:<> -> 501"), "{out}");
    assert!(out.contains("RCPT TO:<Postmaster> -> 250"), "{out}");
    let pm = new_files(&m.maildir("postmaster"));
    assert_eq!(pm.len(), 1, "{out}");
    assert!(
        pm[0].contains("Delivered-To: postmaster@example.com\n")
            && pm[0].contains("\tfor <postmaster@example.com>; "),
        "{}",
        pm[0]
    );
    let m = Mail::start(&[]);
    let out = talk(
        &m.smtp(),
        r#"
talk(int(sys.argv[1]), ['HELO c', 'MAIL FROM:<a@b.test>', 'RCPT TO:<postmaster>', 'QUIT'])
"#,
    );
    assert!(out.contains("RCPT TO:<postmaster> -> 550"), "{out}");
}

/// A Maildir has other readers (a MUA such as mutt, an IMAP server): one that moves a
/// message from new/ to cur/ with flags while a POP3 session has it listed must not make
/// RETR fail nor DELE come to nothing. They did: RETR said -ERR, and QUIT said "-ERR Some
/// deleted messages were not removed" and left the message to be fetched again. A message
/// another reader removed is gone, as the client wanted.
#[test]
fn pop3_follows_a_message_another_reader_moved_or_removed() {
    let m = Mail::start(&[]);
    for subject in ["one", "two"] {
        let (code, out, err) = py(
            &format!(
                "import smtplib, sys\ns = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)\n\
                 s.helo('c'); s.sendmail('a@b.test', ['joe@example.com'], 'Subject: {subject}\\r\\n\\r\\nhi\\r\\n'); s.quit()"
            ),
            &[&m.smtp()],
        );
        assert_eq!(code, 0, "{out}{err}");
    }
    let (code, out, err) = py(
        r#"
import poplib, os, sys
md = sys.argv[2]
p = poplib.POP3('127.0.0.1', int(sys.argv[1]), timeout=10)
p.user('joe@example.com'); p.pass_('secret')
print('stat', p.stat()[0])
first, second = sorted(os.listdir(md + '/new'))
# mutt reads the first: new/ to cur/, seen; another reader removes the second.
os.rename(md + '/new/' + first, md + '/cur/' + first + ':2,S')
os.remove(md + '/new/' + second)
print('retr', [l for l in p.retr(1)[1] if l.startswith(b'Subject')])
p.dele(1); p.dele(2)
print('quit', p.quit())
print('left', os.listdir(md + '/cur'), os.listdir(md + '/new'))
"#,
        &[&m.pop3(), m.maildir("joe").to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("stat 2"), "{out}");
    assert!(out.contains("retr [b'Subject: one']"), "{out}");
    assert!(out.contains("quit b'+OK"), "{out}");
    assert!(out.contains("left [] []"), "{out}");
}

/// An aliases file brought from sendmail or postfix often has programs (`|procmail`),
/// files and `:include:` lists, which twistd would run or write and twistrs does not: each
/// is said in the log, with its line, where they were dropped without a word (mail for
/// `lists: joe, |/usr/bin/archive` went to joe alone, silently). A name given twice has
/// both lines' targets, as in twistd (the last line alone counted).
#[test]
fn aliases_twistrs_cannot_deliver_to_are_logged_and_repeated_names_join() {
    let dir = tempfile::tempdir().unwrap();
    let aliases = dir.path().join("aliases");
    std::fs::write(&aliases, "lists: joe, \"|/usr/bin/archive\"\nlists: ann\n").unwrap();
    let m = Mail::start(&["-A", aliases.to_str().unwrap()]);
    assert!(
        m.srv.log_contains(&format!(
            "aliases {}:1: lists: \"|/usr/bin/archive\" is a program",
            aliases.display()
        )),
        "{:?}",
        m.srv.lines()
    );
    let (code, out, err) = py(
        r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
s.helo('c')
print(s.sendmail('a@b.test', ['lists@example.com'], 'Subject: l\r\n\r\nhi\r\n'))
s.quit()
"#,
        &[&m.smtp()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(new_files(&m.maildir("joe")).len(), 1);
    assert_eq!(new_files(&m.maildir("ann")).len(), 1, "both lines count");
}

/// A user added to `passwd/` by hand while running (a file named as DirDBM names it,
/// holding the password) has no Maildir until something makes one. Delivery did not: every
/// message for the user got 451 (postfix deferred and retried, and would bounce after
/// days) until the user logged in over POP3. twistd's domain and postfix's virtual(8) make
/// the Maildir at the first delivery; so does twistrs now.
#[test]
fn a_user_added_by_hand_gets_mail_before_any_pop3_login() {
    let m = Mail::start(&[]);
    let passwd = m.dir.path().join("example.com/passwd");
    // DirDBM's name for "hand": base64, '\n' as '_'.
    std::fs::write(passwd.join("aGFuZA==_"), "pw").unwrap();
    let (code, out, err) = py(
        r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
s.helo('c')
try:
    print('sent', s.sendmail('a@b.test', ['hand@example.com'], 'Subject: h\r\n\r\nhi\r\n'))
except smtplib.SMTPDataError as e:
    print('refused', e.smtp_code)
s.quit()
"#,
        &[&m.smtp()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("sent {}"), "{out}");
    assert_eq!(new_files(&m.maildir("hand")).len(), 1);
}

/// `--max-message-size 0` advertised `SIZE 0`, which RFC 1870 reads as "no limit", and then
/// refused every message with 552. It is now postfix's `message_size_limit = 0`: no limit
/// of its own (a bare `SIZE`, as postfix says it), `--max-data-memory` bounding a message.
#[test]
fn max_message_size_0_is_no_limit_as_in_postfix() {
    let m = Mail::start(&["-E", "--max-message-size", "0"]);
    let (code, out, err) = py(
        r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
s.ehlo('c')
print('size', repr(s.esmtp_features.get('size')))
print(s.sendmail('a@b.test', ['joe@example.com'], 'Subject: big\r\n\r\n' + ('x' * 70 + '\r\n') * 200000))
s.quit()
"#,
        &[&m.smtp()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("size ''\n{}"), "{out}");
    assert_eq!(new_files(&m.maildir("joe")).len(), 1);
}

/// A message line of up to 16,384 octets (twistd's limit; HTML mailers send lines far past
/// RFC 5321's 1000, and postfix takes any length) is delivered and read back over POP3 as
/// sent; one octet more is refused with 500 and the session goes on. Before, any line over
/// 1000 octets refused the message, which twistd and postfix deliver.
#[test]
fn message_lines_up_to_twistds_limit_are_delivered_whole() {
    let m = Mail::start(&["-E"]);
    let out = talk(
        &m.smtp(),
        r#"
long = 'a' * 5000 + 'b' * 11384
talk(int(sys.argv[1]), ['EHLO c', 'MAIL FROM:<x@y.test>', 'RCPT TO:<joe@example.com>', 'DATA',
    'Subject: long\r\n\r\n' + long + '\r\nend\r\n.',
    'MAIL FROM:<x@y.test>', 'RCPT TO:<joe@example.com>', 'DATA', long + 'c\r\n.', 'NOOP', 'QUIT'])
"#,
    );
    assert_eq!(out.matches("-> 250 2.0.0 Delivery").count(), 1, "{out}");
    assert!(out.contains("-> 500 5.5.2 Line too long (16384"), "{out}");
    assert!(out.contains("NOOP -> 250"), "{out}");
    let joe = new_files(&m.maildir("joe"));
    assert_eq!(joe.len(), 1, "{joe:?}");
    let long = format!("{}{}", "a".repeat(5000), "b".repeat(11384));
    assert!(
        joe[0].ends_with(&format!("\n\n{long}\nend\n")),
        "{}",
        joe[0].len()
    );
    let pop = talk(
        &m.pop3(),
        r#"
import poplib
poplib._MAXLINE = 20000
p = poplib.POP3('127.0.0.1', int(sys.argv[1]), timeout=10)
p.user('joe@example.com')
p.pass_('secret')
resp, lines, octets = p.retr(1)
print('longest', max(len(l) for l in lines), 'octets', octets)
p.quit()
"#,
    );
    assert!(pop.contains("longest 16384 "), "{pop}");
}

/// RFC 2449 6.6: CAPA says PIPELINING (dovecot does too), and a client may send a whole
/// session in one write: every command is answered, once and in order, behind the mailbox
/// being opened at PASS, behind a RETR of a message of megabytes streamed in chunks, and
/// behind QUIT's removals; a client that half-closes after its commands still gets them all.
#[test]
fn pop3_answers_a_whole_session_pipelined_in_one_write() {
    let m = Mail::start(&[]);
    let (code, out, err) = py(
        r#"
import smtplib, socket, sys
big = 'Subject: big\r\n\r\n' + ''.join(
    ('.dot %d\r\n' if i % 5 == 0 else 'line %d of the big one\r\n') % i for i in range(100000))
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=30)
s.helo('c')
for body in ['Subject: one\r\n\r\nhi\r\n', big, 'Subject: three\r\n\r\n.\r\nbye\r\n']:
    s.sendmail('a@b.test', ['joe@example.com'], body)
s.quit()

MULTI = ('CAPA', 'LIST', 'RETR', 'TOP')
def session(tag, cmds, half_close):
    c = socket.create_connection(('127.0.0.1', int(sys.argv[2])), timeout=30)
    f = c.makefile('rb')
    f.readline()
    c.sendall(b''.join(x.encode() + b'\r\n' for x in cmds))
    if half_close:
        c.shutdown(socket.SHUT_WR)
    for cmd in cmds[:-1] if cmds[-1] == 'NOOP' else cmds:
        first = f.readline()
        lines = []
        if first.startswith(b'+OK') and cmd.startswith(MULTI) and cmd != 'LIST 1':
            for _ in range(1000000):
                l = f.readline()
                if l in (b'.\r\n', b''):
                    break
                lines.append(l[1:] if l.startswith(b'.') else l)
        print(tag, cmd, '->', first.decode().strip(), len(lines))
        if cmd == 'CAPA':
            print(tag, 'capa', [l.decode().strip() for l in lines])
        if b'Subject: big\r\n' in lines[:10]:
            print(tag, 'big whole', b''.join(lines).endswith(big.encode()))
    print(tag, 'then', f.read())

session('a', ['CAPA', 'USER joe@example.com', 'PASS secret', 'STAT', 'LIST', 'RETR 2',
    'UIDL 1', 'TOP 1 0', 'DELE 1', 'NOOP', 'LIST 1', 'RETR 3', 'QUIT', 'NOOP'], False)
session('b', ['USER joe@example.com', 'PASS secret', 'RETR 1', 'STAT', 'DELE 2', 'QUIT'], True)
"#,
        &[&m.smtp(), &m.pop3()],
    );
    assert_eq!(code, 0, "{out}{err}");
    let want = [
        "a capa ['TOP', 'USER', 'UIDL', 'RESP-CODES', 'PIPELINING']",
        "a USER joe@example.com -> +OK USER accepted, send PASS 0",
        "a PASS secret -> +OK Maildrop has 3 messages 0",
        "a LIST -> +OK 3",
        "a RETR 2 -> +OK ",
        "a big whole True",
        "a UIDL 1 -> +OK 1 ",
        "a DELE 1 -> +OK message 1 deleted 0",
        "a NOOP -> +OK 0",
        "a LIST 1 -> -ERR No such message 0",
        "a RETR 3 -> +OK ",
        "a QUIT -> +OK Bye 0",
        "a then b''",
        "b PASS secret -> +OK Maildrop has 2 messages 0",
        "b big whole True",
        "b DELE 2 -> +OK message 2 deleted 0",
        "b QUIT -> +OK Bye 0",
        "b then b''",
    ];
    let mut at = 0;
    for w in want {
        let found = out[at..]
            .find(w)
            .unwrap_or_else(|| panic!("{w:?}, in order: {out}"));
        at += found + w.len();
    }
    let joe = new_files(&m.maildir("joe"));
    assert_eq!(joe.len(), 1, "QUIT removed the ones deleted");
    assert!(joe[0].contains("Subject: big"));
}

/// A UTF-8 local part in another case reaches its user, as postfix 3.7 delivers it with
/// smtputf8_enable (`Ölaf@` and `ÖLAF@` to a virtual mailbox `ölaf@`, `Ø` refused 550):
/// before, its ASCII letters alone were folded and `Ölaf@` got 550. An ASCII name keeps the
/// ASCII rule (`STRASSE` does not reach `straße`, which postfix's ICU folding would); a
/// POP3 login folds the same way.
#[test]
fn a_utf8_local_part_in_another_case_reaches_its_user() {
    let dir = tempfile::tempdir().unwrap();
    let aliases = dir.path().join("aliases");
    std::fs::write(&aliases, "Ålias: ölaf\n").unwrap();
    let m = Mail::start(&[
        "-E",
        "-u",
        "ölaf=pw",
        "-u",
        "straße=pw",
        "-A",
        aliases.to_str().unwrap(),
    ]);
    let (code, out, err) = py(
        r#"
import poplib, smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
s.ehlo('c')
for to in ['Ölaf', 'ÖLAF', 'ålias', 'ØLAF', 'STRAẞE', 'STRASSE']:
    try:
        s.sendmail('a@b.test', [to + '@example.com'], ('Subject: ' + to + '\r\n\r\nhi\r\n').encode(), mail_options=['SMTPUTF8'])
        print(to, 250)
    except smtplib.SMTPRecipientsRefused as e:
        print(to, e.recipients[to + '@example.com'][0])
s.quit()
p = poplib.POP3('127.0.0.1', int(sys.argv[2]), timeout=10)
p.user('ÖLAF@example.com'); p.pass_('pw')
print('pop3', p.stat()[0])
p.quit()
"#,
        &[&m.smtp(), &m.pop3()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "Ölaf 250",
            "ÖLAF 250",
            "ålias 250",
            "ØLAF 550",
            "STRAẞE 250",
            "STRASSE 550",
            "pop3 3"
        ]
    );
    let olaf = new_files(&m.maildir("ölaf"));
    assert_eq!(olaf.len(), 3, "{olaf:?}");
    assert!(
        olaf.iter()
            .all(|f| f.contains("Delivered-To: ölaf@example.com\n")),
        "{olaf:?}"
    );
    assert_eq!(new_files(&m.maildir("straße")).len(), 1);
}

/// SMTPUTF8 (RFC 6531), as postfix offers it: Python's smtplib sends `MAIL ... SMTPUTF8` and
/// UTF-8 addresses, which reach a UTF-8 user and alias; the stored copy's trace headers name
/// them in UTF-8 and say `with UTF8SMTP`, and the message's own UTF-8 headers (RFC 6532)
/// come out of POP3 octet for octet as they went in. Without it, postfix 3.7 bounced such
/// mail (5.6.7, SMTPUTF8 required but not offered). UTF-8 sent without the parameter is
/// taken as postfix takes it (postfix relays pre-SMTPUTF8 mail on that way); an address
/// whose octets are not UTF-8 gets RFC 6531 3.5's 550/553 5.6.7, where it was taken before.
#[test]
fn smtputf8_addresses_and_utf8_headers_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let aliases = dir.path().join("aliases");
    std::fs::write(&aliases, "ålias: jöe\n").unwrap();
    let m = Mail::start(&["-E", "-u", "jöe=pw", "-A", aliases.to_str().unwrap()]);
    let (code, out, err) = py(
        r#"
import poplib, smtplib, sys
msg = 'From: Jöran <jöran@b.test>\r\nTo: jöe@example.com\r\nSubject: grüße ✓\r\n\r\nbody ü\r\n'.encode()
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
s.ehlo('c')
print('offered', s.has_extn('smtputf8'))
print('one', s.sendmail('jöran@b.test', ['jöe@example.com'], msg, mail_options=['SMTPUTF8']))
print('alias', s.sendmail('a@b.test', ['ålias@example.com', 'JöE@example.com'], msg, mail_options=['SMTPUTF8', 'BODY=8BITMIME']))
try:
    s.sendmail('a@b.test', ['JØE@example.com'], msg, mail_options=['SMTPUTF8'])
except smtplib.SMTPRecipientsRefused as e:
    print('refused', e.recipients)
s.quit()
p = poplib.POP3('127.0.0.1', int(sys.argv[2]), timeout=10)
p.user('jöe@example.com'); p.pass_('pw')
lines = p.retr(1)[1]
print('stored', lines[:6])
print('intact', b'\r\n'.join(lines).endswith(msg.rstrip(b'\r\n')))
p.quit()
"#,
        &[&m.smtp(), &m.pop3()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("offered True"), "{out}");
    assert!(out.contains("one {}") && out.contains("alias {}"), "{out}");
    assert!(
        out.contains(
            "refused {'JØE@example.com': (550, b'5.1.1 Cannot receive for specified address')}"
        ),
        "no such user: {out}"
    );
    assert!(out.contains("intact True"), "{out}");
    let stored = out.lines().find(|l| l.starts_with("stored")).unwrap();
    let want = r"b'Return-Path: <j\xc3\xb6ran@b.test>', b'Delivered-To: j\xc3\xb6e@example.com', b'Received: from c ([127.0.0.1] helo=c)', b'\tby mx.test with UTF8SMTP id ";
    assert!(stored.contains(want), "{stored}");
    assert!(
        stored.contains(r"for <j\xc3\xb6e@example.com>; "),
        "{stored}"
    );
    let maildir = m.dir.path().join("example.com/jöe");
    assert_eq!(new_files(&maildir).len(), 2, "the alias's copy too, once");
    // Without SMTPUTF8: UTF-8 taken (`with esmtp`), Latin-1 refused at MAIL and at RCPT.
    let out = talk(
        &m.smtp(),
        r#"
u = lambda s: s.encode().decode('latin1')
talk(int(sys.argv[1]), ['EHLO c', 'MAIL FROM:<j\xf6ran@b.test>', u('MAIL FROM:<jöran@b.test>'),
    'RCPT TO:<j\xf6e@example.com>', u('RCPT TO:<jöe@example.com>'), 'DATA',
    u('Subject: grüße\r\n\r\nbody\r\n.'), 'QUIT'])
"#,
    );
    let refused = "Non-ASCII address not permitted: not UTF-8";
    assert!(out.contains(&format!("-> 550 5.6.7 {refused}")), "{out}");
    assert!(out.contains(&format!("-> 553 5.6.7 {refused}")), "{out}");
    assert!(out.contains("-> 250 2.0.0 Delivery in progress"), "{out}");
    let copies = new_files(&maildir);
    assert_eq!(copies.len(), 3);
    assert!(copies.iter().all(|c| c.contains("\nSubject: grüße")));
    assert_eq!(
        copies
            .iter()
            .filter(|c| c.contains(" with esmtp id "))
            .count(),
        1
    );
    assert!(
        m.srv.log_contains(&format!("127.0.0.1: 553 {refused}")),
        "{:?}",
        m.srv.lines()
    );
}
