//! Reading a configuration file an operator names (a certificate, a zone, inetd.conf): only a
//! regular file, never more than a limit, and never blocking on what is put at the name.
//!
//! A start reads these as root before it drops to `-u` (and a root `--workers` master's
//! restarts read them again), so a FIFO another user put at the name must not hang it, and a
//! link to `/dev/zero` or a huge file must not exhaust its memory. A FIFO of root's or of
//! this user's is the operator's (a shell's `<(...)`) and is read, as twistd reads it. Symbolic links are followed as
//! before: operators link configuration files, and who owns them is another question.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// `/dev/null`'s device number on Linux (major 1, minor 3): the one device read as a file,
/// so that an operator may give it as an empty hosts, services or quotes file.
const DEV_NULL: (u32, u32) = (1, 3);

/// The bytes of the file at `path` (symbolic links followed), if it is a regular file (or
/// `/dev/null`) of at most `max` bytes; otherwise an error saying which it is not.
///
/// Opened with `O_NONBLOCK` (a FIFO opens at once, whether or not a writer has it) and
/// `O_NOCTTY`, and checked on the descriptor, so what the name is swapped for between the look
/// and the open is refused too. At most `max + 1` bytes are read: a file growing meanwhile is
/// refused, not followed.
pub fn read_config(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    // A look before the open, so that opening a device (a tape rewinds, a watchdog starts)
    // is not even tried; the descriptor's own check below is the one that counts.
    check(&std::fs::metadata(path)?, max)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    check(&meta, max)?;
    if meta.file_type().is_fifo() {
        // Root's or ours (`check`): the operator's pipe (a shell's `<(...)`), read as twistd
        // reads it, waiting for its writer: the same pipe, opened again blocking through
        // this descriptor, never what the name may name by now.
        let again = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&file)
            ))?;
        return read_at_most(again, 0, max);
    }
    read_at_most(file, meta.len(), max)
}

/// [`read_config`] as UTF-8 text (refused with the same error `std::fs::read_to_string`
/// gives if it is not).
pub fn read_config_string(path: &Path, max: u64) -> io::Result<String> {
    String::from_utf8(read_config(path, max)?).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

/// Refuses anything but a regular file of at most `max` bytes, or `/dev/null`.
fn check(meta: &Metadata, max: u64) -> io::Result<()> {
    let t = meta.file_type();
    if t.is_file() {
        if meta.len() > max {
            return Err(too_large(max));
        }
        return Ok(());
    }
    let dev = meta.rdev();
    if t.is_char_device() && (libc::major(dev), libc::minor(dev)) == DEV_NULL {
        return Ok(());
    }
    // A pipe root or this user made is the operator's; one another user put at the name
    // (in a directory it owns) would hold the start as long as it likes.
    if t.is_fifo() && crate::owner::trusted(meta.uid()) {
        return Ok(());
    }
    let what = if t.is_dir() {
        "a directory".to_string()
    } else if t.is_fifo() {
        let me = nix::unistd::geteuid().as_raw();
        format!("a FIFO of uid {}, not root's or uid {me}'s", meta.uid())
    } else if t.is_socket() {
        "a socket".to_string()
    } else if t.is_char_device() {
        "a character device".to_string()
    } else if t.is_block_device() {
        "a block device".to_string()
    } else {
        "not a file".to_string()
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file ({what})"),
    ))
}

/// Reads `file` (`len` bytes when checked) up to `max` bytes; more is an error.
fn read_at_most(file: File, len: u64, max: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(usize::try_from(len.min(max)).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(too_large(max));
    }
    Ok(out)
}

fn too_large(max: u64) -> io::Error {
    const MIB: u64 = 1 << 20;
    let limit = if max >= MIB && max.is_multiple_of(MIB) {
        format!("{} MiB", max / MIB)
    } else {
        format!("{max} bytes")
    };
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than the limit of {limit} for this file"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_regular_file_reads_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello\n").unwrap();
        assert_eq!(read_config(&p, 6).unwrap(), b"hello\n");
        assert_eq!(read_config_string(&p, 100).unwrap(), "hello\n");
    }

    #[test]
    fn one_byte_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"1234567").unwrap();
        let e = read_config(&p, 6).unwrap_err();
        assert!(e.to_string().contains("limit of 6 bytes"), "{e}");
        // What grows after the check is cut at the limit too.
        let f = File::open(&p).unwrap();
        let e = read_at_most(f, 0, 6).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
        assert!(too_large(16 << 20).to_string().contains("16 MiB"));
    }

    #[test]
    fn a_fifo_of_another_user_is_refused_at_once_and_ours_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
        // Ours: read as a file, once its writer has written and gone.
        let q = p.clone();
        let writer = std::thread::spawn(move || std::fs::write(&q, b"from a pipe\n"));
        assert_eq!(read_config(&p, 100).unwrap(), b"from a pipe\n");
        writer.join().unwrap().unwrap();
        // Another user's (only root can make one here): refused at once, no writer waited for.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        std::os::unix::fs::lchown(&p, Some(65534), Some(65534)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let start = Instant::now();
        let q = p.clone();
        std::thread::spawn(move || {
            let _ = tx.send(read_config(&q, 100));
        });
        let r = rx
            .recv_timeout(Duration::from_secs(2))
            .expect("read_config blocked on a FIFO");
        let e = r.unwrap_err();
        assert_eq!(
            e.to_string(),
            "not a regular file (a FIFO of uid 65534, not root's or uid 0's)"
        );
        assert!(start.elapsed() < Duration::from_secs(2));
        // Past the look (swapped in after it): the open does not block, and the descriptor's
        // check refuses it.
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&p)
            .unwrap();
        assert!(check(&f.metadata().unwrap(), 100).is_err());
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_config(dir.path(), 100).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a directory)");
    }

    #[test]
    fn dev_null_reads_empty_and_dev_zero_is_refused() {
        let is_dev = |p: &str| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_char_device());
        if is_dev("/dev/null") {
            assert_eq!(read_config(Path::new("/dev/null"), 10).unwrap(), b"");
        }
        if is_dev("/dev/zero") {
            let e = read_config(Path::new("/dev/zero"), 10).unwrap_err();
            assert_eq!(e.to_string(), "not a regular file (a character device)");
        }
    }

    #[test]
    fn a_symbolic_link_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let l = dir.path().join("l");
        std::os::unix::fs::symlink(&p, &l).unwrap();
        assert_eq!(read_config(&l, 1).unwrap(), b"x");
        let missing = read_config(&dir.path().join("none"), 1).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
