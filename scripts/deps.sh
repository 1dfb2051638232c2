#!/usr/bin/env bash
# Installs what building, running and testing sonde need on Debian 12.
# Idempotent: skips apt when everything is already there.
set -euo pipefail

packages=(
	# build
	make gcc clang-19 llvm-19 bpftool libbpf-dev libelf-dev zlib1g-dev pkg-config
	# OTLP export: protobuf encoding, HTTP/1.1 and HTTP/2 (nghttp2) with TLS
	libprotobuf-c-dev protobuf-c-compiler libcurl4-openssl-dev libnghttp2-dev ca-certificates
	# the Prometheus metrics endpoint; JSON log lines; the configuration file
	libmicrohttpd-dev libcjson-dev libyaml-dev
	# tests: unit, fuzz, end-to-end servers and clients, the OTLP receiver
	libcriterion-dev libclang-rt-19-dev
	nginx-light wrk curl iproute2 procps openssl
	# proxies the tests put between client and backend
	socat haproxy
	python3 python3.11-dev python3-pytest python3-fastapi python3-uvicorn python3-httpx
	# database protocols: real servers and the clients the tests drive
	postgresql redis-server python3-psycopg2 python3-asyncpg python3-redis
	# metrics: promtool checks the exposition
	prometheus
	# benchmarks: h2load holds a fixed request rate
	nghttp2-client
	# the unit's hardening is scored offline by systemd-analyze
	systemd
	# the agent on Debian 12's kernel: qemu boots it, with busybox in its initramfs
	qemu-system-x86 busybox-static cpio
)
# Node.js runs the test receiver and a test server; a machine may already
# have a newer one than Debian's (18), which is fine.
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# nginx-light, postgresql, redis-server, prometheus and haproxy start their packaged services
# when installed where systemd runs; the tests run their own instances on
# free ports, so keep the packaged ones out of the way.
for unit in nginx postgresql redis-server prometheus haproxy; do
	if command -v systemctl >/dev/null && systemctl is-active --quiet "$unit" 2>/dev/null; then
		systemctl stop "$unit" || true
		systemctl disable "$unit" >/dev/null 2>&1 || true
	fi
done
# The user sonde runs as under its systemd unit, and as the end-to-end
# tests run it that way.
id -u sonde >/dev/null 2>&1 ||
	useradd --system --user-group --no-create-home --home-dir /nonexistent \
		--shell /usr/sbin/nologin sonde
