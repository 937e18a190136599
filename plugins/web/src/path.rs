//! URL paths to safe relative file paths: nothing a request says can name a file outside the root.
//!
//! The path is split on `/` first and each segment percent-decoded afterwards, so an encoded
//! slash can never become a separator. A segment that decodes to `..`, or holds `/`, `\` or NUL,
//! refuses the request (twistd answers 404); `.` and empty segments are dropped. The absolute
//! form (`http://host/p`) keeps only its path. What remains is relative and free of `..`;
//! symlinks are checked when the file is opened (`openat2` with `RESOLVE_BENEATH`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

/// A request path, decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct UrlPath {
    /// Decoded segments, each a safe file name.
    pub segments: Vec<OsString>,
    /// The path ended with `/`.
    pub trailing_slash: bool,
    /// The path as received (before `?`), for redirects and listings.
    pub raw: String,
}

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    /// Not a path at all (`*`, or garbage): 400.
    BadTarget,
    /// A traversal or forbidden byte: answered 404, as twistd does.
    Forbidden(&'static str),
}

/// Decodes a request target.
pub fn decode(target: &str) -> Result<UrlPath, PathError> {
    let mut path = target.split(['?', '#']).next().unwrap_or("");
    // The absolute form; its scheme in any case (RFC 3986 3.1: `HTTP://h/p`), as nginx takes it.
    let scheme = |s: &str| {
        path.get(..s.len())
            .filter(|p| p.eq_ignore_ascii_case(s))
            .map(|_| &path[s.len()..])
    };
    if let Some(rest) = scheme("http://").or_else(|| scheme("https://")) {
        path = rest.find('/').map_or("/", |i| &rest[i..]);
    }
    if !path.starts_with('/') {
        return Err(PathError::BadTarget);
    }
    let mut segments = Vec::new();
    for seg in path.split('/') {
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(seg).collect();
        if bytes.contains(&0) {
            return Err(PathError::Forbidden("NUL byte in path"));
        }
        if bytes.contains(&b'/') || bytes.contains(&b'\\') {
            return Err(PathError::Forbidden(
                "slash or backslash inside a path segment",
            ));
        }
        match bytes.as_slice() {
            b"" | b"." => {}
            b".." => return Err(PathError::Forbidden("'..' in path")),
            _ => segments.push(OsString::from_vec(bytes)),
        }
    }
    Ok(UrlPath {
        segments,
        trailing_slash: path.ends_with('/'),
        raw: path.to_string(),
    })
}

impl UrlPath {
    /// The relative path for `openat2` under the root: `a/b`, or `.` for the root itself.
    pub fn relative(&self) -> OsString {
        if self.segments.is_empty() {
            return OsString::from(".");
        }
        let mut out = OsString::new();
        for (i, s) in self.segments.iter().enumerate() {
            if i > 0 {
                out.push("/");
            }
            out.push(s);
        }
        out
    }

    /// Where a directory named without its slash is redirected: the path with `/` added and
    /// its leading slashes collapsed, so `//evil.com` gives `/evil.com/`, never the
    /// scheme-relative `//evil.com/` a browser would take to another host.
    pub fn with_slash(&self) -> String {
        match self
            .raw
            .trim_start_matches(['/', '\\'])
            .trim_end_matches('/')
        {
            "" => "/".to_string(),
            rest => format!("/{rest}/"),
        }
    }

    /// True if any segment starts with a dot.
    pub fn has_dotfile(&self) -> bool {
        use std::os::unix::ffi::OsStrExt;
        self.segments
            .iter()
            .any(|s| s.as_bytes().first() == Some(&b'.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths() {
        let p = decode("/a/b%20c/?x=1").unwrap();
        assert_eq!(p.segments, vec![OsString::from("a"), OsString::from("b c")]);
        assert!(p.trailing_slash);
        assert_eq!(p.relative(), OsString::from("a/b c"));
        assert_eq!(decode("/").unwrap().relative(), OsString::from("."));
        assert_eq!(
            decode("//etc//passwd").unwrap().relative(),
            OsString::from("etc/passwd")
        );
        assert_eq!(
            decode("http://evil/etc/passwd").unwrap().relative(),
            OsString::from("etc/passwd"),
            "the absolute form keeps only its path, under the root"
        );
        for upper in ["HTTP://h/etc/passwd", "Https://h/etc/passwd"] {
            assert_eq!(
                decode(upper).unwrap().relative(),
                OsString::from("etc/passwd"),
                "{upper}: a scheme in any case"
            );
        }
        assert_eq!(decode("/./a/.").unwrap().relative(), OsString::from("a"));
        assert!(decode("/.hidden").unwrap().has_dotfile());
    }

    #[test]
    fn a_redirect_target_never_names_another_host() {
        let to = |t: &str| decode(t).unwrap().with_slash();
        assert_eq!(to("/sub"), "/sub/");
        assert_eq!(to("//evil.com"), "/evil.com/");
        assert_eq!(to("////evil.com/x"), "/evil.com/x/");
        assert_eq!(to("http://h//evil.com"), "/evil.com/");
        assert_eq!(to("/"), "/");
    }

    #[test]
    fn every_traversal_form_is_refused() {
        for bad in [
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/etc/passwd",
            "/.%2e/etc/passwd",
            "/a%2f..%2f..%2fetc/passwd",
            "/a%2F..",
            "/..%5c..%5cetc/passwd",
            "/a\\..\\b",
            "/a%00.txt",
            "/%2e%2e%2fetc%2fpasswd",
        ] {
            assert!(
                matches!(decode(bad), Err(PathError::Forbidden(_))),
                "{bad} -> {:?}",
                decode(bad)
            );
        }
        assert_eq!(decode("*"), Err(PathError::BadTarget));
        assert_eq!(decode("etc/passwd"), Err(PathError::BadTarget));
    }
}
