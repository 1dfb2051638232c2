"""Free loopback ports, for the end-to-end tests and the benchmarks."""
import random
import socket


def free_port_block(count):
    """A base port with `count` free ports from it on."""
    for _ in range(100):
        base = random.randrange(20000, 40000)
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no block of free ports")
