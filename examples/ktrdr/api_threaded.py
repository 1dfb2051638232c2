"""ktrdr-api served thread per request (the standard library's
ThreadingHTTPServer, sync httpx): the same routes as api.py, for the
servers that give each request a thread of its own. No tracing code."""
import itertools
import json
import re
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx

from api_settings import IB_HOST_URL, SERVICE, WORKERS, log

_lock = threading.Lock()
_next_worker = {kind: itertools.cycle(urls) for kind, urls in WORKERS.items()}
_client = httpx.Client(timeout=30.0)
_operations = {}


def _answers_health(url, rid):
    """A worker's health check, one after the other: the request's own
    thread makes every call."""
    try:
        return _client.get(f"{url}/health", params={"request_id": rid}).status_code == 200
    except httpx.HTTPError:
        return False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _rid(self, query):
        return parse_qs(query).get("request_id", [uuid.uuid4().hex])[0]

    def do_GET(self):
        url = urlsplit(self.path)
        rid = self._rid(url.query)
        if url.path == "/health":
            return self._reply(200, {"status": "ok", "service": SERVICE})
        match = re.fullmatch(r"/api/v1/data/([^/]+)/([^/]+)", url.path)
        if match:
            log.info("request_id=%s data show %s %s", rid, *match.groups())
            return self._reply(200, {"symbol": match[1], "timeframe": match[2], "request_id": rid})
        match = re.fullmatch(r"/api/v1/operations/([^/]+)", url.path)
        if match and match[1] in _operations:
            log.info("request_id=%s operation %s", rid, match[1])
            return self._reply(200, _operations[match[1]])
        return self._reply(404, {"detail": "Not Found"})

    def do_POST(self):
        url = urlsplit(self.path)
        rid, body = self._rid(url.query), self._body()
        match = re.fullmatch(r"/api/v1/operations/([^/]+)/status", url.path)
        if match:
            with _lock:
                if match[1] not in _operations:
                    return self._reply(404, {"detail": "no such operation"})
                _operations[match[1]].update(body)
            log.info("operation=%s %s %s%%", match[1], body.get("status"), body.get("progress"))
            return self._reply(200, {"ok": True})
        if url.path == "/api/v1/data/load":
            log.info("request_id=%s data load %s %s", rid, body.get("symbol"), body.get("timeframe"))
            reply = _client.post(f"{IB_HOST_URL}/data/historical", params={"request_id": rid}, json=body)
            return self._reply(reply.status_code, {"loaded": reply.json(), "request_id": rid})
        kinds = {"/api/v1/training/start": ("training", "/training/start"),
                 "/api/v1/backtests/start": ("backtest", "/backtests/start")}
        if url.path not in kinds:
            return self._reply(404, {"detail": "Not Found"})
        kind, path = kinds[url.path]
        healthy = {w for w in WORKERS[kind] if _answers_health(w, rid)}
        with _lock:
            worker = next((w for w in itertools.islice(_next_worker[kind], len(WORKERS[kind]))
                           if w in healthy), None)
        if worker is None:
            return self._reply(503, {"detail": f"no healthy {kind} worker"})
        log.info("request_id=%s dispatch %s to %s", rid, kind, worker)
        # Known before the job starts, as in api.py.
        op_id = uuid.uuid4().hex
        with _lock:
            _operations[op_id] = {"operation_id": op_id}
        reply = _client.post(f"{worker}{path}", params={"request_id": rid},
                             json={**body, "operation_id": op_id})
        with _lock:
            if reply.status_code >= 400:
                del _operations[op_id]
                return self._reply(502, {"detail": f"{kind} worker {worker}: {reply.status_code}"})
            _operations[op_id] = operation = {**reply.json(), **_operations[op_id]}
        return self._reply(200, operation)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
