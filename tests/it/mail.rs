//! The mail plugin against Python's smtplib and poplib on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// Runs a Python script with arguments (bounded by its own timeouts); (status, stdout).
pub(crate) fn py(script: &str, args: &[&str]) -> (i32, String, String) {
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

pub(crate) struct Mail {
    pub(crate) srv: Server,
    pub(crate) dir: tempfile::TempDir,
}

impl Mail {
    /// example.com with joe (secret) and ann (pw), SMTP and POP3 on ports of their own.
    pub(crate) fn start(extra: &[&str]) -> Mail {
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
        // `-s` and `-p` are two listeners, which `Server::start` does not count (it counts
        // `--listen`): wait for both ports before a test reads the second.
        let want = 2 + extra
            .iter()
            .filter(|a| ["-s", "-p", "--smtp", "--pop3"].contains(a))
            .count();
        srv.wait_until(|l| count_ports(l) >= want, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("mail did not start: {:?}", srv.lines()));
        Mail { srv, dir }
    }
    pub(crate) fn smtp(&self) -> String {
        self.srv.ports()[0].to_string()
    }
    pub(crate) fn pop3(&self) -> String {
        self.srv.ports()[1].to_string()
    }
    pub(crate) fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("example.com").join(user)
    }
}

pub(crate) fn new_files(dir: &Path) -> Vec<String> {
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
        out.contains(
            "features ['8bitmime', 'auth', 'enhancedstatuscodes', 'pipelining', 'size', 'smtputf8']"
        ),
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
    assert!(joe[0].starts_with("Return-Path: <a@b.test>\nDelivered-To: joe@example.com\nReceived: from client.test ([127.0.0.1] helo=client.test)\n\tby mx.test with esmtpa"), "{}", joe[0]);
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
print('long', s.data('Subject: l\r\n\r\n' + 'y' * 16385 + '\r\n')[0])
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
            vec!["-n", "mail", "-d", "example.com"],
            "Argument to --maildirdbmdomain must be of the form 'name=path'",
        ),
        (
            vec!["-n", "mail", "-d", dom.as_str(), "-u", "joe"],
            "Argument to --user must be of the form 'user=password'",
        ),
        (
            vec!["-n", "mail", "--auth", "unix"],
            "only anonymous, file:PATH and memory:USER:PASS",
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

/// `--no-smtp` and `--no-pop3` turn off the default listeners only, as in twistd: with both,
/// `-s` and `-p` endpoints are still served (twistd's error is for no endpoint at all).
#[test]
fn no_smtp_and_no_pop3_leave_the_given_endpoints() {
    let srv = Server::spawn(&[
        "--pidfile=",
        "mail",
        "--no-smtp",
        "--no-pop3",
        "-s",
        "tcp:0:interface=127.0.0.1",
        "-p",
        "tcp:0:interface=127.0.0.1",
    ]);
    srv.wait_until(|l| count_ports(l) >= 2, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("both did not start: {:?}", srv.lines()));
    let ports = srv.ports();
    let mut banners = Vec::new();
    for port in ports {
        let mut c = connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        let mut b = [0u8; 4];
        std::io::Read::read_exact(&mut c, &mut b).unwrap();
        banners.push(String::from_utf8_lossy(&b).into_owned());
    }
    banners.sort();
    assert_eq!(banners, ["+OK ", "220 "], "{:?}", srv.lines());
}

#[test]
fn without_h_the_greeting_names_the_fqdn_as_twistds() {
    // twistd greets with socket.getfqdn(): with `127.0.1.1 mx.example.com mx` in /etc/hosts
    // and the node name mx, `220 mx.example.com`; the node name alone was used. The host is
    // made so in namespaces of the server's own (a UTS one, and a mount one for the file).
    if nobody_as_root("without_h_the_greeting_names_the_fqdn_as_twistds").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(wrapper) = private_hosts(
        "without_h_the_greeting_names_the_fqdn_as_twistds",
        dir.path(),
        "127.0.0.1 localhost\n127.0.1.1 mx.example.com mx\n",
        Some("mx"),
    ) else {
        return;
    };
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let srv = Server::start_wrapped(
        &wrapper,
        &["mail", "-s", "tcp:0:interface=127.0.0.1", "--no-pop3"],
    );
    let mut c = connect(srv.addr());
    let mut greeting = [0u8; 64];
    let n = std::io::Read::read(&mut c, &mut greeting).unwrap();
    let greeting = String::from_utf8_lossy(&greeting[..n]);
    assert!(greeting.starts_with("220 mx.example.com "), "{greeting}");
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
            f.starts_with("Return-Path: <")
                && f.contains(">\nDelivered-To: joe@example.com\n")
                && f.ends_with(" \n"),
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
# The stop has begun once the listener is closed (bounded: 5 s).
deadline = time.time() + 5
while time.time() < deadline:
    try:
        socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=1).close()
        time.sleep(0.01)
    except OSError:
        break
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

/// `--max-data-memory` bounds the message data of all sessions together: a message that
/// does not fit beside another held open in DATA is read whole and refused with 452, and its
/// retry on the same session goes through once the other is delivered. A client that declares
/// its SIZE (smtplib does) hears it at MAIL, before the transfer: 452 if it does not fit now,
/// 552 if it never could.
#[test]
fn messages_past_the_data_memory_budget_get_452_and_a_retry_gets_250() {
    let m = Mail::start(&["-E", "--max-data-memory", "100000"]);
    let (code, out, err) = py(
        r#"
import smtplib, sys, time
port = int(sys.argv[1])
body = lambda s: 'Subject: %s\r\n\r\n' % s + ('x' * 78 + '\r\n') * 1000
a = smtplib.SMTP('127.0.0.1', port, timeout=10)
a.ehlo('a'); a.mail('a@b'); a.rcpt('joe@example.com')
a.putcmd('data'); print('a data', a.getreply()[0])
whole = body('first').encode()
a.send(whole[:-80])
b = smtplib.SMTP('127.0.0.1', port, timeout=10)
b.ehlo('b')
# Until the server has taken in a's 80 KB, a declared 30 KB still fits: ask until it does
# not (bounded), which is the server's own count of what is held.
for i in range(200):
    code, msg = b.mail('c@d', ['SIZE=30000'])
    if code != 250:
        break
    b.rset()
    time.sleep(0.05)
print('b size', code, msg.decode())
code, msg = b.mail('c@d', ['SIZE=200000'])
print('b huge', code, msg.decode())
# Without SIZE the whole message is read, then refused.
b.mail('c@d'); b.rcpt('joe@example.com')
code, msg = b.data(body('second'))
print('b data', code, msg.decode())
try:
    b.sendmail('c@d', ['joe@example.com'], body('second'))
    print('b 250')
except smtplib.SMTPSenderRefused as e:
    print('b sendmail', e.smtp_code)
a.send(whole[-80:] + b'.\r\n')
print('a end', a.getreply()[0])
b.sendmail('c@d', ['joe@example.com'], body('second'))
print('b retry 250')
a.quit(); b.quit()
"#,
        &[&m.smtp()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("a data 354"), "{out}");
    assert!(
        out.contains("b size 452 4.3.1 Insufficient system storage"),
        "{out}"
    );
    assert!(out.contains("b huge 552 5.3.4"), "{out}");
    assert!(
        out.contains("b data 452 4.3.1 Insufficient system storage"),
        "{out}"
    );
    assert!(
        out.contains("b sendmail 452"),
        "smtplib declares SIZE: {out}"
    );
    assert!(
        out.contains("a end 250") && out.contains("b retry 250"),
        "{out}"
    );
    let joe = new_files(&m.maildir("joe"));
    assert_eq!(joe.len(), 2, "nothing lost, nothing twice");
    for (subject, text) in ["first", "second"].iter().zip(&joe) {
        let body = format!(
            "Subject: {subject}\n\n{}",
            format!("{}\n", "x".repeat(78)).repeat(1000)
        );
        assert!(text.ends_with(&body), "{subject}: whole");
    }
    for what in [
        "452 message of",
        "452 MAIL with SIZE=30000",
        "552 MAIL with SIZE=200000",
    ] {
        assert!(
            m.srv
                .wait_until(
                    |l| l.iter().any(|l| l.contains(what)),
                    Duration::from_secs(5)
                )
                .is_some(),
            "a line in the log: {what}"
        );
    }
}

/// Reads lines from `s` until one starts with `code` (bounded by the socket's timeout).
pub(crate) fn until_code(s: &mut std::net::TcpStream, code: &str) -> String {
    use std::io::Read;
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    for _ in 0..100_000 {
        match s.read(&mut b) {
            Ok(1) => {
                got.push(b[0]);
                let text = String::from_utf8_lossy(&got);
                if text.ends_with("\r\n")
                    && text.lines().last().is_some_and(|l| l.starts_with(code))
                {
                    break;
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_half_closed_client_still_gets_its_250_and_221() {
    let m = Mail::start(&[]);
    let mut s = connect(format!("127.0.0.1:{}", m.smtp()).parse().unwrap());
    until_code(&mut s, "220");
    send(
        &mut s,
        b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\n",
    );
    assert!(until_code(&mut s, "354").contains("354"));
    // The message, QUIT, and the client's FIN all at once.
    send(&mut s, b"Subject: last\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let rest = String::from_utf8_lossy(&read_to_end(&mut s)).into_owned();
    assert!(
        rest.starts_with("250 ") && rest.contains("\r\n221 "),
        "every reply due was sent before the close: {rest:?}"
    );
    assert_eq!(new_files(&m.maildir("joe")).len(), 1);
}

/// Sends `bytes` one every 300 ms, stopping when the server says something; what it said
/// and when (bounded: 8 s of trickling at most).
fn trickle(s: &mut std::net::TcpStream, bytes: &[u8]) -> (String, Duration) {
    use std::io::{Read, Write};
    let started = std::time::Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut said = Vec::new();
    let mut buf = [0u8; 512];
    for b in bytes.iter().cycle() {
        if s.write_all(&[*b]).is_err() || started.elapsed() > Duration::from_secs(8) {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                said.extend_from_slice(&buf[..n]);
                if said.ends_with(b"\r\n") {
                    break;
                }
            }
            Err(_) => {}
        }
    }
    (
        String::from_utf8_lossy(&said).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn a_client_that_trickles_bytes_is_cut_at_the_deadline() {
    let m = Mail::start(&["--timeout", "2"]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", m.smtp()).parse().unwrap();
    // One byte every 300 ms keeps the idle timer happy forever; the deadline of a whole
    // command line (and of a whole DATA transfer) does not.
    let mut s = connect(addr);
    until_code(&mut s, "220");
    let (said, took) = trickle(&mut s, b"NOOP NOOP ");
    assert!(
        said.starts_with("421 ") && said.contains("Timeout"),
        "{said:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "cut at the deadline, not after {took:?}"
    );
    let mut s = connect(addr);
    until_code(&mut s, "220");
    send(
        &mut s,
        b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\n",
    );
    assert!(until_code(&mut s, "354").contains("354"));
    let (said, took) = trickle(&mut s, b"slow body\r\n");
    assert!(
        said.starts_with("421 ") && said.contains("Timeout"),
        "{said:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "cut at the deadline, not after {took:?}"
    );
    assert!(new_files(&m.maildir("joe")).is_empty());
    // POP3 the same.
    let mut s = connect(format!("127.0.0.1:{}", m.pop3()).parse().unwrap());
    until_code(&mut s, "+OK");
    let (said, took) = trickle(&mut s, b"USER joe ");
    assert!(said.starts_with("-ERR Timeout"), "{said:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn sessions_per_client_address_are_limited() {
    let m = Mail::start(&["--max-connections-per-client", "3"]);
    for (port, greet, refusal) in [
        (m.smtp(), "220", "421 4.7.0 Too many connections"),
        (m.pop3(), "+OK", "-ERR [SYS/TEMP] Too many connections"),
    ] {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut held: Vec<std::net::TcpStream> = (0..3)
            .map(|_| {
                let mut s = connect(addr);
                assert!(until_code(&mut s, greet).starts_with(greet));
                s
            })
            .collect();
        let mut fourth = connect(addr);
        let said = String::from_utf8_lossy(&read_to_end(&mut fourth)).into_owned();
        assert!(said.starts_with(refusal), "{said:?}");
        // A slot comes back when a session ends.
        drop(held.pop());
        let mut again = None;
        for _ in 0..100 {
            let mut s = connect(addr);
            let first = until_code(&mut s, "");
            if first.starts_with(greet) {
                again = Some(first);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(again.is_some(), "admitted once another session ended");
    }
    assert!(m.srv.log_contains("too many connections, refused"));
    let (code, help, _) = run(&["mail", "--help"]);
    assert_eq!(code, 0);
    assert!(
        help.contains("--max-connections <N>") && help.contains("[default: 1000]"),
        "a default session limit: {help}"
    );
}

/// A session that has said QUIT no longer counts against its address, even while the client
/// has not closed its socket yet: a client that reconnects as soon as it reads 221 (as
/// smtp-source does) is not refused for sessions that are over (postfix counts the same way).
#[test]
fn a_session_that_quit_frees_its_slot_before_the_client_closes() {
    let m = Mail::start(&["--max-connections-per-client", "1"]);
    for (port, greet, bye) in [(m.smtp(), "220", "221"), (m.pop3(), "+OK", "+OK")] {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut first = connect(addr);
        assert!(until_code(&mut first, greet).starts_with(greet));
        send(&mut first, b"QUIT\r\n");
        assert!(until_code(&mut first, bye).starts_with(bye));
        // `first` stays open: the server has closed its end, the client has not.
        let mut second = connect(addr);
        let said = until_code(&mut second, "");
        assert!(said.starts_with(greet), "admitted after QUIT: {said:?}");
        drop(first);
    }
}

#[test]
fn a_smuggled_message_is_content_of_the_real_one() {
    let m = Mail::start(&[]);
    let mut s = connect(format!("127.0.0.1:{}", m.smtp()).parse().unwrap());
    until_code(&mut s, "220");
    send(
        &mut s,
        b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\nreal\r\n\n.\nMAIL FROM:<boss@example.com>\r\nRCPT TO:<ann@example.com>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n",
    );
    let said = String::from_utf8_lossy(&read_to_end(&mut s)).into_owned();
    assert_eq!(said.matches("\r\n250 Delivery").count(), 1, "{said}");
    assert!(
        new_files(&m.maildir("ann")).is_empty(),
        "no second envelope"
    );
    let joe = new_files(&m.maildir("joe"));
    assert_eq!(joe.len(), 1);
    assert!(
        joe[0].contains("\n.\nMAIL FROM:<boss@example.com>\n"),
        "{}",
        joe[0]
    );
    assert!(m.srv.log_contains("bare LF line ends in DATA"));
}

#[test]
fn a_pop3_client_that_never_reads_large_retrs_keeps_memory_flat() {
    let m = Mail::start(&[]);
    // A 50 MB message, put in place as a delivery would leave it.
    let new = m.maildir("joe").join("new");
    let line = "x".repeat(99) + "\n";
    let body = format!("Subject: big\n\n{}", line.repeat(500_000));
    std::fs::write(new.join("1700000000.M1P1Q1.test,S=50000014"), &body).unwrap();
    let base = m.srv.rss_kib();
    let mut s = connect(format!("127.0.0.1:{}", m.pop3()).parse().unwrap());
    until_code(&mut s, "+OK");
    send(&mut s, b"USER joe@example.com\r\nPASS secret\r\n");
    assert!(until_code(&mut s, "+OK Maildrop").contains("+OK Maildrop has 1"));
    // Ten RETRs of it pipelined, and never a byte read.
    send(&mut s, &b"RETR 1\r\n".repeat(10));
    let mut peak = 0;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(m.srv.rss_kib());
    }
    assert!(
        peak < base + 8 * 1024,
        "memory grew from {base} KiB to {peak} KiB for 500 MB owed to one client"
    );
    // The client is served whole once it reads.
    let mut head = Vec::new();
    let mut r = std::io::BufReader::new(&mut s);
    std::io::BufRead::read_until(&mut r, b'\n', &mut head).unwrap();
    assert!(
        head.starts_with(b"+OK 50500016 octets"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

#[test]
fn a_pop3_user_without_a_maildir_yet_can_log_in() {
    let m = Mail::start(&[]);
    // A user added to the passwd database by hand (or by twistd), no maildir yet.
    let passwd = m.dir.path().join("example.com/passwd");
    std::fs::write(passwd.join("bmV3_"), "pw").unwrap(); // "new"
    let (code, out, err) = py(
        r#"
import poplib, sys
p = poplib.POP3('127.0.0.1', int(sys.argv[1]), timeout=10)
p.user('NEW@example.com'); p.pass_('pw')
print('stat', p.stat())
p.quit()
"#,
        &[&m.pop3()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("stat (0, 0)"), "{out}");
    assert!(m.maildir("new").join("new").is_dir(), "made on demand");
}

/// `mail` for joe (password secret) at example.com=`dom`, started through `wrapper`, once
/// both its SMTP and POP3 ports are logged.
fn joe_only(wrapper: &[&str], dom: &str) -> Server {
    let srv = Server::start_wrapped(
        wrapper,
        &[
            "mail",
            "-H",
            "mx.test",
            "-d",
            dom,
            "-u",
            "joe=secret",
            "-s",
            "tcp:0:interface=127.0.0.1",
            "-p",
            "tcp:0:interface=127.0.0.1",
        ],
    );
    srv.wait_until(|l| count_ports(l) >= 2, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("mail did not start: {:?}", srv.lines()));
    srv
}

/// A Maildir on a full disk (a tmpfs of the server's own): the message gets 451 and leaves
/// nothing in new/ or tmp/; POP3 still lists, retrieves and deletes what was delivered
/// before; once the disk has room the client's retry gets 250 and lands once.
#[test]
fn a_full_disk_gets_451_and_leaves_nothing_behind() {
    let disk = tempfile::tempdir().unwrap();
    let Some(wrapper) = small_disk("a_full_disk_gets_451", disk.path(), "256k") else {
        return;
    };
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let dom = format!("example.com={}", disk.path().join("mail").display());
    let srv = joe_only(&wrapper, &dom);
    let (smtp, pop3) = (srv.ports()[0].to_string(), srv.ports()[1].to_string());
    let seen = PathBuf::from(format!("/proc/{}/root", srv.pid()))
        .join(disk.path().strip_prefix("/").unwrap());
    let joe = seen.join("mail").join("joe");
    let (code, out, err) = py(
        r#"
import os, poplib, smtplib, sys
smtp, pop3, disk, joe = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
msg = 'Subject: big\r\n\r\n' + ('x' * 70 + '\r\n') * 300
s = smtplib.SMTP('127.0.0.1', smtp, timeout=10)
s.sendmail('a@b', ['joe@example.com'], msg)
print('first: 250')
fd = os.open(os.path.join(disk, 'filler'), os.O_WRONLY | os.O_CREAT)
try:
    for _ in range(100000):
        os.write(fd, b'\0' * 4096)
except OSError as e:
    print('filled:', e.errno)
os.close(fd)
try:
    s.sendmail('a@b', ['joe@example.com'], msg)
    print('full: 250')
except smtplib.SMTPDataError as e:
    print('full:', e.smtp_code)
print('new:', len(os.listdir(os.path.join(joe, 'new'))), 'tmp:', len(os.listdir(os.path.join(joe, 'tmp'))))
p = poplib.POP3('127.0.0.1', pop3, timeout=10)
p.user('joe@example.com')
p.pass_('secret')
print('stat:', p.stat()[0])
print('retr:', b'Subject: big' in p.retr(1)[1])
p.dele(1)
p.quit()
os.unlink(os.path.join(disk, 'filler'))
s.sendmail('a@b', ['joe@example.com'], msg)
print('retry: 250')
s.quit()
"#,
        &[&smtp, &pop3, seen.to_str().unwrap(), joe.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}\n{:?}", srv.lines());
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "first: 250",
            "filled: 28",
            "full: 451",
            "new: 1 tmp: 0",
            "stat: 1",
            "retr: True",
            "retry: 250"
        ]
    );
    assert_eq!(new_files(&joe).len(), 1, "the retry alone");
    assert_eq!(std::fs::read_dir(joe.join("tmp")).unwrap().count(), 0);
    assert!(
        srv.log_contains("No space left on device"),
        "{:?}",
        srv.lines()
    );
}

/// A message larger than RLIMIT_FSIZE allows (systemd's LimitFSIZE=): 451 for it alone, not
/// the whole server killed by SIGXFSZ; the next message is delivered.
#[test]
fn a_message_past_the_file_size_limit_gets_451_and_the_server_lives() {
    let dir = tempfile::tempdir().unwrap();
    let dom = format!("example.com={}", dir.path().join("example.com").display());
    let srv = joe_only(&["prlimit", "--fsize=65536"], &dom);
    let (code, out, err) = py(
        r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
try:
    s.sendmail('a@b', ['joe@example.com'], 'Subject: big\r\n\r\n' + ('x' * 70 + '\r\n') * 2000)
    print('big: 250')
except smtplib.SMTPDataError as e:
    print('big:', e.smtp_code)
s.sendmail('a@b', ['joe@example.com'], 'Subject: small\r\n\r\nhi\r\n')
print('small: 250')
s.quit()
"#,
        &[&srv.ports()[0].to_string()],
    );
    assert_eq!(code, 0, "{err}\n{:?}", srv.lines());
    assert_eq!(out.lines().collect::<Vec<_>>(), ["big: 451", "small: 250"]);
    let joe = dir.path().join("example.com").join("joe");
    let files = new_files(&joe);
    assert_eq!(files.len(), 1, "the small one alone");
    assert!(files[0].contains("Subject: small"));
    assert_eq!(std::fs::read_dir(joe.join("tmp")).unwrap().count(), 0);
    assert!(srv.log_contains("File too large"), "{:?}", srv.lines());
}

/// An aliases file named relative to the start directory is still the one read when it
/// changes after `-d` (`--rundir`) has moved the process: an alias added while running works.
#[test]
fn a_relative_aliases_file_is_reread_after_rundir() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("aliases"), "team: joe\n").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let srv = Server::spawn_in(
        dir.path(),
        &[
            "--pidfile=",
            "-d",
            elsewhere.path().to_str().unwrap(),
            "mail",
            "-d",
            "example.com=maildirs",
            "-u",
            "joe=pw",
            "-A",
            "aliases",
            "-s",
            "tcp:0:interface=127.0.0.1",
            "--no-pop3",
        ],
    );
    srv.wait_until(|l| count_ports(l) >= 1, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("mail did not start: {:?}", srv.lines()));
    // RCPT's reply for `to`, on a new session.
    let rcpt = |to: &str| {
        let c = connect(srv.addr());
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut w = c;
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        write!(
            w,
            "HELO t\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<{to}@example.com>\r\n"
        )
        .unwrap();
        for _ in 0..3 {
            line.clear();
            r.read_line(&mut line).unwrap();
        }
        line.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(rcpt("team"), "250");
    assert_eq!(rcpt("crew"), "550");
    std::fs::write(dir.path().join("aliases"), "team: joe\ncrew: joe\n").unwrap();
    let t = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("aliases"))
        .and_then(|f| f.set_modified(t))
        .unwrap();
    assert_eq!(rcpt("crew"), "250", "{:?}", srv.lines());
    assert!(
        !srv.lines().iter().any(|l| l.contains("No such file")),
        "{:?}",
        srv.lines()
    );
}

#[test]
fn a_password_guesser_gets_five_auths_per_session() {
    // Failed AUTHs were answered 535 at once, as many as a client pipelined, with a NOOP
    // between them resetting the bad-command count: a guesser tried thousands of passwords
    // a second on one connection. Each failure now waits a second for its 535, as POP3's
    // failed logins do, and the fifth closes it with 421 (POP3 closes after three failed
    // logins); smtplib, which tries PLAIN and then LOGIN for each
    // password, still logs in with a right password after two wrong ones.
    let m = Mail::start(&["-E", "--auth", "memory:joe:secret"]);
    let (code, out, err) = py(
        r#"
import base64, smtplib, socket, sys, time
port = int(sys.argv[1])
bad = b"AUTH PLAIN " + base64.b64encode(b"\0joe\0wrong") + b"\r\n"
c = socket.create_connection(('127.0.0.1', port)); c.settimeout(3)
f = c.makefile('rb')
f.readline()
t0 = time.monotonic()
c.sendall(b"EHLO c\r\n" + (bad + b"NOOP\r\n") * 10)
codes = []
while len(codes) < 40:
    try:
        l = f.readline()
    except socket.timeout:
        break
    if not l:
        break
    if l[3:4] == b' ':
        codes.append(l[:3].decode())
print('guesser', ' '.join(codes[1:]))
# Each failure but the last waited a second before its 535: four seconds at least.
print('slow', time.monotonic() - t0 >= 3.9)
s = smtplib.SMTP('127.0.0.1', port, timeout=10)
s.ehlo('c')
for pw in ('no', 'nope', 'secret'):
    t0 = time.monotonic()
    try:
        print('login', s.login('joe', pw)[0])
    except smtplib.SMTPAuthenticationError as e:
        print('login', e.smtp_code)
# The right password is answered at once.
print('fast', time.monotonic() - t0 < 0.5)
s.quit()
"#,
        &[&m.smtp()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("guesser 535 250 535 250 535 250 535 250 535 421\n"),
        "closed at the fifth failure: {out}"
    );
    assert!(out.contains("login 535\nlogin 535\nlogin 235"), "{out}");
    assert!(
        out.contains("slow True") && out.contains("fast True"),
        "{out}"
    );
    assert!(m.srv.log_contains("5 failed AUTHs, closing"));
}

/// A mail daemon (`twistrs [extra] mail`, no `-n`: pidfile and log in its own directory),
/// its maildirs' directory, and its SMTP and POP3 ports once every process serves.
fn mail_daemon(extra: &[&str]) -> (Daemon, tempfile::TempDir, String, String) {
    let boxes = tempfile::tempdir().unwrap();
    let dom = format!("example.com={}", boxes.path().join("example.com").display());
    let mut args: Vec<&str> = extra.to_vec();
    args.extend_from_slice(&[
        "mail",
        "-H",
        "mx.test",
        "-d",
        &dom,
        "-u",
        "joe=secret",
        "-s",
        "tcp:0:interface=127.0.0.1",
        "-p",
        "tcp:0:interface=127.0.0.1",
    ]);
    let d = Daemon::start(&args);
    let workers = extra.windows(2).any(|w| w[0] == "--workers" && w[1] != "1");
    let end = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let log = d.log();
        let mut ports: Vec<u16> = Vec::new();
        for p in log.lines().filter_map(|l| l.split(" starting on ").nth(1)) {
            if let Ok(p) = p.trim().parse()
                && !ports.contains(&p)
            {
                ports.push(p);
            }
        }
        if ports.len() >= 2 && (!workers || log.contains("workers serve.")) {
            return (d, boxes, ports[0].to_string(), ports[1].to_string());
        }
        assert!(
            std::time::Instant::now() < end,
            "mail did not start:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True once PID `pid` is gone (or a zombie), waiting up to `secs`.
fn gone_within(pid: u32, secs: f64) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs_f64(secs);
    loop {
        if stat(pid).is_none_or(|(s, _)| s == 'Z') {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An SMTP session with one message before `twistrs ARGV[3]` (run by the script, in the
/// daemon's directory) and two after, then QUIT; prints each reply code, or `closed`.
const SESSION_ACROSS: &str = r#"
import smtplib, subprocess, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=20)
s.helo('c')
def send(n):
    try:
        codes = [s.mail('a@b')[0], s.rcpt('joe@example.com')[0]]
        if codes == [250, 250]:
            codes.append(s.data(('Subject: %s\r\n\r\nbody %s\r\n' % (n, n)).encode())[0])
        return ','.join(map(str, codes))
    except smtplib.SMTPServerDisconnected:
        return 'closed'
print('before', send('one'))
r = subprocess.run([sys.argv[2], sys.argv[3]], cwd=sys.argv[4], capture_output=True, timeout=60)
print('ctl', r.returncode)
print('after', send('two'), send('three'))
try:
    print('quit', s.quit()[0])
except smtplib.SMTPServerDisconnected:
    print('quit closed')
"#;

fn smtp_session_across_a_restart(workers: &str) {
    let (d, boxes, smtp, _) = mail_daemon(&["--workers", workers]);
    let old = d.pid();
    let dir = d.dir.path().display().to_string();
    let (code, out, err) = py(SESSION_ACROSS, &[&smtp, BIN, "restart", &dir]);
    assert_eq!(code, 0, "{err}\n{}", d.log());
    assert_eq!(
        out,
        "before 250,250,250\nctl 0\nafter 250,250,250 250,250,250\nquit 221\n",
        "{}",
        d.log()
    );
    assert_ne!(d.pid(), old, "restarted");
    let files = new_files(&boxes.path().join("example.com").join("joe"));
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(
        files.iter().any(|f| f.ends_with("body three\n")),
        "{files:?}"
    );
    // The session's QUIT was the old process's last work: it ends then, not at its deadline.
    assert!(gone_within(old, 5.0), "{}", d.log());
}

#[test]
fn an_smtp_session_open_across_a_restart_goes_on() {
    // The old process answered the next command with 421, as at a stop: a sender with a
    // batch deferred the rest (postfix's reload lets the session run on).
    smtp_session_across_a_restart("1");
}

#[test]
fn an_smtp_session_open_across_a_workers_restart_goes_on() {
    smtp_session_across_a_restart("2");
}

#[test]
fn an_smtp_session_open_across_a_stop_is_told_421() {
    let (d, _boxes, smtp, _) = mail_daemon(&[]);
    let dir = d.dir.path().display().to_string();
    let (code, out, err) = py(SESSION_ACROSS, &[&smtp, BIN, "stop", &dir]);
    assert_eq!(code, 0, "{err}\n{}", d.log());
    assert!(
        out.starts_with("before 250,250,250\nctl 0\nafter closed closed\n"),
        "{out}\n{}",
        d.log()
    );
}

#[test]
fn a_graceful_stop_by_twistrs_stop_finishes_the_message_in_flight() {
    let (d, boxes, smtp, _) = mail_daemon(&[]);
    let dir = d.dir.path().display().to_string();
    let (code, out, err) = py(
        r#"
import socket, subprocess, sys, time
c = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); c.settimeout(10)
f = c.makefile('rb'); f.readline()
for cmd in [b'HELO c', b'MAIL FROM:<a@b>', b'RCPT TO:<joe@example.com>', b'DATA']:
    c.sendall(cmd + b'\r\n'); f.readline()
c.sendall(b'Subject: in flight\r\n\r\nfirst half\r\n')
stop = subprocess.Popen([sys.argv[2], 'stop'], cwd=sys.argv[3],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
# The stop has begun once the listener is closed (bounded: 5 s).
deadline = time.time() + 5
while time.time() < deadline:
    try:
        socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=1).close()
        time.sleep(0.01)
    except OSError:
        break
c.sendall(b'second half\r\n.\r\n')
print(f.readline().split()[0], f.readline().split()[0], f.readline())
print('stop', stop.wait(timeout=30))
"#,
        &[&smtp, BIN, &dir],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "b'250' b'421' b''\nstop 0\n", "{}", d.log());
    let files = new_files(&boxes.path().join("example.com").join("joe"));
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with("Subject: in flight\n\nfirst half\nsecond half\n"));
}

#[test]
fn a_pop3_session_open_across_a_restart_goes_on() {
    let (d, boxes, smtp, pop3) = mail_daemon(&[]);
    let old = d.pid();
    let dir = d.dir.path().display().to_string();
    let (code, out, err) = py(
        r#"
import poplib, smtplib, subprocess, sys
with smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=20) as s:
    s.sendmail('a@b', ['joe@example.com'], b'Subject: kept\r\n\r\nhello\r\n')
p = poplib.POP3('127.0.0.1', int(sys.argv[2]), timeout=20)
p.user('joe@example.com'); p.pass_('secret')
print('stat', p.stat()[0])
r = subprocess.run([sys.argv[3], 'restart'], cwd=sys.argv[4], capture_output=True, timeout=60)
print('ctl', r.returncode)
print('retr', p.retr(1)[1][-1])
print('dele', p.dele(1)[:3])
print('quit', p.quit()[:3])
"#,
        &[&smtp, &pop3, BIN, &dir],
    );
    assert_eq!(code, 0, "{err}\n{}", d.log());
    assert_eq!(
        out,
        "stat 1\nctl 0\nretr b'hello'\ndele b'+OK'\nquit b'+OK'\n",
        "{}",
        d.log()
    );
    let joe = boxes.path().join("example.com").join("joe");
    let left = |sub: &str| std::fs::read_dir(joe.join(sub)).map_or(0, |d| d.count());
    assert_eq!((left("new"), left("cur")), (0, 0), "deleted at QUIT");
    assert!(gone_within(old, 5.0), "{}", d.log());
}

#[test]
fn a_session_idle_across_a_restart_is_told_421_before_the_old_processs_deadline() {
    let (d, _boxes, smtp, _) = mail_daemon(&["--shutdown-timeout", "3"]);
    let old = d.pid();
    let dir = d.dir.path().display().to_string();
    let (code, out, err) = py(
        r#"
import socket, subprocess, sys, time
c = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); c.settimeout(10)
f = c.makefile('rb'); f.readline()
c.sendall(b'HELO c\r\n'); f.readline()
r = subprocess.run([sys.argv[2], 'restart'], cwd=sys.argv[3], capture_output=True, timeout=60)
t = time.time()
print('ctl', r.returncode)
print(f.readline()[:4], f.readline(), round(time.time() - t, 1) < 3.0)
"#,
        &[&smtp, BIN, &dir],
    );
    assert_eq!(code, 0, "{err}\n{}", d.log());
    assert_eq!(out, "ctl 0\nb'421 ' b'' True\n", "{}", d.log());
    assert!(gone_within(old, 3.0), "{}", d.log());
    assert!(!d.log().contains("Shutdown deadline passed"), "{}", d.log());
}

#[test]
fn a_stop_during_a_restarts_drain_ends_the_old_process_promptly() {
    // The old process served the session on until its deadline's margin: `stop`, which
    // waits for every holder of the pidfile, waited with it.
    let (d, _boxes, smtp, _) = mail_daemon(&[]);
    let old = d.pid();
    let dir = d.dir.path().display().to_string();
    let (code, out, err) = py(
        r#"
import socket, subprocess, sys, time
c = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); c.settimeout(15)
f = c.makefile('rb'); f.readline()
c.sendall(b'HELO c\r\n'); f.readline()
r = subprocess.run([sys.argv[2], 'restart'], cwd=sys.argv[3], capture_output=True, timeout=60)
print('ctl', r.returncode)
c.sendall(b'NOOP\r\n'); print(f.readline()[:3])
t = time.time()
r = subprocess.run([sys.argv[2], 'stop'], cwd=sys.argv[3], capture_output=True, timeout=60)
print('stop', r.returncode, round(time.time() - t, 1) < 4.0)
print(f.readline()[:4], f.readline())
"#,
        &[&smtp, BIN, &dir],
    );
    assert_eq!(code, 0, "{err}\n{}", d.log());
    assert_eq!(
        out,
        "ctl 0\nb'250'\nstop 0 True\nb'421 ' b''\n",
        "{}",
        d.log()
    );
    assert!(gone_within(old, 1.0), "{}", d.log());
}

/// The owner of `path` (not following a link).
fn owner(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .uid()
}

/// A directory root made that the user the tests drop to may enter (a temporary directory
/// is root's alone).
fn open_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The command line of `mail` for example.com at `domain` with the user joe, SMTP and POP3 on
/// free ports, started by root dropping to 65534, after the global options `before`: the
/// start the tests of what a start gives that user (or refuses it) share.
fn joe_for_65534(before: &[&str], domain: &Path) -> Vec<String> {
    let mut a: Vec<String> = before.iter().map(|s| s.to_string()).collect();
    a.extend(["-u", "65534", "-g", "65534", "--pidfile="].map(String::from));
    a.extend(["mail", "-H", "mx.test", "-d"].map(String::from));
    a.push(format!("example.com={}", domain.display()));
    a.extend(["-u", "joe=secret"].map(String::from));
    a.extend(
        [
            "-s",
            "tcp:0:interface=127.0.0.1",
            "-p",
            "tcp:0:interface=127.0.0.1",
        ]
        .map(String::from),
    );
    a
}

/// `args` as the `&str`s `Server` takes.
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Started by root with `-u 65534 -g 65534`: the domain directory, the password file and the
/// Maildir the start makes are that user's, so a delivery gets 250 and lands in new/, and a
/// POP3 login reads its password and the message. What was there (the directory above the
/// domain) is left root's.
fn given_to_the_uid(test: &str, launcher: &[&str]) {
    if nobody_as_root(test).is_none() {
        return;
    }
    let dir = open_tempdir();
    let domain = dir.path().join("example.com");
    let args = joe_for_65534(launcher, &domain);
    let srv = Server::start(&strs(&args));
    srv.wait_until(|l| count_ports(l) >= 2, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("mail did not start: {:?}", srv.lines()));
    let ports = srv.ports();
    let (code, out, err) = py(
        r#"
import smtplib, poplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
s.helo('client.test')
s.mail('a@b.test')
s.rcpt('joe@example.com')
print('data', s.data('Subject: given\r\n\r\nto nobody\r\n')[0])
s.quit()
p = poplib.POP3('127.0.0.1', int(sys.argv[2]), timeout=10)
p.user('joe@example.com')
print('pass', p.pass_('secret').split()[0].decode())
print('retr', b'\n'.join(p.retr(1)[1]).decode().count('to nobody'))
p.quit()
"#,
        &[&ports[0].to_string(), &ports[1].to_string()],
    );
    assert_eq!(code, 0, "{out}{err}{:?}", srv.lines());
    assert!(out.contains("data 250"), "{out}{:?}", srv.lines());
    assert!(out.contains("pass +OK") && out.contains("retr 1"), "{out}");
    let joe = domain.join("joe");
    assert_eq!(
        new_files(&joe).len(),
        1,
        "the message is in new/ until RETR"
    );
    for made in [
        domain.clone(),
        domain.join("passwd"),
        domain.join("passwd/am9l_"),
        joe.clone(),
        joe.join("new"),
        joe.join("cur"),
        joe.join("tmp"),
        joe.join(".Trash/maildirfolder"),
    ] {
        assert_eq!(owner(&made), 65534, "{} is the -u user's", made.display());
    }
    assert_eq!(owner(dir.path()), 0, "what was there is left as it was");
    assert!(
        !srv.lines().iter().any(|l| l.contains("cannot")),
        "nothing to warn of: {:?}",
        srv.lines()
    );
}

#[test]
fn a_start_with_a_uid_gives_the_user_what_it_makes() {
    given_to_the_uid("a_start_with_a_uid_gives_the_user_what_it_makes", &[]);
}

#[test]
fn a_start_with_a_uid_and_workers_gives_the_user_what_it_makes() {
    given_to_the_uid(
        "a_start_with_a_uid_and_workers_gives_the_user_what_it_makes",
        &["--workers", "2"],
    );
}

/// The Maildir an earlier start gave to the `-u` user, replaced by that user with a link to
/// a directory of root's: the next start (root's until it drops) refuses it, naming the link,
/// and makes nothing in what it names (as nginx CVE-2016-1247, closed).
#[test]
fn a_link_the_uid_put_for_its_maildir_fails_the_next_start() {
    let test = "a_link_the_uid_put_for_its_maildir_fails_the_next_start";
    if nobody_as_root(test).is_none() {
        return;
    }
    let dir = open_tempdir();
    let domain = dir.path().join("example.com");
    let args = joe_for_65534(&[], &domain);
    let args = strs(&args);
    let mut srv = Server::start(&args);
    srv.term();
    let joe = domain.join("joe");
    assert_eq!(owner(&joe), 65534, "the first start gave it away");
    let target = open_tempdir();
    std::fs::remove_dir_all(&joe).unwrap();
    std::os::unix::fs::symlink(target.path(), &joe).unwrap();
    let mut srv = Server::spawn(&args);
    let status = srv.wait(Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "the start fails: {:?}",
        srv.lines()
    );
    let refusal = format!("{} is a symbolic link: refused", joe.display());
    assert!(srv.log_contains(&refusal), "{:?}", srv.lines());
    let made: Vec<_> = std::fs::read_dir(target.path())
        .unwrap()
        .flatten()
        .collect();
    assert!(made.is_empty(), "nothing made through the link: {made:?}");
}

/// A Maildir and a password file root made before, 0700 and 0600: a start with `-u` leaves
/// them root's (they were there) and says, at start and in `--check` (which still passes),
/// that the user cannot use them, naming the path and the user.
#[test]
fn a_maildir_the_uid_cannot_write_is_warned_of_at_start_and_in_check() {
    use std::os::unix::fs::DirBuilderExt;
    let test = "a_maildir_the_uid_cannot_write_is_warned_of_at_start_and_in_check";
    let Some(nobody) = nobody_as_root(test) else {
        return;
    };
    let dir = open_tempdir();
    let domain = dir.path().join("example.com");
    std::fs::create_dir_all(domain.join("passwd")).unwrap();
    let pw = domain.join("passwd/am9l_");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pw)
            .unwrap();
        std::io::Write::write_all(&mut f, b"secret").unwrap();
    }
    let joe = domain.join("joe");
    for sub in ["", "new", "cur", "tmp"] {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(joe.join(sub))
            .unwrap();
    }
    let (check, start) = (
        joe_for_65534(&["--check"], &domain),
        joe_for_65534(&[], &domain),
    );
    let args = |c: bool| strs(if c { &check } else { &start });
    let maildir_warning = format!("{} cannot write in {} (", nobody.name, joe.display());
    let passwd_warning = format!("{} cannot read {} (", nobody.name, pw.display());
    let (code, out, err) = run_in(dir.path(), &args(true));
    assert_eq!(code, 0, "a warning, not a failure: {out}{err}");
    assert!(err.contains(&maildir_warning), "{err}");
    assert!(err.contains(&passwd_warning), "{err}");
    assert_eq!(
        err.matches(&format!("cannot write in {}", joe.display()))
            .count(),
        1,
        "one warning for the Maildir, not one for each of its directories: {err}"
    );
    let srv = Server::start(&args(false));
    assert!(srv.log_contains(&maildir_warning), "{:?}", srv.lines());
    assert!(srv.log_contains(&passwd_warning), "{:?}", srv.lines());
    for there in [&domain, &pw, &joe, &joe.join("new")] {
        assert_eq!(
            owner(there),
            0,
            "{} was there: left root's",
            there.display()
        );
    }
}
