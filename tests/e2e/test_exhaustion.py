"""Exhaustion: the kernel's connection table is one per host, so an
unprivileged neighbour holding tens of thousands of idle connections must
not leave sonde blind to everyone else (idle connections give way to
active ones, bpf/maps.bpf.h). Bursts of connections are test_soak.py's."""
import subprocess

from conftest import APPS, PYTHON, allow_fds, curl

# 80,000 socket ends, more than the table's 65,536, in processes of 16,000
# fds each
HOLDERS, EACH = 5, 8000


def test_a_neighbour_holding_40k_idle_connections_starves_no_one(agent, nginx):
    # The script's text, not its path: a clone's directories may be closed
    # to other users.
    script = (APPS / "conn_holder.py").read_text()
    holders = [subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup",
                                 "--clear-groups", PYTHON, "-c", script, str(EACH), str(2 + i)],
                                stdout=subprocess.PIPE, text=True, cwd="/",
                                preexec_fn=allow_fds(2 * EACH + 64))
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
