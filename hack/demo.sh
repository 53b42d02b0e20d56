#!/usr/bin/env bash
# The whole Dialtone story on embedded defaults: a dev server (SQLite,
# embedded MQTT broker, files on disk, dev keys generated on first start),
# CI publishing a signed bundle, three phones — each with its own software
# TPM (swtpm) manufactured with an EK certificate — enrolling, attesting,
# updating through TUF and reporting over MQTT, one tampered bundle
# refused, one phone's PCR tampered with and caught, and the fleet table
# with its attestation column.
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

for b in swtpm swtpm_setup swtpm_localca tpm2_pcrextend; do
  command -v $b >/dev/null || { echo "demo: $b missing: run 'make deps' (apt-get install swtpm swtpm-tools tpm2-tools)" >&2; exit 1; }
done

server_pid=
tpm_pids=()
cleanup() {
  for p in "${tpm_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$server_pid" ] && [ "${DEMO_KEEP:-0}" != 1 ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The TPM factory: a local CA that signs EK certificates, as a TPM
# manufacturer's would; the server trusts it with --ek-ca.
step "TPM factory: three software TPMs with EK certificates from a local manufacturer CA"
mfg=$dir/tpm-mfg
mkdir -p "$mfg/ca"
cat >"$mfg/localca.conf" <<CONF
statedir = $mfg/ca
signingkey = $mfg/ca/signkey.pem
issuercert = $mfg/ca/issuercert.pem
certserial = $mfg/ca/certserial
CONF
: >"$mfg/localca.options"
cat >"$mfg/setup.conf" <<CONF
create_certs_tool= $(command -v swtpm_localca)
create_certs_tool_config = $mfg/localca.conf
create_certs_tool_options = $mfg/localca.options
active_pcr_banks = sha256
CONF
declare -A tpm_port
for i in 1 2 3; do
  mkdir -p "$dir/tpm-$i"
  swtpm_setup --tpm2 --tpmstate "$dir/tpm-$i" --create-ek-cert --config "$mfg/setup.conf" --overwrite >"$dir/tpm-$i.setup.log" 2>&1 ||
    { cat "$dir/tpm-$i.setup.log"; echo "demo: swtpm_setup failed" >&2; exit 1; }
  port=
  for _ in $(seq 1 50); do
    p=$(( (RANDOM % 20000) * 2 + 20000 ))
    if port_free $p && port_free $((p + 1)); then port=$p; break; fi
  done
  [ -n "$port" ] || { echo "demo: no free port pair for swtpm" >&2; exit 1; }
  swtpm socket --tpm2 --tpmstate dir="$dir/tpm-$i" --server type=tcp,port=$port,bindaddr=127.0.0.1 \
    --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 --flags not-need-init,startup-clear >"$dir/tpm-$i.log" 2>&1 &
  tpm_pids+=($!)
  tpm_port[$i]=$port
  for _ in $(seq 1 50); do port_free $port || break; sleep 0.1; done
  echo "phone-$i's TPM: swtpm on 127.0.0.1:$port, EK certificate $(openssl x509 -in "$mfg/ca/issuercert.pem" -noout -subject 2>/dev/null | sed 's/subject=//')"
done

step "Starting the server in dev mode (data in $data), trusting the TPM manufacturer's CA"
"$dialtone" server --dev --data-dir "$data" --http 127.0.0.1:0 --mqtt 127.0.0.1:0 \
  --ek-ca "$mfg/ca/swtpm-localca-rootca-cert.pem" --ek-ca "$mfg/ca/issuercert.pem" >"$dir/server.log" 2>&1 &
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

step "CI: build, sign and publish the factory image $model 1.0.0, then verify and publish $model 1.1.0"
build_bundle 1.0.0
"$dialtone" firmware publish --key "$data/keys/publisher.key" --no-progress "$dir/$model-1.0.0.tar"
build_bundle 1.1.0
"$dialtone" firmware verify --key "$data/keys/publisher.key.pub" "$dir/$model-1.1.0.tar"

step "Factory: provisioning three phones with the repository's root of trust and the factory image"
for i in 1 2 3; do
  "$agent" provision --root "$data/tuf/metadata/1.root.json" --state-dir "$dir/phone-$i" \
    --model $model --factory-version 1.0.0 --factory-bundle "$dir/$model-1.0.0.tar" --device-id "phone-$i"
done

step "Operator: one-time enrollment tokens for the three phones"
declare -A token
for i in 1 2 3; do
  token[$i]=$("$dialtone" devices enroll-token --tenant default --device "phone-$i" -o json | sed -nE 's/.*"token": "([^"]+)".*/\1/p')
  echo "phone-$i: ${token[$i]:0:12}…"
done

run_agents() { # expected exit code
  for i in 1 2 3; do
    set +e
    "$agent" --once --server "$DIALTONE_SERVER" --server-ca "$DIALTONE_CA" --broker "mqtt://$mqtt" --state-dir "$dir/phone-$i" \
      --model $model --hardware $hw --tpm "swtpm:127.0.0.1:${tpm_port[$i]}" --enroll-token "${token[$i]}" >"$dir/phone-$i.log" 2>&1
    code=$?
    set -e
    echo "phone-$i: agent exited $code ($(grep -o 'outcome=[a-z-]*' "$dir/phone-$i.log" | tail -1), attestation $(grep -o 'msg=attested.*outcome=[a-z]*' "$dir/phone-$i.log" | tail -1 | grep -o 'outcome=[a-z]*$'))"
    if [ "$code" != "$1" ]; then cat "$dir/phone-$i.log"; echo "demo: want exit $1" >&2; exit 1; fi
  done
}

step "Phones: enroll their TPMs, attest the factory image, and find nothing to install"
run_agents 10
"$dialtone" devices list

step "CI: publish $model 1.1.0"
"$dialtone" firmware publish --key "$data/keys/publisher.key" --no-progress "$dir/$model-1.1.0.tar"

step "Phones: check, download, verify TUF hash and publisher signature, install to slot B, measure, attest, reboot, attest, commit"
run_agents 0
"$dialtone" devices attestations phone-1

step "Independent check: phone-1's last quote, verified by tpm2_checkquote rather than by Dialtone"
"$dialtone" devices evidence phone-1 --out "$dir/evidence"
tpm2_checkquote -u "$dir/evidence/ak.pem" -m "$dir/evidence/quote.msg" -s "$dir/evidence/quote.sig" \
  -f "$dir/evidence/pcrs.bin" -g sha256 -q "$(cat "$dir/evidence/nonce.hex")" >/dev/null
echo "tpm2_checkquote: the quote is genuine, over the server's nonce and the exported PCR value"

step "Attack: the stored 1.2.0 bundle is altered on the server after a valid publish"
build_bundle 1.2.0
"$dialtone" firmware publish --key "$data/keys/publisher.key" --no-progress "$dir/$model-1.2.0.tar" >/dev/null
stored=$(ls "$data"/tuf/targets/firmware/$model/*.$model-1.2.0.tar)
printf 'X' | dd of="$stored" bs=1 seek=4096 conv=notrunc status=none
echo "flipped one byte of $stored"
run_agents 20
grep -h 'update refused' "$dir/phone-1.log" | head -1 | sed 's/^/  /'

step "Attack: an implant extends phone-3's measurement PCR behind the agent's back"
TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=${tpm_port[3]}" tpm2_pcrextend \
  "14:sha256=$(printf implant | sha256sum | cut -d' ' -f1)"
set +e
"$agent" --once --server "$DIALTONE_SERVER" --server-ca "$DIALTONE_CA" --broker "mqtt://$mqtt" --state-dir "$dir/phone-3" \
  --model $model --hardware $hw --tpm "swtpm:127.0.0.1:${tpm_port[3]}" >"$dir/phone-3.log" 2>&1
set -e
"$dialtone" devices attestations phone-3 --limit 1

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
step "Operator: the fleet (three phones on 1.1.0 that refused the tampered 1.2.0; phone-3 untrusted)"
"$dialtone" devices list
step "Operator: the compliance report, and the security alerts the refusals raised"
"$dialtone" fleet summary
"$dialtone" alerts list
