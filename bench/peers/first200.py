"""Time from process start to the first 200, for bench/web.sh.

Usage: python first200.py --port PORT --path /1k.bin --expect FILE
           [--server-cpu N] [--client-cpu N] [--timeout S] -- COMMAND...

Starts COMMAND (the server, which must listen on 127.0.0.1:PORT), then polls it with
GET PATH (a fresh connection each try, 0.5 ms apart) until one answers 200 with exactly
the bytes of FILE. Prints one line:

    first200_ms=12.3 tries=17 rss_kib=3650

(wall time from just before the fork to the end of the response body; RSS of the server
and its children right after that response), then stops the server: SIGTERM, SIGKILL
after 10 s, and SIGKILL to any child it leaves behind (nginx's worker). Exits 1 if no
200 came within --timeout seconds (default 20) or the body was wrong, and 2 if the
server exited before answering. Only ever connects to 127.0.0.1.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time


def get(port, path):
    """One GET over a fresh connection: (status, body) or None if it could not connect."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=0.2)
    except OSError:
        return None
    try:
        s.settimeout(5)
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                return (0, b"")
            buf += chunk
            if len(buf) > 65536:
                return (0, b"")
        head, body = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length is None:
            # No length: read to EOF (bounded by the socket timeout and 16 MiB).
            while len(body) < 16 << 20:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
        else:
            while len(body) < length:
                chunk = s.recv(length - len(body))
                if not chunk:
                    break
                body += chunk
        return (status, body)
    except (OSError, ValueError, IndexError):
        # Reset or garbage while the server is coming up: count it as not ready yet.
        return (0, b"")
    finally:
        s.close()


def tree_rss_kib(pid):
    total = 0
    for p in [pid] + children(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def stop(proc):
    kids = children(proc.pid)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            print(f"pid {proc.pid} ignored SIGTERM for 10 s; sending SIGKILL", file=sys.stderr)
            proc.kill()
            proc.wait()
    for k in kids:
        try:
            os.kill(k, signal.SIGKILL)  # only the children of the server this script started
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--expect", required=True, help="file whose bytes the body must equal")
    ap.add_argument("--server-cpu", type=int, default=None)
    ap.add_argument("--client-cpu", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--log", default=os.devnull, help="where the server's output goes")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no server command")
    with open(a.expect, "rb") as f:
        expect = f.read()
    if a.client_cpu is not None:
        os.sched_setaffinity(0, {a.client_cpu})
    pre = None
    if a.server_cpu is not None:
        cpu = a.server_cpu
        pre = lambda: os.sched_setaffinity(0, {cpu})  # noqa: E731
    # SIGTERM to this script still stops the server (finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    log = open(a.log, "ab")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pre)
    try:
        tries = 0
        deadline = t0 + a.timeout
        while time.perf_counter() < deadline:
            tries += 1
            r = get(a.port, a.path)
            if r is not None and r[0] == 200:
                ms = (time.perf_counter() - t0) * 1000
                rss = tree_rss_kib(proc.pid)
                if r[1] != expect:
                    print(f"first200: 200 but the body is wrong ({len(r[1])} bytes, expected {len(expect)})")
                    return 1
                print(f"first200_ms={ms:.1f} tries={tries} rss_kib={rss}")
                return 0
            if proc.poll() is not None:
                print(f"first200: the server exited with {proc.returncode} before answering 200")
                return 2
            time.sleep(0.0005)
        print(f"first200: no 200 within {a.timeout} s ({tries} tries)")
        return 1
    finally:
        stop(proc)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
