"""What every benchmark scenario needs: sonde started and stopped with its
counters, CPU time and peak memory of a process, per-program BPF run time,
the load generators (wrk at maximum rate, h2load at a fixed rate) and the
alternating A/B loop that compares variants of one scenario in one sitting.
"""
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SONDE = ROOT / "build" / "sonde"
PROBE_FLOOR = ROOT / "build" / "probe_floor"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def cpu_ticks():
    """(steal, total) jiffies of all CPUs since boot: the share a run lost
    to the hypervisor is the ratio of their differences over the run."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[7], sum(fields[:8])


def steal_share(before, after):
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for port {port} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pids):
    """CPU time of these processes and of their live children (nginx's worker,
    uvicorn's server process)."""
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
            for task in Path(f"/proc/{pid}/task").iterdir():
                children = (task / "children").read_text().split()
                total += tree_cpu_seconds(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def status_mb(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb(pid):
    return status_mb(pid, "VmHWM")


def rss_mb(pid):
    """Resident memory now."""
    return status_mb(pid, "VmRSS")


def prog_run_ns(pid):
    """BPF run time and run count summed over the programs this process has
    loaded, from its fds' fdinfo (counted only while bpf_stats_enabled is 1)."""
    run_ns = runs = 0
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = info.read_text()
        except OSError:
            continue
        if "run_time_ns:" not in text:
            continue
        run_ns += int(re.search(r"run_time_ns:\s+(\d+)", text).group(1))
        runs += int(re.search(r"run_cnt:\s+(\d+)", text).group(1))
    return run_ns, runs


class BpfStats:
    """kernel.bpf_stats_enabled switched on for a measurement and restored."""

    def __enter__(self):
        self.before = BPF_STATS.read_text().strip()
        BPF_STATS.write_text("1")
        return self

    def __exit__(self, *exc):
        BPF_STATS.write_text(self.before)


def start_until_ready(cmd, err_path, env=None):
    """Starts cmd, its stderr to err_path, and returns it once it says
    "sonde: ready" there (as the agent and bench/probe_floor.c do)."""
    with open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
    deadline = time.time() + 30
    while "sonde: ready" not in err_path.read_text():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"{Path(cmd[0]).name} did not start: " + err_path.read_text())
        time.sleep(0.05)
    return proc


class Sonde:
    """The real agent, started with the given environment, ready when it says so."""

    def __init__(self, workdir, tag, env):
        self.stats_file = Path(workdir) / f"stats-{tag}.json"
        self.err_path = Path(workdir) / f"sonde-{tag}.err"
        full_env = dict(os.environ, OTEL_TRACES_EXPORTER="none")
        full_env.update(env)
        # Settings from env alone, not this machine's /etc/sonde/sonde.yaml.
        self.proc = start_until_ready([str(SONDE), "--config", "/dev/null",
                                       "--stats-file", str(self.stats_file)],
                                      self.err_path, full_env)

    def cpu_seconds(self):
        return cpu_seconds(self.proc.pid)

    def peak_rss_mb(self):
        return peak_rss_mb(self.proc.pid)

    def prog_run_ns(self):
        return prog_run_ns(self.proc.pid)

    def stop(self):
        """Stops sonde (it flushes every span) and returns its final counters."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise RuntimeError("sonde did not stop within 60 s of SIGTERM")
        if self.proc.returncode != 0:
            raise RuntimeError(f"sonde exited with {self.proc.returncode}: "
                               + self.err_path.read_text()[-2000:])
        return json.loads(self.stats_file.read_text())


def _ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(port, seconds, path="/", connections=16, cpu="1", script=None):
    """wrk at maximum rate, one thread pinned to `cpu`, keep-alive."""
    cmd = ["taskset", "-c", cpu, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        cmd += ["-s", str(script)]
    run = subprocess.run(cmd + [f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"wrk exited with {run.returncode}: {run.stdout[-500:]} {run.stderr[-500:]}")
    out = run.stdout
    # A latency of a second or more is printed padded: "99%    1.00s ".
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if len(lat) != 2:
        raise RuntimeError(f"wrk printed no latency distribution: {out[-500:]}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": _ms(lat["50"]), "p99_ms": _ms(lat["99"]),
            "errors": int(errors.group(1)) if errors else 0}


def percentile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def h2load_fixed(port, seconds, rate, workdir, tag, clients=10, cpu="1"):
    """HTTP/1.1 at a fixed rate (h2load --rps per client); latency percentiles
    from its per-request log."""
    log = Path(workdir) / f"h2load-{tag}.log"
    subprocess.run(["taskset", "-c", cpu, "h2load", "--h1", "-c", str(clients),
                    f"--rps={rate // clients}", "-D", str(seconds), "--log-file", str(log),
                    f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True)
    rows = [line.split("\t") for line in log.read_text().splitlines() if line]
    latencies = sorted(int(r[2]) / 1000 for r in rows)
    return {"requests": len(rows), "rps": len(rows) / seconds,
            "p50_ms": percentile(latencies, 0.50), "p99_ms": percentile(latencies, 0.99),
            "errors": sum(1 for r in rows if not r[1].startswith("2"))}


def traced(sonde_env, workdir, tag, load, server_pids=()):
    """Runs `load` under sonde; the load's figures plus sonde's own."""
    sonde = Sonde(workdir, tag, sonde_env)
    cpu_before = sonde.cpu_seconds()
    server_before = tree_cpu_seconds(server_pids)
    result = load()
    result["server_cpu_s"] = tree_cpu_seconds(server_pids) - server_before
    time.sleep(0.3)  # the agent's last poll of what the load left in the buffer
    result["sonde_cpu_s"] = sonde.cpu_seconds() - cpu_before
    result["sonde_peak_rss_mb"] = sonde.peak_rss_mb()
    result["stats"] = sonde.stop()
    return result


def under_floor(workdir, tag, load, server_pids=()):
    """Runs `load` with sonde's tracepoints attached to programs that return
    at once (bench/probe_floor.c): what attaching alone costs."""
    err_path = Path(workdir) / f"floor-{tag}.err"
    proc = start_until_ready([str(PROBE_FLOOR), str(ROOT / "build" / "sonde.bpf.o")], err_path)
    try:
        result = untraced(load, server_pids)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"probe_floor exited with {proc.returncode}: " + err_path.read_text())
    return result


def untraced(load, server_pids=()):
    server_before = tree_cpu_seconds(server_pids)
    result = load()
    result["server_cpu_s"] = tree_cpu_seconds(server_pids) - server_before
    return result


def kernel_cost(sonde_env, workdir, tag, load):
    """One run with BPF statistics on: the probes' run time per request. Kept
    apart from the A/B rounds because the statistics cost time themselves."""
    with BpfStats():
        sonde = Sonde(workdir, tag, sonde_env)
        before_ns, before_runs = sonde.prog_run_ns()
        result = load()
        after_ns, after_runs = sonde.prog_run_ns()
        sonde.stop()
    return {"requests": result["requests"],
            "kernel_us_per_request": (after_ns - before_ns) / 1e3 / result["requests"],
            "program_runs_per_request": (after_runs - before_runs) / result["requests"],
            "ns_per_program_run": (after_ns - before_ns) / max(1, after_runs - before_runs)}


def median(values):
    return statistics.median(values) if values else None
