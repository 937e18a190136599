//! The web plugin over TLS (issue 10): twistd's `--https`, `-c` and `-k`, `ssl:` and `tls:`
//! endpoints, every web feature over TLS as over TCP, ALPN, and big or slow downloads, against
//! curl, Python's ssl and http.client. Certificates are made by the openssl command.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;
use crate::tls::{Cert, self_signed};
use crate::web::{Resp, Tree, curl, logged_bytes, read_resp, tree};

/// A P-256 key and a self-signed certificate for localhost and 127.0.0.1 in a temporary
/// directory ([`self_signed`]).
struct Certs {
    _dir: tempfile::TempDir,
    c: Cert,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let c = self_signed(dir.path(), "server");
        Certs { _dir: dir, c }
    }

    fn key(&self) -> String {
        self.c.key.display().to_string()
    }

    fn cert(&self) -> String {
        self.c.cert.display().to_string()
    }

    /// The key and the certificate in one file.
    fn both(&self) -> String {
        self.c.both.display().to_string()
    }

    /// `ssl:0` on 127.0.0.1 with the key and certificate in separate files.
    fn ssl(&self) -> String {
        format!(
            "ssl:0:privateKey={}:certKey={}:interface=127.0.0.1",
            self.key(),
            self.cert()
        )
    }
}

/// Runs a Python script with arguments, bounded by `timeout`; (status, stdout, stderr).
fn py(script: &str, args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new("timeout")
        .args(["120", "python3", "-c", script])
        .args(args)
        .output()
        .expect("python3");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Python's ssl: one connection verified against the CA file, ALPN offered as given ("-":
/// none), the data written at once (pipelined), then everything read to the end. Prints the
/// negotiated protocol on stderr and the bytes received on stdout. A close without TLS's
/// close_notify fails the script (suppress_ragged_eofs=False): a response cut short by the
/// transport cannot pass for a whole one.
const EXCHANGE: &str = r#"
import socket, ssl, sys
port, ca, alpn, data = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
if alpn != "-":
    ctx.set_alpn_protocols(alpn.split(","))
raw = socket.create_connection(("127.0.0.1", port), timeout=20)
s = ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
sys.stderr.write("alpn=%s version=%s\n" % (s.selected_alpn_protocol(), s.version()))
s.sendall(data.encode())
out = bytearray()
for _ in range(100000):
    b = s.recv(65536)
    if not b:
        break
    out += b
sys.stdout.buffer.write(out)
"#;

/// [`EXCHANGE`] on `port`: (its stderr line, the bytes received).
fn exchange(port: u16, ca: &str, alpn: &str, data: &str) -> (String, Vec<u8>) {
    let (code, out, err) = py(EXCHANGE, &[&port.to_string(), ca, alpn, data]);
    assert_eq!(code, 0, "the TLS exchange failed: {err}");
    (err, out)
}

/// The same bytes over plain TCP, read until the server closes.
fn exchange_tcp(port: u16, data: &str) -> Vec<u8> {
    let mut s = connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    send(&mut s, data.as_bytes());
    read_to_end(&mut s)
}

/// Every response in `raw`, in order; `heads` says which answer a HEAD.
fn responses(raw: &[u8], heads: &[bool]) -> Vec<Resp> {
    let mut cur = std::io::Cursor::new(raw);
    let rs: Vec<Resp> = heads.iter().map(|h| read_resp(&mut cur, *h)).collect();
    assert_eq!(
        cur.position() as usize,
        raw.len(),
        "nothing after the last response"
    );
    rs
}

/// `raw` without its Date lines (they may differ by a second between two connections).
fn without_dates(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw);
    text.split("\r\n")
        .filter(|l| !l.starts_with("Date: "))
        .collect::<Vec<_>>()
        .join("\r\n")
        .into_bytes()
}

/// `twistrs web --path ROOT` with `listen` (each a `--listen`).
fn web(t: &Tree, listen: &[&str], extra: &[&str]) -> Server {
    let root = t.root.to_str().unwrap().to_string();
    let mut args = vec!["web", "--path", &root];
    for l in listen {
        args.extend(["--listen", l]);
    }
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn url(port: u16, path: &str) -> String {
    format!("https://localhost:{port}{path}")
}

/// curl's `--resolve`, so `localhost` (the certificate's name) is 127.0.0.1.
fn resolve(port: u16) -> String {
    format!("localhost:{port}:127.0.0.1")
}

#[test]
fn every_web_feature_over_tls_answers_as_over_tcp() {
    let t = tree();
    let c = Certs::new();
    let ssl = c.ssl();
    let srv = web(&t, &["tcp:0:interface=127.0.0.1", &ssl], &[]);
    let (tcp, tls) = (srv.ports()[0], srv.ports()[1]);
    let (code, head) = curl(&[
        "--cacert",
        &c.cert(),
        "--resolve",
        &resolve(tls),
        "-D",
        "-",
        "-o",
        "/dev/null",
        &url(tls, "/a.txt"),
    ]);
    assert_eq!(code, 0, "curl over TLS");
    let head = String::from_utf8_lossy(&head).into_owned();
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("ETag: "))
        .expect("an ETag")
        .trim()
        .to_string();
    // Pipelined in one write, answered in order on one connection (keep-alive), the last
    // closing it: GET, HEAD, a range, several ranges, a 304, a redirect, a listing, a file
    // bigger than the small-file cache (sent with send_file), a 404.
    let reqs = [
        ("GET /a.txt", String::new()),
        ("HEAD /a.txt", String::new()),
        ("GET /a.txt", "Range: bytes=2-4\r\n".into()),
        ("GET /a.txt", "Range: bytes=0-1,8-\r\n".into()),
        ("GET /a.txt", format!("If-None-Match: {etag}\r\n")),
        ("GET /sub?x=1", String::new()),
        ("GET /sub/", String::new()),
        ("GET /data.bin", String::new()),
        ("GET /missing", "Connection: close\r\n".into()),
    ];
    let data: String = reqs
        .iter()
        .map(|(line, h)| format!("{line} HTTP/1.1\r\nHost: x\r\n{h}\r\n"))
        .collect();
    let heads: Vec<bool> = reqs.iter().map(|(l, _)| l.starts_with("HEAD")).collect();
    let (proto, raw) = exchange(tls, &c.cert(), "http/1.1", &data);
    assert!(
        proto.contains("alpn=http/1.1 version=TLSv1.3"),
        "ALPN chose http/1.1: {proto}"
    );
    let rs = responses(&raw, &heads);
    let status: Vec<u16> = rs.iter().map(|r| r.status).collect();
    assert_eq!(status, [200, 200, 206, 206, 304, 302, 200, 200, 404]);
    assert_eq!(rs[0].body, b"0123456789");
    assert_eq!(
        (rs[1].header("Content-Length"), rs[1].body.len()),
        (Some("10"), 0)
    );
    assert_eq!(rs[2].body, b"234");
    let body = String::from_utf8_lossy(&rs[3].body);
    assert!(
        body.contains("Content-Range: bytes 0-1/10\r\n\r\n01\r\n")
            && body.contains("Content-Range: bytes 8-9/10\r\n\r\n89\r\n"),
        "{body}"
    );
    assert_eq!(rs[5].header("Location"), Some("/sub/?x=1"));
    assert!(String::from_utf8_lossy(&rs[6].body).contains("<a href=\"b.css\">b.css</a>"));
    let want: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    assert!(rs[7].body == want, "data.bin intact over TLS");
    assert_eq!(rs[8].header("Connection"), Some("close"));
    // The same requests over TCP to the same site: the same bytes, but for the Date lines.
    let plain = exchange_tcp(tcp, &data);
    assert!(
        without_dates(&plain) == without_dates(&raw),
        "TLS and TCP answers differ"
    );
    // The access log has a line per request, the same for both connections.
    // Each line without its time: `"127.0.0.1" - - ` and what follows the time.
    let access = |l: &[String]| -> Vec<String> {
        l.iter()
            .filter_map(|l| l.split_once("[twistrs.web.access#info] "))
            .filter_map(|(_, l)| {
                let (peer, rest) = l.split_once(" [")?;
                Some(format!("{peer} {}", rest.split_once("] ")?.1))
            })
            .collect()
    };
    srv.wait_until(
        |l| access(l).len() > 2 * reqs.len(),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| panic!("access lines: {:?}", srv.lines()));
    let lines = access(&srv.lines());
    let (tls_lines, tcp_lines) = lines[1..].split_at(reqs.len());
    assert_eq!(tls_lines, tcp_lines);
    assert_eq!(
        tls_lines[7], "\"127.0.0.1\" - - \"GET /data.bin HTTP/1.1\" 200 600000 \"-\" \"-\"",
        "{tls_lines:?}"
    );
}

#[test]
fn keep_alive_with_http_client_and_a_client_without_alpn() {
    let t = tree();
    let c = Certs::new();
    let srv = web(&t, &[&c.ssl()], &[]);
    // http.client sends each request after the last response: keep-alive, one connection.
    let script = r#"
import hashlib, http.client, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ctx, timeout=20)
socks = []
for method, path, hdrs in [("GET", "/a.txt", {}), ("HEAD", "/sub/b.css", {}),
                           ("GET", "/data.bin", {}), ("GET", "/a.txt", {"Range": "bytes=7-"})]:
    c.request(method, path, headers=hdrs)
    r = c.getresponse()
    body = r.read()
    socks.append(c.sock)
    print(method, path, r.status, len(body), hashlib.md5(body).hexdigest())
print("one connection:", all(s is socks[0] for s in socks))
"#;
    let (code, out, err) = py(script, &[&srv.port().to_string(), &c.cert()]);
    assert_eq!(code, 0, "{err}");
    let out = String::from_utf8_lossy(&out);
    let md5 = |b: &[u8]| {
        let mut p = Command::new("md5sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut p.stdin.take().unwrap(), b).unwrap();
        let o = p.wait_with_output().unwrap();
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    };
    let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    let want = format!(
        "GET /a.txt 200 10 {}\nHEAD /sub/b.css 200 0 {}\nGET /data.bin 200 600000 {}\n\
         GET /a.txt 206 3 {}\none connection: True\n",
        md5(b"0123456789"),
        md5(b""),
        md5(&data),
        md5(b"789")
    );
    assert_eq!(out, want);
    // A client that offers no ALPN is served all the same.
    let (proto, raw) = exchange(
        srv.port(),
        &c.cert(),
        "-",
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(proto.contains("alpn=None"), "{proto}");
    assert_eq!(responses(&raw, &[false])[0].body, b"0123456789");
}

#[test]
fn curl_negotiates_http11_by_alpn_and_is_logged() {
    let t = tree();
    let c = Certs::new();
    let srv = web(&t, &[&c.ssl()], &[]);
    let port = srv.port();
    let out = Command::new("curl")
        .args(["-sv", "--max-time", "30", "--cacert", &c.cert()])
        .args(["--resolve", &resolve(port), "-A", "curl/8.0"])
        .arg(url(port, "/a.txt"))
        .output()
        .expect("curl");
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{verbose}");
    assert_eq!(out.stdout, b"0123456789");
    assert!(
        verbose.contains("ALPN: server accepted http/1.1"),
        "{verbose}"
    );
    let (code, body) = curl(&[
        "--cacert",
        &c.cert(),
        "--resolve",
        &resolve(port),
        "-r",
        "3-5",
        &url(port, "/a.txt"),
    ]);
    assert_eq!((code, body.as_slice()), (0, b"345".as_slice()));
    assert!(
        srv.log_contains("\"GET /a.txt HTTP/1.1\" 200 10 \"-\" \"curl/8.0\""),
        "{:?}",
        srv.lines()
    );
    assert!(srv.log_contains("\"GET /a.txt HTTP/1.1\" 206 3 "));
}

#[test]
fn twistd_https_certificate_and_privkey_options() {
    let t = tree();
    let c = Certs::new();
    let root = t.root.to_str().unwrap();
    let get = |port: u16| {
        curl(&[
            "--cacert",
            &c.cert(),
            "--resolve",
            &resolve(port),
            &url(port, "/a.txt"),
        ])
    };
    // -c is the certificate, -k the key; PORT is pasted into the endpoint as twistd does,
    // so keywords may follow it. Without --listen, only the HTTPS port: no tcp:8080.
    let (key, cert) = (c.key(), c.cert());
    let srv = Server::start(&[
        "web",
        "--path",
        root,
        "--https",
        "0:interface=127.0.0.1",
        "-c",
        &cert,
        "-k",
        &key,
    ]);
    assert_eq!(get(srv.port()), (0, b"0123456789".to_vec()));
    assert_eq!(srv.ports().len(), 1, "{:?}", srv.lines());
    // With --listen as well: both, the --listen first.
    let srv = Server::start(&[
        "web",
        "--path",
        root,
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--https=0:interface=127.0.0.1",
        "--certificate",
        &cert,
        "--privkey",
        &key,
    ]);
    srv.wait_until(
        |l| l.iter().filter(|l| l.contains(" starting on ")).count() == 2,
        Duration::from_secs(10),
    )
    .expect("two listeners");
    let (tcp, tls) = (srv.ports()[0], srv.ports()[1]);
    assert_eq!(get(tls), (0, b"0123456789".to_vec()));
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{tcp}/a.txt")]),
        (0, b"0123456789".to_vec())
    );
    // Both default to server.pem in the current directory: one file with key and certificate.
    let cwd = tempfile::tempdir().unwrap();
    std::fs::copy(c.both(), cwd.path().join("server.pem")).unwrap();
    let cwd = cwd.path().to_str().unwrap();
    let srv = Server::start_wrapped(
        &["env", "-C", cwd],
        &["web", "--path", root, "--https", "0:interface=127.0.0.1"],
    );
    assert_eq!(get(srv.port()), (0, b"0123456789".to_vec()));
    // A missing file, swapped files, a bad port: one line, exit 1.
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = run_in(empty.path(), &["-n", "web", "--https", "0"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("server.pem: No such file"),
        "the default names server.pem: {err}"
    );
    let (code, _, err) = run(&["-n", "web", "--https", "0", "-c", &key, "-k", &cert]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&cert), "{err}");
    let (code, _, err) = run(&["-n", "web", "--https", "x", "-c", &cert, "-k", &key]);
    assert_eq!(code, 1);
    assert!(err.contains("web: --https x: invalid endpoint"), "{err}");
}

#[test]
fn tls_certdir_and_a_combined_pem_file() {
    let t = tree();
    let c = Certs::new();
    let certdir = tempfile::tempdir().unwrap();
    for f in [&c.c.key, &c.c.cert] {
        std::fs::copy(f, certdir.path().join(f.file_name().unwrap())).unwrap();
    }
    let tls = format!(
        "tls:{}:port=0:interface=127.0.0.1",
        certdir.path().display()
    );
    let ssl = format!("ssl:0:privateKey={}:interface=127.0.0.1", c.both());
    let srv = web(&t, &[&tls, &ssl], &[]);
    for port in srv.ports() {
        let (code, body) = curl(&[
            "--cacert",
            &c.cert(),
            "--resolve",
            &resolve(port),
            &url(port, "/sub/b.css"),
        ]);
        assert_eq!((code, body.as_slice()), (0, b"b{}".as_slice()), "{port}");
    }
}

#[test]
fn timeouts_and_error_answers_over_tls() {
    let t = tree();
    let c = Certs::new();
    let srv = web(&t, &[&c.ssl()], &["--timeout", "1"]);
    // After the handshake: an idle connection is closed with close_notify (a ragged close
    // fails the script), a request head that does not arrive gets 408.
    let script = r#"
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[2])
def conn():
    raw = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
    return ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
def read_all(s):
    out = b""
    for _ in range(1000):
        b = s.recv(65536)
        if not b:
            return out
        out += b
s = conn()
started = time.monotonic()
print("idle", repr(read_all(s)), time.monotonic() - started < 5)
s = conn()
s.sendall(b"GET /a.txt HTTP/1.1\r\n")
print("head", read_all(s).split(b"\r\n")[0].decode())
"#;
    let (code, out, err) = py(script, &[&srv.port().to_string(), &c.cert()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "idle b'' True\nhead HTTP/1.1 408 Request Timeout\n"
    );
    // A body too large: 413, and the close lingers so the client gets it while still sending.
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.bin");
    std::fs::write(&body, vec![b'x'; 5_000_000]).unwrap();
    let port = srv.port();
    for _ in 0..3 {
        let (code, status) = curl(&[
            "--cacert",
            &c.cert(),
            "--resolve",
            &resolve(port),
            "--data-binary",
            &format!("@{}", body.display()),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url(port, "/a.txt"),
        ]);
        assert_eq!((code, status.as_slice()), (0, b"413".as_slice()));
    }
}

/// The peak resident memory of `pid` while `f` runs, sampled every 20 ms.
fn peak_rss_during<T>(pid: u32, f: impl FnOnce() -> T) -> (T, u64) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (p2, d2) = (peak.clone(), done.clone());
    let sampler = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(120);
        while !d2.load(Ordering::SeqCst) && Instant::now() < end {
            let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if let Some(kib) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
            {
                p2.fetch_max(kib, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let out = f();
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    (out, peak.load(Ordering::SeqCst))
}

fn md5_of(cmd: String) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_one_gib_sparse_file_over_tls_arrives_intact_with_flat_memory() {
    // A whole GiB: ring's assembly encrypts at about 300 MB/s even in a debug build, so this
    // takes about 4 s.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(1 << 30).unwrap();
    use std::os::unix::fs::FileExt;
    for (i, off) in [0u64, 12_345_678, 700_000_000, (1 << 30) - 5]
        .iter()
        .enumerate()
    {
        f.write_all_at(format!("mark{i}").as_bytes(), *off).unwrap();
    }
    drop(f);
    let c = Certs::new();
    let srv = Server::start(&[
        "web",
        "--path",
        dir.path().to_str().unwrap(),
        "--listen",
        &c.ssl(),
    ]);
    let base = srv.rss_kib();
    let port = srv.port();
    let started = Instant::now();
    let (got, peak) = peak_rss_during(srv.pid(), || {
        md5_of(format!(
            "curl -s --max-time 120 --cacert {} --resolve {} {} | md5sum",
            c.cert(),
            resolve(port),
            url(port, "/big.bin")
        ))
    });
    let took = started.elapsed();
    let want = md5_of(format!("md5sum {}", big.display()));
    assert_eq!(got, want, "the whole GiB arrived intact in {took:?}");
    assert!(
        peak < base + 4096,
        "memory flat during 1 GiB over TLS: {base} KiB -> peak {peak} KiB"
    );
    assert_eq!(
        logged_bytes(&srv, "GET /big.bin HTTP/1.1"),
        Some(1 << 30),
        "{:?}",
        srv.lines()
    );
}

#[test]
fn a_slow_tls_download_that_keeps_moving_outlives_the_idle_timeout() {
    // 30 MB read at about 4 MB/s (64 KiB, then 15 ms of sleep) takes about 7 s, more than
    // twice --timeout 3: the timeout is for a connection where nothing moves, also under TLS.
    // (3 s, not 1: a client starved of CPU on a loaded machine may really not read for a second.)
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..30_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.path().join("slow.bin"), &data).unwrap();
    let c = Certs::new();
    let srv = Server::start(&[
        "web",
        "--path",
        dir.path().to_str().unwrap(),
        "--listen",
        &c.ssl(),
        "--timeout",
        "3",
    ]);
    let script = r#"
import hashlib, socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[2])
raw = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
s = ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
s.sendall(b"GET /slow.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
started = time.monotonic()
got = bytearray()
done = False
for _ in range(2000):
    batch = 0
    while batch < 65536:
        b = s.recv(65536)
        if not b:
            done = True
            break
        got += b
        batch += len(b)
    if done:
        break
    time.sleep(0.015)
took = time.monotonic() - started
body = got[got.index(b"\r\n\r\n") + 4:]
print(len(body), hashlib.md5(body).hexdigest(), "%.3f" % took)
"#;
    let (code, out, err) = py(script, &[&srv.port().to_string(), &c.cert()]);
    assert_eq!(code, 0, "{err}");
    let out = String::from_utf8_lossy(&out).into_owned();
    let fields: Vec<&str> = out.split_whitespace().collect();
    let want_md5 = md5_of(format!("md5sum {}", dir.path().join("slow.bin").display()));
    assert_eq!(
        fields[..2],
        [data.len().to_string().as_str(), want_md5.as_str()],
        "every byte arrived intact: {out}"
    );
    let took: f64 = fields[2].parse().unwrap();
    assert!(
        took > 6.0,
        "the download was slow enough to mean something ({took} s)"
    );
}

#[test]
fn an_interrupted_tls_download_is_logged_with_the_bytes_that_left() {
    // 256 MiB (sparse): more than the socket buffers hold, so a client that reads 1 MiB of
    // plaintext and goes away cuts the response.
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 256 << 20;
    std::fs::File::create(dir.path().join("big.bin"))
        .unwrap()
        .set_len(size)
        .unwrap();
    let c = Certs::new();
    let srv = Server::start(&[
        "web",
        "--path",
        dir.path().to_str().unwrap(),
        "--listen",
        &c.ssl(),
    ]);
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
raw = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
s = ctx.wrap_socket(raw, server_hostname="localhost")
s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
got = 0
while got < 1 << 20:
    b = s.recv(65536)
    if not b:
        sys.exit("the response stopped at %d bytes" % got)
    got += len(b)
s.close()
print(got)
"#;
    let (code, _, err) = py(script, &[&srv.port().to_string(), &c.cert()]);
    assert_eq!(code, 0, "{err}");
    let bytes = logged_bytes(&srv, "GET /big.bin HTTP/1.1").expect("an access line");
    assert!(
        bytes >= (1 << 20) - 1024 && bytes < size,
        "the access line shows what left, not the file's size: {bytes}"
    );
    assert!(
        srv.log_contains(&format!(
            "\"GET /big.bin HTTP/1.1\" interrupted after {bytes} of {size} bytes"
        )),
        "{:?}",
        srv.lines()
    );
}

/// Python's ssl over memory BIOs: the ClientHello sent in `pieces` parts `gap` seconds apart
/// (so the handshake spreads over longer than `--timeout`, never silent that long), then
/// the handshake finished, `wait` seconds of silence, and a request for /a.txt. Prints the
/// status line, or `closed` if the server closed first.
const SLOW_HANDSHAKE: &str = r#"
import socket, ssl, sys, time
port, ca, pieces, gap, wait = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
ctx = ssl.create_default_context(cafile=ca)
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname="localhost")
s = socket.create_connection(("127.0.0.1", port), timeout=20)
def gone():
    print("closed"); sys.exit(0)
def send(b):
    try:
        s.sendall(b)
    except OSError:
        gone()
def recv():
    try:
        r = s.recv(65536)
    except OSError:
        gone()
    if not r:
        gone()
    inc.write(r)
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = out.read()
for i in range(pieces):
    send(hello[i * len(hello) // pieces:(i + 1) * len(hello) // pieces])
    time.sleep(gap)
for _ in range(100):
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        send(out.read())
        recv()
    except ssl.SSLError:
        gone()
send(out.read())
time.sleep(wait)
tls.write(b"GET /a.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
send(out.read())
got = b""
for _ in range(100):
    try:
        got += tls.read(65536)
        if b"\r\n" in got:
            break
    except ssl.SSLWantReadError:
        recv()
    except ssl.SSLError:
        break
print(got.split(b"\r\n")[0].decode() if got else "closed")
"#;

/// The idle `--timeout` counts the TLS handshake's records as activity: a client whose
/// ClientHello comes in four pieces 0.9 s apart (3.6 s in all, against a 2 s timeout), then
/// sends its request 1.2 s after its Finished, is served. Before, the timeout ran from the
/// accept, through the handshake, and closed it without a response.
#[test]
fn a_handshake_that_keeps_coming_is_activity_for_the_idle_timeout() {
    let t = tree();
    let c = Certs::new();
    let srv = web(&t, &[&c.ssl()], &["--timeout", "2"]);
    let port = srv.port().to_string();
    let (code, out, err) = py(SLOW_HANDSHAKE, &[&port, &c.cert(), "4", "0.9", "1.2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        "HTTP/1.1 200 OK",
        "{err}"
    );
    assert_eq!(
        srv.lines()
            .iter()
            .filter(|l| l.contains("Timing out idle connection"))
            .count(),
        0,
        "{:?}",
        srv.lines()
    );
    // Silence is still idle: a ClientHello that stops half way is closed by the timeout.
    let (code, out, err) = py(SLOW_HANDSHAKE, &[&port, &c.cert(), "2", "3.0", "0"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(String::from_utf8_lossy(&out).trim(), "closed", "{err}");
}
