"""Database client spans end to end: a real PostgreSQL (a private cluster
made here) and a real redis-server, on free loopback ports, called by a
thread-per-request service (psycopg2, redis-py) and an asyncio one
(asyncpg, redis.asyncio on uvicorn), sequentially and concurrently, with
pools opened after sonde starts and before.

Each request /orders/K touches table orders_K and makes K % 3 + 1 Redis
GETs and one SET, so the spans under each server span say which request
they belong to. Every value the test sends is a fresh secret that must not
appear in any exported attribute."""
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import psycopg2
import pytest

from conftest import APPS, PYTHON, Agent, Postgres, free_port, wait_port

ORDERS = 8


def create_shop(pg):
    """The shop database: tables orders_0 .. orders_7, one seeded row."""
    admin = psycopg2.connect(pg.url("postgres"))
    admin.autocommit = True
    admin.cursor().execute("CREATE DATABASE shop")
    admin.close()
    conn = psycopg2.connect(pg.url("shop"))
    conn.autocommit = True
    with conn.cursor() as cur:
        for k in range(ORDERS):
            cur.execute(f"CREATE TABLE orders_{k} (id int PRIMARY KEY, customer text, "
                        "total numeric)")
        cur.execute("INSERT INTO orders_0 VALUES (1, 'seed', 1)")
    conn.close()


class Redis:
    def __init__(self, workdir):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)
        wait_port(self.port)
        subprocess.run(["redis-cli", "-p", str(self.port), "SET", "a-string", "x"],
                       check=True, capture_output=True)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def postgres(workdir):
    pg = Postgres(workdir)
    create_shop(pg)
    pg.dsn = pg.url("shop")
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def redis_server(workdir):
    r = Redis(workdir)
    yield r
    r.stop()


class Service:
    """db_threaded.py or db_async.py on a free port."""

    def __init__(self, kind, postgres, redis_server):
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=str(APPS), DB_PG_DSN=postgres.dsn,
                   DB_REDIS_PORT=str(redis_server.port), OTEL_SERVICE_NAME=f"db-{kind}")
        if kind == "threaded":
            cmd = [PYTHON, str(APPS / "db_threaded.py"), str(self.port), postgres.dsn,
                   str(redis_server.port)]
        else:
            cmd = [PYTHON, "-m", "uvicorn", "db_async:app", "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, env=env)
        wait_port(self.port, timeout=30)

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def orders_requests(service, concurrent):
    """GET /orders/K for every K; returns the secret each request sent."""
    secrets = {k: f"s{uuid.uuid4().hex[:12]}" for k in range(ORDERS)}
    statuses = {}

    def call(k):
        statuses[k] = service.get(f"/orders/{k}?secret={secrets[k]}")
    if concurrent:
        threads = [threading.Thread(target=call, args=(k,)) for k in range(ORDERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for k in range(ORDERS):
            call(k)
    assert statuses == {k: 200 for k in range(ORDERS)}
    return secrets


def children(spans, parent):
    return [s for s in spans if s["parent_id"] == parent["context"]["span_id"]]


def server_span(spans, port, path):
    found = [s for s in spans if s["kind"] == "SpanKind.SERVER"
             and s["attributes"].get("server.port") == port
             and s["attributes"].get("url.path") == path]
    return found[0] if len(found) == 1 else None


def expected_children(k, postgres, redis_server):
    names = [("SELECT orders_%d" % k, postgres.port)] + [("GET", redis_server.port)] * (k % 3 + 1)
    return sorted(names + [("SET", redis_server.port)])


def wait_for_traces(agent, service, postgres, redis_server, timeout=20):
    """Every /orders/K server span with all its database children."""
    deadline = time.time() + timeout
    while True:
        spans = agent.spans()
        servers = {k: server_span(spans, service.port, f"/orders/{k}") for k in range(ORDERS)}
        done = all(s and len(children(spans, s)) >= len(expected_children(k, postgres, redis_server))
                   for k, s in servers.items())
        if done or time.time() > deadline:
            return spans, servers
        time.sleep(0.2)


def check_traces(agent, service, postgres, redis_server, secrets, picked_up=False):
    """picked_up: the pools' connections were open before the agent, which
    then never saw their startup and so not their database's name."""
    spans, servers = wait_for_traces(agent, service, postgres, redis_server)
    for k, server in servers.items():
        assert server, f"no single server span for /orders/{k}"
        kids = children(spans, server)
        got = sorted((s["name"], s["attributes"]["server.port"]) for s in kids)
        assert got == expected_children(k, postgres, redis_server), (k, got)
        for s in kids:
            assert s["kind"] == "SpanKind.CLIENT"
            assert s["context"]["trace_id"] == server["context"]["trace_id"]
            assert s["status"]["status_code"] == "UNSET", s
            attrs = s["attributes"]
            if attrs["server.port"] == postgres.port:
                assert attrs["db.system.name"] == "postgresql"
                assert attrs["db.operation.name"] == "SELECT"
                assert attrs["db.collection.name"] == f"orders_{k}"
                assert "customer = " in attrs["db.query.text"]
                if not picked_up:
                    assert attrs["db.namespace"] == "shop"
            else:
                assert attrs["db.system.name"] == "redis"
                assert attrs["db.query.text"] in ("GET ?", "SET ? ?")
    exported = json.dumps([s["attributes"] for s in spans])
    for secret in secrets.values():
        assert secret not in exported
    assert "4242.5" not in exported


@pytest.fixture(params=["threaded", "async"])
def service(request, agent, postgres, redis_server):
    s = Service(request.param, postgres, redis_server)
    yield s
    s.stop()


@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
def test_database_calls_are_children_of_their_request(agent, service, postgres, redis_server,
                                                      concurrent):
    secrets = orders_requests(service, concurrent)
    check_traces(agent, service, postgres, redis_server, secrets)


def test_errors_carry_sqlstate_and_redis_prefix(agent, service, postgres, redis_server):
    secret = f"s{uuid.uuid4().hex[:12]}"
    assert service.get(f"/fail?secret={secret}") == 409
    deadline = time.time() + 20
    while time.time() < deadline:
        spans = agent.spans()
        server = server_span(spans, service.port, "/fail")
        if server and len(children(spans, server)) >= 2:
            break
        time.sleep(0.2)
    assert server, "no server span for /fail"
    kids = {s["name"]: s for s in children(spans, server)}
    assert set(kids) == {"INSERT orders_0", "LPUSH"}, list(kids)
    insert, lpush = kids["INSERT orders_0"], kids["LPUSH"]
    assert insert["status"]["status_code"] == "ERROR"
    assert insert["attributes"]["error.type"] == "23505"
    assert insert["attributes"]["db.response.status_code"] == "23505"
    assert lpush["status"]["status_code"] == "ERROR"
    assert lpush["attributes"]["error.type"] == "WRONGTYPE"
    assert secret not in json.dumps([s["attributes"] for s in spans])


@pytest.mark.parametrize("kind", ["threaded", "async"])
def test_pools_opened_before_sonde_are_picked_up(workdir, agent, postgres, redis_server, kind):
    """The service and its pools start first; a second agent starts after
    and sees the pooled connections only from their next request on."""
    service = Service(kind, postgres, redis_server)
    late = Agent(workdir, name=f"late-db-{kind}")
    try:
        secrets = orders_requests(service, concurrent=False)
        check_traces(late, service, postgres, redis_server, secrets, picked_up=True)
        late.wait_stats(lambda c: c["postgres_conns"] > 0 and c["redis_conns"] > 0)
    finally:
        assert late.stop() == 0
        service.stop()


def test_database_servers_add_no_span(agent, postgres, redis_server):
    """postgres and redis-server are traced too: their ends of the
    connections are written off, so each operation has one span."""
    stats = agent.wait_stats(lambda c: c["db_server_conns"] > 0)
    server_db_spans = [s for s in agent.spans() if s["kind"] == "SpanKind.SERVER"
                       and s["attributes"].get("server.port") in (postgres.port, redis_server.port)]
    assert server_db_spans == []
    assert stats["db_server_conns"] > 0


def test_pubsub_pushes_and_copy_make_no_extra_spans(agent, postgres, redis_server):
    """A subscriber gets one span for SUBSCRIBE, none per pushed message;
    a COPY FROM STDIN is one span, and the pairing after it holds."""
    script = f"""
import io, time, psycopg2, redis
sub = redis.Redis(port={redis_server.port}).pubsub()
sub.subscribe("news")
sub.get_message(timeout=5)
pub = redis.Redis(port={redis_server.port})
for i in range(20):
    pub.publish("news", f"item {{i}}")
got = 0
deadline = time.time() + 10
while got < 20 and time.time() < deadline:
    if sub.get_message(timeout=1):
        got += 1
assert got == 20, got
conn = psycopg2.connect("{postgres.dsn}")
conn.autocommit = True
cur = conn.cursor()
cur.copy_expert("COPY orders_7 (id, customer, total) FROM STDIN",
                io.StringIO("".join(f"{{i}}\\tc{{i}}\\t{{i}}\\n" for i in range(100, 400))))
cur.execute("SELECT count(*) FROM orders_7")
print(cur.fetchone()[0])
"""
    run = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, OTEL_SERVICE_NAME="db-pubsub"))
    assert run.returncode == 0, run.stderr
    deadline = time.time() + 20
    while time.time() < deadline:
        mine = [s for s in agent.spans()
                if s["resource"]["attributes"].get("service.name") == "db-pubsub"]
        names = [s["name"] for s in mine]
        if names.count("PUBLISH") == 20 and "SELECT orders_7" in names:
            break
        time.sleep(0.2)
    assert names.count("SUBSCRIBE") == 1, names
    assert names.count("PUBLISH") == 20, names
    assert not [n for n in names if n not in ("SUBSCRIBE", "PUBLISH", "COPY orders_7",
                                              "SELECT orders_7")], names
    copy = [s for s in mine if s["name"] == "COPY orders_7"]
    assert len(copy) == 1 and copy[0]["status"]["status_code"] == "UNSET"
    select = [s for s in mine if s["name"] == "SELECT orders_7"]
    assert len(select) == 1 and select[0]["attributes"]["db.response.returned_rows"] == 1
