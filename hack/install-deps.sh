#!/usr/bin/env bash
# install-deps.sh installs what building, linting and testing Dialtone needs on
# a Debian 12 machine that has Go at /usr/local/go:
#   - Debian packages: the software TPM (swtpm, swtpm-tools), tpm2-tools,
#     Mosquitto broker and clients, and gcc/libc6-dev/make for `go test -race`.
#   - Go tools, pinned by version, into the repo-local .bin/ (GOBIN).
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

# Debian packages the tests and the demo use. Keep this list small.
APT_PACKAGES=(
	swtpm swtpm-tools tpm2-tools
	mosquitto mosquitto-clients
	gcc libc6-dev make ca-certificates
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
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
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

install_apt
install_go_tool staticcheck "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}" "${STATICCHECK_MARKER}"
log "ok: $(go env GOVERSION), staticcheck $("${TOOLBIN}/staticcheck" -version | awk '{print $2}')"
