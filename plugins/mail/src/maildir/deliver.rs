//! Delivering a batch of messages into Maildirs: durable before any 250, all or nothing per message.
//!
//! Each message is written into `tmp/` of each of its Maildirs, and every file is flushed by an
//! fsync of its own; the files of a message whose writes and flushes all succeeded are renamed
//! into `new/`, and every `new/` directory touched is flushed by an fsync of its own. Only then
//! is the message acknowledged. The flushes of one batch are issued together (writeback of
//! every file started first, then the fsyncs from the delivery thread and three helper
//! threads at once), so the disk serves them side by side and their cost is shared by the
//! batch. No syncfs(2): it would also wait for everything else dirty on the file system
//! (another program's bulk write), and cover only the one file system it is given.
//!
//! When any file of a message fails (write, flush, rename, directory flush), the copies it
//! already put into any `new/` are removed and those directories flushed again: that message
//! alone gets 451, and the client's retry cannot deliver it twice. What remains is a crash
//! between the first rename and the 250 (see ARCHITECTURE.md, "All or nothing per message").

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use super::{Job, unique_name};
use crate::mailbox::Pop3Size;

/// The flushes a delivery needs. Production uses [`Disk`]; tests put failures in.
trait Flush: Send + Sync {
    /// Starts writing `file` back without waiting for it, so that the flushes that follow
    /// find their data already on its way to the disk.
    fn start(&self, _file: &File) {}
    /// Makes `file` (at `path` in `tmp/`) durable.
    fn file(&self, file: &File, path: &Path) -> io::Result<()>;
    /// Makes the entries of directory `dir` durable.
    fn dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real disk.
struct Disk;

impl Flush for Disk {
    fn start(&self, file: &File) {
        use std::os::fd::AsRawFd;
        // SAFETY: a system call on a descriptor `file` owns, with no memory passed. Its
        // error is not needed: the fsync that follows reports any.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }

    /// fsync, not fdatasync: for a file just created and written both must write its inode
    /// (size and blocks changed), so fdatasync would save nothing here.
    fn file(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_all()
    }

    fn dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// At most this many flushes of a batch are waited for at once: the delivery thread and
/// `SYNC_THREADS - 1` helper threads, each flushing its share of the batch in turn.
const SYNC_THREADS: usize = 4;

/// One message's copy for one Maildir.
struct MessageCopy {
    job: usize,
    tmp: PathBuf,
    new: PathBuf,
    /// Open from the write until it is flushed.
    file: Option<File>,
    /// Renamed into `new/`.
    moved: bool,
}

/// Delivers every job; one result per job, `Ok` only once the message is durable in every
/// one of its Maildirs, `Err` with nothing of it left in any `new/`.
pub fn deliver_batch(jobs: &[Job], host: &str) -> Vec<Result<(), String>> {
    let disk: Arc<dyn Flush> = Arc::new(Disk);
    deliver_with(jobs, host, &disk)
}

fn deliver_with(jobs: &[Job], host: &str, flush: &Arc<dyn Flush>) -> Vec<Result<(), String>> {
    let mut results: Vec<Result<(), String>> = vec![Ok(()); jobs.len()];
    let mut copies = write_all(jobs, host, &mut results, flush);
    flush_files(&mut copies, &mut results, flush);
    for c in &mut copies {
        if results[c.job].is_err() {
            continue;
        }
        match std::fs::rename(&c.tmp, &c.new) {
            Ok(()) => c.moved = true,
            Err(e) => fail(
                &mut results,
                c.job,
                format!("cannot move into {}: {e}", c.new.display()),
            ),
        }
    }
    flush_new_dirs(&copies, &mut results, flush);
    take_back(&copies, &mut results, flush);
    results
}

/// Makes the Maildir `dir` of a target that has none yet: a user added to `passwd/` by hand
/// (as twistd's domain directories allow, and postfix's virtual(8) and twistd make the
/// Maildir at the first delivery), or the postmaster's under `-b`. Then it and the domain
/// directory are flushed, so a message acknowledged in it does not vanish with the directory
/// in a crash. Asked only once a create in its `tmp/` has failed with NotFound: the Maildir
/// is there for nearly every delivery, and a stat of each target per batch cost a system
/// call for nothing. `None` when there is nothing to make: `dir` is there (one there and
/// broken is the operator's to mend, and its delivery fails as it is), or its domain
/// directory is not (one removed is not made again); else whether it was made, tried once a
/// batch (`tried`).
fn make_missing(
    dir: &Path,
    flush: &Arc<dyn Flush>,
    tried: &mut BTreeMap<PathBuf, Option<Result<(), String>>>,
) -> Option<Result<(), String>> {
    if let Some(done) = tried.get(dir) {
        return done.clone();
    }
    let made = if dir.symlink_metadata().is_ok() {
        None
    } else {
        dir.parent().filter(|d| d.is_dir()).map(|domain| {
            let made = crate::config::make_maildir(dir)
                .and_then(|()| flush.dir(dir))
                .and_then(|()| flush.dir(domain));
            match made {
                Ok(()) => {
                    log::info!(target: "twistrs.mail.smtp", "made the Maildir {}", dir.display());
                    Ok(())
                }
                Err(e) => Err(format!("cannot make the Maildir {}: {e}", dir.display())),
            }
        })
    };
    tried.insert(dir.to_path_buf(), made.clone());
    made
}

/// Writes every job's copies into `tmp/`, the headers and the message in one write each;
/// a target without a Maildir gets one made first ([`make_missing`]).
fn write_all(
    jobs: &[Job],
    host: &str,
    results: &mut [Result<(), String>],
    flush: &Arc<dyn Flush>,
) -> Vec<MessageCopy> {
    let mut copies = Vec::new();
    let mut tried = BTreeMap::new();
    for (j, job) in jobs.iter().enumerate() {
        // The message's POP3 size, counted once for all its copies: a scan of every octet.
        let data_wire = Pop3Size::of(&job.data);
        for (dir, rcpt) in &job.targets {
            let name = unique_name(host);
            let tmp = dir.join("tmp").join(&name);
            // Final delivery: the envelope sender first (RFC 5321 4.4), as postfix and dovecot
            // write it, then the recipient this copy is for.
            let head = format!(
                "Return-Path: <{}>\nDelivered-To: {rcpt}\n{}",
                job.sender, job.head
            );
            let size = head.len() + job.data.len();
            // S= as twistd writes it; W= (the POP3 size) as dovecot does, for listing. The
            // head's lines all end in LF, so its size and the message's add up.
            debug_assert!(head.ends_with('\n'));
            let wire = Pop3Size::of(head.as_bytes()) + data_wire;
            let new = dir.join("new").join(format!("{name},S={size},W={wire}"));
            let create = || {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                write_both(&mut f, head.as_bytes(), &job.data)?;
                Ok(f)
            };
            let mut written: io::Result<File> = create();
            if matches!(&written, Err(e) if e.kind() == io::ErrorKind::NotFound) {
                match make_missing(dir, flush, &mut tried) {
                    Some(Ok(())) => written = create(),
                    Some(Err(why)) => {
                        fail(results, j, why);
                        continue;
                    }
                    None => {}
                }
            }
            match written {
                Ok(file) => copies.push(MessageCopy {
                    job: j,
                    tmp,
                    new,
                    file: Some(file),
                    moved: false,
                }),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    fail(results, j, format!("cannot write {}: {e}", tmp.display()));
                }
            }
        }
    }
    copies
}

/// Writes `head` then `body` in as few writes as the kernel takes (one, for a file), without
/// copying the body to join them.
fn write_both(f: &mut std::fs::File, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    let mut bufs = [std::io::IoSlice::new(head), std::io::IoSlice::new(body)];
    let mut bufs = &mut bufs[..];
    while !bufs.is_empty() {
        match f.write_vectored(bufs) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Flushes every copy of the jobs still whole, each by itself, all of them at once.
fn flush_files(
    copies: &mut [MessageCopy],
    results: &mut [Result<(), String>],
    flush: &Arc<dyn Flush>,
) {
    let mut whose = Vec::new();
    let mut tasks: Vec<Task> = Vec::new();
    for c in copies.iter_mut() {
        // Closed here, or by its task once flushed.
        let Some(file) = c.file.take() else { continue };
        if results[c.job].is_err() {
            continue;
        }
        flush.start(&file);
        let (flush, path) = (flush.clone(), c.tmp.clone());
        tasks.push(Box::new(move || flush.file(&file, &path)));
        whose.push(c);
    }
    for (c, r) in whose.into_iter().zip(run_all(tasks)) {
        if let Err(e) = r {
            fail(
                results,
                c.job,
                format!("cannot sync {}: {e}", c.tmp.display()),
            );
        }
    }
}

/// Flushes each `new/` directory that received a copy of a job still whole, each by itself,
/// all of them at once; a failure fails every job with a copy there.
fn flush_new_dirs(
    copies: &[MessageCopy],
    results: &mut [Result<(), String>],
    flush: &Arc<dyn Flush>,
) {
    let dirs: Vec<&Path> = copies
        .iter()
        .filter(|c| c.moved && results[c.job].is_ok())
        .filter_map(|c| c.new.parent())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let done = flush_dirs(&dirs, flush);
    for (dir, r) in dirs.iter().zip(done) {
        if let Err(e) = r {
            for c in copies
                .iter()
                .filter(|c| c.moved && c.new.parent() == Some(dir))
            {
                fail(
                    results,
                    c.job,
                    format!("cannot sync {}: {e}", dir.display()),
                );
            }
        }
    }
}

/// Removes every copy of a failed job, from `tmp/` or `new/`, and flushes again the `new/`
/// directories it was removed from (as well as the disk lets us: a directory whose flush has
/// just failed may fail again).
fn take_back(copies: &[MessageCopy], results: &mut [Result<(), String>], flush: &Arc<dyn Flush>) {
    let mut dirs = BTreeSet::new();
    for c in copies {
        if results[c.job].is_ok() {
            continue;
        }
        if !c.moved {
            let _ = std::fs::remove_file(&c.tmp);
            continue;
        }
        match std::fs::remove_file(&c.new) {
            Ok(()) => dirs.extend(c.new.parent()),
            Err(e) => add(
                results,
                c.job,
                format!("its copy {} could not be removed: {e}", c.new.display()),
            ),
        }
    }
    let dirs: Vec<&Path> = dirs.into_iter().collect();
    let done = flush_dirs(&dirs, flush);
    for (dir, r) in dirs.iter().zip(done) {
        if let Err(e) = r {
            for c in copies
                .iter()
                .filter(|c| c.moved && c.new.parent() == Some(dir))
            {
                let why = format!("the removal from {} may not be durable: {e}", dir.display());
                add(results, c.job, why);
            }
        }
    }
}

/// Records the first failure of a job; later ones are consequences of it.
fn fail(results: &mut [Result<(), String>], job: usize, why: String) {
    if results[job].is_ok() {
        results[job] = Err(why);
    }
}

/// Adds to the failure of a job what undoing it could not undo.
fn add(results: &mut [Result<(), String>], job: usize, what: String) {
    if let Err(why) = &mut results[job] {
        why.push_str("; and ");
        why.push_str(&what);
    }
}

/// Flushes every directory, each by itself, all of them at once.
fn flush_dirs(dirs: &[&Path], flush: &Arc<dyn Flush>) -> Vec<io::Result<()>> {
    let tasks = dirs.iter().map(|d| {
        let (flush, dir) = (flush.clone(), d.to_path_buf());
        Box::new(move || flush.dir(&dir)) as Task
    });
    run_all(tasks.collect())
}

/// One flush, owning what it needs, so that a helper thread can run it.
type Task = Box<dyn FnOnce() -> io::Result<()> + Send>;

/// Some of a batch's flushes for one helper thread, and where its results go.
struct Share {
    tasks: Vec<(usize, Task)>,
    done: mpsc::Sender<(usize, io::Result<()>)>,
}

/// The helper threads, started on first use and kept: starting threads for every batch
/// would cost more CPU than the flushes' own system calls (about 25 us each here).
fn helpers() -> &'static [mpsc::Sender<Share>] {
    static HELPERS: OnceLock<Vec<mpsc::Sender<Share>>> = OnceLock::new();
    HELPERS.get_or_init(|| (1..SYNC_THREADS).filter_map(|_| helper()).collect())
}

fn helper() -> Option<mpsc::Sender<Share>> {
    let (tx, rx) = mpsc::channel::<Share>();
    std::thread::Builder::new()
        .name("twistrs-fsync".into())
        // A helper makes one system call at a time: a small stack is plenty.
        .stack_size(128 * 1024)
        .spawn(move || {
            for share in rx {
                for (i, task) in share.tasks {
                    let _ = share.done.send((i, task()));
                }
            }
        })
        .ok()?;
    Some(tx)
}

/// Runs every task, a share on this thread and the others on the helpers at once, so that
/// the flushes overlap on the disk (concurrent fsyncs wait for one journal commit, and
/// their cache flushes merge) where one thread would wait for each in turn. Results in the
/// tasks' order.
fn run_all(tasks: Vec<Task>) -> Vec<io::Result<()>> {
    let n = tasks.len();
    let helpers = if n > 1 { helpers() } else { &[] };
    let ways = (helpers.len() + 1).min(n).max(1);
    let mut shares: Vec<Vec<(usize, Task)>> = (0..ways).map(|_| Vec::new()).collect();
    for (i, task) in tasks.into_iter().enumerate() {
        shares[i % ways].push((i, task));
    }
    let mut mine = shares.swap_remove(0);
    let (done, results) = mpsc::channel();
    let mut sent = 0;
    for (tasks, helper) in shares.into_iter().zip(helpers) {
        let count = tasks.len();
        let share = Share {
            tasks,
            done: done.clone(),
        };
        match helper.send(share) {
            Ok(()) => sent += count,
            // That helper is gone: its share is flushed here.
            Err(mpsc::SendError(back)) => mine.extend(back.tasks),
        }
    }
    drop(done);
    let mut out: Vec<Option<io::Result<()>>> = (0..n).map(|_| None).collect();
    for (i, task) in mine {
        out[i] = Some(task());
    }
    for _ in 0..sent {
        // Err: every helper holding a share has stopped; what they did not flush failed.
        let Ok((i, r)) = results.recv() else { break };
        out[i] = Some(r);
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::other("a flush helper stopped"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn maildirs(root: &Path, names: &[&str]) -> Vec<PathBuf> {
        names
            .iter()
            .map(|n| {
                let d = root.join(n);
                crate::config::make_maildir(&d).unwrap();
                d
            })
            .collect()
    }

    fn job(subject: &str, targets: &[&PathBuf]) -> Job {
        Job {
            sender: String::new(),
            head: String::new(),
            data: format!("Subject: {subject}\n\nbody\n").into_bytes(),
            targets: targets
                .iter()
                .map(|d| ((*d).clone(), "x@example.com".into()))
                .collect(),
            memory: Default::default(),
            receipt: Default::default(),
        }
    }

    /// The subjects of the messages in `dir/sub`, sorted.
    fn subjects(dir: &Path, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| {
                let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
                let line = text.lines().find(|l| l.starts_with("Subject: "));
                line.unwrap_or("?")
                    .trim_start_matches("Subject: ")
                    .to_string()
            })
            .collect();
        v.sort();
        v
    }

    /// The real disk, with the flush of one file or directory failing, and every flush
    /// recorded: a file with whether it was there, a directory with what it held.
    #[derive(Default)]
    struct Faulty {
        bad_file_in: Option<PathBuf>,
        bad_dir: Option<PathBuf>,
        files: Mutex<Vec<(PathBuf, bool)>>,
        dirs: Mutex<Vec<(PathBuf, Vec<String>)>>,
    }

    impl Faulty {
        fn run(self, jobs: &[Job]) -> (Vec<Result<(), String>>, Arc<Faulty>) {
            let disk = Arc::new(self);
            let flush: Arc<dyn Flush> = disk.clone();
            (deliver_with(jobs, "h", &flush), disk)
        }
        fn files(&self) -> Vec<(PathBuf, bool)> {
            self.files.lock().unwrap().clone()
        }
        fn dirs(&self) -> Vec<(PathBuf, Vec<String>)> {
            let mut v = self.dirs.lock().unwrap().clone();
            v.sort();
            v
        }
    }

    impl Flush for Faulty {
        fn file(&self, file: &File, path: &Path) -> io::Result<()> {
            let there = path.exists();
            self.files.lock().unwrap().push((path.to_path_buf(), there));
            if self.bad_file_in.as_deref() == path.parent().and_then(Path::parent) {
                return Err(io::Error::other("injected"));
            }
            Disk.file(file, path)
        }

        fn dir(&self, dir: &Path) -> io::Result<()> {
            let held = if dir.ends_with("new") {
                subjects(dir.parent().unwrap(), "new")
            } else {
                Vec::new()
            };
            self.dirs.lock().unwrap().push((dir.to_path_buf(), held));
            if self.bad_dir.as_deref() == Some(dir) {
                return Err(io::Error::other("injected"));
            }
            Disk.dir(dir)
        }
    }

    #[test]
    fn each_file_and_each_new_dir_is_flushed_by_itself() {
        // Issue 8.12: no syncfs of one file system for the whole batch.
        let root = tempfile::tempdir().unwrap();
        let d = maildirs(root.path(), &["a", "b"]);
        let jobs = [
            job("one", &[&d[0], &d[1]]),
            job("two", &[&d[0]]),
            job("three", &[&d[1]]),
        ];
        let (r, disk) = Faulty::default().run(&jobs);
        assert!(r.iter().all(Result::is_ok), "{r:?}");
        let files = disk.files();
        assert_eq!(files.len(), 4, "one flush per copy: {files:?}");
        assert_eq!(files.iter().collect::<BTreeSet<_>>().len(), 4);
        assert!(files.iter().all(|(_, there)| *there), "flushed in tmp/");
        assert_eq!(
            disk.dirs(),
            [
                (d[0].join("new"), vec!["one".into(), "two".into()]),
                (d[1].join("new"), vec!["one".into(), "three".into()]),
            ],
            "each new/ flushed once, holding its copies"
        );
        assert_eq!(subjects(&d[0], "new"), ["one", "two"]);
        assert_eq!(subjects(&d[1], "new"), ["one", "three"]);
        for dir in &d {
            assert!(subjects(dir, "tmp").is_empty(), "nothing left in tmp/");
        }
    }

    #[test]
    fn a_user_without_a_maildir_gets_one_made_and_flushed_at_delivery() {
        // A user added to passwd/ by hand, or -b's postmaster: the Maildir is made, and it
        // and its domain directory flushed before the message in it is acknowledged.
        let root = tempfile::tempdir().unwrap();
        let domain = root.path().join("example.com");
        let d = maildirs(&domain, &["joe"]);
        let hand = domain.join("hand");
        let gone = root.path().join("removed.org/x");
        let jobs = [job("one", &[&d[0], &hand]), job("lost", &[&gone])];
        let (r, disk) = Faulty::default().run(&jobs);
        assert!(r[0].is_ok(), "{r:?}");
        assert!(
            r[1].is_err(),
            "a removed domain directory is not made again"
        );
        assert!(!root.path().join("removed.org").exists());
        assert_eq!(subjects(&hand, "new"), ["one"]);
        assert!(
            hand.join(".Trash/maildirfolder").exists(),
            "as twistd makes it"
        );
        let dirs = disk.dirs();
        for want in [&hand, &domain] {
            assert!(
                dirs.iter().any(|(p, _)| p == want),
                "{want:?} flushed: {dirs:?}"
            );
        }
    }

    /// The Maildir is looked for only when a write into its `tmp/` finds nothing there: one
    /// removed while running is made again (once for all the messages of a batch), and one
    /// that is there without its `tmp/` is left for the operator, its messages failed.
    #[test]
    fn a_maildir_removed_while_running_is_made_again_and_a_broken_one_is_not() {
        let root = tempfile::tempdir().unwrap();
        let domain = root.path().join("example.com");
        let d = maildirs(&domain, &["joe", "ann"]);
        assert!(deliver_batch(&[job("before", &[&d[0]])], "h")[0].is_ok());
        std::fs::remove_dir_all(&d[0]).unwrap();
        std::fs::remove_dir(d[1].join("tmp")).unwrap();
        let jobs = [
            job("one", &[&d[0]]),
            job("two", &[&d[1], &d[0]]),
            job("three", &[&d[0]]),
        ];
        let (r, disk) = Faulty::default().run(&jobs);
        assert!(r[0].is_ok() && r[2].is_ok(), "{r:?}");
        let e = r[1].as_ref().unwrap_err();
        assert!(e.contains("cannot write") && e.contains("/ann/tmp/"), "{e}");
        assert_eq!(subjects(&d[0], "new"), ["one", "three"]);
        assert!(!d[1].join("tmp").exists(), "a broken Maildir is not mended");
        let flushed = |p: &Path| disk.dirs().iter().filter(|(q, _)| q == p).count();
        assert_eq!(
            flushed(&d[0]),
            1,
            "made and flushed once: {:?}",
            disk.dirs()
        );
        assert_eq!(flushed(&domain), 1, "{:?}", disk.dirs());
    }

    #[test]
    fn a_failed_rename_leaves_no_copy_and_spares_the_other_jobs() {
        // Issue 8.13: the first copy of "both" is moved, the second cannot be (b's new/ is
        // a file), so the first is taken back; the other jobs are delivered.
        let root = tempfile::tempdir().unwrap();
        let d = maildirs(root.path(), &["a", "b", "c"]);
        std::fs::remove_dir(d[1].join("new")).unwrap();
        std::fs::write(d[1].join("new"), b"not a directory").unwrap();
        let jobs = [
            job("both", &[&d[0], &d[1]]),
            job("alone", &[&d[0]]),
            job("other", &[&d[2], &d[0]]),
        ];
        let r = deliver_batch(&jobs, "h");
        let e = r[0].as_ref().unwrap_err();
        assert!(e.contains("cannot move into"), "{e}");
        assert!(r[1].is_ok() && r[2].is_ok(), "{r:?}");
        assert_eq!(subjects(&d[0], "new"), ["alone", "other"]);
        assert_eq!(subjects(&d[2], "new"), ["other"]);
        for dir in &d {
            assert!(subjects(dir, "tmp").is_empty(), "nothing left in tmp/");
        }
    }

    #[test]
    fn a_failed_file_flush_moves_no_copy() {
        let root = tempfile::tempdir().unwrap();
        let d = maildirs(root.path(), &["a", "b"]);
        let jobs = [job("both", &[&d[0], &d[1]]), job("alone", &[&d[0]])];
        let (r, disk) = Faulty {
            bad_file_in: Some(d[1].clone()),
            ..Faulty::default()
        }
        .run(&jobs);
        let e = r[0].as_ref().unwrap_err();
        assert!(e.contains("cannot sync") && e.contains("injected"), "{e}");
        assert!(r[1].is_ok(), "{r:?}");
        assert_eq!(subjects(&d[0], "new"), ["alone"]);
        assert!(subjects(&d[1], "new").is_empty());
        assert_eq!(disk.dirs(), [(d[0].join("new"), vec!["alone".into()])]);
        for dir in &d {
            assert!(subjects(dir, "tmp").is_empty(), "nothing left in tmp/");
        }
    }

    #[test]
    fn a_failed_dir_flush_takes_back_every_copy_of_its_messages() {
        // b's new/ cannot be flushed: the messages with a copy there fail and lose their
        // copies everywhere, and a's new/ is flushed again after the removal.
        let root = tempfile::tempdir().unwrap();
        let d = maildirs(root.path(), &["a", "b"]);
        let jobs = [
            job("both", &[&d[0], &d[1]]),
            job("a only", &[&d[0]]),
            job("b only", &[&d[1]]),
        ];
        let (r, disk) = Faulty {
            bad_dir: Some(d[1].join("new")),
            ..Faulty::default()
        }
        .run(&jobs);
        for k in [0, 2] {
            let e = r[k].as_ref().unwrap_err();
            assert!(e.contains("cannot sync") && e.contains("injected"), "{e}");
        }
        assert!(r[1].is_ok(), "{r:?}");
        assert_eq!(subjects(&d[0], "new"), ["a only"]);
        assert!(subjects(&d[1], "new").is_empty());
        assert_eq!(
            disk.dirs(),
            [
                (d[0].join("new"), vec!["a only".into()]),
                (d[0].join("new"), vec!["a only".into(), "both".into()]),
                (d[1].join("new"), vec![]),
                (d[1].join("new"), vec!["b only".into(), "both".into()]),
            ],
            "both new/ flushed after the removal too"
        );
        let e = r[0].as_ref().unwrap_err();
        assert!(
            e.contains("may not be durable"),
            "b's second flush fails too: {e}"
        );
    }

    #[test]
    fn run_all_keeps_the_order_of_its_tasks() {
        for n in [0, 1, 2, 3, 5, 17] {
            let tasks: Vec<Task> = (0..n)
                .map(|i| {
                    Box::new(move || match i % 3 {
                        0 => Err(io::Error::other(i.to_string())),
                        _ => Ok(()),
                    }) as Task
                })
                .collect();
            let got: Vec<String> = run_all(tasks)
                .iter()
                .map(|r| r.as_ref().map_or_else(|e| e.to_string(), |()| "ok".into()))
                .collect();
            let want: Vec<String> = (0..n)
                .map(|i| {
                    if i % 3 == 0 {
                        i.to_string()
                    } else {
                        "ok".into()
                    }
                })
                .collect();
            assert_eq!(got, want);
        }
    }
}
