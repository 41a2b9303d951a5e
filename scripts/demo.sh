#!/usr/bin/env bash
# The main job, end to end: make an RSA and an ECDSA key inside a TPM, sign
# a file with each and verify the signatures with openssl, log in with ssh
# using the TPM key, then log in again from a "remote host" through
# stpm-bridge ssh (the forwarded token), all against a throwaway sshd on
# 127.0.0.1. Each command is printed as it is run ("$ ...").
#
# Uses the real TPM when /dev/tpmrm0 is usable, else a throwaway swtpm that
# it starts and stops; STPM_DEMO_SWTPM=1 always uses a swtpm. The commands
# come from bin/ and lib/ (make build), or STPM_DEMO_BIN (a directory with
# the commands and libsimple-tpm-pk11.so). Writes nothing outside a
# temporary directory (STPM_DEMO_KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
if [ -n "${STPM_DEMO_BIN:-}" ]; then
	bin=$STPM_DEMO_BIN module=$STPM_DEMO_BIN/libsimple-tpm-pk11.so
else
	bin=$root/bin module=$root/lib/libsimple-tpm-pk11.so
fi
export PATH="$bin:$PATH"

work=$(mktemp -d "${TMPDIR:-/tmp}/stpm-demo.XXXXXX")
swtpm_pid='' sshd_pid=''
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

if [ -t 1 ]; then
	say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
	say() { printf '\n== %s\n' "$*"; }
fi
# run prints a command as a shell would take it, then runs it.
run() {
	local a line='$'
	for a in "$@"; do
		if [[ $a =~ ^[A-Za-z0-9_./=:@%+,-]+$ ]]; then
			line+=" $a"
		else
			line+=" '${a//\'/\'\\\'\'}'"
		fi
	done
	printf '%s\n' "$line"
	"$@"
}

if [ -z "${STPM_DEMO_SWTPM:-}" ] && [ -r /dev/tpmrm0 ] && [ -w /dev/tpmrm0 ]; then
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
	say "using a throwaway swtpm (pid $swtpm_pid)"
fi
cd "$work"
echo "TPM: $SIMPLE_TPM_PK11_TPM"

say "make keys inside the TPM: RSA 2048 and ECDSA P-256"
run stpm-keygen -o rsa.key --comment demo-rsa
run stpm-keygen -t ecdsa -o ec.key --comment demo-ecdsa
run ls -l rsa.key rsa.key.pub ec.key ec.key.pub
say "the public keys, ready for ~/.ssh/authorized_keys"
cat rsa.key.pub ec.key.pub

echo "hello from the TPM" > message.txt
for k in rsa ec; do
	say "sign message.txt with $k.key; openssl and stpm-verify check the signature"
	run stpm-sign -k $k.key -f message.txt -r -o $k.sig
	ssh-keygen -e -m PKCS8 -f $k.key.pub > $k.pem
	run openssl dgst -sha256 -verify $k.pem -signature $k.sig message.txt
	run stpm-verify -k $k.key.pub -f message.txt -s $k.sig
done

say "a tampered message does not verify"
echo "tampered" > message.txt
if run stpm-verify -k ec.key.pub -f message.txt -s ec.sig; then
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
ssh-keygen -q -t ed25519 -N "" -f "$work/hostkey"
ssh-keygen -q -t ed25519 -N "" -f "$work/outer"
cat ec.key.pub "$work/outer.pub" > authorized_keys
[ "$(id -u)" -eq 0 ] && mkdir -p /run/sshd
# A free port below the kernel's ephemeral range (32768 and up), where no
# outgoing connection holds it; another program may still take it first,
# so try a few.
for _ in 1 2 3 4 5; do
	port=$((20000 + RANDOM % 12000))
	(echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
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
	/usr/sbin/sshd -D -e -f "$work/sshd_config" 2>"$work/sshd.log" &
	sshd_pid=$!
	for _ in $(seq 200); do
		(echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break 2
		kill -0 "$sshd_pid" 2>/dev/null || break
		sleep 0.05
	done
	kill "$sshd_pid" 2>/dev/null || true
	wait "$sshd_pid" 2>/dev/null || true
	sshd_pid=
done
if [ -z "$sshd_pid" ]; then
	echo "demo: sshd did not start; its last log:" >&2
	cat "$work/sshd.log" >&2 || true
	exit 1
fi
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$work/hostkey.pub")" > known_hosts
# The client settings for this sshd, so the commands below stay short.
cat > ssh_config <<CONF
Host demo
    HostName 127.0.0.1
    Port $port
    User $me
    UserKnownHostsFile $work/known_hosts
    StrictHostKeyChecking yes
    IdentityFile none
    BatchMode yes
CONF
client=
for c in /usr/lib/*/pkcs11/p11-kit-client.so /usr/lib64/pkcs11/p11-kit-client.so; do
	[ -e "$c" ] && client=$c && break
done

# shellcheck disable=SC2016 # the remote side expands nothing
run ssh -F "$work/ssh_config" -o PKCS11Provider="$module" demo 'echo "  logged in with the TPM key"'
run stpm-bridge ssh -F "$work/ssh_config" -i "$work/outer" demo \
	"ssh -F $work/ssh_config -o PKCS11Provider=$client demo 'echo \"  forwarded login: signed by the workstation TPM\"'"
# sshd -e ends its lines with CR LF.
tr -d '\r' <"$work/sshd.log" | grep -o "Accepted publickey .*" | sed 's/^/  sshd: /'

say "done: the private keys never left the TPM"
