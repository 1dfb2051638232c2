"""One trace per request through Node.js services under concurrency: a
Node service's calls (http over a keep-alive agent, fetch, after awaiting
its request's body and its earlier calls) are children of the request
they were made for, told apart by the callback of the main thread's libuv
loop each was written in (bpf/evloop.bpf.h), and its log lines carry that
request's ids. The request id in every path is the ground truth; a call
may lack a parent (counted), never have a wrong one."""
import os
import re
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import APPS, Agent, Postgres, curl, free_port, wait_port


class NodeChain:
    """A front Node service calling a backend Node service (and, given
    its URL, a PostgreSQL database)."""

    def __init__(self, postgres_url=None, env=None):
        self.backend_port, self.port = free_port(), free_port()
        self.backend = subprocess.Popen(["node", str(APPS / "node_chain.js"), "backend",
                                         str(self.backend_port)])
        self.front = subprocess.Popen(["node", str(APPS / "node_chain.js"), "front",
                                       str(self.port), str(self.backend_port)]
                                      + ([postgres_url] if postgres_url else []),
                                      env=dict(os.environ, **(env or {})))
        wait_port(self.backend_port)
        wait_port(self.port)
        # A process's first fetch() waits for V8 to compile undici's
        # parser, and is written from the callback that compilation ends
        # in, not its request's: it has no parent. Made here, once.
        assert curl("-d", "x", f"http://127.0.0.1:{self.port}/chain/warmup") == "200"

    def stop(self):
        for p in (self.front, self.backend):
            p.terminate()
            p.wait(timeout=10)


@pytest.fixture
def chain(agent):
    c = NodeChain()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def postgres(workdir):
    pg = Postgres(workdir)
    yield pg
    pg.stop()


@pytest.fixture
def db_chain(agent, postgres):
    c = NodeChain(postgres.url("postgres"))
    yield c
    c.stop()


# Backend calls per request; the db routes make a query first.
ROUTES = {"call": 1, "chain": 2, "later": 1, "queued": 1, "file": 1, "db": 1, "dbqueued": 1}


def send(port, route, ids, concurrency):
    def one(rid):
        body = ["-d", "x" * 100] if route == "chain" else []
        assert curl(*body, f"http://127.0.0.1:{port}/{route}/{rid}") == "200"

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, ids))


def rid_of(span):
    a = span["attributes"]
    if "db.query.text" in a:
        m = re.search(r'"r_([0-9a-f]{12})"', a["db.query.text"])
        return m and m.group(1)
    m = re.search(r"/(?:call|chain|later|queued|file|db|dbqueued|item)/([0-9a-f]{12})", a.get("url.path", a.get("url.full", "")))
    return m and m.group(1)


def collect(agent, chain, route, ids, timeout=20):
    """Per request id: the front's server span, its calls and the
    backend's requests, once all are there."""
    want = ROUTES[route]
    deadline = time.time() + timeout
    while True:
        found = {rid: {"server": None, "calls": [], "backend": [], "queries": []} for rid in ids}
        for s in agent.spans():
            rid = rid_of(s)
            if rid not in found:
                continue
            port = s["attributes"].get("server.port")
            if "db.query.text" in s["attributes"]:
                found[rid]["queries"].append(s)
            elif s["kind"] == "SpanKind.SERVER" and port == chain.port:
                found[rid]["server"] = s
            elif s["kind"] == "SpanKind.CLIENT" and port == chain.backend_port:
                found[rid]["calls"].append(s)
            elif s["kind"] == "SpanKind.SERVER" and port == chain.backend_port:
                found[rid]["backend"].append(s)
        queries = 1 if route.startswith("db") else 0
        if all(f["server"] and len(f["calls"]) == want and len(f["backend"]) == want
               and len(f["queries"]) == queries
               for f in found.values()) or time.time() > deadline:
            return found
        time.sleep(0.1)


def check(found):
    """(right, without parent: their paths) over every call; a wrong parent
    fails."""
    right, orphans = 0, []
    for rid, f in found.items():
        server = f["server"]
        assert server, f"{rid}: no server span"
        for call in f["calls"] + f["queries"]:
            if call["parent_id"] == server["context"]["span_id"]:
                assert call["context"]["trace_id"] == server["context"]["trace_id"]
                right += 1
            else:
                assert not call["parent_id"], f"{rid}: WRONG parent {call}"
                orphans.append(call["attributes"].get("url.full", call["name"]))
        calls = {c["context"]["span_id"] for c in f["calls"]}
        for b in f["backend"]:
            assert b["parent_id"] in calls, f"{rid}: backend request not under its call"
    return right, orphans


def check_traces_hold_one_request(found):
    traces = {}
    for rid, f in found.items():
        for s in [f["server"], *f["calls"], *f["backend"], *f["queries"]]:
            traces.setdefault(s["context"]["trace_id"], set()).add(rid)
    merged = [t for t, rids in traces.items() if len(rids) > 1]
    assert not merged, f"traces holding several requests: {merged}"


@pytest.mark.parametrize("route", ["call", "chain"])
@pytest.mark.parametrize("concurrency", [1, 16, 64])
def test_node_calls_are_children_of_their_request(agent, chain, route, concurrency):
    n = 20 if concurrency == 1 else concurrency
    ids = [uuid.uuid4().hex[:12] for _ in range(n)]
    send(chain.port, route, ids, concurrency)
    found = collect(agent, chain, route, ids)
    right, orphans = check(found)
    check_traces_hold_one_request(found)
    calls = n * ROUTES[route]
    print(f"{route} x{concurrency}: {right} of {calls} calls under their request")
    assert right + len(orphans) == calls
    if concurrency == 1:
        assert right == calls, f"without a parent: {orphans}"
    else:
        assert right >= 0.99 * calls, f"{len(orphans)} of {calls} without a parent: {orphans}"


@pytest.mark.parametrize("route", ["later", "queued", "file"])
def test_calls_of_no_known_request_have_no_parent(agent, chain, route):
    """A call made in a timer's callback, after a file read (whose end
    comes through libuv's thread pool wake-up), or written for a request
    that waited for a socket in the callback of another request's
    response, cannot be told apart by callback: it has no parent, never a
    wrong one."""
    ids = [uuid.uuid4().hex[:12] for _ in range(32)]
    send(chain.port, route, ids, 16)
    found = collect(agent, chain, route, ids)
    right, orphans = check(found)
    check_traces_hold_one_request(found)
    print(f"{route} x16: {right} of 32 calls under their request")
    assert right + len(orphans) == 32


def test_a_node_service_running_before_sonde(workdir, chain):
    """Connections a Node service holds when sonde starts (its keep-alive
    agent's) are followed from then on too."""
    send(chain.port, "call", [uuid.uuid4().hex[:12] for _ in range(16)], 16)
    late = Agent(workdir, name=f"late-node-{chain.port}")
    try:
        ids = [uuid.uuid4().hex[:12] for _ in range(16)]
        send(chain.port, "call", ids, 16)
        found = collect(late, chain, "call", ids)
        right, orphans = check(found)
    finally:
        assert late.stop() == 0
    assert (right, orphans) == (16, [])
    assert late.stats()["libuv_processes"] >= 2


@pytest.mark.parametrize("concurrency", [1, 16, 64])
def test_queries_and_the_calls_after_them_are_children_of_their_request(agent, postgres,
                                                                        db_chain, concurrency):
    """node-postgres over a pool of 64 connections to a real PostgreSQL:
    each query, and the call made once it has answered (written in the
    callback of the query's response), is under its request. A query
    that opens a pool connection is written in the callback of that
    connection's handshake, which sonde cannot tell from a query handed
    over to a waiting caller: it and its call have no parent."""
    n = 20 if concurrency == 1 else concurrency
    ids = [uuid.uuid4().hex[:12] for _ in range(n)]
    send(db_chain.port, "db", ids, concurrency)
    found = collect(agent, db_chain, "db", ids)
    right, orphans = check(found)
    check_traces_hold_one_request(found)
    opened = len(postgres_connections(db_chain, postgres))
    print(f"db x{concurrency}: {right} of {2 * n} queries and calls under their request, "
          f"{opened} connections opened")
    assert right + len(orphans) == 2 * n
    assert right >= 2 * (n - opened), f"without a parent: {orphans}"


def postgres_connections(chain, postgres):
    """The front's connections to PostgreSQL (its pool keeps them open)."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", "dport", f"= :{postgres.port}"],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f"pid={chain.front.pid}," in line]


def test_queries_waiting_for_a_connection_have_no_wrong_parent(agent, db_chain):
    """A pool of 2: a query that waited is written in the callback of
    another request's query's response, when its connection comes free:
    it has no parent, never a wrong one."""
    ids = [uuid.uuid4().hex[:12] for _ in range(32)]
    send(db_chain.port, "dbqueued", ids, 16)
    found = collect(agent, db_chain, "dbqueued", ids)
    right, orphans = check(found)
    check_traces_hold_one_request(found)
    print(f"dbqueued x16: {right} of 64 queries and calls under their request")
    assert right + len(orphans) == 64


def test_every_kind_of_call_at_once_never_gets_a_wrong_parent(agent, db_chain):
    """All the routes at once, 32 requests in flight: calls after timers,
    queued sockets and queries, handshakes and plain calls interleave in
    the loop's callbacks. Each may lack a parent; none has a wrong one."""
    routes = [r for r in ROUTES for _ in range(24)]
    ids = {route: [] for route in ROUTES}
    jobs = []
    for route in routes:
        rid = uuid.uuid4().hex[:12]
        ids[route].append(rid)
        jobs.append((route, rid))

    def one(job):
        route, rid = job
        body = ["-d", "x" * 100] if route == "chain" else []
        assert curl(*body, f"http://127.0.0.1:{db_chain.port}/{route}/{rid}") == "200"

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(one, jobs))
    total = right = 0
    for route, rids in ids.items():
        found = collect(agent, db_chain, route, rids)
        r, orphans = check(found)
        check_traces_hold_one_request(found)
        right += r
        total += r + len(orphans)
    print(f"mixed x32: {right} of {total} calls and queries under their request")


def test_with_io_uring_file_reads_give_no_wrong_parent(agent):
    """With libuv's io_uring on (UV_USE_IO_URING=1), a file read ends in
    the callback of the ring's poll event, which makes no call the kernel
    sees before its JavaScript runs: the callbacks before it in that poll
    get no task. File reads and plain calls at once: no wrong parent."""
    c = NodeChain(env={"UV_USE_IO_URING": "1"})
    try:
        jobs = [(route, uuid.uuid4().hex[:12]) for route in ("file", "call") for _ in range(48)]

        def one(job):
            assert curl(f"http://127.0.0.1:{c.port}/{job[0]}/{job[1]}") == "200"

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(one, jobs))
        total = right = 0
        for route in ("file", "call"):
            rids = [rid for r, rid in jobs if r == route]
            found = collect(agent, c, route, rids)
            r, orphans = check(found)
            check_traces_hold_one_request(found)
            right, total = right + r, total + r + len(orphans)
    finally:
        c.stop()
    print(f"io_uring x32: {right} of {total} calls under their request")
    assert total == 96


def test_a_cluster_s_workers_link_the_connections_they_are_handed(agent):
    """node:cluster on Linux: the primary accepts each connection and
    hands it to a worker, which never calls accept. A connection sonde
    first sees reading a request is a server's: its first request is
    linked too. curl opens a connection per request."""
    c = NodeChain(env={"NODE_CHAIN_WORKERS": "2"})
    try:
        for concurrency in (1, 16):
            ids = [uuid.uuid4().hex[:12] for _ in range(20 if concurrency == 1 else 16)]
            send(c.port, "call", ids, concurrency)
            found = collect(agent, c, "call", ids)
            right, orphans = check(found)
            check_traces_hold_one_request(found)
            print(f"cluster x{concurrency}: {right} of {len(ids)} calls under their request")
            assert right == len(ids), f"without a parent: {orphans}"
    finally:
        c.stop()
