//! A Maildir as POP3 sees it: opened and locked, listed with sizes, and each message turned
//! into its POP3 form a chunk at a time.
//!
//! Everything here that touches the disk is meant for a worker thread (`defer_to_thread`):
//! a slow disk then delays the session that waits for it, never the reactor. Messages are
//! never read whole: sizes are counted through a fixed buffer and messages are sent in
//! chunks, so memory per session stays bounded whatever the size of the mail.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// How much of a message is read at once.
pub const CHUNK: usize = 64 * 1024;

/// One message in a mailbox.
#[derive(Debug)]
pub struct Message {
    pub path: PathBuf,
    /// The unique name, for UIDL.
    pub uid: String,
    /// Octets as sent over POP3 (LF counted as CRLF).
    pub size: u64,
    pub deleted: bool,
}

/// A mailbox held by one POP3 session.
#[derive(Debug)]
pub struct Mailbox {
    pub msgs: Vec<Message>,
    /// Held for the session's life; dropping it lets the next session in.
    _lock: Flock<File>,
}

impl Mailbox {
    /// Follows every listed message that `now` has elsewhere (a listing [`open_message`]
    /// made for one that had moved): the next RETR or QUIT finds it without a listing.
    pub fn follow(&mut self, now: &Whereabouts) {
        for m in &mut self.msgs {
            if let Some(p) = now.of(&m.path) {
                m.path = p.to_path_buf();
            }
        }
    }
}

/// Why a mailbox could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Another session holds it.
    Locked,
    Io(io::Error),
}

/// The file in a Maildir whose lock a POP3 session holds.
pub const LOCK: &str = ".twistrs-pop3.lock";

/// Opens the Maildir of a user at `dir` for a session: creates it if the user has none yet
/// (as twistd does for a user added to the passwd database by hand), takes its lock, and
/// lists its messages.
pub fn open(dir: &Path) -> Result<Mailbox, OpenError> {
    if !dir.join("new").is_dir() {
        crate::config::make_maildir(dir).map_err(OpenError::Io)?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK))
        .map_err(OpenError::Io)?;
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(OpenError::Locked),
        Err((_, e)) => return Err(OpenError::Io(io::Error::from(e))),
    };
    clean_tmp(&dir.join("tmp"), std::time::SystemTime::now());
    Ok(Mailbox {
        msgs: scan(dir).map_err(OpenError::Io)?,
        _lock: lock,
    })
}

/// How long a file may sit in `tmp/` before it is taken for the leftover of a delivery that
/// never finished (maildir(5): "not accessed in 36 hours"; dovecot cleans the same way).
const TMP_STALE: std::time::Duration = std::time::Duration::from_secs(36 * 3600);

/// Removes from `tmp` the files neither written nor read for [`TMP_STALE`]: what a delivery
/// cut off by a crash or `kill -9` left there, which nothing else would ever remove. A
/// delivery in progress is minutes old at most. Best effort, at each POP3 login (the
/// Maildir convention: whoever reads the mailbox cleans its tmp/); returns how many.
fn clean_tmp(tmp: &Path, now: std::time::SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    let stale = |t: io::Result<std::time::SystemTime>| {
        t.ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > TMP_STALE)
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_file() && stale(m.modified()) && stale(m.accessed()) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => removed += 1,
                Err(err) => log::warn!(target: "twistrs.mail.pop3",
                    "cannot remove {}, left over in tmp/: {err}", e.path().display()),
            }
        }
    }
    if removed > 0 {
        log::info!(target: "twistrs.mail.pop3",
            "removed {removed} file(s) left over in {} for more than 36 hours", tmp.display());
    }
    removed
}

/// The POP3 size of a message named `name` (`,W=` as dovecot and twistrs write it), if the
/// name says.
fn size_from_name(name: &str) -> Option<u64> {
    name.split([',', ':'])
        .find_map(|f| f.strip_prefix("W="))
        .and_then(|v| v.parse().ok())
}

/// Octets of `path` as POP3 sends it, counted through a fixed buffer.
fn pop3_size(path: &Path) -> io::Result<u64> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; CHUNK];
    let mut size = Pop3Size::default();
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(size.total()),
            Ok(n) => size.feed(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The octets of a message as POP3 sends it (every line end a CRLF, a last line without its
/// LF ended as [`Encoder::finish`] ends it, before the byte-stuffing), counted a piece at a
/// time: the one count behind a listing's sizes and the `,W=` that delivery writes into a
/// name, so LIST says the same of a message whichever of them it reads.
#[derive(Debug, Default)]
pub struct Pop3Size {
    total: u64,
    lf: u64,
    crlf: u64,
    last: Option<u8>,
}

impl Pop3Size {
    /// The size of `data` whole.
    pub fn of(data: &[u8]) -> u64 {
        let mut size = Pop3Size::default();
        size.feed(data);
        size.total()
    }

    /// Counts the next piece of the message.
    pub fn feed(&mut self, chunk: &[u8]) {
        let Some(&last) = chunk.last() else { return };
        self.total += chunk.len() as u64;
        self.lf += memchr::memchr_iter(b'\n', chunk).count() as u64;
        self.crlf += memchr::memmem::find_iter(chunk, b"\r\n").count() as u64;
        // A CRLF cut between two pieces.
        if self.last == Some(b'\r') && chunk[0] == b'\n' {
            self.crlf += 1;
        }
        self.last = Some(last);
    }

    /// The size of what was fed, as the message it is.
    pub fn total(&self) -> u64 {
        // A last line without its LF is ended as it is sent: CRLF after it, or an LF after
        // its final CR.
        let end = match self.last {
            None | Some(b'\n') => 0,
            Some(b'\r') => 1,
            Some(_) => 2,
        };
        self.total + self.lf - self.crlf + end
    }
}

/// The UIDL of a message whose Maildir name begins `base` (up to its first `,` or `:`):
/// the base itself, which is unique and stays the same when the message moves to `cur/` or
/// gets flags; but RFC 1939 allows 1 to 70 characters 0x21 to 0x7E, and a base longer than
/// that (a long `-H` host name in twistrs' own names) or with other bytes (a file another
/// program put there) is given as the MD5 of its bytes instead, as stable and as unique.
fn uidl(base: &[u8]) -> String {
    match std::str::from_utf8(base) {
        Ok(s) if (1..=70).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b)) => {
            s.to_string()
        }
        _ => format!("{:x}", md5::compute(base)),
    }
}

/// Lists `new/` and `cur/` oldest first, sizing each message as POP3 sends it.
pub fn scan(dir: &Path) -> io::Result<Vec<Message>> {
    use std::os::unix::ffi::OsStrExt;
    let mut msgs = Vec::new();
    for sub in ["cur", "new"] {
        let rd = match std::fs::read_dir(dir.join(sub)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in rd.flatten() {
            let file_name = e.file_name();
            let raw = file_name.as_bytes();
            if raw.starts_with(b".") || !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let name = String::from_utf8_lossy(raw);
            let path = e.path();
            let size = match size_from_name(&name) {
                Some(s) => s,
                None => pop3_size(&path)?,
            };
            let base = base_of(raw);
            let msg = Message {
                path,
                uid: uidl(base),
                size,
                deleted: false,
            };
            msgs.push((base.to_vec(), msg));
        }
    }
    // Maildir names start with the delivery time: name order is arrival order.
    msgs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(msgs.into_iter().map(|(_, m)| m).collect())
}

/// The base of a Maildir name, its unique part: up to the first `,` or `:`.
fn base_of(name: &[u8]) -> &[u8] {
    name.split(|&b| b == b':' || b == b',')
        .next()
        .unwrap_or(name)
}

/// Where the messages of one Maildir are now, by the base of their names: one listing of
/// `cur/` and `new/`, taken when a listed message is no longer where it was, because another
/// reader of the Maildir (a MUA, an IMAP server) moved it from `new/` to `cur/` or renamed
/// it in `cur/` with new flags. Such a reader often moves them all at once: one listing then
/// serves every message, where a listing per message made a mailbox of n messages cost n
/// listings of n names.
#[derive(Debug, Default)]
pub struct Whereabouts(std::collections::HashMap<Vec<u8>, Vec<PathBuf>>);

impl Whereabouts {
    /// Lists `cur/` and `new/` of the Maildir at `dir` (one that cannot be read has nothing).
    pub fn list(dir: &Path) -> Whereabouts {
        use std::os::unix::ffi::OsStrExt;
        let mut map: std::collections::HashMap<Vec<u8>, Vec<PathBuf>> = Default::default();
        for sub in ["cur", "new"] {
            let Ok(rd) = std::fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                let base = base_of(e.file_name().as_bytes()).to_vec();
                map.entry(base).or_default().push(e.path());
            }
        }
        Whereabouts(map)
    }

    /// Where this listing has the message listed at `path`: the one other name with the
    /// same base, in `cur/` or `new/`. Two or more (names another program gave, `msg,1` and
    /// `msg,2`, share a base) say nothing of which it became: then it is taken as gone,
    /// never as one of them, which RETR would serve and QUIT would remove in its place.
    fn find(&self, path: &Path) -> Found<'_> {
        use std::os::unix::ffi::OsStrExt;
        let Some(name) = path.file_name() else {
            return Found::Gone;
        };
        let Some(v) = self.0.get(base_of(name.as_bytes())) else {
            return Found::Gone;
        };
        let mut others = v.iter().filter(|p| *p != path);
        match (others.next(), others.next()) {
            (None, _) => Found::Stale,
            (Some(p), None) => Found::At(p),
            (Some(_), Some(_)) => Found::Gone,
        }
    }

    /// Where the message listed at `path` is now, if this listing has it elsewhere.
    fn of(&self, path: &Path) -> Option<&Path> {
        match self.find(path) {
            Found::At(p) => Some(p),
            Found::Gone | Found::Stale => None,
        }
    }
}

/// A message looked up in a [`Whereabouts`].
enum Found<'a> {
    /// Elsewhere than it was listed.
    At(&'a Path),
    /// No name with its base: another reader removed it.
    Gone,
    /// Only where it was listed, where it no longer is: it moved after this listing.
    Stale,
}

/// The Maildir a listed message is in: `DIR/new/NAME` or `DIR/cur/NAME`.
fn maildir_of(path: &Path) -> Option<&Path> {
    path.parent()?.parent()
}

/// Opens the message listed at `path`, wherever it has been moved since. When it had moved,
/// also where every message of its Maildir is now: the session follows them all
/// ([`Mailbox::follow`]), so the next one that moved costs no listing of its own.
pub fn open_message(path: &Path) -> io::Result<(File, Option<Whereabouts>)> {
    open_message_in(path, Whereabouts::list)
}

/// [`open_message`], listing a Maildir with `list`.
fn open_message_in(
    path: &Path,
    list: impl FnOnce(&Path) -> Whereabouts,
) -> io::Result<(File, Option<Whereabouts>)> {
    match File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let Some(dir) = maildir_of(path) else {
                return Err(e);
            };
            let now = list(dir);
            match now.of(path) {
                Some(p) => Ok((File::open(p)?, Some(now))),
                None => Err(e),
            }
        }
        r => r.map(|f| (f, None)),
    }
}

/// Removes the messages listed at `paths` (UPDATE), wherever they have been moved since;
/// one already gone is removed as far as the client is concerned. Their Maildir is listed
/// once for all those no longer where they were, and again only if a message moved after
/// that listing. The ones that could not be removed, with why.
pub fn remove_all(paths: &[PathBuf]) -> Vec<(PathBuf, io::Error)> {
    remove_all_in(paths, Whereabouts::list)
}

/// [`remove_all`], listing a Maildir with `list`.
fn remove_all_in(
    paths: &[PathBuf],
    mut list: impl FnMut(&Path) -> Whereabouts,
) -> Vec<(PathBuf, io::Error)> {
    let remove = |p: &Path| match std::fs::remove_file(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        r => r.map(|()| true),
    };
    let mut failed = Vec::new();
    // The listing of each Maildir met (a session's paths are all in one), taken at the first
    // message missing from it.
    let mut listings: Vec<(&Path, Whereabouts)> = Vec::new();
    for p in paths {
        match remove(p) {
            Ok(true) => continue,
            Err(e) => {
                failed.push((p.clone(), e));
                continue;
            }
            Ok(false) => {}
        }
        let Some(dir) = maildir_of(p) else { continue };
        let i = match listings.iter().position(|(d, _)| *d == dir) {
            Some(i) => i,
            None => {
                listings.push((dir, list(dir)));
                listings.len() - 1
            }
        };
        // A message that moved (again) after the listing was taken gets a new one, once.
        for again in [false, true] {
            let stale = match listings[i].1.find(p) {
                Found::Gone => false,
                Found::Stale => true,
                Found::At(now) => match remove(now) {
                    Ok(true) => false,
                    Ok(false) => true,
                    Err(e) => {
                        failed.push((p.clone(), e));
                        false
                    }
                },
            };
            if !stale || again {
                break;
            }
            listings[i].1 = list(dir);
        }
    }
    failed
}

/// Reads the chunk of `file` at `offset` (empty at the end).
pub fn read_chunk(file: &File, offset: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match file.read_at(&mut buf, offset) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Turns a stored message into its POP3 form, chunk by chunk: CRLF line ends, a leading `.`
/// doubled, and for TOP only the headers, the blank line and that many body lines. The
/// result is the same however the message is cut into chunks.
#[derive(Debug)]
pub struct Encoder {
    /// At the start of a line.
    bol: bool,
    /// A CR ended the last chunk: it is a line end if the next byte is LF.
    pending_cr: bool,
    /// Past the blank line that ends the headers.
    in_body: bool,
    /// The current line has no content so far.
    line_empty: bool,
    /// TOP: body lines still to send.
    body_left: Option<usize>,
    done: bool,
}

impl Encoder {
    /// An encoder for RETR (`None`) or TOP with `body_lines`.
    pub fn new(body_lines: Option<usize>) -> Self {
        Encoder {
            bol: true,
            pending_cr: false,
            in_body: false,
            line_empty: true,
            body_left: body_lines,
            done: false,
        }
    }

    /// True once TOP has sent its lines: the rest of the message is not needed.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Encodes the next chunk of the message into `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 32 + 4);
        let mut rest = chunk;
        while !rest.is_empty() && !self.done {
            if self.pending_cr {
                self.pending_cr = false;
                if rest[0] == b'\n' {
                    self.line_end(out);
                    rest = &rest[1..];
                } else {
                    // A bare CR is content.
                    self.content(b"\r", out);
                }
                continue;
            }
            match memchr::memchr(b'\n', rest) {
                Some(n) => {
                    let piece = &rest[..n];
                    // A CR right before LF belongs to the line end.
                    let text = piece.strip_suffix(b"\r").unwrap_or(piece);
                    self.content(text, out);
                    self.line_end(out);
                    rest = &rest[n + 1..];
                }
                None => {
                    // The chunk ends inside a line; a final CR waits for the next byte.
                    let (text, cr) = match rest.strip_suffix(b"\r") {
                        Some(t) => (t, true),
                        None => (rest, false),
                    };
                    self.content(text, out);
                    self.pending_cr = cr;
                    rest = &[];
                }
            }
        }
    }

    /// A new line begins: for TOP, count it or stop. False once done.
    fn begin_line(&mut self) -> bool {
        if self.in_body
            && let Some(left) = &mut self.body_left
        {
            if *left == 0 {
                self.done = true;
                return false;
            }
            *left -= 1;
        }
        self.bol = false;
        true
    }

    fn content(&mut self, text: &[u8], out: &mut Vec<u8>) {
        let Some(first) = text.first() else { return };
        if self.done || (self.bol && !self.begin_line()) {
            return;
        }
        if self.line_empty && *first == b'.' {
            out.push(b'.');
        }
        out.extend_from_slice(text);
        self.line_empty = false;
    }

    fn line_end(&mut self, out: &mut Vec<u8>) {
        if self.done || (self.bol && !self.begin_line()) {
            return;
        }
        out.extend_from_slice(b"\r\n");
        if !self.in_body && self.line_empty {
            self.in_body = true;
        }
        self.bol = true;
        self.line_empty = true;
    }

    /// The end of the message: a last line without its LF is ended, then the final dot.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        // A CR at the very end ends the last line, as a CRLF would.
        if std::mem::take(&mut self.pending_cr) || !self.bol {
            self.line_end(out);
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only files neither written nor read for 36 hours go; a fresh one (a delivery under
    /// way) and a directory stay.
    #[test]
    fn tmp_leftovers_older_than_36_hours_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(tmp.join("sub")).unwrap();
        let now = std::time::SystemTime::now();
        let ago = |h: u64| now - std::time::Duration::from_secs(h * 3600);
        for (name, atime, mtime) in [("old", 40, 40), ("read", 1, 40), ("fresh", 0, 0)] {
            let p = tmp.join(name);
            std::fs::write(&p, "x").unwrap();
            let times = std::fs::FileTimes::new()
                .set_accessed(ago(atime))
                .set_modified(ago(mtime));
            File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_times(times)
                .unwrap();
        }
        assert_eq!(clean_tmp(&tmp, now), 1);
        let mut left: Vec<String> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["fresh", "read", "sub"]);
        assert_eq!(clean_tmp(&dir.path().join("none"), now), 0);
    }

    /// The message in POP3 form, from the whole message at once: the reference.
    fn reference(data: &[u8], body_lines: Option<usize>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut in_body = false;
        let mut sent_body = 0usize;
        let text = data.strip_suffix(b"\n").unwrap_or(data);
        for line in text.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if in_body {
                if body_lines.is_some_and(|n| sent_body >= n) {
                    break;
                }
                sent_body += 1;
            }
            if line.first() == Some(&b'.') {
                out.push(b'.');
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
            if !in_body && line.is_empty() {
                in_body = true;
            }
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    fn encode(data: &[u8], body_lines: Option<usize>, chunk: usize) -> Vec<u8> {
        let mut e = Encoder::new(body_lines);
        let mut out = Vec::new();
        for piece in data.chunks(chunk.max(1)) {
            e.feed(piece, &mut out);
            if e.done() {
                break;
            }
        }
        e.finish(&mut out);
        out
    }

    #[test]
    fn the_same_pop3_form_in_every_chunking() {
        let msgs: &[&[u8]] = &[
            b"Subject: s\n\n.dot line\nline 2\nline 3\n",
            b"A: b\r\nC: d\r\n\r\n..two dots\r\nbody\r\n",
            b"H: x\n\nno final newline",
            b"H: x\n\nbare\rcr\r\n.\n\n\nend\r",
            b"H: only headers\n",
            b".starts with a dot\n\n.\n",
        ];
        for m in msgs {
            for top in [None, Some(0), Some(1), Some(2), Some(10)] {
                let want = reference(m, top);
                for chunk in 1..=m.len() {
                    assert_eq!(
                        String::from_utf8_lossy(&encode(m, top, chunk)),
                        String::from_utf8_lossy(&want),
                        "{:?} top {top:?} chunk {chunk}",
                        String::from_utf8_lossy(m)
                    );
                }
            }
        }
    }

    #[test]
    fn sizes_from_names_or_counted() {
        let dir = tempfile::tempdir().unwrap();
        crate::config::make_maildir(dir.path()).unwrap();
        std::fs::write(dir.path().join("new/1.M1P1Q1.h,S=9"), "a\nb\r\nc\n").unwrap();
        std::fs::write(dir.path().join("new/2.M1P1Q2.h,S=3,W=99"), "x\n").unwrap();
        let msgs = scan(dir.path()).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].size, 9, "LF counted as CRLF, CRLF once");
        assert_eq!(msgs[0].uid, "1.M1P1Q1.h");
        assert_eq!(msgs[1].size, 99, "W= is trusted");
    }

    /// UIDLs are RFC 1939's (1 to 70 characters 0x21 to 0x7E), unique, and the same after a
    /// move to cur/ with flags; messages stay in arrival order whatever their UIDL.
    #[test]
    fn uidls_are_short_printable_unique_and_stable() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        crate::config::make_maildir(dir.path()).unwrap();
        let long = format!("2.M1P1Q2.{}", "h".repeat(80));
        let names: [&[u8]; 4] = [
            b"1.M1P1Q1.short,S=2,W=3",
            long.as_bytes(),
            // Two names that differ in one byte that is not UTF-8 (a lossy reading makes
            // them the same).
            b"3.M1P1Q3.caf\xe9 name",
            b"3.M1P1Q3.caf\xef name",
        ];
        for n in names {
            let n = std::ffi::OsStr::from_bytes(n);
            std::fs::write(dir.path().join("new").join(n), "x\n").unwrap();
        }
        let msgs = scan(dir.path()).unwrap();
        let uids: Vec<&str> = msgs.iter().map(|m| m.uid.as_str()).collect();
        assert_eq!(uids[0], "1.M1P1Q1.short", "the name's base, as before");
        for u in &uids {
            assert!(
                (1..=70).contains(&u.len()) && u.bytes().all(|b| (0x21..=0x7e).contains(&b)),
                "{u:?}"
            );
        }
        let unique: std::collections::HashSet<&str> = uids.iter().copied().collect();
        assert_eq!(unique.len(), 4, "{uids:?}");
        assert!(
            msgs[1].path.to_string_lossy().contains(&long),
            "arrival order"
        );
        // Read by a client that moves it to cur/ with flags: the same UIDL.
        std::fs::rename(
            dir.path().join("new").join(&long),
            dir.path().join("cur").join(format!("{long}:2,S")),
        )
        .unwrap();
        assert_eq!(scan(dir.path()).unwrap()[1].uid, uids[1]);
    }

    /// Two names that share a base (another program's `msg,1` and `msg,2`): when the
    /// listed one is gone, neither is taken for it, so QUIT does not remove the other and
    /// RETR does not serve it.
    #[test]
    fn a_base_two_names_share_is_no_message_s_new_place() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let gone = dir.path().join("new/msg,1");
        std::fs::write(dir.path().join("new/msg,2"), "b").unwrap();
        std::fs::write(dir.path().join("cur/msg,3"), "c").unwrap();
        assert!(
            open_message(&gone).is_err(),
            "the other message is not served"
        );
        assert!(remove_all(&[gone]).is_empty(), "gone counts as removed");
        assert!(
            dir.path().join("new/msg,2").exists(),
            "the other message is kept"
        );
        assert!(dir.path().join("cur/msg,3").exists());
        // One other name with the base is where the message went.
        std::fs::remove_file(dir.path().join("cur/msg,3")).unwrap();
        let (mut f, _) = open_message(&dir.path().join("new/msg,1")).unwrap();
        let mut got = String::new();
        std::io::Read::read_to_string(&mut f, &mut got).unwrap();
        assert_eq!(got, "b");
    }

    /// LIST's size is what RETR sends (RFC 1939: octets, CRLF line ends, before the
    /// byte-stuffing), for a file another program put there that does not end in LF too.
    #[test]
    fn the_counted_size_is_what_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        for data in [
            &b"a\nb\r\nc\n"[..],
            b"Subject: x\n\nno final newline",
            b"body ends in CR\r",
            b"a\n\r",
            b"\r",
            b"x",
            b"",
        ] {
            let path = dir.path().join("m");
            std::fs::write(&path, data).unwrap();
            let sent = encode(data, None, 3);
            let sent = sent.strip_suffix(b".\r\n").unwrap();
            assert_eq!(pop3_size(&path).unwrap(), sent.len() as u64, "{data:?}");
        }
    }

    /// The size delivery writes into a name (`,W=`) and the size counted from a file that
    /// has none are one count, and both are what RETR sends less its byte-stuffing: for a
    /// message without a final newline, with bare LFs, bare CRs, lines starting with `.`,
    /// and a CRLF cut by the edge of the counting buffer.
    #[test]
    fn the_size_in_a_delivered_name_is_the_counted_size() {
        let mut cut = vec![b'x'; CHUNK - 1];
        cut.extend_from_slice(b"\r\nafter the chunk\n");
        let msgs: [&[u8]; 9] = [
            b"Subject: s\n\nbody\n",
            b"Subject: x\n\nno final newline",
            b"bare\nLF\r\nand CRLF\n",
            b".dot\n..two\n.\n\n.\r\nend\n",
            b"ends in CR\r",
            b"a bare\rCR\n\r\n",
            b"",
            b".",
            &cut,
        ];
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("m");
        crate::config::make_maildir(&md).unwrap();
        for data in msgs {
            let job = crate::maildir::Job {
                sender: "s@y".into(),
                head: String::new(),
                data: data.to_vec(),
                targets: vec![(md.clone(), "u@x".into())],
                memory: Default::default(),
                receipt: Default::default(),
            };
            assert!(crate::maildir::deliver_batch(&[job], "h")[0].is_ok());
            let msgs = scan(&md).unwrap();
            let path = &msgs[0].path;
            let named = size_from_name(&path.file_name().unwrap().to_string_lossy());
            let counted = pop3_size(path).unwrap();
            let stored = std::fs::read(path).unwrap();
            let sent = encode(&stored, None, 7);
            let sent = sent.strip_suffix(b".\r\n").unwrap();
            let stuffed = sent
                .split(|&b| b == b'\n')
                .filter(|l| l.starts_with(b".."))
                .count();
            let what = String::from_utf8_lossy(&data[..data.len().min(40)]);
            assert_eq!(named, Some(counted), "{what:?}");
            assert_eq!(counted, (sent.len() - stuffed) as u64, "{what:?}");
            std::fs::remove_file(path).unwrap();
        }
    }

    /// A Maildir of `n` messages in new/, listed as a session lists it.
    fn maildir_of_n(dir: &Path, n: usize) -> Vec<PathBuf> {
        crate::config::make_maildir(dir).unwrap();
        for i in 0..n {
            std::fs::write(dir.join(format!("new/{i:04}.M1P1Q1.h,S=2")), "x\n").unwrap();
        }
        scan(dir).unwrap().into_iter().map(|m| m.path).collect()
    }

    /// Another reader marks every message seen: new/ to cur/, with flags.
    fn move_all_to_cur(dir: &Path) {
        for e in std::fs::read_dir(dir.join("new")).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            let to = dir.join(format!("cur/{name}:2,S"));
            std::fs::rename(dir.join("new").join(&name), to).unwrap();
        }
    }

    /// A listing that counts itself.
    fn counted(n: &std::cell::Cell<usize>) -> impl FnMut(&Path) -> Whereabouts + '_ {
        move |d| {
            n.set(n.get() + 1);
            Whereabouts::list(d)
        }
    }

    /// QUIT after another reader moved the whole mailbox removes every message with one
    /// listing of the Maildir: there was one per message, each of every name (a mailbox of
    /// 10,000 messages cost 10,000 listings of 10,000 names). A message removed by another
    /// reader needs no more; one moved again after the listing gets a new one.
    #[test]
    fn quit_lists_a_moved_mailbox_once_not_once_per_message() {
        let dir = tempfile::tempdir().unwrap();
        let paths = maildir_of_n(dir.path(), 200);
        let n = std::cell::Cell::new(0);
        assert!(remove_all_in(&paths[..10], counted(&n)).is_empty());
        assert_eq!(n.get(), 0, "none moved: no listing");
        move_all_to_cur(dir.path());
        // Another reader also removed some.
        for p in &paths[10..20] {
            let name = p.file_name().unwrap().to_str().unwrap();
            std::fs::remove_file(dir.path().join(format!("cur/{name}:2,S"))).unwrap();
        }
        assert!(remove_all_in(&paths[10..150], counted(&n)).is_empty());
        assert_eq!(n.get(), 1, "one listing for 140 moved or removed");
        assert_eq!(scan(dir.path()).unwrap().len(), 50);
        // A listing taken, then the rest moved again (flags changed): listed again, once
        // per message that moved after it, and still removed.
        n.set(0);
        let failed = remove_all_in(&paths[150..], |d| {
            let now = counted(&n)(d);
            if n.get() == 1 {
                for e in std::fs::read_dir(d.join("cur")).unwrap() {
                    let p = e.unwrap().path();
                    let flagged = format!("{}R", p.display());
                    std::fs::rename(&p, flagged).unwrap();
                }
            }
            now
        });
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(n.get(), 2, "the stale listing taken again, once");
        assert!(scan(dir.path()).unwrap().is_empty());
    }

    /// RETR of a message another reader moved finds it with one listing, and the session
    /// follows every message of that listing: the RETRs of the others need none.
    #[test]
    fn a_moved_message_is_found_and_the_mailbox_follows_them_all() {
        let dir = tempfile::tempdir().unwrap();
        maildir_of_n(dir.path(), 30);
        let mut mbox = open(dir.path()).unwrap();
        move_all_to_cur(dir.path());
        let n = std::cell::Cell::new(0);
        let (mut file, moved) = open_message_in(&mbox.msgs[0].path, counted(&n)).unwrap();
        let mut data = String::new();
        file.read_to_string(&mut data).unwrap();
        assert_eq!((data.as_str(), n.get()), ("x\n", 1));
        mbox.follow(&moved.expect("it had moved"));
        for m in &mbox.msgs {
            let (_, moved) = open_message_in(&m.path, counted(&n)).unwrap();
            assert!(moved.is_none() && m.path.to_string_lossy().ends_with(":2,S"));
        }
        assert_eq!(n.get(), 1, "no listing for the others");
        std::fs::remove_file(&mbox.msgs[1].path).unwrap();
        let gone = open_message_in(&mbox.msgs[1].path, counted(&n));
        assert_eq!(gone.unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_user_without_a_maildir_gets_one_and_the_lock_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let joe = dir.path().join("joe");
        let first = open(&joe).expect("made on demand");
        assert!(joe.join("new").is_dir() && joe.join("cur").is_dir());
        assert!(first.msgs.is_empty());
        assert!(matches!(open(&joe), Err(OpenError::Locked)));
        drop(first);
        assert!(open(&joe).is_ok());
        assert!(matches!(
            open(Path::new("/proc/no/such/dir")),
            Err(OpenError::Io(_))
        ));
    }
}
