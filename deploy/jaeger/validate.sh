#!/usr/bin/env bash
# Asks Jaeger's query API whether traces arrived: the services it knows,
# and for each (or for the ones named) how many traces and spans it holds
# from the last hour (LOOKBACK_S seconds). Exits 0 when every named service has at least one
# trace (or, with no names, when any service has), 1 otherwise.
#   deploy/jaeger/validate.sh [service ...]
#   JAEGER_URL=http://jaeger:16686 deploy/jaeger/validate.sh nginx
set -euo pipefail

JAEGER_URL="${JAEGER_URL:-http://localhost:16686}"
LOOKBACK_S="${LOOKBACK_S:-3600}"

fetch() {
	curl -fsS --max-time 10 "$JAEGER_URL$1" || {
		echo "validate: cannot reach Jaeger's query API at $JAEGER_URL$1" >&2
		exit 1
	}
}

services_json=$(fetch /api/services)
mapfile -t services < <(printf '%s' "$services_json" | python3 -c '
import json, sys
for name in json.load(sys.stdin).get("data") or []:
    if name != "jaeger-all-in-one":
        print(name)')

if [ $# -gt 0 ]; then
	wanted=("$@")
else
	wanted=("${services[@]}")
fi
if [ ${#wanted[@]} -eq 0 ]; then
	echo "validate: Jaeger knows no service yet: no span has arrived" >&2
	exit 1
fi

echo "Jaeger at $JAEGER_URL knows: ${services[*]:-(none)}"
missing=0
for service in "${wanted[@]}"; do
	encoded=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$service")
	end_us=$(($(date +%s) * 1000000))
	start_us=$((end_us - LOOKBACK_S * 1000000))
	traces_json=$(fetch "/api/traces?service=$encoded&start=$start_us&end=$end_us&limit=100")
	summary=$(printf '%s' "$traces_json" | python3 -c '
import json, sys
traces = json.load(sys.stdin).get("data") or []
spans = sum(len(t.get("spans", [])) for t in traces)
names = sorted({s["operationName"] for t in traces for s in t.get("spans", [])})
print(len(traces), spans, ", ".join(names[:8]))')
	read -r ntraces nspans names <<<"$summary"
	if [ "$ntraces" -gt 0 ]; then
		echo "  ok       $service: $ntraces traces, $nspans spans ($names)"
	else
		echo "  MISSING  $service: no trace in the last $LOOKBACK_S s"
		missing=1
	fi
done
exit $missing
