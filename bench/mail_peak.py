#!/usr/bin/env python3
"""bench/mail_peak.py: the peak RSS (VmHWM) of a twistrs mail server while concurrent SMTP
sessions send it large messages, and the RSS it keeps a second after the last one (VmRSS),
for each binary given, side by side, REPS times each.

Run by hand, not in CI (see bench/README.md, "Peak memory with large messages"):

    python3 bench/mail_peak.py [--size-mib 32] [--sessions 2] [--rounds 2] [--reps 5] BIN...

Each run starts BIN in the foreground on a port of its own on 127.0.0.1, with a Maildir in a
temporary directory, sends SESSIONS x ROUNDS messages of SIZE MiB with smtplib (one thread
per session), checks every one is in new/, reads VmHWM, waits a second and reads VmRSS, and
stops the server by PID. It prints each run and the medians per binary.
"""
import argparse, os, shutil, smtplib, socket, statistics, subprocess, tempfile, threading, time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run(binary, size_mib, sessions, rounds):
    d = tempfile.mkdtemp()
    port = free_port()
    p = subprocess.Popen([binary, "-n", "--pidfile=", "-l", d + "/log", "mail", "-H", "mx.test",
                          "-d", "example.com=" + d + "/example.com", "-u", "joe=pw",
                          "-s", "tcp:%d:interface=127.0.0.1" % port, "--no-pop3",
                          "--max-message-size", str(max(64, 2 * size_mib) << 20),
                          "--max-data-memory", str(1 << 30)])
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        line = ("x" * 78 + "\r\n").encode()
        msg = b"Subject: big\r\n\r\n" + line * (size_mib * 1024 * 1024 // len(line))
        errors = []

        def one():
            try:
                c = smtplib.SMTP("127.0.0.1", port, timeout=120)
                for _ in range(rounds):
                    c.sendmail("a@b.test", ["joe@example.com"], msg)
                c.quit()
            except Exception as e:  # counted and reported: a failed run is no figure
                errors.append(repr(e))

        t0 = time.time()
        threads = [threading.Thread(target=one) for _ in range(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        elapsed = time.time() - t0
        hwm = status_kib(p.pid, "VmHWM")
        time.sleep(1)  # the delivery threads' last frees
        kept = status_kib(p.pid, "VmRSS")
        delivered = len(os.listdir(d + "/example.com/joe/new"))
        if errors or delivered != sessions * rounds:
            raise SystemExit("%s: %d of %d delivered, errors %s" % (binary, delivered,
                                                                    sessions * rounds, errors))
        return hwm, kept, elapsed
    finally:
        p.terminate()
        p.wait(30)
        shutil.rmtree(d, ignore_errors=True)


def status_kib(pid, field):
    status = open("/proc/%d/status" % pid).read()
    return int([l.split()[1] for l in status.splitlines() if l.startswith(field)][0])


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--size-mib", type=int, default=32)
    a.add_argument("--sessions", type=int, default=2)
    a.add_argument("--rounds", type=int, default=2)
    a.add_argument("--reps", type=int, default=5)
    a.add_argument("binaries", nargs="+")
    o = a.parse_args()
    peaks = {b: [] for b in o.binaries}
    kepts = {b: [] for b in o.binaries}
    for i in range(o.reps):
        for b in o.binaries:  # interleaved, so a slow moment hits every binary alike
            hwm, kept, el = run(b, o.size_mib, o.sessions, o.rounds)
            peaks[b].append(hwm)
            kepts[b].append(kept)
            print("%s: %d x %d MiB in %.2f s, VmHWM %d KiB, VmRSS after %d KiB"
                  % (b, o.sessions * o.rounds, o.size_mib, el, hwm, kept))
    base = statistics.median(peaks[o.binaries[0]])
    kbase = statistics.median(kepts[o.binaries[0]])
    for b in o.binaries:
        m = statistics.median(peaks[b])
        k = statistics.median(kepts[b])
        print("median %s: peak %d KiB (%.2fx the first), kept %d KiB (%.2fx the first)"
              % (b, m, m / base, k, k / kbase))


if __name__ == "__main__":
    main()
