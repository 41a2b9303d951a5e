#!/usr/bin/env bash
# The main job, end to end: make keys inside a TPM, sign with them, and
# verify the signatures with openssl. Uses the real TPM when /dev/tpmrm0 is
# usable, else a throwaway swtpm that it starts and stops. Writes nothing
# outside a temporary directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=$PWD/bin

work=$(mktemp -d "${TMPDIR:-/tmp}/stpm-demo.XXXXXX")
swtpm_pid=
cleanup() {
	if [ -n "$swtpm_pid" ]; then
		kill "$swtpm_pid" 2>/dev/null || true
		wait "$swtpm_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ -r /dev/tpmrm0 ] && [ -w /dev/tpmrm0 ]; then
	export SIMPLE_TPM_PK11_TPM=device:/dev/tpmrm0
	say "using the TPM at /dev/tpmrm0"
else
	mkdir "$work/swtpm"
	swtpm socket --tpm2 --tpmstate dir="$work/swtpm" \
		--server type=unixio,path="$work/swtpm/swtpm.sock" \
		--ctrl type=unixio,path="$work/swtpm/swtpm.sock.ctrl" \
		--flags not-need-init,startup-clear \
		--log file="$work/swtpm/swtpm.log" >"$work/swtpm/out.log" 2>&1 &
	swtpm_pid=$!
	for _ in $(seq 100); do [ -S "$work/swtpm/swtpm.sock" ] && break; sleep 0.05; done
	export SIMPLE_TPM_PK11_TPM=swtpm:path=$work/swtpm/swtpm.sock
	say "no usable /dev/tpmrm0: using a throwaway swtpm (pid $swtpm_pid)"
fi
cd "$work"
echo "TPM: $SIMPLE_TPM_PK11_TPM"

say "stpm-keygen -o rsa.key            # RSA 2048, made inside the TPM"
"$bin/stpm-keygen" -o rsa.key --comment demo-rsa
say "stpm-keygen -t ecdsa -o ec.key    # ECDSA P-256"
"$bin/stpm-keygen" -t ecdsa -o ec.key --comment demo-ecdsa
ls -l rsa.key rsa.key.pub ec.key ec.key.pub
say "the public keys, ready for ~/.ssh/authorized_keys"
cat rsa.key.pub ec.key.pub

echo "hello from the TPM" > message.txt
for k in rsa ec; do
	say "stpm-sign -k $k.key -f message.txt -r -o $k.sig; openssl verifies it"
	"$bin/stpm-sign" -k $k.key -f message.txt -r -o $k.sig
	ssh-keygen -e -m PKCS8 -f $k.key.pub > $k.pem
	openssl dgst -sha256 -verify $k.pem -signature $k.sig message.txt
	"$bin/stpm-verify" -k $k.key.pub -f message.txt -s $k.sig
done

say "a tampered message does not verify"
echo "tampered" > message.txt
if "$bin/stpm-verify" -k ec.key.pub -f message.txt -s ec.sig; then
	echo "demo: a tampered message verified" >&2
	exit 1
fi

say "done: the private keys never left the TPM"
