#!/usr/bin/env bash
# The whole Dialtone story on embedded defaults: a dev server (SQLite,
# embedded MQTT broker, files on disk, dev keys generated on first start),
# CI publishing a signed bundle, three phones updating through TUF and
# reporting over MQTT, one tampered bundle refused, and the fleet table.
#
#   DEMO_KEEP=1  leave the server running at the end and say how to reach it
#   DEMO_DIR=D   work in D instead of a fresh temporary folder
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$here/bin}
dialtone=$bin/dialtone
agent=$bin/dialtone-agent
for b in "$dialtone" "$agent"; do
  [ -x "$b" ] || { echo "demo: $b missing: run 'make build' (or 'make demo')" >&2; exit 1; }
done

dir=${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/dialtone-demo.XXXXXX")}
mkdir -p "$dir"
data=$dir/server
export DIALTONE_CONFIG=/dev/null
model=dt100 hw=rev-b

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

server_pid=
cleanup() {
  if [ -n "$server_pid" ] && [ "${DEMO_KEEP:-0}" != 1 ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

step "Starting the server in dev mode (data in $data)"
"$dialtone" server --dev --data-dir "$data" --http 127.0.0.1:0 --mqtt 127.0.0.1:0 >"$dir/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do
  [ -s "$data/server.json" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$dir/server.log"; echo "demo: server died" >&2; exit 1; }
  sleep 0.1
done
[ -s "$data/server.json" ] || { cat "$dir/server.log"; echo "demo: server did not start" >&2; exit 1; }
url=$(sed -E 's/.*"url":"([^"]+)".*/\1/' "$data/server.json")
mqtt=$(sed -E 's/.*"mqtt":"([^"]+)".*/\1/' "$data/server.json")
ca=$(sed -E 's/.*"ca":"([^"]+)".*/\1/' "$data/server.json")
# The API is HTTPS with a development CA the server made in DATA/tls:
# the CLI trusts it through DIALTONE_CA, the phones through --server-ca.
export DIALTONE_SERVER=$url DIALTONE_TOKEN=$(cat "$data/admin.token") DIALTONE_CA=$ca
echo "HTTPS API and TUF repository: $DIALTONE_SERVER (dev CA $DIALTONE_CA)   MQTT broker: mqtt://$mqtt"
grep -B1 -A4 'DEVELOPMENT MODE' "$dir/server.log" | sed 's/^/  /' || true

build_bundle() { # version
  local v=$1 src=$dir/src-$1
  mkdir -p "$src"
  head -c 4194304 /dev/urandom >"$src/rootfs.img"
  echo "kernel $v" >"$src/kernel.bin"
  "$dialtone" firmware build --model $model --version "$v" --hardware $hw \
    --payload rootfs.img="$src/rootfs.img" --payload kernel.bin="$src/kernel.bin" -o "$dir/$model-$v.tar"
  "$dialtone" firmware sign --key "$data/keys/publisher.key" "$dir/$model-$v.tar"
}

step "CI: build, sign, verify and publish firmware $model 1.1.0"
build_bundle 1.1.0
"$dialtone" firmware verify --key "$data/keys/publisher.key.pub" "$dir/$model-1.1.0.tar"
"$dialtone" firmware publish --key "$data/keys/publisher.key" --no-progress "$dir/$model-1.1.0.tar"

step "Factory: provisioning three phones with the repository's root of trust"
for i in 1 2 3; do
  "$agent" provision --root "$data/tuf/metadata/1.root.json" --state-dir "$dir/phone-$i" \
    --model $model --factory-version 1.0.0 --device-id "phone-$i"
done

run_agents() { # expected exit code
  for i in 1 2 3; do
    set +e
    "$agent" --once --server "$DIALTONE_SERVER" --server-ca "$DIALTONE_CA" --broker "mqtt://$mqtt" --state-dir "$dir/phone-$i" \
      --model $model --hardware $hw >"$dir/phone-$i.log" 2>&1
    code=$?
    set -e
    echo "phone-$i: agent exited $code ($(grep -o 'outcome=[a-z-]*' "$dir/phone-$i.log" | tail -1))"
    if [ "$code" != "$1" ]; then cat "$dir/phone-$i.log"; echo "demo: want exit $1" >&2; exit 1; fi
  done
}

step "Phones: check, download, verify TUF hash and publisher signature, install to slot B, commit"
run_agents 0

step "Attack: the stored 1.2.0 bundle is altered on the server after a valid publish"
build_bundle 1.2.0
"$dialtone" firmware publish --key "$data/keys/publisher.key" --no-progress "$dir/$model-1.2.0.tar" >/dev/null
stored=$(ls "$data"/tuf/targets/firmware/$model/*.$model-1.2.0.tar)
printf 'X' | dd of="$stored" bs=1 seek=4096 conv=notrunc status=none
echo "flipped one byte of $stored"
run_agents 20
grep -h 'update refused' "$dir/phone-1.log" | head -1 | sed 's/^/  /'

sleep 1
if [ "${DEMO_KEEP:-0}" = 1 ]; then
  cat <<MSG

The server keeps running (pid $server_pid, log $dir/server.log). To explore:
  export DIALTONE_SERVER=$DIALTONE_SERVER
  export DIALTONE_TOKEN=$DIALTONE_TOKEN
  export DIALTONE_CA=$DIALTONE_CA
  $dialtone devices list -o json
  curl -s --cacert \$DIALTONE_CA \$DIALTONE_SERVER/tuf/metadata/timestamp.json
Stop it with: kill $server_pid
MSG
  trap - EXIT
fi
step "Operator: the fleet (three phones on 1.1.0 that refused the tampered 1.2.0)"
"$dialtone" devices list
step "Operator: the compliance report, and the security alerts the refusals raised"
"$dialtone" fleet summary
"$dialtone" alerts list
