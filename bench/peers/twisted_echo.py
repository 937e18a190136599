"""Classic Twisted echo server for bench/echo.sh: Protocol.dataReceived -> transport.write.

Usage: python twisted_echo.py [PORT]   (0 or none: any free port)
Listens on 127.0.0.1, prints "listening PORT" once listening, runs the default (epoll)
reactor until SIGTERM or SIGINT.
"""

import resource
import sys

from twisted.internet import protocol, reactor


class Echo(protocol.Protocol):
    def connectionMade(self):
        # twistrs and asyncio set TCP_NODELAY on accepted sockets; do the same so
        # Nagle's algorithm is not what the comparison measures.
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data):
        self.transport.write(data)


class EchoFactory(protocol.Factory):
    protocol = Echo


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    # Like twistrs: 10,000 idle connections need more than the usual 1024 descriptors.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    listening = reactor.listenTCP(port, EchoFactory(), interface="127.0.0.1")
    print(f"listening {listening.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
