"""Command spans end to end: the ktrdr CLI, named in SONDE_COMMAND_SPANS,
is the root of the trace it starts: its INTERNAL span from exec to exit
(exit code, arguments), the parent of its client span, down to the
worker; a TRACEPARENT in its environment puts it in that trace, even for
a command gone within a millisecond; a failing command is an error."""
import os
import shutil
import subprocess
import time
import uuid

import pytest

from conftest import Agent, Receiver
from test_ktrdr import KTRDR, Ktrdr, one, request_id_of


@pytest.fixture(scope="module")
def cli(workdir):
    rx = Receiver(workdir, http_port=0)
    agent = Agent(workdir, name="sonde-commands", extra_env={
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{rx.http_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100", "SONDE_KEEP_QUERY": "1",
        "SONDE_COMMAND_SPANS": "ktrdr,sonde-quick"})
    ktrdr = Ktrdr(workdir, "uvicorn")
    yield ktrdr, rx
    ktrdr.stop()
    assert agent.stop() == 0, agent.err_path.read_text()
    rx.stop()


def run(ktrdr, args, env=None):
    return subprocess.run([str(KTRDR / "ktrdr"), *args], env=dict(ktrdr.env, **(env or {})),
                          capture_output=True, text=True, timeout=60)


def spans_of(rx, rid, count, timeout=15):
    """Spans naming rid: in a query string or in a command's arguments."""
    deadline = time.time() + timeout
    while True:
        spans = [s for r in rx.requests() if r["accepted"] for s in r["spans"]
                 if request_id_of(s) == rid
                 or rid in s["attributes"].get("process.command_args", "")]
        if len(spans) >= count or time.time() > deadline:
            return spans
        time.sleep(0.2)


def test_the_command_is_the_root_of_its_trace(cli):
    ktrdr, rx = cli
    rid = f"cmd-{uuid.uuid4().hex[:10]}"
    assert run(ktrdr, ["--request-id", rid, "models", "train", "AAPL", "momentum"]).returncode == 0
    # the command, its call, the api's two health checks and its call to
    # the worker: both ends of each
    spans = spans_of(rx, rid, 9)
    cmd = one(spans, "INTERNAL", "ktrdr", "ktrdr models train")
    assert not cmd["parent_span_id"], "the command starts the trace"
    assert cmd["attributes"]["process.exit.code"] == 0
    assert cmd["attributes"]["process.executable.name"] == "ktrdr"
    assert cmd["status"]["code"] == "STATUS_CODE_UNSET"
    client = one(spans, "CLIENT", "ktrdr")
    api = one(spans, "SERVER", "ktrdr-api", "POST /api/v1/training/start")
    worker = one(spans, "SERVER", "ktrdr-training-worker-", "POST /training/start")
    assert client["parent_span_id"] == cmd["span_id"]
    assert api["parent_span_id"] == client["span_id"]
    assert {s["trace_id"] for s in (cmd, client, api, worker)} == {cmd["trace_id"]}
    assert int(cmd["start_time_unix_nano"]) <= int(client["start_time_unix_nano"])
    assert int(cmd["end_time_unix_nano"]) >= int(client["end_time_unix_nano"])


def test_a_traceparent_in_the_environment_is_the_commands_parent(cli):
    ktrdr, rx = cli
    rid = f"tp-{uuid.uuid4().hex[:10]}"
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    result = run(ktrdr, ["--request-id", rid, "data", "show", "AAPL", "1d"],
                 env={"TRACEPARENT": f"00-{trace_id}-{parent}-01"})
    assert result.returncode == 0, result.stderr
    spans = spans_of(rx, rid, 3)
    cmd = one(spans, "INTERNAL", "ktrdr", "ktrdr data show")
    assert (cmd["trace_id"], cmd["parent_span_id"]) == (trace_id, parent)
    assert {s["trace_id"] for s in spans} == {trace_id}


def test_a_command_gone_at_once_keeps_its_traceparent(cli, workdir):
    """/bin/true under another name exits long before the agent could read
    its /proc entry: the kernel sent its TRACEPARENT with its exec."""
    ktrdr, rx = cli
    quick = os.path.join(workdir, "sonde-quick")
    shutil.copy("/bin/true", quick)
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    marker = uuid.uuid4().hex[:10]
    assert subprocess.run([quick, marker], env={"TRACEPARENT": f"00-{trace_id}-{parent}-01"},
                          timeout=10).returncode == 0
    (cmd,) = spans_of(rx, marker, 1)
    assert cmd["name"] == "sonde-quick"
    assert (cmd["trace_id"], cmd["parent_span_id"]) == (trace_id, parent)


def test_a_failing_command_is_an_error(cli):
    ktrdr, rx = cli
    rid = f"bad-{uuid.uuid4().hex[:10]}"
    result = run(ktrdr, ["--request-id", rid, "nonsense"])
    assert result.returncode != 0
    (cmd,) = spans_of(rx, rid, 1)
    assert cmd["kind"] == "SPAN_KIND_INTERNAL"
    assert cmd["attributes"]["process.exit.code"] == result.returncode
    assert cmd["attributes"]["error.type"] == str(result.returncode)
    assert cmd["status"]["code"] == "STATUS_CODE_ERROR"
