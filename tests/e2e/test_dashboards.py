"""The shipped Grafana dashboards against a real Prometheus (Debian's
package, started here, scraping sonde every second) while the ktrdr
reference system runs and a Redis client talks to a Redis server: every
variable query and every panel query of every dashboard evaluates without
error and returns series. Grafana's own variables are given the values
Grafana would compute for a 1 s scrape interval."""
import json
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, Agent, free_port, wait_port
from test_ktrdr import COMMANDS, Ktrdr, run_calls

DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
RATE_INTERVAL = "4s"  # Grafana: max(4 x scrape interval, step + scrape interval)
RANGE_S = 30

PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sonde
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


class Prometheus:
    def __init__(self, workdir, sonde_port):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(dir=workdir, prefix="prometheus-"))
        config = self.dir / "prometheus.yml"
        config.write_text(PROMETHEUS_CONFIG.format(port=sonde_port))
        self.log = open(self.dir / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, timeout=30)

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


class Redis:
    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind",
                                      "127.0.0.1", "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL)
        wait_port(self.port)

    def commands(self):
        for args in (["SET", "k", "v"], ["GET", "k"], ["INCR", "n"], ["PING"]):
            subprocess.run(["redis-cli", "-p", str(self.port), *args], check=True,
                           capture_output=True, timeout=10)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def scraped(workdir):
    """sonde, a Prometheus scraping it, and traffic from the reference
    system and a Redis client, long enough for every rate to have points."""
    sonde_port = free_port()
    agent = Agent(workdir, name="sonde-dashboards", extra_env={
        "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(sonde_port), "SONDE_EXCLUDE_COMM": "prometheus"})
    prom = Prometheus(workdir, sonde_port)
    ktrdr = Ktrdr(workdir, "uvicorn")
    redis = Redis()
    try:
        for _ in range(3):
            run_calls(ktrdr, [(c, str(uuid.uuid4())) for c in COMMANDS], concurrent=True)
            redis.commands()
            time.sleep(1)
        wait_scraped(prom)
        yield prom
    finally:
        redis.stop()
        ktrdr.stop()
        prom.stop()
        assert agent.stop() == 0, agent.err_path.read_text()


def wait_scraped(prom, timeout=30):
    """Until the last calls' counts are scraped, and a few samples after."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = prom.api("query", query='http_server_request_duration_seconds_count'
                                      '{service_name="ktrdr-api"}')["result"]
        db = prom.api("query", query="db_client_operation_duration_seconds_count")["result"]
        if got and db:
            time.sleep(5)
            return
        time.sleep(0.5)
    raise TimeoutError("Prometheus never scraped the reference system's metrics")


VALUES = {"$service": ".*", "$route": ".*", "$api": "ktrdr-api", "$instance": ".*",
          "$__rate_interval": RATE_INTERVAL, "$__range": f"{RANGE_S}s"}


def substitute(expr, board):
    for var in board["templating"]["list"]:
        if var["type"] == "textbox":
            expr = expr.replace(f"${var['name']}", var["query"])
    for name, value in sorted(VALUES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def boards():
    return sorted(DASHBOARDS.glob("*.json"))


@pytest.mark.parametrize("path", boards(), ids=lambda p: p.stem)
def test_every_variable_query_has_values(scraped, path):
    board = json.loads(path.read_text())
    for var in board["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"]
        assert query.startswith("label_values(") and query.endswith(")"), query
        args = query[len("label_values("):-1]
        match, label = args.rsplit(",", 1)
        values = scraped.api(f"label/{label.strip()}/values",
                             **{"match[]": substitute(match.strip(), board)})
        assert values, f"{path.name}: variable {var['name']} has no values"


@pytest.mark.parametrize("path", boards(), ids=lambda p: p.stem)
def test_every_panel_query_returns_series(scraped, path):
    board = json.loads(path.read_text())
    now = time.time()
    empty = []
    for panel in board["panels"]:
        for target in panel["targets"]:
            expr = substitute(target["expr"], board)
            if target.get("instant"):
                result = scraped.api("query", query=expr, time=now)["result"]
            else:
                result = scraped.api("query_range", query=expr, start=now - RANGE_S, end=now,
                                     step=1)["result"]
            if not result:
                empty.append(f"{panel['title']} [{target['refId']}]: {expr}")
    assert not empty, f"{path.name}: queries with no series:\n" + "\n".join(empty)


def test_the_panels_use_the_dashboards_datasource_variable():
    for path in boards():
        board = json.loads(path.read_text())
        names = [v["name"] for v in board["templating"]["list"]]
        assert "datasource" in names, path.name
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", (path.name, panel["title"])
            assert panel["targets"], (path.name, panel["title"])
