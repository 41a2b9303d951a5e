#!/usr/bin/env bash
# Installs the Debian packages simple-tpm-pk11 needs to build and test, only
# those that are missing, and checks the Go toolchain (which it cannot install).
# Safe to run any number of times; prints one line per action taken.
set -euo pipefail

PACKAGES=(
	swtpm swtpm-tools tpm2-tools tpm2-openssl libssl-dev
	opensc gnutls-bin p11-kit p11-kit-modules libp11-kit-dev
	openssh-client openssh-server
	gcc make git ca-certificates iproute2 procps util-linux
	go-md2man groff-base dpkg-dev tcsh
)
GO_MIN_MAJOR=1
GO_MIN_MINOR=26

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "deps: not root and sudo is missing; run this script as root" >&2
		exit 1
	fi
	SUDO=(sudo)
fi

missing=()
for p in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	if [ "$status" != "install ok installed" ]; then
		missing+=("$p")
	fi
done

# Run an apt-get command quietly; show its output only when it fails.
apt_quiet() {
	local log
	log=$(mktemp)
	if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@" >"$log" 2>&1; then
		cat "$log" >&2
		rm -f "$log"
		echo "deps: apt-get $* failed" >&2
		exit 1
	fi
	rm -f "$log"
}

acted=0
if [ "${#missing[@]}" -gt 0 ]; then
	echo "deps: apt-get update"
	apt_quiet update
	echo "deps: installing ${missing[*]}"
	apt_quiet install -y -q --no-install-recommends "${missing[@]}"
	acted=1
fi

if ! command -v go >/dev/null 2>&1; then
	if [ -x /usr/local/go/bin/go ]; then
		echo "deps: go is in /usr/local/go/bin but not in PATH; run: export PATH=/usr/local/go/bin:\$PATH" >&2
		exit 1
	fi
	echo "deps: go not found in PATH; install Go >= ${GO_MIN_MAJOR}.${GO_MIN_MINOR} from https://go.dev/dl/ and put its bin/ in PATH" >&2
	exit 1
fi
gover=$(go env GOVERSION 2>/dev/null || true) # e.g. go1.26.8
gover=${gover#go}
major=${gover%%.*}
rest=${gover#*.}
minor=${rest%%[!0-9]*}
if ! [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] ||
	[ "$major" -lt "$GO_MIN_MAJOR" ] ||
	{ [ "$major" -eq "$GO_MIN_MAJOR" ] && [ "$minor" -lt "$GO_MIN_MINOR" ]; }; then
	echo "deps: $(go version 2>/dev/null || echo 'go: unknown version') is too old; need Go >= ${GO_MIN_MAJOR}.${GO_MIN_MINOR} (install it from https://go.dev/dl/ and put it first in PATH)" >&2
	exit 1
fi

if [ "$acted" -eq 0 ]; then
	echo "deps: all present"
fi
