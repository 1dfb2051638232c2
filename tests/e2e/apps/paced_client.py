"""RATE GET requests a second on one keep-alive connection for SECONDS;
prints how many were answered 200.
Usage: paced_client.py PORT RATE SECONDS"""
import http.client
import sys
import time


def main(port, rate, seconds):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    answered = 0
    started = time.time()
    for n in range(int(rate * seconds)):
        delay = started + n / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        conn.request("GET", f"/ok?n={n}")
        response = conn.getresponse()
        response.read()
        answered += response.status == 200
    conn.close()
    print(answered, flush=True)


main(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]))
