"""Empties a POP3 mailbox over and over until a deadline, for bench/soak.sh.

Usage: python pop3_drain.py --port PORT --user USER --password PASS --secs S

Each session (one every 0.2 s at most) logs in with the standard library's poplib,
RETRs every message, DELEs it and QUITs, so the Maildir the soak fills stays small and
the POP3 side of the server is exercised the whole time. Prints one line at the end:

    sessions=N retrieved=M errors=E

Only ever connects to 127.0.0.1. Exits 1 if any session failed.
"""

import argparse
import poplib
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--secs", type=float, required=True)
    a = ap.parse_args()
    end = time.monotonic() + a.secs
    sessions = retrieved = errors = 0
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            p = poplib.POP3("127.0.0.1", a.port, timeout=30)
            p.user(a.user)
            p.pass_(a.password)
            count, _ = p.stat()
            for i in range(1, count + 1):
                p.retr(i)
                p.dele(i)
                retrieved += 1
            p.quit()
            sessions += 1
        except (OSError, poplib.error_proto) as e:
            errors += 1
            print(f"pop3_drain: {e}", file=sys.stderr)
        time.sleep(max(0.0, 0.2 - (time.monotonic() - started)))
    print(f"sessions={sessions} retrieved={retrieved} errors={errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
