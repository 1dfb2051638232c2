"""The soak suite: load and faults at the sizes a production host sees,
each test printing the figures the README's Reliability section gives.
`make soak` runs it at full size (SONDE_SOAK=1: 100,000 keep-alive
connections, 500,000 short ones, the collector down for three minutes,
about ten minutes in all); `make e2e` runs the same tests at a short size.
Their loads run in a cgroup of their own (flood_cgroup), which only their
own agents trace. An agent killed with SIGKILL under load, and traced
processes killed mid-request, are test_faults.py's."""
import json
import math
import os
import subprocess
import threading
import time

from conftest import APPS, PYTHON, Agent, Nginx, Receiver, allow_fds, free_port, wait_port

FULL = os.environ.get("SONDE_SOAK") == "1"
KEEPALIVE = 100_000 if FULL else 16_000
SHORT_CONNECTIONS = 500_000 if FULL else 40_000
COLLECTOR_DOWN_S = 180 if FULL else 15
RATE = 500  # requests a second while the collector is down
# 100,000 connections opened within seconds by 13 processes on 2 CPUs
# send ~400,000 records faster than the agent, sharing those CPUs, reads
# them: the default 4 MiB ring lost 340,264 (counted) and 69% of the
# exchanges; the ring is sized for the burst, as the README advises.
KEEPALIVE_RING = (64 << 20) if FULL else (4 << 20)
# Connections a process holds: below this VM's hard limit of 20,000 fds.
PER_SERVER, PER_HOLDER = 14_000, 8_000


def figures(name, **values):
    print(f"\nsoak {name}: " + json.dumps(values), flush=True)


class RssSampler:
    """The agent's RSS every half second, in a thread, while a load runs."""

    def __init__(self, agent):
        self.agent, self.samples, self.running = agent, [], True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while self.running:
            self.samples.append(self.agent.rss_kb() / 1024)
            time.sleep(0.5)

    def stop(self):
        self.running = False
        self.thread.join()
        return self.samples


def test_keepalive_connections_held_at_once(workdir, flood_cgroup):
    """KEEPALIVE keep-alive connections, one request each, held at once,
    then closed: every exchange is its two spans, the agent's memory
    follows the connections and goes back near its idle size."""
    nholders = math.ceil(KEEPALIVE / PER_HOLDER)
    each = KEEPALIVE // nholders
    total = each * nholders
    ends = 2 * total
    agent = Agent(workdir, name="soak-keepalive",
                  extra_env={"OTEL_TRACES_EXPORTER": "none",
                             "SONDE_MAX_CONNECTIONS": str(max(65536, ends + ends // 4)),
                             "SONDE_RINGBUF_BYTES": str(KEEPALIVE_RING),
                             "SONDE_INCLUDE": flood_cgroup.include})
    port = free_port()
    servers = [flood_cgroup.popen([PYTHON, str(APPS / "keepalive_burst.py"), "serve", str(port)],
                                  preexec_fn=allow_fds(PER_SERVER + 256))
               for _ in range(math.ceil(KEEPALIVE / PER_SERVER))]
    holders = []
    try:
        wait_port(port)
        idle = agent.rss_kb() / 1024
        started = time.time()
        holders = [flood_cgroup.popen([PYTHON, str(APPS / "keepalive_burst.py"), "hold",
                                       str(port), str(each), str(10 + 2 * i)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      preexec_fn=allow_fds(PER_HOLDER + 256))
                   for i in range(nholders)]
        for h in holders:
            assert h.stdout.readline().strip() == f"held {each}"
        opened_s = time.time() - started
        held_counts = agent.wait_stats(
            lambda c: c["spans_client"] >= total
            and c["spans_server"] + c["orphan_responses"] >= total, timeout=300)
        time.sleep(3)  # the agent's trims of what the requests took
        held = agent.rss_kb() / 1024
        for h in holders:
            h.stdin.write("close\n")
            h.stdin.flush()
            assert h.stdout.readline().strip() == "closed"
        counts = agent.wait_stats(lambda c: c["conns_ended"] >= ends, timeout=300)
        time.sleep(3)
        after = agent.rss_kb() / 1024
    finally:
        for p in holders + servers:
            p.kill()
            p.wait()
        assert agent.stop() == 0
    figures("keepalive", connections=total, ring_mib=KEEPALIVE_RING >> 20,
            opened_s=round(opened_s, 1),
            rss_idle_mb=round(idle, 1), rss_held_mb=round(held, 1),
            rss_closed_mb=round(after, 1),
            kb_per_connection_end=round((held - idle) * 1024 / ends, 2),
            spans_server=counts["spans_server"], spans_client=counts["spans_client"],
            orphan_responses=counts["orphan_responses"], merge_forced=counts["merge_forced"],
            lost_ringbuf_full=counts["lost_ringbuf_full"],
            lost_conn_map_full=counts["lost_conn_map_full"])
    assert held_counts["spans_client"] == total, held_counts
    # The drain after the agent was starved of CPU is sorted whole: a
    # response on one CPU's ring never comes before its request on another.
    assert held_counts["spans_server"] == total, held_counts
    assert held_counts["orphan_responses"] == held_counts["merge_forced"] == 0
    assert counts["lost_ringbuf_full"] == counts["lost_conn_map_full"] == 0
    assert (held - idle) * 1024 / ends < 3, "an idle connection end costs ~2-2.5 KB"
    assert after - idle < 8, "memory back near its idle size"


WRK_CONNECTIONS = 16


def wrk_closing(cgroup, port, seconds):
    """wrk with a new connection per request; the requests it completed
    (up to WRK_CONNECTIONS more may have been answered as it stopped)."""
    out = cgroup.run(["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s",
                      "-H", "Connection: close", f"http://127.0.0.1:{port}/ok"],
                     timeout=seconds + 60)
    for line in out.splitlines():
        if "requests in" in line:
            return int(line.split()[0])
    raise AssertionError(out)


def test_short_connections_at_full_rate(workdir, flood_cgroup):
    """SHORT_CONNECTIONS connections of one request each, as fast as wrk
    opens them: every one is its two spans, and the agent's RSS, sampled
    throughout, stays on a plateau and comes back to it."""
    agent = Agent(workdir, name="soak-churn", extra_env={"OTEL_TRACES_EXPORTER": "none",
                                                         "SONDE_INCLUDE": flood_cgroup.include})
    nginx = Nginx(workdir, cgroup=flood_cgroup)
    requests = runs = 0
    try:
        idle = agent.rss_kb() / 1024
        sampler = RssSampler(agent)
        started = time.time()
        while requests < SHORT_CONNECTIONS:
            requests += wrk_closing(flood_cgroup, nginx.port, 5 if FULL else 1)
            runs += 1
        seconds = time.time() - started
        # A server span is counted as the response is written, its client
        # span once wrk has read it: the last few exchanges' client spans
        # can trail a snapshot (5 of 41,443 did on an emulated CPU).
        counts = agent.wait_stats(lambda c: c["spans_server"] >= requests and
                                  c["spans_client"] == c["spans_server"], timeout=120)
        time.sleep(3)
        samples = sampler.stop()
        after = agent.rss_kb() / 1024
    finally:
        nginx.stop()
        assert agent.stop() == 0
    figures("churn", connections=requests, per_second=round(requests / seconds),
            rss_idle_mb=round(idle, 1), rss_max_mb=round(max(samples), 1),
            rss_median_mb=round(sorted(samples)[len(samples) // 2], 1),
            rss_after_mb=round(after, 1), rss_every_5s_mb=[round(x, 1) for x in samples[::10]],
            spans_server=counts["spans_server"],
            spans_client=counts["spans_client"], lost_ringbuf_full=counts["lost_ringbuf_full"],
            conns_ended=counts["conns_ended"])
    assert counts["lost_ringbuf_full"] == 0
    assert requests <= counts["spans_server"] <= requests + runs * WRK_CONNECTIONS, \
        "every request wrk counted, and those it did not count as it stopped"
    assert max(samples) - idle < 32, "bounded while connections come and go"
    assert after - idle < 8, "back on its plateau"


def accounted(c):
    """Every span made has one outcome: exported, refused, failed, or
    dropped before the queue; none is still queued."""
    made = c["spans_server"] + c["spans_client"]
    done = c["spans_exported"] + c["spans_refused"] + c["spans_failed"]
    return done == c["spans_built"] and c["spans_built"] + c["spans_dropped"] == made


def test_collector_down_for_minutes_at_a_steady_rate(workdir, flood_cgroup):
    """RATE requests a second through nginx while the collector is gone for
    COLLECTOR_DOWN_S: the agent's memory stays bounded, every span is
    exported or counted as failed or dropped, and export resumes when the
    collector is back on the same port."""
    port = free_port()
    agent = Agent(workdir, name="soak-collector",
                  extra_env={"OTEL_TRACES_EXPORTER": "otlp",
                             "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                             "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                             "OTEL_BSP_SCHEDULE_DELAY": "200",
                             "OTEL_BSP_EXPORT_TIMEOUT": "5000",
                             "SONDE_INCLUDE": flood_cgroup.include,
                             "SONDE_EXCLUDE_COMM": "node"})
    nginx = Nginx(workdir, cgroup=flood_cgroup)
    rx = Receiver(workdir, http_port=port)
    load = None
    try:
        idle = agent.rss_kb() / 1024
        load = flood_cgroup.popen([PYTHON, str(APPS / "paced_client.py"), str(nginx.port),
                                   str(RATE), str(COLLECTOR_DOWN_S + 16)],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(5)
        before = len(rx.spans_for_port(nginx.port))
        rx.stop()
        sampler = RssSampler(agent)
        time.sleep(COLLECTOR_DOWN_S)
        down = agent.stats()
        samples = sampler.stop()
        rx = Receiver(workdir, http_port=port)
        answered = int(load.communicate(timeout=60)[0])
        final = agent.wait_stats(accounted, timeout=60)
        after = len(rx.spans_for_port(nginx.port))
    finally:
        if load and load.poll() is None:
            load.kill()
        rx.stop()
        nginx.stop()
        assert agent.stop() == 0
    figures("collector_down", seconds_down=COLLECTOR_DOWN_S, rate=RATE,
            requests=answered, rss_idle_mb=round(idle, 1),
            rss_max_down_mb=round(max(samples), 1),
            rss_every_5s_mb=[round(x, 1) for x in samples[::10]], spans_before=before,
            spans_after_back=after, exported=final["spans_exported"],
            failed=final["spans_failed"], dropped=final["spans_dropped"],
            built=final["spans_built"])
    assert answered >= RATE * (COLLECTOR_DOWN_S + 10) * 0.95
    assert before > 0 and after > 0, "export before and after the outage"
    assert down["spans_failed"] + down["spans_dropped"] > 0, "the outage cost spans, counted"
    assert final["spans_server"] == answered
    assert max(samples) - idle < 32, "bounded while the collector is down"
