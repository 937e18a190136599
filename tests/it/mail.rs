//! The mail plugin against Python's smtplib and poplib on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// Runs a Python script with arguments (bounded by its own timeouts); (status, stdout).
fn py(script: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("timeout")
        .args(["120", "python3", "-c", script])
        .args(args)
        .output()
        .expect("python3");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Mail {
    srv: Server,
    dir: tempfile::TempDir,
}

impl Mail {
    fn start(extra: &[&str]) -> Mail {
        let dir = tempfile::tempdir().unwrap();
        let dom = format!("example.com={}", dir.path().join("example.com").display());
        let mut args = vec![
            "mail",
            "-H",
            "mx.test",
            "-d",
            &dom,
            "-u",
            "joe=secret",
            "-u",
            "ann=pw",
            "-s",
            "tcp:0:interface=127.0.0.1",
            "-p",
            "tcp:0:interface=127.0.0.1",
        ];
        args.extend_from_slice(extra);
        let srv = Server::start(&args);
        Mail { srv, dir }
    }
    fn smtp(&self) -> String {
        self.srv.ports()[0].to_string()
    }
    fn pop3(&self) -> String {
        self.srv.ports()[1].to_string()
    }
    fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("example.com").join(user)
    }
}

fn new_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("new"))
        .map(|d| {
            d.flatten()
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn smtplib_delivers_and_poplib_retrieves() {
    let m = Mail::start(&["-E", "--auth", "memory:joe:secret"]);
    let (code, out, err) = py(
        r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
code, _ = s.ehlo('client.test')
f = s.esmtp_features
print('features', sorted(k for k in f))
print('size', f.get('size'))
s.login('joe', 'secret')
print('vrfy', s.verify('joe')[0])
print('noop', s.noop()[0])
refused = s.sendmail('a@b.test', ['joe@example.com', 'ann@example.com'], 'Subject: one\r\n\r\n.dot first\r\nline two\r\n')
print('refused', refused)
for rcpt in ['x@evil.test', 'nobody@example.com']:
    try:
        s.sendmail('a@b.test', [rcpt], 'x')
    except smtplib.SMTPRecipientsRefused as e:
        print('550' if e.recipients[rcpt][0] == 550 else e.recipients, rcpt)
print('rset', s.rset()[0])
s.quit()
"#,
        &[&m.smtp()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("features ['8bitmime', 'auth', 'enhancedstatuscodes', 'pipelining', 'size']"),
        "{out}"
    );
    assert!(
        out.contains("vrfy 252") && out.contains("noop 250") && out.contains("rset 250"),
        "{out}"
    );
    assert!(out.contains("refused {}"), "{out}");
    assert!(
        out.contains("550 x@evil.test") && out.contains("550 nobody@example.com"),
        "never a relay: {out}"
    );
    let joe = new_files(&m.maildir("joe"));
    assert_eq!(joe.len(), 1);
    assert!(joe[0].starts_with("Delivered-To: joe@example.com\nReceived: from client.test ([127.0.0.1] helo=client.test)\n\tby mx.test with esmtpa"), "{}", joe[0]);
    assert!(
        joe[0].ends_with("Subject: one\n\n.dot first\nline two\n"),
        "dot-unstuffed: {}",
        joe[0]
    );
    assert_eq!(new_files(&m.maildir("ann")).len(), 1);

    let (code, out, err) = py(
        r#"
import poplib, sys, time, hashlib
p = poplib.POP3('127.0.0.1', int(sys.argv[1]), timeout=10)
banner = p.getwelcome()
p.user('joe@example.com'); p.pass_('secret')
print('stat', p.stat())
resp, lines, octets = p.retr(1)
print('retr', lines[-2:], octets)
print('top', p.top(1, 0)[1][-1:])
print('uidl', len(p.uidl()[1]))
p.dele(1)
p.quit()
p = poplib.POP3('127.0.0.1', int(sys.argv[1]), timeout=10)
ts = p.getwelcome().split()[-1].decode()
p.apop('ann@example.com', 'pw')
print('apop', p.stat())
p.quit()
p = poplib.POP3('127.0.0.1', int(sys.argv[1]), timeout=10)
p.user('joe@example.com')
t = time.time()
try:
    p.pass_('wrong')
except poplib.error_proto as e:
    print('wrong', e, round(time.time() - t, 1))
"#,
        &[&m.pop3()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("stat (1, "), "{out}");
    assert!(out.contains("retr [b'.dot first', b'line two']"), "{out}");
    assert!(
        out.contains("top [b'']"),
        "TOP 1 0: headers and the blank line: {out}"
    );
    assert!(out.contains("apop (1, "), "{out}");
    let wrong = out.lines().find(|l| l.starts_with("wrong")).expect(&out);
    let secs: f64 = wrong.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        wrong.contains("-ERR") && secs >= 0.9,
        "a delayed -ERR: {wrong}"
    );
    assert!(
        new_files(&m.maildir("joe")).is_empty(),
        "DELE took effect at QUIT"
    );
}

#[test]
fn smtp_limits_size_line_recipients_errors_and_idle() {
    let m = Mail::start(&[
        "-E",
        "--max-message-size",
        "2000",
        "--max-recipients",
        "2",
        "--timeout",
        "1",
    ]);
    let (code, out, err) = py(
        r#"
import smtplib, socket, sys, time
port = int(sys.argv[1])
s = smtplib.SMTP('127.0.0.1', port, timeout=10)
s.ehlo('c')
try:
    s.sendmail('a@b', ['joe@example.com'], 'Subject: big\r\n\r\n' + ('x' * 70 + '\r\n') * 40)
except smtplib.SMTPException as e:
    print('size', e)
s.mail('a@b'); s.rcpt('joe@example.com'); s.rcpt('ann@example.com')
print('rcpts', s.rcpt('joe@example.com')[0])
s.rset()
s.mail('a@b'); s.rcpt('joe@example.com')
print('long', s.data('Subject: l\r\n\r\n' + 'y' * 1200 + '\r\n')[0])
s.quit()
c = socket.create_connection(('127.0.0.1', port)); c.settimeout(10)
f = c.makefile('rb')
f.readline()
for i in range(10):
    c.sendall(b'BOGUS\r\n')
lines = [f.readline() for _ in range(11)]
print('errors', lines[-1].split()[:2], f.readline())
c2 = socket.create_connection(('127.0.0.1', port)); c2.settimeout(10)
g = c2.makefile('rb'); g.readline()
t = time.time()
print('idle', g.readline().split()[:2], round(time.time() - t, 1), g.readline())
"#,
        &[&m.smtp()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("size (552"), "{out}");
    assert!(out.contains("rcpts 452"), "{out}");
    assert!(out.contains("long 500"), "{out}");
    assert!(
        out.contains("errors [b'421', b'mx.test'] b''"),
        "closed after 10 bad commands: {out}"
    );
    let idle = out.lines().find(|l| l.starts_with("idle")).expect(&out);
    assert!(
        idle.starts_with("idle [b'421', b'mx.test']") && idle.ends_with("b''"),
        "{idle}"
    );
    assert!(new_files(&m.maildir("joe")).is_empty());
    assert!(
        m.srv.log_contains("500 Command not implemented"),
        "bad commands are logged"
    );
}

#[test]
fn domains_defaults_aliases_and_postmaster() {
    let dir = tempfile::tempdir().unwrap();
    let aliases = dir.path().join("aliases");
    std::fs::write(&aliases, "team: joe, ann\n").unwrap();
    let other = format!("other.test={}", dir.path().join("other").display());
    let m = Mail::start(&[
        "-A",
        aliases.to_str().unwrap(),
        "-b",
        "-D",
        "-d",
        &other,
        "-u",
        "bob=b",
    ]);
    let (code, out, err) = py(
        r#"
import smtplib, poplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
s.helo('c')
print(s.sendmail('a@b', ['team@example.com', 'stranger@example.com', 'bob@other.test'], 'Subject: t\r\n\r\nhi\r\n'))
print(s.sendmail('a@b', ['joe@unlisted.test'], 'Subject: u\r\n\r\nhi\r\n'))
try:
    s.sendmail('a@b', ['nobody@other.test'], 'x')
except smtplib.SMTPRecipientsRefused as e:
    print('other', e.recipients['nobody@other.test'][0])
s.quit()
p = poplib.POP3('127.0.0.1', int(sys.argv[2]), timeout=10)
p.user('ann'); p.pass_('pw')
print('bare', p.stat()[0])
p.quit()
"#,
        &[&m.smtp(), &m.pop3()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("{}"), "all accepted: {out}");
    assert!(
        out.contains("other 550"),
        "-b applies to example.com only: {out}"
    );
    assert!(
        out.contains("bare 1"),
        "a bare POP3 name is in the default domain: {out}"
    );
    assert_eq!(
        new_files(&m.maildir("joe")).len(),
        2,
        "the alias and the default domain"
    );
    assert_eq!(new_files(&m.maildir("ann")).len(), 1);
    assert_eq!(new_files(&m.maildir("postmaster")).len(), 1, "-b");
    assert_eq!(new_files(&dir.path().join("other/bob")).len(), 1);
}

#[test]
fn twistd_option_errors() {
    let d = tempfile::tempdir().unwrap();
    let dom = format!("x.test={}", d.path().join("x").display());
    for (args, want) in [
        (
            vec!["-n", "mail", "-u", "joe=pw", "-d", dom.as_str()],
            "Specify a domain before specifying users",
        ),
        (vec!["-n", "mail", "-E"], "--esmtp requires --hostname"),
        (
            vec!["-n", "mail", "--no-smtp", "--no-pop3"],
            "You cannot disable all protocols",
        ),
        (vec!["-n", "mail", "-R", "/tmp/q"], "never relays"),
        (
            vec!["-n", "mail", "--auth", "unix"],
            "only file:PATH and memory:USER:PASS",
        ),
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // A mail directory laid out as twistd's: the DirDBM file for joe is am9l_.
    let (code, _, _) = run(&[
        "-n",
        "--pidfile=",
        "mail",
        "-d",
        &dom,
        "-u",
        "joe=pw",
        "--no-pop3",
        "-s",
        "unix:/nonexistent/dir/s.sock",
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        std::fs::read_to_string(d.path().join("x/passwd/am9l_")).unwrap(),
        "pw"
    );
    assert!(d.path().join("x/joe/new").is_dir() && d.path().join("x/joe/.Trash/cur").is_dir());
}

#[test]
fn concurrent_sessions_on_several_mailboxes_and_the_pop3_lock() {
    let m = Mail::start(&[]);
    let (code, out, err) = py(
        r#"
import smtplib, poplib, sys, threading
port = int(sys.argv[1])
errors = []
def send(user, n):
    try:
        s = smtplib.SMTP('127.0.0.1', port, timeout=20)
        s.helo('c')
        for i in range(n):
            s.sendmail('a@b', [user + '@example.com'], 'Subject: %s %d\r\n\r\nbody %d\r\n' % (user, i, i))
        s.quit()
    except Exception as e:
        errors.append(repr(e))
ts = [threading.Thread(target=send, args=(u, 10)) for u in ['joe', 'ann'] for _ in range(4)]
[t.start() for t in ts]; [t.join(60) for t in ts]
print('errors', errors)
a = poplib.POP3('127.0.0.1', int(sys.argv[2]), timeout=10)
a.user('joe@example.com'); a.pass_('secret')
b = poplib.POP3('127.0.0.1', int(sys.argv[2]), timeout=10)
b.user('joe@example.com')
try:
    b.pass_('secret'); print('lock not held')
except poplib.error_proto as e:
    print('locked', e)
a.quit()
b.user('joe@example.com'); print('after', b.pass_('secret')[:3])
"#,
        &[&m.smtp(), &m.pop3()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("errors []"), "{out}");
    assert_eq!(new_files(&m.maildir("joe")).len(), 40);
    assert_eq!(new_files(&m.maildir("ann")).len(), 40);
    assert!(out.contains("locked b'-ERR [IN-USE]"), "{out}");
    assert!(
        out.contains("after b'+OK'"),
        "free once the first session quit: {out}"
    );
}

#[test]
fn kill_9_during_a_burst_loses_no_acknowledged_message() {
    let m = Mail::start(&[]);
    let pid = m.srv.pid().to_string();
    let (code, out, err) = py(
        r#"
import smtplib, sys, threading, os, signal, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
acked, lock = [], threading.Lock()
def send(t):
    try:
        s = smtplib.SMTP('127.0.0.1', port, timeout=10)
        s.helo('c')
        for i in range(10000):
            subj = 'm-%d-%d' % (t, i)
            s.sendmail('a@b', ['joe@example.com'], 'Subject: %s\r\n\r\n%s\r\n' % (subj, ('payload %s ' % subj) * 20))
            with lock:
                acked.append(subj)
    except Exception:
        pass
ts = [threading.Thread(target=send, args=(t,)) for t in range(8)]
[t.start() for t in ts]
deadline = time.time() + 20
while time.time() < deadline:
    with lock:
        if len(acked) >= 150:
            break
    time.sleep(0.001)
os.kill(pid, signal.SIGKILL)
[t.join(20) for t in ts]
print('\n'.join(acked))
"#,
        &[&m.smtp(), &pid],
    );
    assert_eq!(code, 0, "{err}");
    let acked: Vec<&str> = out.lines().filter(|l| l.starts_with("m-")).collect();
    assert!(acked.len() >= 150, "the burst ran: {}", acked.len());
    let files = new_files(&m.maildir("joe"));
    for subj in &acked {
        let body = format!(
            "Subject: {subj}\n\n{}\n",
            format!("payload {subj} ").repeat(20)
        );
        assert!(
            files.iter().any(|f| f.ends_with(&body)),
            "acknowledged {subj} is in new/, intact"
        );
    }
    for f in &files {
        assert!(
            f.starts_with("Delivered-To: joe@example.com\n") && f.ends_with(" \n"),
            "no partial file in new/: {f:?}"
        );
    }
}

#[test]
fn a_message_reaches_all_its_mailboxes_or_none() {
    // Issue 8.13: ann's new/ cannot take the message (it is a file): the message to joe and
    // ann gets 451 and leaves no copy in joe's new/, so the client's retry cannot duplicate
    // it; the next message, to joe alone, is delivered.
    let m = Mail::start(&[]);
    let ann_new = m.maildir("ann").join("new");
    std::fs::remove_dir(&ann_new).unwrap();
    std::fs::write(&ann_new, b"not a directory").unwrap();
    let (code, out, err) = py(
        r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
s.helo('c')
try:
    s.sendmail('a@b', ['joe@example.com', 'ann@example.com'], 'Subject: both\r\n\r\nhi\r\n')
    print('both: 250')
except smtplib.SMTPDataError as e:
    print('both:', e.smtp_code)
s.sendmail('a@b', ['joe@example.com'], 'Subject: joe alone\r\n\r\nhi\r\n')
print('joe alone: 250')
s.quit()
"#,
        &[&m.smtp()],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["both: 451", "joe alone: 250"]
    );
    let files = new_files(&m.maildir("joe"));
    assert_eq!(files.len(), 1, "only the second message: {files:?}");
    assert!(files[0].contains("Subject: joe alone"), "{files:?}");
    for user in ["joe", "ann"] {
        let tmp = std::fs::read_dir(m.maildir(user).join("tmp")).unwrap();
        assert_eq!(tmp.count(), 0, "nothing left in {user}'s tmp/");
    }
}

#[test]
fn a_graceful_stop_finishes_the_message_in_flight() {
    let mut m = Mail::start(&[]);
    let pid = m.srv.pid().to_string();
    let (code, out, err) = py(
        r#"
import socket, sys, os, signal, time
c = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); c.settimeout(10)
f = c.makefile('rb'); f.readline()
for cmd in [b'HELO c', b'MAIL FROM:<a@b>', b'RCPT TO:<joe@example.com>', b'DATA']:
    c.sendall(cmd + b'\r\n'); f.readline()
c.sendall(b'Subject: in flight\r\n\r\nfirst half\r\n')
os.kill(int(sys.argv[2]), signal.SIGTERM)
time.sleep(0.3)
c.sendall(b'second half\r\n.\r\n')
print(f.readline().split()[0], f.readline().split()[0], f.readline())
"#,
        &[&m.smtp(), &pid],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "b'250' b'421' b''",
        "acknowledged, then told the server stops, then closed"
    );
    let st = m.srv.wait(Duration::from_secs(10)).expect("stopped");
    assert!(!st.success());
    let files = new_files(&m.maildir("joe"));
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with("Subject: in flight\n\nfirst half\nsecond half\n"));
}
