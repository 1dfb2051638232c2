"""One trace per request through an nginx reverse proxy under
concurrency: each of nginx's upstream calls is the child of the
downstream request it was made for, read from nginx's own connection and
request objects (bpf/nginx.bpf.h), and the backend's request is the child
of that call. The request id in every path is the ground truth; a call
may only lack a parent (counted), never have a wrong one."""
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import APPS, NGINX_PROXY_CONF, PYTHON, Agent, curl, free_port, wait_port

class Hop:
    """A proxy (started by the subclass, on self.port) in front of a
    thread-per-request Python backend."""

    def __init__(self):
        self.backend_port = free_port()
        self.backend = subprocess.Popen([PYTHON, str(APPS / "threaded_backend.py"),
                                         str(self.backend_port)])
        wait_port(self.backend_port)
        self.port = free_port()
        self.proxy = self.start_proxy()
        wait_port(self.port)

    def start_proxy(self):
        raise NotImplementedError

    def stop(self):
        for p in (self.proxy, self.backend):
            p.terminate()
            p.wait(timeout=10)


class Proxy(Hop):
    """nginx with `workers` worker processes, keep-alive upstream."""

    def __init__(self, workdir, workers):
        self.workdir, self.workers = workdir, workers
        super().__init__()

    def start_proxy(self):
        d = Path(self.workdir) / f"proxy-{self.port}"
        d.mkdir()
        conf = d / "nginx.conf"
        conf.write_text(NGINX_PROXY_CONF.format(dir=d, port=self.port, backend=self.backend_port,
                                                workers=self.workers, keepalive=32))
        return subprocess.Popen(["nginx", "-c", str(conf), "-e", str(d / "error.log")])


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def proxy(request, workdir, agent):
    p = Proxy(workdir, request.param)
    yield p
    p.stop()


class Socat(Hop):
    """socat forwarding bytes, a process per connection."""

    def start_proxy(self):
        return subprocess.Popen(["socat", f"TCP-LISTEN:{self.port},bind=127.0.0.1,fork,reuseaddr",
                                 f"TCP:127.0.0.1:{self.backend_port}"])


HAPROXY_CONF = """
global
    nbthread 2
defaults
    mode {mode}
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:{port}
    default_backend back
backend back
    server backend 127.0.0.1:{backend}
"""


class Haproxy(Hop):
    """haproxy, two threads, in tcp mode (bytes forwarded) or http mode
    (requests parsed and passed on over reused connections)."""

    def __init__(self, workdir, mode):
        self.workdir, self.mode = workdir, mode
        super().__init__()

    def start_proxy(self):
        conf = Path(self.workdir) / f"haproxy-{self.port}.cfg"
        conf.write_text(HAPROXY_CONF.format(mode=self.mode, port=self.port,
                                            backend=self.backend_port))
        return subprocess.Popen(["haproxy", "-db", "-f", str(conf)])


@pytest.fixture(params=["tcp", "http"])
def haproxy(request, workdir, agent):
    h = Haproxy(workdir, request.param)
    yield h
    h.stop()


@pytest.fixture
def socat(agent):
    s = Socat()
    yield s
    s.stop()


def send(port, ids, concurrency):
    def one(rid):
        assert curl(f"http://127.0.0.1:{port}/r/{rid}") == "200"

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, ids))


def hop_of(span):
    """Which end of which hop a span is: curl's call and the proxy's request
    ("front"), the proxy's call and the backend's request ("back"). Told by
    program: the backend's spans carry the port curl called (its Host)."""
    exe = span["resource"]["attributes"].get("process.executable.name", "")
    if span["kind"] == "SpanKind.CLIENT":
        return "front" if exe == "curl" else "back"
    return "back" if exe.startswith("python") else "front"


def hops_of(agent, ids, timeout=20, want=lambda spans: len(spans) == 4):
    """Per request id, its spans by (hop, kind), once each has what it
    should (all four) or after timeout."""
    deadline = time.time() + timeout
    while True:
        found = {rid: {} for rid in ids}
        for s in agent.spans():
            a = s["attributes"]
            m = re.search(r"/r/([0-9a-f]{12})", a.get("url.path", a.get("url.full", "")))
            if m and m.group(1) in found:
                found[m.group(1)][(hop_of(s), s["kind"])] = s
        if all(want(spans) for spans in found.values()) or time.time() > deadline:
            return found
        time.sleep(0.1)


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
    right, orphans = check(hops_of(agent, ids))
    assert right + orphans == n
    if concurrency == 1:
        assert right == n
    else:
        assert right >= 0.99 * n, f"{orphans} of {n} upstream calls without a parent"
    assert agent.stats()["nginx_requests_unread"] == unread_before


def test_first_upstream_call_after_local_answers_has_its_parent(agent, proxy):
    """A worker's response heads skip the reads of their task until it has
    written a request upstream: answers nginx makes itself first, then
    proxied requests, each call under the request it was made for."""
    for _ in range(20):
        assert curl(f"http://127.0.0.1:{proxy.port}/local") == "200"
    ids = [uuid.uuid4().hex[:12] for _ in range(20)]
    send(proxy.port, ids, 1)
    assert check(hops_of(agent, ids)) == (20, 0)


def test_upstream_connections_open_before_sonde_started(workdir, proxy):
    """nginx's keep-alive upstream connections outlive any one request: a
    proxy that was busy before sonde started reuses connections whose
    registration sonde never saw being made. The kernel keeps it."""
    send(proxy.port, [uuid.uuid4().hex[:12] for _ in range(16)], 16)
    late = Agent(workdir, name=f"late-{proxy.port}")
    try:
        ids = [uuid.uuid4().hex[:12] for _ in range(16)]
        send(proxy.port, ids, 16)
        right, orphans = check(hops_of(late, ids))
    finally:
        assert late.stop() == 0
    assert (right, orphans) == (16, 0)
    assert late.stats()["nginx_requests_unread"] == 0


@pytest.mark.parametrize("concurrency", [1, 16, 64])
def test_socat_hop_keeps_one_trace(agent, socat, concurrency):
    """A byte-forwarding hop: socat's child process for each connection
    forwards the request; its call is under its request, exactly."""
    n = 20 if concurrency == 1 else concurrency
    ids = [uuid.uuid4().hex[:12] for _ in range(n)]
    send(socat.port, ids, concurrency)
    right, orphans = check(hops_of(agent, ids))
    assert (right, orphans) == (n, 0)


def children_reaped(pid, timeout=10):
    """Waits until the process has no children left, reaped by it."""
    deadline = time.time() + timeout
    while Path(f"/proc/{pid}/task/{pid}/children").read_text().strip():
        assert time.time() < deadline, f"{pid}'s children still there"
        time.sleep(0.05)


@pytest.mark.parametrize("include, socat_first", [("cgroup", True), ("exe", False)],
                         ids=["cgroup-socat-first", "exe-sonde-first"])
def test_socat_children_gone_before_sonde_looks_are_traced_as_socat(workdir, include,
                                                                      socat_first):
    """A forking server's children, each gone and reaped before the agent
    reads its /proc entry (an agent behind its events: stopped here),
    are decided and named by the program they ran, their parent's, and
    the cgroup they ran in: traced under the tests' cgroup rule or an
    executable rule, as socat, whether socat ran its program before sonde
    started or after."""
    env = {"SONDE_INCLUDE": "exe:" + os.path.realpath(shutil.which("socat"))} \
        if include == "exe" else {}
    socat = Socat() if socat_first else None
    agent = Agent(workdir, name=f"gone-{include}-{socat_first}", extra_env=env)
    ids = [uuid.uuid4().hex[:12] for _ in range(8)]
    try:
        socat = socat or Socat()
        os.kill(agent.proc.pid, signal.SIGSTOP)
        try:
            send(socat.port, ids, 4)
            children_reaped(socat.proxy.pid)
        finally:
            os.kill(agent.proc.pid, signal.SIGCONT)
        found = hops_of(agent, ids, want=lambda spans: ("front", "SpanKind.SERVER") in spans
                        and ("back", "SpanKind.CLIENT") in spans)
    finally:
        assert agent.stop() == 0
        if socat:
            socat.stop()
    for rid, spans in found.items():
        server, call = spans.get(("front", "SpanKind.SERVER")), spans.get(("back", "SpanKind.CLIENT"))
        assert server and call, f"{rid}: socat's spans missing: {sorted(spans)}"
        for span in (server, call):
            assert span["resource"]["attributes"]["process.executable.name"] == "socat"
            assert span["resource"]["attributes"]["service.name"] == "socat"
        assert call["parent_id"] == server["context"]["span_id"], rid


@pytest.mark.parametrize("concurrency", [1, 16, 64])
def test_haproxy_calls_are_children_of_the_request_they_forward(agent, haproxy, concurrency):
    """haproxy serves many connections per thread: its calls are told
    apart by what they forward (method, target, Host, User-Agent), which
    is unique here, each request having its own id."""
    n = 20 if concurrency == 1 else concurrency
    ids = [uuid.uuid4().hex[:12] for _ in range(n)]
    send(haproxy.port, ids, concurrency)
    right, orphans = check(hops_of(agent, ids))
    assert (right, orphans) == (n, 0)
