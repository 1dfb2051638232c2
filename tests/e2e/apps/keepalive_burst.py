"""Holds COUNT keep-alive HTTP/1.1 connections to a server, each having
made one request, then closes them all when told. The server (the same
script with "serve") answers every request on an asyncio loop; several
may serve one port (SO_REUSEPORT), since a process holds at most its fd
limit.
Usage: keepalive_burst.py serve PORT
       keepalive_burst.py hold PORT COUNT SOURCE
A holder prints "held COUNT" once every response is in, then waits for a
line on stdin, closes everything and prints "closed"."""
import asyncio
import resource
import socket
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"


async def serve(port):
    async def one(reader, writer):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            writer.write(RESPONSE)
            await writer.drain()

    async def guarded(reader, writer):
        try:
            await one(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", port, backlog=4096,
                                        reuse_port=True)
    await server.serve_forever()


def hold(port, count, source):
    conns = []
    for i in range(count):
        c = socket.socket()
        c.bind((f"127.0.{source + i // 20000}.1", 0))
        c.connect(("127.0.0.1", port))
        c.sendall(f"GET /burst/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        conns.append(c)
    for c in conns:
        got = b""
        while not got.endswith(b"ok\n"):
            got += c.recv(4096)
    print(f"held {count}", flush=True)
    sys.stdin.readline()
    for c in conns:
        c.close()
    print("closed", flush=True)


soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
if sys.argv[1] == "serve":
    asyncio.run(serve(int(sys.argv[2])))
else:
    hold(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
