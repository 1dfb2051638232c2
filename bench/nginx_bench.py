#!/usr/bin/python3
"""nginx at its maximum rate, with and without sonde, in alternating runs.

nginx runs one worker pinned to CPU 0, wrk runs on CPU 1 (16 connections,
keep-alive). sonde builds and counts spans but exports none
(OTEL_TRACES_EXPORTER=none): no receiver on a 2-core machine can take
~200k spans/s. Prints req/s for both, their ratio, sonde's CPU time and
peak RSS, span completeness (server spans sonde built / requests wrk
completed) and lost-event counters, and writes the same as JSON.

usage: bench/nginx_bench.py [--rounds N] [--seconds S] [--modes ring,perf,ring-nowrk] [--json PATH]
Each round runs untraced, then sonde once per mode: ring or perf buffer,
"-nowrk" for wrk excluded from tracing (--exclude-comm wrk), so that only
nginx's SERVER spans are built, one per request, and "-otlp" for export
on: OTLP/HTTP protobuf to a sink (a second nginx that answers 200 and
discards the body), so that the figure is sonde's own cost of encoding and
sending every span, not a receiver's cost of decoding it.
"""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SONDE = ROOT / "build" / "sonde"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# One template for the benchmarked server (one worker pinned to CPU 0) and
# for the OTLP sink (unpinned; takes any body and answers 200).
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
    server {{
        listen 127.0.0.1:{port};
        {location}
    }}
}}
"""
SERVER = {"pin": "worker_cpu_affinity 01;", "location": 'location / { return 200 "hello\\n"; }'}
SINK = {"pin": "", "location": "location /v1/traces { return 200; }"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(workdir, role=SERVER, name="nginx"):
    port = free_port()
    conf = Path(workdir) / f"{name}.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, port=port, name=name, **role))
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-e", str(Path(workdir) / f"{name}.log")])
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nginx did not start")


def run_wrk(port, seconds):
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{seconds}s", "--latency",
         f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    return {"requests": requests, "rps": rate, "p50": lat.get("50"), "p99": lat.get("99")}


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def traced_run(port, seconds, workdir, n, mode, sink_port):
    stats_file = Path(workdir) / f"stats-{mode}-{n}.json"
    err = open(Path(workdir) / f"sonde-{mode}-{n}.err", "w")
    parts = mode.split("-")
    env = dict(os.environ, OTEL_TRACES_EXPORTER="none", SONDE_BUFFER=parts[0])
    if "nowrk" in parts:
        env["SONDE_EXCLUDE_COMM"] = "wrk"
    if "otlp" in parts:
        env.update(OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                   OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{sink_port}")
    sonde = subprocess.Popen([str(SONDE), "--stats-file", str(stats_file)],
                             stdout=subprocess.DEVNULL, stderr=err, env=env)
    deadline = time.time() + 30
    while "ready" not in Path(err.name).read_text():
        if sonde.poll() is not None or time.time() > deadline:
            raise RuntimeError("sonde did not start: " + Path(err.name).read_text())
        time.sleep(0.05)
    cpu_before = cpu_seconds(sonde.pid)
    result = run_wrk(port, seconds)
    time.sleep(0.3)
    result["sonde_cpu_s"] = cpu_seconds(sonde.pid) - cpu_before
    result["sonde_peak_rss_mb"] = peak_rss_mb(sonde.pid)
    sonde.send_signal(signal.SIGTERM)
    sonde.wait(timeout=30)
    err.close()
    stats = json.loads(stats_file.read_text())
    result["spans_server"] = stats["spans_server"]
    result["spans_client"] = stats["spans_client"]
    result["lost_ringbuf_full"] = stats["lost_ringbuf_full"]
    result["lost_other"] = stats["lost_conn_map_full"]
    result["events"] = stats["events"]
    result["spans_built"] = stats["spans_built"]
    result["spans_exported"] = stats["spans_exported"]
    result["spans_dropped"] = stats["spans_dropped"]
    result["spans_failed"] = stats["spans_failed"] + stats["spans_refused"]
    return result


def summarize(base, traced):
    requests = sum(r["requests"] for r in traced)
    summary = {
        "traced_rps": statistics.median([r["rps"] for r in traced]),
        "ratios": [t["rps"] / b["rps"] for b, t in zip(base, traced)],
        "traced_p50": [r["p50"] for r in traced], "traced_p99": [r["p99"] for r in traced],
        "sonde_cpu_us_per_request": 1e6 * sum(r["sonde_cpu_s"] for r in traced) / requests,
        "sonde_peak_rss_mb": max(r["sonde_peak_rss_mb"] for r in traced),
        "completeness_server": sum(r["spans_server"] for r in traced) / requests,
        "completeness_client": sum(r["spans_client"] for r in traced) / requests,
        "lost_ringbuf_full": sum(r["lost_ringbuf_full"] for r in traced),
        "lost_other": sum(r["lost_other"] for r in traced),
        "events_per_request": sum(r["events"] for r in traced) / requests,
        "spans_built": sum(r["spans_built"] for r in traced),
        "spans_exported": sum(r["spans_exported"] for r in traced),
        "spans_dropped": sum(r["spans_dropped"] for r in traced),
        "spans_failed": sum(r["spans_failed"] for r in traced),
        "runs": traced,
    }
    summary["ratio"] = statistics.median(summary["ratios"])
    return summary


def print_mode(mode, m):
    parts = mode.split("-")
    traced = "nginx only (wrk excluded)" if "nowrk" in parts else "nginx and wrk"
    export = "OTLP/HTTP export on" if "otlp" in parts else "export off"
    print(f"  sonde, {parts[0]} buffer, {export}, tracing {traced}")
    print(f"    req/s (median)    {m['traced_rps']:>10.0f}")
    print(f"    ratio (median)    {m['ratio']:>10.3f}  "
          f"(per round: {', '.join(f'{r:.3f}' for r in m['ratios'])})")
    print(f"    p50 / p99         {', '.join(m['traced_p50'])} / {', '.join(m['traced_p99'])}")
    print(f"    agent CPU         {m['sonde_cpu_us_per_request']:>10.2f} us/request")
    print(f"    agent peak RSS    {m['sonde_peak_rss_mb']:>10.1f} MB")
    print(f"    completeness      {100 * m['completeness_server']:>10.2f} % server spans, "
          f"{100 * m['completeness_client']:.2f} % client spans")
    print(f"    lost events       {m['lost_ringbuf_full']:>10d} buffer full, "
          f"{m['lost_other']} map full")
    print(f"    events/request    {m['events_per_request']:>10.2f}")
    if "otlp" in parts:
        print(f"    exported          {m['spans_exported']:>10d} of {m['spans_built']} built "
              f"({m['spans_dropped']} dropped at a full queue, {m['spans_failed']} failed)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--modes", default="ring,ring-nowrk")
    parser.add_argument("--json", default=str(ROOT / "build" / "bench-nginx.json"))
    args = parser.parse_args()
    modes = args.modes.split(",")
    workdir = tempfile.mkdtemp(prefix="sonde-bench-")
    os.chmod(workdir, 0o755)
    nginx, port = start_nginx(workdir)
    sink, sink_port = start_nginx(workdir, SINK, "sink")
    base, traced = [], {m: [] for m in modes}
    try:
        run_wrk(port, 1)  # warm-up
        for n in range(args.rounds):
            base.append(run_wrk(port, args.seconds))
            line = f"round {n + 1}: untraced {base[-1]['rps']:.0f} req/s"
            for mode in modes:
                traced[mode].append(traced_run(port, args.seconds, workdir, n, mode, sink_port))
                line += f", {mode} {traced[mode][-1]['rps']:.0f}"
            print(line, flush=True)
    finally:
        for server in (nginx, sink):
            server.terminate()
            server.wait()
    result = {
        "untraced_rps": statistics.median([r["rps"] for r in base]),
        "untraced_p50": [r["p50"] for r in base], "untraced_p99": [r["p99"] for r in base],
        "untraced_runs": base,
        "modes": {m: summarize(base, traced[m]) for m in modes},
    }
    print()
    print(f"nginx, 1 worker on CPU 0, wrk -t1 -c16 on CPU 1, {args.rounds} rounds x {args.seconds}s, "
          "both ends traced")
    print(f"  untraced            {result['untraced_rps']:>10.0f} req/s (median), "
          f"p50 / p99 {', '.join(result['untraced_p50'])} / {', '.join(result['untraced_p99'])}")
    for mode in modes:
        print_mode(mode, result["modes"][mode])
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"  JSON: {args.json}")


if __name__ == "__main__":
    main()
