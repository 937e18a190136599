//! The web plugin against real clients (curl and raw sockets) on 127.0.0.1.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// A parsed response.
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response from `s` (body by Content-Length; none for HEAD, 1xx, 304).
pub(crate) fn read_resp(s: &mut impl Read, head_only: bool) -> Resp {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("response head");
        assert!(
            n == 1,
            "connection closed in the head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
        assert!(buf.len() < 64 * 1024);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let mut r = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = r.header("Content-Length").map_or(0, |v| v.parse().unwrap());
    if !head_only && status != 304 && status >= 200 {
        r.body = read_n(s, len);
    }
    r
}

/// One request on a new connection.
fn get(addr: SocketAddr, req: &str) -> Resp {
    let mut s = connect(addr);
    send(&mut s, req.as_bytes());
    read_resp(&mut s, req.starts_with("HEAD"))
}

fn get_path(addr: SocketAddr, path: &str) -> Resp {
    get(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

pub(crate) fn curl(args: &[&str]) -> (i32, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl");
    (out.status.code().unwrap_or(-1), out.stdout)
}

/// A tree: index.html, a.txt, r.txt.gz, data.bin, noext, sub/ (with b.css), empty/,
/// .hidden, a name needing escapes, and a secret outside the root.
pub(crate) struct Tree {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    secret: PathBuf,
}

pub(crate) fn tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("index.html"), "<p>index</p>").unwrap();
    std::fs::write(root.join("a.txt"), "0123456789").unwrap();
    std::fs::write(root.join("r.txt.gz"), b"\x1f\x8bgz").unwrap();
    std::fs::write(root.join("noext"), "no extension").unwrap();
    std::fs::write(root.join("page.html"), "the page").unwrap();
    std::fs::write(root.join("sub/b.css"), "b{}").unwrap();
    std::fs::write(root.join(".hidden"), "dot").unwrap();
    std::fs::write(root.join("empty/x <&>\".txt"), "x").unwrap();
    let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("data.bin"), &big).unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "TOP SECRET").unwrap();
    std::os::unix::fs::symlink(&secret, root.join("escape")).unwrap();
    std::os::unix::fs::symlink("a.txt", root.join("alias.txt")).unwrap();
    std::os::unix::fs::symlink(root.join("a.txt"), root.join("abs-alias.txt")).unwrap();
    std::os::unix::fs::symlink(root.join("sub"), root.join("abs-sub")).unwrap();
    Tree {
        _dir: dir,
        root,
        secret,
    }
}

fn web(t: &Tree, extra: &[&str]) -> Server {
    web_at(&t.root, extra)
}

/// `twistrs -n web --path ROOT` on a port of its own on 127.0.0.1, with `extra` options.
fn web_at(root: &std::path::Path, extra: &[&str]) -> Server {
    let root = root.to_str().unwrap().to_string();
    let mut args = vec![
        "web",
        "--path",
        &root,
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[test]
fn files_types_headers_and_conditionals() {
    let t = tree();
    let srv = web(&t, &["--add-header", "X-Test: yes"]);
    let a = srv.addr();
    let r = get_path(a, "/a.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"0123456789");
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
    assert_eq!(
        r.header("X-Test"),
        Some("yes"),
        "--add-header on every response"
    );
    assert!(r.header("Date").is_some() && r.header("Last-Modified").is_some());
    let etag = r.header("ETag").unwrap().to_string();
    let lm = r.header("Last-Modified").unwrap().to_string();
    let gz = get_path(a, "/r.txt.gz");
    assert_eq!(
        (gz.header("Content-Type"), gz.header("Content-Encoding")),
        (Some("text/plain"), Some("gzip"))
    );
    assert_eq!(
        get_path(a, "/noext").header("Content-Type"),
        Some("text/html"),
        "twistd's default type"
    );
    let r = get(
        a,
        &format!(
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("X-Test"), Some("yes"), "also on 304");
    let r = get(
        a,
        &format!(
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: {lm}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(r.status, 304);
    let r = get(
        a,
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let h = get(
        a,
        "HEAD /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((h.status, h.header("Content-Length")), (200, Some("10")));
    assert!(h.body.is_empty());
    // A symlink inside the root that stays inside is served, its target written relative
    // or absolute (issue 8.18).
    assert_eq!(get_path(a, "/alias.txt").body, b"0123456789");
    assert_eq!(get_path(a, "/abs-alias.txt").body, b"0123456789");
    assert_eq!(get_path(a, "/abs-sub/b.css").body, b"b{}");
    assert_eq!(
        get_path(a, "/abs-sub").header("Location"),
        Some("/abs-sub/")
    );
    let srv = web(&t, &["-m", "application/octet-stream"]);
    assert_eq!(
        get_path(srv.addr(), "/noext").header("Content-Type"),
        Some("application/octet-stream")
    );
}

/// curl's status code and body for `args` (each `-H` a request field).
fn curl_status(args: &[&str]) -> (String, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let mut body = out.stdout;
    let at = body.iter().rposition(|b| *b == b'\n').unwrap();
    let code = String::from_utf8_lossy(&body[at + 1..]).into_owned();
    body.truncate(at);
    (code, body)
}

/// If-Match and If-Unmodified-Since (RFC 9110 13.1.1, 13.1.4), which twistd ignores, are
/// evaluated in the order of 13.2.2, as nginx 1.22 answers them (412) except where the RFC
/// says otherwise: an If-Unmodified-Since that is no date, or that comes with an If-Match, or
/// sent for a listing (no date to compare), is ignored, where nginx answers 412.
#[test]
fn if_match_and_if_unmodified_since_fail_with_412() {
    let t = tree();
    let srv = web(&t, &["--add-header", "X-Test: yes"]);
    let a = srv.addr();
    let url = format!("http://{a}/a.txt");
    let r = get_path(a, "/a.txt");
    let etag = r.header("ETag").unwrap().to_string();
    let lm = r.header("Last-Modified").unwrap().to_string();
    let before = "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:01 GMT";
    let im = |tags: &str| format!("If-Match: {tags}");
    for (fields, want) in [
        (vec![im(&etag)], "200"),
        (vec![im("*")], "200"),
        (vec![im(&format!("\"stale\", {etag}"))], "200"),
        (vec![im("\"stale\"")], "412"),
        (vec![im(&format!("W/{etag}"))], "412"),
        (vec![im("not-a-tag")], "412"),
        (vec![format!("If-Unmodified-Since: {lm}")], "200"),
        (vec![before.to_string()], "412"),
        (vec!["If-Unmodified-Since: yesterday".to_string()], "200"),
        (vec![im(&etag), before.to_string()], "200"),
        (
            vec![im("\"stale\""), format!("If-None-Match: {etag}")],
            "412",
        ),
        (vec![im(&etag), format!("If-None-Match: {etag}")], "304"),
        (
            vec![before.to_string(), format!("If-None-Match: {etag}")],
            "412",
        ),
        (vec![im("\"stale\""), "Range: bytes=0-1".to_string()], "412"),
        (vec![im(&etag), "Range: bytes=0-1".to_string()], "206"),
        (
            vec![im("\"stale\""), "Range: bytes=50-60".to_string()],
            "412",
        ),
    ] {
        let mut args: Vec<&str> = Vec::new();
        for f in &fields {
            args.extend(["-H", f]);
        }
        args.push(&url);
        let (code, body) = curl_status(&args);
        assert_eq!(code, want, "{fields:?}");
        if code == "412" {
            let page = String::from_utf8_lossy(&body);
            assert!(
                page.contains("<title>412 - Precondition Failed</title>"),
                "{page}"
            );
        }
    }
    // The 412 as a response of its own: twistd's page, the added headers, kept alive.
    let mut s = connect(a);
    send(
        &mut s,
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nIf-Match: \"stale\"\r\n\r\n",
    );
    let r = read_resp(&mut s, false);
    assert_eq!(r.status, 412);
    assert_eq!(r.header("X-Test"), Some("yes"));
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("Connection"), None, "the connection stays open");
    send(
        &mut s,
        b"HEAD /a.txt HTTP/1.1\r\nHost: x\r\nIf-Unmodified-Since: Thu, 01 Jan 1970 00:00:01 GMT\r\n\r\n",
    );
    let h = read_resp(&mut s, true);
    assert_eq!(h.status, 412, "HEAD too, without the page");
    send(&mut s, b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(read_resp(&mut s, false).body, b"0123456789");
    // A listing has no ETag and no date: only `*` matches it.
    let list = format!("http://{a}/sub/");
    for (field, want) in [
        ("If-Match: *", "200"),
        ("If-Match: \"x\"", "412"),
        (before, "200"),
        ("If-None-Match: *", "304"),
    ] {
        assert_eq!(curl_status(&["-H", field, &list]).0, want, "{field}");
    }
    // A 404 or a redirect ignores them (RFC 9110 13.2.1), as twistd and nginx do.
    assert_eq!(
        curl_status(&["-H", "If-Match: \"x\"", &format!("http://{a}/missing")]).0,
        "404"
    );
    assert_eq!(
        curl_status(&["-H", "If-Match: \"x\"", &format!("http://{a}/sub")]).0,
        "302"
    );
    // Each 412 is in the access log as any answer is.
    assert!(
        srv.wait_until(
            |l| l.iter().any(|l| l.contains("\"GET /a.txt HTTP/1.1\" 412 ")),
            Duration::from_secs(5)
        )
        .is_some()
    );
}

#[test]
fn ranges_single_multiple_unsatisfiable_and_if_range() {
    let t = tree();
    let srv = web(&t, &[]);
    let a = srv.addr();
    let r = get(
        a,
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=2-4\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"234");
    assert_eq!(r.header("Content-Range"), Some("bytes 2-4/10"));
    let r = get(
        a,
        "GET /data.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=-5\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        r.header("Content-Range"),
        Some("bytes 599995-599999/600000"),
        "sendfile range"
    );
    assert_eq!(
        r.body,
        (599_995..600_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
    );
    let r = get(
        a,
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1,8-\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 206);
    let ct = r.header("Content-Type").unwrap();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .expect(ct);
    let body = String::from_utf8(r.body.clone()).unwrap();
    assert!(
        body.contains("Content-Range: bytes 0-1/10\r\n\r\n01\r\n"),
        "{body}"
    );
    assert!(
        body.contains("Content-Range: bytes 8-9/10\r\n\r\n89\r\n"),
        "{body}"
    );
    assert!(body.ends_with(&format!("--{boundary}--\r\n")));
    let r = get(
        a,
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=50-60\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (r.status, r.header("Content-Range")),
        (416, Some("bytes */10"))
    );
    let etag = get_path(a, "/a.txt").header("ETag").unwrap().to_string();
    let r = get(
        a,
        &format!(
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\nIf-Range: {etag}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!((r.status, r.body.as_slice()), (206, b"0".as_slice()));
    let r = get(
        a,
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\nIf-Range: \"stale\"\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (r.status, r.body.len()),
        (200, 10),
        "a stale If-Range gets everything"
    );
    let r = get(
        a,
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=9-2\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        r.status, 200,
        "a malformed Range is ignored, as twistd does"
    );
    let (code, out) = curl(&["-r", "3-5", &format!("http://{a}/a.txt")]);
    assert_eq!((code, out.as_slice()), (0, b"345".as_slice()));
    // Ranges that add up to more than the file (copies of it): the whole file, as nginx
    // answers, never a multipart body larger than the file.
    let r = get(
        a,
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-,0-,2-\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"0123456789".as_slice())
    );
}

#[test]
fn a_file_named_index_is_the_first_index_as_in_twistd() {
    // twistd's static.File tries index, index.html, index.htm, in that order.
    let dir = tempfile::tempdir().unwrap();
    for (file, body) in [
        ("bare/index", "bare"),
        ("both/index", "first"),
        ("both/index.html", "second"),
    ] {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let srv = web_at(dir.path(), &[]);
    let a = srv.addr();
    assert_eq!(get_path(a, "/bare/").body, b"bare", "not a listing");
    assert_eq!(get_path(a, "/both/").body, b"first");
}

#[test]
fn with_chroot_the_root_and_the_access_log_are_inside_the_jail() {
    // twistd looks --path and -l up inside the jail: `--chroot JAIL web --path /` serves JAIL.
    // They were opened before the chroot: that command line served the whole file system.
    if nobody_as_root("with_chroot_the_root_and_the_access_log_are_inside_the_jail").is_none() {
        return;
    }
    let jail = tempfile::tempdir().unwrap();
    std::fs::create_dir(jail.path().join("www")).unwrap();
    std::fs::write(jail.path().join("www/index.html"), "jailed").unwrap();
    let srv = Server::start(&[
        "--chroot",
        jail.path().to_str().unwrap(),
        "web",
        "--path",
        "/",
        "-l",
        "/access.log",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    let a = srv.addr();
    assert_eq!(get_path(a, "/www/").body, b"jailed");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("host.txt"), "host").unwrap();
    let host = format!("{}/host.txt", outside.path().display());
    assert_eq!(get_path(a, &host).status, 404, "the host's / is not served");
    let log = jail.path().join("access.log");
    let logged = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("\"GET /www/ HTTP/1.1\" 200"))
    });
    assert!(logged, "the access log in the jail: {:?}", srv.lines());
}

#[test]
fn directories_redirect_index_listing_and_errors() {
    let t = tree();
    let srv = web(&t, &[]);
    let a = srv.addr();
    let r = get_path(a, "/sub?x=1");
    assert_eq!((r.status, r.header("Location")), (302, Some("/sub/?x=1")));
    assert_eq!(get_path(a, "/").body, b"<p>index</p>", "index.html");
    let l = get_path(a, "/sub/");
    assert_eq!(l.status, 200);
    let html = String::from_utf8(l.body).unwrap();
    assert!(
        html.contains("Directory listing for /sub/")
            && html.contains("<a href=\"b.css\">b.css</a>")
    );
    assert!(html.contains("[text/css]"));
    let e = String::from_utf8(get_path(a, "/empty/").body).unwrap();
    assert!(
        e.contains("x &lt;&amp;&gt;\"") && e.contains("href=\"x%20%3C%26%3E%22.txt\""),
        "{e}"
    );
    let r = get_path(a, "/missing");
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("No Such Resource"));
    assert_eq!(
        get_path(a, "/.hidden").status,
        200,
        "twistd serves dotfiles by default"
    );
    assert_eq!(get_path(a, "/a.txt/").status, 404);
    // -i replaces the default list; --no-listing; --hide-dotfiles.
    let srv = web(&t, &["-i", "a.txt", "--no-listing", "--hide-dotfiles"]);
    let a = srv.addr();
    assert_eq!(get_path(a, "/").body, b"0123456789");
    assert_eq!(get_path(a, "/sub/").status, 403);
    assert_eq!(get_path(a, "/.hidden").status, 404);
    // A single file as the root.
    let f = t.root.join("a.txt");
    let srv = web_at(&f, &[]);
    assert_eq!(get_path(srv.addr(), "/").body, b"0123456789");
    assert_eq!(get_path(srv.addr(), "/other").status, 404);
}

#[test]
fn ignore_ext_and_allow_ignore_ext() {
    let t = tree();
    let srv = web(&t, &["--ignore-ext", ".html"]);
    assert_eq!(get_path(srv.addr(), "/page").body, b"the page");
    assert_eq!(get_path(srv.addr(), "/a").status, 404);
    let srv = web(&t, &["--allow-ignore-ext"]);
    assert_eq!(get_path(srv.addr(), "/a").body, b"0123456789");
    assert_eq!(get_path(srv.addr(), "/sub/b").body, b"b{}");
}

#[test]
fn no_request_reads_outside_the_root() {
    let t = tree();
    let srv = web(&t, &[]);
    let a = srv.addr();
    let name = t.secret.file_name().unwrap().to_str().unwrap();
    for target in [
        format!("/../{name}"),
        format!("/%2e%2e/{name}"),
        format!("/%2E%2e/{name}"),
        format!("/sub/..%2f..%2f{name}"),
        format!("/sub/%2e%2e%2f%2e%2e%2f{name}"),
        format!("/..%5c{name}"),
        format!("/..\\{name}"),
        "/a.txt%00.html".to_string(),
        t.secret.display().to_string(),
        format!("http://x{}", t.secret.display()),
        "/escape".to_string(),
    ] {
        let mut s = connect(a);
        send(
            &mut s,
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let raw = read_to_end(&mut s);
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains("TOP SECRET"), "{target}: {text}");
        let status: u16 = text.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
        assert!([400, 403, 404].contains(&status), "{target}: {text}");
    }
    assert_eq!(
        get_path(a, "/escape").status,
        403,
        "a symlink out of the root is refused"
    );
    let srv = web(&t, &["--follow-symlinks"]);
    assert_eq!(
        get_path(srv.addr(), "/escape").body,
        b"TOP SECRET",
        "unless --follow-symlinks"
    );
}

#[test]
fn keep_alive_pipelining_http10_and_close() {
    let t = tree();
    let srv = web(&t, &[]);
    let mut s = connect(srv.addr());
    // Three pipelined requests in one write; answered in order on one connection.
    send(&mut s, b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\nHEAD /sub/b.css HTTP/1.1\r\nHost: x\r\n\r\nGET /sub/b.css HTTP/1.1\r\nHost: x\r\n\r\n");
    let r1 = read_resp(&mut s, false);
    let r2 = read_resp(&mut s, true);
    let r3 = read_resp(&mut s, false);
    assert_eq!(
        (r1.body.as_slice(), r2.status, r3.body.as_slice()),
        (b"0123456789".as_slice(), 200, b"b{}".as_slice())
    );
    // Fed a byte at a time, a request still parses.
    for b in b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n" {
        send(&mut s, &[*b]);
    }
    assert_eq!(read_resp(&mut s, false).body, b"0123456789");
    // HTTP/1.0 closes by default; keeps alive when asked.
    let mut s = connect(srv.addr());
    send(&mut s, b"GET /a.txt HTTP/1.0\r\n\r\n");
    let raw = read_to_end(&mut s);
    assert!(raw.starts_with(b"HTTP/1.1 200") && raw.ends_with(b"0123456789"));
    let mut s = connect(srv.addr());
    send(
        &mut s,
        b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    let r = read_resp(&mut s, false);
    assert_eq!(r.header("Connection"), Some("keep-alive"));
    send(
        &mut s,
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let r = read_resp(&mut s, false);
    assert_eq!(r.header("Connection"), Some("close"));
    assert_eq!(read_to_end(&mut s), b"", "closed after Connection: close");
}

#[test]
fn methods_bodies_and_expect_continue() {
    let t = tree();
    let srv = web(&t, &[]);
    let mut s = connect(srv.addr());
    send(
        &mut s,
        b"POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let r = read_resp(&mut s, false);
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET, HEAD")));
    assert_eq!(
        read_resp(&mut s, false).body,
        b"0123456789",
        "the body was dropped, the next request served"
    );
    send(&mut s, b"GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /sub/b.css HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(read_resp(&mut s, false).body, b"0123456789");
    assert_eq!(
        read_resp(&mut s, false).body,
        b"b{}",
        "chunked body skipped"
    );
    // Expect: 100-continue gets the interim response before the body is sent.
    send(
        &mut s,
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    );
    let interim = read_resp(&mut s, true);
    assert_eq!(interim.status, 100);
    send(&mut s, b"body");
    assert_eq!(read_resp(&mut s, false).status, 200);
    // Over the body limit (1 MiB): 413 and close.
    let mut s = connect(srv.addr());
    send(
        &mut s,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
    );
    assert_eq!(read_resp(&mut s, false).status, 413);
    let (code, out) = curl(&[
        "-X",
        "DELETE",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{}/a.txt", srv.addr()),
    ]);
    assert_eq!((code, out.as_slice()), (0, b"405".as_slice()));
}

#[test]
fn limits_414_431_and_timeouts() {
    let t = tree();
    let srv = web(&t, &["--timeout", "1"]);
    let a = srv.addr();
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    assert_eq!(get(a, &long).status, 414);
    let fat = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(17000)
    );
    assert_eq!(get(a, &fat).status, 431);
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        get(a, &format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")).status,
        431
    );
    assert_eq!(get(a, "GET / HTTP/2.0\r\n\r\n").status, 505);
    assert_eq!(
        get(a, "BR0KEN\x01 / HTTP/1.1\r\nHost: x\r\n\r\n").status,
        400
    );
    assert!(
        srv.log_contains("Bad request from"),
        "malformed input is logged"
    );
    // Idle keep-alive connection: closed after --timeout.
    let mut s = connect(a);
    let start = Instant::now();
    assert_eq!(read_to_end(&mut s), b"");
    assert!(
        start.elapsed() >= Duration::from_millis(900) && start.elapsed() < Duration::from_secs(5)
    );
    // A slow client that never finishes its head: 408, then closed.
    let mut s = connect(a);
    send(&mut s, b"GET / HTTP/1.1\r\nHost:");
    let raw = read_to_end(&mut s);
    assert!(
        raw.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let srv = web(&t, &["--max-connections", "1"]);
    let _first = connect(srv.addr());
    let mut second = connect(srv.addr());
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    send(&mut second, b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut b = [0u8; 1];
    assert!(
        second.read(&mut b).is_err(),
        "not served while at the limit"
    );
}

#[test]
fn a_stop_lets_a_slow_download_finish_while_its_bytes_leave_the_kernel() {
    use std::io::{Read, Write};
    // A reader at 1 MB/s drains megabytes of socket buffer so slowly that the server gets
    // room to write only every second or two: no write, yet the download moves. The stop's
    // one-second grace for idle connections must not cut it.
    let t = tree();
    let size = 8 << 20;
    std::fs::write(t.root.join("big.bin"), vec![7u8; size]).unwrap();
    let root = t.root.to_str().unwrap().to_string();
    let mut srv = Server::start(&[
        "--shutdown-timeout",
        "60",
        "web",
        "--path",
        &root,
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    let mut c = connect(srv.addr());
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    send(
        &mut c,
        b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let (start, mut got, mut stopped) = (Instant::now(), 0usize, false);
    let mut buf = vec![0u8; 64 << 10];
    while start.elapsed() < Duration::from_secs(40) {
        let n = c.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        got += n;
        if !stopped && start.elapsed() > Duration::from_secs(1) {
            srv.signal(libc::SIGTERM);
            stopped = true;
        }
        // 1 MB/s.
        std::thread::sleep(Duration::from_micros(n as u64));
    }
    let _ = c.flush();
    assert!(stopped, "the download ended within a second");
    assert!(got > size, "{got} bytes of {size} and the head");
    assert!(
        srv.wait(Duration::from_secs(10)).is_some(),
        "still draining"
    );
    let lines = srv.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("\"GET /big.bin HTTP/1.1\" 200 8388608 \"-\" \"-\"")),
        "{lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("Timing out idle") || l.contains("interrupted")),
        "{lines:?}"
    );
}

#[test]
fn a_start_that_cannot_listen_leaves_no_access_log_of_its_making() {
    let t = tree();
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!(
        "tcp:{}:interface=127.0.0.1",
        taken.local_addr().unwrap().port()
    );
    let root = t.root.to_str().unwrap().to_string();
    let log = dir.path().join("access.log");
    let log_s = log.to_str().unwrap();
    let start = |daemon: bool| {
        let args = ["-n", "web", "--path", &root, "--listen", &ep, "-l", log_s];
        let (code, _, err) = run_in(dir.path(), &args[usize::from(daemon)..]);
        assert_eq!(code, 1, "{err}");
    };
    // As twistd, which opens it only once its port listens; a daemon's start too.
    for daemon in [false, true] {
        start(daemon);
        assert!(!log.exists(), "the failed start left its access log");
    }
    // One that was there stays, as it was.
    std::fs::write(&log, "old line\n").unwrap();
    start(false);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "old line\n");
}

#[test]
fn access_log_in_the_main_log_and_in_its_own_file() {
    let t = tree();
    let srv = web(&t, &[]);
    let (code, _) = curl(&[
        "-A",
        "curl/8.0",
        "-o",
        "/dev/null",
        &format!("http://{}/a.txt", srv.addr()),
    ]);
    assert_eq!(code, 0);
    srv.wait_until(
        |l| {
            l.iter()
                .any(|l| l.contains("\"GET /a.txt HTTP/1.1\" 200 10"))
        },
        Duration::from_secs(5),
    )
    .expect("logged");
    let line = srv
        .lines()
        .into_iter()
        .find(|l| l.contains("GET /a.txt"))
        .unwrap();
    assert!(
        line.contains("[twistrs.web.access#info] \"127.0.0.1\" - - ["),
        "{line}"
    );
    assert!(
        line.ends_with("\"GET /a.txt HTTP/1.1\" 200 10 \"-\" \"curl/8.0\""),
        "{line}"
    );

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let srv = web(&t, &["-l", log.to_str().unwrap()]);
    assert!(srv.wait_catches(1));
    get_path(srv.addr(), "/a.txt");
    let wait_for = |p: &Path, needle: &str| {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if std::fs::read_to_string(p)
                .unwrap_or_default()
                .contains(needle)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    assert!(
        wait_for(&log, "\"GET /a.txt HTTP/1.1\" 200 10"),
        "flushed within a second"
    );
    std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    srv.signal(1);
    // The reopen creates the file again under its name.
    let end = Instant::now() + Duration::from_secs(5);
    while !log.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    get_path(srv.addr(), "/sub/b.css");
    assert!(wait_for(&log, "GET /sub/b.css"), "reopened on SIGHUP");
}

#[test]
fn python_only_web_options_are_refused() {
    for opt in [
        &["--wsgi", "app.x"][..],
        &["--class", "a.B"],
        &["--user"],
        &["--personal"],
        &["--processor", "x=y"],
    ] {
        let mut args = vec!["-n", "web"];
        args.extend_from_slice(opt);
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{opt:?}");
        assert!(err.contains("twistrs web does not support it"), "{err}");
    }
    let (code, _, err) = run(&["-n", "web", "--add-header", "NoColon"]);
    assert_eq!(code, 1);
    assert!(err.contains("Name: Value"), "{err}");
}

#[test]
fn a_one_gib_sparse_file_downloads_intact_with_flat_memory() {
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
    let srv = web_at(dir.path(), &[]);
    let base = srv.rss_kib();
    let url = format!("http://{}/big.bin", srv.addr());
    let sum = |cmd: String| {
        let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    };
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (p2, pid) = (peak.clone(), srv.pid());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    let sampler = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(120);
        while !d2.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < end {
            let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if let Some(kib) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
            {
                p2.fetch_max(kib, std::sync::atomic::Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let got = sum(format!("curl -s --max-time 120 {url} | md5sum"));
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    sampler.join().unwrap();
    let want = sum(format!("md5sum {}", big.display()));
    assert_eq!(got, want, "the whole GiB arrived intact");
    let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        peak < base + 4096,
        "memory flat during 1 GiB: {base} KiB -> peak {peak} KiB"
    );
}

#[test]
fn an_error_answer_survives_unread_input_lingering_close() {
    let t = tree();
    let srv = web(&t, &[]);
    // 200 KB of request line: the server reads part, answers 414 and closes while the rest is
    // still arriving. Without a lingering close the kernel would answer that rest with a reset
    // and the client could lose the 414.
    for _ in 0..10 {
        let mut s = connect(srv.addr());
        let junk = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "j".repeat(200_000));
        let writer = {
            let mut w = s.try_clone().unwrap();
            std::thread::spawn(move || {
                let _ = std::io::Write::write_all(&mut w, junk.as_bytes());
            })
        };
        let mut got = Vec::new();
        let r = s.read_to_end(&mut got);
        writer.join().unwrap();
        assert!(r.is_ok(), "no reset: {r:?}");
        assert!(
            got.starts_with(b"HTTP/1.1 414 "),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
}

#[test]
fn a_slow_download_that_keeps_moving_outlives_the_idle_timeout() {
    // 30 MB read at about 4 MB/s takes about 7 s, more than twice --timeout 3: the timeout is
    // for a connection where nothing moves, not for the length of a response. (3 s, not 1: a
    // client starved of CPU on a loaded machine may really not read for a second.)
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..30_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.path().join("slow.bin"), &data).unwrap();
    let srv = Server::start(&[
        "web",
        "--path",
        dir.path().to_str().unwrap(),
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--timeout",
        "3",
    ]);
    let mut s = connect(srv.addr());
    send(
        &mut s,
        b"GET /slow.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Bounded: at most 1,000 reads of 64 KiB, 15 ms apart.
    for _ in 0..1000 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        std::thread::sleep(Duration::from_millis(15));
    }
    let took = started.elapsed();
    let body_at = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(got.len(), |i| i + 4);
    assert_eq!(
        got.len() - body_at,
        data.len(),
        "every byte arrived in {took:?}"
    );
    assert!(got[body_at..] == data[..], "intact");
    assert!(
        took > Duration::from_millis(6000),
        "the download was slow enough to mean something ({took:?})"
    );
}

#[test]
fn a_redirect_never_leaves_this_host() {
    // A directory named like a host: `//evil.com` must not become `Location: //evil.com/`,
    // which a browser reads as another host (issue 8.4).
    let t = tree();
    std::fs::create_dir(t.root.join("evil.com")).unwrap();
    let srv = web(&t, &[]);
    let a = srv.addr();
    for (target, want) in [
        ("//evil.com", Some("/evil.com/")),
        ("///evil.com?q=1", Some("/evil.com/?q=1")),
        ("http://x//evil.com", Some("/evil.com/")),
        ("/evil.com", Some("/evil.com/")),
        ("/\\evil.com", None),
        ("/%2F%2Fevil.com", None),
        ("/%5Cevil.com", None),
    ] {
        let r = get(
            a,
            &format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        match want {
            Some(loc) => assert_eq!(
                (r.status, r.header("Location")),
                (302, Some(loc)),
                "{target}"
            ),
            None => assert_eq!((r.status, r.header("Location")), (404, None), "{target}"),
        }
    }
}

#[test]
fn host_is_required_in_http11_and_only_once() {
    // RFC 9112 3.2: an HTTP/1.1 request without Host, or any request with two, is a 400.
    let t = tree();
    let srv = web(&t, &[]);
    let a = srv.addr();
    let status = |req: &str| get(a, req).status;
    assert_eq!(
        status("GET /a.txt HTTP/1.1\r\nConnection: close\r\n\r\n"),
        400
    );
    assert_eq!(
        status("GET /a.txt HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n\r\n"),
        400
    );
    assert_eq!(
        status("GET /a.txt HTTP/1.0\r\nHost: x\r\nHost: x\r\n\r\n"),
        400
    );
    assert_eq!(
        status("GET /a.txt HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n"),
        400,
        "an invalid Host value"
    );
    assert_eq!(
        status("GET /a.txt HTTP/1.0\r\n\r\n"),
        200,
        "HTTP/1.0 needs no Host"
    );
    assert_eq!(
        status("GET /a.txt HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n"),
        200
    );
    assert_eq!(
        status("GET /a.txt HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n"),
        200,
        "an empty Host is allowed (a target without authority)"
    );
    assert!(srv.log_contains("missing Host"), "{:?}", srv.lines());
}

/// Sets the descriptor limit (soft and hard) of process `pid`.
fn set_fd_limit(pid: u32, n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: prlimit(2) reads `lim` and writes nothing (old limit pointer is null).
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// The descriptor numbers process `pid` has open.
fn open_fds(pid: u32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pipelined_ranges_of_a_large_file_hold_one_descriptor_at_a_time() {
    // A client that pipelines one-byte ranges of a file too large for the cache and reads
    // nothing: each response keeps its file open until it has left, and the server used to
    // answer on until 1 MiB (or 64 KiB of log lines) waited, holding a descriptor per
    // response: some 350 per connection. It now takes no request while a file is leaving.
    let t = tree();
    let srv = web(&t, &[]);
    let pid = srv.pid();
    let before = open_fds(pid).len();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&srv.addr().into()).unwrap();
    let mut c: std::net::TcpStream = sock.into();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Some 10 MB of answers: more than the kernel's buffers on both sides hold.
    const N: usize = 40_000;
    let req = b"GET /data.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\n\r\n";
    let mut w = c.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for _ in 0..N {
            if w.write_all(req).is_err() {
                break;
            }
        }
    });
    // The most descriptors the server holds while the client reads nothing, over 1.5 s.
    let mut most = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        most = most.max(open_fds(pid).len().saturating_sub(before));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        most <= 3,
        "{most} descriptors for one connection (its socket and one file)"
    );
    let mut r = std::io::BufReader::new(&mut c);
    for i in 0..N {
        let resp = read_resp(&mut r, false);
        assert_eq!(
            (resp.status, resp.body.as_slice()),
            (206, [0u8].as_slice()),
            "answer {i}"
        );
    }
    sender.join().unwrap();
}

#[test]
fn a_file_that_cannot_be_opened_at_the_descriptor_limit_is_a_500() {
    // At the limit, open() fails with EMFILE: a server error, not "No Such Resource"
    // (issue 8.11).
    let t = tree();
    let srv = web(&t, &[]);
    let pid = srv.pid();
    // Both connections are accepted first, under the ordinary limit; then the limit is put
    // at the lowest free number, so every number below it is taken and the file the second
    // asks for cannot be opened. (Setting it before they connected left the second to an
    // accept at the limit, which a descriptor the server held for a moment could refuse.)
    let before = open_fds(pid).len();
    let _first = connect(srv.addr());
    let mut second = connect(srv.addr());
    let end = Instant::now() + Duration::from_secs(5);
    while open_fds(pid).len() < before + 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let open = open_fds(pid);
    assert_eq!(open.len(), before + 2, "both connections accepted");
    let limit = (0..).find(|n| !open.contains(n)).unwrap_or(0);
    set_fd_limit(pid, limit);
    let below = || open_fds(pid).iter().filter(|n| **n < limit).count() as u64;
    assert_eq!(below(), limit, "every number below the limit taken");
    send(&mut second, b"GET /data.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = read_resp(&mut second, false);
    assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        srv.log_contains("Too many open files"),
        "the error is logged: {:?}",
        srv.lines()
    );
    // With a descriptor free again, the same connection gets the file.
    drop(_first);
    let end = Instant::now() + Duration::from_secs(5);
    while below() >= limit && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    send(&mut second, b"GET /data.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = read_resp(&mut second, false);
    assert_eq!((r.status, r.body.len()), (200, 600_000));
}

/// The byte count of the access line for `request` once one is logged.
pub(crate) fn logged_bytes(srv: &Server, request: &str) -> Option<u64> {
    let needle = format!("\"{request}\" 200 ");
    srv.wait_until(
        |l| l.iter().any(|x| x.contains(&needle)),
        Duration::from_secs(10),
    )?;
    let lines = srv.lines();
    let line = lines.iter().find(|x| x.contains(&needle))?;
    let rest = &line[line.find(&needle)? + needle.len()..];
    rest.split(' ').next()?.parse().ok()
}

#[test]
fn an_interrupted_response_is_logged_with_the_bytes_that_left() {
    // 256 MiB (sparse): more than the kernel's socket buffers on both sides can hold, so a
    // client that reads 1 MiB and goes away cuts the response (issue 8.8).
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 256 << 20;
    std::fs::File::create(dir.path().join("big.bin"))
        .unwrap()
        .set_len(size)
        .unwrap();
    std::fs::File::create(dir.path().join("whole.bin"))
        .unwrap()
        .set_len(size)
        .unwrap();
    let srv = web_at(dir.path(), &[]);
    let mut s = connect(srv.addr());
    send(&mut s, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while got < 1 << 20 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => panic!("the response stopped at {got} bytes"),
            Ok(n) => got += n,
        }
    }
    drop(s);
    let bytes = logged_bytes(&srv, "GET /big.bin HTTP/1.1").expect("an access line");
    assert!(
        bytes >= (1 << 20) - 1024 && bytes < size,
        "the access line shows what left, not the file's size: {bytes}"
    );
    assert!(
        srv.log_contains(&format!(
            "\"GET /big.bin HTTP/1.1\" interrupted after {bytes} of {size} bytes: Connection was lost"
        )),
        "{:?}",
        srv.lines()
    );
    // A download read to the end: its whole size, and no interrupted line.
    let (code, _) = curl(&[
        "-o",
        "/dev/null",
        &format!("http://{}/whole.bin", srv.addr()),
    ]);
    assert_eq!(code, 0);
    assert_eq!(logged_bytes(&srv, "GET /whole.bin HTTP/1.1"), Some(size));
    assert!(
        !srv.lines()
            .iter()
            .any(|l| l.contains("\"GET /whole.bin HTTP/1.1\" interrupted")),
        "{:?}",
        srv.lines()
    );
}

/// A file truncated while it is being sent: the response cannot keep its Content-Length, so
/// the connection is closed short (never left hanging or spinning), the main log says why,
/// and the server serves the next request.
#[test]
fn a_file_that_shrinks_while_sent_closes_its_response_short() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    const LEN: usize = 32 << 20;
    std::fs::write(&big, vec![7u8; LEN]).unwrap();
    std::fs::write(dir.path().join("small"), "ok").unwrap();
    let srv = web_at(dir.path(), &[]);
    let mut s = connect(srv.addr());
    send(&mut s, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    // The head, then nothing read until the file is cut: the server is blocked on a full
    // socket somewhere past the new end.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        std::io::Read::read_exact(&mut s, &mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    std::thread::sleep(Duration::from_millis(200));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = read_to_end(&mut s);
    assert!(body.len() < LEN, "closed short: {} bytes", body.len());
    assert!(
        srv.log_contains("it shrank while being sent"),
        "{:?}",
        srv.lines()
    );
    assert_eq!(get_path(srv.addr(), "/small").body, b"ok");
}

#[test]
fn a_request_body_trickled_a_byte_at_a_time_is_cut_off() {
    // Bodies are read only to be thrown away, and each byte here comes within the idle
    // timeout: only a deadline for the body ends the connection (--timeout, then 500
    // bytes/s), where a 1 MB body a byte a second would hold it for eleven days.
    let t = tree();
    let srv = web(&t, &["--timeout", "2"]);
    let a = srv.addr();
    for head in [
        "POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n",
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let mut s = connect(a);
        send(&mut s, head.as_bytes());
        let r = read_resp(&mut s, false);
        assert!(r.status == 405 || r.status == 200, "{}", r.status);
        let t0 = Instant::now();
        let mut closed = None;
        for b in b"1000\r\n".iter().cycle().take(40) {
            std::thread::sleep(Duration::from_millis(500));
            s.set_nonblocking(true).unwrap();
            let r = s.peek(&mut [0u8; 1]);
            s.set_nonblocking(false).unwrap();
            if !matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                || s.write_all(std::slice::from_ref(b)).is_err()
            {
                closed = Some(t0.elapsed());
                break;
            }
        }
        let closed =
            closed.unwrap_or_else(|| panic!("{head:?}: a body trickled for 20 s, never cut off"));
        assert!(
            closed < Duration::from_secs(4),
            "{head:?}: closed after {closed:?}"
        );
    }
    assert!(srv.log_contains("too slow: "));
    // A body slower than the timeout but well above 500 bytes/s is read to its end, and the
    // connection goes on.
    let mut s = connect(a);
    send(
        &mut s,
        b"POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 30000\r\n\r\n",
    );
    assert_eq!(read_resp(&mut s, false).status, 405);
    for _ in 0..2 {
        send(&mut s, &[b'x'; 15_000]);
        std::thread::sleep(Duration::from_millis(1200));
    }
    send(&mut s, b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = read_resp(&mut s, false);
    assert_eq!((r.status, &r.body[..]), (200, &b"0123456789"[..]));
}

/// A web root the `-u` user can read (`index.html` in a 0755 directory): the access-log
/// tests below serve it as `nobody`.
fn root_for_nobody() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("index.html"), "hi").unwrap();
    dir
}

/// `--pidfile= -u USER web --path ROOT -l LOG --listen tcp:0`: the start the access-log tests
/// below make, and check, as `user`.
fn web_as<'a>(user: &'a str, root: &'a str, log: &'a str) -> [&'a str; 10] {
    [
        "--pidfile=",
        "-u",
        user,
        "web",
        "--path",
        root,
        "-l",
        log,
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]
}

/// What a start (or `--check`) says of an access log at `log` that a SIGHUP, run as `user`,
/// could not reopen: the tests below look for it.
fn reopen_warning(log: &str, user: &str) -> String {
    format!("reload will not be able to reopen the log file {log} as {user}")
}

/// The access log a start makes is root's, and SIGHUP reopens it as the `-u` user: the start
/// gives it to that user, as it gives the main log, so the reopen works. One that was there
/// before, only root's, is left as it is (its path could name any file) and warned of.
#[test]
fn an_access_log_the_start_makes_is_the_users_and_reopens_on_sighup() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let test = "an_access_log_the_start_makes_is_the_users_and_reopens_on_sighup";
    let Some(nobody) = nobody_as_root(test) else {
        return;
    };
    let dir = root_for_nobody();
    let log = dir.path().join("access.log");
    let (d, l) = (dir.path().to_str().unwrap(), log.to_str().unwrap());
    let args = web_as(&nobody.name, d, l);
    let srv = Server::start(&args);
    assert!(srv.log_contains("set uid/gid"), "{:?}", srv.lines());
    assert_eq!(std::fs::metadata(&log).unwrap().uid(), nobody.uid.as_raw());
    srv.signal(1);
    assert_eq!(get_path(srv.addr(), "/after-hup").status, 404);
    let logged = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("GET /after-hup"))
    });
    assert!(logged, "{:?}", srv.lines());
    let text = srv.lines().join("\n");
    assert!(!text.contains("cannot reopen"), "{text}");
    assert!(!text.contains("reload will not"), "{text}");
    drop(srv);

    // A log that was there, root's alone: kept root's, and the start says the reload's
    // reopen will fail.
    std::fs::remove_file(&log).unwrap();
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o600)).unwrap();
    let srv = Server::start(&args);
    let want = reopen_warning(l, &nobody.name);
    assert!(srv.log_contains(&want), "{:?}", srv.lines());
    assert_eq!(std::fs::metadata(&log).unwrap().uid(), 0);
}

/// An access log the start makes in a directory the `-u` user cannot search is given to that
/// user, yet a SIGHUP cannot reopen it by name: the start says so, as it does for a log that
/// was there.
#[test]
fn an_access_log_made_where_the_user_cannot_reach_it_is_warned_of() {
    use std::os::unix::fs::PermissionsExt;
    let test = "an_access_log_made_where_the_user_cannot_reach_it_is_warned_of";
    let Some(nobody) = nobody_as_root(test) else {
        return;
    };
    let dir = root_for_nobody();
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let log = private.join("access.log");
    let (d, l) = (dir.path().to_str().unwrap(), log.to_str().unwrap());
    let args = web_as(&nobody.name, d, l);
    let want = reopen_warning(l, &nobody.name);
    // `--check` says it too, before the start has made the file, and makes nothing.
    let mut check = vec!["--check"];
    check.extend_from_slice(&args);
    let (code, out, err) = run(&check);
    assert_eq!(code, 0, "a warning, not a failure: {out}{err}");
    assert!(err.contains(&want), "{err}");
    assert!(!log.exists(), "--check made the log");
    let srv = Server::start(&args);
    assert!(log.exists(), "{:?}", srv.lines());
    assert!(srv.log_contains(&want), "{:?}", srv.lines());
}
