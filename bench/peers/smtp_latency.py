"""Time from the end of DATA to its 250, per message, over concurrent SMTP sessions.

Usage: python smtp_latency.py --port PORT [--sessions 10] [--msgs 200] [--size 1024]
           [--rcpt joe@example.com] [--timeout 120]

For bench/mail.sh. SESSIONS threads each open one SMTP session (smtplib, HELO) to
127.0.0.1:PORT and send messages one after the other until MSGS have been sent in all:
MAIL, RCPT, DATA, the message (smtp-source's kind: a few headers and SIZE bytes of
payload in lines of X), and the final ".". Each message is timed from just before the
line "." is sent to the end of the server's answer to it, which must be 250. Prints one
line:

    n=200 ok=200 errors=0 p50_ms=... p99_ms=... max_ms=... total_s=...

(errors: sessions that failed; total_s: from the first connection to the last answer;
percentiles of the ok messages, nearest rank). Exits 1 on any error (a refused message,
a reply other than 250, a connection failure); the first few errors go to stderr. The
run is bounded by --timeout seconds (also each socket operation's timeout).
"""

import argparse
import smtplib
import socket
import sys
import threading
import time


def message(n, size, rcpt):
    head = (
        f"From: <a@b.test>\r\nTo: <{rcpt}>\r\nSubject: latency {n}\r\n"
        f"Message-Id: <{n}.{time.time()}@bench.test>\r\n\r\n"
    )
    line = "X" * 78 + "\r\n"
    body = line * (size // len(line)) + "X" * (size % len(line)) + "\r\n"
    return (head + body).encode()


def session(args, next_msg, lat, errors, deadline):
    try:
        with smtplib.SMTP("127.0.0.1", args.port, timeout=args.timeout) as s:
            # The "." goes in a write of its own after the message: without NODELAY, Nagle
            # would hold it until the message is acknowledged (a delayed ACK, 40 ms).
            s.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.helo("bench.test")
            while time.monotonic() < deadline:
                n = next_msg()
                if n is None:
                    return
                code, msg = s.mail("a@b.test")
                if code != 250:
                    raise RuntimeError(f"MAIL: {code} {msg!r}")
                code, msg = s.rcpt(args.rcpt)
                if code != 250:
                    raise RuntimeError(f"RCPT: {code} {msg!r}")
                code, msg = s.docmd("DATA")
                if code != 354:
                    raise RuntimeError(f"DATA: {code} {msg!r}")
                s.send(message(n, args.size, args.rcpt))  # no line starts with "."
                t0 = time.perf_counter()
                s.send(b".\r\n")
                code, msg = s.getreply()
                t1 = time.perf_counter()
                if code != 250:
                    raise RuntimeError(f"end of DATA: {code} {msg!r}")
                lat.append(t1 - t0)
            raise RuntimeError("timed out")
    except Exception as e:  # noqa: BLE001 - every failure is counted and reported
        errors.append(repr(e))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sessions", type=int, default=10)
    p.add_argument("--msgs", type=int, default=200)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--rcpt", default="joe@example.com")
    p.add_argument("--timeout", type=float, default=120)
    a = p.parse_args()

    lock = threading.Lock()
    counter = iter(range(a.msgs))

    def next_msg():
        with lock:
            return next(counter, None)

    lat, errors = [], []
    start = time.perf_counter()
    deadline = time.monotonic() + a.timeout
    threads = [
        threading.Thread(target=session, args=(a, next_msg, lat, errors, deadline), daemon=True)
        for _ in range(a.sessions)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 1)
    total = time.perf_counter() - start
    if any(t.is_alive() for t in threads):
        errors.append("a session did not finish in time")
    lat.sort()

    def pct(q):
        if not lat:
            return "n/a"
        return f"{lat[min(len(lat) - 1, max(0, int(q * len(lat) + 0.999999) - 1))] * 1000:.1f}"

    for e in errors[:5]:
        print(f"error: {e}", file=sys.stderr)
    print(
        f"n={a.msgs} ok={len(lat)} errors={len(errors)}"
        f" p50_ms={pct(0.5)} p99_ms={pct(0.99)} max_ms={pct(1.0)}"
        f" total_s={total:.3f}"
    )
    sys.exit(1 if errors or len(lat) != a.msgs else 0)


if __name__ == "__main__":
    main()
