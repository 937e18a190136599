//! What a TLS listener refuses: bad files at start, old clients, plaintext, stalled handshakes.

use super::*;

#[test]
fn tls_1_1_and_1_0_are_refused_with_one_log_line() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let s = echo_server(&format!("ssl:0:privateKey={both}:interface=127.0.0.1"), &[]);
    for (i, maxv) in ["TLSv1_1", "TLSv1"].iter().enumerate() {
        let out = python(
            ONE,
            &[&s.port().to_string(), "-", "-", maxv],
            Duration::from_secs(15),
        );
        assert!(field(&out, "error").is_some(), "{maxv}: {out}");
        assert!(
            s.wait_until(
                |l| l.iter().filter(|x| x.contains("TLS failed")).count() == i + 1,
                Duration::from_secs(30)
            )
            .is_some(),
            "one line per refused client: {:?}",
            s.lines()
        );
    }
    assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
    assert_eq!(count(&s, "TLS failed"), 2, "{:?}", s.lines());
    assert_eq!(
        count(&s, "offers no protocol version"),
        2,
        "{:?}",
        s.lines()
    );
}

/// Makes `openssl ca` sign a certificate valid only in January 2020 (OpenSSL 3.0's `req` and
/// `x509` take no start date and no negative `-days`; `ca` takes both dates).
fn expired(pki: &Pki) -> String {
    let dir = pki.dir.path();
    openssl(
        dir,
        &format!("req -new {NEW_KEY} -keyout old-key.pem -out old.csr -subj /CN=localhost"),
    );
    std::fs::write(dir.join("index.txt"), "").unwrap();
    // Extensions make it X.509 v3 (rustls refuses v1 certificates).
    std::fs::write(dir.join("old.ext"), "subjectAltName=DNS:localhost\n").unwrap();
    std::fs::write(dir.join("serial.txt"), "01\n").unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial.txt\n\
         default_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n",
    )
    .unwrap();
    openssl(
        dir,
        "ca -batch -config ca.cnf -cert ca-cert.pem -keyfile ca-key.pem -in old.csr \
         -startdate 20200101000000Z -enddate 20200102000000Z -extfile old.ext -notext \
         -out old-cert.pem",
    );
    pki.combined("old")
}

/// Starts `echo --listen ENDPOINT` with `-n` and as a daemon; both must exit 1 with one line
/// on stderr that contains every one of `want`.
fn assert_refused(endpoint: &str, want: &[&str]) {
    for daemon in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["echo", "--listen", endpoint];
        if !daemon {
            args.splice(0..0, ["-n", "--pidfile="]);
        }
        let (code, out, err) = run_in(dir.path(), &args);
        assert_eq!(code, 1, "daemon {daemon}, {endpoint}: {out}{err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "daemon {daemon}, one line: {err}");
        for w in want {
            assert!(lines[0].contains(w), "daemon {daemon}: {w:?} in {err}");
        }
        assert!(!dir.path().join("twistrs.pid").exists(), "{endpoint}");
    }
}

#[test]
fn start_up_problems_are_one_line_naming_the_file_and_exit_1() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    pki.leaf("other", "other", &["other.test"]);
    let (key, cert) = (pki.arg("server-key.pem"), pki.arg("server-cert.pem"));
    let other_key = pki.arg("other-key.pem");
    let missing = pki.arg("missing.pem");
    openssl(
        pki.dir.path(),
        "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -aes256 -pass pass:x \
         -out encrypted-key.pem",
    );
    let encrypted = pki.arg("encrypted-key.pem");
    std::fs::create_dir(pki.path("a-directory.pem")).unwrap();
    let unreadable = pki.arg("a-directory.pem");
    let garbage = pki.arg("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let ssl = |kw: &str| format!("ssl:0:{kw}:interface=127.0.0.1");
    assert_refused(
        &ssl(&format!("privateKey={missing}")),
        &[&missing, "No such file"],
    );
    assert_refused(
        &ssl(&format!("privateKey={key}:certKey={missing}")),
        &[&missing, "No such file"],
    );
    assert_refused(
        &ssl(&format!("privateKey={unreadable}")),
        &[&unreadable, "directory"],
    );
    assert_refused(
        &ssl(&format!("privateKey={other_key}:certKey={cert}")),
        &[&cert, "does not match"],
    );
    assert_refused(
        &ssl(&format!("privateKey={encrypted}:certKey={cert}")),
        &[&encrypted, "encrypted"],
    );
    assert_refused(
        &ssl(&format!("privateKey={key}")),
        &[&key, "no certificate"],
    );
    assert_refused(
        &ssl(&format!("privateKey={cert}")),
        &[&cert, "no private key"],
    );
    assert_refused(
        &ssl(&format!("privateKey={key}:certKey={garbage}")),
        &[&garbage],
    );
    assert_refused(
        &ssl(&format!(
            "privateKey={key}:certKey={cert}:extraCertChain={key}"
        )),
        &[&key, "extraCertChain holds no certificate"],
    );
    assert_refused(
        &ssl(&format!(
            "privateKey={key}:certKey={cert}:dhParameters={missing}"
        )),
        &[&missing, "No such file"],
    );
    assert_refused(
        &ssl(&format!(
            "privateKey={key}:certKey={cert}:dhParameters={cert}"
        )),
        &[&cert, "no DH PARAMETERS"],
    );
    // A certificate directory: missing, or without a certificate and its key.
    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(&key, empty.path().join("only-a-key.pem")).unwrap();
    let empty_dir = empty.path().display().to_string();
    assert_refused(
        &format!("tls:{missing}:port=0:interface=127.0.0.1"),
        &[&missing],
    );
    assert_refused(
        &format!("tls:{empty_dir}:port=0:interface=127.0.0.1"),
        &[&empty_dir, "no certificate"],
    );
    let enc_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&encrypted, enc_dir.path().join("k.pem")).unwrap();
    std::fs::copy(&cert, enc_dir.path().join("c.pem")).unwrap();
    assert_refused(
        &format!(
            "tls:{}:port=0:interface=127.0.0.1",
            enc_dir.path().display()
        ),
        &["k.pem", "encrypted"],
    );
}

#[test]
fn an_expired_certificate_is_a_warning() {
    let pki = Pki::new();
    let old = expired(&pki);
    // Two listeners on it: the start (both ports logged by now) warns once.
    let ep = format!("ssl:0:privateKey={old}:interface=127.0.0.1");
    let s = echo_server(&ep, &["--listen", &ep]);
    // Expired on 2 January 2020: years of days, in the plural.
    assert!(
        s.log_contains("days ago; clients will refuse it"),
        "{:?}",
        s.lines()
    );
    assert!(s.log_contains(&old));
    assert_eq!(count(&s, "clients will refuse it"), 1, "{:?}", s.lines());
    // So does `--check`, which says it on stderr.
    let (code, _, err) = run(&[
        "--check",
        "--pidfile=",
        "echo",
        "--listen",
        &ep,
        "--listen",
        &ep,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("clients will refuse it").count(), 1, "{err}");
    // It serves (a client that checks the dates refuses it, one that does not is served).
    let out = tls_once(s.port(), &pki.ca(), "localhost");
    assert!(
        field(&out, "error").is_some_and(|e| e.contains("expired")),
        "{out}"
    );
    let out = tls_once(s.port(), "-", "localhost");
    assert_eq!(field(&out, "echo"), Some("ping over TLS"), "{out}");
}

/// Reads until the server closes (EOF or a reset); what came before.
pub(super) fn read_until_closed(c: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("not closed: {e} after {got:?}"),
        }
    }
}

#[test]
fn plaintext_and_garbage_get_an_alert_or_a_close_and_one_line() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let s = echo_server(&format!("ssl:0:privateKey={both}:interface=127.0.0.1"), &[]);
    let garbage: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let payloads: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"EHLO client.example\r\n",
        &garbage,
        // A handshake record holding no handshake.
        b"\x16\x03\x01\x00\x05hello",
    ];
    for (i, payload) in payloads.iter().enumerate() {
        let mut c = connect(s.addr());
        send(&mut c, payload);
        let got = read_until_closed(&mut c);
        // Nothing, or one TLS alert record (content type 21).
        assert!(
            got.is_empty() || (got[0] == 21 && got.len() == 7),
            "{i}: {got:?}"
        );
        assert!(
            s.wait_until(
                |l| l.iter().filter(|x| x.contains("TLS failed")).count() == i + 1,
                Duration::from_secs(30)
            )
            .is_some(),
            "{i}: one line each: {:?}",
            s.lines()
        );
    }
    assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
    assert_eq!(count(&s, "TLS failed"), payloads.len(), "{:?}", s.lines());
    // The log says what the two plaintext clients likely were.
    assert!(
        count(&s, "TLS failed: not TLS (plaintext") >= 2,
        "{:?}",
        s.lines()
    );
}

#[test]
fn a_handshake_that_never_completes_is_closed_after_10_s_and_frees_its_slot() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    // Two slots, both taken by stalled handshakes: nothing else is accepted until they go.
    let s = echo_server(
        &format!("ssl:0:privateKey={both}:interface=127.0.0.1"),
        &["--max-connections", "2"],
    );
    let start = Instant::now();
    let mut silent = connect(s.addr());
    let mut half = connect(s.addr());
    // The start of a ClientHello record that says 512 bytes follow; 40 do.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    hello.extend([7u8; 29]);
    send(&mut half, &hello);
    for c in [&mut silent, &mut half] {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        assert!(read_until_closed(c).is_empty());
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "{took:?}"
    );
    // The log line may reach the log reader a moment after the client saw the close.
    s.wait_until(
        |l| {
            l.iter()
                .filter(|x| x.contains("TLS handshake not done after 10s; closing."))
                .count()
                >= 2
        },
        Duration::from_secs(5),
    );
    assert_eq!(count(&s, "TLS handshake not done"), 2, "{:?}", s.lines());
    // Their slots are free: a client is accepted and served.
    assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
}

#[test]
fn a_client_gone_before_its_handshake_frees_its_slot_at_once() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let s = echo_server(
        &format!("ssl:0:privateKey={both}:interface=127.0.0.1"),
        &["--max-connections", "1"],
    );
    for _ in 0..3 {
        drop(connect(s.addr()));
    }
    let start = Instant::now();
    assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
    // Not after the 10 s handshake deadline; the client is a python3 started for it (half a
    // second to start on a loaded 2-CPU machine), so 5 s, not 2.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

/// A flood of plaintext on a TLS port writes at most ten "TLS failed" lines a second; the
/// next line logged says how many were left out, so the lines and the counts they give add
/// up to every failure.
#[test]
fn a_flood_of_failed_handshakes_is_logged_ten_lines_a_second_with_the_rest_counted() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let s = echo_server(&format!("ssl:0:privateKey={both}:interface=127.0.0.1"), &[]);
    const FLOOD: usize = 40;
    let started = Instant::now();
    for _ in 0..FLOOD {
        let mut c = connect(s.addr());
        send(&mut c, b"GET / HTTP/1.0\r\n\r\n");
        let _ = read_until_closed(&mut c);
    }
    let flood_secs = started.elapsed().as_secs_f64();
    // One more, a second and a half later: its line gives the count left out.
    std::thread::sleep(Duration::from_millis(1500));
    let mut c = connect(s.addr());
    send(&mut c, b"GET / HTTP/1.0\r\n\r\n");
    let _ = read_until_closed(&mut c);
    let total = FLOOD + 1;
    let tally = |l: &[String]| {
        l.iter()
            .filter(|x| x.contains("TLS failed"))
            .map(|x| {
                1 + x
                    .split_once("; closing (")
                    .and_then(|(_, rest)| rest.split(' ').next()?.parse::<usize>().ok())
                    .unwrap_or(0)
            })
            .sum::<usize>()
    };
    assert!(
        s.wait_until(|l| tally(l) == total, Duration::from_secs(30))
            .is_some(),
        "lines and counts add up to {total}: {:?}",
        s.lines()
    );
    let lines = count(&s, "TLS failed");
    // Ten a second at most, over the flood's seconds (and the last one's line).
    let most = 10 * (flood_secs.ceil() as usize + 1) + 1;
    assert!(
        lines <= most && lines < total,
        "{lines} lines in {flood_secs:.2} s"
    );
    assert!(
        count(&s, "more TLS failures not logged") >= 1,
        "{:?}",
        s.lines()
    );
}
