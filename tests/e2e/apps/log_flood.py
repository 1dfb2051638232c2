"""Writes lines to stdout as fast as it can for SECONDS, after one HTTP
exchange with itself (so that sonde traces it), then prints how many it
wrote on stderr. Usage: log_flood.py SECONDS"""
import http.client
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(204)
        self.end_headers()

    def log_message(self, fmt, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.handle_request, daemon=True).start()
conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
conn.request("GET", "/")
conn.getresponse().read()
time.sleep(0.2)

out = open(1, "wb", buffering=0, closefd=False)  # one write per line
end = time.time() + float(sys.argv[1])
n = 0
while time.time() < end:
    out.write(b"flood line %d with some text to make it a realistic length\n" % n)
    n += 1
sys.stderr.write(f"wrote {n}\n")
