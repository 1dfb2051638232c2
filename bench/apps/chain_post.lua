-- wrk script for the two-hop chain: the CLI's "training start" call.
wrk.method = "POST"
wrk.path = "/api/v1/training/start"
wrk.body = '{"symbol": "AAPL", "timeframe": "1h", "strategy": "bench"}'
wrk.headers["Content-Type"] = "application/json"
