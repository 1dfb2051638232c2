"""Exhaustion: the kernel's connection table is one per host, so an
unprivileged neighbour holding tens of thousands of idle connections must
not leave sonde blind to everyone else (idle connections give way to
active ones, bpf/maps.bpf.h); and a burst of connections must be traced
whole and leave the agent's memory where it was."""
import subprocess
import time

from conftest import APPS, PYTHON, Agent, curl, free_port, wait_port

# 80,000 socket ends, more than the table's 65,536, in processes of at
# most 16,000 fds (a common hard limit)
HOLDERS, EACH = 5, 8000


def test_a_neighbour_holding_40k_idle_connections_starves_no_one(agent, nginx):
    # The script's text, not its path: a clone's directories may be closed
    # to other users.
    script = (APPS / "conn_holder.py").read_text()
    holders = [subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup",
                                 "--clear-groups", PYTHON, "-c", script, str(EACH), str(2 + i)],
                                stdout=subprocess.PIPE, text=True, cwd="/")
               for i in range(HOLDERS)]
    try:
        for h in holders:
            assert h.stdout.readline().strip() == f"holding {EACH}"
        for i in range(20):
            assert curl(f"http://127.0.0.1:{nginx.port}/p/{i}") == "200"
        spans = agent.wait_spans(nginx.port, 40)
    finally:
        for h in holders:
            h.kill()
            h.wait()
    paths = sorted(s["attributes"].get("url.path", s["attributes"].get("url.full", ""))
                   for s in spans)
    assert len(spans) == 40, paths


def test_a_burst_of_16k_keepalive_connections_is_traced_and_memory_returns(workdir):
    """16,000 keep-alive connections, each with one request, held at once,
    then closed: every exchange becomes its two spans, an idle connection
    (32,000 ends, client and server) costs the agent about 2 KB, the
    allocator's fragments included (each held ~10 KB of parser buffers
    before they were taken per message), and its memory goes back near its
    idle size."""
    burst = Agent(workdir, name="burst", extra_env={"OTEL_TRACES_EXPORTER": "none"})
    port = free_port()
    server = subprocess.Popen([PYTHON, str(APPS / "keepalive_burst.py"), "serve", str(port)])
    holders = []
    try:
        wait_port(port)
        idle = burst.rss_kb() / 1024
        holders = [subprocess.Popen([PYTHON, str(APPS / "keepalive_burst.py"), "hold", str(port),
                                     "8000", str(10 + i)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True) for i in range(2)]
        for h in holders:
            assert h.stdout.readline().strip() == "held 8000"
        burst.wait_stats(lambda c: c["spans_server"] + c["spans_client"] >= 32000)
        time.sleep(3)  # the agent's trims of what the burst's requests took
        held = burst.rss_kb() / 1024
        for h in holders:
            h.stdin.write("close\n")
            h.stdin.flush()
            assert h.stdout.readline().strip() == "closed"
        counts = burst.wait_stats(lambda c: c["conns_ended"] >= 32000)
        time.sleep(3)  # the next trims
        after = burst.rss_kb() / 1024
    finally:
        for h in holders:
            h.kill()
            h.wait()
        server.kill()
        server.wait()
        assert burst.stop() == 0
    print(f"agent RSS: idle {idle:.1f} MB, 16k connections held {held:.1f} MB, "
          f"closed {after:.1f} MB")
    assert counts["spans_server"] == counts["spans_client"] == 16000, counts
    assert held - idle < 80, "an idle connection end costs at most ~2.5 KB"
    assert after - idle < 8, "memory back near its idle size"
