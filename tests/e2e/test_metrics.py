"""RED metrics end to end: real traffic with known routes, methods and
statuses to nginx and a FastAPI service on uvicorn, scraped from sonde's
Prometheus endpoint and received over OTLP by the independent receiver
(decoding with the official schema): the exposition passes promtool, and
every (service, method, route, status) series counts exactly the requests
made, in both."""
import json
import re
import subprocess
import time
import urllib.request
from collections import Counter

import pytest

from conftest import ROOT, Agent, curl, free_port

HTTP_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]

SERIES = re.compile(r'^(\w+)\{(.*)\} (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return resp.read().decode()


def counts(text, metric):
    """{(service, method, route, status): count} of a duration histogram."""
    out = {}
    for line in text.splitlines():
        m = SERIES.match(line)
        if not m or m.group(1) != f"{metric}_count":
            continue
        labels = dict(LABEL.findall(m.group(2)))
        key = (labels.get("service_name"), labels.get("http_request_method"),
               labels.get("http_route"), labels.get("http_response_status_code"))
        out[key] = out.get(key, 0) + int(m.group(3))
    return out


def otlp_counts(points, name):
    """{(service, method, route, status): count} of an OTLP histogram's points."""
    out = Counter()
    for p in points:
        if p["name"] != name:
            continue
        a = p["attributes"]
        status = a.get("http.response.status_code")
        key = (p["resource"].get("service.name"), a.get("http.request.method"),
               a.get("http.route"), None if status is None else str(status))
        out[key] += p["count"]
    return out


@pytest.fixture
def metrics_agent(workdir, receivers):
    port = free_port()
    receiver = receivers(grpc_port=0)
    a = Agent(workdir, name="metrics", extra_env={
        "OTEL_METRICS_EXPORTER": "prometheus,otlp", "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"http://127.0.0.1:{receiver.grpc_port}",
        "OTEL_METRIC_EXPORT_INTERVAL": "500"})
    a.metrics_port = port
    a.receiver = receiver
    yield a
    assert a.stop() == 0


def make_known_traffic(nginx, uvicorn):
    """Requests of known service, method, route and status; their counts."""
    made = Counter()
    for path, route, status, times in (("/ok", "/ok", "200", 5),
                                       ("/status/404", "/status/{id}", "404", 3),
                                       ("/status/503", "/status/{id}", "503", 2)):
        for _ in range(times):
            assert curl(f"http://127.0.0.1:{nginx.port}{path}") == status
            made[("nginx", "GET", route, status)] += 1
    for path, route, status, times in (("/items/7", "/items/{id}", "200", 4),
                                       ("/items/1234", "/items/{id}", "200", 2),
                                       ("/fail", "/fail", "503", 3)):
        for _ in range(times):
            assert curl(f"http://127.0.0.1:{uvicorn.port}{path}") == status
            made[("e2e-api", "GET", route, status)] += 1
    return made


def mine(got):
    return {k: v for k, v in got.items() if k[0] in ("nginx", "e2e-api")}


def test_scrape_counts_every_request_by_service_route_and_status(metrics_agent, nginx, uvicorn):
    made = make_known_traffic(nginx, uvicorn)
    deadline = time.time() + 15
    while True:
        text = scrape(metrics_agent.metrics_port)
        got = mine(counts(text, "http_server_request_duration_seconds"))
        if got == dict(made) or time.time() > deadline:
            break
        time.sleep(0.3)
    assert got == dict(made)
    clients = counts(text, "http_client_request_duration_seconds")
    assert sum(v for k, v in clients.items() if k[0] == "curl") >= sum(made.values())
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "sonde_events_total" in text and "process_resident_memory_bytes" in text
    assert 'target_info{service_name="e2e-api"' in text
    assert re.search(r'^http_server_active_requests\{service_name="nginx",'
                     r'http_request_method="GET",url_scheme="http"\} 0$', text, re.M)


def last_points(receiver, want, timeout=15):
    """The data points of the newest metrics export once want(points) holds."""
    deadline = time.time() + timeout
    points = []
    while time.time() < deadline:
        reqs = receiver.metrics_requests()
        assert all("decode_error" not in r for r in reqs), reqs
        points = reqs[-1]["points"] if reqs else []
        if want(points):
            return points
        time.sleep(0.2)
    return points


def test_the_same_counts_arrive_over_otlp(metrics_agent, nginx, uvicorn):
    made = make_known_traffic(nginx, uvicorn)
    name = "http.server.request.duration"
    # sonde's own counters are read once a second: wait for them as well.
    points = last_points(metrics_agent.receiver,
                         lambda pts: mine(otlp_counts(pts, name)) == dict(made) and
                         any(p["name"] == "sonde.requests" and p["value"] >= sum(made.values())
                             for p in pts))
    assert mine(otlp_counts(points, name)) == dict(made)
    ours = [p for p in points if p["name"] == name and
            p["resource"].get("service.name") in ("nginx", "e2e-api")]
    for p in ours:
        assert p["type"] == "histogram" and p["unit"] == "s"
        assert p["temporality"] == "AGGREGATION_TEMPORALITY_CUMULATIVE"
        assert p["explicit_bounds"] == HTTP_BOUNDS
        assert len(p["bucket_counts"]) == len(HTTP_BOUNDS) + 1
        assert sum(p["bucket_counts"]) == p["count"] and p["has_sum"]
        assert "service.name" not in p["attributes"], "the resource carries it"
        assert p["resource"]["telemetry.sdk.name"] == "sonde"
        assert int(p["start_time_unix_nano"]) < int(p["time_unix_nano"])
        assert p["attribute_types"]["http.response.status_code"] == "intValue"
    active = [p for p in points if p["name"] == "http.server.active_requests"
              and p["resource"].get("service.name") == "nginx"]
    assert active and active[0]["type"] == "sum" and not active[0]["is_monotonic"]
    assert active[0]["value"] == 0
    own = {p["name"]: p for p in points if p["resource"].get("service.name") == "sonde"}
    assert own["sonde.requests"]["is_monotonic"]
    assert own["sonde.requests"]["value"] >= sum(made.values())
    assert own["process.memory.usage"]["value"] > 0


def test_delta_temporality_adds_up_to_the_requests_made(workdir, receivers, nginx):
    receiver = receivers(http_port=0)
    agent = Agent(workdir, name="metrics-delta", extra_env={
        "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.http_port}",
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
        "OTEL_METRIC_EXPORT_INTERVAL": "300"})
    try:
        for round_ in range(3):
            for _ in range(4 + round_):
                assert curl(f"http://127.0.0.1:{nginx.port}/ok") == "200"
            time.sleep(0.5)
    finally:
        assert agent.stop() == 0, agent.err_path.read_text()
    key = ("nginx", "GET", "/ok", "200")
    total = Counter()
    temporalities = set()
    for r in receiver.metrics_requests():
        assert "decode_error" not in r, r
        total.update(otlp_counts(r["points"], "http.server.request.duration"))
        temporalities |= {p["temporality"] for p in r["points"]
                          if p["name"] == "http.server.request.duration"}
    assert total[key] == 4 + 5 + 6, "the deltas add up, the last one sent at shutdown"
    assert temporalities == {"AGGREGATION_TEMPORALITY_DELTA"}


def test_console_metrics_are_json_lines(workdir, nginx):
    agent = Agent(workdir, name="metrics-console", extra_env={
        "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "console",
        "OTEL_METRIC_EXPORT_INTERVAL": "200"})
    try:
        for _ in range(3):
            assert curl(f"http://127.0.0.1:{nginx.port}/status/404") == "404"
    finally:
        assert agent.stop() == 0, agent.err_path.read_text()
    lines = [json.loads(line) for line in agent.out_path.read_text().splitlines()]
    last = {}
    for p in lines:
        if (p["metric"] == "http.server.request.duration" and
                p["resource"]["service.name"] == "nginx"):
            last[p["attributes"]["http.route"]] = p
    assert last["/status/{id}"]["count"] == 3, "sonde templates the route"
    assert last["/status/{id}"]["attributes"]["http.response.status_code"] == 404
    assert any(p["metric"] == "sonde.events" for p in lines)


@pytest.mark.parametrize("env, message", [
    ({"OTEL_METRICS_EXPORTER": "statsd"}, "OTEL_METRICS_EXPORTER: \"statsd\" is not one of"),
    ({"OTEL_METRICS_EXPORTER": "otlp",
      "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "sometimes"},
     "is not one of cumulative, delta, lowmemory"),
    ({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/json"},
     "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"),
])
def test_bad_metrics_settings_are_clear_startup_errors(workdir, env, message):
    with pytest.raises(RuntimeError, match=re.escape(message)):
        Agent(workdir, name="metrics-bad", extra_env=env)


def test_other_paths_are_not_found(metrics_agent):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_agent.metrics_port}/", timeout=10)
        raise AssertionError("/ served")
    except urllib.error.HTTPError as e:
        assert e.code == 404


def test_a_port_in_use_is_a_clear_startup_error(workdir):
    port = free_port()
    holder = subprocess.Popen(["python3", "-c", f"""
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", {port})); s.listen(); print("up", flush=True); time.sleep(30)
"""], stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        with pytest.raises(RuntimeError, match=f"prometheus endpoint 127.0.0.1:{port}"):
            Agent(workdir, name="metrics-busy", extra_env={
                "OTEL_METRICS_EXPORTER": "prometheus",
                "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
                "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)})
    finally:
        holder.kill()
        holder.wait()


def test_shipped_prometheus_config_is_valid():
    check = subprocess.run(["promtool", "check", "config",
                            str(ROOT / "deploy" / "prometheus" / "prometheus.yml")],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
