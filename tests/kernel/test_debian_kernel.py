"""sonde on the kernel Debian 12 ships (the linux-image-amd64 package,
Linux 6.1): the agent built from this tree loads its programs there and
traces a real HTTP exchange; asked for entry points, which need Linux 6.6,
it says what is missing (and stops, for native ones). The kernel boots under qemu's software
emulation with the host's root, read-only, as its own (tests/kernel/init);
tests/kernel/guest.sh runs the agent, Python's HTTP server and curl there.

The machines the other tests run on have a newer kernel, whose verifier
accepts programs that 6.1's refuses: a tracepoint's context passed to a
global function (6.8 reads the arg:ctx tag), more than 512 bytes of stack
down a chain of calls. Only a run on the older kernel catches those."""
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SONDE = ROOT / "build" / "sonde"
CACHE = ROOT / "build" / "kernels"
HERE = Path(__file__).resolve().parent
PORT = 18080
INETD_PORT = 18081
INETD_APP = ROOT / "tests" / "e2e" / "apps" / "inetd_http.py"
# What mounting the host's root over 9p takes, with what they depend on.
MODULES = ["virtio_pci", "9pnet_virtio", "9p"]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def debian_kernel_package():
    """The kernel image package linux-image-amd64 stands for."""
    out = run(["apt-cache", "depends", "linux-image-amd64"]).stdout
    for line in out.splitlines():
        name = line.split(":", 1)[-1].strip()
        if line.strip().startswith("Depends:") and name.startswith("linux-image-"):
            return name
    raise RuntimeError(f"no kernel image among linux-image-amd64's dependencies:\n{out}")


def try_download(package):
    """The package's .deb, from the cache or apt; None when apt does not have it."""
    debs = sorted(CACHE.glob(f"{package}_*.deb"))
    if not debs and subprocess.run(["apt-get", "download", package], cwd=CACHE,
                                   capture_output=True).returncode == 0:
        debs = sorted(CACHE.glob(f"{package}_*.deb"))
    return debs[-1] if debs else None


def download_kernel():
    """The .deb of Debian's current kernel image. Stale package lists name
    an image the mirror no longer has: they are refreshed and asked again."""
    CACHE.mkdir(parents=True, exist_ok=True)
    for refresh in (False, True):
        if refresh:
            run(["apt-get", "update", "-qq"])
        package = debian_kernel_package()
        deb = try_download(package)
        if deb:
            return deb
    raise RuntimeError(f"apt-get download {package} failed")


def module_order(tree, wanted):
    """The modules wanted and those they depend on (as their .modinfo
    says), each after what it depends on: (names, paths). A module the
    kernel has built in has no file and is left out."""
    paths = {p.name[:-len(".ko")].replace("-", "_"): p
             for p in (tree / "lib" / "modules").glob("*/kernel/**/*.ko")}
    order = []

    def visit(name):
        if name in order or name not in paths:
            return
        found = re.search(rb"depends=([^\0]*)\0", paths[name].read_bytes())
        for dep in found.group(1).decode().split(",") if found and found.group(1) else []:
            visit(dep)
        order.append(name)

    for name in wanted:
        visit(name)
    return order, paths


def initramfs(tree, out):
    """busybox, the 9p modules and tests/kernel/init, as a gzipped cpio."""
    staging = Path(tempfile.mkdtemp(prefix="sonde-initramfs-"))
    try:
        for d in ("bin", "mods", "newroot", "proc", "sys", "dev"):
            (staging / d).mkdir()
        shutil.copy("/bin/busybox", staging / "bin" / "busybox")
        shutil.copy(HERE / "init", staging / "init")
        (staging / "init").chmod(0o755)
        order, paths = module_order(tree, MODULES)
        for name in order:
            shutil.copy(paths[name], staging / "mods" / f"{name}.ko")
        (staging / "modules").write_text(" ".join(order))
        files = subprocess.run(["find", "."], cwd=staging, check=True, capture_output=True).stdout
        archive = subprocess.run(["cpio", "-o", "-H", "newc"], cwd=staging, input=files,
                                 check=True, capture_output=True).stdout
        out.write_bytes(subprocess.run(["gzip", "-1"], input=archive, check=True,
                                       capture_output=True).stdout)
    finally:
        shutil.rmtree(staging)


@pytest.fixture(scope="module")
def debian_kernel():
    """(vmlinuz, initramfs) of Debian 12's kernel: the package downloaded
    and unpacked once into build/kernels, the initramfs made each run."""
    deb = download_kernel()
    tree = CACHE / deb.stem
    if not (tree / "boot").is_dir():
        run(["dpkg-deb", "-x", str(deb), str(tree)])
    images = sorted((tree / "boot").glob("vmlinuz-*"))
    assert images, f"no vmlinuz in {deb}"
    initrd = CACHE / f"{deb.stem}.initramfs.gz"
    initramfs(tree, initrd)
    return images[0], initrd


def boot(kernel, initrd, work):
    """Runs guest.sh in the kernel; returns what the serial console said."""
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "2",
           "-nographic", "-no-reboot", "-nic", "none",
           "-kernel", str(kernel), "-initrd", str(initrd),
           "-append", "console=ttyS0 panic=-1 quiet",
           "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on",
           "-virtfs", f"local,path={work},mount_tag=work,security_model=none"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout


def read(path):
    return path.read_text() if path.exists() else ""


@pytest.fixture(scope="module")
def guest(debian_kernel, tmp_path_factory):
    """One boot of guest.sh: (its folder, what to show when a check fails)."""
    work = tmp_path_factory.mktemp("guest")
    shutil.copy(HERE / "guest.sh", work / "guest.sh")
    (work / "params").write_text(f"SONDE={SONDE}\nPORT={PORT}\nINETD_PORT={INETD_PORT}\n"
                                 f"INETD_APP={INETD_APP}\n")
    console = boot(*debian_kernel, work)
    context = (f"steps:\n{read(work / 'steps.txt')}\nagent log:\n"
               f"{read(work / 'agent.log')[-6000:]}\nconsole:\n{console[-3000:]}")
    return work, context


def spans_of(work):
    return [json.loads(line) for line in read(work / "spans.jsonl").splitlines()
            if line.startswith("{")]


def test_agent_traces_http_on_debian_12_kernel(guest):
    work, context = guest
    steps = read(work / "steps.txt")
    assert steps.startswith("kernel 6.1."), context
    assert "agent ready" in steps, context
    assert "curl 200" in steps and "curl 404" in steps, context
    assert "agent exit 0" in steps, context

    spans = spans_of(work)
    by_id = {s["context"]["span_id"]: s for s in spans}
    for path, status in (("/index.txt", 200), ("/missing", 404)):
        servers = [s for s in spans if s["kind"] == "SpanKind.SERVER"
                   and s["attributes"].get("url.path") == path]
        assert len(servers) == 1, (path, spans)
        server = servers[0]
        assert server["attributes"]["http.response.status_code"] == status
        client = by_id.get(server["parent_id"])
        assert client is not None, (path, spans)
        assert client["kind"] == "SpanKind.CLIENT"
        assert client["context"]["trace_id"] == server["context"]["trace_id"]
        assert client["attributes"]["http.response.status_code"] == status
        assert client["resource"]["attributes"]["process.executable.name"] == "curl"


def test_a_socket_given_as_stdin_and_stdout_is_one_connection(guest):
    """The socket's references are counted in f_count there (f_ref from
    Linux 6.13, which the other tests' kernels have)."""
    work, context = guest
    assert "inetd 200\ninetd 200" in read(work / "steps.txt"), context
    spans = spans_of(work)
    clients = {s["context"]["span_id"] for s in spans if s["kind"] == "SpanKind.CLIENT"}
    servers = {s["attributes"]["url.path"]: s for s in spans if s["kind"] == "SpanKind.SERVER"
               and s["attributes"].get("server.port") == INETD_PORT}
    assert sorted(servers) == ["/one", "/two"], spans
    for server in servers.values():
        assert server["status"]["status_code"] == "UNSET", server
        assert server["attributes"]["http.response.status_code"] == 200, server
        assert server["parent_id"] in clients, server


def test_entry_points_say_what_the_kernel_lacks(guest):
    work, context = guest
    steps = read(work / "steps.txt")
    native, python = read(work / "native.log"), read(work / "python.log")
    assert "native entry points: agent exit 1" in steps, context
    assert ("native entry points need uprobe_multi links (Linux 6.6 or later), which this "
            "kernel does not have") in native, native
    # Python jobs in threads are still seen; the agent runs on.
    assert "python entry points: agent ready" in steps, context
    assert "python entry points: agent exit 0" in steps, context
    assert ("entry points: this kernel has no uprobe_multi links (Linux 6.6 or later): "
            "jobs run in threads are seen, asyncio tasks are not") in python, python
