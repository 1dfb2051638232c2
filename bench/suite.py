#!/usr/bin/python3
"""sonde's overhead suite: each scenario's variants run in alternating order,
round after round, in one sitting, and every ratio is against the untraced
(or plain) run of the same round.

  nginx    one worker on CPU 0, wrk on CPU 1, maximum rate: untraced; sonde
           with the ring buffer tracing both ends; nginx only (wrk excluded);
           the perf buffer instead of the ring buffer.
  uvicorn  FastAPI on uvicorn (Debian's python3) on CPU 0, maximum rate.
  chain    the ktrdr reference system: wrk -> api -> training worker over
           httpx, all services on CPU 0; plus the share of complete traces.
  proxy    an nginx reverse proxy (keep-alive upstream) in front of an nginx
           backend, maximum rate: untraced; traced; traced with the proxy
           run under another name, so that its objects are not read: what
           exact parents under concurrency cost, and what they give.
  node     a plain node:http server; the same with the OpenTelemetry JS SDK
           in process (batch OTLP export to a sink); the plain one under sonde.
  export   nginx at a fixed 5k and 10k req/s (h2load --h1 --rps) with OTLP
           export on, to the independent test receiver: latency and memory;
           and at maximum rate, export off against export on.
  logs     FastAPI on uvicorn logging one access line per request, logs off
           against logs on (console, to /dev/null), maximum rate; and a
           process writing 50k lines/s, logs off against on (OTLP/HTTP to an
           nginx answering 200): sonde's CPU per line and memory.
  metrics  nginx at maximum rate, metrics off against metrics on (the
           Prometheus endpoint, scraped every second as Prometheus would);
           and the agent's memory with one metric series against 10k
           distinct series (requests to 10k routes).

Maximum-rate runs build and count spans without exporting them (no receiver
on this machine takes ~200k spans/s). A round with a run that lost more than
STEAL_MAX of the CPU time to the hypervisor is run again, and counted. After
the rounds, one more run per scenario with kernel.bpf_stats_enabled
measures the probes' own run time.

The runs' logs and configuration go to a temporary folder, removed at the
end; SONDE_BENCH_KEEP=1 keeps it (its path is printed) for a post-mortem.

usage: bench/suite.py [--quick] [--only nginx,uvicorn,...] [--rounds N] [--json PATH]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import harness
from harness import ROOT, free_port, wait_port

sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from ports import free_port_block  # noqa: E402

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
TEST_APPS = ROOT / "tests" / "e2e" / "apps"
RECEIVER = ROOT / "tests" / "otlp_receiver" / "receiver.js"
PYTHON = "/usr/bin/python3"


@dataclass
class Variant:
    label: str
    sonde_env: dict = None  # None: not traced
    flavour: str = "plain"  # which build of the server this variant runs
    floor: bool = False  # sonde's tracepoints with empty programs, no agent


# A run in which the hypervisor took more of this VM's CPU time than this
# is not a measurement of sonde: its round is run again.
STEAL_MAX = 0.05
RING = {"SONDE_BUFFER": "ring"}
OTLP = dict(RING, OTEL_TRACES_EXPORTER="otlp")  # the endpoint is the scenario's receiver


class Server:
    """A server process (pinned to CPU 0 unless cpu is None), stopped with SIGTERM."""

    def __init__(self, cmd, port, cwd=None, env=None, cpu="0"):
        pin = ["taskset", "-c", cpu] if cpu else []
        self.proc = subprocess.Popen(pin + cmd, cwd=cwd,
                                     env=dict(os.environ, **(env or {})),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.port = port
        wait_port(port, self.proc)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


NGINX_CONF = """
worker_processes 1;
{pin}
daemon off;
pid {dir}/{name}.pid;
error_log {dir}/{name}-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    client_max_body_size 64m;
    client_body_buffer_size 16m;
    client_body_temp_path {dir}/{name}-body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    {upstream}
    server {{
        listen 127.0.0.1:{port};
        {location}
    }}
}}
"""


def nginx(workdir, name, sink=False, backend=None, program="nginx"):
    """The benchmarked nginx (one worker pinned to CPU 0), or an unpinned sink
    that takes any OTLP/HTTP body (/v1/traces, /v1/logs...) and answers 200,
    or, with a backend port, a reverse proxy to it over keep-alive
    connections. `program` is the name nginx runs under (a link to it)."""
    port = free_port()
    conf = Path(workdir) / f"{name}.conf"
    location = 'location / { return 200 "hello\\n"; }'
    if sink:
        location = "location /v1/ { return 200; }"
    elif backend:
        location = ('location / { proxy_pass http://backend; proxy_http_version 1.1; '
                    'proxy_set_header Connection ""; }')
    conf.write_text(NGINX_CONF.format(
        dir=workdir, port=port, name=name, location=location,
        pin="" if sink else "worker_cpu_affinity 01;",
        upstream=(f"upstream backend {{ server 127.0.0.1:{backend}; keepalive 32; }}"
                  if backend else "")))
    binary = "nginx"
    if program != "nginx":
        binary = str(Path(workdir) / program)
        if not os.path.exists(binary):
            os.symlink(shutil.which("nginx"), binary)
    return Server([binary, "-c", str(conf), "-e", str(Path(workdir) / f"{name}.log")], port,
                  cpu=None)


class Scenario:
    """Servers for one workload, its load generator and its variants; the
    first variant is the baseline the others are compared with."""
    name = title = ""
    variants = []
    spans_per_request = {"server": 1, "client": 1}
    kernel_variant = None  # the variant whose probes' run time is measured
    comm = None  # the server's process name, when a variant excludes it
    server = None  # the server the load hits, started once

    def start(self, workdir, flavour):
        if self.server is None:
            self.server = self.start_server(workdir, flavour)

    def start_server(self, workdir, flavour):
        raise NotImplementedError

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None

    def load(self, seconds, workdir, tag):
        return harness.wrk(self.server.port, seconds)

    def server_pids(self):
        return [self.server.proc.pid]

    def observe(self, variant, result):
        """Adds what only this scenario knows to one run's result."""

    def expected_spans(self, variant, requests):
        """Spans of each kind the variant's runs must build: none of a kind
        whose process (the server's `comm`, or wrk) is excluded by name."""
        expected = dict(self.spans_per_request)
        excluded = (variant.sonde_env or {}).get("SONDE_EXCLUDE_COMM", "").split(",")
        if "wrk" in excluded:
            expected["client"] = 0
        if self.comm in excluded:
            expected["server"] = 0
        return {kind: n * requests for kind, n in expected.items()}


class NginxMax(Scenario):
    name, title = "nginx", "nginx, 1 worker on CPU 0, wrk -t1 -c16 on CPU 1, maximum rate"
    variants = [Variant("untraced"),
                Variant("sonde, ring buffer", RING),
                Variant("sonde, ring buffer, nginx only", dict(RING, SONDE_EXCLUDE_COMM="wrk")),
                Variant("sonde, perf buffer", {"SONDE_BUFFER": "perf"}),
                # The probes attached, each call returning after its lookup.
                Variant("sonde, every connection excluded",
                        dict(RING, SONDE_EXCLUDE_COMM="nginx,wrk")),
                Variant("sonde's tracepoints, empty programs", floor=True)]
    kernel_variant = variants[1]
    comm = "nginx"

    def start_server(self, workdir, flavour):
        return nginx(workdir, "nginx")


class UvicornMax(Scenario):
    name, title = "uvicorn", "FastAPI on uvicorn on CPU 0, wrk -t1 -c16 on CPU 1, maximum rate"
    variants = [Variant("untraced"), Variant("sonde, ring buffer", RING)]
    kernel_variant = variants[1]

    def start_server(self, workdir, flavour):
        port = free_port()
        return Server([PYTHON, "-m", "uvicorn", "fastapi_app:app", "--host", "127.0.0.1",
                       "--port", str(port), "--no-access-log", "--log-level", "warning"],
                      port, cwd=APPS)

    def load(self, seconds, workdir, tag):
        return harness.wrk(self.server.port, seconds, path="/items/42")


class Chain(Scenario):
    name, title = "chain", ("ktrdr api -> training worker over httpx (all on CPU 0), "
                            "wrk -t1 -c64 on CPU 1, maximum rate")
    variants = [Variant("untraced"), Variant("sonde, ring buffer", RING),
                Variant("sonde, ring buffer, job spans",
                        dict(RING, SONDE_ENTRY_POINTS="python:_training_job,python:_backtest_job"))]
    # wrk's call, the api's two health checks and its call to the worker,
    # and the job's two status reports to the api
    spans_per_request = {"server": 6, "client": 6}
    kernel_variant = variants[1]
    RUN = ROOT / "examples" / "ktrdr" / "run.sh"
    env = None  # run.sh's, once the system is up

    def start(self, workdir, flavour):
        if self.env is not None:
            return
        self.env = dict(os.environ, KTRDR_PORT_BASE=str(free_port_block(7)),
                        KTRDR_RUN_DIR=str(Path(workdir) / "ktrdr"))
        subprocess.run(["taskset", "-c", "0", str(self.RUN), "start"], env=self.env, check=True,
                       stdout=subprocess.DEVNULL)

    def stop(self):
        if self.env is not None:
            subprocess.run([str(self.RUN), "stop"], env=self.env, check=True)
            self.env = None

    def load(self, seconds, workdir, tag):
        return harness.wrk(int(self.env["KTRDR_PORT_BASE"]), seconds, connections=64,
                           script=APPS / "chain_post.lua")

    def server_pids(self):
        run_dir = Path(self.env["KTRDR_RUN_DIR"])
        return [int(p.read_text()) for p in run_dir.glob("*.pid")]

    def observe(self, variant, result):
        """A lower bound of the share of complete traces (wrk -> api -> the
        api's two health checks and its call -> the workers). Each request
        gives twelve spans and, linked, three roots (the job's two status
        reports start their own: nothing awaits a job), or one with job
        spans (the reports are under the job's span); every span that
        became a root of its own instead of joining breaks at most one
        trace. Counted over the spans built, so that the requests still in
        flight when wrk stops (64 of them, at ~0.3 s each) do not count as
        missing."""
        stats = result.get("stats")
        if not stats:
            return
        requests = (stats["spans_server"] + stats["spans_client"]) / 12
        roots = 1 if "SONDE_ENTRY_POINTS" in (variant.sonde_env or {}) else 3
        extra_roots = max(0, stats["trace_roots"] - roots * requests)
        result["complete_traces"] = max(0.0, 1 - extra_roots / requests) if requests else 0.0


class TwoHops(Scenario):
    """A front server calling a backend: four spans per request, and one
    root, wrk's call; every other root is a call that lost its parent."""
    spans_per_request = {"server": 2, "client": 2}
    backend = None

    def server_pids(self):
        return [self.server.proc.pid, self.backend.proc.pid]

    def stop(self):
        super().stop()
        if self.backend is not None:
            self.backend.stop()
            self.backend = None

    def observe(self, variant, result):
        """The share of complete traces."""
        stats = result.get("stats")
        if not stats:
            return
        requests = stats["spans_server"] / self.spans_per_request["server"]
        extra_roots = max(0, stats["trace_roots"] - requests)
        result["complete_traces"] = max(0.0, 1 - extra_roots / requests) if requests else 0.0


class ProxyMax(TwoHops):
    """What linking costs where it is hardest: a reverse proxy with many
    requests in flight on one thread. The third variant runs the same nginx
    under another name, which sonde does not read as nginx (bpf/nginx.bpf.h):
    its upstream calls are linked only when no other request is in flight."""
    name, title = "proxy", ("nginx reverse proxy (1 worker, keep-alive upstream) to an nginx "
                            "backend, both on CPU 0, wrk -t1 -c16 on CPU 1, maximum rate")
    variants = [Variant("untraced"),
                Variant("sonde, ring buffer", RING),
                Variant("sonde, nginx's objects not read", RING, flavour="renamed")]
    kernel_variant = variants[1]
    flavour = None

    def start(self, workdir, flavour):
        if self.flavour != flavour:
            Scenario.stop(self)  # the proxy only: the backend stays up
        if self.backend is None:
            self.backend = nginx(workdir, "backend")
        self.flavour = flavour
        super().start(workdir, flavour)

    def start_server(self, workdir, flavour):
        return nginx(workdir, "proxy", backend=self.backend.port,
                     program="nginx" if flavour == "plain" else "proxy-nginx")


class NodeChainMax(TwoHops):
    """What linking costs on Node.js: one thread serving 16 requests at
    once, each calling a backend over a keep-alive agent. The third
    variant runs both services from a copy of node without its symbol
    table, whose loop sonde cannot find (user/trace/uvloop.c): their calls
    are linked only when no other request is in flight."""
    name, title = "nodechain", ("node front -> node backend (keep-alive agent), both on CPU 0, "
                                "wrk -t1 -c16 on CPU 1, maximum rate")
    variants = [Variant("untraced"),
                Variant("sonde, ring buffer", RING),
                Variant("sonde, loop not followed", RING, flavour="stripped")]
    kernel_variant = variants[1]
    flavour = None

    def start(self, workdir, flavour):
        if self.flavour != flavour:
            self.stop()
        self.flavour = flavour
        super().start(workdir, flavour)

    def start_server(self, workdir, flavour):
        node = "node"
        if flavour == "stripped":
            node = str(Path(workdir) / "node-stripped")
            if not os.path.exists(node):
                subprocess.run(["objcopy", "--strip-all", shutil.which("node"), node], check=True)
        app = str(TEST_APPS / "node_chain.js")
        backend_port, port = free_port(), free_port()
        self.backend = Server([node, app, "backend", str(backend_port), "0"], backend_port)
        server = Server([node, app, "front", str(port), str(backend_port)], port)
        harness.wrk(port, 1, path="/call/0123456789ab")  # the JIT's warm-up
        return server

    def load(self, seconds, workdir, tag):
        return harness.wrk(self.server.port, seconds, path="/call/0123456789ab")


class NodeMax(Scenario):
    name, title = "node", "node:http on CPU 0, wrk -t1 -c16 on CPU 1, maximum rate"
    variants = [Variant("plain"),
                Variant("OpenTelemetry JS SDK in process", flavour="sdk"),
                Variant("sonde, ring buffer", RING)]
    kernel_variant = variants[2]
    flavour = sink = None

    def start(self, workdir, flavour):
        if self.flavour != flavour:
            Scenario.stop(self)  # the server only: the SDK's sink stays up
        if self.sink is None:
            self.sink = nginx(workdir, "sdk-sink", sink=True)
        self.flavour = flavour
        super().start(workdir, flavour)

    def start_server(self, workdir, flavour):
        port = free_port()
        preload = ["-r", str(APPS / "otel_sdk.js")] if flavour == "sdk" else []
        env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{self.sink.port}/v1/traces",
               "OTEL_SERVICE_NAME": "node-bench"}
        server = Server(["node"] + preload + [str(APPS / "node_server.js"), str(port)], port,
                        env=env)
        harness.wrk(port, 1)  # the JIT's warm-up, outside the measured runs
        return server

    def stop(self):
        super().stop()
        if self.sink is not None:
            self.sink.stop()
            self.sink = None


class Export(Scenario):
    """nginx with OTLP/gRPC export to the test receiver, for the variants
    that ask for it (OTEL_TRACES_EXPORTER=otlp)."""

    def start_server(self, workdir, flavour):
        self.receiver_err = open(Path(workdir) / f"receiver-{self.name}.err", "w")
        # The receiver stands in for a collector on another host: at the idle
        # priority it decodes only on CPU time neither nginx nor the load
        # generator wants, so that its bursts (a batch of 512 spans at once)
        # do not show up as the latency of requests that happen to wait
        # behind them.
        self.receiver = subprocess.Popen(
            ["chrt", "--idle", "0", "node", str(RECEIVER),
             json.dumps({"grpc_port": 0, "keep_spans": False})],
            stdout=subprocess.PIPE, stderr=self.receiver_err, text=True)
        ports = json.loads(self.receiver.stdout.readline())
        self.control_port = ports["control_port"]
        endpoint = f"http://127.0.0.1:{ports['grpc_port']}"
        for v in self.variants:
            if (v.sonde_env or {}).get("OTEL_TRACES_EXPORTER") == "otlp":
                v.sonde_env = dict(v.sonde_env, OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
                                   OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
        self.received_before = self.received()
        return nginx(workdir, f"nginx-{self.name}")

    def received(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.control_port}/requests") as r:
            return sum(e["span_count"] for e in json.load(r) if e["accepted"])

    def stop(self):
        if self.server is not None:
            self.receiver.terminate()
            self.receiver.wait()
            self.receiver_err.close()
        super().stop()

    def observe(self, variant, result):
        received = self.received()
        if (variant.sonde_env or {}).get("OTEL_TRACES_EXPORTER") == "otlp":
            result["spans_received"] = received - self.received_before
        self.received_before = received


class MetricsMax(NginxMax):
    """nginx at maximum rate, metrics off against metrics on: what counting
    every exchange costs the agent per request."""

    name = "metrics"
    title = ("nginx at maximum rate (wrk -t1 -c16 on CPU 1), metrics off against the "
             "Prometheus endpoint on, scraped every second")
    kernel_variant = None

    def __init__(self):
        self.metrics_port = free_port()
        self.variants = [Variant("untraced"), Variant("sonde, metrics off", RING),
                         Variant("sonde, metrics on", dict(
                             RING, OTEL_METRICS_EXPORTER="prometheus",
                             OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
                             OTEL_EXPORTER_PROMETHEUS_PORT=str(self.metrics_port)))]

    def load(self, seconds, workdir, tag):
        scraper = Scraper(self.metrics_port)
        try:
            return harness.wrk(self.server.port, seconds)
        finally:
            scraper.stop()


class LogsMax(UvicornMax):
    """One log line per request (uvicorn's access log, on stderr): what
    turning logs on costs per line."""

    name = "logs"
    title = ("FastAPI on uvicorn with its access log (one line per request) on CPU 0, "
             "wrk -t1 -c16 on CPU 1, logs off against on")
    kernel_variant = None
    variants = [Variant("untraced"), Variant("sonde, logs off", RING),
                Variant("sonde, logs on", dict(RING, OTEL_LOGS_EXPORTER="console"))]

    def start_server(self, workdir, flavour):
        port = free_port()
        return Server([PYTHON, "-m", "uvicorn", "fastapi_app:app", "--host", "127.0.0.1",
                       "--port", str(port), "--log-level", "info"], port, cwd=APPS)


FLOOD = ROOT / "tests" / "e2e" / "apps" / "log_flood.py"


def log_flood_cost(workdir, rounds, rate=50000, seconds=5):
    """A process writing `rate` lines a second: sonde's CPU with logs off
    and on (exported over OTLP/HTTP to an nginx that answers 200; the limit
    raised above the rate), alternating; the difference per line is what a
    line costs."""
    sink = nginx(workdir, "logs-sink", sink=True)
    variants = {"off": dict(RING),
                "on": dict(RING, OTEL_LOGS_EXPORTER="otlp",
                           OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{sink.port}",
                           SONDE_LOGS_RATE_LIMIT=str(2 * rate))}
    runs = {"off": [], "on": []}
    try:
        return flood_rounds(workdir, rounds, rate, seconds, variants, runs)
    finally:
        sink.stop()


def flood_rounds(workdir, rounds, rate, seconds, variants, runs):
    for n in range(rounds):
        for kind in (("off", "on") if n % 2 == 0 else ("on", "off")):
            sonde = harness.Sonde(workdir, f"flood-{kind}-{n}", variants[kind])
            before = sonde.cpu_seconds()
            flood = subprocess.run([PYTHON, str(FLOOD), str(seconds), str(rate)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   timeout=120)
            time.sleep(1.5)  # the last records exported
            cpu = sonde.cpu_seconds() - before
            rss = sonde.peak_rss_mb()
            stats = sonde.stop()
            lines = int(flood.stderr.split()[-1])
            runs[kind].append({"lines": lines, "cpu_s": cpu, "peak_rss_mb": rss,
                               "records": stats.get("log_records_made", 0),
                               "exported": stats.get("log_records_exported", 0),
                               "dropped": stats.get("log_writes_dropped", 0)
                               + stats.get("log_records_dropped", 0)})
            print(f"  flood round {n + 1} {kind}: {runs[kind][-1]}", flush=True)
    per_line = [(on["cpu_s"] - off["cpu_s"]) * 1e6 / on["lines"]
                for on, off in zip(runs["on"], runs["off"])]
    return {"rate": rate, "runs": runs, "us_per_line": harness.median(per_line),
            "us_per_line_rounds": per_line,
            "peak_rss_mb_on": max(r["peak_rss_mb"] for r in runs["on"])}


class Scraper:
    """Scrapes the metrics endpoint once a second while a load runs, when
    something listens there."""

    def __init__(self, port):
        self.proc = subprocess.Popen([PYTHON, "-c", f"""
import time, urllib.request
while True:
    try:
        urllib.request.urlopen("http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        pass
    time.sleep(1)
"""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


# Routes of letters only: sonde keeps them as they are (digits would make
# them identifiers, one route).
SERIES_CLIENT = """
import http.client, sys
def letters(i):
    out = "a"
    while i:
        out += chr(ord("a") + i % 26)
        i //= 26
    return out
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for i in range(int(sys.argv[2])):
    conn.request("GET", f"/{letters(i if sys.argv[3] == 'distinct' else 0)}/x")
    conn.getresponse().read()
"""


def series_memory(workdir, rounds, series=10000):
    """The agent's resident memory after `series` requests to one route
    against the same number of requests to `series` distinct routes (so as
    many series), in alternating order; each run checks the series count
    the agent reports."""
    server = nginx(workdir, "nginx-series")
    port = free_port()
    env = dict(RING, OTEL_METRICS_EXPORTER="prometheus", OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
               OTEL_EXPORTER_PROMETHEUS_PORT=str(port),
               SONDE_METRICS_CARDINALITY_LIMIT=str(2 * series))
    runs = {"one": [], "distinct": []}
    try:
        for n in range(rounds):
            for kind in (("one", "distinct") if n % 2 == 0 else ("distinct", "one")):
                sonde = harness.Sonde(workdir, f"series-{kind}-{n}", env)
                subprocess.run([PYTHON, "-c", SERIES_CLIENT, str(server.port), str(series), kind],
                               check=True, timeout=300)
                time.sleep(1.5)  # the last exchanges counted, the counters read
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
                    text = r.read().decode()
                counted = next(int(line.split()[1]) for line in text.splitlines()
                               if line.startswith("sonde_metric_series "))
                runs[kind].append({"rss_mb": harness.rss_mb(sonde.proc.pid), "series": counted,
                                   "exposition_bytes": len(text)})
                sonde.stop()
                print(f"  series round {n + 1} {kind}: {runs[kind][-1]}", flush=True)
    finally:
        server.stop()
    one = harness.median([r["rss_mb"] for r in runs["one"]])
    distinct = harness.median([r["rss_mb"] for r in runs["distinct"]])
    return {"series": series, "runs": runs, "rss_mb_one_series": one,
            "rss_mb_distinct_series": distinct,
            "rss_mb_deltas": [d["rss_mb"] - o["rss_mb"] for d, o in zip(runs["distinct"], runs["one"])],
            "bytes_per_series": (distinct - one) * 1024 * 1024 / series}


class ExportFixed(Export):
    """nginx at a fixed rate: latency and memory with export on."""

    def __init__(self, rate, export_off=False):
        # With export off beside it, the table splits a latency shift into
        # what tracing costs and what exporting adds.
        middle = [Variant("sonde, ring buffer, export off", RING)] if export_off else []
        self.variants = ([Variant("untraced")] + middle
                         + [Variant("sonde, ring buffer, OTLP/gRPC export", OTLP)])
        self.rate = rate
        self.name = f"export-{rate // 1000}k"
        self.title = (f"nginx at a fixed {rate} req/s (h2load --h1 -c10 on CPU 1), "
                      "OTLP/gRPC export to the test receiver")

    def load(self, seconds, workdir, tag):
        return harness.h2load_fixed(self.server.port, seconds, self.rate, workdir, tag)


class ExportMax(Export):
    """nginx at maximum rate, export off against OTLP/gRPC export on: what
    exporting costs the traced programs when the host has no spare CPU."""

    name = "export-max"
    title = ("nginx at maximum rate (wrk -t1 -c16 on CPU 1), export off against "
             "OTLP/gRPC export to the test receiver")
    variants = [Variant("untraced"), Variant("sonde, ring buffer, export off", RING),
                Variant("sonde, ring buffer, OTLP/gRPC export", OTLP)]


def warm_up(sc, workdir):
    """One short load before the rounds. A system that has just started can
    refuse it (the chain's first warm-up once failed in a full run, cause
    not found): that is reported and tried once more, not hidden."""
    try:
        sc.load(1, workdir, f"{sc.name}-warmup")
    except RuntimeError as err:
        print(f"  {sc.name} warm-up failed, trying again in 2 s: {err}", flush=True)
        time.sleep(2)
        sc.load(1, workdir, f"{sc.name}-warmup-2")


def run_round(sc, n, attempt, seconds, workdir):
    """One run of every variant, in alternating order; each run's result
    carries the share of CPU time the hypervisor stole during it."""
    results = {}
    order = sc.variants if n % 2 == 0 else sc.variants[::-1]
    for v in order:
        sc.start(workdir, v.flavour)
        tag = f"{sc.name}-{sc.variants.index(v)}-{n}-{attempt}"
        load = lambda: sc.load(seconds, workdir, tag)  # noqa: E731
        ticks = harness.cpu_ticks()
        if v.floor:
            result = harness.under_floor(workdir, tag, load, sc.server_pids())
        elif v.sonde_env is None:
            result = harness.untraced(load, sc.server_pids())
        else:
            result = harness.traced(v.sonde_env, workdir, tag, load, sc.server_pids())
        result["steal"] = harness.steal_share(ticks, harness.cpu_ticks())
        sc.observe(v, result)
        results[v.label] = result
    return results


def run_scenario(sc, rounds, retries, seconds, workdir):
    """A round in which the hypervisor took more than STEAL_MAX of this VM's
    CPU time in any run is measured again (at most `retries` times per
    scenario): on these VMs, runs with 30-40 % stolen measured untraced
    nginx at a third of its rate. The retries are counted in the report."""
    runs = {v.label: [] for v in sc.variants}
    kernel, dropped = None, []
    try:
        sc.start(workdir, sc.variants[0].flavour)
        warm_up(sc, workdir)
        n = 0
        while n < rounds:
            results = run_round(sc, n, len(dropped), seconds, workdir)
            steal = max(r["steal"] for r in results.values())
            summary = ", ".join(f"{v.label} {results[v.label]['rps']:.0f}" for v in sc.variants)
            if steal > STEAL_MAX and len(dropped) < retries:
                dropped.append(steal)
                print(f"  {sc.name} round {n + 1} measured again, {steal:.0%} of the CPU time "
                      f"was stolen by the host: {summary}", flush=True)
                continue
            for label, result in results.items():
                runs[label].append(result)
            n += 1
            print(f"  {sc.name} round {n}: {summary}", flush=True)
        if sc.kernel_variant is not None:
            sc.start(workdir, sc.kernel_variant.flavour)
            kernel = harness.kernel_cost(sc.kernel_variant.sonde_env, workdir, f"{sc.name}-bpfstats",
                                         lambda: sc.load(seconds, workdir, f"{sc.name}-bpfstats"))
    finally:
        sc.stop()
    report = summarize(sc, runs, kernel)
    report["rounds_measured_again"] = dropped
    return report


def summarize_variant(sc, v, runs, base_runs):
    requests = sum(r["requests"] for r in runs)
    out = {
        "rps": harness.median([r["rps"] for r in runs]),
        "ratios": [r["rps"] / b["rps"] for r, b in zip(runs, base_runs)],
        "p50_ms": harness.median([r["p50_ms"] for r in runs]),
        "p99_ms": harness.median([r["p99_ms"] for r in runs]),
        "p50_ratios": [r["p50_ms"] / b["p50_ms"] for r, b in zip(runs, base_runs)],
        "p99_ratios": [r["p99_ms"] / b["p99_ms"] for r, b in zip(runs, base_runs)],
        "steal": max(r["steal"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "server_cpu_us_per_request": 1e6 * sum(r["server_cpu_s"] for r in runs) / requests,
        "requests": requests,
        "runs": runs,
    }
    out["ratio"] = harness.median(out["ratios"])
    out["p50_ratio"] = harness.median(out["p50_ratios"])
    out["p99_ratio"] = harness.median(out["p99_ratios"])
    if v.sonde_env is None:
        return out
    stats = [r["stats"] for r in runs]
    expected = sc.expected_spans(v, requests)
    total = lambda key: sum(s[key] for s in stats)  # noqa: E731
    out.update({
        "agent_cpu_us_per_request": 1e6 * sum(r["sonde_cpu_s"] for r in runs) / requests,
        "agent_peak_rss_mb": max(r["sonde_peak_rss_mb"] for r in runs),
        "completeness_server": (total("spans_server") / expected["server"]
                                if expected["server"] else None),
        "unexpected_spans": (total("spans_server") if not expected["server"] else 0)
                            + (total("spans_client") if not expected["client"] else 0),
        "completeness_client": (total("spans_client") / expected["client"]
                                if expected["client"] else None),
        "lost_events": total("lost_ringbuf_full") + total("lost_conn_map_full"),
        "events_per_request": total("events") / requests,
        "spans_built": total("spans_built"), "spans_exported": total("spans_exported"),
        "spans_dropped": total("spans_dropped"),
        "spans_failed": total("spans_failed") + total("spans_refused"),
    })
    if "complete_traces" in runs[0]:
        out["complete_traces"] = harness.median([r["complete_traces"] for r in runs])
    if "spans_received" in runs[0]:
        out["spans_received"] = sum(r["spans_received"] for r in runs)
    return out


def summarize(sc, runs, kernel):
    base = runs[sc.variants[0].label]
    variants = {v.label: summarize_variant(sc, v, runs[v.label], base) for v in sc.variants}
    if kernel:
        variants[sc.kernel_variant.label]["kernel"] = kernel
    return {"title": sc.title, "baseline": sc.variants[0].label, "variants": variants}


def fmt(value, pattern, empty=""):
    return empty if value is None else pattern.format(value)


def print_scenario(name, s):
    print(f"\n{name}: {s['title']}")
    print(f"  {'variant':<37} {'req/s':>8} {'ratio':>6} {'rounds':<18} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'app us/req':>10} {'agent us/req':>12} {'kernel us/req':>13} {'RSS MB':>7} "
          f"{'complete':>9} {'lost':>5}")
    exports = any("spans_received" in v for v in s["variants"].values())
    for label, v in s["variants"].items():
        kernel = v.get("kernel", {}).get("kernel_us_per_request")
        rounds = ",".join(f"{r:.2f}" for r in v["ratios"])
        complete = v.get("completeness_server")
        print(f"  {label:<37} {v['rps']:>8.0f} {v['ratio']:>6.3f} {rounds:<18} "
              f"{v['p50_ms']:>7.3f} {v['p99_ms']:>7.3f} {v['server_cpu_us_per_request']:>10.2f} "
              f"{fmt(v.get('agent_cpu_us_per_request'), '{:.2f}'):>12} {fmt(kernel, '{:.2f}'):>13} "
              f"{fmt(v.get('agent_peak_rss_mb'), '{:.1f}'):>7} "
              f"{fmt(complete and 100 * complete, '{:.2f}%'):>9} {fmt(v.get('lost_events'), '{}'):>5}")
        extras = []
        if v.get("completeness_client") is not None:
            extras.append(f"client spans {100 * v['completeness_client']:.2f}%")
        if "complete_traces" in v:
            extras.append(f"complete traces >= {100 * v['complete_traces']:.2f}%")
        if exports and label != s["baseline"]:
            extras.append(f"p50 ratio {v['p50_ratio']:.3f}, p99 ratio {v['p99_ratio']:.3f}")
        if "spans_received" in v:
            extras.append(f"spans received {v['spans_received']} of {v['spans_built']} built "
                          f"({v['spans_dropped']} dropped, {v['spans_failed']} failed)")
        if v.get("unexpected_spans"):
            extras.append(f"{v['unexpected_spans']} spans of excluded processes")
        if v["errors"]:
            extras.append(f"{v['errors']} non-2xx responses")
        if extras:
            print(f"  {'':<37} " + "; ".join(extras))
    again = s.get("rounds_measured_again", [])
    kept = max(v["steal"] for v in s["variants"].values())
    print(f"  host steal: at most {kept:.1%} in a kept run; {len(again)} rounds measured again"
          + (" (steal " + ", ".join(f"{x:.0%}" for x in again) + ")" if again else ""))


def print_series_memory(m):
    deltas = ", ".join(f"{d:.1f}" for d in m["rss_mb_deltas"])
    print(f"  agent RSS after {m['series']} requests: one series {m['rss_mb_one_series']:.1f} MB, "
          f"{m['series']} series {m['rss_mb_distinct_series']:.1f} MB (per round +{deltas} MB; "
          f"{m['bytes_per_series']:.0f} bytes per series)")


def print_flood(f, variants):
    on, off = variants["sonde, logs on"], variants["sonde, logs off"]
    per_request = on["agent_cpu_us_per_request"] - off["agent_cpu_us_per_request"]
    rounds = ", ".join(f"{x:.2f}" for x in f["us_per_line_rounds"])
    print(f"  logs on: +{per_request:.2f} us of agent CPU per request (one line each)")
    print(f"  {f['rate']} lines/s: {f['us_per_line']:.2f} us of agent CPU per line "
          f"(rounds {rounds}); peak RSS {f['peak_rss_mb_on']:.1f} MB")


def all_traced(v):
    """Every request's spans built and nothing lost."""
    return v["completeness_server"] >= 1.0 and v["lost_events"] == 0


def none_traced(v):
    """No span of an excluded process, and nothing lost."""
    return v["unexpected_spans"] == 0 and v["lost_events"] == 0


def kernel_and_agent(v):
    return v["agent_cpu_us_per_request"] + v["kernel"]["kernel_us_per_request"]


# Each goal: what it says, its scenario and variant (None: all of the
# scenario's variants), the value measured, ">=" or "<=" and the bound,
# and what else must hold for it to count as met.
GOALS = [
    ("nginx ratio, both ends traced", "nginx", "sonde, ring buffer",
     lambda v: v["ratio"], ">=", 0.95, all_traced),
    ("nginx ratio, every connection excluded", "nginx", "sonde, every connection excluded",
     lambda v: v["ratio"], ">=", 0.98, none_traced),
    ("nginx kernel + agent us/request", "nginx", "sonde, ring buffer",
     kernel_and_agent, "<=", 1.5, None),
    ("uvicorn ratio", "uvicorn", "sonde, ring buffer", lambda v: v["ratio"], ">=", 0.99, all_traced),
    ("chain ratio, job spans on", "chain", "sonde, ring buffer, job spans",
     lambda v: v["ratio"], ">=", 0.99, None),
    ("node ratio", "node", "sonde, ring buffer", lambda v: v["ratio"], ">=", 0.95, all_traced),
    ("agent RSS MB at 10k req/s", "export-10k", "sonde, ring buffer, OTLP/gRPC export",
     lambda v: v["agent_peak_rss_mb"], "<=", 32, None),
    ("p50 ratio at 5k req/s, export on", "export-5k", "sonde, ring buffer, OTLP/gRPC export",
     lambda v: v["p50_ratio"], "<=", 1.05, None),
    ("p99 ratio at 5k req/s, export on", "export-5k", "sonde, ring buffer, OTLP/gRPC export",
     lambda v: v["p99_ratio"], "<=", 1.05, None),
    ("max rate: ratio export costs", "export-max", None,
     lambda vs: export_cost(vs), "<=", 0.02, None),
    ("nginx ratio, metrics on", "metrics", "sonde, metrics on",
     lambda v: v["ratio"], ">=", 0.95, all_traced),
    ("metrics cost, agent us/request", "metrics", None,
     lambda vs: metrics_cost(vs), "<", 0.1, None),
]


def metrics_cost(variants):
    """Agent CPU per request added by counting metrics, at maximum rate."""
    return (variants["sonde, metrics on"]["agent_cpu_us_per_request"]
            - variants["sonde, metrics off"]["agent_cpu_us_per_request"])


def export_cost(variants):
    """Ratio points lost by turning OTLP export on, at maximum rate."""
    return (variants["sonde, ring buffer, export off"]["ratio"]
            - variants["sonde, ring buffer, OTLP/gRPC export"]["ratio"])


def goals(results):
    """Each goal of a scenario that ran: its value, bound, margin (how far
    on the right side of the bound, negative when missed) and whether met."""
    out = []
    for text, scenario, label, value_of, op, bound, also in GOALS:
        if scenario not in results:
            continue
        variants = results[scenario]["variants"]
        subject = variants[label] if label else variants
        value = value_of(subject)
        margin = bound - value if op.startswith("<") else value - bound
        met = (margin > 0 or (margin == 0 and "=" in op)) and (also is None or also(subject))
        out.append({"goal": f"{text} {op} {bound}", "value": round(value, 3),
                    "margin": round(margin, 3), "met": met})
    return out


def run_scenarios(keys, scenarios, timing, workdir):
    rounds, retries, seconds, fixed_seconds = timing
    results = {}
    for key in keys:
        for sc in scenarios[key]:
            duration = fixed_seconds if isinstance(sc, ExportFixed) else seconds
            results[sc.name] = run_scenario(sc, rounds, retries, duration, workdir)
        if key == "metrics":
            results["metrics"]["series_memory"] = series_memory(workdir, rounds)
        if key == "logs":
            results["logs"]["flood"] = log_flood_cost(workdir, rounds)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 rounds of 3 s, none measured again for host steal, "
                        "instead of 5 rounds of 8 s")
    parser.add_argument("--only",
                        default="nginx,uvicorn,chain,proxy,node,nodechain,export,metrics,logs")
    parser.add_argument("--rounds", type=int,
                        help="alternating rounds a scenario, instead of 5 (2 with --quick): a goal "
                        "near its bound wants more, as uvicorn's median of 5 moved "
                        "between 0.963 and 0.990 across sittings on the 2-core VM")
    parser.add_argument("--json", default=str(ROOT / "build" / "bench.json"))
    args = parser.parse_args()
    # A quick look keeps its time limit on a noisy host: it shows the
    # steal of its runs rather than measuring them again.
    rounds, retries, seconds, fixed_seconds = (2, 0, 3, 4) if args.quick else (5, 5, 8, 10)
    rounds = args.rounds or rounds
    scenarios = {"nginx": [NginxMax()], "uvicorn": [UvicornMax()], "chain": [Chain()],
                 "proxy": [ProxyMax()], "node": [NodeMax()], "nodechain": [NodeChainMax()],
                 "export": [ExportFixed(5000, export_off=True), ExportFixed(10000), ExportMax()],
                 "metrics": [MetricsMax()], "logs": [LogsMax()]}
    workdir = tempfile.mkdtemp(prefix="sonde-bench-")
    os.chmod(workdir, 0o755)
    started = time.time()
    try:
        results = run_scenarios(args.only.split(","), scenarios, (rounds, retries, seconds,
                                                                 fixed_seconds), workdir)
    finally:
        if os.environ.get("SONDE_BENCH_KEEP"):
            print(f"runs' logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {"mode": "quick" if args.quick else "full", "rounds": rounds,
              "seconds": seconds, "fixed_rate_seconds": fixed_seconds,
              "wall_seconds": round(time.time() - started), "scenarios": results,
              "goals": goals(results)}
    for name, s in results.items():
        print_scenario(name, s)
        if "series_memory" in s:
            print_series_memory(s["series_memory"])
        if "flood" in s:
            print_flood(s["flood"], s["variants"])
    print("\ngoals")
    for g in report["goals"]:
        print(f"  {g['goal']:<50} {g['value']:>8}  margin {g['margin']:>+8}  "
              f"{'met' if g['met'] else 'MISSED'}")
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"\n{report['mode']} run, {rounds} rounds, {report['wall_seconds']} s; JSON: {args.json}")


if __name__ == "__main__":
    main()
