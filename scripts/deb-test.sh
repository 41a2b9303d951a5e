#!/usr/bin/env bash
# The Debian package, end to end, on this machine: build it, install it,
# find the module through p11-kit, make keys with the installed
# stpm-keygen on a throwaway swtpm, sign through p11-kit-proxy.so with
# pkcs11-tool, verify with openssl, then purge the package and check that
# nothing of it is left. Needs root; refuses to run over an installed
# simple-tpm-pk11 (or files at its paths), which it would remove.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pkg=simple-tpm-pk11
say() { printf 'deb-test: %s\n' "$*"; }
die() {
	printf 'deb-test: error: %s\n' "$*" >&2
	exit 1
}

# present: the package is known to dpkg in any state but not-installed.
present() {
	local s
	s=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
	[ -n "$s" ] && [[ $s != *not-installed ]]
}

# --if-possible (make test): where the test cannot run, say why and
# succeed; alone, that is an error.
optional=''
[ "${1:-}" = --if-possible ] && optional=1
skip() {
	[ -n "$optional" ] || die "$*"
	say "not run: $*"
	exit 0
}

[ "$(id -u)" -eq 0 ] || skip "needs root (it installs and purges the package)"
for t in dpkg dpkg-deb swtpm p11-kit pkcs11-tool openssl ssh-keygen; do
	command -v "$t" >/dev/null || die "$t not found: run make deps"
done
if present; then
	skip "$pkg is installed here: this test would purge it; remove it first"
fi

start=$SECONDS
work=$(mktemp -d "${TMPDIR:-/tmp}/stpm-deb-test.XXXXXX")
swtpm_pid='' installed=''
cleanup() {
	local rc=$?
	if [ -n "$swtpm_pid" ]; then
		kill "$swtpm_pid" 2>/dev/null || true
		wait "$swtpm_pid" 2>/dev/null || true
	fi
	if [ -n "$installed" ] && present; then
		echo "deb-test: purging $pkg after a failure" >&2
		dpkg --purge "$pkg" >/dev/null 2>&1 || echo "deb-test: could not purge $pkg" >&2
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "building the package"
deb=$(bash scripts/deb.sh | tail -n 1)
[ -f "$deb" ] || die "scripts/deb.sh did not make a package"
say "$deb"

# The package's files (not directories), as absolute paths.
mapfile -t files < <(dpkg-deb --contents "$deb" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $6 }')
[ "${#files[@]}" -gt 0 ] || die "no files in $deb"
for f in "${files[@]}"; do
	[ ! -e "$f" ] || die "$f exists already and would be overwritten and then removed: uninstall it first"
done

multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
proxy=/usr/lib/$multiarch/p11-kit-proxy.so
[ -e "$proxy" ] || die "$proxy not found: install p11-kit-modules"

say "dpkg -i"
installed=1
if ! DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$work/dpkg.log" 2>&1; then
	say "dpkg -i could not finish; apt-get install -f for the dependencies"
	DEBIAN_FRONTEND=noninteractive apt-get install -f -y -q >>"$work/dpkg.log" 2>&1 ||
		{ cat "$work/dpkg.log" >&2; die "installing $deb failed"; }
fi
[ "$(dpkg-query -W -f='${Status}' "$pkg")" = "install ok installed" ] || die "$pkg is not installed after dpkg -i"

# Everything below runs in a home of its own, so no user's config or keys
# get in the way.
home=$work/home
mkdir -p "$home/.simple-tpm-pk11"
export HOME=$home

say "p11-kit list-modules"
p11-kit list-modules >"$work/modules.txt" 2>"$work/modules.err" || true
grep -qx "$pkg: /usr/lib/$multiarch/pkcs11/libsimple-tpm-pk11.so" "$work/modules.txt" ||
	{ cat "$work/modules.txt" >&2; die "p11-kit list-modules does not show $pkg"; }

say "starting swtpm"
mkdir "$work/tpm"
swtpm socket --tpm2 --tpmstate dir="$work/tpm" \
	--server type=unixio,path="$work/tpm/swtpm.sock" \
	--ctrl type=unixio,path="$work/tpm/swtpm.sock.ctrl" \
	--flags not-need-init,startup-clear >"$work/tpm/out.log" 2>&1 &
swtpm_pid=$!
for _ in $(seq 100); do [ -S "$work/tpm/swtpm.sock" ] && break; sleep 0.05; done
[ -S "$work/tpm/swtpm.sock" ] || { cat "$work/tpm/out.log" >&2; die "swtpm did not start"; }
export SIMPLE_TPM_PK11_TPM=swtpm:path=$work/tpm/swtpm.sock

say "stpm-keygen (installed) makes an RSA and an ECDSA key"
keys=$home/.simple-tpm-pk11
/usr/bin/stpm-keygen -o "$keys/rsa.key" --comment deb-test 2>"$work/keygen.log" ||
	{ cat "$work/keygen.log" >&2; die "stpm-keygen (RSA) failed"; }
/usr/bin/stpm-keygen -t ecdsa -o "$keys/ec.key" --comment deb-test 2>>"$work/keygen.log" ||
	{ cat "$work/keygen.log" >&2; die "stpm-keygen (ECDSA) failed"; }
printf 'key rsa.key\nkey ec.key\n' >"$keys/config"
export SIMPLE_TPM_PK11_CONFIG=$keys/config

echo "signed by the TPM through p11-kit" >"$work/data"
openssl dgst -sha256 -binary -out "$work/data.sha256" "$work/data"
# pkcs11-tool picks the key to sign with by CKA_ID, which the module sets
# to the SHA-1 of the public key's SubjectPublicKeyInfo.
sign() { # key mechanism input output [pkcs11-tool options]
	local key=$1 mech=$2 in=$3 out=$4 id
	shift 4
	ssh-keygen -e -m PKCS8 -f "$keys/$key.key.pub" >"$work/$key.pem"
	id=$(openssl pkey -pubin -in "$work/$key.pem" -outform DER | openssl dgst -sha1 -r | cut -d' ' -f1)
	pkcs11-tool --module "$proxy" --token-label "$pkg" --id "$id" --sign \
		--mechanism "$mech" --input-file "$in" --output-file "$out" "$@" >"$work/sign.log" 2>&1 ||
		{ cat "$work/sign.log" >&2; die "pkcs11-tool --sign with $key ($mech) failed"; }
}
verify() { # key signature
	openssl dgst -sha256 -verify "$work/$1.pem" -signature "$2" "$work/data" >"$work/verify.log" 2>&1 ||
		{ cat "$work/verify.log" >&2; die "openssl does not verify the $1 signature"; }
}
say "pkcs11-tool --module $proxy --sign, checked with openssl"
sign rsa SHA256-RSA-PKCS "$work/data" "$work/rsa.sig"
verify rsa "$work/rsa.sig"
sign ec ECDSA "$work/data.sha256" "$work/ec.sig" --signature-format openssl
verify ec "$work/ec.sig"

if command -v man >/dev/null; then
	for p in stpm-keygen stpm-bridge simple-tpm-pk11 simple-tpm-pk11-config; do
		man -w "$p" >/dev/null 2>&1 || die "man does not find the installed page $p"
	done
fi
if command -v systemd-analyze >/dev/null; then
	mkdir -m 0700 "$work/run"
	XDG_RUNTIME_DIR=$work/run systemd-analyze verify --user /usr/lib/systemd/user/stpm-bridge.service \
		>"$work/unit.log" 2>&1 || { cat "$work/unit.log" >&2; die "systemd-analyze rejects the installed unit"; }
	[ ! -s "$work/unit.log" ] || { cat "$work/unit.log" >&2; die "systemd-analyze complains about the installed unit"; }
fi

kill "$swtpm_pid"
wait "$swtpm_pid" 2>/dev/null || true
swtpm_pid=

say "dpkg --purge"
DEBIAN_FRONTEND=noninteractive dpkg --purge "$pkg" >"$work/purge.log" 2>&1 ||
	{ cat "$work/purge.log" >&2; die "dpkg --purge failed"; }
installed=
if present; then
	die "$pkg is still known to dpkg after dpkg --purge"
fi
for f in "${files[@]}"; do
	[ ! -e "$f" ] || die "$f is left after dpkg --purge"
done
p11-kit list-modules >"$work/modules.txt" 2>/dev/null || true
if grep -q "^$pkg:" "$work/modules.txt"; then
	die "p11-kit list-modules still shows $pkg after the purge"
fi

say "ok in $((SECONDS - start)) s: installed, listed by p11-kit, signed through p11-kit-proxy.so, verified by openssl, purged without a trace"
