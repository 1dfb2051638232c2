"""End to end: real agent, real traffic, spans exported as OTLP to an
independent receiver (grpc-js / node:http, official opentelemetry-proto
schema), and what happens when that receiver fails."""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SONDE, Agent, curl, free_port

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def otlp_agent(workdir, name, protocol, port, scheme="http", **env):
    """An agent exporting to the receiver. Batches of two, the spans of one
    curl request, so that scripted answers meet known batches; the test
    process and the receiver's control API are not traced."""
    extra = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"{scheme}://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "5000",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2",
        "SONDE_EXCLUDE_COMM": "node,python3,pytest",
    }
    extra.update(env)
    return Agent(workdir, name=name, extra_env=extra)


def settled(stats):
    """Every queued span has an outcome: none is still queued or in flight.
    (Dropped spans never entered the queue and are not in spans_built.)"""
    done = stats["spans_exported"] + stats["spans_refused"] + stats["spans_failed"]
    return stats["spans_built"] > 0 and done == stats["spans_built"]


def receiver_port(receiver, protocol):
    return receiver.grpc_port if protocol == "grpc" else receiver.http_port


def export_one_request(agent, rx, nginx):
    """One request through nginx (two spans); returns the spans the receiver
    accepted and the agent's counters once every span has an outcome."""
    try:
        assert curl(f"http://127.0.0.1:{nginx.port}/ok") == "200"
        spans = rx.wait_spans(nginx.port, 2)
        stats = agent.wait_stats(settled)
    finally:
        assert agent.stop() == 0
    return spans, stats


def requests_for(rx, port):
    """The requests that carried spans for `port`, in order."""
    return [r for r in rx.requests()
            if any(s["attributes"].get("server.port") == port for s in r["spans"])]


def assert_first_batch_met(sent, answers):
    """The first batch met `answers` in turn, the same spans at each attempt;
    what came after it was accepted at once and carried none of its spans.
    The batch timer may cut a request's two spans apart (a slow start puts
    its deadline between them), so a second batch may follow."""
    ids = [{s["span_id"] for s in r["spans"]} for r in sent]
    n = len(answers)
    assert [r["answer"] for r in sent[:n]] == answers
    assert all(i == ids[0] for i in ids[:n]), "each attempt sends the same spans"
    assert all(r["answer"] == "ok" for r in sent[n:])
    assert not ids[0] & set().union(*ids[n:]), "no span sent again"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_spans_arrive_decoded(workdir, nginx, receivers, protocol, compression):
    rx = receivers(grpc_port=0, http_port=0)
    agent = otlp_agent(workdir, f"otlp-{protocol[:4]}-{compression}", protocol,
                       receiver_port(rx, protocol),
                       OTEL_EXPORTER_OTLP_COMPRESSION=compression,
                       OTEL_EXPORTER_OTLP_HEADERS="x-test=sonde%20e2e")
    try:
        assert curl(f"http://127.0.0.1:{nginx.port}/ok") == "200"
        assert curl("-H", f"traceparent: {TRACEPARENT}",
                    f"http://127.0.0.1:{nginx.port}/status/503") == "503"
        spans = rx.wait_spans(nginx.port, 4)
    finally:
        assert agent.stop() == 0
    assert len(spans) == 4, spans
    requests = requests_for(rx, nginx.port)
    transport = "grpc" if protocol == "grpc" else "http"
    for r in requests:
        assert r["transport"] == transport
        assert r["encoding"] == ("gzip" if compression == "gzip" else "identity")
        assert r["headers"]["x-test"] == "sonde e2e"
        assert r["headers"]["user-agent"].startswith("sonde/")
        assert "decode_error" not in r

    for s in spans:
        assert s["trace_id_bytes"] == 16 and s["span_id_bytes"] == 8
        assert s["scope"]["name"] == "sonde"
        assert s["attribute_types"]["server.port"] == "intValue"
        assert s["attribute_types"]["http.response.status_code"] == "intValue"
        assert s["attribute_types"]["http.request.method"] == "stringValue"
        assert s["resource_types"]["process.pid"] == "intValue"
        assert int(s["end_time_unix_nano"]) > int(s["start_time_unix_nano"])
        assert abs(int(s["start_time_unix_nano"]) / 1e9 - time.time()) < 60
    servers = {s["name"]: s for s in spans if s["kind"] == "SPAN_KIND_SERVER"}
    clients = [s for s in spans if s["kind"] == "SPAN_KIND_CLIENT"]
    assert set(servers) == {"GET /ok", "GET /status/{id}"}
    assert [c["name"] for c in clients] == ["GET", "GET"]
    assert {s["resource"]["service.name"] for s in servers.values()} == {"nginx"}
    assert {c["resource"]["service.name"] for c in clients} == {"curl"}

    ok = servers["GET /ok"]
    curl_ok = next(c for c in clients if c["attributes"]["url.path"] == "/ok")
    assert curl_ok["parent_span_id"] == ""
    assert ok["parent_span_id"] == curl_ok["span_id"]
    assert ok["trace_id"] == curl_ok["trace_id"]
    assert ok["status"]["code"] == "STATUS_CODE_UNSET"
    assert ok["attributes"]["http.response.status_code"] == 200
    assert ok["attributes"]["client.port"] > 0
    # curl's call carried a traceparent: curl's span, which has no traced
    # parent, is the header's child, and nginx's is curl's.
    failed = servers["GET /status/{id}"]
    curl_failed = next(c for c in clients if c["attributes"]["url.path"] == "/status/503")
    assert curl_failed["trace_id"] == failed["trace_id"] == TRACEPARENT.split("-")[1]
    assert curl_failed["parent_span_id"] == TRACEPARENT.split("-")[2]
    assert failed["parent_span_id"] == curl_failed["span_id"]
    assert failed["flags"] & 0xff == 1
    assert failed["status"]["code"] == "STATUS_CODE_ERROR"
    assert failed["attributes"]["http.response.status_code"] == 503

    stats = agent.stats()
    assert settled(stats)
    assert stats["spans_failed"] == stats["spans_refused"] == stats["spans_dropped"] == 0


@pytest.mark.parametrize("protocol,answer", [
    ("grpc", {"kind": "unavailable"}),
    ("http/protobuf", {"kind": "unavailable", "retry_delay_ms": 1000}),
    ("grpc", {"kind": "resource_exhausted", "retry_delay_ms": 1500}),
])
def test_retryable_answers_are_retried(workdir, nginx, receivers, protocol, answer):
    rx = receivers(grpc_port=0, http_port=0)
    rx.script([answer, answer])
    agent = otlp_agent(workdir, "otlp-retry", protocol, receiver_port(rx, protocol))
    spans, _ = export_one_request(agent, rx, nginx)
    assert len(spans) == 2
    attempts = requests_for(rx, nginx.port)
    assert_first_batch_met(attempts, [answer["kind"], answer["kind"], "ok"])
    if "retry_delay_ms" in answer:
        gaps = [b["time"] - a["time"] for a, b in zip(attempts, attempts[1:3])]
        assert min(gaps) >= answer["retry_delay_ms"] - 50, gaps
    final = agent.stats()
    assert final["spans_failed"] == final["spans_refused"] == 0
    assert final["spans_retried"] == 2 * len(attempts[0]["spans"])
    assert final["spans_exported"] == final["spans_built"]


@pytest.mark.parametrize("protocol,answer", [
    ("grpc", {"kind": "invalid"}),
    ("http/protobuf", {"kind": "invalid"}),
    ("grpc", {"kind": "resource_exhausted"}),  # no RetryInfo: not retryable
])
def test_refusals_are_not_retried(workdir, nginx, receivers, protocol, answer):
    rx = receivers(grpc_port=0, http_port=0)
    rx.script([answer])
    agent = otlp_agent(workdir, "otlp-refused", protocol, receiver_port(rx, protocol))
    try:
        assert curl(f"http://127.0.0.1:{nginx.port}/ok") == "200"
        refused = agent.wait_stats(lambda s: s["spans_refused"] > 0)
        assert curl(f"http://127.0.0.1:{nginx.port}/ok?after") == "200"
        later = rx.wait_spans(nginx.port, 2)
        final = agent.wait_stats(settled)
    finally:
        assert agent.stop() == 0
    assert refused["spans_retried"] == final["spans_retried"] == 0
    assert len(later) == 2, "export goes on after a refusal"
    assert_first_batch_met(requests_for(rx, nginx.port), [answer["kind"]])
    assert final["spans_refused"] == refused["spans_refused"]
    assert final["spans_exported"] + final["spans_refused"] == final["spans_built"]
    assert "the collector refused" in agent.err_path.read_text()


def test_partial_success_is_counted(workdir, nginx, receivers):
    rx = receivers(grpc_port=0)
    rx.script([{"kind": "partial", "rejected": 1, "message": "one span too many"}])
    agent = otlp_agent(workdir, "otlp-partial", "grpc", rx.grpc_port)
    try:
        assert curl(f"http://127.0.0.1:{nginx.port}/ok") == "200"
        stats = agent.wait_stats(settled)
    finally:
        assert agent.stop() == 0
    assert stats["spans_refused"] == 1
    assert stats["spans_exported"] == stats["spans_built"] - 1
    assert "one span too many" in agent.err_path.read_text()


def test_slow_collector_times_out_and_is_retried(workdir, nginx, receivers):
    rx = receivers(http_port=0)
    rx.script([{"kind": "slow", "delay_ms": 3000}])
    agent = otlp_agent(workdir, "otlp-slow", "http/protobuf", rx.http_port,
                       OTEL_EXPORTER_OTLP_TIMEOUT="500")
    spans, stats = export_one_request(agent, rx, nginx)
    assert len(spans) == 2
    sent = requests_for(rx, nginx.port)
    assert_first_batch_met(sent, ["slow", "ok"])
    assert stats["spans_failed"] == 0
    assert stats["spans_retried"] == len(sent[0]["spans"])
    assert stats["export_requests"] == len(sent)


def test_collector_down_then_back(workdir, nginx, receivers):
    """Down: spans wait in the bounded queue (the overflow is dropped and
    counted), memory stays bounded; back: the queue drains."""
    port = free_port()
    agent = otlp_agent(workdir, "otlp-down", "grpc", port,
                       OTEL_BSP_MAX_QUEUE_SIZE="200", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="50",
                       OTEL_BSP_SCHEDULE_DELAY="100", OTEL_BSP_EXPORT_TIMEOUT="20000")
    try:
        rss_before = agent.rss_kb()
        for _ in range(20):
            subprocess.run(["curl", "-s", "-o", "/dev/null", "--parallel", "--parallel-max", "10"]
                           + [f"http://127.0.0.1:{nginx.port}/ok"] * 10, timeout=30)
        down = agent.wait_stats(lambda s: s["spans_dropped"] > 0 and s["export_requests"] >= 2)
        rss_down = agent.rss_kb()
        assert agent.proc.poll() is None
        rx = receivers(grpc_port=port)
        spans = rx.wait_spans(nginx.port, 200, timeout=30)
        final = agent.wait_stats(settled, timeout=30)
    finally:
        assert agent.stop() == 0
    assert down["spans_exported"] == 0
    assert rss_down - rss_before < 16 * 1024, (rss_before, rss_down)
    assert final["spans_failed"] == final["spans_refused"] == 0
    assert final["spans_exported"] == final["spans_built"] == 200, "the whole queue"
    assert final["spans_dropped"] == final["exchanges"] - 200
    assert len(spans) >= 200
    assert "queue full" in agent.err_path.read_text()


def test_shutdown_with_collector_down_is_bounded(workdir, nginx):
    agent = otlp_agent(workdir, "otlp-shutdown", "http/protobuf", free_port(),
                       OTEL_BSP_EXPORT_TIMEOUT="1500")
    assert curl(f"http://127.0.0.1:{nginx.port}/ok") == "200"
    agent.wait_stats(lambda s: s["export_requests"] >= 1)
    started = time.time()
    assert agent.stop() == 0
    assert time.time() - started < 6
    stats = agent.stats()
    assert stats["spans_failed"] == stats["spans_built"] >= 2


def test_second_signal_exits_at_once(workdir, nginx):
    """The first SIGTERM waits for the dead collector up to the export
    timeout; the second ends that wait and says what is lost."""
    agent = otlp_agent(workdir, "otlp-second-signal", "http/protobuf", free_port(),
                       OTEL_BSP_EXPORT_TIMEOUT="60000")
    assert curl(f"http://127.0.0.1:{nginx.port}/ok") == "200"
    agent.wait_stats(lambda s: s["export_requests"] >= 1)
    agent.proc.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        agent.proc.wait(timeout=1.5)
    agent.proc.send_signal(signal.SIGINT)
    assert agent.proc.wait(timeout=2) == 3
    agent.stop()
    assert "second signal: exiting now; spans not yet exported are lost" in \
        agent.err_path.read_text()


def test_hangup_stops_in_order(workdir, nginx):
    """SIGHUP (a closed terminal, or an operator expecting a reload) ends
    the agent as SIGTERM does: the spans still queued are written out, and
    the agent says it has no reload."""
    agent = Agent(workdir, name="hangup", extra_env={"OTEL_BSP_SCHEDULE_DELAY": "600000"})
    assert curl(f"http://127.0.0.1:{nginx.port}/ok") == "200"
    agent.wait_stats(lambda s: s["spans_server"] >= 1)
    assert agent.spans_for_port(nginx.port) == []
    agent.proc.send_signal(signal.SIGHUP)
    assert agent.proc.wait(timeout=30) == 0
    agent.stop()
    assert sorted(s["name"] for s in agent.spans_for_port(nginx.port)) == ["GET", "GET /ok"]
    err = agent.err_path.read_text()
    assert "SIGHUP: stopping; sonde has no configuration reload" in err
    assert "stopped" in err.splitlines()[-1]


def make_ca(directory, name):
    """A self-signed CA and a server certificate for 127.0.0.1 it signed."""
    d = Path(directory) / name
    d.mkdir(exist_ok=True)

    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem")
    return d


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_tls_with_the_right_ca(workdir, nginx, receivers, protocol):
    ca = make_ca(workdir, "good-ca")
    rx = receivers(grpc_port=0, http_port=0,
                   tls={"cert": str(ca / "server.pem"), "key": str(ca / "server.key")})
    agent = otlp_agent(workdir, "otlp-tls", protocol, receiver_port(rx, protocol), scheme="https",
                       OTEL_EXPORTER_OTLP_CERTIFICATE=str(ca / "ca.pem"))
    spans, stats = export_one_request(agent, rx, nginx)
    assert len(spans) == 2
    assert stats["spans_failed"] == 0


def test_tls_with_the_wrong_ca_fails_clearly(workdir, nginx, receivers):
    ca = make_ca(workdir, "good-ca")
    wrong = make_ca(workdir, "wrong-ca")
    rx = receivers(grpc_port=0, tls={"cert": str(ca / "server.pem"), "key": str(ca / "server.key")})
    agent = otlp_agent(workdir, "otlp-badtls", "grpc", rx.grpc_port, scheme="https",
                       OTEL_EXPORTER_OTLP_CERTIFICATE=str(wrong / "ca.pem"))
    try:
        assert curl(f"http://127.0.0.1:{nginx.port}/ok") == "200"
        stats = agent.wait_stats(settled)
        assert agent.proc.poll() is None, "sonde keeps running"
    finally:
        assert agent.stop() == 0
    assert stats["spans_failed"] == stats["spans_built"]
    assert stats["export_requests"] == 1, "a certificate problem is not retried"
    err = agent.err_path.read_text()
    assert "OTLP: dropped" in err and "TLS" in err and "certificate" in err, err
    assert rx.spans_for_port(nginx.port) == []


@pytest.mark.parametrize("name,value,message", [
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift", "OTEL_EXPORTER_OTLP_PROTOCOL: \"thrift\""),
    ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "soon", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
    ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem", "cannot read"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector", "is not a URL"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "novalue", "OTEL_EXPORTER_OTLP_HEADERS"),
    ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER: \"zipkin\""),
])
def test_bad_configuration_is_a_clear_startup_error(name, value, message):
    env = dict(os.environ, OTEL_TRACES_EXPORTER="otlp")
    env[name] = value
    proc = subprocess.run([str(SONDE), "--config", "/dev/null"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
