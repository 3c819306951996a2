#!/usr/bin/env bash
# benches/load/run.sh - Penghubung beside nginx (and the upstream reached directly) on THIS
# machine, in one run. Adapted from ../shared/bench/peers.sh; see docs/performance.md.
#
# Loopback only (127.0.0.1). Every load run is bounded by -d/-D $DUR seconds plus `timeout`.
# Everything started here is stopped by PID on exit.
#
# Usage:
#   benches/load/run.sh [matrix|handshake|idle]
#   idle: for each peer, IDLE_CONNS [10000] mTLS keep-alive connections each make one request
#         and stay open; prints the proxy's resident memory per idle connection
# Env knobs (defaults in brackets):
#   PEERS      ["direct nginx penghubung"]   (haproxy also works) peers to run, one at a time
#   SCENARIOS  ["h1-mtls h1-mtls-post1k h2-mtls lat-h1-mtls"]   (mTLS only: Penghubung has no
#              plaintext listener; h1-plain / h1-tls / h2-tls still run for the other peers)
#   PASSES [3]  each pass runs every peer and scenario; the table gives medians over passes
#   DUR [10]  CONNS [64]  WRK_THREADS [1 if PIN=1 else 2]
#   H2_CLIENTS [16] H2_STREAMS [4]      (16 conns x 4 streams = 64 in flight)
#   RATE [2000]  LAT_CONNS [20]         fixed-rate latency runs (h2load --rps)
#   PIN [1]   1: load generator + upstream on cpu0, proxy alone on cpu1;
#                direct baseline: load generator cpu0, upstream cpu1.
#             0: no pinning.
#   KEYTYPE [ec]  ec = ECDSA P-256 certs, rsa = RSA-2048 certs
#   PENGHUBUNG_BIN [target/release/penghubung] (rebuilt with cargo build --release first,
#              unless BUILD=0: then PENGHUBUNG_BIN and GRPC_LOAD are run as they are, e.g. for
#              an A/B of two saved binaries)
#   URLPATH [/bench/item]  the path every peer is asked for; Penghubung routes it to a declared
#              operation (prefix /bench, operation GET|POST /item) of a `terbatas` service,
#              authorized under an agreement with a (never reached) quota
#   CACHEPATH [/bench/cached]  the path of the *-cache scenarios: Penghubung's operation has
#              cache_ttl = "600s"; nginx caches it with proxy_cache (proxy_cache_valid 200 10m).
#              h1-mtls-cache / h2-mtls-cache: every request after the first is a hit;
#              h1-mtls-miss (Penghubung and direct only): the same path with `Cache-Control:
#              no-cache`, so every request goes upstream and stores again (the miss path)
#   grpc-mtls (Penghubung only): Exchange.Call of bench/get-item on grpc_listen with the tonic
#              client (benches/load/grpc_load.rs), H2_CLIENTS connections x H2_STREAMS calls;
#              compare with h2-mtls, the same operation over HTTPS; grpc-mtls-h2load sends the
#              same call with h2load (one pre-encoded message), to tell client from gateway cost
#   AUDIT [off]  off | sync | interval: Penghubung's audit log (under the run's work dir) and
#              its durability
#   h1-mtls-policy: the full policy path of issue #9: POST of the ~1 KB JSON body to
#              POLICYPATH [/bench/checked], an operation of the `terbatas` service whose request
#              AND response are validated against bench/item.v1.json (every field typed, names
#              by pattern, no extra properties); run it with AUDIT=sync and compare with nginx's
#              h1-mtls (nginx proxies the same path and body without any of it)
#   lat-h1-mtls-policy: the same POST at the fixed rate RATE over LAT_CONNS connections
#              (h2load --h1 --rps): p50/p99 at a load every peer can carry, against direct
#   TAG  free text recorded in the results file
#   QUIET_PCT [15] QUIET_MAX [600]      wait (max s) before each run for total busy <= QUIET_PCT
#   OTHER_MAX [10] STEAL_MAX [10] RETRIES [2]   redo runs disturbed by foreign CPU / VM steal
# Columns: proxy_us_per_req = proxy CPU time / requests (the steadiest metric);
#   cpu0/cpu1 = busy % per core; other_pct / steal_pct = disturbance during the run.
# TLS: TLS 1.3 everywhere; wrk/h2load get their client certificate from clientcert_shim.so
#   (LD_PRELOAD). hs-* scenarios (handshake mode) send "Connection: close" and force a FULL
#   handshake per request (SHIM_NO_RESUME=1), i.e. one mTLS handshake + one proxied request each.
# Output: one TSV per pass under benches/load/results/ and the median table on stdout.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
MODE=${1:-matrix}
PEERS=${PEERS:-"direct nginx penghubung"}
if [[ $MODE == handshake ]]; then
  SCENARIOS=${SCENARIOS:-"hs-h1-mtls"}
else
  SCENARIOS=${SCENARIOS:-"h1-mtls h1-mtls-post1k h2-mtls lat-h1-mtls"}
fi
DUR=${DUR:-10}
IDLE_CONNS=${IDLE_CONNS:-10000}
CONNS=${CONNS:-64}
PIN=${PIN:-1}
if [[ $PIN == 1 ]]; then WRK_THREADS=${WRK_THREADS:-1}; else WRK_THREADS=${WRK_THREADS:-2}; fi
H2_CLIENTS=${H2_CLIENTS:-16}
H2_STREAMS=${H2_STREAMS:-4}
RATE=${RATE:-2000}
LAT_CONNS=${LAT_CONNS:-20}
KEYTYPE=${KEYTYPE:-ec}
TAG=${TAG:-}
ROOT=$(cd "$HERE/../.." && pwd)
PENGHUBUNG_BIN=${PENGHUBUNG_BIN:-$ROOT/target/release/penghubung}
PASSES=${PASSES:-3}
URLPATH=${URLPATH:-/bench/item}
POLICYPATH=${POLICYPATH:-/bench/checked}
CACHEPATH=${CACHEPATH:-/bench/cached}
GRPC_LOAD=${GRPC_LOAD:-$ROOT/target/release/examples/grpc_load}
SHIM=$HERE/clientcert_shim.so
mkdir -p "$HERE/results"
STAMP=$(date +%Y%m%d-%H%M%S)

# Ports: upstream 18080 plain / 18443 TLS / 18444 mTLS; peers 28080 / 28443 / 28444.
UP_PLAIN=18080 UP_TLS=18443 UP_MTLS=18444
PX_PLAIN=28080 PX_TLS=28443 PX_MTLS=28444 PX_GRPC=28445

W=$(mktemp -d /tmp/peers.XXXXXX)
STARTED=()   # PIDs we started

cleanup() {
  local p
  for p in "${STARTED[@]:-}"; do
    [[ -n $p ]] && kill "$p" 2>/dev/null || true
  done
  sleep 0.5
  for p in "${STARTED[@]:-}"; do
    [[ -n $p ]] && kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$W"
}
trap cleanup EXIT INT TERM

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# pfx CPU -> sets array PFX to a taskset prefix (empty when PIN=0). Commands are
# started as `"${PFX[@]}" cmd &` so that $! is the server's own PID (exec chain).
pfx() { if [[ $PIN == 1 && -n $1 ]]; then PFX=(taskset -c "$1"); else PFX=(); fi; }
pin() { pfx "$1"; shift; "${PFX[@]}" "$@"; }

# ---------------------------------------------------------------- certs
gen_certs() {
  local kt=()
  if [[ $KEYTYPE == rsa ]]; then kt=(-newkey rsa:2048); else kt=(-newkey ec -pkeyopt ec_paramgen_curve:P-256); fi
  (
    cd "$W"
    openssl req -x509 "${kt[@]}" -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=bench-ca \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    for n in server client; do
      openssl req "${kt[@]}" -nodes -keyout $n.key -out $n.csr -subj "/CN=bench-$n" 2>/dev/null
      if [[ $n == server ]]; then eku=serverAuth; san="subjectAltName=DNS:localhost,IP:127.0.0.1"; else eku=clientAuth; san="subjectAltName=DNS:bench-client"; fi
      printf '%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n' "$san" "$eku" > $n.ext
      openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile $n.ext -out $n.crt 2>/dev/null
      cat $n.crt $n.key > $n.pem
    done
    # Penghubung presents one certificate as server and, to the upstream, as client.
    openssl req "${kt[@]}" -nodes -keyout gw.key -out gw.csr -subj "/CN=bench-gateway" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' > gw.ext
    openssl x509 -req -in gw.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile gw.ext -out gw.crt 2>/dev/null
  )
  # ~1 KB JSON response body and request body (no $ ' \ so it fits nginx `return`)
  python3 - "$W" <<'EOF'
import json, sys
w = sys.argv[1]
items = [{"id": i, "name": "item-%06d" % i, "agency": "bench", "ok": True} for i in range(14)]
body = json.dumps({"status": "ok", "items": items}, separators=(",", ":"))
body = body[:-1] + ',"pad":"' + "x" * max(0, 1024 - len(body) - 9) + '"}'
open(w + "/body.json", "w").write(body)
# Exchange.Call{service: "bench", operation: "get-item"} as one gRPC message (5-byte prefix).
call = b"\x0a\x05bench\x12\x08get-item"
open(w + "/call.bin", "wb").write(b"\x00" + len(call).to_bytes(4, "big") + call)
open(w + "/post.lua", "w").write(
    'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [[%s]]\n' % body)
# The schema the full-policy operation validates both bodies against.
import os
os.makedirs(w + "/schemas/bench", exist_ok=True)
item = {"type": "object", "required": ["id", "name", "agency", "ok"], "additionalProperties": False,
        "properties": {"id": {"type": "integer", "minimum": 0},
                       "name": {"type": "string", "pattern": "^item-[0-9]{6}$"},
                       "agency": {"type": "string", "maxLength": 64}, "ok": {"type": "boolean"}}}
schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
          "required": ["status", "items"], "additionalProperties": False,
          "properties": {"status": {"enum": ["ok"]},
                         "items": {"type": "array", "maxItems": 100, "items": item},
                         "pad": {"type": "string", "maxLength": 2048}}}
json.dump(schema, open(w + "/schemas/bench/item.v1.json", "w"))
EOF
}

# ---------------------------------------------------------------- upstream (nginx, return 200)
start_upstream() { # cpu
  local body; body=$(cat "$W/body.json")
  mkdir -p "$W/up"
  cat > "$W/up/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $W/up/nginx.pid;
error_log $W/up/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $W/up/cbt; proxy_temp_path $W/up/pt; fastcgi_temp_path $W/up/ft;
  uwsgi_temp_path $W/up/ut; scgi_temp_path $W/up/st;
  keepalive_requests 100000000; keepalive_timeout 300s;
  default_type application/json;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_tickets off; ssl_session_cache off;
  ssl_certificate $W/server.crt; ssl_certificate_key $W/server.key;
  server { listen 127.0.0.1:$UP_PLAIN; location / { return 200 '$body'; } }
  server { listen 127.0.0.1:$UP_TLS ssl http2; location / { return 200 '$body'; } }
  server { listen 127.0.0.1:$UP_MTLS ssl http2;
           ssl_client_certificate $W/ca.crt; ssl_verify_client on;
           location / { return 200 '$body'; } }
}
EOF
  pfx "$1"
  "${PFX[@]}" nginx -p "$W/up" -c "$W/up/nginx.conf" -e "$W/up/error.log" &
  UP_PID=$!; STARTED+=("$UP_PID")
  wait_port $UP_PLAIN; wait_port $UP_TLS; wait_port $UP_MTLS
}

# ---------------------------------------------------------------- peers
start_peer() { # name cpu
  local name=$1 cpu=$2
  mkdir -p "$W/$name"
  pfx "$cpu"
  case $name in
  nginx)
    # Workers run as this user, so that they can write proxy_cache files under the work dir.
    cat > "$W/nginx/nginx.conf" <<EOF
worker_processes 1;
$( [[ $(id -u) == 0 ]] && echo "user $(id -un);" )
daemon off;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $W/nginx/cbt; proxy_temp_path $W/nginx/pt; fastcgi_temp_path $W/nginx/ft;
  uwsgi_temp_path $W/nginx/ut; scgi_temp_path $W/nginx/st;
  keepalive_requests 100000000; keepalive_timeout 300s;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_tickets off; ssl_session_cache off;
  ssl_certificate $W/server.crt; ssl_certificate_key $W/server.key;
  proxy_http_version 1.1; proxy_set_header Connection "";
  upstream up_plain { server 127.0.0.1:$UP_PLAIN; keepalive 512; keepalive_requests 100000000; }
  upstream up_mtls  { server 127.0.0.1:$UP_MTLS;  keepalive 512; keepalive_requests 100000000; }
  server { listen 127.0.0.1:$PX_PLAIN; location / { proxy_pass http://up_plain; } }
  server { listen 127.0.0.1:$PX_TLS ssl http2; location / { proxy_pass http://up_plain; } }
  proxy_cache_path $W/nginx/cache levels=1:2 keys_zone=bench:10m max_size=256m inactive=10m;
  server { listen 127.0.0.1:$PX_MTLS ssl http2;
    ssl_client_certificate $W/ca.crt; ssl_verify_client on;
    proxy_ssl_certificate $W/client.crt; proxy_ssl_certificate_key $W/client.key;
    proxy_ssl_trusted_certificate $W/ca.crt; proxy_ssl_verify on;
    proxy_ssl_name localhost; proxy_ssl_server_name on; proxy_ssl_session_reuse on;
    location / { proxy_pass https://up_mtls; }
    location $CACHEPATH { proxy_pass https://up_mtls; proxy_cache bench; proxy_cache_valid 200 10m; }
  }
}
EOF
    "${PFX[@]}" nginx -p "$W/nginx" -c "$W/nginx/nginx.conf" -e "$W/nginx/error.log" &
    ;;
  haproxy)
    cat > "$W/haproxy/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 9000
  ssl-server-verify required
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  maxconn 9000
frontend fe_plain
  bind 127.0.0.1:$PX_PLAIN
  default_backend be_plain
frontend fe_tls
  bind 127.0.0.1:$PX_TLS ssl crt $W/server.pem alpn h2,http/1.1 no-tls-tickets
  default_backend be_plain
frontend fe_mtls
  bind 127.0.0.1:$PX_MTLS ssl crt $W/server.pem ca-file $W/ca.crt verify required alpn h2,http/1.1 no-tls-tickets
  default_backend be_mtls
backend be_plain
  http-reuse always
  server up 127.0.0.1:$UP_PLAIN
backend be_mtls
  http-reuse always
  server up 127.0.0.1:$UP_MTLS ssl verify required ca-file $W/ca.crt crt $W/client.pem sni str(localhost) verifyhost localhost
EOF
    "${PFX[@]}" haproxy -db -f "$W/haproxy/haproxy.cfg" &
    ;;
  penghubung)
    cat > "$W/penghubung/bench.toml" <<EOF
[gateway]
id = "spl.bench"
listen = "127.0.0.1:$PX_MTLS"
grpc_listen = "127.0.0.1:$PX_GRPC"
admin_listen = "127.0.0.1:0"
data_dir = "$W/penghubung/data"
schemas_dir = "$W/schemas"
shutdown_grace = "2s"

[tls]
cert = "$W/gw.crt"
key = "$W/gw.key"
client_ca = ["$W/ca.crt"]

[[agencies]]
code = "bench"
name = "Bench client"
clearance = "terbatas"
identities = ["bench-client"]

# A terbatas service: every request is authorized under an agreement, and charged to its quota.
[[services]]
id = "bench"
owner = "bench"
classification = "terbatas"
prefix = "/bench"
upstreams = ["https://127.0.0.1:$UP_MTLS"]
upstream_ca = "$W/ca.crt"
timeout = "10s"

  [[services.operations]]
  id = "get-item"
  method = "GET"
  path = "/item"

  [[services.operations]]
  id = "post-item"
  method = "POST"
  path = "/item"

  [[services.operations]]
  id = "post-checked"
  method = "POST"
  path = "${POLICYPATH#/bench}"
  request_schema = "bench/item.v1.json"
  response_schema = "bench/item.v1.json"

  [[services.operations]]
  id = "get-cached"
  method = "GET"
  path = "${CACHEPATH#/bench}"
  cache_ttl = "600s"

[[agreements]]
id = "PKS-BENCH"
consumer = "bench"
service = "bench"
purpose = "Load test"
valid_from = 2020-01-01
valid_until = 2099-12-31
rate = "10000000/s"
EOF
    if [[ ${AUDIT:-off} != off ]]; then
      printf '\n[audit]\ndurability = "%s"\n' "$AUDIT" >> "$W/penghubung/bench.toml"
    fi
    # Every start gets an empty data_dir: each pass measures the same gateway, and start-up
    # (which reads the whole audit log, see docs/performance.md) does not grow with the passes.
    rm -rf "$W/penghubung/data"
    RUST_LOG=warn "${PFX[@]}" "$PENGHUBUNG_BIN" serve --config "$W/penghubung/bench.toml" > "$W/penghubung/out.log" 2>&1 &
    ;;
  *) log "unknown peer $name"; return 1 ;;
  esac
  PX_PID=$!; STARTED+=("$PX_PID")
  if [[ $name == penghubung ]]; then
    wait_port $PX_MTLS || { tail -5 "$W/penghubung/out.log" >&2; return 1; }
    return
  fi
  wait_port $PX_PLAIN; wait_port $PX_TLS; wait_port $PX_MTLS
}

stop_pid() { kill -"${2:-TERM}" "$1" 2>/dev/null || true; local i; for i in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; kill -9 "$1" 2>/dev/null || true; }

wait_port() {
  local i
  for i in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0
    sleep 0.1
  done
  log "port $1 did not open"; return 1
}

# ---------------------------------------------------------------- accounting
tree_pids() { echo "$1"; pgrep -P "$1" 2>/dev/null || true; }
proc_ticks() { # sum utime+stime (clock ticks) of a pid and its children
  local t=0 p v
  for p in $(tree_pids "$1"); do
    v=$(awk '{sub(/^.*\) /,""); print $12+$13}' /proc/$p/stat 2>/dev/null || echo 0)
    t=$((t + v))
  done
  echo $t
}
# CPU ticks of every process that is NOT a descendant of this script (other sessions'
# builds/benchmarks sharing the box). Snapshot = "pid ticks" lines; the delta is taken
# over PIDs alive at both ends (short-lived processes are missed; the quiet gate covers them).
foreign_snap() {
  python3 - "$$" <<'PYEOF'
import os, sys
me = int(sys.argv[1]); ppid = {}; ticks = {}
for d in os.listdir("/proc"):
    if not d.isdigit(): continue
    try: s = open("/proc/%s/stat" % d).read()
    except OSError: continue
    f = s[s.rindex(")") + 2:].split()
    ppid[int(d)] = int(f[1]); ticks[int(d)] = int(f[11]) + int(f[12])
def ours(p):
    seen = 0
    while p > 1 and seen < 64:
        if p == me: return True
        p = ppid.get(p, 0); seen += 1
    return False
for p, t in ticks.items():
    if not ours(p) and p != 1: print(p, t)
PYEOF
}
foreign_delta() { # snapA snapB -> ticks
  awk 'NR==FNR{a[$1]=$2; next} ($1 in a){d+=$2-a[$1]} END{print d+0}' <(echo "$1") <(echo "$2")
}
usr_sys() { awk '/^cpu[01] /{t+=$2+$3+$4} END{print t}' /proc/stat; }  # excludes irq/softirq
steal() { awk '/^cpu[01] /{t+=$9} END{print t}' /proc/stat; }         # hypervisor steal (VM)
cpu_snap() { awk '/^cpu[01] /{printf "%s %d %d ", $1, $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
cpu_busy() { # before after -> "c0% c1%"
  python3 - "$1" "$2" <<'EOF'
import sys
a, b = sys.argv[1].split(), sys.argv[2].split()
out = []
for i in (0, 3):
    busy = int(b[i+1]) - int(a[i+1]); tot = int(b[i+2]) - int(a[i+2])
    out.append("%d" % round(100.0 * busy / tot) if tot else "?")
print(" ".join(out))
EOF
}

# The box may be shared (other sessions compiling). Before each run wait until
# both cores are nearly idle; afterwards measure the CPU used during the run by
# processes that are not ours (other%), and redo the run if it is above OTHER_MAX.
QUIET_PCT=${QUIET_PCT:-15}     # max total busy % (of 200) over a 1 s sample
QUIET_MAX=${QUIET_MAX:-600}    # give up waiting after this many seconds
OTHER_MAX=${OTHER_MAX:-10}     # redo a run if others used more than this % (of 200) during it
STEAL_MAX=${STEAL_MAX:-10}     # ... or if the hypervisor stole more than this % (VM noise)
RETRIES=${RETRIES:-2}
wait_quiet() {
  local t0=$SECONDS a b busy
  while :; do
    a=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat); sleep 1
    b=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat)
    busy=$(awk -v a="$a" -v b="$b" 'BEGIN{split(a,x," ");split(b,y," ");d=y[2]-x[2];print (d>0)?int(200*(y[1]-x[1])/d):0}')
    if (( busy <= QUIET_PCT )); then (( SECONDS - t0 > 2 )) && log "  waited $((SECONDS - t0))s for a quiet box"; return 0; fi
    if (( SECONDS - t0 > QUIET_MAX )); then log "  box still busy (${busy}%) after ${QUIET_MAX}s; running anyway"; return 0; fi
  done
}

# ---------------------------------------------------------------- load runs
# Each prints: rps p50_ms p99_ms errors
TO=$((DUR + 30))

run_wrk() { # url mtls(0/1) noresume(0/1) [extra wrk args...]
  local url=$1 mtls=$2 nores=$3; shift 3
  local env=(env LD_PRELOAD=$SHIM SHIM_NO_RESUME=$nores)
  [[ $mtls == 1 ]] && env+=(SHIM_CLIENT_CERT=$W/client.crt SHIM_CLIENT_KEY=$W/client.key)
  pin 0 /usr/bin/time -f "%U %S" -o "$W/lg.time" timeout $TO "${env[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DUR}s" --latency "$@" "$url" > "$W/wrk.out" 2>&1 || true
  cp "$W/wrk.out" "$W/last.out"
  python3 - "$W/wrk.out" <<'EOF'
import re, sys
s = open(sys.argv[1]).read()
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v); x = float(m.group(1))
    return x / 1000 if m.group(2) == "us" else x * 1000 if m.group(2) == "s" else x
rps = re.search(r"Requests/sec:\s+([\d.]+)", s)
p50 = re.search(r"^\s+50%\s+(\S+)", s, re.M); p99 = re.search(r"^\s+99%\s+(\S+)", s, re.M)
req = re.search(r"(\d+) requests in", s)
err = 0
m = re.search(r"Non-2xx or 3xx responses: (\d+)", s); err += int(m.group(1)) if m else 0
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", s)
err += sum(map(int, m.groups())) if m else 0
if not rps: print("0 0 0 -1 0"); sys.exit()
print("%.0f %.3f %.3f %d %d" % (float(rps.group(1)), ms(p50.group(1)), ms(p99.group(1)), err, int(req.group(1))))
EOF
}

run_grpc() { # port: Exchange.Call of the same operation (bench/get-item) with the tonic client
  pin 0 /usr/bin/time -f "%U %S" -o "$W/lg.time" timeout $TO "$GRPC_LOAD" --addr "127.0.0.1:$1" \
    --ca "$W/ca.crt" --cert "$W/client.crt" --key "$W/client.key" \
    --connections "$H2_CLIENTS" --streams "$H2_STREAMS" --duration "$DUR" > "$W/grpc.out" 2>&1 || true
  cp "$W/grpc.out" "$W/last.out"
  tail -1 "$W/grpc.out" | awk 'NF==5{print; ok=1} END{if(!ok) print "0 0 0 -1 0"}'
}

run_h2load() { # url mtls(0/1) [extra h2load args...]
  local url=$1 mtls=$2; shift 2
  local env=()
  [[ $mtls == 1 ]] && env=(env LD_PRELOAD=$SHIM SHIM_CLIENT_CERT=$W/client.crt SHIM_CLIENT_KEY=$W/client.key)
  rm -f "$W/h2.log"
  pin 0 /usr/bin/time -f "%U %S" -o "$W/lg.time" timeout $TO "${env[@]}" h2load -t1 -D "$DUR" --log-file="$W/h2.log" "$@" "$url" > "$W/h2.out" 2>&1 || true
  cp "$W/h2.out" "$W/last.out"
  python3 - "$W/h2.out" "$W/h2.log" <<'EOF'
import re, sys
s = open(sys.argv[1]).read()
rps = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", s)
m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", s)
c2 = re.search(r"status codes: (\d+) 2xx", s)
if not rps or not m: print("0 0 0 -1 0"); sys.exit()
lat = []
try:
    for line in open(sys.argv[2]):
        f = line.split("\t")
        if len(f) >= 3 and f[1] == "200": lat.append(int(f[2]))
except FileNotFoundError: pass
lat.sort()
def pct(p): return lat[min(len(lat) - 1, int(p / 100.0 * len(lat)))] / 1000.0 if lat else 0
done = int(m.group(3)); ok2 = int(c2.group(1)) if c2 else 0
err = int(m.group(5)) + int(m.group(6)) + (done - ok2)
print("%.0f %.3f %.3f %d %d" % (float(rps.group(1)), pct(50), pct(99), err, done))
EOF
}

# scenario -> (tool, url, mtls, extra)
run_scenario() { # scen peer
  local scen=$1 peer=$2 p_plain p_tls p_mtls
  if [[ $peer == direct ]]; then p_plain=$UP_PLAIN p_tls=$UP_TLS p_mtls=$UP_MTLS
  else p_plain=$PX_PLAIN p_tls=$PX_TLS p_mtls=$PX_MTLS; fi
  local per=$((RATE / LAT_CONNS))
  case $scen in
    h1-plain)       run_wrk "http://127.0.0.1:$p_plain$URLPATH" 0 0 ;;
    h1-tls)         run_wrk "https://127.0.0.1:$p_tls$URLPATH" 0 0 ;;
    h1-mtls)        run_wrk "https://127.0.0.1:$p_mtls$URLPATH" 1 0 ;;
    h1-mtls-post1k) run_wrk "https://127.0.0.1:$p_mtls$URLPATH" 1 0 -s "$W/post.lua" ;;
    h1-mtls-policy) run_wrk "https://127.0.0.1:$p_mtls$POLICYPATH" 1 0 -s "$W/post.lua" ;;
    h2-tls)         run_h2load "https://127.0.0.1:$p_tls$URLPATH" 0 -c "$H2_CLIENTS" -m "$H2_STREAMS" ;;
    h2-mtls)        run_h2load "https://127.0.0.1:$p_mtls$URLPATH" 1 -c "$H2_CLIENTS" -m "$H2_STREAMS" ;;
    lat-h1-plain)   run_h2load "http://127.0.0.1:$p_plain$URLPATH" 0 --h1 -c "$LAT_CONNS" --rps "$per" ;;
    lat-h1-mtls)    run_h2load "https://127.0.0.1:$p_mtls$URLPATH" 1 --h1 -c "$LAT_CONNS" --rps "$per" ;;
    lat-h1-mtls-policy) run_h2load "https://127.0.0.1:$p_mtls$POLICYPATH" 1 --h1 -c "$LAT_CONNS" --rps "$per" \
                      -d "$W/body.json" -H "content-type: application/json" ;;
    h1-mtls-cache)  run_wrk "https://127.0.0.1:$p_mtls$CACHEPATH" 1 0 ;;
    h1-mtls-miss)   run_wrk "https://127.0.0.1:$p_mtls$CACHEPATH" 1 0 -H "Cache-Control: no-cache" ;;
    grpc-mtls)      run_grpc "$PX_GRPC" ;;
    grpc-mtls-h2load) run_h2load "https://127.0.0.1:$PX_GRPC/penghubung.v1.Exchange/Call" 1 -c "$H2_CLIENTS" -m "$H2_STREAMS" \
                      -d "$W/call.bin" -H "content-type: application/grpc" -H "te: trailers" ;;
    h2-mtls-cache)  run_h2load "https://127.0.0.1:$p_mtls$CACHEPATH" 1 -c "$H2_CLIENTS" -m "$H2_STREAMS" ;;
    hs-h1-mtls)     run_wrk "https://127.0.0.1:$p_mtls$URLPATH" 1 1 -H "Connection: close" ;;
    hs-h1-tls)      run_wrk "https://127.0.0.1:$p_tls$URLPATH" 0 1 -H "Connection: close" ;;
    *) log "unknown scenario $scen"; echo "0 0 0 -1 0" ;;
  esac
}

# ---------------------------------------------------------------- prerequisites
need() { command -v "$1" >/dev/null || { echo "missing $1: apt-get install -y nginx haproxy wrk nghttp2-client openssl gcc libssl-dev" >&2; exit 1; }; }
for t in nginx wrk h2load openssl taskset python3 gcc; do need $t; done
[[ " $PEERS " == *" haproxy "* ]] && need haproxy
[[ -x /usr/bin/time ]] || { echo "missing /usr/bin/time: apt-get install -y time" >&2; exit 1; }
if [[ ! -f $SHIM || $HERE/clientcert_shim.c -nt $SHIM ]]; then
  gcc -O2 -shared -fPIC -o "$SHIM" "$HERE/clientcert_shim.c" -ldl -lssl
fi
if [[ " $PEERS " == *" penghubung "* && ${BUILD:-1} == 1 ]]; then
  log "building penghubung (release)"
  (cd "$ROOT" && cargo build --release --locked -q && cargo build --release --locked -q --example grpc_load)
fi

# one-line TLS sanity check of the mTLS listener: protocol + that a client cert is required
tls_check() { # port
  local with without
  with=$(timeout 5 openssl s_client -brief -connect 127.0.0.1:$1 -servername localhost -cert "$W/client.crt" -key "$W/client.key" </dev/null 2>&1 | awk '/^Protocol version:/{print $NF; exit}' || true)
  without=$(printf 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' | timeout 5 openssl s_client -quiet -connect 127.0.0.1:$1 -servername localhost 2>/dev/null | head -1 | tr -d '\r' | cut -c1-40 || true)
  log "  mTLS :$1 with client cert: ${with:-FAILED}; without a cert: ${without:-rejected, no HTTP response}"
}

# ---------------------------------------------------------------- main
log "workdir $W  passes $PASSES  mode=$MODE pin=$PIN keytype=$KEYTYPE dur=${DUR}s conns=$CONNS wrk_threads=$WRK_THREADS"
gen_certs
( cd "$ROOT" && git rev-parse --short=12 HEAD 2>/dev/null ) > "$W/commit" || echo unknown > "$W/commit"

# idle mode: resident memory per idle keep-alive mTLS connection (benches/load/idle.py)
if [[ $MODE == idle ]]; then
  echo "| peer | connections held | failed | RSS before KiB | RSS after KiB | KiB per connection |"
  echo "|---|---|---|---|---|---|"
  for peer in $PEERS; do
    [[ $peer == direct ]] && continue
    start_upstream 0
    start_peer "$peer" 1 || { stop_pid "$UP_PID"; continue; }
    sleep 0.5
    log "$peer: $IDLE_CONNS idle connections"
    python3 "$HERE/idle.py" --port "$PX_MTLS" --pid "$PX_PID" --ca "$W/ca.crt" --cert "$W/client.crt" \
      --key "$W/client.key" --path "$URLPATH" --count "$IDLE_CONNS" > "$W/idle.json" || true
    python3 - "$peer" "$W/idle.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[2]))
print("| %s | %d | %d | %d | %d | %s |" % (sys.argv[1], r["connections"], r["failed"],
      r["rss_before_kib"], r["rss_after_kib"], r["kib_per_connection"]))
EOF
    stop_pid "$PX_PID"; stop_pid "$UP_PID"; sleep 1
  done
  exit 0
fi
ALL_RESULTS=()
for pass in $(seq 1 "$PASSES"); do
RESULTS=$HERE/results/$STAMP-$MODE-$KEYTYPE-pin$PIN-pass$pass.tsv
ALL_RESULTS+=("$RESULTS")
log "pass $pass of $PASSES -> $RESULTS"
{
  echo "# $(date -Is) mode=$MODE pin=$PIN keytype=$KEYTYPE dur=$DUR conns=$CONNS wrk_threads=$WRK_THREADS h2=${H2_CLIENTS}x$H2_STREAMS rate=$RATE/$LAT_CONNS audit=${AUDIT:-off} tag=$TAG"
  echo "# nginx $(nginx -v 2>&1 | sed 's/.*\///'); haproxy $(haproxy -v 2>/dev/null | head -1 | awk '{print $3}'); $(openssl version | awk '{print $1,$2}'); penghubung $(cat "$W/commit") (rustls 0.23, ring)"
  printf "peer\tscenario\trps\tp50_ms\tp99_ms\terrors\trequests\tcpu0_pct\tcpu1_pct\tproxy_us_per_req\tupstream_us_per_req\tother_pct\tattempt\tsteal_pct\n"
} > "$RESULTS"

TCK=$(getconf CLK_TCK)
for peer in $PEERS; do
  if [[ $peer == direct ]]; then
    start_upstream 1; PX_PID=
  else
    start_upstream 0
    start_peer "$peer" 1 || { stop_pid "$UP_PID"; continue; }
  fi
  sleep 0.5
  if [[ $peer == direct ]]; then tls_check $UP_MTLS; else tls_check $PX_MTLS; fi
  for scen in $SCENARIOS; do
   # Penghubung serves mTLS only.
   [[ $peer == penghubung && $scen != *mtls* ]] && continue
   # Exchange.Call is Penghubung's own gRPC front: nobody else serves it.
   [[ $scen == grpc-* && $peer != penghubung ]] && continue
   # nginx and HAProxy ignore a request's no-cache by default: the miss path is Penghubung's.
   [[ $scen == *-miss && $peer != penghubung && $peer != direct ]] && continue
   for attempt in $(seq 0 "$RETRIES"); do
    log "$peer / $scen$( ((attempt)) && echo " (attempt $((attempt + 1)))")"
    wait_quiet
    rm -f "$W/lg.time"; t_a=$(date +%s.%N)
    f_a=$(foreign_snap)
    c_a=$(cpu_snap); us_a=$(usr_sys); st_a=$(steal); up_a=$(proc_ticks "$UP_PID"); px_a=0
    [[ -n $PX_PID ]] && px_a=$(proc_ticks "$PX_PID")
    read -r rps p50 p99 err nreq < <(run_scenario "$scen" "$peer")
    c_b=$(cpu_snap); us_b=$(usr_sys); st_b=$(steal); f_b=$(foreign_snap); up_b=$(proc_ticks "$UP_PID"); px_b=0
    [[ -n $PX_PID ]] && px_b=$(proc_ticks "$PX_PID")
    read -r c0 c1 < <(cpu_busy "$c_a" "$c_b")
    t_b=$(date +%s.%N)
    lg=$(awk '{print $1+$2}' "$W/lg.time" 2>/dev/null || echo 0)
    # other% = CPU used during the run by processes that are not ours (% of one core)
    other=$(awk -v d="$(foreign_delta "$f_a" "$f_b")" -v k="$TCK" -v el="$(awk -v a="$t_a" -v b="$t_b" 'BEGIN{print b-a}')" \
      'BEGIN{printf "%.0f", 100*d/k/el}')
    stl=$(awk -v d=$((st_b - st_a)) -v k="$TCK" -v el="$(awk -v a="$t_a" -v b="$t_b" 'BEGIN{print b-a}')" 'BEGIN{printf "%.0f", 100*d/k/el}')
    if [[ $nreq -gt 0 ]]; then
      up_us=$(awk -v t=$((up_b - up_a)) -v n="$nreq" -v k="$TCK" 'BEGIN{printf "%.1f", t*1e6/k/n}')
      px_us=$(awk -v t=$((px_b - px_a)) -v n="$nreq" -v k="$TCK" 'BEGIN{printf "%.1f", t*1e6/k/n}')
    else up_us=0 px_us=0; fi
    [[ $peer == direct ]] && px_us=$up_us
    if [[ $err != 0 ]]; then log "  errors=$err; tail of load-generator output:"; tail -5 "$W/last.out" >&2; fi
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$peer" "$scen" "$rps" "$p50" "$p99" "$err" "$nreq" "$c0" "$c1" "$px_us" "$up_us" "$other" "$attempt" "$stl" >> "$RESULTS"
    log "  rps=$rps p50=${p50}ms p99=${p99}ms err=$err cpu0=$c0% cpu1=$c1% proxy=${px_us}us/req upstream=${up_us}us/req loadgen_cpu=${lg}s other=${other}% steal=${stl}%"
    sleep 1
    # a run disturbed by someone else's CPU use (other% > OTHER_MAX) or by VM steal is redone,
    # up to RETRIES times; every attempt stays in the TSV (summarize.py keeps the last)
    (( other <= OTHER_MAX && stl <= STEAL_MAX )) && break
    log "  disturbed (other=${other}% > ${OTHER_MAX}% or steal=${stl}% > ${STEAL_MAX}%), redoing"
   done
  done
  if [[ -n ${PX_PID:-} ]]; then stop_pid "$PX_PID"; fi
  stop_pid "$UP_PID"
  sleep 1
done
done

python3 "$HERE/summarize.py" "${ALL_RESULTS[@]}"
