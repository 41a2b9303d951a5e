#!/usr/bin/env bash
# The main job, end to end: make keys inside a TPM, sign with them, and
# verify the signatures with openssl. Uses the real TPM when /dev/tpmrm0 is
# usable, else a throwaway swtpm that it starts and stops. Writes nothing
# outside a temporary directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
bin=$root/bin

work=$(mktemp -d "${TMPDIR:-/tmp}/stpm-demo.XXXXXX")
swtpm_pid= sshd_pid=
cleanup() {
	if [ -n "$sshd_pid" ]; then
		kill "$sshd_pid" 2>/dev/null || true
		wait "$sshd_pid" 2>/dev/null || true
	fi
	if [ -n "$swtpm_pid" ]; then
		kill "$swtpm_pid" 2>/dev/null || true
		wait "$swtpm_pid" 2>/dev/null || true
	fi
	[ -n "${STPM_DEMO_KEEP:-}" ] || rm -rf "$work"
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

# The same key, used by ssh on a "remote" host through stpm-bridge: a
# throwaway sshd on 127.0.0.1 plays the remote host.
say "ssh with the TPM key, then from the remote host with the forwarded token"
printf 'key rsa.key\nkey ec.key\n' > config
export SIMPLE_TPM_PK11_CONFIG=$work/config
# stpm-bridge's local socket goes under XDG_RUNTIME_DIR: keep it in $work.
mkdir -m 700 "$work/run"
export XDG_RUNTIME_DIR=$work/run
me=$(id -un)
port=$((20000 + RANDOM % 30000))
while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((20000 + RANDOM % 30000)); done
ssh-keygen -q -t ed25519 -N "" -f "$work/hostkey"
ssh-keygen -q -t ed25519 -N "" -f "$work/outer"
cat ec.key.pub "$work/outer.pub" > authorized_keys
cat > sshd_config <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $work/hostkey
AuthorizedKeysFile $work/authorized_keys
PidFile none
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowStreamLocalForwarding yes
CONF
[ "$(id -u)" -eq 0 ] && mkdir -p /run/sshd
/usr/sbin/sshd -D -e -f "$work/sshd_config" 2>"$work/sshd.log" &
sshd_pid=$!
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
echo "127.0.0.1 $(cut -d' ' -f1,2 "$work/hostkey.pub")" | sed "s/^127.0.0.1/[127.0.0.1]:$port/" > known_hosts
opts="-F /dev/null -o UserKnownHostsFile=$work/known_hosts -o StrictHostKeyChecking=yes -o IdentityFile=none -o BatchMode=yes -p $port"
client=
for c in /usr/lib/*/pkcs11/p11-kit-client.so /usr/lib64/pkcs11/p11-kit-client.so; do
	[ -e "$c" ] && client=$c && break
done

echo "$ ssh -I lib/libsimple-tpm-pk11.so $me@127.0.0.1 'echo ...'"
# shellcheck disable=SC2086
ssh $opts -o PKCS11Provider="$root/lib/libsimple-tpm-pk11.so" "$me@127.0.0.1" \
	'echo "  logged in with the TPM key"'
echo "$ stpm-bridge ssh $me@127.0.0.1 'ssh -o PKCS11Provider=p11-kit-client.so $me@127.0.0.1 ...'"
# shellcheck disable=SC2086
"$bin/stpm-bridge" ssh $opts -i "$work/outer" "$me@127.0.0.1" \
	"ssh $opts -o PKCS11Provider=$client $me@127.0.0.1 'echo \"  forwarded login: signed by the workstation TPM\"'"
grep -o "Accepted publickey .*" "$work/sshd.log" | sed 's/^/  sshd: /'

say "done: the private keys never left the TPM"
