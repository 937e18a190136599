//! The served tree: opening files safely under the root, their metadata, and a small cache.
//!
//! Every file is opened with `openat2(root, path, RESOLVE_BENEATH)`, so neither `..` nor a
//! symlink can reach outside the root (unless `--follow-symlinks`). A path the kernel refuses
//! that way (an absolute link, even one pointing inside) is resolved in user space and opened
//! only if it lands inside the root, with no symlink left to follow. Small files are kept in
//! memory with their response headers, and each hit is checked with one `fstatat`: a changed
//! inode, size, mtime or ctime is a miss. Large files are sent with sendfile from an open file.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, SFlag};

/// Files up to this size are cached in memory.
const CACHE_FILE_MAX: u64 = 256 * 1024;
const CACHE_BYTES_MAX: usize = 32 * 1024 * 1024;
const CACHE_ENTRIES_MAX: usize = 4096;

/// What identifies a version of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(st: &FileStat) -> Stamp {
        Stamp {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// A regular file ready to serve.
pub struct Entry {
    pub stamp: Stamp,
    pub size: u64,
    pub mtime: SystemTime,
    /// The body, for cached small files.
    pub body: Option<Rc<[u8]>>,
    /// The open file, for large ones.
    pub file: Option<Rc<File>>,
    pub content_type: String,
    pub encoding: Option<&'static str>,
    pub etag: String,
    pub last_modified: String,
}

/// What a path names.
pub enum Found {
    File(Rc<Entry>),
    /// A directory, with its open descriptor (for listing).
    Dir(OwnedFd),
    NotFound,
    Forbidden(&'static str),
    /// The file may well exist but could not be opened or read (no descriptor left, EIO,
    /// ...): a server error, 500, never "No Such Resource".
    Failed(std::io::Error),
}

/// The root being served, and how.
pub struct Root {
    pub path: PathBuf,
    /// The root with every symlink resolved, once at start: what a link must stay inside.
    canonical: PathBuf,
    dir: Option<OwnedFd>,
    pub follow_symlinks: bool,
    pub hide_dotfiles: bool,
    pub default_type: String,
    cache: RefCell<Cache>,
    /// How many directories `read_listing` has read: what the tests count.
    #[cfg(test)]
    pub listings_read: std::cell::Cell<usize>,
}

#[derive(Default)]
struct Cache {
    map: HashMap<OsString, Rc<Entry>>,
    bytes: usize,
}

/// twistd's own additions to the MIME table (`static.loadMimeTypes`).
fn twistd_type(ext: &str) -> Option<&'static str> {
    Some(match ext {
        "conf" | "diff" | "patch" | "java" => "text/plain",
        "flac" => "audio/x-flac",
        "oz" => "text/x-oz",
        "swf" => "application/x-shockwave-flash",
        "wml" => "text/vnd.wap.wml",
        "xul" => "application/vnd.mozilla.xul+xml",
        _ => return None,
    })
}

/// Content-Type and Content-Encoding for a file name. As twistd, `.gz`/`.bz2` after a type a
/// browser shows (text, JSON, JavaScript, XML, SVG) is an encoding of that type: `r.txt.gz` is
/// text/plain, gzip. Any other (`a.tar.gz`, `data.gz`) is a compressed file, sent as one
/// (application/gzip, application/x-bzip2, no encoding), as nginx, Apache and Python's
/// http.server send it: with `Content-Encoding: gzip` a browser unpacks the download and
/// saves the result under the `.gz` name.
pub fn content_type(name: &OsStr, default: &str) -> (String, Option<&'static str>) {
    let name = Path::new(name);
    let compressed = match name.extension().and_then(OsStr::to_str) {
        Some("gz") => Some(("gzip", "application/gzip")),
        Some("bz2") => Some(("bzip2", "application/x-bzip2")),
        _ => None,
    };
    let Some((encoding, file_type)) = compressed else {
        return (type_of(name, default), None);
    };
    let inner = Path::new(name.file_stem().unwrap_or_default());
    if inner.extension().is_none() {
        return (file_type.to_string(), None);
    }
    let t = type_of(inner, default);
    if shown_by_browsers(&t) {
        (t, Some(encoding))
    } else {
        (file_type.to_string(), None)
    }
}

/// Where mime_guess is out of date or wrong: what twistd (from the system's mime.types) and
/// nginx send, or the registered type (RFC 9239 for JavaScript, RFC 8081 for fonts, RFC 8878
/// for zstd). Without it an `.rpm` was audio, a `.zst` (unknown) the `--mime-type` default.
fn current_type(ext: &str) -> Option<&'static str> {
    Some(match ext {
        "mjs" => "text/javascript",
        "rpm" => "application/x-redhat-package-manager",
        "zst" => "application/zstd",
        "m3u8" => "application/vnd.apple.mpegurl",
        "woff" => "font/woff",
        "otf" => "font/otf",
        _ => return None,
    })
}

/// The type of a name by its extension: twistd's additions, then mime_guess, then `default`.
fn type_of(name: &Path, default: &str) -> String {
    let ext = name
        .extension()
        .and_then(OsStr::to_str)
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        None => default.to_string(),
        Some(e) => twistd_type(e)
            .or_else(|| current_type(e))
            .map(str::to_string)
            .or_else(|| mime_guess::from_ext(e).first_raw().map(str::to_string))
            .unwrap_or_else(|| default.to_string()),
    }
}

/// A type a browser displays rather than saves: what a gzip encoding of it is for.
fn shown_by_browsers(t: &str) -> bool {
    let essence = t.split(';').next().unwrap_or(t).trim();
    essence.starts_with("text/")
        || essence.ends_with("+xml")
        || essence.ends_with("+json")
        || matches!(
            essence,
            "application/json" | "application/javascript" | "application/xml"
        )
}

/// What a failed open or stat says about the path: missing (404), refused (403), or a
/// failure of the server's own (500).
fn errno_found(e: nix::Error) -> Found {
    use nix::errno::Errno;
    match e {
        Errno::ENOENT | Errno::ENOTDIR | Errno::ENAMETOOLONG | Errno::ENXIO | Errno::ENODEV => {
            Found::NotFound
        }
        Errno::EACCES | Errno::EPERM => Found::Forbidden("permission denied"),
        Errno::EXDEV => Found::Forbidden("path leaves the root through a symlink"),
        Errno::ELOOP => Found::Forbidden("too many symlinks"),
        e => Found::Failed(std::io::Error::from(e)),
    }
}

/// The same for std's errors.
fn io_found(e: std::io::Error) -> Found {
    match e.raw_os_error() {
        Some(n) => errno_found(nix::errno::Errno::from_raw(n)),
        None => Found::Failed(e),
    }
}

/// How every file is opened: read-only, and O_NONBLOCK so opening a FIFO cannot stall the
/// reactor.
fn open_how(resolve: ResolveFlag) -> OpenHow {
    OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
        .resolve(resolve)
}

/// Reads from the start of `file` into `buf` until it is full or the file ends; how much came.
fn read_full_at(file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A path the server may not read: 403, unless it is a directory, which is opened with
/// `O_PATH`: enough to serve an index file inside it when it may be searched (mode 0711, as
/// home directories often are), as twistd and nginx do. `O_PATH` itself checks no
/// permission on the directory: one that may not be searched either fails at its index
/// (403, logged), and its listing is refused when it is asked for.
fn search_only(dir: &OwnedFd, rel: &OsStr, resolve: ResolveFlag) -> Found {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(resolve);
    match nix::fcntl::openat2(dir.as_fd(), rel, how) {
        Ok(fd) => Found::Dir(fd),
        Err(_) => Found::Forbidden("permission denied"),
    }
}

impl Root {
    /// Opens the root (a directory or a single file).
    pub fn open(
        path: &Path,
        follow_symlinks: bool,
        hide_dotfiles: bool,
        default_type: String,
    ) -> std::io::Result<Root> {
        let path = std::path::absolute(path)?;
        let canonical = std::fs::canonicalize(&path)?;
        let md = std::fs::metadata(&path)?;
        let dir = if md.is_dir() {
            Some(OwnedFd::from(File::open(&path)?))
        } else {
            None
        };
        Ok(Root {
            path,
            canonical,
            dir,
            follow_symlinks,
            hide_dotfiles,
            default_type,
            cache: RefCell::new(Cache::default()),
            #[cfg(test)]
            listings_read: Default::default(),
        })
    }

    pub fn is_dir(&self) -> bool {
        self.dir.is_some()
    }

    /// Looks up `rel` (from `path::UrlPath::relative`, never holding `..`).
    pub fn find(&self, rel: &OsStr) -> Found {
        let Some(dir) = &self.dir else {
            return self.single_file(rel);
        };
        if let Some(hit) = self.cached(dir, rel) {
            return Found::File(hit);
        }
        let resolve = if self.follow_symlinks {
            ResolveFlag::empty()
        } else {
            ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS
        };
        let fd = match nix::fcntl::openat2(dir.as_fd(), rel, open_how(resolve)) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::EXDEV) if !self.follow_symlinks => {
                match self.open_resolved(dir, rel) {
                    Ok(fd) => fd,
                    Err(found) => return found,
                }
            }
            Err(nix::errno::Errno::EACCES) => return search_only(dir, rel, resolve),
            Err(e) => return errno_found(e),
        };
        let st = match nix::sys::stat::fstat(&fd) {
            Ok(s) => s,
            Err(e) => return errno_found(e),
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFDIR {
            return Found::Dir(fd);
        }
        if kind != SFlag::S_IFREG {
            return Found::Forbidden("not a regular file");
        }
        let name = Path::new(rel).file_name().unwrap_or(rel);
        match self.entry(File::from(fd), &st, name) {
            Ok((e, settled)) => {
                let e = Rc::new(e);
                if e.body.is_some() && settled {
                    self.remember(rel, e.clone());
                }
                Found::File(e)
            }
            Err(e) => Found::Failed(e),
        }
    }

    /// Opens a path that `RESOLVE_BENEATH` refused: a symlink written as an absolute path (or
    /// climbing with `..`) may still point inside the root. The path is resolved here and
    /// opened only if it lands inside the real root, relative to the root and with no symlink
    /// left to follow, so a link swapped in meanwhile makes the open fail instead of escaping.
    fn open_resolved(&self, dir: &OwnedFd, rel: &OsStr) -> Result<OwnedFd, Found> {
        let escapes = Found::Forbidden("path leaves the root through a symlink");
        let Ok(real) = std::fs::canonicalize(self.canonical.join(rel)) else {
            return Err(escapes);
        };
        let inside = match real.strip_prefix(&self.canonical) {
            Ok(p) if p.as_os_str().is_empty() => Path::new("."),
            Ok(p) => p,
            Err(_) => return Err(escapes),
        };
        let resolve = ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS;
        nix::fcntl::openat2(dir.as_fd(), inside, open_how(resolve)).map_err(|e| match e {
            nix::errno::Errno::ELOOP => Found::Forbidden("a symlink changed while opening"),
            nix::errno::Errno::EACCES => search_only(dir, inside.as_os_str(), resolve),
            e => errno_found(e),
        })
    }

    fn single_file(&self, rel: &OsStr) -> Found {
        if rel != "." {
            return Found::NotFound;
        }
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) => return io_found(e),
        };
        let st = match nix::sys::stat::fstat(&file) {
            Ok(st) => st,
            Err(e) => return errno_found(e),
        };
        let name = self.path.file_name().unwrap_or_default().to_os_string();
        match self.entry(file, &st, &name) {
            Ok((e, _)) => Found::File(Rc::new(e)),
            Err(e) => Found::Failed(e),
        }
    }

    fn cached(&self, dir: &OwnedFd, rel: &OsStr) -> Option<Rc<Entry>> {
        let cache = self.cache.borrow();
        let hit = cache.map.get(rel)?;
        // One stat per hit: any change to the file is a miss.
        let st = nix::sys::stat::fstatat(dir, rel, nix::fcntl::AtFlags::empty()).ok()?;
        (Stamp::of(&st) == hit.stamp).then(|| hit.clone())
    }

    fn remember(&self, rel: &OsStr, e: Rc<Entry>) {
        let mut c = self.cache.borrow_mut();
        let len = e.body.as_ref().map_or(0, |b| b.len());
        while (c.bytes + len > CACHE_BYTES_MAX || c.map.len() >= CACHE_ENTRIES_MAX)
            && let Some(k) = c.map.keys().next().cloned()
        {
            if let Some(old) = c.map.remove(&k) {
                c.bytes -= old.body.as_ref().map_or(0, |b| b.len());
            }
        }
        if let Some(old) = c.map.insert(rel.to_os_string(), e) {
            c.bytes -= old.body.as_ref().map_or(0, |b| b.len());
        }
        c.bytes += len;
    }

    /// The entry for an open file, and whether it is settled: a small file is read whole, and
    /// one rewritten meanwhile (truncated, then written again, as a generated status file or
    /// feed often is) can hold fewer bytes than its stat said. It is read again with a fresh
    /// stat; one still moving after a few tries is served as read (its length what was read,
    /// never a 500 nor a body shorter than its Content-Length) and not cached.
    fn entry(&self, file: File, st: &FileStat, name: &OsStr) -> std::io::Result<(Entry, bool)> {
        let mut st = *st;
        let mut small = None;
        if st.st_size as u64 <= CACHE_FILE_MAX {
            for _ in 0..3 {
                let mut buf = vec![0u8; st.st_size as usize];
                let n = read_full_at(&file, &mut buf)?;
                buf.truncate(n);
                let settled = n as u64 == st.st_size as u64;
                small = Some((buf, settled));
                if settled {
                    break;
                }
                st = nix::sys::stat::fstat(&file)?;
                if st.st_size as u64 > CACHE_FILE_MAX {
                    small = None;
                    break;
                }
            }
        }
        let settled = small.as_ref().is_none_or(|(_, settled)| *settled);
        let size = small
            .as_ref()
            .map_or(st.st_size as u64, |(b, _)| b.len() as u64);
        let mtime = UNIX_EPOCH
            + Duration::new(
                st.st_mtime.max(0) as u64,
                st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
            );
        let (content_type, encoding) = content_type(name, &self.default_type);
        let (body, file) = match small {
            Some((buf, _)) => (Some(Rc::<[u8]>::from(buf)), None),
            None => (None, Some(Rc::new(file))),
        };
        let entry = Entry {
            stamp: Stamp::of(&st),
            size,
            mtime,
            body,
            file,
            content_type,
            encoding,
            etag: format!("\"{:x}-{:x}-{:x}\"", st.st_mtime, st.st_mtime_nsec, size),
            last_modified: httpdate::fmt_http_date(mtime),
        };
        Ok((entry, settled))
    }

    /// Opens a directory for its listing, without reading it: again, through `dir` (which may
    /// be an `O_PATH` descriptor of a directory that can be searched only), so an error here
    /// (403 for a directory that cannot be read) is the listing's. Apart from `read_listing`
    /// so the preconditions come between: a listing has no validators (`Validators::default`,
    /// nothing in it is compared), so a 304 or 412 is known before the directory is read.
    pub fn open_listing(&self, dir: &OwnedFd) -> Result<nix::dir::Dir, nix::Error> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        nix::dir::Dir::openat(dir, ".", flags, nix::sys::stat::Mode::empty())
    }

    /// Reads a directory `open_listing` opened: (name, is_dir, size), directories first, each
    /// group by name. An entry that goes away meanwhile is left out.
    pub fn read_listing(&self, mut d: nix::dir::Dir) -> Vec<(OsString, bool, u64)> {
        #[cfg(test)]
        self.listings_read.set(self.listings_read.get() + 1);
        let mut out = Vec::new();
        let names: Vec<OsString> = d
            .iter()
            .filter_map(Result::ok)
            .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
            .filter(|n| n != "." && n != "..")
            .filter(|n| !(self.hide_dotfiles && n.as_bytes().first() == Some(&b'.')))
            .collect();
        for n in names {
            if let Ok(st) = nix::sys::stat::fstatat(&d, n.as_os_str(), nix::fcntl::AtFlags::empty())
            {
                let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                out.push((n, kind == SFlag::S_IFDIR, st.st_size as u64));
            }
        }
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    /// Files in `dir_rel` named `stem.EXT`, for `--allow-ignore-ext`.
    pub fn with_any_extension(&self, dir_rel: &OsStr, stem: &OsStr) -> Vec<OsString> {
        let Found::Dir(fd) = self.find(dir_rel) else {
            return Vec::new();
        };
        let mut prefix = stem.as_bytes().to_vec();
        prefix.push(b'.');
        let mut v: Vec<OsString> = self
            .open_listing(&fd)
            .map(|d| self.read_listing(d))
            .unwrap_or_default()
            .into_iter()
            .filter(|(n, is_dir, _)| !is_dir && n.as_bytes().starts_with(&prefix))
            .map(|(n, _, _)| n)
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_encodings_as_twistd() {
        let t = |n: &str| content_type(OsStr::new(n), "text/html");
        assert_eq!(t("a.txt"), ("text/plain".into(), None));
        assert_eq!(t("r.txt.gz"), ("text/plain".into(), Some("gzip")));
        assert_eq!(t("r.svg.gz"), ("image/svg+xml".into(), Some("gzip")));
        assert_eq!(t("d.json.bz2"), ("application/json".into(), Some("bzip2")));
        // Archives are files: sent as they are, or a browser unpacks them.
        assert_eq!(t("x.tar.gz"), ("application/gzip".into(), None));
        assert_eq!(t("x.tar.bz2"), ("application/x-bzip2".into(), None));
        assert_eq!(t("data.gz"), ("application/gzip".into(), None));
        assert_eq!(t("disk.img.gz"), ("application/gzip".into(), None));
        assert_eq!(t("p.patch").0, "text/plain");
        assert_eq!(t("noext").0, "text/html", "the default for unknown");
        assert_eq!(t("weird.zzzq").0, "text/html");
        assert_eq!(t("i.PNG").0, "image/png");
        // As twistd and nginx type them, where mime_guess is out of date.
        assert_eq!(t("m.mjs").0, "text/javascript");
        assert_eq!(t("p.rpm").0, "application/x-redhat-package-manager");
        assert_eq!(t("a.tar.zst").0, "application/zstd");
        assert_eq!(t("s.m3u8").0, "application/vnd.apple.mpegurl");
        assert_eq!(t("f.woff").0, "font/woff");
        assert_eq!(t("f.otf").0, "font/otf");
    }

    #[test]
    fn cache_sees_changes_and_symlinks_cannot_escape() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "one").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("out")).unwrap();
        std::os::unix::fs::symlink("a.txt", dir.path().join("in")).unwrap();
        let root = Root::open(dir.path(), false, false, "text/html".into()).unwrap();
        let body = |f: Found| match f {
            Found::File(e) => e.body.as_deref().unwrap_or_default().to_vec(),
            _ => b"<not a file>".to_vec(),
        };
        assert_eq!(body(root.find(OsStr::new("a.txt"))), b"one");
        assert_eq!(body(root.find(OsStr::new("a.txt"))), b"one", "a cache hit");
        std::fs::write(dir.path().join("a.txt"), "two!").unwrap();
        assert_eq!(
            body(root.find(OsStr::new("a.txt"))),
            b"two!",
            "the change is seen"
        );
        assert_eq!(
            body(root.find(OsStr::new("in"))),
            b"two!",
            "a symlink inside is fine"
        );
        assert!(matches!(root.find(OsStr::new("out")), Found::Forbidden(_)));
        assert!(matches!(root.find(OsStr::new("nope")), Found::NotFound));
        // A cached link repointed out of the root is a miss, and refused.
        std::fs::remove_file(dir.path().join("in")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("in")).unwrap();
        assert!(matches!(root.find(OsStr::new("in")), Found::Forbidden(_)));
        let follow = Root::open(dir.path(), true, false, "text/html".into()).unwrap();
        assert_eq!(
            body(follow.find(OsStr::new("out"))),
            b"s",
            "--follow-symlinks"
        );
    }

    #[test]
    fn a_link_written_as_an_absolute_path_is_served_when_it_stays_inside() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("root");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.txt"), "one").unwrap();
        std::fs::write(dir.join("sub/b.txt"), "bee").unwrap();
        let link = |target: &Path, name: &str| std::os::unix::fs::symlink(target, dir.join(name));
        link(&dir.join("a.txt"), "abs").unwrap();
        link(&dir.join("sub"), "abs-sub").unwrap();
        link(&outside.path().join("secret"), "abs-out").unwrap();
        // A relative link climbing to `/` and down to the secret.
        let mut up = PathBuf::new();
        for _ in 1..dir.components().count() {
            up.push("..");
        }
        let rel_out = up
            .join(outside.path().strip_prefix("/").unwrap())
            .join("secret");
        link(&rel_out, "rel-out").unwrap();
        link(&dir.join("missing"), "dangling").unwrap();
        // Served through a symlink to the root too: links are judged against the real root.
        std::os::unix::fs::symlink(&dir, top.path().join("root-link")).unwrap();
        for served_as in [dir.clone(), top.path().join("root-link")] {
            let root = Root::open(&served_as, false, false, "text/html".into()).unwrap();
            let body = |rel: &str| match root.find(OsStr::new(rel)) {
                Found::File(e) => e.body.as_deref().unwrap_or_default().to_vec(),
                Found::Forbidden(_) => b"403".to_vec(),
                Found::NotFound => b"404".to_vec(),
                _ => b"other".to_vec(),
            };
            assert_eq!(body("abs"), b"one");
            assert_eq!(body("abs"), b"one", "a cache hit");
            assert_eq!(body("abs-sub/b.txt"), b"bee");
            assert!(matches!(root.find(OsStr::new("abs-sub")), Found::Dir(_)));
            assert_eq!(body("abs-out"), b"403");
            assert_eq!(body("rel-out"), b"403");
            assert_eq!(body("dangling"), b"403");
        }
    }
}
