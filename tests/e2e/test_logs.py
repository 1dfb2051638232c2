"""Logs end to end: what traced processes write to stdout and stderr
arrives at the independent receiver as OTLP log records, decoded with the
official schema: with the trace and span of the request each line was
written for, or none; one record per line, tracebacks whole; JSON and
logfmt lines structured; severity read; redaction applied; whatever
stdout is (a pipe, a file, a terminal)."""
import os
import pty
import re
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import APPS, PYTHON, Agent, Receiver, Uvicorn, curl, free_port, wait_port


def request_id_of(span):
    match = re.search(r"request_id=([0-9a-z-]+)", span["attributes"].get("url.query", ""))
    return match.group(1) if match else None


@pytest.fixture(scope="module")
def traced(workdir):
    """sonde exporting spans and logs to one receiver."""
    rx = Receiver(workdir, http_port=0)
    agent = Agent(workdir, name="sonde-logs", extra_env={
        "OTEL_TRACES_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{rx.http_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "SONDE_KEEP_QUERY": "1", "SONDE_LOGS_REDACT": "token=[A-Za-z0-9]+;;[0-9]{16}"})
    yield agent, rx
    assert agent.stop() == 0, agent.err_path.read_text()
    rx.stop()


class LogServer:
    """tests/e2e/apps/log_server.py with stdout and stderr to a pipe, a
    file or a terminal."""

    def __init__(self, workdir, mode):
        self.port = free_port()
        self.output = []
        cmd = [PYTHON, str(APPS / "log_server.py"), str(self.port)]
        if mode == "pipe":
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self._drain(self.proc.stdout.fileno())
        elif mode == "file":
            self.file = open(Path(workdir) / f"log-server-{self.port}.out", "w")
            self.proc = subprocess.Popen(cmd, stdout=self.file, stderr=self.file)
        else:
            master, slave = pty.openpty()
            self.proc = subprocess.Popen(cmd, stdout=slave, stderr=slave)
            os.close(slave)
            self._drain(master)
        wait_port(self.port)

    def _drain(self, fd):
        def read():
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                self.output.append(chunk)
        threading.Thread(target=read, daemon=True).start()

    def get(self, path, rid):
        assert curl(f"http://127.0.0.1:{self.port}{path}?request_id={rid}") == "200"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def wait_records(rx, rids, count, timeout=15):
    """The records naming any of rids, once there are `count` of them."""
    deadline = time.time() + timeout
    while True:
        mine = [r for r in rx.log_records() if any(f"request_id={rid} " in (r["body"] or "")
                                                    for rid in rids)]
        if len(mine) >= count or time.time() > deadline:
            return mine
        time.sleep(0.2)


def server_span(rx, rid, timeout=10):
    deadline = time.time() + timeout
    while True:
        found = [s for r in rx.requests() if r["accepted"] for s in r["spans"]
                 if s["kind"] == "SPAN_KIND_SERVER" and request_id_of(s) == rid]
        if found or time.time() > deadline:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.2)


@pytest.mark.parametrize("mode", ["pipe", "file", "pty"])
def test_every_line_carries_its_request_whatever_stdout_is(traced, workdir, mode):
    agent, rx = traced
    server = LogServer(workdir, mode)
    try:
        rids = [f"{mode}-{uuid.uuid4().hex[:10]}" for _ in range(4)]
        for rid in rids:
            server.get("/", rid)
        records = wait_records(rx, rids, 2 * len(rids))
    finally:
        server.stop()
    assert len(records) == 2 * len(rids), [r["body"] for r in records]
    for rid in rids:
        span = server_span(rx, rid)
        mine = [r for r in records if f"request_id={rid} " in r["body"]]
        streams = sorted(r["attributes"]["log.iostream"] for r in mine)
        assert streams == ["stderr", "stdout"], mine
        for r in mine:
            assert (r["trace_id"], r["span_id"]) == (span["trace_id"], span["span_id"]), r
            assert r["resource"]["service.name"] == span["resource"]["service.name"]
            assert int(r["time_unix_nano"]) >= int(span["start_time_unix_nano"])
        info = next(r for r in mine if r["attributes"]["log.iostream"] == "stderr")
        assert info["severity_text"] == "INFO" and info["severity_number"] == "SEVERITY_NUMBER_INFO"
    ticks = [r for r in rx.log_records() if re.fullmatch(r"tick \d+", r["body"] or "")]
    assert ticks, "the background thread's lines are records too"
    assert all(not r["trace_id"] and not r["span_id"] for r in ticks), "written outside requests"


@pytest.mark.parametrize("route", ["item", "sync_item"])
def test_asyncio_lines_carry_their_request_from_the_first(traced, route):
    """A service that calls nothing and only logs, on asyncio: its first
    16 requests at once, interleaved on one thread (an `async def`
    handler) or written by anyio's worker threads (a `def` handler). The
    kernel reads a response's task only once the process has needed one
    elsewhere (a line, a call): every line still carries its own
    request's span."""
    agent, rx = traced
    app = Uvicorn("e2e-log-app", "log_app:app")
    try:
        rids = [f"first-{uuid.uuid4().hex[:10]}" for _ in range(16)]
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(
                lambda rid: curl(f"http://127.0.0.1:{app.port}/{route}?request_id={rid}"), rids))
        assert codes == ["200"] * len(rids)
        records = wait_records(rx, rids, len(rids))
    finally:
        app.stop()
    assert len(records) == len(rids), [r["body"] for r in records]
    for rid in rids:
        span = server_span(rx, rid)
        line = next(r for r in records if f"request_id={rid} " in r["body"])
        assert (line["trace_id"], line["span_id"]) == (span["trace_id"], span["span_id"]), line


def test_structured_lines_a_traceback_and_redaction(traced, workdir):
    agent, rx = traced
    server = LogServer(workdir, "pipe")
    rid = f"st-{uuid.uuid4().hex[:10]}"
    try:
        server.get("/json", rid)
        server.get("/fail", rid)
        server.get("/secret", rid)
        records = wait_records(rx, [rid], 7)
    finally:
        server.stop()
    span_ids = {r["span_id"] for r in records}
    assert len(span_ids) == 3 and "" not in span_ids, "three requests, each line in its own"
    js = next(r for r in records if r["body"] == f"request_id={rid} json")
    assert js["severity_number"] == "SEVERITY_NUMBER_WARN" and js["severity_text"] == "warning"
    assert js["attributes"]["user"] == "ann" and js["attributes"]["ok"] is True
    assert js["attributes"]["attempt"] == 3 and js["attribute_types"]["attempt"] == "intValue"
    lf = next(r for r in records if r["body"] == f"request_id={rid} logfmt")
    assert lf["severity_number"] == "SEVERITY_NUMBER_ERROR" and lf["attributes"]["code"] == "42"
    tb = [r for r in records if "Traceback (most recent call last):" in r["body"]]
    assert len(tb) == 1, "a traceback written by one logging call is one record"
    assert tb[0]["body"].startswith(f"ERROR:logsrv:request_id={rid} failed\n")
    assert tb[0]["body"].rstrip().endswith(f"ValueError: request_id={rid} broken")
    assert tb[0]["severity_number"] == "SEVERITY_NUMBER_ERROR"
    secret = next(r for r in records if "for user" in r["body"])
    assert secret["body"] == f"WARNING:logsrv:request_id={rid} [REDACTED] for user"


def test_node_lines_carry_their_request(traced, workdir):
    """One event loop serving 16 requests at once: each line carries the
    request whose callback wrote it (bpf/evloop.bpf.h)."""
    agent, rx = traced
    port = free_port()
    node = subprocess.Popen(["node", str(APPS / "server.js"), str(port)])
    try:
        wait_port(port)
        seq = [f"ns-{uuid.uuid4().hex[:10]}" for _ in range(4)]
        for rid in seq:
            assert curl(f"http://127.0.0.1:{port}/log?request_id={rid}") == "200"
        par = [f"np-{uuid.uuid4().hex[:10]}" for _ in range(16)]
        clients = [subprocess.Popen(["curl", "-s", "-o", "/dev/null",
                                     f"http://127.0.0.1:{port}/log?request_id={rid}"])
                   for rid in par]
        for c in clients:
            assert c.wait(timeout=30) == 0
        records = wait_records(rx, seq + par, len(seq) + len(par))
    finally:
        node.terminate()
        node.wait(timeout=10)
    assert len(records) == len(seq) + len(par)
    for rid in seq + par:
        (r,) = [r for r in records if f"request_id={rid} " in r["body"]]
        span = server_span(rx, rid)
        assert (r["trace_id"], r["span_id"]) == (span["trace_id"], span["span_id"]), rid


def chain_server_span(rx, port, rid, timeout=10):
    deadline = time.time() + timeout
    while True:
        found = [s for r in rx.requests() if r["accepted"] for s in r["spans"]
                 if s["kind"] == "SPAN_KIND_SERVER" and s["attributes"].get("server.port") == port
                 and s["attributes"].get("url.path") == f"/chain/{rid}"]
        if found or time.time() > deadline:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.2)


def test_node_lines_after_awaited_calls_carry_their_request(traced):
    """A Node service logs as it starts a request's work and once its two
    awaited calls have answered (written in the callback of the last
    call's response), 16 requests at once: both lines carry the request's
    ids."""
    agent, rx = traced
    backend_port, port = free_port(), free_port()
    app = str(APPS / "node_chain.js")
    procs = [subprocess.Popen(["node", app, "backend", str(backend_port)]),
             subprocess.Popen(["node", app, "front", str(port), str(backend_port)])]
    try:
        wait_port(backend_port)
        wait_port(port)
        # A process's first fetch() is written from the callback V8's
        # compilation of undici's parser ends in (test_node.py).
        assert curl("-d", "x", f"http://127.0.0.1:{port}/chain/warmup") == "200"
        rids = [uuid.uuid4().hex[:12] for _ in range(16)]
        clients = [subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-d", "x",
                                     f"http://127.0.0.1:{port}/chain/{rid}"]) for rid in rids]
        for c in clients:
            assert c.wait(timeout=30) == 0
        records = wait_records(rx, rids, 2 * len(rids))
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
    assert len(records) == 2 * len(rids)
    for rid in rids:
        span = chain_server_span(rx, port, rid)
        lines = [r for r in records if f"request_id={rid} " in r["body"]]
        assert len(lines) == 2
        for r in lines:
            assert (r["trace_id"], r["span_id"]) == (span["trace_id"], span["span_id"]), r


def test_a_flood_of_lines_is_rate_limited_counted_and_said(workdir):
    """A process writing as fast as it can: past the per-process limit its
    writes are dropped in the kernel, counted exactly and logged; the
    agent's memory stays bounded."""
    rx = Receiver(workdir, http_port=0)
    agent = Agent(workdir, name="sonde-flood", extra_env={
        "OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{rx.http_port}",
        "SONDE_LOGS_RATE_LIMIT": "2000", "SONDE_STATS_INTERVAL": "1"})
    try:
        flood = subprocess.run([PYTHON, str(APPS / "log_flood.py"), "2"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               timeout=60)
        wrote = int(re.search(r"wrote (\d+)", flood.stderr).group(1))
        stats = agent.wait_stats(lambda c: c["log_writes"] + c["log_writes_dropped"] >= wrote)
        rss_mb = agent.rss_kb() / 1024
    finally:
        assert agent.stop() == 0, agent.err_path.read_text()
        rx.stop()
    assert wrote > 20000, "the flood is a flood"
    assert stats["log_writes"] <= 2000 * 3 + 2000, "the limit holds: a second's burst and 2 s"
    assert stats["log_writes_dropped"] >= wrote - stats["log_writes"]
    assert "writes to stdout or stderr dropped in the last second" in agent.err_path.read_text()
    assert rss_mb < 64, rss_mb


@pytest.mark.parametrize("env, message", [
    ({"OTEL_LOGS_EXPORTER": "loki"}, 'OTEL_LOGS_EXPORTER: "loki" is not one of otlp, console'),
    ({"OTEL_LOGS_EXPORTER": "console", "SONDE_LOGS_REDACT": "a(b"}, 'SONDE_LOGS_REDACT: "a(b"'),
    ({"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "kafka"},
     "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"),
])
def test_bad_log_settings_are_clear_startup_errors(workdir, env, message):
    with pytest.raises(RuntimeError, match=re.escape(message)):
        Agent(workdir, name="sonde-logs-bad", extra_env=env)


def test_a_configured_log_file_is_read_too(workdir, tmp_path):
    """A log file named in SONDE_LOGS_FILES (a shell pattern), written by a
    traced process: its lines are records with log.file.path, and with the
    trace of the request they were written for."""
    rx = Receiver(workdir, http_port=0)
    logdir = Path(workdir) / f"applogs-{uuid.uuid4().hex[:8]}"
    logdir.mkdir()
    agent = Agent(workdir, name="sonde-logfile", extra_env={
        "OTEL_TRACES_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{rx.http_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "SONDE_KEEP_QUERY": "1", "SONDE_LOGS_FILES": f"{logdir}/*.log"})
    port = free_port()
    app = subprocess.Popen([PYTHON, "-c", f"""
import logging, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse
logging.basicConfig(filename="{logdir}/app.log", level=logging.INFO,
                    format="%(levelname)s %(message)s")
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        rid = parse_qs(urlparse(self.path).query)["request_id"][0]
        logging.warning("request_id=%s to the file", rid)
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", {port}), H).serve_forever()
"""])
    try:
        wait_port(port)
        curl(f"http://127.0.0.1:{port}/?request_id=warmup")
        time.sleep(2.5)  # found open by the once-a-second scan
        rids = [f"file-{uuid.uuid4().hex[:10]}" for _ in range(3)]
        for rid in rids:
            assert curl(f"http://127.0.0.1:{port}/?request_id={rid}") == "200"
        records = wait_records(rx, rids, len(rids))
        spans = {rid: server_span(rx, rid) for rid in rids}
    finally:
        app.terminate()
        app.wait(timeout=10)
        assert agent.stop() == 0, agent.err_path.read_text()
        rx.stop()
    assert len(records) == len(rids), records
    for rid in rids:
        (r,) = [r for r in records if f"request_id={rid} " in r["body"]]
        assert r["attributes"]["log.file.path"] == f"{logdir}/app.log"
        assert r["attributes"]["log.file.name"] == "app.log"
        assert "log.iostream" not in r["attributes"]
        assert r["severity_number"] == "SEVERITY_NUMBER_WARN"
        assert (r["trace_id"], r["span_id"]) == (spans[rid]["trace_id"], spans[rid]["span_id"])


def test_a_dead_collector_costs_records_counted_never_the_application(workdir):
    """Logs and metrics exported to a port where nothing listens: the
    records and collections are counted as failed, the traced server goes
    on serving, and sonde stops cleanly."""
    dead = free_port()
    agent = Agent(workdir, name="sonde-dead-collector", extra_env={
        "OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp", "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{dead}",
        "OTEL_BLRP_SCHEDULE_DELAY": "100", "OTEL_BLRP_EXPORT_TIMEOUT": "1500",
        "OTEL_METRIC_EXPORT_TIMEOUT": "1500", "SONDE_STATS_INTERVAL": "1"})
    server = LogServer(workdir, "pipe")
    try:
        for i in range(5):
            server.get("/", f"dead-{i}")
        stats = agent.wait_stats(lambda c: c["log_records_failed"] >= 10 and
                                 c["metric_exports_failed"] >= 1, timeout=30)
    finally:
        server.stop()
        assert agent.stop() == 0, agent.err_path.read_text()
    assert stats["log_records_exported"] == 0
    err = agent.err_path.read_text()
    assert "OTLP logs:" in err
    assert f"metrics: otlp http://127.0.0.1:{dead}/v1/metrics every 200 ms)" in err


def test_stop_flushes_spans_logs_and_metrics_side_by_side(workdir):
    """A dead collector at stop, with spans, log records and a last metric
    collection all still to send: the three flushes share the wait, so
    stopping takes about one export timeout, not the three of them
    (which, at the defaults, would outlast the unit's TimeoutStopSec)."""
    timeout_ms = 4000
    agent = Agent(workdir, name="sonde-stop-side-by-side", extra_env={
        "OTEL_TRACES_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        # Nothing is sent before the stop: all three are queued then.
        "OTEL_BSP_SCHEDULE_DELAY": "600000", "OTEL_BLRP_SCHEDULE_DELAY": "600000",
        "OTEL_METRIC_EXPORT_INTERVAL": "600000", "OTEL_BSP_EXPORT_TIMEOUT": str(timeout_ms),
        "OTEL_BLRP_EXPORT_TIMEOUT": str(timeout_ms),
        "OTEL_METRIC_EXPORT_TIMEOUT": str(timeout_ms), "SONDE_STATS_INTERVAL": "1"})
    server = LogServer(workdir, "pipe")
    try:
        for i in range(3):
            server.get("/", f"stop-{i}")
        agent.wait_stats(lambda c: c["log_records"] >= 3 and c["spans_built"] >= 6)
    finally:
        server.stop()
    started = time.time()
    assert agent.stop() == 0, agent.err_path.read_text()
    took = time.time() - started
    stats = agent.stats()
    assert stats["spans_failed"] == stats["spans_built"] >= 6
    assert stats["log_records_failed"] == stats["log_records"] >= 3
    assert stats["metric_exports_failed"] == 1
    assert took < 1.5 * timeout_ms / 1000, \
        f"stop took {took:.1f} s with three {timeout_ms} ms export timeouts"
