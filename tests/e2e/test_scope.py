"""Scoping: an operator picks what is traced by executable, cgroup, port,
pid or name (--include, --exclude) and names services by them
(--service-names). A neighbour's benchmark left out by its cgroup costs the
export queue nothing and hides no request that matters; a process picked
by the port it serves is traced from its first connection on that port,
under the name the port gives it."""
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (APPS, NGINX_PROXY_CONF, PYTHON, SONDE, Agent, Cgroup, Nginx, by_kind,
                      curl, free_port, wait_port, wrk_served)


def resource(span, key):
    return span["resource"]["attributes"].get(key)


def spans_of(agent, service):
    return [s for s in agent.spans() if resource(s, "service.name") == service]


def test_only_the_included_executable_is_traced(workdir):
    nginx = Nginx(workdir)
    agent = Agent(workdir, name="scope-exe",
                  extra_env={"SONDE_INCLUDE": f"exe:{os.path.realpath(shutil.which('nginx'))}"})
    try:
        for i in range(5):
            assert curl(f"http://127.0.0.1:{nginx.port}/p/scope-{i}") == "200"
        spans = agent.wait_spans(nginx.port, 5)
        counters = agent.wait_stats(lambda c: c["conns_scoped_out"] >= 5)
    finally:
        agent.stop()
        nginx.stop()
    assert [s["kind"] for s in spans] == ["SpanKind.SERVER"] * 5, "curl's calls are left out"
    assert all(resource(s, "service.name") == "nginx" for s in spans)
    assert not spans_of(agent, "curl")
    assert counters["events_scoped_out"] > 0


def test_a_server_waits_for_no_client_the_scope_leaves_out(workdir):
    """Only nginx is in scope. wrk's first connections show it to the
    agent, which leaves them out and tells the linker of their ends; its
    later ones (it reconnects after nginx's 1,000 requests a connection)
    the kernel announces at connect, their peer being on this host. nginx's
    spans start their traces at once rather than waiting, connection by
    connection, for a client that never shows."""
    nginx = Nginx(workdir)
    agent = Agent(workdir, name="scope-wrk",
                  extra_env={"SONDE_INCLUDE": f"exe:{os.path.realpath(shutil.which('nginx'))}"})
    try:
        served = wrk_served(f"http://127.0.0.1:{nginx.port}/ok")
        counters = agent.wait_stats(lambda c: c["spans_server"] >= served)
    finally:
        assert agent.stop() == 0
        nginx.stop()
    assert counters["spans_held_peak"] == 0
    assert counters["spans_client"] == 0
    assert counters["untraced_client_ends"] >= max(8, served // 1000)


def test_a_neighbours_benchmark_left_out_by_cgroup_hides_nothing(workdir):
    """A benchmark at full rate in a cgroup of its own, excluded: the four
    requests that matter are all traced, nothing of the benchmark reaches
    the export queue, and the kernel writes its connections off."""
    group = Cgroup("sonde-neighbour")
    if not group.path:
        pytest.skip("no cgroup v2 hierarchy mounted")
    port = free_port()
    conf = Path(workdir) / f"neighbour-{port}.conf"
    conf.write_text(f"daemon off; pid {workdir}/neighbour-{port}.pid; events {{}}\n"
                    f"http {{ access_log off; server {{ listen 127.0.0.1:{port};\n"
                    f"location / {{ return 200 'busy'; }} }} }}\n")
    agent = ours = None
    try:
        agent = Agent(workdir, name="scope-cgroup",
                      # every process of the host but the neighbour's
                      extra_env={"SONDE_INCLUDE": "", "SONDE_EXCLUDE": f"cgroup:{group.name}",
                                 "OTEL_BSP_MAX_QUEUE_SIZE": "256",
                                 "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "128"})
        ours = Nginx(workdir)
        group.popen(["nginx", "-c", str(conf), "-e", f"{workdir}/neighbour-{port}.log"])
        wait_port(port)
        wrk = group.popen(["wrk", "-t1", "-c16", "-d4s", f"http://127.0.0.1:{port}/"],
                          stdout=subprocess.DEVNULL)
        time.sleep(1)
        for i in range(4):
            assert curl(f"http://127.0.0.1:{ours.port}/p/matters-{i}") == "200"
        wrk.wait(timeout=30)
        spans = agent.wait_spans(ours.port, 8)
        counters = agent.wait_stats(lambda c: c["excluded_conns"] >= 16)
    finally:
        if agent:
            agent.stop()
        if ours:
            ours.stop()
        group.remove()
    paths = sorted(s["attributes"]["url.path"] for s in by_kind(spans, "SERVER"))
    assert paths == [f"/p/matters-{i}" for i in range(4)]
    assert len(by_kind(spans, "CLIENT")) == 4
    assert not agent.spans_for_port(port), "nothing of the benchmark"
    assert counters["spans_dropped"] == 0
    assert counters["excluded_conns"] >= 16, "the kernel writes its connections off"


def test_a_process_picked_by_its_port_is_traced_from_it_under_its_name(workdir):
    """nginx proxying port P to a Python backend, with only port P included
    and named: nginx's spans, server and client, are there under the
    port's name; the backend and curl, which serve or call no included
    port, are not."""
    backend_port, port = free_port(), free_port()
    backend = subprocess.Popen([PYTHON, str(APPS / "threaded_backend.py"), str(backend_port)],
                               env=dict(os.environ, BACKEND_DELAY="0"))
    d = Path(workdir) / f"scope-proxy-{port}"
    d.mkdir()
    (d / "nginx.conf").write_text(NGINX_PROXY_CONF.format(
        dir=d, port=port, backend=backend_port, workers=1, keepalive=4))
    agent = Agent(workdir, name="scope-port",
                  extra_env={"SONDE_INCLUDE": f"port:{port}",
                             "SONDE_SERVICE_NAMES": f"port:{port}=edge"})
    proxy = subprocess.Popen(["nginx", "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")])
    try:
        wait_port(backend_port)
        wait_port(port)
        for i in range(5):
            assert curl(f"http://127.0.0.1:{port}/order/{i}") == "200"
        agent.wait_spans(port, 5)
        time.sleep(0.5)
        spans = agent.spans()
    finally:
        agent.stop()
        proxy.terminate()
        proxy.wait(timeout=10)
        backend.terminate()
        backend.wait(timeout=10)
    assert sorted((s["kind"], resource(s, "service.name")) for s in spans) == \
        [("SpanKind.CLIENT", "edge")] * 5 + [("SpanKind.SERVER", "edge")] * 5
    servers = by_kind(spans, "SERVER")
    clients = by_kind(spans, "CLIENT")
    assert {s["attributes"]["server.port"] for s in servers} == {port}
    assert {s["attributes"]["server.port"] for s in clients} == {backend_port}
    by_id = {s["context"]["span_id"]: s for s in servers}
    assert all(c["parent_id"] in by_id for c in clients), "each call under its request"


def test_a_bad_selector_stops_start_up_with_its_setting(workdir):
    result = subprocess.run([str(SONDE), "--check-config", "--include", "nginx"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert '--include (SONDE_INCLUDE): "nginx" is not KIND:VALUE' in result.stderr
