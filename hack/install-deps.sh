#!/usr/bin/env bash
# install-deps.sh installs what building, linting and testing Dialtone needs on
# a Debian 12 machine that has Go at /usr/local/go:
#   - Debian packages: the software TPM (swtpm, swtpm-tools), tpm2-tools,
#     Mosquitto broker and clients, gcc/libc6-dev/make for `go test -race` and
#     for the cgo build of bin/dialtone (PKCS#11), SoftHSM2 and OpenSC's
#     pkcs11-tool for the PKCS#11 key tests, openssl for the key fixtures,
#     and the SIP peers of hack/interop (Kamailio with its TLS module, sipp,
#     baresip) with tshark for the packet-capture check.
#   - Go tools, pinned by version, into the repo-local .bin/ (GOBIN): staticcheck,
#     cosign for hack/interop, and local-kms (an AWS KMS emulator) for keys/.
#   - Node.js and npm (Debian's when missing), and tuf-js for hack/interop with
#     `npm ci` from its committed package-lock.json.
#
# Idempotent: when everything is present it only checks and exits, without
# touching the network. `apt-get update` runs at most once, and only when a
# package is missing. Runs as root; otherwise uses sudo when available.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLBIN="${ROOT}/.bin"

# Pinned Go tools: "binary module/path@version version-marker".
# staticcheck 2026.2.2 (module v0.8.2) builds with go1.26 and analyses go1.26 code.
STATICCHECK_VERSION="v0.8.2"
STATICCHECK_MARKER="(0.8.2)"
# cosign, for hack/interop (signatures made by one verify with the other).
# v2.6.5 builds with go1.26.8 and GOTOOLCHAIN=local; hack/interop reads this line.
COSIGN_VERSION="v2.6.5"

# local-kms, an AWS KMS emulator (MIT licence), for the awskms:// tests in keys/.
# The project tags no Go module releases, hence the pseudo-version; it builds
# with go1.26 and GOTOOLCHAIN=local.
LOCALKMS_VERSION="v0.0.0-20260228092603-2a5e92d09ab6"

# tuf-js for hack/interop: package.json pins it, package-lock.json the rest.
# tuf-js 3 runs on Node.js 18.17+ (Debian 12's nodejs is 18.20) and 20.5+.
TUFJS_DIR="${ROOT}/hack/interop/tufjs"
NODE_APT_PACKAGES=(nodejs npm)

# Debian packages the tests and the demo use. Keep this list small.
APT_PACKAGES=(
	swtpm swtpm-tools tpm2-tools
	libubootenv-tool
	mosquitto mosquitto-clients
	gcc libc6-dev make ca-certificates curl
	softhsm2 opensc openssl
	kamailio kamailio-tls-modules sip-tester baresip tshark
)

export GOTOOLCHAIN=local
if [[ -x /usr/local/go/bin/go ]] && ! command -v go >/dev/null 2>&1; then
	export PATH="/usr/local/go/bin:${PATH}"
fi

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

command -v go >/dev/null 2>&1 || die "go not found in PATH (expected /usr/local/go/bin/go)"

# --- Debian packages -------------------------------------------------------

installed() {
	[[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

as_root() {
	if [[ "$(id -u)" -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root to run: $* (not root and no sudo)"
	fi
}

APT_UPDATED=0
apt_update() {
	if [[ "${APT_UPDATED}" -eq 0 ]]; then
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
		APT_UPDATED=1
	fi
}

install_apt() {
	if ! command -v dpkg-query >/dev/null 2>&1; then
		log "dpkg-query not found: not a Debian system; install by hand: ${APT_PACKAGES[*]}"
		return 0
	fi
	local missing=()
	local p
	for p in "${APT_PACKAGES[@]}"; do
		installed "$p" || missing+=("$p")
	done
	if [[ ${#missing[@]} -eq 0 ]]; then
		return 0
	fi
	log "installing Debian packages: ${missing[*]}"
	apt_update
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
	for p in "${missing[@]}"; do
		installed "$p" || die "package $p still not installed"
	done
}

# --- Go tools ----------------------------------------------------------------

# go_tool_ok BIN MARKER: the tool exists, reports MARKER in its -version, and
# was built by the Go toolchain in use (a tool built by an older Go may fail to
# analyse code that needs the newer one).
go_tool_ok() {
	local bin="$1" marker="$2"
	[[ -x "${TOOLBIN}/${bin}" ]] || return 1
	"${TOOLBIN}/${bin}" -version 2>/dev/null | grep -qF -- "${marker}" || return 1
	local built want
	built="$(go version "${TOOLBIN}/${bin}" 2>/dev/null | awk '{print $NF}')"
	want="$(go env GOVERSION)"
	[[ "${built}" == "${want}" ]]
}

install_go_tool() {
	local bin="$1" pkg="$2" marker="$3"
	if go_tool_ok "${bin}" "${marker}"; then
		return 0
	fi
	log "installing ${pkg} into ${TOOLBIN}"
	mkdir -p "${TOOLBIN}"
	# Run outside the module so that its go.mod is neither read nor changed.
	(cd / && GOBIN="${TOOLBIN}" GOFLAGS= go install "${pkg}")
	go_tool_ok "${bin}" "${marker}" || die "${bin} installed but does not report ${marker} with $(go env GOVERSION)"
}

# cosign_ok: .bin/cosign exists and reports the pinned version. Unlike the
# linters it need not be rebuilt when Go changes: it only signs and verifies.
cosign_ok() {
	[[ -x "${TOOLBIN}/cosign" ]] || return 1
	local out
	out="$("${TOOLBIN}/cosign" version 2>&1)" || return 1
	grep -qE "^GitVersion:[[:space:]]+${COSIGN_VERSION}\$" <<<"${out}"
}

install_cosign() {
	if cosign_ok; then
		return 0
	fi
	log "installing cosign ${COSIGN_VERSION} into ${TOOLBIN} (a large build: minutes on a cold cache)"
	mkdir -p "${TOOLBIN}"
	(cd / && GOBIN="${TOOLBIN}" GOFLAGS= go install "github.com/sigstore/cosign/v2/cmd/cosign@${COSIGN_VERSION}")
	cosign_ok || die "cosign installed but does not report ${COSIGN_VERSION}"
}

# localkms_ok: .bin/local-kms exists and was built from the pinned version.
localkms_ok() {
	[[ -x "${TOOLBIN}/local-kms" ]] || return 1
	go version -m "${TOOLBIN}/local-kms" 2>/dev/null |
		grep -qE "^[[:space:]]+mod[[:space:]]+github.com/nsmithuk/local-kms[[:space:]]+${LOCALKMS_VERSION}([[:space:]]|\$)"
}

install_localkms() {
	if localkms_ok; then
		return 0
	fi
	log "installing local-kms ${LOCALKMS_VERSION} into ${TOOLBIN}"
	mkdir -p "${TOOLBIN}"
	(cd / && GOBIN="${TOOLBIN}" GOFLAGS= go install "github.com/nsmithuk/local-kms@${LOCALKMS_VERSION}")
	localkms_ok || die "local-kms installed but is not ${LOCALKMS_VERSION}"
}

# --- Node.js and tuf-js -------------------------------------------------------

# node_ok: node and npm are on PATH and node can run tuf-js 3 (18.17+, 20.5+).
node_ok() {
	command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || return 1
	local v major minor
	v="$(node -p 'process.versions.node' 2>/dev/null)" || return 1
	major="${v%%.*}"
	minor="${v#*.}"
	minor="${minor%%.*}"
	((major > 20 || (major == 20 && minor >= 5) || (major == 18 && minor >= 17)))
}

install_node() {
	if node_ok; then
		return 0
	fi
	if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
		die "node $(node --version) is too old for tuf-js (hack/interop): need Node.js 18.17+ or 20.5+"
	fi
	command -v dpkg-query >/dev/null 2>&1 || die "node or npm missing: install Node.js 18.17+ or 20.5+ with npm"
	log "installing Debian packages: ${NODE_APT_PACKAGES[*]}"
	apt_update
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${NODE_APT_PACKAGES[@]}"
	node_ok || die "node/npm still missing or too old after installing ${NODE_APT_PACKAGES[*]}"
}

# install_tufjs runs `npm ci` in hack/interop/tufjs when node_modules is
# missing or was installed from another package-lock.json (a stamp in
# node_modules records the lockfile's SHA-256).
install_tufjs() {
	local stamp="${TUFJS_DIR}/node_modules/.dialtone-lock.sha256" want
	want="$(sha256sum "${TUFJS_DIR}/package-lock.json" | awk '{print $1}')"
	if [[ -f "${TUFJS_DIR}/node_modules/tuf-js/package.json" && -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
		return 0
	fi
	log "installing tuf-js into ${TUFJS_DIR}/node_modules (npm ci)"
	(cd "${TUFJS_DIR}" && npm ci --no-audit --no-fund --loglevel=error </dev/null)
	printf '%s\n' "${want}" >"${stamp}"
}

install_apt
install_go_tool staticcheck "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}" "${STATICCHECK_MARKER}"
install_cosign
install_localkms
install_node
install_tufjs
log "ok: $(go env GOVERSION), staticcheck $("${TOOLBIN}/staticcheck" -version | awk '{print $2}'), cosign ${COSIGN_VERSION}, node $(node --version), tuf-js $(node -p "require('${TUFJS_DIR}/node_modules/tuf-js/package.json').version")"
