"""A thread-per-request HTTP server that logs (no tracing code): for each
request, one line on stdout and one through logging on stderr, both
naming its request id; /json answers after a JSON line and a logfmt line;
/fail logs an exception with its traceback. A background thread writes
a line outside any request every 100 ms (`tick`). Usage:
log_server.py PORT"""
import json
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
log = logging.getLogger("logsrv")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        rid = parse_qs(url.query).get("request_id", [""])[0]
        print(f"request_id={rid} handling {url.path}", flush=True)
        if url.path == "/json":
            print(json.dumps({"level": "warning", "message": f"request_id={rid} json",
                              "user": "ann", "attempt": 3, "ok": True}), flush=True)
            print(f'level=error msg="request_id={rid} logfmt" code=42', flush=True)
        elif url.path == "/fail":
            try:
                raise ValueError(f"request_id={rid} broken")
            except ValueError:
                log.exception("request_id=%s failed", rid)
        elif url.path == "/secret":
            log.warning("request_id=%s token=abc123secret for user", rid)
        else:
            log.info("request_id=%s done", rid)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, fmt, *args):
        pass


def tick():
    n = 0
    while True:
        print(f"tick {n}", flush=True)
        n += 1
        time.sleep(0.1)


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
threading.Thread(target=tick, daemon=True).start()
server.serve_forever()
