//! The `web` plugin: static files over HTTP/1.1, twistd's `web --path DIR`.
//!
//! A `twistd web` command line with `--path`, `--listen`, `--port`, `--index`, `--mime-type`,
//! `--ignore-ext`, `--allow-ignore-ext`, `--add-header` and `--logfile` works here with the
//! same meaning and defaults, and so do twistd's TLS options `--https PORT`, `-c/--certificate`
//! and `-k/--privkey` (or `--listen ssl:...`, `--listen tls:CERTDIR`). The Python-only options
//! are refused by name.

pub mod access;
pub mod cond;
#[cfg(test)]
mod fuzz;
pub mod http;
pub mod idle;
pub mod metrics;
pub mod path;
pub mod pending;
#[cfg(test)]
mod prop;
pub mod request;
pub mod resource;
pub mod response;

use std::cell::RefCell;
use std::ffi::OsString;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use twistrs_core::clap::{Arg, ArgAction, ArgMatches, Command};
use twistrs_core::endpoint::{Endpoint, quote_argument};
use twistrs_core::options::{ListenOpt, MaxConnectionsOpt, Refused, TimeoutOpt};
use twistrs_core::throttle::LogThrottle;
use twistrs_core::{
    Address, Factory, Failure, Handle, ListeningService, Plugin, PluginError, Protocol, Room,
    Service, ServiceHost,
};

use crate::access::AccessLog;
use crate::http::{Http, Site};
use crate::request::Limits;
use crate::resource::Root;

const ABOUT: &str =
    "A static web server: files over HTTP/1.1 (twistd's web --path), with sendfile.";

/// The behaviour, for `--help` and the man page.
const WEB_NOTES: &str = "\
Serves GET and HEAD over HTTP/1.0 and 1.1 with keep-alive, pipelining and Expect: 100-continue; \
other methods get 405 with Allow; request bodies are read and dropped (413 above 1 MiB); an \
HTTP/1.1 request without Host, or any request with two, gets 400 (RFC 9112). \
Content-Type comes from the extension (.gz and .bz2 after a text type as Content-Encoding, \
other .gz and .bz2 files as they are); Date, Last-Modified, \
ETag and Accept-Ranges are sent. Preconditions are evaluated in RFC 9110's order (section \
13.2.2): If-Match (strong comparison; * matches what is there), else If-Unmodified-Since, \
give 412 when they fail; then If-None-Match, else If-Modified-Since, give 304; a date that \
is not one is ignored; a listing has no ETag and no date, so only * matches it; a 404 or a \
redirect ignores them. Range gives 206, \
multipart/byteranges for several ranges, 416 when unsatisfiable, honouring If-Range; more than \
16 ranges, or ranges adding up to more than the file, get the whole file (as nginx). A directory \
without its slash is redirected (302); index files are served, or twistd's listing. \
No request reads outside the root: '..', encoded slashes, backslashes and NUL are refused (404) \
and symlinks leaving the root are refused (403) unless --follow-symlinks. A file that cannot be \
opened for any other reason than not existing or being refused (no descriptor left, an I/O \
error) gets 500, and the error is logged. Limits: request line \
8 KiB (414), headers 16 KiB and 100 fields (431), --timeout for idle connections and slow \
request heads (408). At --max-connections, a client waiting is let in by closing the \
keep-alive connection idle longest (between requests), as nginx does; never one reading a \
request or sending a response. Files go out with sendfile; files up to 256 KiB are cached and checked \
with one stat per request. The access log uses twistd's combined format (every byte outside \
printable ASCII escaped as \\xHH, as twistd does) and is reopened on \
SIGHUP and SIGUSR1; each line is written once its response has left, with the bytes that did, \
and a response cut short is also reported in the main log with the reason. A request refused \
after its request line came whole (a bad field, fields too large) is logged with that line; \
one refused in its line, with -. \
HTTPS: --listen ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem, --listen tls:CERTDIR (a \
certificate per name, chosen by SNI), or twistd's --https PORT with -k KEY and -c CERT. Over \
TLS everything above works the same, except that files are read and encrypted in bounded \
chunks instead of sendfile; ALPN offers http/1.1; SIGHUP also reloads the certificates.";

/// twistd web options that need Python; each is refused with why.
const PYTHON_ONLY: &[Refused] = &[
    Refused::new("wsgi", None, true, "runs a Python WSGI application"),
    Refused::new(
        "class",
        None,
        true,
        "uses a Python Resource class as the root",
    ),
    Refused::new("resource-script", None, true, "runs a Python .rpy script"),
    Refused::new(
        "processor",
        None,
        true,
        "maps extensions to Python processors",
    ),
    Refused::new(
        "user",
        Some('u'),
        false,
        "serves users' ~/public_html through Python's twisted.web.distrib",
    ),
    Refused::new(
        "personal",
        None,
        false,
        "publishes the site over Python's Perspective Broker",
    ),
];

/// The plugin.
pub fn plugin() -> Plugin {
    Plugin {
        tapname: "web",
        description: ABOUT,
        options,
        make_service,
    }
}

/// `--listen`, twistd web's default port.
const LISTEN: ListenOpt = ListenOpt {
    help: "Endpoint to listen on, repeatable: tcp:PORT, tcp6:PORT, unix:PATH, \
           ssl:PORT:privateKey=KEY.pem[:certKey=CERT.pem] or tls:CERTDIR[:port=443] (HTTPS), \
           with options such as :interface=127.0.0.1",
    ..ListenOpt::listen(&["tcp:8080"])
};
/// `-c/--certificate` and `-k/--privkey`: twistd's defaults.
const DEFAULT_PEM: &str = "server.pem";
/// `-p/--port`, twistd's deprecated alias of `--listen`.
const PORT: ListenOpt = ListenOpt {
    id: "port",
    short: Some('p'),
    default: &[],
    help: "Deprecated alias of --listen, as in twistd",
};
const MAX_CONNECTIONS: MaxConnectionsOpt = MaxConnectionsOpt { default: None };
const TIMEOUT: TimeoutOpt = TimeoutOpt {
    default: 60,
    help: "Close a connection after SECONDS with nothing read or written, a client whose \
           request head takes longer (408), and one whose request body, after SECONDS, comes \
           slower than 500 bytes/s",
};

/// Fields each response sets itself, for its framing or from the file it sends: one added to
/// every response too would make two (twistd sends `Content-Length` with an added
/// `Transfer-Encoding: chunked`, two `Connection`s, a second `Content-Range`, the added
/// `Last-Modified` instead of the file's), which clients reject or read either way.
const OWN_FIELDS: &[&str] = &[
    "Accept-Ranges",
    "Allow",
    "Connection",
    "Content-Encoding",
    "Content-Length",
    "Content-Range",
    "Content-Type",
    "Date",
    "ETag",
    "Keep-Alive",
    "Last-Modified",
    "Location",
    "Proxy-Connection",
    "Server",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
];

fn header_line(s: &str) -> Result<String, String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not \"Name: Value\""))?;
    let (name, value) = (name.trim(), value.trim());
    if name.is_empty()
        || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
    {
        return Err(format!("'{s}' is not a valid header"));
    }
    Ok(format!("{name}: {value}"))
}

/// The `--add-header` fields to send: those naming a field of [`OWN_FIELDS`] are left out,
/// each with a warning at start (the command line still starts, as it does with twistd,
/// and no response carries two of a field).
fn extra_headers(m: &ArgMatches) -> Vec<String> {
    let given = m.get_many::<String>("add-header").into_iter().flatten();
    given
        .filter(|h| {
            let name = h.split_once(':').map_or(h.as_str(), |(n, _)| n);
            let Some(own) = OWN_FIELDS.iter().find(|f| f.eq_ignore_ascii_case(name)) else {
                return true;
            };
            log::warn!(target: twistrs_core::logsys::BARE,
                "web: --add-header '{h}' ignored: each response sets {own} itself, and \
                 adding it would send two (twistd sends both)");
            false
        })
        .cloned()
        .collect()
}

fn options() -> Command {
    let c = Command::new("web")
        .about(ABOUT)
        .after_long_help(WEB_NOTES)
        .arg(
            Arg::new("path")
                .long("path")
                .value_name("DIR")
                .value_parser(twistrs_core::options::optional_path())
                .help("The directory (or single file) to serve [default: a test page]"),
        )
        .arg(LISTEN.arg())
        .arg(PORT.arg())
        .arg(
            Arg::new("https")
                .long("https")
                .value_name("PORT")
                .help(
                    "Serve HTTPS on PORT, as twistd: adds \
                     ssl:port=PORT:privateKey=KEY:certKey=CERT (from -k and -c) to the --listen \
                     endpoints, and the default tcp:8080 is then not used",
                ),
        )
        .arg(
            Arg::new("certificate")
                .short('c')
                .long("certificate")
                .value_name("FILE")
                .default_value(DEFAULT_PEM)
                .help("The certificate (PEM) for --https; may hold its chain after it"),
        )
        .arg(
            Arg::new("privkey")
                .short('k')
                .long("privkey")
                .value_name("FILE")
                .default_value(DEFAULT_PEM)
                .help("The private key (PEM, not encrypted) for --https"),
        )
        .arg(
            Arg::new("index")
                .short('i')
                .long("index")
                .value_name("NAME")
                .action(ArgAction::Append)
                .help("Index file name, repeatable; replaces the default list index, index.html, index.htm"),
        )
        .arg(
            Arg::new("mime-type")
                .short('m')
                .long("mime-type")
                .value_name("TYPE")
                .default_value("text/html")
                .help("Content-Type for files whose extension is unknown"),
        )
        .arg(
            Arg::new("ignore-ext")
                .long("ignore-ext")
                .value_name("EXT")
                .action(ArgAction::Append)
                .help("Try this extension when a path is not found (/page serves page.html), repeatable"),
        )
        .arg(
            Arg::new("allow-ignore-ext")
                .long("allow-ignore-ext")
                .action(ArgAction::SetTrue)
                .help("Let any extension be left out of a path"),
        )
        .arg(
            Arg::new("add-header")
                .long("add-header")
                .value_name("NAME: VALUE")
                .action(ArgAction::Append)
                .value_parser(header_line)
                .help(
                    "A header added to every response, repeatable; one each response sets \
                     itself (Content-Type, Content-Length, Connection, ETag, Date, ...) is \
                     ignored, with a warning",
                ),
        )
        .arg(
            Arg::new("logfile")
                .short('l')
                .long("logfile")
                .value_name("FILE")
                .value_parser(twistrs_core::options::optional_path())
                .help("Access log file [default: the main log]"),
        )
        .arg(
            Arg::new("no-listing")
                .long("no-listing")
                .action(ArgAction::SetTrue)
                .help("Answer 403 for a directory without an index file, instead of listing it"),
        )
        .arg(
            Arg::new("hide-dotfiles")
                .long("hide-dotfiles")
                .action(ArgAction::SetTrue)
                .help("Neither list nor serve names starting with a dot (twistd does both)"),
        )
        .arg(
            Arg::new("follow-symlinks")
                .long("follow-symlinks")
                .action(ArgAction::SetTrue)
                .help("Serve symlinks that point outside the root (refused by default; twistd follows them)"),
        )
        .arg(MAX_CONNECTIONS.arg())
        .arg(TIMEOUT.arg())
        .arg(
            Arg::new("display-tracebacks")
                .long("display-tracebacks")
                .action(ArgAction::SetTrue)
                .hide(true),
        )
        .arg(
            Arg::new("notracebacks")
                .short('n')
                .long("notracebacks")
                .action(ArgAction::SetTrue)
                .hide(true),
        );
    c.args(Refused::args(PYTHON_ONLY))
}

/// At the limit with no connection idle, how soon to look again: a busy one may go idle
/// (its response sent) meanwhile, and the client waiting in the backlog is then let in
/// within this, not at the idle one's `--timeout`. Looked at only while a client waits.
const IDLE_RECHECK: Duration = Duration::from_millis(100);
/// The most often the log says that idle connections are being closed at the limit (the
/// count is in the metrics: `twistrs_connection_limit_closes_total`).
const ROOM_LOG_EVERY: Duration = Duration::from_secs(60);

/// A factory of `Http` protocols sharing one site.
struct WebFactory {
    site: Rc<Site>,
    max: Option<usize>,
    /// How often the log says that idle connections are closed at the limit.
    room_log: LogThrottle,
}

impl Factory for WebFactory {
    fn name(&self) -> &'static str {
        "Site"
    }

    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Http::new(self.site.clone())))
    }

    fn start_factory(&mut self, handle: &Handle) {
        let access = self.site.access.clone();
        handle.on_reopen(Box::new(move || access.borrow_mut().reopen()));
        schedule_flush(handle.clone(), self.site.access.clone());
    }

    fn stop_factory(&mut self) {
        self.site.access.borrow_mut().flush();
    }

    fn max_connections(&self) -> Option<usize> {
        self.max
    }

    /// At `--max-connections` with a client waiting: the keep-alive connection idle longest
    /// (between requests, its last response gone), as nginx reuses idle keep-alive
    /// connections when `worker_connections` run out; never one reading a request or sending
    /// a response. With none idle, look again shortly (one may finish its response). Each
    /// `--workers` worker has its own limit, and gives up only its own connections.
    fn make_room(&mut self) -> Room {
        // Listed again, as the most recent: the reactor leaves open one whose last response
        // the kernel is still delivering (and asks again, naming the next), and one named
        // for a client another worker took; one it closes is unlisted by its
        // `connection_lost`.
        let Some(id) = self.site.idle.as_ref().and_then(|i| {
            let mut i = i.borrow_mut();
            let id = i.take_longest()?;
            i.list(id);
            Some(id)
        }) else {
            return Room::After(Instant::now() + IDLE_RECHECK);
        };
        Room::Close(id)
    }

    /// Said by the worker that closed one, not by every worker asked for the client.
    fn room_made(&mut self) {
        if self.room_log.allow(Instant::now()) {
            log::warn!(target: twistrs_core::logsys::BARE,
                "Site: connection limit ({}) reached; closing idle keep-alive connections to let new clients in",
                self.max.unwrap_or(0));
        }
    }

    fn alpn_protocols(&self) -> &[&'static [u8]] {
        &[b"http/1.1"]
    }
}

/// twistd's `--https PORT`: `ssl:port=PORT:privateKey=KEY:certKey=CERT`, with the file names
/// quoted (twistd pastes them in as they are, so a `:` in a name breaks its endpoint) and PORT
/// pasted in as twistd does, so `--https 8443:interface=127.0.0.1` works in both.
fn https_endpoint(m: &ArgMatches) -> Result<Option<Endpoint>, PluginError> {
    let Some(port) = m.get_one::<String>("https") else {
        return Ok(None);
    };
    let file = |id: &str| {
        m.get_one::<String>(id)
            .map_or(DEFAULT_PEM.into(), |f| quote_argument(f))
    };
    let s = format!(
        "ssl:port={port}:privateKey={}:certKey={}",
        file("privkey"),
        file("certificate")
    );
    s.parse()
        .map(Some)
        .map_err(|e| PluginError::new(format!("web: --https {port}: {e}")))
}

/// Flushes the access log every second.
fn schedule_flush(h: Handle, access: Rc<RefCell<AccessLog>>) {
    let h2 = h.clone();
    h.call_later(Duration::from_secs(1), move || {
        access.borrow_mut().flush();
        schedule_flush(h2, access);
    });
}

fn make_service(m: &ArgMatches) -> Result<Box<dyn Service>, PluginError> {
    if let Some(r) = Refused::find(PYTHON_ONLY, m) {
        return Err(PluginError::new(format!(
            "web: --{} {}; twistrs web does not support it",
            r.long, r.why
        )));
    }
    let default_type = m
        .get_one::<String>("mime-type")
        .cloned()
        .unwrap_or_else(|| "text/html".into());
    // Absolute now, against the directory twistrs was started in, and opened when the service
    // starts: after --chroot, inside the jail, as twistd's static.File and access log do.
    let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
    // An empty --path is the start directory, as twistd's `abspath('')`.
    let root = m.get_one::<PathBuf>("path").map(|p| RootSpec {
        path: abs(&if p.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            p.clone()
        }),
        follow_symlinks: m.get_flag("follow-symlinks"),
        hide_dotfiles: m.get_flag("hide-dotfiles"),
        default_type,
    });
    let logfile = twistrs_core::options::path_given(m, "logfile").map(abs);
    let indexes: Vec<OsString> = match m.get_many::<String>("index") {
        Some(v) => v.map(OsString::from).collect(),
        // twistd's static.File.indexNames, in its order, less Python's index.rpy.
        None => vec!["index".into(), "index.html".into(), "index.htm".into()],
    };
    let ignore_ext: Vec<String> = m
        .get_many::<String>("ignore-ext")
        .map(|v| {
            v.map(|e| {
                if e.starts_with('.') {
                    e.clone()
                } else {
                    format!(".{e}")
                }
            })
            .collect()
        })
        .unwrap_or_default();
    let max = MAX_CONNECTIONS.get(m);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let site = Site {
        root: std::cell::OnceCell::new(),
        indexes,
        ignore_ext,
        allow_ignore_ext: m.get_flag("allow-ignore-ext"),
        no_listing: m.get_flag("no-listing"),
        extra_headers: extra_headers(m),
        limits: Limits::default(),
        timeout: TIMEOUT.get(m),
        access: Rc::new(RefCell::new(AccessLog::main())),
        boundary: format!("{:032x}", seed ^ u128::from(std::process::id()) << 64),
        metrics: Default::default(),
        idle: max.map(|_| RefCell::default()),
    };
    let mut endpoints = LISTEN.given(m);
    endpoints.extend(PORT.given(m));
    endpoints.extend(https_endpoint(m)?);
    if endpoints.is_empty() {
        endpoints = LISTEN.get(m)?;
    }
    if let Some(ep) = endpoints.iter().find(|e| e.is_datagram()) {
        return Err(PluginError::new(format!(
            "web: '{ep}' is a datagram endpoint; HTTP needs a stream"
        )));
    }
    let site = Rc::new(site);
    let factory = WebFactory {
        site: site.clone(),
        max,
        room_log: LogThrottle::new(ROOM_LOG_EVERY),
    };
    Ok(Box::new(WebService {
        site,
        root,
        logfile,
        listening: ListeningService::new("web", endpoints, Box::new(factory), None),
    }))
}

/// `--path` and what goes with it, to open when the service starts.
struct RootSpec {
    path: PathBuf,
    follow_symlinks: bool,
    hide_dotfiles: bool,
    default_type: String,
}

impl RootSpec {
    /// The root as the start serves it; a check opens it the same way and lets it go.
    fn open(&self) -> Result<Root, Failure> {
        Root::open(
            &self.path,
            self.follow_symlinks,
            self.hide_dotfiles,
            self.default_type.clone(),
        )
        .map_err(|e| Failure::msg(format!("web: --path {}: {e}", self.path.display())))
    }
}

/// The web service: its listeners, and its files opened when it starts, after `--chroot`.
/// twistd makes `--path` and `-l` absolute while reading its options and looks them up later,
/// inside the jail: `--chroot /srv/www web --path /` serves /srv/www (opened before the
/// chroot, it served the whole file system).
struct WebService {
    site: Rc<Site>,
    root: Option<RootSpec>,
    logfile: Option<PathBuf>,
    listening: ListeningService,
}

impl Service for WebService {
    fn name(&self) -> &str {
        "web"
    }

    /// The access log, as twistd's Site opens it when its port opens: as the starting user
    /// (it may be in a directory only root can write), inside the jail.
    fn privileged_start_service(&mut self, h: &mut ServiceHost<'_>) -> Result<(), Failure> {
        if let Some(p) = self.logfile.take() {
            let log = AccessLog::file(p.clone())
                .map_err(|e| Failure::msg(format!("web: --logfile {}: {e}", p.display())))?;
            *self.site.access.borrow_mut() = log;
        }
        self.listening.privileged_start_service(h)
    }

    /// The root, as the user that serves it (twistd's static.File looks each request up as
    /// that user). A `--workers` master binds but never starts services, so only the workers,
    /// each in its own jail, open it.
    fn start_service(&mut self, h: &mut ServiceHost<'_>) -> Result<(), Failure> {
        if let Some(r) = self.root.take() {
            let _ = self.site.root.set(r.open()?);
        }
        self.listening.start_service(h)
    }

    fn stop_service(&mut self, h: &mut ServiceHost<'_>) {
        self.listening.stop_service(h)
    }

    /// The root opened as `start_service` opens it, as the user that would serve it.
    fn check_service(&mut self) -> Result<(), Failure> {
        self.root.as_ref().map_or(Ok(()), |r| r.open().map(drop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The endpoint `--https` adds for `args`, as its string.
    fn https(args: &[&str]) -> Result<Option<String>, String> {
        let m = options()
            .try_get_matches_from(std::iter::once("web").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        https_endpoint(&m)
            .map(|e| e.map(|e| e.to_string()))
            .map_err(|e| e.0)
    }

    fn abs(p: &str) -> String {
        std::path::absolute(p).unwrap().display().to_string()
    }

    #[test]
    fn https_adds_twistds_ssl_endpoint() {
        assert_eq!(https(&["-c", "c.pem", "-k", "k.pem"]), Ok(None));
        let pem = abs("server.pem");
        assert_eq!(
            https(&["--https", "8443"]),
            Ok(Some(format!("ssl:8443:privateKey={pem}:certKey={pem}")))
        );
        // -k is the key, -c the certificate; keywords after PORT are kept, as in twistd.
        assert_eq!(
            https(&[
                "--https",
                "443:interface=127.0.0.1",
                "-c",
                "c.pem",
                "--privkey",
                "k.pem"
            ]),
            Ok(Some(format!(
                "ssl:443:privateKey={}:certKey={}:interface=127.0.0.1",
                abs("k.pem"),
                abs("c.pem")
            )))
        );
        // A name with a colon stays one name (twistd would split it).
        assert_eq!(
            https(&["--https", "443", "-k", "a:b.pem", "-c", "c.pem"]),
            Ok(Some(format!(
                "ssl:443:privateKey={}:certKey={}",
                abs("a:b.pem").replace(':', "\\:"),
                abs("c.pem")
            )))
        );
        let err = https(&["--https", "x"]).unwrap_err();
        assert!(
            err.starts_with("web: --https x: invalid endpoint 'ssl:port=x:"),
            "{err}"
        );
    }
}
