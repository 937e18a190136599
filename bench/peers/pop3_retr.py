"""Times RETR over one POP3 session, for bench/mail.sh.

Usage: python pop3_retr.py --port PORT --user USER --password PASS --expect N
           [--maildir DIR] [--timeout S]

Connects to 127.0.0.1:PORT with the standard library's poplib, logs in (USER/PASS),
checks with STAT that the mailbox holds exactly N messages, then sends RETR 1 .. RETR N,
one at a time, timing each from the command to the end of its multi-line answer
(poplib reads it line by line and undoes the dot-stuffing), and QUITs without deleting.
With --maildir (the user's Maildir: new/ and cur/), each retrieved message must be, byte
for byte once CRLFs are turned back into LFs, one of the files there, and each file
must be retrieved once. Prints one line:

    retr=200 retr_per_sec=... p50_ms=... p99_ms=... max_ms=... total_s=... login_ms=... errors=0

(retr_per_sec = N / the time of the N RETRs back to back). Exits 1 on any error (which
is also described on stderr). Only ever connects to 127.0.0.1.
"""

import argparse
import os
import poplib
import sys
import time


def percentile(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    # Nearest rank.
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--maildir")
    ap.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args()

    errors = []
    files = {}
    if a.maildir:
        for sub in ("new", "cur"):
            d = os.path.join(a.maildir, sub)
            for name in os.listdir(d):
                with open(os.path.join(d, name), "rb") as f:
                    files.setdefault(f.read(), []).append(name)

    t0 = time.perf_counter()
    try:
        pop = poplib.POP3("127.0.0.1", a.port, timeout=a.timeout)
        pop.user(a.user)
        pop.pass_(a.password)
    except (poplib.error_proto, OSError) as e:
        print(f"pop3_retr: login: {e}", file=sys.stderr)
        print("retr=0 retr_per_sec=n/a p50_ms=n/a p99_ms=n/a max_ms=n/a total_s=n/a login_ms=n/a errors=1")
        sys.exit(1)
    login_ms = (time.perf_counter() - t0) * 1e3
    count, size = pop.stat()
    if count != a.expect:
        errors.append(f"STAT says {count} messages ({size} octets), expected {a.expect}")

    times = []
    seen = set()
    start = time.perf_counter()
    for i in range(1, min(count, a.expect) + 1):
        t = time.perf_counter()
        try:
            resp, lines, octets = pop.retr(i)
        except (poplib.error_proto, OSError) as e:
            errors.append(f"RETR {i}: {e}")
            break
        times.append(time.perf_counter() - t)
        if a.maildir:
            body = b"".join(line + b"\n" for line in lines)
            names = files.get(body)
            if not names:
                errors.append(f"RETR {i}: {len(body)} bytes that match no file of the Maildir")
            elif body in seen and len(names) == 1:
                errors.append(f"RETR {i}: the same message as an earlier RETR")
            seen.add(body)
    total = time.perf_counter() - start
    try:
        pop.quit()
    except (poplib.error_proto, OSError) as e:
        errors.append(f"QUIT: {e}")

    times.sort()
    n = len(times)
    rate = n / total if total > 0 else float("nan")
    for e in errors[:20]:
        print(f"pop3_retr: {e}", file=sys.stderr)
    print(
        f"retr={n} retr_per_sec={rate:.0f} p50_ms={percentile(times, 50) * 1e3:.3f} "
        f"p99_ms={percentile(times, 99) * 1e3:.3f} max_ms={(times[-1] if times else float('nan')) * 1e3:.3f} "
        f"total_s={total:.4f} login_ms={login_ms:.3f} errors={len(errors)}",
        flush=True,
    )
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
