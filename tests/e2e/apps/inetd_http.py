"""An inetd-style HTTP/1.1 server: its connection is its stdin and its
stdout (systemd-socket-activate --inetd --accept, inetd, xinetd). It
reads requests from fd 0 and answers each on fd 1 until the client
closes."""
import os

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def serve():
    pending = b""
    while True:
        while b"\r\n\r\n" not in pending:
            got = os.read(0, 4096)
            if not got:
                return
            pending += got
        _, pending = pending.split(b"\r\n\r\n", 1)
        os.write(1, OK)


serve()
