#!/bin/sh
# Runs in the test kernel, over the host's read-only root: the agent from
# this tree, a real Python HTTP server, an inetd-style one (its socket its
# stdin and stdout) and curl, then the agent asked for
# entry points, which need uprobe_multi links (Linux 6.6); leaves the
# spans, the agents' logs and how each step went in the test's folder
# (/mnt) for the host to check. Nothing else is writable.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONDONTWRITEBYTECODE=1 HOME=/mnt
vm=/mnt
. "$vm/params"
exec >"$vm/steps.txt" 2>&1

# Loading the programs takes the verifier a while under emulation.
wait_ready() {
	for i in $(seq 1 600); do
		grep -q 'ready:' "$1" && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.5
	done
	return 1
}

echo "kernel $(uname -r)"
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
ip link set lo up
"$SONDE" --config /dev/null --exporter console >"$vm/spans.jsonl" 2>"$vm/agent.log" &
agent=$!
if wait_ready "$vm/agent.log" $agent; then
	echo "agent ready"
	mkdir -p "$vm/site" && echo hello >"$vm/site/index.txt"
	python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$vm/site" >/dev/null 2>&1 &
	server=$!
	for i in $(seq 1 100); do
		curl -s -o /dev/null "http://127.0.0.1:$PORT/warmup" && break
		sleep 0.2
	done
	curl -s -o /dev/null -w "curl %{http_code}\n" "http://127.0.0.1:$PORT/index.txt"
	curl -s -o /dev/null -w "curl %{http_code}\n" "http://127.0.0.1:$PORT/missing"
	systemd-socket-activate --inetd --accept -l "127.0.0.1:$INETD_PORT" \
		python3 "$INETD_APP" >/dev/null 2>&1 &
	inetd=$!
	# Listening, seen without a connection (each would start a server).
	listening=":$(printf '%04X' "$INETD_PORT") 00000000:0000 0A"
	for i in $(seq 1 100); do
		grep -q "$listening" /proc/net/tcp && break
		sleep 0.1
	done
	curl -s -o /dev/null -o /dev/null -w "inetd %{http_code}\n" \
		"http://127.0.0.1:$INETD_PORT/one" "http://127.0.0.1:$INETD_PORT/two"
	sleep 2
	kill $server $inetd
fi
kill -INT $agent
wait $agent
echo "agent exit $?"

SONDE_ENTRY_POINTS=native:/lib/x86_64-linux-gnu/libc.so.6:getpid timeout 300 "$SONDE" \
	--config /dev/null --exporter none >/dev/null 2>"$vm/native.log"
echo "native entry points: agent exit $?"
SONDE_ENTRY_POINTS=python:job "$SONDE" --config /dev/null --exporter none \
	>/dev/null 2>"$vm/python.log" &
agent=$!
wait_ready "$vm/python.log" $agent && echo "python entry points: agent ready"
kill -INT $agent
wait $agent
echo "python entry points: agent exit $?"
sync
poweroff -f
