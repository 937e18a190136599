"""asyncio echo server for bench/echo.sh: asyncio.Protocol.data_received -> transport.write.

Usage: python asyncio_echo.py [PORT]   (0 or none: any free port)
Listens on 127.0.0.1, prints "listening PORT" once listening, runs the default event
loop (selector, epoll) until SIGTERM or SIGINT.
"""

import asyncio
import resource
import signal
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        # asyncio already sets TCP_NODELAY on TCP transports.
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def serve(port):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    # backlog=50 like Twisted's listenTCP and twistrs (asyncio's default is 100).
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=50)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    # Like twistrs: 10,000 idle connections need more than the usual 1024 descriptors.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(serve(port))


if __name__ == "__main__":
    main()
