//! `ssl:`, `tls:CERTDIR` and TLS on `systemd:` sockets: certificates, chains, SNI, methods.

use super::*;

#[test]
fn ssl_with_a_combined_pem_and_with_separate_key_and_certificate() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let s = echo_server(&format!("ssl:0:privateKey={both}:interface=127.0.0.1"), &[]);
    let out = assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
    assert_eq!(field(&out, "version"), Some("TLSv1.3"), "{out}");
    let sep = format!(
        "ssl:0:privateKey={}:certKey={}:interface=127.0.0.1",
        pki.arg("server-key.pem"),
        pki.arg("server-cert.pem")
    );
    let s2 = echo_server(&sep, &[]);
    assert_serves(s2.port(), &pki.ca(), "localhost", "localhost");
    // openssl s_client verifies against the CA too.
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", s2.port())])
        .args([
            "-CAfile",
            &pki.ca(),
            "-servername",
            "localhost",
            "-verify_return_error",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
}

/// The certificates `openssl s_client -showcerts` received.
fn served_chain(port: u16) -> usize {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-showcerts",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .matches("-----BEGIN CERTIFICATE-----")
        .count()
}

#[test]
fn extra_cert_chain_serves_the_intermediate() {
    let pki = Pki::new();
    pki.issue("inter", "twistrs-test-intermediate", &[], "ca", true);
    pki.issue("server", "localhost", &["localhost"], "inter", false);
    let key = pki.arg("server-key.pem");
    let cert = pki.arg("server-cert.pem");
    // Without the intermediate a client that trusts only the CA cannot verify the chain.
    let bare = echo_server(
        &format!("ssl:0:privateKey={key}:certKey={cert}:interface=127.0.0.1"),
        &[],
    );
    let out = tls_once(bare.port(), &pki.ca(), "localhost");
    assert!(
        field(&out, "error").is_some_and(|e| e.contains("certificate verify failed")),
        "{out}"
    );
    assert_eq!(served_chain(bare.port()), 1);
    let chained = echo_server(
        &format!(
            "ssl:0:privateKey={key}:certKey={cert}:extraCertChain={}:interface=127.0.0.1",
            pki.arg("inter-cert.pem")
        ),
        &[],
    );
    assert_serves(chained.port(), &pki.ca(), "localhost", "localhost");
    assert_eq!(served_chain(chained.port()), 2);
}

#[test]
fn dh_parameters_are_accepted_with_one_log_line() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    openssl(
        pki.dir.path(),
        "genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048 -out dh.pem",
    );
    let ep = format!(
        "ssl:0:privateKey={both}:dhParameters={}:interface=127.0.0.1",
        pki.arg("dh.pem")
    );
    // Two listeners with dhParameters: one line for the process, not one per listener.
    let s = echo_server(&ep, &["--listen", &ep]);
    assert_eq!(count_ports(&s.lines()), 2, "{:?}", s.lines());
    assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
    // Said once: not at each reload either.
    assert!(s.wait_catches(1));
    s.signal(1);
    assert!(s.log_contains("Reloaded certificates"));
    assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
    assert_eq!(
        count(&s, "dhParameters is accepted and not used"),
        1,
        "{:?}",
        s.lines()
    );
}

#[test]
fn sslmethod_tls_1_2_only_and_older_methods_refused() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let s = echo_server(
        &format!("ssl:0:privateKey={both}:sslmethod=TLSv1_2_METHOD:interface=127.0.0.1"),
        &[],
    );
    let out = assert_serves(s.port(), &pki.ca(), "localhost", "localhost");
    assert_eq!(field(&out, "version"), Some("TLSv1.2"), "{out}");
    for old in ["TLSv1_1_METHOD", "TLSv1_METHOD", "SSLv3_METHOD"] {
        let ep = format!("ssl:0:privateKey={both}:sslmethod={old}:interface=127.0.0.1");
        let (code, out, err) = run(&["-n", "--pidfile=", "echo", "--listen", &ep]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            err.contains(old) && err.contains("older than TLS 1.2"),
            "{err}"
        );
    }
}

#[test]
fn tls_certdir_picks_by_sni_with_a_wildcard_and_a_default() {
    let pki = Pki::new();
    let dir = cert_dir(&pki);
    let s = echo_server(
        &format!("tls:{}:port=0:interface=127.0.0.1", dir.path().display()),
        &[],
    );
    let port = s.port();
    for (sni, cn) in [
        ("alpha.test", "alpha"),
        ("beta.test", "beta"),
        ("WWW.Beta.Test", "beta"),
        ("x.wild.test", "wild"),
        // One label below the wildcard only; the rest get the first file's.
        ("a.b.wild.test", "alpha"),
        ("wild.test", "alpha"),
        ("unknown.test", "alpha"),
        ("-", "alpha"),
    ] {
        assert_serves(port, &pki.ca(), sni, cn);
    }
    // openssl s_client -servername agrees.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "www.beta.test",
        ])
        .args([
            "-CAfile",
            &pki.ca(),
            "-verify_hostname",
            "www.beta.test",
            "-verify_return_error",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CN = beta") && text.contains("Verify return code: 0 (ok)"),
        "{text}"
    );
}

/// Connects with SNI `argv[4]` every 100 ms until the certificate has the common name
/// `argv[5]` (at most 15 s): `tries=` and the first common name received.
const UNTIL_CN: &str = r#"
port, ca, sni, want = sys.argv[1:5]
end = time.time() + 15
tries, first, got = 0, None, None
while time.time() < end:
    s = connect(port, ca, sni)
    got = cn(s)
    assert echo(s, b'x') == b'x'
    s.close()
    tries += 1
    first = first or got
    if got == want:
        break
    time.sleep(0.1)
print('tries=%d' % tries)
print('first=' + first)
print('last=' + got, flush=True)
"#;

#[test]
fn a_certificate_dropped_into_certdir_is_served_without_a_signal() {
    let pki = Pki::new();
    let dir = cert_dir(&pki);
    let s = echo_server(
        &format!("tls:{}:port=0:interface=127.0.0.1", dir.path().display()),
        &[],
    );
    pki.leaf("new", "new", &["new.test"]);
    // Written under another name and renamed, as a certificate manager does.
    let tmp = dir.path().join("new.pem.tmp");
    std::fs::copy(pki.combined("new"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.path().join("new.pem")).unwrap();
    let start = Instant::now();
    let out = python(
        UNTIL_CN,
        &[&s.port().to_string(), &pki.ca(), "new.test", "new"],
        Duration::from_secs(30),
    );
    assert_eq!(field(&out, "last"), Some("new"), "{out}");
    assert_eq!(
        field(&out, "first"),
        Some("alpha"),
        "the default until the re-scan: {out}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(s.log_contains("scanning it again"));
    // The others are still served.
    assert_serves(s.port(), &pki.ca(), "beta.test", "beta");
}

/// Asks for unknown names for a little longer than the re-scan interval (bounded: 8 tries).
fn unknown_names_for_a_while(s: &Server, pki: &Pki) {
    let start = Instant::now();
    for i in 0..8 {
        assert_serves(s.port(), &pki.ca(), &format!("nobody{i}.test"), "alpha");
        if start.elapsed() > Duration::from_millis(3500) {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn unknown_names_rescan_only_a_changed_directory_and_warn_once() {
    let pki = Pki::new();
    let dir = cert_dir(&pki);
    let s = echo_server(
        &format!("tls:{}:port=0:interface=127.0.0.1", dir.path().display()),
        &[],
    );
    // Nothing changed: no re-scan, no log line, however many unknown names come.
    unknown_names_for_a_while(&s, &pki);
    assert_eq!(count(&s, "scanning it again"), 0, "{:?}", s.lines());
    // A certificate without its key appears: one re-scan, one warning naming it, then quiet.
    pki.leaf("delta", "delta", &["delta.test"]);
    std::fs::copy(pki.path("delta-cert.pem"), dir.path().join("d.pem")).unwrap();
    unknown_names_for_a_while(&s, &pki);
    unknown_names_for_a_while(&s, &pki);
    assert_eq!(count(&s, "scanning it again"), 1, "{:?}", s.lines());
    assert_eq!(count(&s, "d.pem"), 1, "{:?}", s.lines());
    // The good certificates are still served.
    assert_serves(s.port(), &pki.ca(), "beta.test", "beta");
}

/// Runs `twistrs -n --pidfile= echo --listen ENDPOINT` with `listener` passed as systemd's
/// fd 3 (LISTEN_PID, LISTEN_FDS=1), waits for READY=1 on a notify socket, and returns it.
fn socket_activated(listener: &std::net::TcpListener, endpoint: &str, dir: &Path) -> Child {
    use std::os::fd::AsRawFd;
    let fd = listener.as_raw_fd();
    let notify_path = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" -n --pidfile= echo --listen \"$1\"")
        .arg(BIN)
        .arg(endpoint)
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("LISTEN_FDNAMES")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    pass_as_fd3(&mut cmd, fd);
    let child = cmd.spawn().unwrap();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 arrives");
    assert_eq!(&buf[..n], b"READY=1");
    child
}

#[test]
fn a_socket_activated_listener_serves_tls() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let both = pki.combined("server");
    let dir = cert_dir(&pki);
    for endpoint in [
        format!("systemd:domain=INET:index=0:privateKey={both}"),
        format!(
            "systemd:domain=INET:index=0:privateKey={}:certKey={}",
            pki.arg("server-key.pem"),
            pki.arg("server-cert.pem")
        ),
        format!(
            "systemd:domain=INET:index=0:certDir={}",
            dir.path().display()
        ),
    ] {
        let run_dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut child = socket_activated(&listener, &endpoint, run_dir.path());
        drop(listener);
        if endpoint.contains("certDir") {
            assert_serves(port, &pki.ca(), "beta.test", "beta");
            assert_serves(port, &pki.ca(), "-", "alpha");
        } else {
            assert_serves(port, &pki.ca(), "localhost", "localhost");
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < end, "{endpoint} did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
