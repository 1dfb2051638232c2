"""Writes lines to stdout, one write each, as fast as it can (or RATE a
second) for SECONDS, after one HTTP exchange with itself (so that sonde
traces it), then prints how many it wrote on stderr.
Usage: log_flood.py SECONDS [RATE]"""
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
start = time.time()
end = start + float(sys.argv[1])
rate = float(sys.argv[2]) if len(sys.argv) > 2 else 0
n = 0
while time.time() < end:
    out.write(b"flood line %d with some text to make it a realistic length\n" % n)
    n += 1
    if rate and n % 500 == 0:  # paced in steps of 500 lines
        ahead = n / rate - (time.time() - start)
        if ahead > 0:
            time.sleep(ahead)
sys.stderr.write(f"wrote {n}\n")
