"""Job spans end to end, beyond the ktrdr workers' (test_ktrdr.py): a
native entry point (libz's crc32, named by file and symbol, its third
argument an attribute) is a span under the request whose thread called
it, holding what that thread does until it returns and nothing after; a
thread a thread-per-request handler starts to run a Python entry point is
a span under that request, the parent of the thread's calls. Request ids
in the paths are the ground truth."""
import subprocess
import time
import uuid

import pytest

from conftest import ROOT, Agent, curl, free_port, wait_port

APP = ROOT / "tests" / "e2e" / "apps" / "native_jobs.py"
LIBZ = "/lib/x86_64-linux-gnu/libz.so.1"


NATIVE = f"native:{LIBZ}:crc32:3=payload.size"
# What the agent says, and stops, on a kernel without uprobe_multi links
# (before Linux 6.6: Debian 12's 6.1); tests/kernel checks that it does.
NO_UPROBE_MULTI = "native entry points need uprobe_multi links"


def jobs_agent(workdir):
    """The agent with both entry points, or, where the kernel refuses
    native ones, with the Python one alone and the reason why."""
    env = {"SONDE_KEEP_QUERY": "1", "SONDE_ENTRY_POINTS": f"{NATIVE},python:_report"}
    try:
        return Agent(workdir, name="sonde-jobs", extra_env=env), None
    except RuntimeError as err:
        if NO_UPROBE_MULTI not in str(err):
            raise
    env["SONDE_ENTRY_POINTS"] = "python:_report"
    return Agent(workdir, name="sonde-jobs-python", extra_env=env), NO_UPROBE_MULTI


@pytest.fixture(scope="module")
def jobs_app(workdir):
    agent, no_natives = jobs_agent(workdir)
    port = free_port()
    app = subprocess.Popen(["/usr/bin/python3", str(APP), str(port)])
    wait_port(port)
    yield agent, port, no_natives
    app.kill()
    app.wait()
    assert agent.stop() == 0, agent.err_path.read_text()


def spans_of(agent, rid, count, timeout=15):
    deadline = time.time() + timeout
    while True:
        spans = [s for s in agent.spans() if rid in s["attributes"].get("url.query", "")
                 or s["kind"] == "SpanKind.INTERNAL"]
        mine = [s for s in spans if rid in s["attributes"].get("url.query", "")]
        if len(mine) >= count or time.time() > deadline:
            return spans
        time.sleep(0.2)


def one(spans, kind, path, rid):
    found = [s for s in spans if s["kind"] == f"SpanKind.{kind}"
             and s["attributes"].get("url.path") == path
             and rid in s["attributes"].get("url.query", "")]
    assert len(found) == 1, (kind, path, rid, found)
    return found[0]


def child_of(child, parent):
    return (child["parent_id"] == parent["context"]["span_id"]
            and child["context"]["trace_id"] == parent["context"]["trace_id"])


def test_a_native_call_is_a_span_under_the_request_that_made_it(jobs_app):
    agent, port, no_natives = jobs_app
    if no_natives:
        pytest.skip(f"this kernel: {no_natives}")
    rid = f"crc-{uuid.uuid4().hex[:10]}"
    curl(f"http://127.0.0.1:{port}/crc?size=4242&request_id={rid}")
    spans = spans_of(agent, rid, 4)
    request = one(spans, "SERVER", "/crc", rid)
    crc = [s for s in spans if s["name"] == "crc32" and child_of(s, request)]
    assert len(crc) == 1, spans
    assert crc[0]["attributes"]["payload.size"] == 4242
    assert crc[0]["attributes"]["code.function.name"] == "crc32"
    # The call after crc32 returned is the request's, not crc32's.
    down = one(spans, "CLIENT", "/down", rid)
    assert child_of(down, request)
    assert crc[0]["end_time"] <= down["start_time"]


def test_a_thread_a_handler_starts_is_a_job_under_its_request(jobs_app):
    agent, port, _ = jobs_app
    rid = f"spawn-{uuid.uuid4().hex[:10]}"
    curl(f"http://127.0.0.1:{port}/spawn?request_id={rid}")
    spans = spans_of(agent, rid, 4)
    deadline = time.time() + 10
    while not [s for s in spans if s["name"] == "_report"] and time.time() < deadline:
        time.sleep(0.2)
        spans = spans_of(agent, rid, 4)
    request = one(spans, "SERVER", "/spawn", rid)
    jobs = [s for s in spans if s["name"] == "_report" and child_of(s, request)]
    assert len(jobs) == 1, spans
    assert jobs[0]["attributes"]["thread.id"] > 0
    call = one(spans, "CLIENT", "/down", rid)
    assert child_of(call, jobs[0])
    assert child_of(one(spans, "SERVER", "/down", rid), call)
