"""Client calls made by asyncio tasks that a request handler spawns: a
gather's, an awaited task's, nested gathers', asyncio.wait's and
wait_for's, a TaskGroup's are children of the request, exactly, under
concurrency, as is a blocking call made in a plain generator the handler
iterates, and one made in a worker thread the handler (a `def` handler,
or its child tasks) awaits; where the spawning request cannot be known (a task first run
before anything awaits it) the call starts its own trace, never under a
wrong parent. The request id in every path is the ground truth."""
import re
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Nginx, Uvicorn, curl

# route -> client calls each request makes
SHAPES = {"gather": 3, "awaited": 1, "nested": 4, "wait": 2, "wait_for": 1, "taskgroup": 2,
          "generator": 1, "sync": 1, "threads": 2, "detached": 1}
EXACT = set(SHAPES) - {"detached"}


@pytest.fixture
def fanout(workdir, agent):
    backend = Nginx(workdir)
    app = Uvicorn("e2e-fanout", "fanout:app",
                  {"FANOUT_BACKEND": f"http://127.0.0.1:{backend.port}"})
    yield app, backend
    app.stop()
    backend.stop()


def spans_of(agent, app_port, backend_port, calls, timeout=20):
    """Each request's server span and its client calls, by request id."""
    want = sum(2 + 2 * SHAPES[shape] for shape, _ in calls)  # each end of each call
    deadline = time.time() + timeout
    while True:
        mine = [s for s in agent.spans()
                if s["attributes"].get("server.port") in (app_port, backend_port)]
        if len(mine) >= want or time.time() > deadline:
            break
        time.sleep(0.1)
    found = {}
    for s in mine:
        m = re.match(r"/(?:\w+|p)/([0-9a-f]{12})", s["attributes"].get("url.path", ""))
        if not m:
            continue
        entry = found.setdefault(m.group(1), {"server": None, "calls": []})
        if s["kind"] == "SpanKind.SERVER" and s["attributes"]["server.port"] == app_port:
            entry["server"] = s
        elif s["kind"] == "SpanKind.CLIENT" and s["attributes"]["server.port"] == backend_port:
            entry["calls"].append(s)
    return found


def check(found, calls):
    right = roots = 0
    for shape, rid in calls:
        entry = found[rid]
        server = entry["server"]
        assert server is not None, rid
        assert len(entry["calls"]) == SHAPES[shape], (rid, entry["calls"])
        for call in entry["calls"]:
            if call["parent_id"] == server["context"]["span_id"]:
                assert call["context"]["trace_id"] == server["context"]["trace_id"]
                right += 1
            else:
                assert not call["parent_id"], f"{shape} {rid}: WRONG parent {call}"
                roots += 1
                assert shape not in EXACT, f"{shape} {rid}: a child task's call has no parent"
    return right, roots


@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent-16"])
def test_child_tasks_calls_are_children_of_their_request(agent, fanout, concurrent):
    app, backend = fanout
    shapes = list(SHAPES)
    calls = [(shapes[i % len(shapes)], uuid.uuid4().hex[:12]) for i in range(16 if concurrent else len(SHAPES))]

    def call(c):
        return curl(f"http://127.0.0.1:{app.port}/{c[0]}/{c[1]}")

    if concurrent:
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(call, calls))
    else:
        codes = [call(c) for c in calls]
    assert codes == ["200"] * len(calls)
    found = spans_of(agent, app.port, backend.port, calls)
    right, roots = check(found, calls)
    exact = sum(SHAPES[s] for s, _ in calls if s in EXACT)
    assert right >= exact
    print(f"{right} calls under their request, {roots} roots")


def test_calls_are_decided_while_a_long_request_is_open(agent, fanout):
    """A long poll open in the service: the calls of the requests served
    meanwhile are exported under their own requests while it is still
    open, not held until it answers (nor, past 30 s, made roots). A
    detached task's call, whose task answers no request, still waits for
    the older unanswered one: it is left out here."""
    app, backend = fanout
    long_poll = subprocess.Popen(["curl", "-s", "-o", "/dev/null",
                                  f"http://127.0.0.1:{app.port}/long/{uuid.uuid4().hex[:12]}"
                                  "?seconds=60"])
    try:
        time.sleep(0.5)
        shapes = sorted(EXACT)
        calls = [(shapes[i % len(shapes)], uuid.uuid4().hex[:12]) for i in range(16)]
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(
                lambda c: curl(f"http://127.0.0.1:{app.port}/{c[0]}/{c[1]}"), calls))
        assert codes == ["200"] * len(calls)
        found = spans_of(agent, app.port, backend.port, calls, timeout=10)
        assert long_poll.poll() is None, "the long poll ended before the calls' spans came out"
    finally:
        long_poll.kill()
        long_poll.wait()
    right, _ = check(found, calls)
    assert right == sum(SHAPES[s] for s, _ in calls)
