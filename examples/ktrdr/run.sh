#!/bin/sh
# Starts or stops the ktrdr reference system on loopback.
#
#   examples/ktrdr/run.sh start   # api on $KTRDR_PORT_BASE (8000), host
#                                 # service +1, training workers +2 +3,
#                                 # backtest workers +4 +5, MCP tool
#                                 # server +6
#   examples/ktrdr/run.sh stop    # by the PIDs written at start
#
# KTRDR_API_SERVER=threaded serves the api thread per request instead of
# uvicorn; KTRDR_JOB_SECONDS (0.2) is how long a worker's job runs. Logs
# and PIDs go to $KTRDR_RUN_DIR (/tmp/ktrdr).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
run_dir=${KTRDR_RUN_DIR:-/tmp/ktrdr}
base=${KTRDR_PORT_BASE:-8000}
python=/usr/bin/python3

start_one() { # name port command...
	name=$1 port=$2
	shift 2
	(cd "$here" && exec env "$@" >"$run_dir/$name.log" 2>&1) &
	echo $! >"$run_dir/$name.pid"
}

uvicorn_app() { # module port
	echo "$python -m uvicorn $1 --host 127.0.0.1 --port $2 --no-access-log"
}

wait_port() {
	for _ in $(seq 100); do
		if $python -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "ktrdr: nothing listens on port $1; see $run_dir/*.log" >&2
	return 1
}

start() {
	mkdir -p "$run_dir"
	api_url="http://127.0.0.1:$base"
	training="http://127.0.0.1:$((base + 2)),http://127.0.0.1:$((base + 3))"
	backtest="http://127.0.0.1:$((base + 4)),http://127.0.0.1:$((base + 5))"
	start_one ktrdr-ib-host-service $((base + 1)) OTEL_SERVICE_NAME=ktrdr-ib-host-service \
		$(uvicorn_app ib_host:app $((base + 1)))
	for i in 1 2; do
		port=$((base + 1 + i))
		start_one ktrdr-training-worker-$i $port WORKER_KIND=training WORKER_ID=$i \
			KTRDR_API_URL="$api_url" OTEL_SERVICE_NAME=ktrdr-training-worker-$i \
			$(uvicorn_app worker:app $port)
		port=$((base + 3 + i))
		start_one ktrdr-backtest-worker-$i $port WORKER_KIND=backtest WORKER_ID=$i \
			KTRDR_API_URL="$api_url" OTEL_SERVICE_NAME=ktrdr-backtest-worker-$i \
			$(uvicorn_app worker:app $port)
	done
	if [ "${KTRDR_API_SERVER:-uvicorn}" = threaded ]; then
		api="$python api_threaded.py $base"
	else
		api=$(uvicorn_app api:app "$base")
	fi
	start_one ktrdr-api "$base" OTEL_SERVICE_NAME=ktrdr-api \
		KTRDR_IB_HOST_URL=http://127.0.0.1:$((base + 1)) \
		KTRDR_TRAINING_WORKERS="$training" KTRDR_BACKTEST_WORKERS="$backtest" $api
	start_one ktrdr-mcp $((base + 6)) OTEL_SERVICE_NAME=ktrdr-mcp KTRDR_API_URL="$api_url" \
		$(uvicorn_app mcp_server:app $((base + 6)))
	for port in $(seq "$base" $((base + 6))); do
		wait_port "$port"
	done
	echo "ktrdr: up; api on http://127.0.0.1:$base (logs in $run_dir)"
}

stop() {
	for pidfile in "$run_dir"/*.pid; do
		[ -e "$pidfile" ] || continue
		kill "$(cat "$pidfile")" 2>/dev/null || true
		rm -f "$pidfile"
	done
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
