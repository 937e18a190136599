//! Certificates that change: SIGHUP reload, and `twistrs restart` under a TLS client loop.

use super::*;

/// One TLS connection kept open: prints `cn=`, then echoes each line of stdin (`echo=`).
const SESSION: &str = r#"
port, ca = sys.argv[1:3]
s = connect(port, ca, 'localhost')
print('cn=' + cn(s), flush=True)
for line in sys.stdin:
    word = line.strip().encode()
    print('echo=' + echo(s, word).decode(), flush=True)
"#;

/// A Python client holding one TLS connection, driven line by line.
struct Session {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Session {
    fn start(port: u16, ca: &str) -> Session {
        let mut child = spawn_python(SESSION, &[&port.to_string(), ca]);
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Session { child, lines }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("the client answers")
    }

    fn echo(&mut self, word: &str) -> String {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{word}").unwrap();
        stdin.flush().unwrap();
        self.line()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sighup_reloads_certificates_and_keeps_the_old_ones_if_the_new_are_bad() {
    let pki = Pki::new();
    for n in ["one", "two", "three"] {
        pki.leaf(n, n, &["localhost", "alpha.test"]);
    }
    let live = tempfile::tempdir().unwrap();
    let (key, cert) = (live.path().join("key.pem"), live.path().join("cert.pem"));
    replace(&pki.path("one-key.pem"), &key);
    replace(&pki.path("one-cert.pem"), &cert);
    // A tls: directory on the same server is reloaded too.
    let dir = tempfile::tempdir().unwrap();
    let in_dir = dir.path().join("a.pem");
    replace(Path::new(&pki.combined("one")), &in_dir);
    let ssl = format!(
        "ssl:0:privateKey={}:certKey={}:interface=127.0.0.1",
        key.display(),
        cert.display()
    );
    let tls = format!("tls:{}:port=0:interface=127.0.0.1", dir.path().display());
    let s = Server::start(&["--pidfile=", "echo", "--listen", &ssl, "--listen", &tls]);
    let (port, dir_port) = (s.ports()[0], s.ports()[1]);
    let ca = pki.ca();
    let mut old = Session::start(port, &ca);
    assert_eq!(old.line(), "cn=one");
    assert_eq!(old.echo("before"), "echo=before");

    replace(&pki.path("two-key.pem"), &key);
    replace(&pki.path("two-cert.pem"), &cert);
    replace(Path::new(&pki.combined("two")), &in_dir);
    assert!(s.wait_catches(1));
    s.signal(1);
    assert!(
        s.wait_until(
            |l| l
                .iter()
                .filter(|x| x.contains("Reloaded certificates"))
                .count()
                == 2,
            Duration::from_secs(30)
        )
        .is_some(),
        "{:?}",
        s.lines()
    );
    assert_serves(port, &ca, "localhost", "two");
    assert_serves(dir_port, &ca, "alpha.test", "two");
    assert_eq!(
        old.echo("after"),
        "echo=after",
        "established connections go on"
    );

    // A key that does not match, then garbage, then a missing file: the old one serves on.
    let cert_name = cert.display().to_string();
    let bad: [(&dyn Fn(), &str); 3] = [
        (
            &|| replace(&pki.path("three-key.pem"), &key),
            "does not match",
        ),
        (
            &|| std::fs::write(&cert, "garbage\n").unwrap(),
            "no certificate",
        ),
        (&|| std::fs::remove_file(&cert).unwrap(), "No such file"),
    ];
    for (i, (make_bad, why)) in bad.iter().enumerate() {
        make_bad();
        s.signal(1);
        let n = i + 1;
        assert!(
            s.wait_until(
                |l| l
                    .iter()
                    .filter(|x| x.contains("Certificates not reloaded"))
                    .count()
                    == n,
                Duration::from_secs(30)
            )
            .is_some(),
            "{:?}",
            s.lines()
        );
        let last = s
            .lines()
            .into_iter()
            .rfind(|x| x.contains("Certificates not reloaded"))
            .unwrap();
        assert!(last.contains(&cert_name) && last.contains(why), "{last}");
        assert_serves(port, &ca, "localhost", "two");
    }
    // A bad file in the directory keeps the directory's old certificates too (the ssl:
    // listener's file is still missing: one line each).
    std::fs::write(&in_dir, "garbage\n").unwrap();
    std::fs::write(
        dir.path().join("b.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    s.signal(1);
    assert!(
        s.wait_until(
            |l| l
                .iter()
                .filter(|x| x.contains("Certificates not reloaded"))
                .count()
                == 5,
            Duration::from_secs(30)
        )
        .is_some(),
        "{:?}",
        s.lines()
    );
    assert!(s.log_contains("b.pem: the private key cannot be used"));
    assert_serves(dir_port, &ca, "alpha.test", "two");
    assert_eq!(old.echo("still"), "echo=still");
}

#[test]
fn files_named_by_several_listeners_are_reloaded_once_per_sighup() {
    let pki = Pki::new();
    pki.leaf("one", "one", &["localhost"]);
    pki.leaf("two", "two", &["localhost"]);
    let live = tempfile::tempdir().unwrap();
    let (key, cert) = (live.path().join("key.pem"), live.path().join("cert.pem"));
    replace(&pki.path("one-key.pem"), &key);
    replace(&pki.path("one-cert.pem"), &cert);
    let ssl = format!(
        "ssl:0:privateKey={}:certKey={}:interface=127.0.0.1",
        key.display(),
        cert.display()
    );
    // Last: its reload follows the two ssl: listeners' (hooks run in listen order), so once
    // its line is there, theirs are too.
    let dir = cert_dir(&pki);
    let tls = format!("tls:{}:port=0:interface=127.0.0.1", dir.path().display());
    let s = Server::start(&[
        "--pidfile=",
        "echo",
        "--listen",
        &ssl,
        "--listen",
        &ssl,
        "--listen",
        &tls,
    ]);
    let ports = s.ports();
    let (file, dir_line) = (
        format!("Reloaded certificates ({}).", cert.display()),
        format!("Reloaded certificates ({}).", dir.path().display()),
    );
    assert!(s.wait_catches(1));
    for reload in 1..=2 {
        // Each reload reads the files afresh: both listeners serve what is there now.
        let leaf = if reload == 1 { "two" } else { "one" };
        replace(&pki.path(&format!("{leaf}-cert.pem")), &cert);
        replace(&pki.path(&format!("{leaf}-key.pem")), &key);
        s.signal(1);
        assert!(
            s.wait_until(|_| count(&s, &dir_line) == reload, Duration::from_secs(30))
                .is_some(),
            "{:?}",
            s.lines()
        );
        assert_eq!(count(&s, &file), reload, "{:?}", s.lines());
        assert_serves(ports[0], &pki.ca(), "localhost", leaf);
        assert_serves(ports[1], &pki.ca(), "localhost", leaf);
    }
}

/// How long the restart test waits for what may be slow on a machine whose CPUs are busy: each
/// answer to a client, a run of connections. Under the load of the `load::` and `portforward`
/// tests, a daemon was seen runnable but not run for 5.5 s (its `run_delay` in
/// /proc/PID/schedstat grew by that much while the client's record waited in its socket), and
/// the 5 s client timeout then failed a connection that the daemon answered as soon as it ran.
/// A refused, reset or closed connection still fails at once: only a slow answer gets longer.
const PATIENT: Duration = Duration::from_secs(60);

/// A new TLS connection per iteration until the file `argv[3]` exists (at most 200 s): `ok CN`
/// or `failed ERROR` per connection. Each answer is waited for up to 30 s (see [`PATIENT`]).
const LOOP: &str = r#"
import os
TIMEOUT = 30
port, ca, stop = sys.argv[1:4]
end = time.time() + 200
while not os.path.exists(stop) and time.time() < end:
    try:
        s = connect(port, ca, 'localhost')
        name = cn(s)
        assert echo(s, b'x') == b'x'
        s.close()
        print('ok ' + name, flush=True)
    except Exception as e:
        print('failed %r' % e, flush=True)
"#;

#[test]
fn restart_under_a_tls_client_loop_fails_no_handshake_and_reloads_the_files() {
    let pki = Pki::new();
    pki.leaf("one", "one", &["localhost"]);
    pki.leaf("two", "two", &["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let both = dir.path().join("server.pem");
    replace(Path::new(&pki.combined("one")), &both);
    let ep = format!("ssl:0:privateKey={}:interface=127.0.0.1", both.display());
    // A tls: listener is handed over too.
    let certs = cert_dir(&pki);
    let tls = format!("tls:{}:port=0:interface=127.0.0.1", certs.path().display());
    let (code, out, err) = run_in(dir.path(), &["echo", "--listen", &ep, "--listen", &tls]);
    assert_eq!(code, 0, "{out}{err}");
    let ports: Vec<u16> = std::fs::read_to_string(dir.path().join("twistrs.log"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split(" starting on ").nth(1)?.trim().parse().ok())
        .collect();
    let (port, tls_port) = (ports[0], ports[1]);
    struct Stop<'a>(&'a Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = run_in(self.0, &["stop", "--timeout", "2"]);
        }
    }
    let _stop = Stop(dir.path());
    let stop_file = dir.path().join("stop-the-loop");
    let mut client = spawn_python(
        LOOP,
        &[
            &port.to_string(),
            &pki.ca(),
            &stop_file.display().to_string(),
        ],
    );
    let out = client.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(l);
            }
        })
    };
    let served = |n: usize| {
        let end = Instant::now() + PATIENT;
        while lines.lock().unwrap().len() < n && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        lines.lock().unwrap().len()
    };
    let before = served(10);
    // The successor reads the files again: it serves the certificate put there now.
    replace(Path::new(&pki.combined("two")), &both);
    let (code, out, err) = run_in(dir.path(), &["restart"]);
    assert_eq!(code, 0, "{out}{err}");
    // Until it shows up (the old process finishes what it accepted), then a few more.
    let end = Instant::now() + PATIENT;
    while !lines.lock().unwrap().iter().any(|l| l == "ok two") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let seen = lines.lock().unwrap().len();
    served(seen + 10);
    std::fs::write(&stop_file, "").unwrap();
    let status = wait_output(client, PATIENT).status;
    reader.join().unwrap();
    let lines = lines.lock().unwrap().clone();
    assert!(status.success(), "{lines:?}");
    let failed: Vec<&String> = lines.iter().filter(|l| !l.starts_with("ok ")).collect();
    assert!(
        failed.is_empty(),
        "{} of {}: {failed:?}",
        failed.len(),
        lines.len()
    );
    // Some served before the restart, then at least 10 after the new certificate showed up
    // (a quick restart leaves fewer than 10 in between).
    assert!(
        seen > before && lines.len() >= seen + 10,
        "{before} then {seen}: {lines:?}"
    );
    assert_eq!(lines.first().map(String::as_str), Some("ok one"));
    assert_eq!(
        lines.last().map(String::as_str),
        Some("ok two"),
        "{lines:?}"
    );
    assert_serves_patiently(tls_port, &pki.ca(), "beta.test", "beta");
    // A successor that cannot load the files fails, naming one; the running one serves on.
    std::fs::write(&both, "garbage\n").unwrap();
    let (code, _, err) = run_in(dir.path(), &["restart"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&both.display().to_string()), "{err}");
    assert_serves_patiently(port, &pki.ca(), "localhost", "two");
    assert_serves_patiently(tls_port, &pki.ca(), "-", "alpha");
}
