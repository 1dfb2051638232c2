"""A thread-per-request server for job spans, with no tracing code:
GET /crc?size=N computes a CRC-32 of N bytes with zlib (libz's crc32, a
native entry point), then calls /down; GET /spawn starts a thread running
_report, which calls /down, and answers at once; GET /down answers."""
import http.server
import sys
import threading
import urllib.request
import zlib

PORT = int(sys.argv[1])


def _report(rid):
    urllib.request.urlopen(f"http://127.0.0.1:{PORT}/down?request_id={rid}&from=job").read()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        path, _, query = self.path.partition("?")
        args = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        rid = args.get("request_id", "")
        if path == "/crc":
            zlib.crc32(b"x" * int(args["size"]))
            urllib.request.urlopen(f"http://127.0.0.1:{PORT}/down?request_id={rid}").read()
        elif path == "/spawn":
            threading.Thread(target=_report, args=(rid,)).start()
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
