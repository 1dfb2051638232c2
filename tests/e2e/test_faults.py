"""Faults an agent must survive, and what it leaves behind: the agent
killed with SIGKILL under load (nothing stays attached, the next one traces
at once), and a traced server killed in the middle of a request (its span
and its caller's are errors, and no connection stays followed). Each test
prints its figures; the README's Reliability section carries them."""
import json
import re
import socket
import subprocess
import time

from conftest import PYTHON, Agent, curl, free_port, wait_port

# sonde's tracepoint programs, by their names (bpf/sonde.bpf.c).
PROGRAM_NAME = re.compile(r"^(enter_|exit_|process_)")


def attached_programs():
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True,
                         timeout=30, check=True)
    return [p for p in json.loads(out.stdout)
            if p.get("type") == "tracepoint" and PROGRAM_NAME.match(p.get("name", ""))]


def wait_for(predicate, timeout):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_an_agent_killed_under_load_leaves_nothing_attached(workdir, agent, flood_cgroup,
                                                           flood_nginx):
    nginx = flood_nginx
    scope = {"SONDE_INCLUDE": flood_cgroup.include}
    others = len(attached_programs())  # the session's agent, if it runs
    agent = Agent(workdir, name="killed", extra_env=scope)
    ours = len(attached_programs()) - others
    assert ours > 0
    load = flood_cgroup.popen(["wrk", "-t1", "-c8", "-d3s", f"http://127.0.0.1:{nginx.port}/ok"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    agent.proc.kill()
    agent.proc.wait(timeout=10)
    killed = time.time()
    assert wait_for(lambda: len(attached_programs()) == others, 10), attached_programs()
    detached_s = time.time() - killed
    assert load.wait(timeout=30) == 0, "the traced load ran on through the kill"
    started = time.time()
    after = Agent(workdir, name="after-kill", extra_env=scope)
    ready_s = time.time() - started
    try:
        assert curl(f"http://127.0.0.1:{nginx.port}/ok") == "200"
        spans = after.wait_spans(nginx.port, 2)
        assert sorted(s["kind"] for s in spans) == ["SpanKind.CLIENT", "SpanKind.SERVER"]
    finally:
        assert after.stop() == 0
    print(f"\n{ours} programs gone {detached_s:.2f} s after SIGKILL; the next agent ready in "
          f"{ready_s:.2f} s and tracing its first request")


HANGING_SERVER = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
while True:  # wait_port's probe connects first, sending nothing
    conn, _ = s.accept()
    if conn.recv(4096):
        break
print("read", flush=True)
time.sleep(60)
"""


def followed_open(agent):
    """Connections the agent follows now: opened and not ended."""
    counters = agent.wait_stats(lambda c: "conns_opened" in c)
    return counters["conns_opened"] - counters["conns_ended"]


def test_a_server_killed_mid_request_gives_error_spans_and_leaks_nothing(workdir):
    agent = Agent(workdir, name="mid-request")
    try:
        port = free_port()
        server = subprocess.Popen([PYTHON, "-c", HANGING_SERVER, str(port)],
                                  stdout=subprocess.PIPE, text=True)
        wait_port(port)
        time.sleep(1.2)  # the probe connection's end reaches the stats file
        open_before = followed_open(agent)
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert server.stdout.readline() == "read\n"
        server.kill()
        server.wait(timeout=10)
        try:
            assert client.recv(4096) == b"", "the kernel closed the connection"
        except ConnectionResetError:
            pass  # or reset it: the request was never read whole
        client.close()
        spans = agent.wait_spans(port, 2)
        assert sorted(s["kind"] for s in spans) == ["SpanKind.CLIENT", "SpanKind.SERVER"]
        for span in spans:
            assert span["status"]["status_code"] == "ERROR", span
        assert wait_for(lambda: followed_open(agent) == open_before, 10), \
            (open_before, agent.stats())
        print(f"\nserver killed mid-request: both spans ERROR ("
              f"{[s['attributes'].get('error.type') for s in spans]}), "
              f"{open_before} connections followed before and after")
    finally:
        assert agent.stop() == 0, agent.err_path.read_text()
