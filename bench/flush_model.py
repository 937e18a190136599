#!/usr/bin/env python3
"""How many messages per second this disk can make durable, with no SMTP and no CPU contest.

A model of the mail plugin's group commit (plugins/mail/src/maildir/deliver.rs), used to tell
whether `--workers 2` loses to one process because of the disk or because of something else:
each writer process loops over batches of B messages of 1,100 bytes: create in tmp/, fsync
every file on T threads at once, rename into new/, fsync new/. Writers run side by side for
SECS seconds; the sum of their rates is printed. Unlike the server it does not start each
file's writeback (sync_file_range) before the fsyncs, so it is a lower bound of what the
disk can do. Its files stay in DIR (a folder per writer): remove DIR afterwards.

    python3 bench/flush_model.py DIR [PROCS,BATCH,THREADS ...]

DIR must be on the disk under test and should be a folder where nothing was deleted in the
last few minutes (see bench/mail.sh on ext4's recently_deleted()). Default cases: one writer
with batches of 10 (what one process sees with 20 sessions), two writers with batches of 5
(two workers), and the same again with a thread per file.
"""
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

SECS = float(os.environ.get("SECS", "3"))


def writer(base, batch, threads, secs, out):
    d = os.path.join(base, str(os.getpid()))
    os.makedirs(d + "/tmp")
    os.makedirs(d + "/new")
    pool = ThreadPoolExecutor(threads)
    data = b"x" * 1100
    k = n = 0
    end = time.time() + secs
    while time.time() < end:
        fds = []
        for _ in range(batch):
            k += 1
            p = f"{d}/tmp/{k}"
            fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
            os.write(fd, data)
            fds.append((fd, p))
        shares = [fds[i::threads] for i in range(threads)]
        list(pool.map(lambda s: [os.fsync(fd) for fd, _ in s], [s for s in shares if s]))
        for fd, p in fds:
            os.close(fd)
            os.rename(p, f"{d}/new/{os.path.basename(p)}")
        dfd = os.open(d + "/new", os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
        n += batch
    out.put(n / secs)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    base = sys.argv[1]
    cases = [tuple(map(int, a.split(","))) for a in sys.argv[2:]] or [
        (1, 10, 4), (2, 5, 4), (1, 10, 10), (2, 5, 5)]
    for procs, batch, threads in cases:
        q = mp.Queue()
        ps = [mp.Process(target=writer, args=(base, batch, threads, SECS, q)) for _ in range(procs)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        rate = sum(q.get() for _ in ps)
        print(f"writers={procs} batch={batch} threads={threads}: {rate:.0f} msg/s durable")


if __name__ == "__main__":
    main()
