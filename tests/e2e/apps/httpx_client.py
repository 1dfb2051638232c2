"""httpx client for the end-to-end tests: GET each URL given, in order."""
import sys

import httpx

with httpx.Client(timeout=10) as client:
    for url in sys.argv[1:]:
        print(client.get(url).status_code)
