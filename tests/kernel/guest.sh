#!/bin/sh
# Runs in the test kernel, over the host's read-only root: the agent from
# this tree, a real Python HTTP server and curl; leaves the spans, the
# agent's log and how each step went in the test's folder (/mnt) for the
# host to check. Nothing else is writable.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONDONTWRITEBYTECODE=1 HOME=/mnt
vm=/mnt
. "$vm/params"
exec >"$vm/steps.txt" 2>&1

echo "kernel $(uname -r)"
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
ip link set lo up
"$SONDE" --config /dev/null --exporter console >"$vm/spans.jsonl" 2>"$vm/agent.log" &
agent=$!
# Loading the programs takes the verifier a while under emulation.
for i in $(seq 1 600); do
	grep -q 'ready:' "$vm/agent.log" && break
	kill -0 $agent 2>/dev/null || break
	sleep 0.5
done
if grep -q 'ready:' "$vm/agent.log"; then
	echo "agent ready"
	mkdir -p "$vm/site" && echo hello >"$vm/site/index.txt"
	cd "$vm/site" && python3 -m http.server "$PORT" --bind 127.0.0.1 >/dev/null 2>&1 &
	server=$!
	for i in $(seq 1 100); do
		curl -s -o /dev/null "http://127.0.0.1:$PORT/warmup" && break
		sleep 0.2
	done
	curl -s -o /dev/null -w "curl %{http_code}\n" "http://127.0.0.1:$PORT/index.txt"
	curl -s -o /dev/null -w "curl %{http_code}\n" "http://127.0.0.1:$PORT/missing"
	sleep 2
	kill $server
fi
kill -INT $agent
wait $agent
echo "agent exit $?"
sync
poweroff -f
