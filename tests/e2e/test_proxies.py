"""One trace per request through an nginx reverse proxy under
concurrency: each of nginx's upstream calls is the child of the
downstream request it was made for, read from nginx's own connection and
request objects (bpf/nginx.bpf.h), and the backend's request is the child
of that call. The request id in every path is the ground truth; a call
may only lack a parent (counted), never have a wrong one."""
import re
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import APPS, PYTHON, Agent, curl, free_port, wait_port

PROXY_CONF = """
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


class Proxy:
    """nginx with `workers` worker processes in front of a thread-per-request
    Python backend."""

    def __init__(self, workdir, workers):
        self.backend_port = free_port()
        self.backend = subprocess.Popen([PYTHON, str(APPS / "threaded_backend.py"),
                                         str(self.backend_port)])
        wait_port(self.backend_port)
        self.port = free_port()
        d = Path(workdir) / f"proxy-{self.port}"
        d.mkdir()
        conf = d / "nginx.conf"
        conf.write_text(PROXY_CONF.format(dir=d, port=self.port, backend=self.backend_port,
                                          workers=workers))
        self.nginx = subprocess.Popen(["nginx", "-c", str(conf), "-e", str(d / "error.log")])
        wait_port(self.port)

    def stop(self):
        for p in (self.nginx, self.backend):
            p.terminate()
            p.wait(timeout=10)


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def proxy(request, workdir, agent):
    p = Proxy(workdir, request.param)
    yield p
    p.stop()


def send(port, ids, concurrency):
    def one(rid):
        assert curl(f"http://127.0.0.1:{port}/r/{rid}") == "200"

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, ids))


def hops_of(agent, proxy, ids, timeout=20):
    """Per request id: nginx's server span, its upstream call, the backend's
    server span."""
    want = 4 * len(ids)  # curl's and nginx's ends of each of the two hops
    deadline = time.time() + timeout
    while True:
        mine = [s for s in agent.spans()
                if s["attributes"].get("server.port") in (proxy.port, proxy.backend_port)]
        if len(mine) >= want or time.time() > deadline:
            break
        time.sleep(0.1)
    found = {rid: {} for rid in ids}
    for s in mine:
        a = s["attributes"]
        m = re.search(r"/r/([0-9a-f]{12})", a.get("url.path", a.get("url.full", "")))
        if not m or m.group(1) not in found:
            continue
        hop = "front" if a["server.port"] == proxy.port else "back"
        found[m.group(1)][(hop, s["kind"])] = s
    return found


def check(found):
    """(right, without parent): the upstream call under nginx's request,
    which is under curl's, and the backend's request under the call."""
    right = orphans = 0
    for rid, spans in found.items():
        server = spans[("front", "SpanKind.SERVER")]
        assert server["parent_id"] == spans[("front", "SpanKind.CLIENT")]["context"]["span_id"]
        call = spans[("back", "SpanKind.CLIENT")]
        backend = spans[("back", "SpanKind.SERVER")]
        assert backend["parent_id"] == call["context"]["span_id"], rid
        if call["parent_id"] == server["context"]["span_id"]:
            assert call["context"]["trace_id"] == server["context"]["trace_id"], rid
            right += 1
        else:
            assert not call["parent_id"], f"{rid}: WRONG parent {call}"
            orphans += 1
    return right, orphans


@pytest.mark.parametrize("concurrency", [1, 16, 64])
def test_nginx_upstream_calls_are_children_of_their_request(agent, proxy, concurrency):
    n = 20 if concurrency == 1 else concurrency
    ids = [uuid.uuid4().hex[:12] for _ in range(n)]
    unread_before = agent.stats()["nginx_requests_unread"]
    send(proxy.port, ids, concurrency)
    right, orphans = check(hops_of(agent, proxy, ids))
    assert right + orphans == n
    if concurrency == 1:
        assert right == n
    else:
        assert right >= 0.99 * n, f"{orphans} of {n} upstream calls without a parent"
    assert agent.stats()["nginx_requests_unread"] == unread_before


def test_upstream_connections_open_before_sonde_started(workdir, proxy):
    """nginx's keep-alive upstream connections outlive any one request: a
    proxy that was busy before sonde started reuses connections whose
    registration sonde never saw being made. The kernel keeps it."""
    send(proxy.port, [uuid.uuid4().hex[:12] for _ in range(16)], 16)
    late = Agent(workdir, name=f"late-{proxy.port}")
    try:
        ids = [uuid.uuid4().hex[:12] for _ in range(16)]
        send(proxy.port, ids, 16)
        right, orphans = check(hops_of(late, proxy, ids))
    finally:
        assert late.stop() == 0
    assert (right, orphans) == (16, 0)
    assert late.stats()["nginx_requests_unread"] == 0
