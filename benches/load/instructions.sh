#!/usr/bin/env bash
# benches/load/instructions.sh - instructions per request of `penghubung serve`, counted by
# valgrind (callgrind), for A/Bs finer than this machine's timing noise (docs/performance.md).
#
# Usage: benches/load/instructions.sh BINARY [BINARY...]
#   For each binary and each path (GET /bench/item; POST of a ~1 KB JSON body to
#   /bench/checked, validated both ways against bench/item.v1.json), serves a `terbatas`
#   service under an agreement with the audit log in `sync` durability, sends N and 2N requests
#   on one keep-alive mTLS connection (curl; HTTP/2), and prints (total(2N) - total(N)) / N:
#   one request without start-up. The upstream is nginx on loopback (plain HTTP). Repeated runs
#   of one binary differ by about 1%.
# Env: N [500]; KEEP [unset]: a directory where each run's callgrind file is kept
# (<binary name>-<path>-<requests>.out), for callgrind_annotate. Loopback only; every run is bounded by N requests and a 600 s timeout.
set -euo pipefail
N=${N:-500}
command -v valgrind >/dev/null || { echo "needs valgrind" >&2; exit 1; }
command -v nginx >/dev/null || { echo "needs nginx (apt-get install -y nginx)" >&2; exit 1; }
W=$(mktemp -d /tmp/instructions.XXXXXX)
UP=18990 GW=28445
cleanup() { [[ -f $W/up/nginx.pid ]] && kill "$(cat "$W/up/nginx.pid")" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

"$1" pki init "$W/pki" --agency bench=bench-client > /dev/null
python3 - "$W" <<'PY'
import json, os, sys
w = sys.argv[1]
items = [{"id": i, "name": "item-%06d" % i, "agency": "bench", "ok": True} for i in range(14)]
body = json.dumps({"status": "ok", "items": items}, separators=(",", ":"))
body = body[:-1] + ',"pad":"' + "x" * max(0, 1024 - len(body) - 9) + '"}'
open(w + "/body.json", "w").write(body)
os.makedirs(w + "/schemas/bench", exist_ok=True)
item = {"type": "object", "required": ["id", "name", "agency", "ok"], "additionalProperties": False,
        "properties": {"id": {"type": "integer", "minimum": 0},
                       "name": {"type": "string", "pattern": "^item-[0-9]{6}$"},
                       "agency": {"type": "string", "maxLength": 64}, "ok": {"type": "boolean"}}}
schema = {"type": "object", "required": ["status", "items"], "additionalProperties": False,
          "properties": {"status": {"enum": ["ok"]},
                         "items": {"type": "array", "maxItems": 100, "items": item},
                         "pad": {"type": "string", "maxLength": 2048}}}
json.dump(schema, open(w + "/schemas/bench/item.v1.json", "w"))
PY
mkdir -p "$W/up"
cat > "$W/up/nginx.conf" <<NG
worker_processes 1;
daemon on;
pid $W/up/nginx.pid;
error_log $W/up/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $W/up/cbt; proxy_temp_path $W/up/pt; fastcgi_temp_path $W/up/ft;
  uwsgi_temp_path $W/up/ut; scgi_temp_path $W/up/st;
  keepalive_requests 100000000; keepalive_timeout 300s;
  default_type application/json;
  server { listen 127.0.0.1:$UP; location / { return 200 '$(cat "$W/body.json")'; } }
}
NG
nginx -p "$W/up" -c "$W/up/nginx.conf" -e "$W/up/error.log"

count() { # binary kind requests -> instructions of the whole run
  local bin=$1 kind=$2 n=$3 r=$W/run-$RANDOM
  mkdir -p "$r/data"
  cat > "$r/bench.toml" <<T
[gateway]
id = "spl.bench"
listen = "127.0.0.1:$GW"
admin_listen = "127.0.0.1:0"
data_dir = "$r/data"
schemas_dir = "$W/schemas"
shutdown_grace = "2s"
[tls]
cert = "$W/pki/gateway.crt"
key = "$W/pki/gateway.key"
client_ca = ["$W/pki/ca.crt"]
[[agencies]]
code = "bench"
name = "Bench client"
clearance = "terbatas"
identities = ["bench-client"]
[[services]]
id = "bench"
owner = "bench"
classification = "terbatas"
prefix = "/bench"
upstreams = ["http://127.0.0.1:$UP"]
allow_plaintext = true
timeout = "10s"
  [[services.operations]]
  id = "get-item"
  method = "GET"
  path = "/item"
  [[services.operations]]
  id = "post-checked"
  method = "POST"
  path = "/checked"
  request_schema = "bench/item.v1.json"
  response_schema = "bench/item.v1.json"
[[agreements]]
id = "PKS-BENCH"
consumer = "bench"
service = "bench"
purpose = "Load test"
valid_from = 2020-01-01
valid_until = 2099-12-31
rate = "10000000/s"
[audit]
durability = "sync"
T
  RUST_LOG=warn timeout 600 valgrind --tool=callgrind --callgrind-out-file="$r/cg.out" \
    "$bin" serve --config "$r/bench.toml" > "$r/out.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 600); do (echo > /dev/tcp/127.0.0.1/$GW) 2>/dev/null && break; sleep 0.2; done
  local c=(curl -s -o /dev/null -w '%{http_code}\n' --cacert "$W/pki/ca.crt" --cert "$W/pki/bench.crt" --key "$W/pki/bench.key")
  # URL globbing ([1-N] in the fragment, which is not sent): N requests on one connection.
  if [[ $kind == get ]]; then
    "${c[@]}" "https://127.0.0.1:$GW/bench/item#[1-$n]" > "$r/codes"
  else
    "${c[@]}" -H 'content-type: application/json' --data-binary @"$W/body.json" \
      "https://127.0.0.1:$GW/bench/checked#[1-$n]" > "$r/codes"
  fi
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  if [[ $(grep -c '^200$' "$r/codes") != "$n" ]]; then echo "not every answer was 200: $r" >&2; exit 1; fi
  [[ -n ${KEEP:-} ]] && mkdir -p "$KEEP" && cp "$r/cg.out" "$KEEP/$(basename "$bin")-$kind-$n.out"
  grep -h 'Collected' "$r/out.log" | awk '{print $4}'
}

printf "binary\tpath\tinstructions/request\n"
for bin in "$@"; do
  for kind in get post; do
    one=$(count "$bin" "$kind" "$N"); two=$(count "$bin" "$kind" $((2 * N)))
    printf "%s\t%s\t%d\n" "$bin" "$kind" $(( (two - one) / N ))
  done
done
