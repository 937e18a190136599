//! The `mail` plugin: SMTP into Maildir and POP3 out of it, with twistd's command line.
//!
//! `twistd mail` defines the options and the storage layout; in Twisted 26.10 it cannot
//! deliver on Python 3. This is the working version: `-d DOMAIN=PATH`, `-u USER=PASS`, `-D`,
//! `-A`, `-b`, `-H`, `-E`, `--auth`, `-s`/`-p` endpoints, and a mail directory made for twistd
//! works as is. Beyond twistd: STARTTLS and STLS (`--certificate`, `--privkey`), and
//! `--auth-requires-tls`.

pub mod config;
pub mod data;
pub mod dirfd;
#[cfg(test)]
mod fuzz;
pub mod mailbox;
pub mod maildir;
pub mod memory;
pub mod metrics;
pub mod pop3;
pub mod pop3_server;
#[cfg(test)]
mod prop;
pub mod proto;
pub mod smtp;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use twistrs_core::auth::{auth_arg, auth_help_args, parse_auth};
use twistrs_core::clap::{self, Arg, ArgAction, ArgMatches, Command, value_parser};
use twistrs_core::options::{ListenOpt, MaxConnectionsOpt, PerClientOpt, TimeoutOpt};
use twistrs_core::tls::TlsContext;
use twistrs_core::{
    Address, Endpoint, Factory, Handle, ListeningService, MultiService, Plugin, PluginError,
    Protocol, Service,
};

use crate::config::{Aliases, Domain, MailConfig};
use crate::pop3_server::{Pop3Protocol, apop_banner};
use crate::proto::{Deliveries, Refused, SmtpProtocol};
use twistrs_core::limit::PeerLimit;

/// Replies one step of a session (SMTP's or POP3's) writes before it stops taking pipelined
/// commands: the caller sends them and steps again once its output has room. A client that
/// pipelines a thousand LISTs of a large mailbox (or EHLOs) and reads nothing then holds
/// this much of the server (and one reply), not every answer at once.
pub const STEP_OUTPUT: usize = 64 * 1024;

/// Empties a session's reply buffer once the transport has its bytes, and gives back an
/// allocation a step (or a message's chunk) made large: kept, every session that once
/// answered a pipelined burst held its step's worth (64 KiB and a reply) for its life.
pub(crate) fn release(out: &mut Vec<u8>) {
    out.clear();
    if out.capacity() > 4096 {
        *out = Vec::new();
    }
}

const ABOUT: &str = "An email service: SMTP into Maildir, POP3 out of it (twistd's mail).";

/// The behaviour, for `--help` and the man page.
const MAIL_NOTES: &str = "\
Storage is twistd's: PATH/passwd/ holds one file per user named as twistd's DirDBM names it \
(joe is am9l_) containing the password, and PATH/USER/{new,cur,tmp} is the user's Maildir. \
Started by root with the daemon's -u/-g, what the start makes of these is given to that user and \
group; what was there is left as it is, and warned of (at start and by --check) if that user \
cannot write the Maildir or read the password file. \
SMTP: HELO, and with -E EHLO with PIPELINING, 8BITMIME, SMTPUTF8, SIZE, ENHANCEDSTATUSCODES and \
AUTH PLAIN/LOGIN; MAIL, RCPT, DATA, RSET, NOOP, QUIT, VRFY (252). Unknown users and other domains \
are refused at RCPT (550): never a relay. UTF-8 addresses reach users and aliases named in UTF-8 \
in any case, as postfix takes them (ÖLAF reaches ölaf; an ASCII name by its ASCII letters alone); Received: says UTF8SMTP when MAIL said SMTPUTF8; \
an address that is not UTF-8 gets 550/553 5.6.7. Limits: --max-message-size (552), message lines of 16,384 octets \
(500), --max-recipients (452), --max-data-memory (452 4.3.1 at MAIL for a declared SIZE, or at the end of DATA), ten bad commands in a row or --timeout idle (421). \
A message is answered 250 only once it is in new/ and synced (tmp/, fsync, rename, directory \
sync, in batches shared by concurrent sessions); a graceful stop finishes messages in DATA; at a restart the old process lets SMTP and POP3 sessions run on until the client quits, stopping them as at a stop 3 s before --shutdown-timeout (or at once if the service stops). \
POP3: USER/PASS (user@domain, or a bare user of the -D domain), APOP, STAT, LIST, UIDL, RETR, \
TOP, DELE, RSET, NOOP, QUIT, CAPA (with PIPELINING: commands sent without waiting are answered \
in order); deletions take effect at QUIT; the mailbox is locked while a session holds it; a wrong \
password is answered after a second. \
TLS: with --certificate/--privkey, EHLO (-E) offers STARTTLS (RFC 3207) and CAPA offers STLS \
(RFC 2595) on plaintext connections; whatever the client sent behind the command before the \
handshake is thrown away, and the session starts over (a new EHLO; POP3 stays in \
AUTHORIZATION). Implicit TLS (RFC 8314): -s ssl:465:privateKey=KEY:certKey=CERT, \
-p ssl:995:... (or tls:CERTDIR). SIGHUP reloads the certificates. --auth-requires-tls refuses \
AUTH (538 5.7.11, and AUTH is not offered) and USER/PASS/APOP (-ERR [AUTH], USER not in CAPA) \
until the connection is TLS. Received: says esmtps, or esmtpsa once authenticated, for mail \
that came over TLS.";

/// The plugin.
pub fn plugin() -> Plugin {
    Plugin {
        tapname: "mail",
        description: ABOUT,
        options,
        make_service,
    }
}

const SMTP: ListenOpt = ListenOpt {
    id: "smtp",
    short: Some('s'),
    default: &["tcp:8025"],
    help: "SMTP endpoint, repeatable",
};
const POP3: ListenOpt = ListenOpt {
    id: "pop3",
    short: Some('p'),
    default: &["tcp:8110"],
    help: "POP3 endpoint, repeatable",
};
/// postfix runs 100 smtpd processes by default and dovecot takes 1000 clients: sessions are
/// cheap here, but one client must not take every descriptor.
const MAX_CONNECTIONS: MaxConnectionsOpt = MaxConnectionsOpt {
    default: Some(1000),
};
const PER_CLIENT: PerClientOpt = PerClientOpt {
    default: 50,
    help: "Sessions at once from one client address, per protocol (postfix's \
           smtpd_client_connection_count_limit); 0: no limit",
};
const TIMEOUT: TimeoutOpt = TimeoutOpt {
    default: 300,
    help: "Idle time before a session is closed (SMTP 421); also the time a command line may \
           take to arrive, and a DATA transfer (plus its size at 500 bytes/s). Not given, POP3 \
           sessions get 600 (RFC 1939's least autologout time)",
};
/// RFC 1939's least POP3 autologout time, in seconds.
const POP3_AUTOLOGOUT: u64 = 600;
const MAX_MESSAGE: usize = 10 << 20;
/// 256 MiB: 25 messages of the largest size at once, or thousands of ordinary ones, where
/// 1,000 sessions of 10 MiB would hold 10 GiB.
const MAX_DATA_MEMORY: u64 = 256 << 20;
const MAX_RECIPIENTS: u32 = 100;

fn options() -> Command {
    Command::new("mail")
        .about(ABOUT)
        .after_long_help(MAIL_NOTES)
        .arg(SMTP.arg())
        .arg(POP3.arg())
        .arg(Arg::new("no-smtp").long("no-smtp").action(ArgAction::SetTrue).help("Disable the default SMTP listener"))
        .arg(Arg::new("no-pop3").long("no-pop3").action(ArgAction::SetTrue).help("Disable the default POP3 listener"))
        .arg(Arg::new("maildirdbmdomain").short('d').long("maildirdbmdomain").value_name("DOMAIN=PATH")
            .action(ArgAction::Append).help("A domain whose users and Maildirs live under PATH, repeatable"))
        .arg(Arg::new("user").short('u').long("user").value_name("USER=PASS").action(ArgAction::Append)
            .help("Add a user to the last -d domain, repeatable"))
        .arg(Arg::new("default").short('D').long("default").action(ArgAction::Count)
            .help("Make the last -d domain the default (other domains, bare POP3 names)"))
        .arg(Arg::new("aliases").short('A').long("aliases").value_name("FILE").action(ArgAction::Append)
            .value_parser(value_parser!(PathBuf)).help("An aliases(5) file for the last -d domain, reloaded when it changes"))
        .arg(Arg::new("bounce-to-postmaster").short('b').long("bounce-to-postmaster").action(ArgAction::Count)
            .help("Deliver mail for unknown users of the last -d domain to its postmaster"))
        .arg(Arg::new("hostname").short('H').long("hostname").value_name("NAME")
            .help("The name in the greeting and Received: headers [default: this host's FQDN, as hostname -f]"))
        .arg(Arg::new("esmtp").short('E').long("esmtp").action(ArgAction::SetTrue)
            .help("ESMTP: EHLO with PIPELINING, 8BITMIME, SMTPUTF8, SIZE, ENHANCEDSTATUSCODES, AUTH (needs --hostname)"))
        .arg(auth_arg("SMTP AUTH credentials: file:PATH (user:pass lines) or memory:USER:PASS[:USER:PASS...]"))
        .args(auth_help_args())
        .arg(Arg::new("relay").short('R').long("relay").value_name("DIR").hide(true))
        .arg(Arg::new("disable-anonymous").long("disable-anonymous").action(ArgAction::SetTrue).hide(true))
        .arg(Arg::new("max-message-size").long("max-message-size").value_name("BYTES")
            .default_value(MAX_MESSAGE.to_string())
            .value_parser(value_parser!(usize)).help("Largest message accepted, as transmitted (552 above); 0 for no limit of its own (postfix's message_size_limit = 0), --max-data-memory then bounds a message"))
        .arg(Arg::new("max-data-memory").long("max-data-memory").value_name("BYTES")
            .default_value(MAX_DATA_MEMORY.to_string())
            .value_parser(value_parser!(u64).range(1..))
            .help("Message data held in memory at once by all SMTP sessions of the process (per \
                   worker under --workers): DATA being received and messages waiting for the \
                   disk. A message that would go past it is read to its end and refused with \
                   452 4.3.1, and the client retries later (552 5.3.4 if it is larger than the \
                   whole budget: it never could fit); a SIZE declared at MAIL gets the same \
                   answer there, before the transfer. The default, 256 MiB, takes 25 \
                   messages of the largest size at once where 1,000 sessions could otherwise \
                   hold 10 GiB"))
        .arg(Arg::new("max-recipients").long("max-recipients").value_name("N")
            .default_value(MAX_RECIPIENTS.to_string())
            .value_parser(value_parser!(u32).range(1..)).help("Recipients per message (452 above)"))
        .arg(Arg::new("certificate").long("certificate").value_name("FILE")
            .value_parser(value_parser!(PathBuf))
            .help("The certificate (chain) for STARTTLS and STLS, PEM; alone, the file holds the key too"))
        .arg(Arg::new("privkey").long("privkey").value_name("FILE")
            .value_parser(value_parser!(PathBuf))
            .help("The private key of --certificate, PEM; alone, the file holds the certificate too"))
        .arg(Arg::new("auth-requires-tls").long("auth-requires-tls").action(ArgAction::SetTrue)
            .help("Refuse SMTP AUTH and POP3 USER/PASS/APOP on connections that are not TLS \
                   (postfix's smtpd_tls_auth_only, dovecot's disable_plaintext_auth)"))
        .arg(TIMEOUT.arg())
        .arg(MAX_CONNECTIONS.arg())
        .arg(PER_CLIENT.arg())
}

/// Splits `KEY=VALUE`; otherwise twistd's message, which names the form (`form` is
/// `name=path` or `user=password`).
fn pair<'a>(s: &'a str, opt: &str, form: &str) -> Result<(&'a str, &'a str), PluginError> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| {
            PluginError::new(format!(
                "Argument to --{opt} must be of the form '{form}', not '{s}'"
            ))
        })
}

/// The values of `id` with their positions on the command line, to apply options to the
/// `-d` before them, as twistd does.
fn positioned<'a>(m: &'a ArgMatches, id: &str) -> Vec<(usize, &'a String)> {
    match (m.indices_of(id), m.get_many::<String>(id)) {
        (Some(i), Some(v)) => i.zip(v).collect(),
        _ => Vec::new(),
    }
}

/// Where a counted flag was given (none when only its default value is there).
fn flag_positions(m: &ArgMatches, id: &str) -> Vec<usize> {
    if m.value_source(id) != Some(clap::parser::ValueSource::CommandLine) {
        return Vec::new();
    }
    m.indices_of(id).map(|i| i.collect()).unwrap_or_default()
}

fn last_domain_before(domains: &[(usize, usize)], pos: usize) -> Option<usize> {
    domains
        .iter()
        .rev()
        .find(|(at, _)| *at < pos)
        .map(|(_, i)| *i)
}

/// This host's name as twistd finds it (Python's `socket.getfqdn()`) on a usual system: the
/// node name's canonical name when that is a dotted one, as `hostname -f` says it
/// (`127.0.1.1 mx.example.com mx` in /etc/hosts makes `mx` `mx.example.com`); else the node
/// name. An SMTP greeting and HELO name a host by its FQDN (RFC 5321).
fn system_hostname() -> String {
    let node = nix::sys::utsname::uname()
        .ok()
        .and_then(|u| u.nodename().to_str().map(str::to_string))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    twistrs_core::addrinfo::canonical_name(&node)
        .filter(|c| c.contains('.'))
        .unwrap_or(node)
}

/// The STARTTLS/STLS certificate of `--certificate` and `--privkey`, loaded now so that a bad
/// file is a start-up error naming it. Either option alone names a file holding both, as
/// `ssl:`'s `privateKey` does.
fn starttls_context(m: &ArgMatches) -> Result<Option<Rc<TlsContext>>, PluginError> {
    // Absolute, so a SIGHUP reload after the daemon's chdir reads the same files.
    let abs = |id: &str| {
        m.get_one::<PathBuf>(id)
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
    };
    let (key, cert) = match (abs("privkey"), abs("certificate")) {
        (None, None) => return Ok(None),
        (Some(key), cert) => (key, cert),
        (None, Some(both)) => (both, None),
    };
    let ctx = TlsContext::from_files(&key, cert.as_deref(), &[])
        .map_err(|e| PluginError::new(format!("mail: {e}")))?;
    Ok(Some(Rc::new(ctx)))
}

/// Builds the configuration; creates domain directories and users as twistd does.
pub fn build_config(m: &ArgMatches) -> Result<MailConfig, PluginError> {
    if m.value_source("relay") == Some(clap::parser::ValueSource::CommandLine) {
        return Err(PluginError::new(
            "mail: --relay is not supported: twistrs mail delivers locally and never relays",
        ));
    }
    let hostname = m.get_one::<String>("hostname").cloned();
    if m.get_flag("esmtp") && hostname.is_none() {
        return Err(PluginError::new("--esmtp requires --hostname"));
    }
    let how = config::Setup::now();
    let mut domains: Vec<Domain> = Vec::new();
    let mut at: Vec<(usize, usize)> = Vec::new();
    for (pos, v) in positioned(m, "maildirdbmdomain") {
        let (name, path) = pair(v, "maildirdbmdomain", "name=path")?;
        let path = std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path));
        // A check (`twistrs --check`) writes nothing: the running server may use the domain.
        how.domain(&path)
            .map_err(|e| PluginError::new(format!("mail: -d {v}: {e}")))?;
        at.push((pos, domains.len()));
        domains.push(Domain {
            name: name.to_ascii_lowercase(),
            path,
            aliases: None,
            bounce_to_postmaster: false,
            folded: Default::default(),
        });
    }
    for (pos, v) in positioned(m, "user") {
        let d = last_domain_before(&at, pos)
            .ok_or_else(|| PluginError::new("Specify a domain before specifying users"))?;
        let (user, pass) = pair(v, "user", "user=password")?;
        if !config::valid_user(user) {
            return Err(PluginError::new(format!(
                "mail: -u: '{user}' is not a valid user name"
            )));
        }
        domains[d]
            .add_user(user, pass, how)
            .map_err(|e| PluginError::new(format!("mail: -u {user}: {e}")))?;
    }
    let aliases: Vec<(usize, PathBuf)> =
        match (m.indices_of("aliases"), m.get_many::<PathBuf>("aliases")) {
            (Some(i), Some(v)) => i.zip(v.cloned()).collect(),
            _ => Vec::new(),
        };
    for (pos, file) in aliases {
        let d = last_domain_before(&at, pos)
            .ok_or_else(|| PluginError::new("Specify a domain before specifying aliases"))?;
        // Absolute: the file is read again whenever it changes, after the launcher's chdir
        // to --rundir too.
        let abs = std::path::absolute(&file).unwrap_or_else(|_| file.clone());
        domains[d].aliases = Some(
            Aliases::new(abs)
                .map_err(|e| PluginError::new(format!("mail: -A {}: {e}", file.display())))?,
        );
    }
    for pos in flag_positions(m, "bounce-to-postmaster") {
        let d = last_domain_before(&at, pos)
            .ok_or_else(|| PluginError::new("Specify a domain before --bounce-to-postmaster"))?;
        domains[d].bounce_to_postmaster = true;
    }
    for d in domains.iter().filter(|d| d.bounce_to_postmaster) {
        // -b makes the postmaster's Maildir at its first bounce, as the -u user: that one, or
        // the domain directory it is made in, must be the user's.
        let pm = d.path.join("postmaster");
        if pm.exists() {
            config::note_maildir(&pm);
        } else {
            twistrs_core::reread::note_writes(
                &d.path,
                "-b makes the postmaster's Maildir in it at the first bounce",
            );
        }
    }
    let mut default = None;
    for pos in flag_positions(m, "default") {
        default =
            Some(last_domain_before(&at, pos).ok_or_else(|| {
                PluginError::new("Specify a domain before specifying the default")
            })?);
    }
    let auth = parse_auth("mail", m)?;
    Ok(MailConfig {
        domains,
        default,
        hostname: hostname.unwrap_or_else(system_hostname),
        esmtp: m.get_flag("esmtp"),
        auth,
        // 0 is no limit, as postfix's message_size_limit = 0 (and RFC 1870's SIZE 0).
        max_message: match m.get_one::<usize>("max-message-size").copied() {
            Some(0) => usize::MAX,
            n => n.unwrap_or(MAX_MESSAGE),
        },
        data_memory: memory::DataMemory::new(
            m.get_one::<u64>("max-data-memory")
                .copied()
                .unwrap_or(MAX_DATA_MEMORY)
                .try_into()
                .unwrap_or(usize::MAX),
        ),
        max_recipients: m
            .get_one::<u32>("max-recipients")
            .copied()
            .unwrap_or(MAX_RECIPIENTS) as usize,
        max_errors: 10,
        timeout: TIMEOUT.get(m),
        // RFC 1939 3: a POP3 autologout timer "MUST be of at least 10 minutes' duration"
        // (dovecot's is ten); the SMTP default, 300 s (postfix's smtpd_timeout), is not. A
        // --timeout given is taken for both.
        pop3_timeout: match m.value_source("timeout") {
            Some(clap::parser::ValueSource::DefaultValue) | None => {
                TIMEOUT.get(m).max(Duration::from_secs(POP3_AUTOLOGOUT))
            }
            Some(_) => TIMEOUT.get(m),
        },
        fail_delay: Duration::from_secs(1),
        tls: starttls_context(m)?,
        auth_requires_tls: m.get_flag("auth-requires-tls"),
    })
}

struct SmtpFactory {
    cfg: Rc<MailConfig>,
    store: Rc<RefCell<Deliveries>>,
    max: Option<usize>,
    per_client: PeerLimit,
    /// The STARTTLS certificate to reload on SIGHUP (one factory registers it).
    reload: Option<Rc<TlsContext>>,
}

/// Reloads the STARTTLS/STLS certificate with the logs (SIGHUP): new upgrades use the new
/// files, a bad new file keeps the old certificate in service.
fn reload_on_reopen(handle: &Handle, tls: &Option<Rc<TlsContext>>) {
    if let Some(tls) = tls.clone() {
        handle.on_reopen(Box::new(move || tls.reload()));
    }
}

impl Factory for SmtpFactory {
    fn name(&self) -> &'static str {
        "SMTP"
    }
    fn build_protocol(&mut self, peer: &Address) -> Option<Box<dyn Protocol>> {
        let Some(slot) = self.per_client.admit(peer) else {
            log::info!(target: "twistrs.mail.smtp", "{}: too many connections, refused", peer.host_string());
            return Some(Box::new(Refused(
                b"421 4.7.0 Too many connections from your address, try again later\r\n",
            )));
        };
        let host = peer.host_string();
        let host = if host.is_empty() {
            "localhost".into()
        } else {
            host
        };
        Some(Box::new(SmtpProtocol::new(
            self.cfg.clone(),
            self.store.clone(),
            host,
            slot,
        )))
    }
    fn start_factory(&mut self, handle: &Handle) {
        reload_on_reopen(handle, &self.reload);
    }
    fn max_connections(&self) -> Option<usize> {
        self.max
    }
}

struct Pop3Factory {
    cfg: Rc<MailConfig>,
    sessions: Cell<u64>,
    max: Option<usize>,
    per_client: PeerLimit,
    reload: Option<Rc<TlsContext>>,
}

impl Factory for Pop3Factory {
    fn name(&self) -> &'static str {
        "VirtualPOP3"
    }
    fn build_protocol(&mut self, peer: &Address) -> Option<Box<dyn Protocol>> {
        let Some(slot) = self.per_client.admit(peer) else {
            log::info!(target: "twistrs.mail.pop3", "{}: too many connections, refused", peer.host_string());
            return Some(Box::new(Refused(
                b"-ERR [SYS/TEMP] Too many connections from your address, try again later\r\n",
            )));
        };
        let n = self.sessions.get();
        self.sessions.set(n + 1);
        let banner = apop_banner(&self.cfg.hostname, n);
        Some(Box::new(Pop3Protocol::new(self.cfg.clone(), banner, slot)))
    }
    fn start_factory(&mut self, handle: &Handle) {
        reload_on_reopen(handle, &self.reload);
    }
    fn max_connections(&self) -> Option<usize> {
        self.max
    }
}

fn make_service(m: &ArgMatches) -> Result<Box<dyn Service>, PluginError> {
    // Given endpoints always count; the default one only if not disabled (twistd's rule):
    // `--no-smtp --no-pop3 -s tcp:25` serves SMTP on 25, and only no endpoint at all is
    // twistd's error.
    let endpoints = |opt: &ListenOpt, off: bool| -> Result<Vec<Endpoint>, PluginError> {
        match (opt.given(m), off) {
            (given, _) if !given.is_empty() => Ok(given),
            (_, true) => Ok(Vec::new()),
            _ => opt.get(m),
        }
    };
    let smtp = endpoints(&SMTP, m.get_flag("no-smtp"))?;
    let pop3 = endpoints(&POP3, m.get_flag("no-pop3"))?;
    if smtp.is_empty() && pop3.is_empty() {
        return Err(PluginError::new("You cannot disable all protocols"));
    }
    let cfg = Rc::new(build_config(m)?);
    metrics::register();
    // Read at each scrape: the delivery threads give the octets back.
    let pool = cfg.data_memory.clone();
    twistrs_core::metrics::live_gauge(
        "twistrs_mail_data_memory_bytes",
        "Message data held in memory now (DATA being received and messages on their way to the disk); --max-data-memory bounds it.",
        &[],
        move || i64::try_from(pool.used()).unwrap_or(i64::MAX),
    );
    if cfg.data_memory.limit() < cfg.max_message && cfg.max_message != usize::MAX {
        log::warn!(target: "twistrs.mail",
            "--max-data-memory {} is below --max-message-size {}: messages larger than it are refused with 552",
            cfg.data_memory.limit(), cfg.max_message);
    }
    if cfg.domains.is_empty() {
        log::warn!(target: "twistrs.mail", "no -d domain: every recipient will be refused");
    }
    let max = MAX_CONNECTIONS.get(m);
    let per_client = PER_CLIENT.get(m);
    let mut svc = MultiService::new("mail");
    if cfg.auth_requires_tls
        && cfg.tls.is_none()
        && !smtp.iter().chain(&pop3).any(|e| e.tls().is_some())
    {
        log::warn!(target: "twistrs.mail",
            "--auth-requires-tls with no --certificate and no ssl:/tls: endpoint: every login will be refused");
    }
    // The certificate is reloaded once per SIGHUP, by the first factory that uses it.
    let mut reload = cfg.tls.clone();
    if !smtp.is_empty() {
        let store = Deliveries::new(cfg.hostname.clone());
        let f = SmtpFactory {
            cfg: cfg.clone(),
            store,
            max,
            per_client: PeerLimit::new(per_client),
            reload: reload.take(),
        };
        svc.add(Box::new(ListeningService::new(
            "mail (SMTP)",
            smtp,
            Box::new(f),
            None,
        )));
    }
    if !pop3.is_empty() {
        let f = Pop3Factory {
            cfg,
            sessions: Cell::new(0),
            max,
            per_client: PeerLimit::new(per_client),
            reload,
        };
        svc.add(Box::new(ListeningService::new(
            "mail (POP3)",
            pop3,
            Box::new(f),
            None,
        )));
    }
    Ok(Box::new(svc))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1939's ten minutes for POP3 when --timeout is not given; a given one is both's.
    #[test]
    fn pop3_autologout_is_at_least_ten_minutes_unless_timeout_is_given() {
        let timeouts = |args: &[&str]| {
            let m = options()
                .try_get_matches_from([&["mail", "-H", "mx.test"], args].concat())
                .unwrap();
            let c = build_config(&m).unwrap();
            (c.timeout.as_secs(), c.pop3_timeout.as_secs())
        };
        assert_eq!(timeouts(&[]), (300, 600));
        assert_eq!(timeouts(&["--timeout", "30"]), (30, 30));
        assert_eq!(timeouts(&["--timeout", "900"]), (900, 900));
    }
}
