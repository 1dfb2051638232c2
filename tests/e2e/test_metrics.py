"""RED metrics end to end: real traffic with known routes, methods and
statuses to nginx and a FastAPI service on uvicorn, scraped from sonde's
Prometheus endpoint: the exposition passes promtool, and every (service,
method, route, status) series counts exactly the requests made."""
import re
import subprocess
import time
import urllib.request
from collections import Counter

import pytest

from conftest import ROOT, Agent, curl, free_port

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


@pytest.fixture
def metrics_agent(workdir):
    port = free_port()
    a = Agent(workdir, name="metrics", extra_env={
        "OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)})
    a.metrics_port = port
    yield a
    assert a.stop() == 0


def test_scrape_counts_every_request_by_service_route_and_status(metrics_agent, nginx, uvicorn):
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
    deadline = time.time() + 15
    while True:
        text = scrape(metrics_agent.metrics_port)
        got = counts(text, "http_server_request_duration_seconds")
        mine = {k: v for k, v in got.items() if k[0] in ("nginx", "e2e-api")}
        if mine == dict(made) or time.time() > deadline:
            break
        time.sleep(0.3)
    assert mine == dict(made)
    clients = counts(text, "http_client_request_duration_seconds")
    assert sum(v for k, v in clients.items() if k[0] == "curl") >= sum(made.values())
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "sonde_events_total" in text and "process_resident_memory_bytes" in text


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
