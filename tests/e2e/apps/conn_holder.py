"""Opens COUNT idle loopback TCP connections to its own listener and holds
both ends until killed: what an unprivileged neighbour can do to a
host-wide connection table. Source addresses vary over 127.0.0.0/8 so that
the ephemeral ports do not run out; SOURCE picks the first of them, so
that several holders do not share ports. Prints "holding COUNT" when done.
Usage: conn_holder.py COUNT SOURCE""" 
import resource
import socket
import sys
import time

count, source = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
port = listener.getsockname()[1]
held = []
per_source = 20000
for i in range(count):
    c = socket.socket()
    c.bind((f"127.0.{source + i // per_source}.1", 0))
    c.connect(("127.0.0.1", port))
    s, _ = listener.accept()
    held += [c, s]
print(f"holding {count}", flush=True)
while True:
    time.sleep(3600)
