"""Fixtures: the real sonde agent, real nginx and uvicorn servers.

The agent runs as root, or with SONDE_E2E_AS_UNIT=1 the way the systemd
unit runs it (deploy/systemd/sonde.service): as user sonde, with only the
unit's capabilities and no new privileges (setpriv: these machines do not
boot systemd).

Spans are read from the agent's console output (one JSON object per line)
and selected per test by the server port the test's traffic used, so each
test can assert the exact set of spans its traffic produced. The tests run
in a cgroup of their own that every agent they start includes
(SONDE_INCLUDE), so another program's traffic on the host (a benchmark,
another run) is neither traced nor in the way."""
import glob
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SONDE = ROOT / "build" / "sonde"
PYTHON = "/usr/bin/python3"
APPS = Path(__file__).resolve().parent / "apps"


UNIT = ROOT / "deploy" / "systemd" / "sonde.service"


def perf_paranoid():
    return int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())


def unit_capabilities(as_shipped=False):
    """The unit's AmbientCapabilities, as setpriv spells them, with the
    CAP_SYS_ADMIN the README's Privileges adds where the kernel's
    perf_event_paranoid is above 2 (Debian's and Ubuntu's default) unless
    as_shipped."""
    for line in UNIT.read_text().splitlines():
        if line.startswith("AmbientCapabilities="):
            caps = line.split("=", 1)[1].split()
            if perf_paranoid() > 2 and not as_shipped:
                caps.append("CAP_SYS_ADMIN")
            return ",".join("+" + c[len("CAP_"):].lower() for c in caps)
    raise RuntimeError(f"no AmbientCapabilities in {UNIT}")


def allow_fds(count):
    """A Popen preexec_fn giving the child at least `count` fds, hard limit
    included: set while still root (before a setpriv in the command drops
    to another user), since a system with no login manager (a container,
    the kernel tests' guest) has a hard limit of 4,096."""
    def raise_limit():
        limit = max(count, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return raise_limit


def as_unit_by_default():
    return bool(os.environ.get("SONDE_E2E_AS_UNIT"))


def agent_command(workdir, stats_name, as_unit, as_shipped=False):
    """The agent's command line and the stats file it writes. Settings
    come from the test's environment only: an empty configuration file
    stands for /etc/sonde/sonde.yaml, whatever this machine has there."""
    if not as_unit:
        stats = Path(workdir) / stats_name
        return [str(SONDE), "--config", "/dev/null", "--stats-file", str(stats)], stats
    run_dir = Path(workdir) / "unit-run"  # the unit's RuntimeDirectory
    run_dir.mkdir(exist_ok=True)
    shutil.chown(run_dir, "sonde", "sonde")
    caps = unit_capabilities(as_shipped)
    stats = run_dir / stats_name
    return ["setpriv", "--reuid=sonde", "--regid=sonde", "--init-groups",
            f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}",
            f"--bounding-set=-all,{caps}", "--no-new-privs",
            str(SONDE), "--config", "/dev/null", "--stats-file", str(stats)], stats


def cgroup2_root():
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup on a
    systemd host, /sys/fs/cgroup/unified on a hybrid one); None: nowhere."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    return None


def own_cgroup():
    """This process's cgroup v2 path."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    return "/"


# What every agent the tests start is given: the tests' own cgroup (see
# the tests_cgroup fixture).
AGENT_SCOPE = {}


@pytest.fixture(scope="session", autouse=True)
def tests_cgroup():
    """Moves the test run into a cgroup of its own before anything starts:
    the servers and clients the tests start are in it, and the agents
    include it only."""
    root = cgroup2_root()
    if root is None:
        print("no cgroup v2 hierarchy: the agents trace every process of the host")
        yield
        return
    home = own_cgroup()
    for stale in root.glob("sonde-*-*"):  # of runs killed before their teardown
        run = stale.name.rsplit("-", 1)[1]
        if run.isdigit() and not Path(f"/proc/{run}").exists():
            remove_cgroup(stale)
    group = root / f"sonde-e2e-{os.getpid()}"
    group.mkdir()
    (group / "cgroup.procs").write_text(str(os.getpid()))
    AGENT_SCOPE["SONDE_INCLUDE"] = f"cgroup:/{group.name}"
    yield
    (root / home.lstrip("/") / "cgroup.procs").write_text(str(os.getpid()))
    remove_cgroup(group)


def remove_cgroup(group):
    """Kills what is left in a cgroup, then removes it. A killed process
    leaves cgroup.procs before it has finished exiting, and until it has,
    the cgroup is still populated and refuses removal (EBUSY): on a slow
    machine that can last a while."""
    for pid in (group / "cgroup.procs").read_text().split():
        os.kill(int(pid), signal.SIGKILL)
    deadline = time.time() + 10
    while "populated 1" in (group / "cgroup.events").read_text() and time.time() < deadline:
        time.sleep(0.05)
    group.rmdir()


class Cgroup:
    """A cgroup beside the tests' own, named NAME-<pid of the run>: what is
    started in it (popen, run) is traced only by an agent given `include`,
    not by the session's agent. Without cgroup v2 it runs where the tests
    do, and every agent traces it."""

    def __init__(self, name):
        root = cgroup2_root()
        self.name = f"/{name}-{os.getpid()}"
        self.path = root / self.name[1:] if root else None
        if self.path:
            self.path.mkdir()
        # The tests' processes and this cgroup's.
        self.include = ",".join(filter(None, [AGENT_SCOPE.get("SONDE_INCLUDE"),
                                              self.path and f"cgroup:{self.name}"]))

    def popen(self, argv, **kwargs):
        """argv, started inside the cgroup: a shell moves itself in, then
        becomes the program."""
        if not self.path:
            return subprocess.Popen(argv, **kwargs)
        script = f'echo $$ > {self.path}/cgroup.procs && exec "$@"'
        return subprocess.Popen(["sh", "-c", script, "sh", *argv], **kwargs)

    def run(self, argv, timeout):
        """argv's standard output, once it exited 0."""
        proc = self.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        out, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, (argv, out)
        return out

    def remove(self):
        if self.path:
            remove_cgroup(self.path)


@pytest.fixture
def flood_cgroup():
    """Where a test runs a load at full rate for its own agents (given
    flood_cgroup.include): the session's agent, tracing it through its
    console exporter, would lag behind the tests after it."""
    group = Cgroup("sonde-flood")
    yield group
    group.remove()


# Ports servers of this session listened on: handed out by free_port, or
# taken by a server bound to port 0 (the receiver, whose control port the
# tests' own traced requests go to).
_ports_given = set()


def free_port():
    """A free port no server of this session had: spans are found by the
    server port, so a port reused by a later test's server would mix an
    earlier test's spans into its own."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port


def wait_port(port, host="127.0.0.1", timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port}")


class Agent:
    """A running sonde process and the spans it printed."""

    def __init__(self, workdir, name="sonde", extra_env=None, as_unit=None):
        self.out_path = Path(workdir) / f"{name}.out"
        self.err_path = Path(workdir) / f"{name}.err"
        command, self.stats_path = agent_command(
            workdir, f"{name}.stats.json", as_unit_by_default() if as_unit is None else as_unit)
        env = dict(os.environ, OTEL_TRACES_EXPORTER="console", OTEL_BSP_SCHEDULE_DELAY="50",
                   **AGENT_SCOPE)
        env.update(extra_env or {})
        self.out = open(self.out_path, "w")
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen(command, stdout=self.out, stderr=self.err, env=env)
        deadline = time.time() + 30
        while "sonde: ready" not in self.err_path.read_text():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("sonde did not become ready:\n" + self.err_path.read_text())
            time.sleep(0.05)

    def spans(self):
        """The spans printed so far; a last line still being written waits."""
        text = self.out_path.read_text()
        return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]

    def spans_for_port(self, port):
        return [s for s in self.spans() if s["attributes"].get("server.port") == port]

    def wait_spans(self, port, count, timeout=10, settle=0.6):
        """Waits for `count` spans on the port, then checks no more arrive."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.spans_for_port(port)
            if len(got) >= count:
                break
            time.sleep(0.05)
        time.sleep(settle)
        return self.spans_for_port(port)

    def stats(self):
        return json.loads(self.stats_path.read_text())

    def wait_stats(self, ok, timeout=20):
        """The counters (written every second) once ok(counters) holds."""
        deadline = time.time() + timeout
        counters = {}
        while time.time() < deadline:
            try:
                counters = self.stats()
            except (FileNotFoundError, json.JSONDecodeError):
                counters = {}
            if counters and ok(counters):
                return counters
            time.sleep(0.1)
        raise TimeoutError(f"counters never matched: {counters}\n" + self.err_path.read_text())

    def rss_kb(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.out.close()
        self.err.close()
        return code


@pytest.fixture(scope="session")
def workdir():
    d = tempfile.mkdtemp(prefix="sonde-e2e-")
    os.chmod(d, 0o755)  # nginx workers run as www-data
    yield d
    if not os.environ.get("SONDE_E2E_KEEP"):  # keep logs for a post-mortem
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def agent(workdir, tests_cgroup):
    """The session's agent. It names tests_cgroup so that it stops before
    that fixture kills what is left in the cgroup: pytest 7 otherwise
    tears session fixtures down in the order the last test lists them,
    and a last test that uses no agent put the cgroup's first."""
    a = Agent(workdir)
    yield a
    assert a.stop() == 0, a.err_path.read_text()


# What every nginx of the tests says first: its pid, logs and temporary
# files in its own directory. A format string, as those built on it.
NGINX_FILES = """
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
"""

NGINX_CONF = "worker_processes 1;" + NGINX_FILES + """
    sendfile on;
    keepalive_requests 1000;
    # Short headers: three pipelined responses stay well inside one
    # 512-byte capture even when the client reads them in one call.
    server_tokens off;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port};
        listen [::1]:{port};
        root {dir}/www;
        location /ok {{ return 200 "ok\n"; }}
        location /status/404 {{ return 404 "nf\n"; }}
        location /status/503 {{ return 503 "down\\n"; }}
        location /p/ {{ return 200 "p\\n"; }}
        location /q/ {{ return 404 "q\\n"; }}
        location / {{ }}
    }}
}}
"""


# nginx as a reverse proxy to 127.0.0.1:{backend}, over keep-alive
# connections (HTTP/1.1, no Connection header passed on); /local it
# answers itself.
NGINX_PROXY_CONF = "worker_processes {workers};" + NGINX_FILES + """
    upstream backend {{ server 127.0.0.1:{backend}; keepalive {keepalive}; }}
    server {{
        listen 127.0.0.1:{port};
        location /local {{ return 200 "local\n"; }}
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


class Nginx:
    """nginx serving static routes, in the tests' cgroup or `cgroup`."""

    def __init__(self, workdir, env=None, cgroup=None):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(dir=workdir, prefix="nginx-"))
        os.chmod(self.dir, 0o755)
        (self.dir / "www").mkdir()
        (self.dir / "www" / "index.html").write_text("hello from nginx\n")
        (self.dir / "www" / "big.bin").write_bytes(b"b" * 200000)
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, port=self.port))
        popen = cgroup.popen if cgroup else subprocess.Popen
        self.proc = popen(["nginx", "-c", str(conf), "-e", str(self.dir / "error.log")],
                          env=dict(os.environ, **(env or {})))
        wait_port(self.port)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def nginx(workdir, agent):
    n = Nginx(workdir)
    yield n
    n.stop()


@pytest.fixture
def flood_nginx(workdir, flood_cgroup):
    """An nginx for a test's own agents to trace at full rate."""
    n = Nginx(workdir, cgroup=flood_cgroup)
    yield n
    n.stop()


class Uvicorn:
    """An app of tests/e2e/apps on uvicorn."""

    def __init__(self, service_name, app="api:app", env=None):
        self.port = free_port()
        env = dict(os.environ, OTEL_SERVICE_NAME=service_name, PYTHONPATH=str(APPS), **(env or {}))
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning"], env=env)
        wait_port(self.port)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def uvicorn(agent):
    u = Uvicorn("e2e-api")
    yield u
    u.stop()


def pg_bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (scripts/deps.sh)")
    return found[-1]


class Postgres:
    """A private PostgreSQL cluster in a temporary directory, owned by
    postgres, on a free loopback port; trust authentication."""

    def __init__(self, workdir):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(dir=workdir, prefix="pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(["runuser", "-u", "postgres", "--", pg_bin("initdb"), "-D", str(self.dir),
                        "-A", "trust", "-U", "postgres", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        self.log = open(self.dir / "server.log", "w")
        subprocess.Popen(["runuser", "-u", "postgres", "--", pg_bin("postgres"), "-D", str(self.dir),
                          "-p", str(self.port), "-k", str(self.dir),
                          "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                          "-c", "lc_messages=C"],
                         stdout=self.log, stderr=self.log)
        self.wait_ready(timeout=120)
        self.pid = int((self.dir / "postmaster.pid").read_text().split()[0])

    def wait_ready(self, timeout):
        """The port opens before the server accepts sessions ("the database
        system is starting up"); its log says when it does, and reading it
        makes no connection that sonde would see."""
        log = self.dir / "server.log"
        deadline = time.time() + timeout
        while "ready to accept connections" not in log.read_text():
            if time.time() > deadline:
                raise RuntimeError(f"PostgreSQL not ready after {timeout} s: {log.read_text()}")
            time.sleep(0.05)

    def url(self, database):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self):
        os.kill(self.pid, signal.SIGINT)  # fast shutdown
        deadline = time.time() + 30
        while time.time() < deadline and Path(f"/proc/{self.pid}").exists():
            time.sleep(0.1)
        self.log.close()


def wrk_requests(output):
    """How many requests wrk says it had answered."""
    return int(re.search(r"(\d+) requests in", output).group(1))


def wrk_served(url):
    """How many requests wrk had answered, one thread and 8 connections
    for 2 s."""
    return wrk_requests(subprocess.run(["wrk", "-t1", "-c8", "-d2s", url], capture_output=True,
                                       text=True, check=True, timeout=30).stdout)


def curl(*args):
    return subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *args],
                          capture_output=True, text=True, timeout=30).stdout


def by_kind(spans, kind):
    return [s for s in spans if s["kind"] == f"SpanKind.{kind}"]


class NodeServer:
    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(["node", str(APPS / "server.js"), str(self.port)])
        wait_port(self.port)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def node_server(agent):
    n = NodeServer()
    yield n
    n.stop()


RECEIVER = ROOT / "tests" / "otlp_receiver" / "receiver.js"


class Receiver:
    """The independent OTLP receiver (tests/otlp_receiver): grpc-js and
    node:http, decoding with the official opentelemetry-proto schema."""

    def __init__(self, workdir, grpc_port=None, http_port=None, tls=None):
        opts = {}
        if grpc_port is not None:
            opts["grpc_port"] = grpc_port
        if http_port is not None:
            opts["http_port"] = http_port
        if tls:
            opts["tls"] = tls
        self.err = open(Path(workdir) / f"receiver-{os.getpid()}-{time.time()}.err", "w")
        self.proc = subprocess.Popen(["node", str(RECEIVER), json.dumps(opts)],
                                     stdout=subprocess.PIPE, stderr=self.err, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("receiver did not start: " + Path(self.err.name).read_text())
        ports = json.loads(line)
        self.grpc_port = ports.get("grpc_port")
        self.http_port = ports.get("http_port")
        self.control_port = ports["control_port"]
        _ports_given.update(p for p in (self.grpc_port, self.http_port, self.control_port) if p)

    def _control(self, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.control_port}{path}",
                                     data=None if body is None else json.dumps(body).encode(),
                                     method="GET" if body is None else "POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            data = resp.read()
        return json.loads(data) if data else None

    def script(self, answers):
        """The next answers, in order: dicts like {"kind": "unavailable"}."""
        self._control("/script", answers)

    def requests(self):
        return self._control("/requests")

    def metrics_requests(self):
        return self._control("/metrics_requests")

    def log_records(self):
        reqs = self._control("/logs_requests")
        assert all("decode_error" not in r for r in reqs), reqs
        return [rec for r in reqs for rec in r["records"]]

    def spans_for_port(self, port):
        """Spans the receiver accepted whose server.port is `port`."""
        return [s for r in self.requests() if r["accepted"] for s in r["spans"]
                if s["attributes"].get("server.port") == port]

    def wait_spans(self, port, count, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.spans_for_port(port)
            if len(got) >= count:
                return got
            time.sleep(0.1)
        return self.spans_for_port(port)

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.err.close()


@pytest.fixture
def receivers(workdir):
    started = []

    def start(**kwargs):
        r = Receiver(workdir, **kwargs)
        started.append(r)
        return r
    yield start
    for r in started:
        if r.proc.poll() is None:
            r.stop()
