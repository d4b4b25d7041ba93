#!/usr/bin/env bash
# https_upstream.sh: POST /api/generate proxied to an HTTPS upstream (the
# production case: api.anthropic.com is https://), in one run and alternately:
# aigate with its native client, aigate with libcurl (upstream_client =
# "curl"), and nginx proxy_pass https:// with a keep-alive pool. The upstream
# is nginx over TLS 1.3 (a test CA the clients verify against) answering the
# canned Messages API body; unique prompts and Cache-Control: no-store, so
# every request goes upstream. One aigate thread, one nginx worker each.
# Usage: bench/https_upstream.sh [seconds] [rounds]   (needs build/release)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-2}
dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for f in "$dir"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] && echo "kept $dir" || rm -rf "$dir"
}
trap cleanup EXIT INT TERM
free_port() { build/release/ag_loadgen --free-port 1; }
up_port=$(free_port); native_port=$(free_port); curl_port=$(free_port); ngx_port=$(free_port)
user=; [ "$(id -u)" = 0 ] && user="user $(id -un) $(id -gn);"

# The test CA and the upstream's certificate for 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/ca.key" \
    -out "$dir/ca.pem" -days 2 -subj "/CN=bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/up.key" \
    -out "$dir/up.csr" -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$dir/ext.cnf"
openssl x509 -req -in "$dir/up.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -set_serial 1 \
    -days 2 -extfile "$dir/ext.cnf" -out "$dir/up.pem" 2>/dev/null

canned=$(tr -d '\n' <bench/canned/messages.json)
cat >"$dir/upstream.conf" <<NGX
$user
worker_processes 1;
pid $dir/upstream.pid;
error_log $dir/upstream.err;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$up_port ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate $dir/up.pem;
    ssl_certificate_key $dir/up.key;
    location = /v1/messages { default_type application/json; return 200 '$canned'; }
  }
}
NGX
cat >"$dir/proxy.conf" <<NGX
$user
worker_processes 1;
pid $dir/proxy.pid;
error_log $dir/proxy.err;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir; proxy_temp_path $dir;
  keepalive_requests 100000000;
  upstream tls { server 127.0.0.1:$up_port; keepalive 64; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$ngx_port;
    location = /api/generate {
      proxy_pass https://tls/v1/messages; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_verify on; proxy_ssl_trusted_certificate $dir/ca.pem; proxy_ssl_session_reuse on;
      proxy_ssl_name 127.0.0.1; proxy_ssl_protocols TLSv1.2 TLSv1.3;
    }
  }
}
NGX
nginx -p "$dir" -c "$dir/upstream.conf"
nginx -p "$dir" -c "$dir/proxy.conf"
for client in native curl; do
    port=native_port; [ $client = curl ] && port=curl_port
    mkdir -p "$dir/$client"
    printf '[aigate]\nrate_limit = 60000000\naccess_log = false\nadmin_listen = ""\ndata_dir = "%s"\nupstream_client = "%s"\nupstream_ca_file = "%s"\n' \
        "$dir/$client" "$client" "$dir/ca.pem" >"$dir/$client.toml"
    ANTHROPIC_API_KEY=k build/release/aigate serve --port "${!port}" --threads 1 \
        --upstream "https://127.0.0.1:$up_port" --config "$dir/$client.toml" 2>"$dir/$client.log" &
    pids+=($!)
done
for _ in $(seq 200); do
    grep -q "listening on" "$dir/native.log" && grep -q "listening on" "$dir/curl.log" && break
    sleep 0.05
done
cat >"$dir/gen.lua" <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/api/generate", {["Content-Type"]="application/json",
    ["Cache-Control"]="no-store"}, '{"prompt":"unique prompt ' .. counter .. '"}')
end
done = function(s, lat, r)
  io.write(string.format("%.0f %d %d %d %d\n", s.requests / (s.duration / 1e6), lat:percentile(50),
    lat:percentile(99), s.errors.status + s.errors.connect + s.errors.read + s.errors.timeout,
    s.requests))
end
LUA
printf '%-14s %10s %8s %8s %7s\n' target req/s p50_us p99_us errors
for _ in $(seq "$rounds"); do
    for t in aigate-native aigate-curl nginx; do
        case $t in
        aigate-native) url=http://127.0.0.1:$native_port ;;
        aigate-curl) url=http://127.0.0.1:$curl_port ;;
        nginx) url=http://127.0.0.1:$ngx_port ;;
        esac
        read -r rps p50 p99 err _ < <(wrk -t1 -c32 -d"${secs}s" -s "$dir/gen.lua" "$url" | tail -n 1)
        printf '%-14s %10s %8s %8s %7s\n' "$t" "$rps" "$p50" "$p99" "$err"
    done
done
