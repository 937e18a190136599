//! `Plugin`: Twisted's `IServiceMaker`, resolved at compile time instead of by discovery.

use crate::service::Service;

/// A plugin's options were inconsistent, or its service could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PluginError(pub String);

impl PluginError {
    /// An error whose message is printed as it is (`twistrs: ` before it) and fails the start.
    pub fn new(msg: impl Into<String>) -> Self {
        PluginError(msg.into())
    }
}

/// One runnable service kind: `twistrs [global options] TAPNAME [plugin options]`.
#[derive(Clone, Copy)]
pub struct Plugin {
    /// The command name (`echo`, `web`, `mail`).
    pub tapname: &'static str,
    /// One line for `twistrs --help`.
    pub description: &'static str,
    /// The plugin's options; `--help` and the man page come from it.
    pub options: fn() -> clap::Command,
    /// Builds the service from parsed options.
    pub make_service: fn(&clap::ArgMatches) -> Result<Box<dyn Service>, PluginError>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("tapname", &self.tapname)
            .finish()
    }
}

static CHECKING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process only checks its options and files (the launcher's `--check`, as
/// `nginx -t`): a plugin's `make_service` then reads and validates everything as for a
/// start, but writes nothing a start would (mail's directories and passwords), since the
/// running server may be reading the same files.
pub fn checking() -> bool {
    CHECKING.load(std::sync::atomic::Ordering::Relaxed)
}

/// The directory a file at `path` would be made in: its parent, `.` for a bare name.
pub fn dir_of(path: &std::path::Path) -> &std::path::Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    }
}

/// Checks, without making anything, that a file could be created in `dir` as a start
/// would create it (a check's stand-in for the create): a directory we may write and
/// search. The error names `dir`.
pub fn writable_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use nix::fcntl::{AT_FDCWD, AtFlags};
    use nix::unistd::{AccessFlags, faccessat};
    let named =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display()));
    if !std::fs::metadata(dir).map_err(named)?.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a directory", dir.display()),
        ));
    }
    // The effective ids, as the create itself would meet them (`--euid` changes only those),
    // as `reread` asks.
    faccessat(
        AT_FDCWD,
        dir,
        AccessFlags::W_OK | AccessFlags::X_OK,
        AtFlags::AT_EACCESS,
    )
    .map_err(|e| named(e.into()))
}

/// Marks this process as a check ([`checking`]); the launcher calls it before building the
/// service.
pub fn set_checking() {
    CHECKING.store(true, std::sync::atomic::Ordering::Relaxed);
}
