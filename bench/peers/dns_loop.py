"""Asks a DNS server question after question until a deadline, for bench/soak.sh.

Usage: python dns_loop.py --port PORT --secs S

Over UDP, one question in flight: names that exist (A, AAAA, MX, TXT), names that do not
(NXDOMAIN), a name outside the zone (REFUSED), and one TCP question in every 50. Built
by hand with struct (no dnspython needed). Prints one line at the end:

    questions=N answered=M timeouts=T errors=E

Only ever talks to 127.0.0.1. Exits 1 if any answer was malformed or unanswered over TCP.
"""

import argparse
import random
import socket
import struct
import sys
import time

QUESTIONS = [
    ("www.example.com", 1),
    ("www.example.com", 28),
    ("example.com", 15),
    ("example.com", 16),
    ("nothing-here.example.com", 1),
    ("elsewhere.test", 1),
]


def query(qid, name, qtype):
    head = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return head + qname + struct.pack(">HH", qtype, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--secs", type=float, required=True)
    a = ap.parse_args()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    end = time.monotonic() + a.secs
    n = answered = timeouts = errors = 0
    while time.monotonic() < end:
        n += 1
        qid = random.getrandbits(16)
        name, qtype = QUESTIONS[n % len(QUESTIONS)]
        q = query(qid, name, qtype)
        try:
            if n % 50 == 0:
                with socket.create_connection(("127.0.0.1", a.port), timeout=10) as t:
                    t.sendall(struct.pack(">H", len(q)) + q)
                    size = b""
                    while len(size) < 2:
                        chunk = t.recv(2 - len(size))
                        if not chunk:
                            raise OSError("TCP answer cut short")
                        size += chunk
                    want = struct.unpack(">H", size)[0]
                    r = b""
                    while len(r) < want:
                        chunk = t.recv(want - len(r))
                        if not chunk:
                            raise OSError("TCP answer cut short")
                        r += chunk
            else:
                u.sendto(q, ("127.0.0.1", a.port))
                r, _ = u.recvfrom(65535)
        except socket.timeout:
            timeouts += 1
            continue
        except OSError as e:
            errors += 1
            print(f"dns_loop: {e}", file=sys.stderr)
            continue
        if len(r) < 12 or struct.unpack(">H", r[:2])[0] != qid:
            errors += 1
            continue
        answered += 1
    print(f"questions={n} answered={answered} timeouts={timeouts} errors={errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
