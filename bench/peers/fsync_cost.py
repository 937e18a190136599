"""What one durable Maildir delivery costs on this disk, for bench/mail.sh.

Usage: python fsync_cost.py [--cleanup] DIR [ITERATIONS]   (default 200)

In a fresh Maildir under DIR, ITERATIONS times, one after the other:
write a 1 KiB file into tmp/, fsync it, rename it into new/, fsync new/ -- what the
--fsync aiosmtpd peer does per message, and twistrs per batch. Prints one line:

    n=200 create_p50_ms=... file_fsync_p50_ms=... file_fsync_p99_ms=... dir_fsync_p50_ms=...
    dir_fsync_p99_ms=... delivery_p50_ms=... serial_msgs_per_sec=...

(create: the open(O_CREAT) alone; delivery: open + write + fsync + rename + directory fsync; serial_msgs_per_sec: the
rate one writer doing nothing else could reach, ITERATIONS / total time).

The files are left in DIR (the caller's temporary folder, which it removes at its end):
on ext4 without a journal, as on the VM this was written on, the kernel avoids reusing an
inode for 60 s after its file was deleted (300 s while the inode table block is not yet
written back), and every file created in that block group meanwhile scans past the
recently freed inodes (recently_deleted() in ext4's find_inode_bit), which would slow down
the deliveries measured right after this. --cleanup removes them anyway. A create_p50_ms
far above the usual ~0.02 ms is the sign of that scan.
"""

import argparse
import os
import shutil
import tempfile
import time


def pct(v, p):
    v = sorted(v)
    return v[max(0, min(len(v) - 1, int(round(p / 100 * len(v) + 0.5)) - 1))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("iterations", nargs="?", type=int, default=200)
    ap.add_argument("--cleanup", action="store_true", help="remove the files at the end")
    a = ap.parse_args()
    n = max(1, min(a.iterations, 100000))
    root = tempfile.mkdtemp(prefix="fsync-cost-", dir=a.dir)
    try:
        tmp = os.path.join(root, "tmp")
        new = os.path.join(root, "new")
        os.mkdir(tmp)
        os.mkdir(new)
        data = os.urandom(1024)
        cr, ff, df, dl = [], [], [], []
        start = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            p = os.path.join(tmp, f"m{i}")
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            tc = time.perf_counter()
            os.write(fd, data)
            t1 = time.perf_counter()
            os.fsync(fd)
            t2 = time.perf_counter()
            os.close(fd)
            os.rename(p, os.path.join(new, f"m{i}"))
            dfd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
            t3 = time.perf_counter()
            os.fsync(dfd)
            t4 = time.perf_counter()
            os.close(dfd)
            cr.append(tc - t0)
            ff.append(t2 - t1)
            df.append(t4 - t3)
            dl.append(time.perf_counter() - t0)
        total = time.perf_counter() - start
    finally:
        if a.cleanup:
            shutil.rmtree(root, ignore_errors=True)
    ms = 1e3
    print(
        f"n={n} create_p50_ms={pct(cr, 50) * ms:.3f} file_fsync_p50_ms={pct(ff, 50) * ms:.3f} file_fsync_p99_ms={pct(ff, 99) * ms:.3f} "
        f"dir_fsync_p50_ms={pct(df, 50) * ms:.3f} dir_fsync_p99_ms={pct(df, 99) * ms:.3f} "
        f"delivery_p50_ms={pct(dl, 50) * ms:.3f} serial_msgs_per_sec={n / total:.0f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
