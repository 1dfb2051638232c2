"""A thread-per-request service over PostgreSQL (psycopg2) and Redis
(redis-py), with no tracing code. Both pools open at start-up.

    db_threaded.py PORT PG_DSN REDIS_PORT

GET /orders/K?secret=S  one SELECT on table orders_K, K % 3 + 1 Redis GETs
                        and one SET, every value carrying S
GET /fail?secret=S      an INSERT that violates a unique key (23505) and an
                        LPUSH on a string key (WRONGTYPE): 409
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import psycopg2
import psycopg2.pool
import redis

PORT, DSN, REDIS_PORT = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
PG = psycopg2.pool.ThreadedConnectionPool(4, 16, DSN)
REDIS = redis.ConnectionPool(host="127.0.0.1", port=REDIS_PORT, max_connections=16)


def warm_up():
    """Opens the pools' connections now, as a service does at start-up."""
    conns = [PG.getconn() for _ in range(4)]
    for conn in conns:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
    for conn in conns:
        PG.putconn(conn)
    clients = [REDIS.get_connection("PING") for _ in range(4)]
    for c in clients:
        c.send_command("PING")
        c.read_response()
        REDIS.release(c)


def orders(k, secret):
    conn = PG.getconn()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT id, total FROM orders_{k} WHERE customer = %s AND total > %s",
                        (secret, 4242.5))
            rows = cur.fetchall()
    finally:
        PG.putconn(conn)
    r = redis.Redis(connection_pool=REDIS)
    for i in range(k % 3 + 1):
        r.get(f"order:{secret}:{i}")
    r.set(f"last:{secret}", f"value-{secret}")
    return 200, {"rows": len(rows)}


def fail(secret):
    conn = PG.getconn()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO orders_0 (id, customer, total) VALUES (1, %s, 7)", (secret,))
    except psycopg2.IntegrityError:
        pass
    finally:
        PG.putconn(conn)
    try:
        redis.Redis(connection_pool=REDIS).lpush("a-string", secret)
    except redis.ResponseError:
        pass
    return 409, {"error": "conflict"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urlparse(self.path)
        secret = parse_qs(url.query).get("secret", [""])[0]
        parts = url.path.strip("/").split("/")
        if parts[0] == "orders":
            status, body = orders(int(parts[1]), secret)
        elif parts[0] == "fail":
            status, body = fail(secret)
        else:
            status, body = 404, {}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    warm_up()
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
