"""aiosmtpd SMTP server delivering into a Maildir, for bench/mail.sh.

Usage: python aiosmtpd_maildir.py [--fsync | --nosync] [--port PORT] MAILDIR
           (PORT 0 or none: any free port)

Listens on 127.0.0.1 (no Controller thread: `aiosmtpd.smtp.SMTP` served by
`loop.create_server` on the default asyncio event loop), prints "listening PORT" once
listening, and runs until SIGTERM or SIGINT. Every recipient is accepted; each message
(`envelope.content`, bytes) is written once into MAILDIR:

- default: `mailbox.Maildir(MAILDIR).add(envelope.content)`, the standard library's
  Maildir writer, as in the issue's reference figure. Note that it is not free of fsync:
  it writes a file in tmp/, fsyncs that file (mailbox._sync_close), then link()s it into
  new/ and unlink()s the tmp/ name; it never fsyncs new/, so a crash can still lose an
  acknowledged message (the directory entry);
- --fsync: the file is written into tmp/, fsynced, renamed into new/, and new/ is fsynced,
  before the 250 (what twistrs does, but one message at a time: no group commit, and the
  event loop waits for the disk, as the default variant waits for its writes);
- --nosync: the same lean writer as --fsync without either fsync: no durability at all,
  the cheapest a Python Maildir writer gets.
"""

import argparse
import asyncio
import itertools
import mailbox
import os
import resource
import signal
import socket
import time

from aiosmtpd.smtp import SMTP


class PlainMaildir:
    """mailbox.Maildir(path).add(envelope.content), as in the issue's reference figure
    (fsyncs the file, not the directory)."""

    def __init__(self, path):
        self.box = mailbox.Maildir(path, create=True)

    async def handle_DATA(self, server, session, envelope):
        self.box.add(envelope.content)
        return "250 OK"


class FsyncMaildir:
    """tmp/ file, fsync, rename into new/, fsync new/: durable before the 250.

    With sync=False, the same steps without the two fsyncs."""

    def __init__(self, path, sync=True):
        self.sync = sync
        mailbox.Maildir(path, create=True)  # tmp/, new/, cur/
        self.tmp = os.path.join(path, "tmp")
        self.new = os.path.join(path, "new")
        self.host = socket.gethostname().replace("/", "_").replace(":", "_")
        self.pid = os.getpid()
        self.seq = itertools.count()

    def deliver(self, data):
        now = time.time()
        name = f"{int(now)}.M{int(now % 1 * 1e6):06d}P{self.pid}Q{next(self.seq)}.{self.host}"
        tmp = os.path.join(self.tmp, name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self.sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(self.new, name))
        if not self.sync:
            return
        dfd = os.open(self.new, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    async def handle_DATA(self, server, session, envelope):
        data = envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        # LF line ends on disk, as mailbox.Maildir and twistrs store them.
        self.deliver(data.replace(b"\r\n", b"\n"))
        return "250 OK"


async def serve(port, handler):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    # hostname given, so aiosmtpd does not call socket.getfqdn() (a DNS lookup) per session.
    # backlog=50 like Twisted's listenTCP and twistrs (asyncio's default is 100).
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="mx.test"), "127.0.0.1", port, backlog=50
    )
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fsync", action="store_true", help="fsync each message and new/ before 250")
    mode.add_argument("--nosync", action="store_true", help="tmp/ then rename, no fsync at all")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("maildir")
    a = p.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.fsync or a.nosync:
        handler = FsyncMaildir(a.maildir, sync=a.fsync)
    else:
        handler = PlainMaildir(a.maildir)
    name = "fsync" if a.fsync else "nosync" if a.nosync else "mailbox.Maildir.add"
    print(f"mode {name} maildir {a.maildir}", flush=True)
    asyncio.run(serve(a.port, handler))


if __name__ == "__main__":
    main()
