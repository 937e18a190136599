//! Logging in twistd's line format: `2026-11-26T17:36:39+0000 [system] text`.
//!
//! A small `log::Log` of our own rather than simplelog: simplelog cannot print the system in
//! brackets as twistd does and cannot reopen its file. The timestamp is local time with a
//! numeric offset, cached per second. Each line is written with one `write(2)`, so lines from
//! worker threads never interleave. `reopen` (SIGHUP/SIGUSR1) opens the path again, which is
//! what logrotate's move-then-signal needs.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Where log lines go.
pub enum Destination {
    Stdout,
    File(PathBuf),
}

enum Sink {
    Stdout(io::Stdout),
    File { path: PathBuf, file: File },
}

struct State {
    sink: Sink,
    stamp_secs: i64,
    stamp: String,
}

/// The process's logger; reachable through [`logger`] for `reopen`.
pub struct Logger {
    state: Mutex<State>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Installs the logger. Fails if the log file cannot be opened.
pub fn init(dest: Destination) -> io::Result<&'static Logger> {
    let sink = match dest {
        Destination::Stdout => Sink::Stdout(io::stdout()),
        Destination::File(path) => {
            let path = std::path::absolute(&path)?;
            let file = open_append(&path)?;
            Sink::File { path, file }
        }
    };
    let logger = LOGGER.get_or_init(|| Logger {
        state: Mutex::new(State {
            sink: Sink::Stdout(io::stdout()),
            stamp_secs: i64::MIN,
            stamp: String::new(),
        }),
    });
    logger.lock().sink = sink;
    // A second init (tests, embedding) keeps the first registration; that is fine.
    let _ = log::set_logger(logger);
    log::set_max_level(LevelFilter::Info);
    Ok(logger)
}

/// The installed logger, if any.
pub fn logger() -> Option<&'static Logger> {
    LOGGER.get()
}

impl Logger {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the log file again by name (after logrotate moved it). Stdout is left alone.
    pub fn reopen(&self) -> io::Result<()> {
        let mut st = self.lock();
        if let Sink::File { path, file } = &mut st.sink {
            *file = open_append(path)?;
        }
        Ok(())
    }

    /// The log file's path, when logging to a file.
    pub fn path(&self) -> Option<PathBuf> {
        match &self.lock().sink {
            Sink::File { path, .. } => Some(path.clone()),
            Sink::Stdout(_) => None,
        }
    }
}

/// twistd's timestamp: `%Y-%m-%dT%H:%M:%S%z` in local time.
pub fn timestamp(secs: i64) -> String {
    // SAFETY: localtime_r writes only into the tm we pass.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let t: libc::time_t = secs;
        if libc::localtime_r(&t, &mut tm).is_null() {
            return secs.to_string();
        }
        tm
    };
    let off = tm.tm_gmtoff;
    let (sign, off) = if off < 0 { ('-', -off) } else { ('+', off) };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        sign,
        off / 3600,
        off % 3600 / 60
    )
}

/// The bracketed system: a per-connection prefix (`Echo,3,127.0.0.1`) or `-` as given,
/// otherwise the target as a dotted namespace with the level (`twistrs.launcher#info`).
pub fn system(target: &str, level: Level) -> String {
    if target == "-" || target.contains(',') {
        target.to_string()
    } else {
        format!(
            "{}#{}",
            target.replace("::", "."),
            level.as_str().to_ascii_lowercase()
        )
    }
}

/// One formatted line; continuation lines are indented with a tab, as twistd does.
pub fn format_line(stamp: &str, system: &str, text: &str) -> String {
    let mut line = format!("{stamp} [{system}] {}", text.replace('\n', "\n\t"));
    line.push('\n');
    line
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let text = r.args().to_string();
        let sys = system(r.target(), r.level());
        let mut st = self.lock();
        if st.stamp_secs != now {
            st.stamp_secs = now;
            st.stamp = timestamp(now);
        }
        let line = format_line(&st.stamp, &sys, &text);
        let _ = match &mut st.sink {
            Sink::Stdout(s) => s.write_all(line.as_bytes()).and_then(|_| s.flush()),
            Sink::File { file, .. } => file.write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {
        if let Sink::Stdout(s) = &mut self.lock().sink {
            let _ = s.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systems_render_as_twistd_does() {
        assert_eq!(system("-", Level::Info), "-");
        assert_eq!(system("Echo,3,127.0.0.1", Level::Info), "Echo,3,127.0.0.1");
        assert_eq!(
            system("twistrs::launcher", Level::Info),
            "twistrs.launcher#info"
        );
        assert_eq!(
            system("twistrs.reactor", Level::Error),
            "twistrs.reactor#error"
        );
    }

    #[test]
    fn lines_have_twistd_shape() {
        let s = timestamp(1_795_714_599);
        assert_eq!(s.len(), "2026-11-26T17:36:39+0000".len(), "{s}");
        assert!(s.starts_with("2026-11-2"));
        assert_eq!(
            format_line("T", "-", "a\nb"),
            "T [-] a\n\tb\n",
            "continuation lines are tab-indented"
        );
    }
}
