#!/usr/bin/env bash
# make bench: measures, in one run on a swtpm it starts, what a signature
# costs at each layer: the raw TPM2_Sign on a loaded key (the floor), the
# module driven by a C host (dlopen, C_Sign in a loop), and the module
# through p11-kit server + p11-kit-client.so; plus loading costs and
# scaling over threads and processes. Prints a Markdown table and writes
# it to docs/PERFORMANCE.md. Nothing here is a pass/fail test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
N_EC=${N_EC:-2000}
N_RSA=${N_RSA:-500}

work=$(mktemp -d "${TMPDIR:-/tmp}/stpm-bench.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

mkdir "$work/tpm" "$work/keys"
swtpm socket --tpm2 --tpmstate dir="$work/tpm" \
	--server type=unixio,path="$work/tpm/s.sock" --ctrl type=unixio,path="$work/tpm/s.sock.ctrl" \
	--flags not-need-init,startup-clear --log file="$work/tpm/log" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$work/tpm/s.sock" ] && break; sleep 0.05; done
export SIMPLE_TPM_PK11_TPM=swtpm:path=$work/tpm/s.sock
export SIMPLE_TPM_PK11_CONFIG=$work/keys/config
bin/stpm-keygen -o "$work/keys/rsa.key" 2>/dev/null
bin/stpm-keygen -t ecdsa -o "$work/keys/ec.key" 2>/dev/null
printf 'key rsa.key\nkey ec.key\n' > "$work/keys/config"

host=$work/p11host
gcc -O2 -pthread -I module -o "$host" tests/c/p11host.c -ldl -lcrypto
go build -o "$work/rawsign" ./tests/bench/rawsign
module=$root/lib/libsimple-tpm-pk11.so
client=
for c in /usr/lib/*/pkcs11/p11-kit-client.so /usr/lib64/pkcs11/p11-kit-client.so; do
	[ -e "$c" ] && client=$c && break
done

field() { sed -n "s/.*[[:space:]^]$1=\([^ ]*\).*/\1/p" | head -n1; }
sign() { # MODULE MECH COUNT [THREADS] -> "p50 p95 per_s"
	local out
	out=$("$host" "$1" sign --mech "$2" --count "$3" --threads "${4:-1}" | grep '^signed=')
	echo "$(echo " $out" | field p50_us) $(echo " $out" | field p95_us) $(echo " $out" | field per_s)"
}
raw() { # KEY COUNT
	local out
	out=$("$work/rawsign" -tpm "$SIMPLE_TPM_PK11_TPM" -k "$work/keys/$1" -n "$2")
	echo "$(echo " $out" | field p50_us) $(echo " $out" | field p95_us) $(echo " $out" | field per_s)"
}

p11kit_sock=$work/p11.sock
p11-kit server -f -n "$p11kit_sock" --provider "$module" "pkcs11:token=simple-tpm-pk11" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$p11kit_sock" ] && break; sleep 0.05; done

table=$work/table.md
{
	echo "| operation | path | p50 µs | p95 µs | per s | × raw |"
	echo "|---|---|---|---|---|---|"
	for row in "ECDSA P-256, CKM_ECDSA|ec.key|ecdsa|$N_EC" \
		"RSA-2048, CKM_RSA_PKCS (SHA-256 DigestInfo)|rsa.key|rsa-pkcs|$N_RSA" \
		"RSA-2048, CKM_SHA256_RSA_PKCS|rsa.key|sha256-rsa-pkcs|$N_RSA"; do
		IFS='|' read -r name key mech n <<<"$row"
		read -r r50 r95 rps < <(raw "$key" "$n")
		echo "| $name | (a) raw TPM2_Sign, key loaded | $r50 | $r95 | $rps | 1.00 |"
		read -r m50 m95 mps < <(sign "$module" "$mech" "$n")
		echo "| $name | (b) module, C host | $m50 | $m95 | $mps | $(awk "BEGIN{printf \"%.2f\", $m50/$r50}") |"
		read -r k50 k95 kps < <(P11_KIT_SERVER_ADDRESS=unix:path=$p11kit_sock sign "$client" "$mech" "$n")
		echo "| $name | (c) p11-kit server + client | $k50 | $k95 | $kps | $(awk "BEGIN{printf \"%.2f\", $k50/$r50}") |"
	done
	echo
	echo "Scaling, ECDSA through the module (one process, threads; then processes of one thread each):"
	echo
	echo "| threads | per s |     | processes | per s (total) |"
	echo "|---|---|---|---|---|"
	for t in 1 2 4 8; do
		read -r _ _ tps < <(sign "$module" ecdsa $((N_EC / t)) "$t")
		p=$((t <= 4 ? t : 0))
		pps=""
		if [ "$p" -gt 0 ]; then
			start=$(date +%s.%N)
			procs=()
			for _ in $(seq "$p"); do
				"$host" "$module" sign --mech ecdsa --count $((N_EC / p)) >/dev/null &
				procs+=($!)
			done
			for q in "${procs[@]}"; do wait "$q"; done
			end=$(date +%s.%N)
			pps=$(awk "BEGIN{printf \"%.1f\", $N_EC/($end-$start)}")
		fi
		echo "| $t | $tps |     | $([ "$p" -gt 0 ] && echo "$p") | $pps |"
	done
	echo
	lt=$("$host" "$module" loadtime)
	echo "Loading: dlopen $(echo " $lt" | field load_us) µs, C_Initialize $(echo " $lt" | field init_us) µs (two keys, no TPM traffic);"
	echo "RSS $(echo " $lt" | field rss_kb_before) kB before, $(echo " $lt" | field rss_kb_after) kB after."
} >"$table"

{
	echo "# Performance"
	echo
	echo "Measured by \`make bench\` on $(date -u +%Y-%m-%d): $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1),"
	echo "$(swtpm --version | head -n1), $(go version | cut -d' ' -f3). Each path signs in a single thread unless said;"
	echo "the module reaches swtpm per operation (connect, lock, storage primary, load, sign, flush), as it must on a TPM without resource manager."
	echo
	cat "$table"
	echo
	echo "Not measured yet: tpm2-pkcs11 on the same swtpm, the first signature in a fresh process,"
	echo "whole-process pkcs11-tool, ssh logins (file key, module, bridge), and the cost to a program"
	echo "that only lists p11-kit modules."
} > docs/PERFORMANCE.md
cat "$table"
