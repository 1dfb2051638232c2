"""End to end: the real agent, real servers and clients, exact spans."""
import concurrent.futures
import datetime
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (APPS, NGINX_PROXY_CONF, PYTHON, Agent, Nginx, by_kind, curl, free_port,
                      wait_port, wrk_requests, wrk_served)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def one(spans, kind):
    found = by_kind(spans, kind)
    assert len(found) == 1, spans
    return found[0]


def seconds(iso):
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def resource(span, key):
    return span["resource"]["attributes"][key]


def test_curl_against_nginx(agent, nginx):
    assert curl("-A", "e2e-curl", f"http://127.0.0.1:{nginx.port}/index.html?q=secret") == "200"
    spans = agent.wait_spans(nginx.port, 2)
    assert len(spans) == 2
    server, client = one(spans, "SERVER"), one(spans, "CLIENT")
    assert server["name"] == "GET /index.html"
    # curl's connection is the other end of nginx's: one trace, curl's
    # span the parent.
    assert client["parent_id"] is None
    assert server["parent_id"] == client["context"]["span_id"]
    assert server["context"]["trace_id"] == client["context"]["trace_id"]
    assert server["status"]["status_code"] == "UNSET"
    a = server["attributes"]
    assert a["http.request.method"] == "GET"
    assert a["url.path"] == "/index.html"
    assert "url.query" not in a
    assert a["http.route"] == "/index.html"
    assert a["http.response.status_code"] == 200
    assert a["network.protocol.version"] == "1.1"
    assert a["server.address"] == "127.0.0.1"
    assert a["client.address"] == "127.0.0.1"
    assert isinstance(a["client.port"], int) and a["client.port"] > 0
    assert a["user_agent.original"] == "e2e-curl"
    assert a["http.response.body.size"] == len("hello from nginx\n")
    assert resource(server, "service.name") == "nginx"
    assert resource(server, "process.pid") == nginx.proc.pid or resource(server, "process.pid") > 0
    assert resource(server, "telemetry.sdk.name") == "sonde"
    assert client["name"] == "GET"
    assert client["attributes"]["url.full"] == f"http://127.0.0.1:{nginx.port}/index.html"
    assert client["attributes"]["client.port" if False else "server.port"] == nginx.port
    assert resource(client, "service.name") == "curl"
    # Data is timed at syscall exit: a reader can return on the other CPU
    # before the writer's syscall exits, so nesting holds to within a
    # syscall's duration, far below the 1 ms the spans promise.
    assert seconds(server["start_time"]) >= seconds(client["start_time"]) - 0.001
    assert seconds(server["end_time"]) <= seconds(client["end_time"]) + 0.001


def test_status_codes_set_span_status(agent, nginx):
    assert curl(f"http://127.0.0.1:{nginx.port}/status/404") == "404"
    assert curl(f"http://127.0.0.1:{nginx.port}/status/503") == "503"
    spans = agent.wait_spans(nginx.port, 4)
    assert len(spans) == 4
    servers = {s["attributes"]["http.response.status_code"]: s for s in by_kind(spans, "SERVER")}
    clients = {s["attributes"]["http.response.status_code"]: s for s in by_kind(spans, "CLIENT")}
    assert servers[404]["status"]["status_code"] == "UNSET"
    assert servers[503]["status"]["status_code"] == "ERROR"
    assert servers[503]["attributes"]["error.type"] == "503"
    assert clients[404]["status"]["status_code"] == "ERROR"
    assert clients[503]["status"]["status_code"] == "ERROR"


def test_sendfile_body_is_counted_not_captured(agent, nginx):
    assert curl(f"http://127.0.0.1:{nginx.port}/big.bin") == "200"
    spans = agent.wait_spans(nginx.port, 2)
    assert len(spans) == 2
    for span in spans:
        assert span["attributes"]["http.response.body.size"] == 200000


def read_responses(sock, count):
    """Reads `count` Content-Length responses; returns their status codes."""
    data, codes = b"", []
    while len(codes) < count:
        chunk = sock.recv(65536)
        assert chunk, "server closed early"
        data += chunk
        while b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
                         .split(b":")[1])
            if len(rest) < length:
                break
            codes.append(int(head.split(b" ")[1]))
            data = rest[length:]
    return codes


def test_keep_alive_and_pipelining_from_a_raw_socket(agent, nginx):
    # Small responses: three of them fit one 512-byte capture even when the
    # client reads them in one call (a longer read is covered by unit tests).
    with socket.create_connection(("127.0.0.1", nginx.port)) as s:
        s.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1:{nginx.port}\r\n\r\n".encode()
                           for p in ("/ok", "/status/404", "/status/503")))
        assert read_responses(s, 3) == [200, 404, 503]
        for path in ("/ok", "/status/404"):
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{nginx.port}\r\n\r\n".encode())
            read_responses(s, 1)
    spans = agent.wait_spans(nginx.port, 10)
    servers = sorted(by_kind(spans, "SERVER"), key=lambda s: s["start_time"])
    clients = sorted(by_kind(spans, "CLIENT"), key=lambda s: s["start_time"])
    want = [("/ok", 200), ("/status/404", 404), ("/status/503", 503),
            ("/ok", 200), ("/status/404", 404)]
    for spans_of_side in (servers, clients):
        got = [(s["attributes"]["url.path"], s["attributes"]["http.response.status_code"])
               for s in spans_of_side]
        assert got == want
    assert len(set(s["context"]["trace_id"] for s in servers)) == 5


@pytest.mark.parametrize("depth", [50, 1000])
def test_pipelines_longer_than_the_capture(workdir, nginx, depth):
    """`depth` requests in one write, far past the 512-byte capture: every
    one makes its span at both ends, paired with its own response (paths
    /q/ answer 404, /p/ 200) and its server span under its client span."""
    deep = Agent(workdir, name=f"pipeline-{depth}", extra_env={"OTEL_BSP_MAX_QUEUE_SIZE": "8192"})
    try:
        paths = [f"/q/{i}" if i % 3 == 0 else f"/p/{i}" for i in range(depth)]
        with socket.create_connection(("127.0.0.1", nginx.port)) as s:
            s.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1:{nginx.port}\r\n\r\n".encode()
                               for p in paths))
            assert read_responses(s, depth) == [404 if p.startswith("/q/") else 200 for p in paths]
        spans = deep.wait_spans(nginx.port, 2 * depth, timeout=30)
        deep.wait_stats(lambda c: c["pipelined_calls"] > 0)
    finally:
        assert deep.stop() == 0
    servers, clients = by_kind(spans, "SERVER"), by_kind(spans, "CLIENT")
    assert sorted(s["attributes"]["url.path"] for s in servers) == sorted(paths)
    assert sorted(s["attributes"]["url.path"] for s in clients) == sorted(paths)
    client_by_id = {c["context"]["span_id"]: c for c in clients}
    for span in servers + clients:
        path = span["attributes"]["url.path"]
        assert span["attributes"]["http.response.status_code"] == (404 if path.startswith("/q/") else 200)
    for server in servers:
        parent = client_by_id[server["parent_id"]]
        assert parent["attributes"]["url.path"] == server["attributes"]["url.path"]


def test_ipv6_loopback(agent, nginx):
    assert curl("-g", f"http://[::1]:{nginx.port}/index.html") == "200"
    spans = agent.wait_spans(nginx.port, 2)
    assert len(spans) == 2
    server = one(spans, "SERVER")
    assert server["attributes"]["client.address"] == "::1"
    assert server["attributes"]["server.address"] == "::1"
    assert one(spans, "CLIENT")["attributes"]["url.full"] == f"http://[::1]:{nginx.port}/index.html" \
        or one(spans, "CLIENT")["attributes"]["server.address"] == "::1"


def test_nginx_keeps_the_service_name_it_was_given(workdir, agent):
    """nginx writes its process title over its environment block, so
    OTEL_SERVICE_NAME is gone from /proc/PID/environ by the time its first
    request comes: the kernel sent it with the exec."""
    server = Nginx(workdir, env={"OTEL_SERVICE_NAME": "e2e-edge"})
    try:
        assert curl(f"http://127.0.0.1:{server.port}/ok") == "200"
        spans = agent.wait_spans(server.port, 2)
    finally:
        server.stop()
    assert resource(one(spans, "SERVER"), "service.name") == "e2e-edge"


def test_fastapi_on_uvicorn_with_route_templating(agent, uvicorn):
    assert curl(f"http://127.0.0.1:{uvicorn.port}/items/4242") == "200"
    spans = agent.wait_spans(uvicorn.port, 2)
    assert len(spans) == 2
    server = one(spans, "SERVER")
    assert server["name"] == "GET /items/{id}"
    assert server["attributes"]["url.path"] == "/items/4242"
    assert server["attributes"]["http.response.body.size"] == len('{"id":4242}')
    assert resource(server, "service.name") == "e2e-api"


def test_chunked_response(agent, uvicorn):
    assert curl(f"http://127.0.0.1:{uvicorn.port}/stream") == "200"
    spans = agent.wait_spans(uvicorn.port, 2)
    assert len(spans) == 2
    for span in spans:
        assert span["attributes"]["http.response.body.size"] == 5000
        assert span["status"]["status_code"] == "UNSET"


def test_httpx_client(agent, uvicorn):
    base = f"http://127.0.0.1:{uvicorn.port}"
    out = subprocess.run([PYTHON, str(APPS / "httpx_client.py"), f"{base}/health", f"{base}/fail"],
                         capture_output=True, text=True, timeout=30).stdout.split()
    assert out == ["200", "503"]
    spans = agent.wait_spans(uvicorn.port, 4)
    assert len(spans) == 4
    clients = sorted(by_kind(spans, "CLIENT"), key=lambda s: s["start_time"])
    servers = sorted(by_kind(spans, "SERVER"), key=lambda s: s["start_time"])
    assert [s["attributes"]["http.response.status_code"] for s in clients] == [200, 503]
    assert [s["name"] for s in servers] == ["GET /health", "GET /fail"]
    assert servers[1]["status"]["status_code"] == "ERROR"
    assert clients[1]["status"]["status_code"] == "ERROR"
    assert resource(clients[0], "service.name") == "httpx_client"
    assert clients[0]["attributes"]["user_agent.original"].startswith("python-httpx/")


def test_a_traceparent_places_the_first_span_sonde_saw(agent, nginx):
    """curl's call carries a traceparent: curl's span (no traced parent)
    is the header's child and nginx's is curl's, in the header's trace."""
    assert curl("-H", f"traceparent: {TRACEPARENT}", f"http://127.0.0.1:{nginx.port}/") == "200"
    spans = agent.wait_spans(nginx.port, 2)
    server, client = one(spans, "SERVER"), one(spans, "CLIENT")
    assert client["context"]["trace_id"] == "0x4bf92f3577b34da6a3ce929d0e0e4736"
    assert client["parent_id"] == "0x00f067aa0ba902b7"
    assert server["context"]["trace_id"] == client["context"]["trace_id"]
    assert server["parent_id"] == client["context"]["span_id"]


def test_a_forwarded_traceparent_skips_no_hop(workdir, agent, nginx):
    """nginx forwards the traceparent it was sent unchanged: the backend's
    span is still under nginx's call, not the header's span."""
    proxy_dir = Path(workdir) / f"proxy-{nginx.port}"
    proxy_dir.mkdir()
    port = free_port()
    conf = proxy_dir / "nginx.conf"
    conf.write_text(NGINX_PROXY_CONF.format(dir=proxy_dir, port=port, backend=nginx.port,
                                            workers=1, keepalive=4))
    proxy = subprocess.Popen(["nginx", "-c", str(conf), "-e", str(proxy_dir / "error.log")])
    try:
        wait_port(port)
        assert curl("-H", f"traceparent: {TRACEPARENT}", f"http://127.0.0.1:{port}/ok") == "200"
        edge = agent.wait_spans(port, 2)
        back = agent.wait_spans(nginx.port, 2)
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
    curl_span, proxy_server = one(edge, "CLIENT"), one(edge, "SERVER")
    proxy_call, backend = one(back, "CLIENT"), one(back, "SERVER")
    assert curl_span["parent_id"] == "0x00f067aa0ba902b7"
    assert proxy_server["parent_id"] == curl_span["context"]["span_id"]
    assert proxy_call["parent_id"] == proxy_server["context"]["span_id"]
    assert backend["parent_id"] == proxy_call["context"]["span_id"]
    assert {s["context"]["trace_id"] for s in (curl_span, proxy_server, proxy_call, backend)} \
        == {"0x4bf92f3577b34da6a3ce929d0e0e4736"}


CLIENT_HELLO = bytes.fromhex(
    "16030100a5010000a10303" + "00" * 32 + "000020c02bc02fc02cc030cca9cca8c009c013c00a"
    "c014009c009d002f0035c012000a0100005800000014001200000f7777772e6578616d706c652e636f6d")


def test_garbage_makes_no_span_and_next_request_is_traced(agent, nginx):
    for payload in (os.urandom(512), b"GET /half HTTP/1.1\r\nHost: x\r\n", CLIENT_HELLO):
        with socket.create_connection(("127.0.0.1", nginx.port)) as s:
            s.sendall(payload)
            s.settimeout(2)
            try:
                s.recv(4096)
            except OSError:
                pass
    assert agent.wait_spans(nginx.port, 1, timeout=1.5) == []
    assert curl(f"http://127.0.0.1:{nginx.port}/index.html") == "200"
    spans = agent.wait_spans(nginx.port, 2)
    assert sorted(s["kind"] for s in spans) == ["SpanKind.CLIENT", "SpanKind.SERVER"]
    assert one(spans, "SERVER")["attributes"]["url.path"] == "/index.html"


def test_server_closing_without_response_is_an_error(agent):
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    client.sendall(f"GET /hangup HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    conn.recv(4096)
    conn.close()
    assert client.recv(4096) == b""
    client.close()
    listener.close()
    spans = agent.wait_spans(port, 2)
    assert len(spans) == 2
    for span in spans:
        assert span["status"]["status_code"] == "ERROR"
        assert "http.response.status_code" not in span["attributes"]


def test_connection_open_before_start_is_picked_up(workdir, agent, nginx):
    s = socket.create_connection(("127.0.0.1", nginx.port))
    request = f"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:{nginx.port}\r\n\r\n".encode()
    s.sendall(request)
    read_responses(s, 1)
    late = Agent(workdir, name="late")
    try:
        s.sendall(request)
        read_responses(s, 1)
        time.sleep(1)
    finally:
        assert late.stop() == 0
        s.close()
    spans = late.spans_for_port(nginx.port)
    assert sorted(x["kind"] for x in spans) == ["SpanKind.CLIENT", "SpanKind.SERVER"]
    assert one(spans, "SERVER")["attributes"]["url.path"] == "/index.html"


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def get(path, port):
    """A GET of path on 127.0.0.1:port, as a client writes it."""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def exchange(client, server, path, port):
    """One request from client and its response from server, both raw."""
    client.sendall(get(path, port))
    server.recv(4096)
    server.sendall(OK)
    assert read_responses(client, 1) == [200]


def test_an_fd_reused_by_dup2_is_its_new_connection(agent):
    """dup2 closes what its target fd named without a close(): a request
    written on the fd afterwards belongs to the connection dup2 put there,
    to the other server, not to the one the fd held before."""
    first, second = free_port(), free_port()
    with socket.create_server(("127.0.0.1", first)) as l1, \
            socket.create_server(("127.0.0.1", second)) as l2:
        client = socket.create_connection(("127.0.0.1", first))
        s1, _ = l1.accept()
        exchange(client, s1, "/before", first)
        other = socket.create_connection(("127.0.0.1", second))
        s2, _ = l2.accept()
        os.dup2(other.fileno(), client.fileno())
        other.close()
        exchange(client, s2, "/after", second)
        for s in (client, s1, s2):
            s.close()
    for port, path in ((first, "/before"), (second, "/after")):
        spans = agent.wait_spans(port, 2)
        assert sorted(x["kind"] for x in spans) == ["SpanKind.CLIENT", "SpanKind.SERVER"], spans
        server, client_span = one(spans, "SERVER"), one(spans, "CLIENT")
        assert server["attributes"]["url.path"] == path
        assert server["parent_id"] == client_span["context"]["span_id"]


def servers_each_their_clients_child(spans, paths):
    servers = {s["attributes"]["url.path"]: s for s in by_kind(spans, "SERVER")}
    clients = {s["context"]["span_id"]: s for s in by_kind(spans, "CLIENT")}
    assert sorted(servers) == sorted(paths), spans
    for server in servers.values():
        assert server["status"]["status_code"] == "UNSET", server
        assert server["attributes"]["http.response.status_code"] == 200
        assert server["parent_id"] in clients, server


def test_a_socket_given_as_stdin_and_stdout_is_one_connection(agent):
    """An inetd-style server reads its requests from fd 0 and writes its
    responses to fd 1, one socket: each response answers its request, on
    8 keep-alive connections at once, each its own server process."""
    port = free_port()
    paths = [f"/c{i}-{j}" for i in range(8) for j in range(3)]

    def ask(i):
        with socket.create_connection(("127.0.0.1", port)) as s:
            for path in paths[i * 3:i * 3 + 3]:
                s.sendall(get(path, port))
                assert read_responses(s, 1) == [200]

    activator = subprocess.Popen(["systemd-socket-activate", "--inetd", "--accept",
                                  "-l", f"127.0.0.1:{port}", PYTHON, str(APPS / "inetd_http.py")],
                                 stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for done in [pool.submit(ask, i) for i in range(8)]:
                done.result()
        spans = agent.wait_spans(port, 2 * len(paths))
    finally:
        activator.terminate()
        activator.wait(timeout=10)
    servers_each_their_clients_child(spans, paths)


def test_a_connection_goes_on_under_a_dup_of_its_fd(agent):
    """A server answers through the connection's fd what it read through
    a dup of it, then reads a request through the fd, closes the fd and
    answers through the dup: one connection throughout, each request
    answered and the client's child."""
    port = free_port()
    moved = agent.stats()["conns_moved"]
    with socket.create_server(("127.0.0.1", port)) as listener:
        client = socket.create_connection(("127.0.0.1", port))
        server, _ = listener.accept()
        exchange(client, server, "/first", port)
        dup = socket.socket(fileno=os.dup(server.fileno()))
        for path, reader, writer in (("/second", dup, server), ("/third", server, dup)):
            client.sendall(get(path, port))
            reader.recv(4096)
            if reader is server:
                server.close()
            writer.sendall(OK)
            assert read_responses(client, 1) == [200]
        exchange(client, dup, "/fourth", port)
        client.close()
        dup.close()
    spans = agent.wait_spans(port, 8)
    servers_each_their_clients_child(spans, ["/first", "/second", "/third", "/fourth"])
    assert agent.wait_stats(lambda c: c["conns_moved"] == moved + 1)


# Asks for /first and reads its answer, asks for /second, and closes the
# socket without a close(), by an exec (Python's fds are close-on-exec)
# or by close_range; then reads a file (an HTTP response) opened at the
# socket's fd number. The socket sits above the numbers the new program's
# loader and interpreter open and read at start, which would only break
# the old stream sooner.
CLOSED_MID_REQUEST = r"""
import os, socket, sys
how, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
below = [os.open(path, os.O_RDONLY) for _ in range(8)]
s = socket.create_connection(("127.0.0.1", port))
for name in ("first", "second"):
    s.sendall(f"GET /{name} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    if name == "first":
        got = b""
        while not got.endswith(b"ok"):
            got += s.recv(4096)
reader = "import os, sys, time\n" \
         "fd, path = int(sys.argv[1]), sys.argv[2]\n" \
         "while os.open(path, os.O_RDONLY) < fd: pass\n" \
         "os.read(fd, 4096)\n" \
         "time.sleep(0.3)\n"
if how == "exec":
    os.execv(sys.executable, [sys.executable, "-c", reader, str(s.fileno()), path])
os.closerange(s.fileno(), s.fileno() + 1)
sys.argv[1:] = [str(s.detach()), path]
exec(reader)
"""


@pytest.mark.parametrize("how", ["exec", "close_range"])
def test_a_socket_closed_without_close_is_not_its_fd_numbers_next_file(workdir, agent, how):
    port = free_port()
    answer = Path(workdir) / "answer.http"
    answer.write_bytes(OK)
    with socket.create_server(("127.0.0.1", port)) as listener:
        client = subprocess.Popen([PYTHON, "-c", CLOSED_MID_REQUEST, how, str(port),
                                   str(answer)])
        conn, _ = listener.accept()
        for _ in range(2):
            conn.recv(4096)
            try:
                conn.sendall(OK)
            except (BrokenPipeError, ConnectionResetError):
                pass  # /second's asker may be gone
        assert client.wait(timeout=15) == 0
        conn.close()
    spans = agent.wait_spans(port, 4)
    clients = {s["attributes"]["url.full"].rsplit("/", 1)[1]: s for s in by_kind(spans, "CLIENT")}
    assert sorted(clients) == ["first", "second"], spans
    assert clients["first"]["attributes"]["http.response.status_code"] == 200
    # /second was cut off: the file is no answer.
    assert clients["second"]["status"]["status_code"] == "ERROR"
    assert "http.response.status_code" not in clients["second"]["attributes"]


@pytest.fixture
def other_host():
    """A network namespace joined to this one by a veth pair: from it, a
    client reaches <net>.1 from <net>.2, an address no end here has had."""
    tag = os.getpid() % 10000
    ns, here, there, net = f"sonde-e2e-{tag}", f"sonde{tag}a", f"sonde{tag}b", f"10.213.{tag % 250}"
    run = lambda *cmd: subprocess.run(cmd, check=True, timeout=10)  # noqa: E731
    run("ip", "netns", "add", ns)
    try:
        run("ip", "link", "add", here, "type", "veth", "peer", "name", there)
        run("ip", "link", "set", there, "netns", ns)
        run("ip", "addr", "add", f"{net}.1/24", "dev", here)
        run("ip", "link", "set", here, "up")
        run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{net}.2/24", "dev", there)
        run("ip", "netns", "exec", ns, "ip", "link", "set", there, "up")
        yield ["ip", "netns", "exec", ns], f"{net}.1"
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", ns], timeout=10)


def test_a_server_waits_for_no_client_on_another_host(workdir, other_host, flood_cgroup):
    """A server span waits for its client's connection to show only where
    that client can be on this host: wrk, out of the agent's scope (so
    neither traced nor announced) in another network namespace, at an
    address no end here has had, holds nothing back; a traced client
    there is still the server span's parent."""
    there, address = other_host
    remote = Agent(workdir, name="remote")
    port = free_port()
    server = subprocess.Popen([PYTHON, str(APPS / "threaded_backend.py"), str(port), address],
                              env=dict(os.environ, BACKEND_DELAY="0"))
    try:
        wait_port(port, host=address)
        load = flood_cgroup.run(there + ["wrk", "-t1", "-c8", "-d2s", f"http://{address}:{port}/load"],
                                timeout=30)
        served = wrk_requests(load)
        counters = remote.wait_stats(lambda c: c["spans_server"] >= served)
        assert counters["spans_held_peak"] == 0
        assert counters["untraced_client_ends"] == 0
        subprocess.run(there + ["curl", "-s", "-o", "/dev/null", f"http://{address}:{port}/traced"],
                       check=True, timeout=10)
        spans = remote.wait_spans(port, served + 2, timeout=20)
    finally:
        server.terminate()
        server.wait(timeout=10)
        assert remote.stop() == 0
    traced = [s for s in spans if s["attributes"].get("url.path") == "/traced"
              or s["attributes"].get("url.full", "").endswith("/traced")]
    assert sorted(s["kind"] for s in traced) == ["SpanKind.CLIENT", "SpanKind.SERVER"], traced
    assert one(traced, "SERVER")["parent_id"] == one(traced, "CLIENT")["context"]["span_id"]


def test_a_server_waits_for_no_excluded_client(workdir, nginx):
    """wrk excluded: the kernel announces each of its client ends at
    connect, so nginx's spans start their traces at once rather than
    waiting, connection by connection, for a client that never shows."""
    quiet = Agent(workdir, name="excluded", extra_env={"SONDE_EXCLUDE_COMM": "wrk"})
    try:
        served = wrk_served(f"http://127.0.0.1:{nginx.port}/ok")
        counters = quiet.wait_stats(lambda c: c["spans_server"] >= served)
    finally:
        assert quiet.stop() == 0
    assert counters["spans_held_peak"] == 0
    assert counters["spans_client"] == 0
    assert counters["untraced_client_ends"] >= 8  # nginx closes one after 1000 requests


def test_a_client_keeps_nothing_for_a_server_sonde_does_not_follow(workdir, flood_cgroup):
    """wrk traced, on keep-alive connections to a Node server sonde does
    not follow (excluded here; out of scope or on another host alike):
    no server request ever looks for wrk's, so they are not kept for one,
    and the agent's memory stays flat however many go by. Kept until
    their connection closed, they would take ~200 bytes a request, 24 MB
    a second at Node's maximum rate."""
    agent = Agent(workdir, name="serverless", extra_env={
        "OTEL_TRACES_EXPORTER": "none", "SONDE_INCLUDE": flood_cgroup.include,
        "SONDE_EXCLUDE_COMM": "node"})
    port = free_port()
    server = flood_cgroup.popen(["node", str(APPS / "server.js"), str(port)])
    try:
        wait_port(port)
        idle_kb = agent.rss_kb()
        load = flood_cgroup.popen(["wrk", "-t1", "-c4", "-d5s", f"http://127.0.0.1:{port}/"],
                                  stdout=subprocess.PIPE, text=True)
        peak_kb, kept = idle_kb, 0
        while load.poll() is None:
            peak_kb = max(peak_kb, agent.rss_kb())
            kept = max(kept, agent.stats().get("client_requests_kept", 0))
            time.sleep(0.25)
        served = wrk_requests(load.stdout.read())
        counters = agent.wait_stats(lambda c: c["spans_client"] >= served)
    finally:
        server.terminate()
        server.wait(timeout=10)
        assert agent.stop() == 0
    assert served > 40_000, "enough requests for their memory to show"
    assert counters["spans_server"] == 0
    assert counters["client_conns_peer_unseen"] == 4
    assert kept < 1000, kept
    assert (peak_kb - idle_kb) / 1024 < 8, (idle_kb, peak_kb, served)


def test_sigterm_flushes_completed_spans(workdir, nginx):
    quick = Agent(workdir, name="quick", extra_env={"OTEL_BSP_SCHEDULE_DELAY": "60000"})
    assert curl(f"http://127.0.0.1:{nginx.port}/index.html") == "200"
    time.sleep(0.3)
    assert quick.stop() == 0
    spans = quick.spans_for_port(nginx.port)
    assert len(spans) == 2
    assert quick.stats()["spans_dropped"] == 0


def keep_alive_requests(port, count):
    """`count` requests, one after another, on one connection."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        request = get("/index.html", port)
        for _ in range(count):
            s.sendall(request)
            assert read_responses(s, 1) == [200]


@pytest.mark.parametrize("buffer", ["ring", "perf"])
def test_each_buffer_kind_delivers_every_exchange_in_order(workdir, nginx, buffer):
    """Both ways of reading the kernel's records (rings read in place,
    perf buffers copied out) give every span, each server span under its
    client's, with nothing counted lost or orphaned: four connections at
    once, so that both CPUs' buffers hold records of one drain."""
    reader = Agent(workdir, name=f"buffer-{buffer}", extra_env={"SONDE_BUFFER": buffer})
    try:
        clients = [threading.Thread(target=keep_alive_requests, args=(nginx.port, 100))
                   for _ in range(4)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        spans = reader.wait_spans(nginx.port, 800)
        counters = reader.wait_stats(lambda c: c["spans_built"] >= 800)
    finally:
        assert reader.stop() == 0
    assert f"{buffer} buffers:" in reader.err_path.read_text()
    clients_by_id = {s["context"]["span_id"]: s for s in by_kind(spans, "CLIENT")}
    servers = by_kind(spans, "SERVER")
    assert (len(clients_by_id), len(servers)) == (400, 400)
    for server in servers:
        client = clients_by_id[server["parent_id"]]
        assert client["context"]["trace_id"] == server["context"]["trace_id"]
    assert counters["lost_ringbuf_full"] == 0
    assert counters["orphan_responses"] == 0


def test_excluded_process_is_not_traced(workdir, nginx):
    excluding = Agent(workdir, name="exclude", extra_env={"SONDE_EXCLUDE_COMM": "curl"})
    try:
        assert curl(f"http://127.0.0.1:{nginx.port}/index.html") == "200"
        time.sleep(1)
    finally:
        assert excluding.stop() == 0
    spans = excluding.spans_for_port(nginx.port)
    assert [s["kind"] for s in spans] == ["SpanKind.SERVER"]
    assert excluding.stats()["excluded_conns"] >= 1


def test_node_server_on_a_dual_stack_socket(agent, node_server):
    assert curl(f"http://127.0.0.1:{node_server.port}/users/42") == "200"
    assert curl(f"http://127.0.0.1:{node_server.port}/nope") == "404"
    # Three 1000-byte chunks, each in its own call longer than the capture,
    # the last with the terminator: the call's tail holds it, so the body
    # size is exact on both sides.
    assert curl(f"http://127.0.0.1:{node_server.port}/chunked") == "200"
    spans = agent.wait_spans(node_server.port, 6)
    assert len(spans) == 6
    chunked = [s for s in spans if s["attributes"]["url.path"] == "/chunked"]
    assert one(chunked, "SERVER")["attributes"]["http.response.body.size"] == 3000
    assert one(chunked, "CLIENT")["attributes"]["http.response.body.size"] == 3000
    assert all(s["attributes"]["http.response.status_code"] == 200 for s in chunked)
    servers = sorted(by_kind(spans, "SERVER"), key=lambda s: s["start_time"])[:2]
    assert [s["name"] for s in servers] == ["GET /users/{id}", "GET /nope"]
    assert servers[0]["attributes"]["client.address"] == "127.0.0.1"
    assert servers[0]["attributes"]["http.response.body.size"] == len('{"id":"42"}')
    assert servers[1]["attributes"]["http.response.status_code"] == 404
    assert resource(servers[0], "service.name") == "server"


def settled(agent, timeout=20):
    """The counters once two writes of the stats file (one a second) agree."""
    deadline = time.time() + timeout
    last = agent.stats()
    while time.time() < deadline:
        time.sleep(1.2)
        now = agent.stats()
        if now["events"] == last["events"] and now["spans_built"] == last["spans_built"]:
            return now
        last = now
    raise TimeoutError(f"counters still moving: {last}")


def test_full_ring_buffer_is_counted_reported_and_survived(workdir, flood_cgroup, flood_nginx):
    """A ring buffer far too small for wrk's rate: records are lost, counted
    exactly in lost_ringbuf_full, and logged each second it happens; sonde
    keeps running and traces the next request once the flood is over. The
    flood's own state is partly lost with its records (a close never seen
    ends its connection only when nginx reuses the fd), so the next request
    is told apart by its path, not by counting spans."""
    nginx = flood_nginx
    small = Agent(workdir, name="small-ring", extra_env={"SONDE_RINGBUF_BYTES": "65536",
                                                        "SONDE_INCLUDE": flood_cgroup.include})
    try:
        flood_cgroup.run(["wrk", "-t1", "-c8", "-d2s", f"http://127.0.0.1:{nginx.port}/index.html"],
                         timeout=60)
        flooded = small.wait_stats(lambda c: c["lost_ringbuf_full"] > 0)
        assert small.proc.poll() is None
        before = settled(small)  # the flood's last spans and losses are counted
        assert curl(f"http://127.0.0.1:{nginx.port}/ok") == "200"
        deadline = time.time() + 15
        while not [s for s in small.spans_for_port(nginx.port)
                   if s["attributes"].get("url.path") == "/ok"] and time.time() < deadline:
            time.sleep(0.1)
        after = settled(small)
        next_request = [s for s in small.spans_for_port(nginx.port)
                        if s["attributes"].get("url.path") == "/ok"]
        assert sorted(s["kind"] for s in next_request) == ["SpanKind.CLIENT", "SpanKind.SERVER"]
        assert after["lost_ringbuf_full"] == before["lost_ringbuf_full"]
    finally:
        assert small.stop() == 0
    warned = [int(n) for n in re.findall(r"warn: (\d+) records lost in the last second",
                                         small.err_path.read_text())]
    assert warned and sum(warned) == small.stats()["lost_ringbuf_full"] >= flooded["lost_ringbuf_full"]
