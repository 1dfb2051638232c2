"""A thread-per-request HTTP/1.1 backend (the standard library's
ThreadingHTTPServer, keep-alive): answers every GET with its path after
BACKEND_DELAY seconds, so that requests overlap in a proxy in front.
Usage: threaded_backend.py PORT [ADDRESS, default 127.0.0.1]"""
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DELAY = float(os.environ.get("BACKEND_DELAY", "0.05"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        time.sleep(DELAY)
        body = self.path.encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """A proxy stopped with connections open resets them: not an error
        of the backend's."""
        if not isinstance(sys.exc_info()[1], ConnectionResetError):
            super().handle_error(request, client_address)


Server((sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1", int(sys.argv[1])),
       Handler).serve_forever()
