//! The mail plugin over TLS against Python's smtplib, poplib and ssl on 127.0.0.1: STARTTLS
//! and STLS, implicit TLS (RFC 8314), the STARTTLS command injection, logins refused in
//! plaintext, certificate errors at start and reloads on SIGHUP.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::mail::{new_files, py};
use crate::support::*;
use crate::tls::{Cert, self_signed};

/// A mail server (`-E`, joe and ann in example.com, AUTH for joe) with a certificate in its
/// directory and the listeners and options `args` gives for it.
struct TlsMail {
    srv: Server,
    dir: tempfile::TempDir,
    cert: Cert,
}

impl TlsMail {
    fn start(args: impl FnOnce(&Cert) -> Vec<String>) -> TlsMail {
        let dir = tempfile::tempdir().unwrap();
        let cert = self_signed(dir.path(), "server");
        let dom = format!("example.com={}", dir.path().join("example.com").display());
        let mut all: Vec<String> = [
            "mail",
            "-H",
            "mx.test",
            "-E",
            "-d",
            &dom,
            "-u",
            "joe=secret",
            "-u",
            "ann=pw",
            "--auth",
            "memory:joe:secret",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let extra = args(&cert);
        let listeners = extra.iter().filter(|a| *a == "-s" || *a == "-p").count();
        all.extend(extra);
        let argv: Vec<&str> = all.iter().map(String::as_str).collect();
        let srv = Server::spawn(&argv);
        srv.wait_until(
            |l| l.iter().filter(|x| x.contains(" starting on ")).count() >= listeners,
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("server did not start: {:?}", srv.lines()));
        TlsMail { srv, dir, cert }
    }

    /// The `n`th port of the factory `name` (`SMTP`, `VirtualPOP3`), in the order given.
    fn port(&self, name: &str, n: usize) -> String {
        self.srv
            .lines()
            .iter()
            .filter_map(|l| l.split_once(" starting on "))
            // A TLS listener says `SMTP (TLS) starting on N`, as twistd does.
            .filter(|(who, _)| who.trim_end_matches(" (TLS)").ends_with(name))
            .map(|(_, port)| port.trim().to_string())
            .nth(n)
            .unwrap_or_else(|| panic!("no port {n} for {name}: {:?}", self.srv.lines()))
    }

    fn ca(&self) -> String {
        self.cert.cert.display().to_string()
    }

    /// Runs Python's `PRELUDE` + `script` against the SMTP port, trusting the certificate.
    fn smtp_py(&self, script: &str) -> String {
        run_py(script, &self.port("SMTP", 0), &self.ca())
    }

    /// Runs Python's `PRELUDE` + `script` against the POP3 port, trusting the certificate.
    fn pop3_py(&self, script: &str) -> String {
        run_py(script, &self.port("VirtualPOP3", 0), &self.ca())
    }

    fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("example.com").join(user)
    }
}

/// Plain listeners on 127.0.0.1 and the server's certificate for STARTTLS/STLS.
fn starttls_args(c: &Cert, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "-s",
        "tcp:0:interface=127.0.0.1",
        "-p",
        "tcp:0:interface=127.0.0.1",
        "--certificate",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(c.cert.display().to_string());
    v.push("--privkey".into());
    v.push(c.key.display().to_string());
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Python's side: a context trusting the test certificate (argv[2]), and a raw reader of
/// SMTP and POP3 replies that takes nothing beyond them off the socket.
const PRELUDE: &str = r#"
import poplib, smtplib, socket, ssl, sys, hashlib
port = int(sys.argv[1])
ctx = ssl.create_default_context(cafile=sys.argv[2])
def line(s):
    b = b''
    while not b.endswith(b'\n'):
        c = s.recv(1)
        if not c:
            return b.decode() + '<EOF>'
        b += c
    return b.decode().rstrip('\r\n')
def reply(s):
    out = [line(s)]
    while out[-1][3:4] == '-':
        out.append(line(s))
    return out
def multiline(s):
    out = [line(s)]
    while out[-1] not in ('.', '') and not out[-1].endswith('<EOF>'):
        out.append(line(s))
    return out
"#;

fn run_py(script: &str, port: &str, ca: &str) -> String {
    let (code, out, err) = py(&format!("{PRELUDE}{script}"), &[port, ca]);
    assert_eq!(code, 0, "{out}{err}");
    out
}

#[test]
fn starttls_and_stls_with_smtplib_and_poplib() {
    let m = TlsMail::start(|c| starttls_args(c, &[]));
    let out = m.smtp_py(
        r#"
s = smtplib.SMTP('127.0.0.1', port, timeout=10)
s.ehlo('client.test')
print('plain', sorted(s.esmtp_features))
print('starttls', s.starttls(context=ctx)[0], s.sock.version())
s.ehlo('client.test')
print('tls', sorted(s.esmtp_features))
s.login('joe', 'secret')
s.sendmail('a@b.test', ['joe@example.com'], 'Subject: authed\r\n\r\nhi\r\n')
s.quit()
s = smtplib.SMTP('127.0.0.1', port, timeout=10)
s.starttls(context=ctx)
s.sendmail('a@b.test', ['ann@example.com'], 'Subject: anonymous\r\n\r\nhi\r\n')
s.quit()
"#,
    );
    assert!(
        out.contains(
            "plain ['8bitmime', 'auth', 'enhancedstatuscodes', 'pipelining', 'size', 'smtputf8', 'starttls']"
        ),
        "{out}"
    );
    assert!(out.contains("starttls 220 TLSv1.3"), "{out}");
    assert!(
        out.contains(
            "tls ['8bitmime', 'auth', 'enhancedstatuscodes', 'pipelining', 'size', 'smtputf8']\n"
        ),
        "not offered twice: {out}"
    );
    let joe = new_files(&m.maildir("joe"));
    assert!(
        joe[0].contains("helo=client.test)\n\tby mx.test with esmtpsa "),
        "{}",
        joe[0]
    );
    let ann = new_files(&m.maildir("ann"));
    assert!(ann[0].contains("\tby mx.test with esmtps "), "{}", ann[0]);

    let out = m.pop3_py(
        r#"
p = poplib.POP3('127.0.0.1', port, timeout=10)
print('capa', sorted(p.capa()))
print('stls', p.stls(context=ctx), p.sock.version())
print('capa-tls', sorted(p.capa()))
p.user('joe@example.com'); p.pass_('secret')
print('stat', p.stat()[0])
print('retr', p.retr(1)[1][-1])
p.quit()
"#,
    );
    assert!(
        out.contains("capa ['PIPELINING', 'RESP-CODES', 'STLS', 'TOP', 'UIDL', 'USER']"),
        "{out}"
    );
    assert!(
        out.contains("stls b'+OK Begin TLS negotiation' TLSv1.3"),
        "{out}"
    );
    assert!(
        out.contains("capa-tls ['PIPELINING', 'RESP-CODES', 'TOP', 'UIDL', 'USER']"),
        "{out}"
    );
    assert!(
        out.contains("stat 1") && out.contains("retr b'hi'"),
        "{out}"
    );
}

#[test]
fn implicit_tls_with_smtp_ssl_and_pop3_ssl() {
    let m = TlsMail::start(|c| {
        vec![
            "-s".into(),
            format!("ssl:0:privateKey={}:interface=127.0.0.1", c.both.display()),
            "-p".into(),
            format!(
                "ssl:0:privateKey={}:certKey={}:interface=127.0.0.1",
                c.key.display(),
                c.cert.display()
            ),
        ]
    });
    let out = m.smtp_py(
        r#"
s = smtplib.SMTP_SSL('127.0.0.1', port, timeout=10, context=ctx)
s.ehlo('client.test')
print('features', sorted(s.esmtp_features), s.sock.version())
s.login('joe', 'secret')
s.sendmail('a@b.test', ['joe@example.com'], 'Subject: implicit\r\n\r\nhi\r\n')
s.quit()
"#,
    );
    assert!(
        out.contains(
            "features ['8bitmime', 'auth', 'enhancedstatuscodes', 'pipelining', 'size', 'smtputf8'] TLSv1.3"
        ),
        "no STARTTLS on TLS: {out}"
    );
    let joe = new_files(&m.maildir("joe"));
    assert!(joe[0].contains("\tby mx.test with esmtpsa "), "{}", joe[0]);
    let out = m.pop3_py(
        r#"
p = poplib.POP3_SSL('127.0.0.1', port, timeout=10, context=ctx)
print('capa', sorted(p.capa()))
p.user('joe@example.com'); p.pass_('secret')
print('retr', p.retr(1)[1][-1])
p.quit()
"#,
    );
    assert!(
        out.contains("capa ['PIPELINING', 'RESP-CODES', 'TOP', 'UIDL', 'USER']")
            && out.contains("retr b'hi'"),
        "{out}"
    );
}

#[test]
fn a_client_over_its_limit_on_a_tls_port_is_closed_at_once_and_holds_no_slot() {
    use std::io::Read;
    let m = TlsMail::start(|c| {
        vec![
            "-s".into(),
            format!("ssl:0:privateKey={}:interface=127.0.0.1", c.both.display()),
            "--max-connections-per-client".into(),
            "2".into(),
        ]
    });
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", m.port("SMTP", 0)).parse().unwrap();
    // Two that never handshake take this address's two sessions.
    let held: Vec<_> = (0..2).map(|_| connect(addr)).collect();
    // The server accepts them at once; let it have done so before the next ones come.
    std::thread::sleep(Duration::from_millis(500));
    // Each further one is closed at once: it cannot be told 421 before a handshake, and
    // waiting for one would hold a connection slot for the 10 s handshake deadline.
    for _ in 0..3 {
        let mut c = connect(addr);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let began = Instant::now();
        let mut b = [0u8; 16];
        let got = c.read(&mut b);
        assert!(
            matches!(got, Ok(0) | Err(_)) && began.elapsed() < Duration::from_secs(3),
            "{got:?} after {:?}",
            began.elapsed()
        );
    }
    assert!(
        m.srv.log_contains("too many connections, refused"),
        "{:?}",
        m.srv.lines()
    );
    drop(held);
}

#[test]
fn commands_injected_behind_starttls_and_stls_are_not_run() {
    let m = TlsMail::start(|c| starttls_args(c, &[]));
    // The command and the attacker's RSET in one packet, before the handshake.
    let out = m.smtp_py(
        r#"
raw = socket.create_connection(('127.0.0.1', port), timeout=10)
reply(raw)
raw.sendall(b'EHLO c\r\n'); reply(raw)
raw.sendall(b'STARTTLS\r\nRSET\r\n')
print('starttls', reply(raw))
s = ctx.wrap_socket(raw, server_hostname='127.0.0.1')
s.sendall(b'EHLO c2\r\n')
print('ehlo', reply(s))
s.sendall(b'NOOP\r\n')
print('noop', reply(s))
"#,
    );
    assert!(
        out.contains("starttls ['220 2.0.0 Ready to start TLS']"),
        "{out}"
    );
    let ehlo = out.lines().find(|l| l.starts_with("ehlo")).expect(&out);
    assert!(
        ehlo.starts_with("ehlo ['250-mx.test Hello") && !ehlo.contains("STARTTLS"),
        "the first reply over TLS is the EHLO's, not the injected RSET's: {out}"
    );
    assert!(out.contains("noop ['250 2.0.0 Nothing happens']"), "{out}");
    assert!(
        m.srv
            .log_contains("6 bytes sent behind STARTTLS, before the handshake, thrown away")
    );

    let out = m.pop3_py(
        r#"
raw = socket.create_connection(('127.0.0.1', port), timeout=10)
line(raw)
raw.sendall(b'STLS\r\nQUIT\r\n')
print('stls', line(raw))
s = ctx.wrap_socket(raw, server_hostname='127.0.0.1')
s.sendall(b'CAPA\r\n')
print('capa', multiline(s))
s.sendall(b'USER joe@example.com\r\n')
print('user', line(s))
"#,
    );
    assert!(out.contains("stls +OK Begin TLS negotiation"), "{out}");
    assert!(
        out.contains(
            "capa ['+OK Capability list follows', 'TOP', 'USER', 'UIDL', 'RESP-CODES', 'PIPELINING', '.']"
        ),
        "the injected QUIT did not run: {out}"
    );
    assert!(out.contains("user +OK USER accepted"), "{out}");
    assert!(
        m.srv
            .log_contains("6 bytes sent behind STLS, before the handshake, thrown away")
    );
}

#[test]
fn auth_requires_tls_refuses_logins_until_starttls() {
    let m = TlsMail::start(|c| starttls_args(c, &["--auth-requires-tls"]));
    let out = m.smtp_py(
        r#"
import base64
s = smtplib.SMTP('127.0.0.1', port, timeout=10)
s.ehlo('client.test')
print('plain', sorted(s.esmtp_features))
print('auth', s.docmd('AUTH', 'PLAIN ' + base64.b64encode(b'\0joe\0secret').decode()))
s.starttls(context=ctx)
s.ehlo('client.test')
print('tls', sorted(s.esmtp_features))
print('login', s.login('joe', 'secret')[0])
s.quit()
"#,
    );
    assert!(
        out.contains("plain ['8bitmime', 'enhancedstatuscodes', 'pipelining', 'size', 'smtputf8', 'starttls']"),
        "no AUTH offered in plaintext: {out}"
    );
    assert!(
        out.contains(
            "auth (538, b'5.7.11 Encryption required for requested authentication mechanism')"
        ),
        "{out}"
    );
    assert!(out.contains("tls ['8bitmime', 'auth',"), "{out}");
    assert!(out.contains("login 235"), "{out}");
    let out = m.pop3_py(
        r#"
p = poplib.POP3('127.0.0.1', port, timeout=10)
print('capa', sorted(p.capa()))
try:
    p.user('joe@example.com')
except poplib.error_proto as e:
    print('user', e)
p.stls(context=ctx)
p.user('joe@example.com'); p.pass_('secret')
print('stat', p.stat())
p.quit()
"#,
    );
    assert!(
        out.contains("capa ['PIPELINING', 'RESP-CODES', 'STLS', 'TOP', 'UIDL']"),
        "no USER offered in plaintext: {out}"
    );
    assert!(
        out.contains("user b'-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.'"),
        "{out}"
    );
    assert!(out.contains("stat (0, 0)"), "{out}");
}

#[test]
fn without_a_certificate_starttls_and_stls_are_neither_offered_nor_done() {
    let m = TlsMail::start(|_| {
        [
            "-s",
            "tcp:0:interface=127.0.0.1",
            "-p",
            "tcp:0:interface=127.0.0.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    });
    let out = m.smtp_py(
        r#"
s = smtplib.SMTP('127.0.0.1', port, timeout=10)
s.ehlo('client.test')
print('features', sorted(s.esmtp_features))
print('starttls', s.docmd('STARTTLS'))
print('noop', s.noop()[0])
"#,
    );
    assert!(
        out.contains(
            "features ['8bitmime', 'auth', 'enhancedstatuscodes', 'pipelining', 'size', 'smtputf8']"
        ),
        "{out}"
    );
    assert!(
        out.contains("starttls (454, b'4.7.0 TLS not available')") && out.contains("noop 250"),
        "{out}"
    );
    let out = m.pop3_py(
        r#"
p = poplib.POP3('127.0.0.1', port, timeout=10)
print('capa', sorted(p.capa()))
try:
    p.stls(context=ctx)
except poplib.error_proto as e:
    print('client', e)
try:
    p._shortcmd('STLS')
except poplib.error_proto as e:
    print('server', e)
"#,
    );
    assert!(
        out.contains("capa ['PIPELINING', 'RESP-CODES', 'TOP', 'UIDL', 'USER']"),
        "{out}"
    );
    assert!(out.contains("server b'-ERR TLS not available'"), "{out}");
}

#[test]
fn a_bad_certificate_file_is_a_start_up_error_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let a = self_signed(d.path(), "a");
    let b = self_signed(d.path(), "b");
    let missing = d.path().join("missing.crt");
    let garbage = d.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let p = |x: &Path| x.display().to_string();
    for (args, names, problem) in [
        (
            vec![
                "--certificate".to_string(),
                p(&missing),
                "--privkey".into(),
                p(&a.key),
            ],
            p(&missing),
            "No such file",
        ),
        (
            vec![
                "--certificate".to_string(),
                p(&a.cert),
                "--privkey".into(),
                p(&b.key),
            ],
            p(&a.cert),
            "the private key does not match the certificate",
        ),
        (
            vec!["--privkey".to_string(), p(&garbage)],
            p(&garbage),
            "no private key",
        ),
        // Alone, --certificate names a file with both; a certificate alone has no key.
        (
            vec!["--certificate".to_string(), p(&a.cert)],
            p(&a.cert),
            "no private key",
        ),
    ] {
        let mut argv = vec![
            "-n",
            "--pidfile=",
            "mail",
            "--no-pop3",
            "-s",
            "tcp:0:interface=127.0.0.1",
        ];
        argv.extend(args.iter().map(String::as_str));
        let (code, _, err) = run_in(d.path(), &argv);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains(&names) && err.contains(problem),
            "{args:?}: one line naming the file and the problem: {err}"
        );
    }
    // Either file alone, when it holds both, is enough.
    for opt in ["--certificate", "--privkey"] {
        let srv = Server::start(&[
            "mail",
            "--no-pop3",
            "-s",
            "tcp:0:interface=127.0.0.1",
            opt,
            &p(&a.both),
        ]);
        assert!(
            srv.ports().len() == 1,
            "{opt} FILE with both: {:?}",
            srv.lines()
        );
    }
}

#[test]
fn sighup_reloads_the_starttls_certificate() {
    let m = TlsMail::start(|c| starttls_args(c, &[]));
    // The certificate the server presents, whoever signed it.
    let presented = || {
        let out = run_py(
            r#"
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP('127.0.0.1', port, timeout=10)
s.starttls(context=ctx)
print('cert', hashlib.sha256(s.sock.getpeercert(True)).hexdigest())
s.quit()
"#,
            &m.port("SMTP", 0),
            // Only to satisfy the prelude: the files that change are not read by the client.
            &m.cert.both.display().to_string(),
        );
        out.lines()
            .find_map(|l| l.strip_prefix("cert "))
            .map(str::to_string)
            .expect(&out)
    };
    let first = presented();
    // A renewed certificate in the same files.
    let renewed = self_signed(m.dir.path(), "renewed");
    std::fs::copy(&renewed.key, &m.cert.key).unwrap();
    std::fs::copy(&renewed.cert, &m.cert.cert).unwrap();
    m.srv.signal(1);
    assert!(
        m.srv.log_contains("Reloaded certificates"),
        "{:?}",
        m.srv.lines()
    );
    let second = presented();
    assert_ne!(first, second, "the new certificate is served");
    // A bad new file keeps the current one in service.
    std::fs::write(&m.cert.cert, "broken\n").unwrap();
    m.srv.signal(1);
    assert!(
        m.srv.log_contains("Certificates not reloaded"),
        "{:?}",
        m.srv.lines()
    );
    assert_eq!(presented(), second);
}
