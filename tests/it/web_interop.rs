//! The web plugin where an audit against twistd 26.10 and nginx found it answering otherwise:
//! each test is what those peers (and the RFCs) do, with the clients that noticed.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::support::*;
use crate::web::{Resp, read_resp};

/// One request (raw bytes) on a new connection, and its response.
fn ask(addr: SocketAddr, req: &[u8]) -> Resp {
    let mut s = connect(addr);
    send(&mut s, req);
    read_resp(&mut s, req.starts_with(b"HEAD"))
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    ask(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// `twistrs -n [-u USER] web --path ROOT` on 127.0.0.1, with `extra` options.
fn web(user: Option<&str>, root: &Path, extra: &[&str]) -> Server {
    let root = root.to_str().unwrap();
    let mut args = vec!["--pidfile="];
    if let Some(u) = user {
        args.extend(["-u", u]);
    }
    args.extend([
        "web",
        "--path",
        root,
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A directory the server cannot read but may search (0711, as home directories often are)
/// still serves its index file, as twistd and nginx do, and only its listing is refused. An
/// index file the server cannot read is a 403, as in twistd and nginx: never the listing of
/// the directory it was put there to hide.
#[test]
fn unreadable_directories_and_index_files_as_twistd_and_nginx() {
    let Some(nobody) = nobody_as_root("unreadable_directories_and_index_files_as_twistd_and_nginx")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    mode(root, 0o755);
    for d in ["search", "search-bare", "hidden"] {
        std::fs::create_dir(root.join(d)).unwrap();
    }
    std::fs::write(root.join("search/index.html"), "<p>search</p>").unwrap();
    std::fs::write(root.join("search/f.txt"), "f").unwrap();
    std::fs::write(root.join("search-bare/f.txt"), "f").unwrap();
    std::fs::write(root.join("hidden/index.html"), "<p>hidden</p>").unwrap();
    std::fs::write(root.join("hidden/secret-name.txt"), "s").unwrap();
    mode(&root.join("search"), 0o711);
    mode(&root.join("search-bare"), 0o711);
    mode(&root.join("hidden/index.html"), 0o000);
    let srv = web(Some(&nobody.name), root, &[]);
    let a = srv.addr();

    let r = get(a, "/search/");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"<p>search</p>"[..]));
    let r = get(a, "/search");
    assert_eq!((r.status, r.header("Location")), (302, Some("/search/")));
    assert_eq!(get(a, "/search/f.txt").status, 200);
    assert_eq!(get(a, "/search-bare/f.txt").status, 200);
    assert_eq!(
        get(a, "/search-bare/").status,
        403,
        "no listing: it cannot be read"
    );

    let r = get(a, "/hidden/");
    assert_eq!(r.status, 403);
    let body = String::from_utf8_lossy(&r.body);
    assert!(!body.contains("secret-name"), "the listing leaked: {body}");
    assert!(
        srv.wait_until(
            |l| l.iter().any(|l| l.contains("Forbidden \"/hidden/\"")),
            Duration::from_secs(5)
        )
        .is_some(),
        "{:?}",
        srv.lines()
    );
}

/// A `.tar.gz` is a file to download as it is, not a tar sent gzip-encoded: with
/// `Content-Encoding: gzip` (twistd's answer) Chromium saved the unpacked tar under the
/// `.tar.gz` name, as `curl --compressed` does here; nginx sends `application/gzip` bytes as
/// they are. A compressed text file (`r.txt.gz`) is still sent as twistd sends it.
#[test]
fn a_tar_gz_downloads_as_it_is_and_a_txt_gz_as_twistd_sends_it() {
    let dir = tempfile::tempdir().unwrap();
    let gz = |text: &str| {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("printf '{text}' | gzip -c")])
            .output()
            .unwrap();
        out.stdout
    };
    let archive = gz("an archive");
    std::fs::write(dir.path().join("a.tar.gz"), &archive).unwrap();
    std::fs::write(dir.path().join("data.gz"), &archive).unwrap();
    std::fs::write(dir.path().join("r.txt.gz"), gz("some text")).unwrap();
    let srv = web(None, dir.path(), &[]);
    let url = |p: &str| format!("http://{}/{p}", srv.addr());
    for name in ["a.tar.gz", "data.gz"] {
        let r = get(srv.addr(), &format!("/{name}"));
        assert_eq!(r.header("Content-Type"), Some("application/gzip"), "{name}");
        assert_eq!(r.header("Content-Encoding"), None, "{name}");
        let (rc, body) = crate::web::curl(&["--compressed", &url(name)]);
        assert_eq!(
            (rc, body),
            (0, archive.clone()),
            "{name}: the bytes as they are"
        );
    }
    let r = get(srv.addr(), "/r.txt.gz");
    assert_eq!(
        (r.header("Content-Type"), r.header("Content-Encoding")),
        (Some("text/plain"), Some("gzip"))
    );
    let (rc, body) = crate::web::curl(&["--compressed", &url("r.txt.gz")]);
    assert_eq!((rc, body.as_slice()), (0, &b"some text"[..]));
    // The listing says the same.
    let listing = String::from_utf8(get(srv.addr(), "/").body).unwrap();
    assert!(listing.contains("[application/gzip]"), "{listing}");
}

/// `--add-header` naming a field each response sets itself would send it twice: twistd then
/// answers with both Content-Length and `Transfer-Encoding: chunked`, two `Connection`s, two
/// `Content-Type`s; this one sent two differing `Content-Length`s, which curl and browsers
/// refuse. Such a field is left out with a warning at start, naming it (the command line
/// still starts, as with twistd); any other field is added as before.
#[test]
fn add_header_leaves_out_a_field_each_response_sets_itself() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "abcde").unwrap();
    let own = [
        "Content-Length: 3",
        "transfer-encoding: chunked",
        "Connection: keep-alive",
        "Content-Type: application/x-other",
        "ETag: \"x\"",
        "Server: hidden",
    ];
    let mut args = vec!["--add-header", "Cache-Control: no-cache"];
    for h in &own {
        args.extend(["--add-header", h]);
    }
    let srv = web(None, dir.path(), &args);
    let r = get(srv.addr(), "/a.txt");
    assert_eq!(r.body, b"abcde");
    assert_eq!(r.header("Cache-Control"), Some("no-cache"));
    for name in [
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "Content-Type",
        "ETag",
        "Server",
    ] {
        let n = r
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count();
        assert!(n <= 1, "{name} {n} times: {:?}", r.headers);
    }
    assert_eq!(r.header("Content-Length"), Some("5"));
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert_eq!(r.header("Transfer-Encoding"), None);
    for h in own {
        let line = format!("--add-header '{h}' ignored: each response sets");
        assert!(
            srv.lines().iter().any(|l| l.contains(&line)),
            "{line}: {:?}",
            srv.lines()
        );
    }
}

/// The listing links each name by its own bytes, so a name that is not UTF-8 (`caf\xe9.txt`,
/// as nginx links it: `caf%E9.txt`) can be followed; it linked the replacement character
/// instead, a 404. Its title shows the path decoded, as twistd and nginx do.
#[test]
fn listing_links_every_name_to_itself_and_titles_the_decoded_path() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("dir with space");
    std::fs::create_dir(&sub).unwrap();
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    std::fs::write(sub.join(latin1), "latin-1").unwrap();
    std::fs::write(sub.join("ünï.txt"), "utf-8").unwrap();
    let srv = web(None, dir.path(), &[]);
    let page = String::from_utf8(get(srv.addr(), "/dir%20with%20space/").body).unwrap();
    assert!(
        page.contains("<title>Directory listing for /dir with space/</title>"),
        "{page}"
    );
    let hrefs: Vec<&str> = page
        .split("<a href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert_eq!(hrefs, ["caf%E9.txt", "%C3%BCn%C3%AF.txt"], "{page}");
    for (href, body) in hrefs.iter().zip(["latin-1", "utf-8"]) {
        let r = get(srv.addr(), &format!("/dir%20with%20space/{href}"));
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, body.as_bytes()),
            "{href}"
        );
    }
}

/// The access log escapes what a request carries as twistd 26.10 does (the `repr` of its
/// bytes, as nginx escapes them too): a UTF-8 User-Agent as its bytes, and one that is not
/// UTF-8 logged rather than dropped for a `-` as if none had been sent, each byte as itself:
/// twistd logged `curl -H $'User-Agent: a\xffb'` as `"a\xffb"` where this logged the bytes of
/// U+FFFD (`"a\xef\xbf\xbdb"`). The Referer the same.
#[test]
fn access_log_escapes_bytes_as_twistd_and_keeps_a_non_utf8_agent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "a").unwrap();
    let log = dir.path().join("access.log");
    let srv = web(None, dir.path(), &["-l", log.to_str().unwrap()]);
    for agent in [&b"caf\xc3\xa9 \t x"[..], b"bad \xff end"] {
        let mut req = b"GET /a.txt HTTP/1.1\r\nHost: x\r\nUser-Agent: ".to_vec();
        req.extend_from_slice(agent);
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        assert_eq!(ask(srv.addr(), &req).status, 200);
    }
    // With curl, as it was compared with twistd: `curl -H $'User-Agent: c\xffd'`.
    use std::os::unix::ffi::OsStrExt;
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "30", "-o", "/dev/null", "-H"])
        .arg(std::ffi::OsStr::from_bytes(b"User-Agent: c\xffd"))
        .arg(format!("http://{}/a.txt", srv.addr()))
        .status()
        .expect("curl");
    assert!(out.success());
    let mut raw = b"GET /a.txt HTTP/1.1\r\nHost: x\r\nReferer: http://r/\xfe\"\\\r\n".to_vec();
    raw.extend_from_slice(b"User-Agent: a\xffb\r\nConnection: close\r\n\r\n");
    assert_eq!(ask(srv.addr(), &raw).status, 200);
    let want = [
        r#""caf\xc3\xa9 \t x""#,
        r#""bad \xff end""#,
        r#""c\xffd""#,
        r#"200 1 "http://r/\xfe\"\\" "a\xffb""#,
    ];
    let text = file_when(&log, Duration::from_secs(5), |t| {
        want.iter().all(|w| t.contains(w))
    });
    assert!(
        want.iter().all(|w| text.contains(w)),
        "{want:?} not in the access log: {text}"
    );
    assert!(!text.contains(r"\xef\xbf\xbd"), "U+FFFD logged: {text}");
}

/// A request refused after its request line came whole (a malformed field, a bad
/// Content-Length, a missing Host, fields too large) is logged with that line, as nginx
/// logs it, where this logged `-`; twistd logs nothing at all for these (its 400 is written
/// before a request exists). A line itself refused (malformed, too long) is still `-`: it
/// may be refused before its end has come.
#[test]
fn a_refused_request_is_logged_with_the_line_it_sent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "a").unwrap();
    let log = dir.path().join("access.log");
    let srv = web(None, dir.path(), &["-l", log.to_str().unwrap()]);
    let big = format!("X-Big: {}\r\n", "y".repeat(20_000));
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (
            b"GET /a.txt?bad-field HTTP/1.1\r\nHost: x\r\nBad Field: y\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"GET /a.txt?cl HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n".to_vec(),
            400,
        ),
        (b"GET /a.txt?nohost HTTP/1.1\r\n\r\n".to_vec(), 400),
        (
            format!("GET /a.txt?big HTTP/1.1\r\nHost: x\r\n{big}\r\n").into_bytes(),
            431,
        ),
        (b"GET /a b.txt HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
    ];
    for (req, status) in &cases {
        assert_eq!(ask(srv.addr(), req).status, *status);
    }
    let (rc, _) = crate::web::curl(&[
        "-o",
        "/dev/null",
        "-H",
        "Content-Length: x",
        &format!("http://{}/a.txt?curl", srv.addr()),
    ]);
    assert_eq!(rc, 0);
    let want = [
        r#""GET /a.txt?bad-field HTTP/1.1" 400 "#,
        r#""GET /a.txt?cl HTTP/1.1" 400 "#,
        r#""GET /a.txt?nohost HTTP/1.1" 400 "#,
        r#""GET /a.txt?big HTTP/1.1" 431 "#,
        r#""-" 400 "#,
        r#""GET /a.txt?curl HTTP/1.1" 400 "#,
    ];
    let text = file_when(&log, Duration::from_secs(5), |t| {
        want.iter().all(|w| t.contains(w))
    });
    assert!(
        want.iter().all(|w| text.contains(w)),
        "{want:?} not all in the access log: {text}"
    );
    assert_eq!(text.lines().count(), want.len(), "{text}");
}

/// A refused request's User-Agent and Referer are logged when they came before the field
/// that got it refused, as nginx 1.22 logs them (this logged `-` for both; twistd logs no
/// line): all of them when the head is refused once read (a bad Content-Length, a
/// Transfer-Encoding, too many fields), those before the line refused at it (a malformed
/// field, a second Host, a field past the size limit).
#[test]
fn a_refused_request_is_logged_with_the_agent_and_referer_it_sent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "a").unwrap();
    let log = dir.path().join("access.log");
    let srv = web(None, dir.path(), &["-l", log.to_str().unwrap()]);
    let ur = "User-Agent: ua-x\r\nReferer: ref-y\r\n";
    let many: String = (0..120).map(|i| format!("X-{i}: v\r\n")).collect();
    let big = format!("X-Big: {}\r\n", "y".repeat(20_000));
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (
            format!("GET /a.txt?bad-field HTTP/1.1\r\nHost: x\r\n{ur}Bad Field: y\r\n\r\n").into(),
            400,
        ),
        (
            b"GET /a.txt?dup-host HTTP/1.1\r\nHost: x\r\nUser-Agent: ua-x\r\nHost: y\r\nReferer: ref-y\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            b"GET /a.txt?cl HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\nUser-Agent: a\xff\"b\r\nReferer: r\\s\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            format!("POST /a.txt?te HTTP/1.1\r\nHost: x\r\n{ur}Transfer-Encoding: gzip\r\n\r\n")
                .into(),
            501,
        ),
        (
            format!("GET /a.txt?many HTTP/1.1\r\nHost: x\r\n{ur}{many}\r\n").into(),
            431,
        ),
        (
            format!("GET /a.txt?big HTTP/1.1\r\nHost: x\r\nReferer: ref-y\r\n{big}{ur}\r\n").into(),
            431,
        ),
    ];
    for (req, status) in &cases {
        assert_eq!(ask(srv.addr(), req).status, *status);
    }
    let (rc, _) = crate::web::curl(&[
        "-o",
        "/dev/null",
        "-A",
        "curl-agent",
        "-e",
        "http://from/",
        "-H",
        "Content-Length: x",
        &format!("http://{}/a.txt?curl", srv.addr()),
    ]);
    assert_eq!(rc, 0);
    let want = [
        (
            r#""GET /a.txt?bad-field HTTP/1.1" 400 "#,
            r#" "ref-y" "ua-x""#,
        ),
        (r#""GET /a.txt?dup-host HTTP/1.1" 400 "#, r#" "-" "ua-x""#),
        (r#""GET /a.txt?cl HTTP/1.1" 400 "#, r#" "r\\s" "a\xff\"b""#),
        (r#""POST /a.txt?te HTTP/1.1" 501 "#, r#" "ref-y" "ua-x""#),
        (r#""GET /a.txt?many HTTP/1.1" 431 "#, r#" "ref-y" "ua-x""#),
        (r#""GET /a.txt?big HTTP/1.1" 431 "#, r#" "ref-y" "-""#),
        (
            r#""GET /a.txt?curl HTTP/1.1" 400 "#,
            r#" "http://from/" "curl-agent""#,
        ),
    ];
    let text = file_when(&log, Duration::from_secs(5), |t| {
        t.lines().count() >= want.len()
    });
    for (request, fields) in want {
        let line = text.lines().find(|l| l.contains(request));
        assert!(
            line.is_some_and(|l| l.ends_with(fields)),
            "{request}...{fields} not in the access log: {text}"
        );
    }
}

/// A small file rewritten in place while it is asked for (truncated, then written again, as
/// a generated status file or feed often is) is always answered whole: 200 with as many
/// bytes as its Content-Length says. Its read could find fewer bytes than its stat said,
/// answered 500 with "Cannot serve ...: failed to fill whole buffer" logged (nginx, in the
/// same race, sends fewer bytes than its Content-Length).
#[test]
fn a_small_file_rewritten_while_asked_for_is_never_a_500() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.json");
    std::fs::write(&path, vec![b'x'; 50_000]).unwrap();
    let srv = web(None, dir.path(), &[]);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let body = vec![b'y'; 50_000];
            while !stop.load(Ordering::Relaxed) {
                // Truncated, then written: the way `echo > file` and most programs rewrite.
                std::fs::write(&path, &body).unwrap();
            }
        })
    };
    let mut s = connect(srv.addr());
    let mut bad = Vec::new();
    let start = std::time::Instant::now();
    let mut asked = 0;
    while start.elapsed() < Duration::from_secs(2) && bad.len() < 5 {
        send(&mut s, b"GET /status.json HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = read_resp(&mut s, false);
        asked += 1;
        let len: usize = r.header("Content-Length").unwrap().parse().unwrap();
        if r.status != 200 || r.body.len() != len {
            bad.push((r.status, len, r.body.len()));
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(bad.is_empty(), "{bad:?} of {asked} answers");
    assert!(!srv.log_contains("Cannot serve"), "{:?}", srv.lines());
}
