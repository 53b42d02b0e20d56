#!/usr/bin/env bash
# Performance targets of Dialtone, run by `make bench`.
#
# Every target is a ratio against a reference measured in the same run,
# interleaved with the subject round by round (the machine is shared: an
# absolute figure from another day means little). Prints one table
#   NAME  VALUE  REFERENCE  RATIO  TARGET  RESULT
# and exits 1 when a target is missed, 2 when the benchmark itself failed.
#
#   tuf      GET /tuf/metadata/timestamp.json, If-None-Match (304) and plain
#            (200), from `dialtone server --dev` vs net/http.FileServer over
#            the same directory, both HTTPS with the dev CA's certificate and
#            the same TLS configuration, keep-alive TLS connections;
#            ours >= 0.8x the reference's requests/s
#   bundle   `dialtone firmware build` / `verify` of a 512 MiB bundle vs
#            sha256sum of the same file; >= 0.7x its MiB/s
#   publish  peak RSS of the server and of `dialtone firmware publish`
#            while a 512 MiB bundle is published; < 64 MiB each
#   install  `dialtone-agent --once --server-ca` installing the 512 MiB bundle
#            from a dev server over HTTPS vs `curl --cacert -o /dev/null` +
#            sha256sum of the same file,
#            >= 0.7x; the agent's peak RSS installing (< 25 MiB) and its
#            RSS idle in daemon mode (< 15 MiB)
#   sizes    stripped linux/arm64 (< 20 MiB) and linux/arm dialtone-agent
#   ingest   QoS 1 events from 50 in-process MQTT devices through the
#            embedded broker into fleet.Ingester (batched) and SQLite vs the
#            same broker delivering them to a subscriber that discards
#            them, >= 0.5x its messages/s; PostgreSQL reported (no target).
#            Each run checks that the store holds exactly the events sent
#   list     `devices list` filters over 100,000 devices vs an export of
#            all of them (ListDevices without a filter), SQLite and
#            PostgreSQL: < 0.1x the export's time
#   authz    GET /v1/devices/{id} with an API token (authentication, the
#            policy check, the device's tenant) vs the same handler without
#            the guard, in-process over SQLite; <= 1.3x its time per request
#   password one argon2id verification with the server's parameters
#            (printed), in-process; 50-500 ms (an absolute window, the one
#            target without a reference: ratio = time / 500 ms, >= 0.1)
#   attest   the server's verification of one attestation (quote signature,
#            PCR digest, event log replay, firmware policy) vs a bare ECDSA
#            P-256 verification with the same AK; <= 2x its time. Then a
#            burst of 2,000 simulated devices (software AKs) attesting at
#            once through the HTTP API, all verified, p99 printed
#   voip     one call's media path (packetise, SRTP protect, send, receive,
#            unprotect, depacketise) vs pion/srtp's bare protect+unprotect
#            of the same packets; <= 1.5x. AEAD_AES_128_GCM reported; 50
#            concurrent calls between two agents on loopback with zero
#            loss, CPU per call printed
#
# ingest and list use the PostgreSQL server that DIALTONE_TEST_POSTGRES
# names (default postgres://postgres@127.0.0.1:5432/postgres), in schemas
# they create and drop; without one its figures are marked unavailable.
#
# Needs sha256sum (coreutils) and about 2 GiB free in $TMPDIR (default
# /tmp); everything it writes there is deleted on exit. The bundle figures
# include the disk (a build ends with an fsync): TMPDIR=/dev/shm takes it
# out. The load generator is hack/bench's own (raw HTTP/1.1 keep-alive
# clients), not wrk. Takes about 4 minutes once the build cache is warm.
#
# Flags are passed to the driver, e.g. `bash hack/bench.sh -only tuf
# -rounds 9`, or through BENCHFLAGS; `go run ./hack/bench -h` lists them.
# `go run ./hack/bench tufprof -out DIR` writes CPU profiles of the /tuf/
# handler and the reference, in-process, with allocations per request.
set -euo pipefail

cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
if ! command -v go >/dev/null 2>&1; then
	export PATH=/usr/local/go/bin:$PATH
fi
if ! command -v sha256sum >/dev/null 2>&1; then
	echo "bench: sha256sum (coreutils) is required" >&2
	exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/dialtone-bench.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

avail_kib=$(df -Pk "$work" | awk 'NR==2 {print $4}')
if ((avail_kib < 3 * 1024 * 1024)); then
	echo "bench: need 3 GiB free under ${TMPDIR:-/tmp}, have $((avail_kib / 1024)) MiB" >&2
	exit 2
fi

echo "== building: make build (release flags), and the bench driver"
${MAKE:-make} --no-print-directory build
go build -o "$work/bench" ./hack/bench
go build -o "$work/rusage" ./hack/bench/rusage

echo "== $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg), scratch in $work"
# shellcheck disable=SC2086 # BENCHFLAGS is a list of flags
"$work/bench" -dialtone bin/dialtone -rusage "$work/rusage" \
	-agent-arm64 bin/linux-arm64/dialtone-agent -agent-arm bin/linux-arm/dialtone-agent \
	-workdir "$work" ${BENCHFLAGS:-} "$@"
