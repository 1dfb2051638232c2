"""The systemd unit's least privilege: its hardening scores OK with
systemd-analyze, and the agent run the way it runs the agent (user sonde,
the unit's capabilities, no new privileges) keeps only the capabilities it
still uses once attached, traces, and pins the maps bpftool reads. The core
end-to-end tests also run that way (SONDE_E2E_AS_UNIT=1, `make e2e-unit`);
the shipped configuration file is valid."""
import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SONDE, UNIT, Agent, Nginx, agent_command, curl

# CAP_DAC_READ_SEARCH (2), CAP_SYS_PTRACE (19), CAP_CHECKPOINT_RESTORE (40)
KEPT = (1 << 2) | (1 << 19) | (1 << 40)
PIN_DIR = "/sys/fs/bpf/sonde"
HTTP_CONNS = 3  # SONDE_CNT_HTTP_CONNS, include/sonde_events.h


def test_the_unit_is_hardened_to_an_ok_exposure():
    out = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)],
                         capture_output=True, text=True, timeout=60).stdout
    exposure = float(re.search(r"Overall exposure level for sonde.service: ([0-9.]+)", out)[1])
    assert exposure <= 4.0, out


def status_field(pid, name):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split()[1:]
    raise KeyError(name)


def test_as_the_unit_the_agent_keeps_what_it_uses_and_traces(workdir):
    agent = Agent(workdir, name="sonde-unit", as_unit=True)
    try:
        pid = agent.proc.pid
        uid = int(subprocess.run(["id", "-u", "sonde"], capture_output=True, text=True).stdout)
        assert int(status_field(pid, "Uid")[1]) == uid
        assert int(status_field(pid, "CapEff")[0], 16) == KEPT
        assert int(status_field(pid, "CapPrm")[0], 16) == KEPT
        assert int(status_field(pid, "CapAmb")[0], 16) == 0
        assert status_field(pid, "NoNewPrivs") == ["1"]
        server = Nginx(workdir)
        try:
            assert curl(f"http://127.0.0.1:{server.port}/ok") == "200"
            spans = agent.wait_spans(server.port, 2)
        finally:
            server.stop()
        assert sorted(s["kind"] for s in spans) == ["SpanKind.CLIENT", "SpanKind.SERVER"]
    finally:
        assert agent.stop() == 0, agent.err_path.read_text()


def test_where_perf_events_take_cap_sys_admin_the_unit_says_so(workdir):
    """Debian's and Ubuntu's kernels add kernel.perf_event_paranoid 3, their
    default, at which only CAP_SYS_ADMIN opens perf events (how tracepoint
    programs are attached): the agent run as the unit, with CAP_PERFMON and
    not CAP_SYS_ADMIN, says so in one line and exits 1 before loading
    anything. This kernel takes 3 as it takes 2; set for the test only."""
    setting = Path("/proc/sys/kernel/perf_event_paranoid")
    before = setting.read_text()
    command, _ = agent_command(workdir, "paranoid.stats.json", as_unit=True, as_shipped=True)
    setting.write_text("3")
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=30)
    finally:
        setting.write_text(before)
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "sonde: cannot start: missing CAP_SYS_ADMIN, needed on this " \
        "kernel to attach to tracepoints: its kernel.perf_event_paranoid is 3" in lines[0], lines


def test_the_shipped_configuration_file_is_valid():
    """deploy/systemd/sonde.yaml, as make install puts it in /etc/sonde."""
    out = subprocess.run([str(SONDE), "--config", str(UNIT.parent / "sonde.yaml"),
                          "--check-config"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("sonde: configuration valid")
    bad = subprocess.run([str(SONDE), "--config", "/dev/stdin", "--check-config"],
                         input="OTEL_BSP_SCHEDULE_DELAY: soon\n", capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2
    assert "/dev/stdin:1: OTEL_BSP_SCHEDULE_DELAY" in bad.stderr


def bpftool_dump(name):
    out = subprocess.run(["bpftool", "map", "dump", "pinned", f"{PIN_DIR}/{name}", "-j"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_pinned_maps_are_read_with_bpftool_and_gone_at_a_clean_exit(workdir):
    """--pin (SONDE_PIN=1), as the unit runs it: bpftool reads the counters
    and the connection table while it runs; a clean exit removes the pins,
    an agent killed uncleanly leaves pins the next one replaces, and a
    running agent's pins are not taken: a second pinned agent refuses to
    start."""
    pin_dir = Path(PIN_DIR)
    # What the unit's ExecStartPre does as root.
    subprocess.run(["sh", "-c", "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf"],
                   check=True)
    if pin_dir.exists():
        shutil.rmtree(pin_dir)
    pin_dir.mkdir()
    shutil.chown(pin_dir, "sonde", "sonde")
    agent = Agent(workdir, name="sonde-pin", extra_env={"SONDE_PIN": "1"}, as_unit=True)
    server = Nginx(workdir)
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as held:
            held.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            held.recv(4096)
            conns = bpftool_dump("conns")
            assert len(conns) >= 2, "both ends of the held connection are in the table"
        counters = {c["formatted"]["key"]: sum(v["value"] for v in c["formatted"]["values"])
                    for c in bpftool_dump("counters")}
        assert counters[HTTP_CONNS] >= 1, counters
        agent.proc.kill()
        agent.proc.wait(timeout=10)
        assert (pin_dir / "counters").exists(), "an agent killed leaves its pins"
        agent = Agent(workdir, name="sonde-pin-2", extra_env={"SONDE_PIN": "1"}, as_unit=True)
        assert "left by an agent that stopped uncleanly" in agent.err_path.read_text()
        with pytest.raises(RuntimeError) as refused:
            Agent(workdir, name="sonde-pin-3", extra_env={"SONDE_PIN": "1"}, as_unit=True)
        assert (f"/counters is pinned by sonde pid {agent.proc.pid}, which is running: one "
                "agent per host pins its maps") in str(refused.value)
        assert "another sonde is running (pid " in str(refused.value)
        assert bpftool_dump("counters"), "the running agent's pins are left to it"
    finally:
        server.stop()
        assert agent.stop() == 0, agent.err_path.read_text()
    assert not pin_dir.exists() or not any(pin_dir.iterdir()), list(pin_dir.iterdir())


STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z sonde: ")


def test_log_lines_carry_their_time_unless_the_journal_keeps_it(workdir, agent):
    """Run by hand, every line of the agent's starts with its UTC time; under
    systemd, whose journal stamps lines itself (JOURNAL_STREAM names
    stderr's device and inode), none does."""
    lines = agent.err_path.read_text().splitlines()
    assert lines and all(STAMPED.match(line) for line in lines), lines[:5]
    err_path = Path(workdir) / "journal.err"
    with open(err_path, "w") as err:
        st = Path(err_path).stat()
        proc = subprocess.Popen([str(SONDE), "--config", "/dev/null"], stdout=subprocess.DEVNULL,
                                stderr=err, env={"PATH": "/usr/bin:/bin",
                                                 "OTEL_TRACES_EXPORTER": "none",
                                                 "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        try:
            deadline = time.time() + 30
            while "sonde: ready" not in err_path.read_text() and time.time() < deadline:
                time.sleep(0.05)
        finally:
            proc.terminate()
            assert proc.wait(timeout=20) == 0
    lines = err_path.read_text().splitlines()
    assert lines and all(line.startswith("sonde: ") for line in lines), lines[:5]
