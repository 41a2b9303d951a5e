#!/usr/bin/env bash
# make bench: measures, in one run on a swtpm it starts, what a signature
# costs at each layer and how the module compares with tpm2-pkcs11 on the
# same swtpm: the raw TPM2_Sign on a loaded key (the floor), the module's
# TPM layer per operation and with the key kept loaded, the module driven
# by a C host (dlopen, C_Sign in a loop), the module through p11-kit
# server + p11-kit-client.so, and tpm2-pkcs11 through the same C host;
# then each step of an operation, loading, the first signature of a fresh
# process, whole pkcs11-tool runs, ssh logins (file key, module, bridge),
# what the module costs a program that lists p11-kit modules, and scaling
# over threads and processes. Prints Markdown and writes it to
# docs/PERFORMANCE.md. Nothing here is a pass/fail test.
#
# BENCH_QUICK=1 runs fewer iterations (a smoke run of the script).
# BENCH_SOAK_ONLY=1 runs only the long run (RSS and goroutines over
# N_SOAK signatures in one process, default 100000) and prints its table.
# BENCH_NO_INSTALL=1 leaves tpm2-pkcs11 out when it is not installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
if [ -n "${BENCH_QUICK:-}" ]; then
	N_EC=200 N_RSA=60 RUNS=3 SSH_RUNS=3x N_SOAK=${N_SOAK:-10000}
else
	N_EC=${N_EC:-2000} N_RSA=${N_RSA:-500} RUNS=${RUNS:-15} SSH_RUNS=${SSH_RUNS:-20x} N_SOAK=${N_SOAK:-100000}
fi
PIN=1234

work=$(mktemp -d "${TMPDIR:-/tmp}/stpm-bench.XXXXXX")
chmod 0755 "$work"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
say() { echo "bench: $*" >&2; }

# --- tpm2-pkcs11, the peer --------------------------------------------------
T2P=
find_t2p() {
	local f
	for f in /usr/lib/*/pkcs11/libtpm2_pkcs11.so /usr/lib/*/libtpm2_pkcs11.so.1; do
		if [ -e "$f" ] && command -v tpm2_ptool >/dev/null; then T2P=$f; return 0; fi
	done
	return 1
}
if ! find_t2p && [ -z "${BENCH_NO_INSTALL:-}" ]; then
	say "installing tpm2-pkcs11 (libtpm2-pkcs11-1, libtpm2-pkcs11-tools) to compare with"
	SUDO=()
	[ "$(id -u)" -ne 0 ] && SUDO=(sudo)
	if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q libtpm2-pkcs11-1 libtpm2-pkcs11-tools >"$work/apt.log" 2>&1; then
		say "could not install tpm2-pkcs11; leaving it out (see below)"
		tail -n 5 "$work/apt.log" >&2
	fi
	find_t2p || true
fi

# --- swtpm and keys -----------------------------------------------------------
mkdir "$work/tpm" "$work/keys"
sock=$work/tpm/s.sock
swtpm socket --tpm2 --tpmstate dir="$work/tpm" \
	--server type=unixio,path="$sock" --ctrl type=unixio,path="$sock.ctrl" \
	--flags not-need-init,startup-clear --log file="$work/tpm/log" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
export SIMPLE_TPM_PK11_TPM=swtpm:path=$sock
export SIMPLE_TPM_PK11_CONFIG=$work/keys/config
export TPM2TOOLS_TCTI=swtpm:path=$sock
bin/stpm-keygen -o "$work/keys/rsa.key" 2>/dev/null
bin/stpm-keygen -t ecdsa -o "$work/keys/ec.key" 2>/dev/null
printf 'key rsa.key\nkey ec.key\n' >"$work/keys/config"

host=$work/p11host
gcc -O2 -pthread -I module -o "$host" tests/c/p11host.c -ldl -lcrypto
go build -o "$work/rawsign" ./tests/bench/rawsign
module=$root/lib/libsimple-tpm-pk11.so
client=
for c in /usr/lib/*/pkcs11/p11-kit-client.so /usr/lib64/pkcs11/p11-kit-client.so; do
	[ -e "$c" ] && client=$c && break
done

flush_tpm() { tpm2_flushcontext -t >/dev/null 2>&1 || true; tpm2_flushcontext -s >/dev/null 2>&1 || true; }

# --- long run: RSS and goroutines over many signatures ------------------------
# p11host soak signs N_SOAK times with the ECDSA P-256 key in one process and
# prints RSS every tenth of the way; the module's debug log gives its
# goroutine count at C_Finalize after one signature and after the run.
soak_run() {
	local every=$((N_SOAK / 10)) out=$work/soak.txt log=$work/soak.log
	say "long run: $N_SOAK signatures in one process (p11host soak)"
	SIMPLE_TPM_PK11_DEBUG=1 SIMPLE_TPM_PK11_LOG_STDERR=1 P11HOST_SOAK_EVERY=$every \
		"$host" "$module" soak --count "$N_SOAK" >"$out" 2>"$log" || {
		say "p11host soak failed:"
		grep -v 'debug: ' "$log" | tail -n 5 >&2
	}
	mapfile -t soak_g < <(sed -n 's/.*finalize: \([0-9]*\) goroutines.*/\1/p' "$log")
	soak=$work/soak.md
	{
		echo "| signatures | RSS, kB | OS threads | seconds |"
		echo "|---|---|---|---|"
		sed -n 's/^soak signs=\([0-9]*\) rss_kb=\([0-9]*\) threads=\([0-9]*\) elapsed_ms=\([0-9]*\)$/\1 \2 \3 \4/p' "$out" |
			awk '{ printf "| %d | %d | %d | %.1f |\n", $1, $2, $3, $4/1000 }'
	} >"$soak"
	soak_done=$(grep '^soak done' "$out" || echo "soak done: none")
	rm -f "$log"
}
soak_print() {
	cat "$soak"
	echo
	echo "Goroutines at C_Finalize: ${soak_g[0]:--} after one signature, ${soak_g[1]:--} after $N_SOAK ($soak_done)."
}
if [ -n "${BENCH_SOAK_ONLY:-}" ]; then
	soak_run
	soak_print
	exit 0
fi

if [ -n "$T2P" ]; then
	# tpm2_ptool drives tpm2-tools, which leave their objects loaded (they
	# expect a resource manager); swtpm has three slots. Each tool is
	# wrapped to flush what it left before the next one runs.
	mkdir "$work/t2p" "$work/t2p-wrap"
	for t in tpm2_createprimary tpm2_evictcontrol tpm2_readpublic tpm2_load tpm2_loadexternal \
		tpm2_unseal tpm2_encryptdecrypt tpm2_create tpm2_import tpm2_changeauth tpm2_sign; do
		real=$(command -v "$t")
		printf '#!/bin/sh\n"%s" "$@"; rc=$?\ntpm2_flushcontext -t >/dev/null 2>&1\nexit $rc\n' "$real" >"$work/t2p-wrap/$t"
		chmod +x "$work/t2p-wrap/$t"
	done
	flush_tpm
	if ! (PATH=$work/t2p-wrap:$PATH
		tpm2_ptool init --path="$work/t2p" &&
			tpm2_ptool addtoken --pid=1 --sopin=so"$PIN" --userpin="$PIN" --label=bench --path="$work/t2p" &&
			tpm2_ptool addkey --algorithm=ecc256 --label=bench --userpin="$PIN" --key-label=ec --path="$work/t2p" &&
			tpm2_ptool addkey --algorithm=rsa2048 --label=bench --userpin="$PIN" --key-label=rsa --path="$work/t2p") >"$work/t2p.log" 2>&1; then
		say "provisioning tpm2-pkcs11 failed; leaving it out"
		tail -n 5 "$work/t2p.log" >&2
		T2P=
	fi
	flush_tpm
	export TPM2_PKCS11_TCTI=swtpm:path=$sock TPM2_PKCS11_STORE=$work/t2p TSS2_LOG=all+NONE
fi

# --- helpers -------------------------------------------------------------------
field() { sed -n "s/.*[[:space:]^]$1=\([^ ]*\).*/\1/p" | head -n1; }
three() { local o=" $1"; echo "$(echo "$o" | field p50_us) $(echo "$o" | field p95_us) $(echo "$o" | field per_s)"; }
sign() { # MODULE MECH COUNT [THREADS] [PIN] -> "p50 p95 per_s"
	local pin=()
	[ -n "${5:-}" ] && pin=(--pin "$5")
	three "$("$host" "$1" sign --mech "$2" --count "$3" --threads "${4:-1}" "${pin[@]}" | grep '^signed=')"
}
raw() { three "$("$work/rawsign" -tpm "$SIMPLE_TPM_PK11_TPM" -k "$work/keys/$1" -n "$2" -mode "${3:-raw}")"; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { awk "BEGIN{ if ($2+0 == 0) print \"-\"; else printf \"%.2f\", $1/$2 }"; }
now_us() { echo $(($(date +%s%N) / 1000)); }
verdict() { if awk "BEGIN{exit !($1)}"; then echo "met"; else echo "**not met**"; fi; }

p11-kit server -f -n "$work/p11.sock" --provider "$module" "pkcs11:token=simple-tpm-pk11" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$work/p11.sock" ] && break; sleep 0.05; done

# --- per-signature table ---------------------------------------------------------
say "signing (a) raw, TPM layer, (b) module, (c) p11-kit, (d) tpm2-pkcs11"
declare -A P50 PS
rows=$work/rows.md
{
	echo "| operation | path | p50 µs | p95 µs | per s | × raw (p50) | throughput ÷ tpm2-pkcs11 |"
	echo "|---|---|---|---|---|---|---|"
} >"$rows"
for row in "ECDSA P-256, CKM_ECDSA|ec|ec.key|ecdsa|$N_EC" \
	"RSA-2048, CKM_RSA_PKCS (SHA-256 DigestInfo)|rsa-pkcs|rsa.key|rsa-pkcs|$N_RSA" \
	"RSA-2048, CKM_SHA256_RSA_PKCS|sha256|rsa.key|sha256-rsa-pkcs|$N_RSA"; do
	IFS='|' read -r name tag key mech n <<<"$row"
	declare -A r=()
	read -r r[a50] r[a95] r[aps] < <(raw "$key" "$n")
	read -r r[p50] r[p95] r[pps] < <(raw "$key" "$n" perop)
	read -r r[k50] r[k95] r[kps] < <(raw "$key" "$n" keep)
	read -r r[b50] r[b95] r[bps] < <(sign "$module" "$mech" "$n")
	read -r r[c50] r[c95] r[cps] < <(P11_KIT_SERVER_ADDRESS=unix:path=$work/p11.sock sign "$client" "$mech" "$n" 1 "" 2>/dev/null || echo "- - 0")
	r[d50]=- r[d95]=- r[dps]=0
	if [ -n "$T2P" ]; then
		read -r r[d50] r[d95] r[dps] < <(sign "$T2P" "$mech" "$n" 1 "$PIN")
		flush_tpm
	fi
	P50[$tag.a]=${r[a50]} P50[$tag.k]=${r[k50]} P50[$tag.b]=${r[b50]} PS[$tag.b]=${r[bps]} PS[$tag.d]=${r[dps]}
	d=${r[dps]}
	{
		echo "| $name | (a) raw TPM2_Sign, key loaded | ${r[a50]} | ${r[a95]} | ${r[aps]} | 1.00 | $(ratio "${r[aps]}" "$d") |"
		echo "| $name | module's TPM layer, per operation | ${r[p50]} | ${r[p95]} | ${r[pps]} | $(ratio "${r[p50]}" "${r[a50]}") | $(ratio "${r[pps]}" "$d") |"
		echo "| $name | module's TPM layer, key kept loaded | ${r[k50]} | ${r[k95]} | ${r[kps]} | $(ratio "${r[k50]}" "${r[a50]}") | $(ratio "${r[kps]}" "$d") |"
		echo "| $name | (b) module, C host | ${r[b50]} | ${r[b95]} | ${r[bps]} | $(ratio "${r[b50]}" "${r[a50]}") | **$(ratio "${r[bps]}" "$d")** |"
		echo "| $name | (c) module via p11-kit server + client | ${r[c50]} | ${r[c95]} | ${r[cps]} | $(ratio "${r[c50]}" "${r[a50]}") | $(ratio "${r[cps]}" "$d") |"
		echo "| $name | (d) tpm2-pkcs11, C host | ${r[d50]} | ${r[d95]} | ${r[dps]} | $(ratio "${r[d50]}" "${r[a50]}") | 1.00 |"
	} >>"$rows"
	unset r
done

# --- steps of one operation ------------------------------------------------------
say "steps of an operation (go test -bench Step ./tpm/)"
steps=$work/steps.txt
go test -run '^$' -bench 'BenchmarkStep$' -benchtime "$([ -n "${BENCH_QUICK:-}" ] && echo 50x || echo 500x)" ./tpm/ >"$steps"
# bench_ns FILE NAME: ns/op of benchmark NAME (without its -GOMAXPROCS suffix).
bench_ns() { awk -v n="$2" '{ name = $1; sub(/-[0-9]+$/, "", name) } name == n { print $3 }' "$1"; }
step() { awk -v v="$(bench_ns "$steps" "BenchmarkStep/$1")" 'BEGIN{ if (v == "") print "-"; else printf "%d", v/1000 }'; }
declare -A ST
for s in connect lock primary+flush load+flush/ecdsa contextload+flush/ecdsa sign/ecdsa load+flush/rsa contextload+flush/rsa sign/rsa; do
	ST[$s]=$(step "$s")
done

# --- loading and the first signature ----------------------------------------------
say "loading, first signature, pkcs11-tool"
declare -A LD
loadtimes() { # MODULE -> LD[load] LD[init] LD[rss0] LD[rss1] as medians
	local i out l=() n=() r0=() r1=()
	for i in $(seq "$RUNS"); do
		out=" $("$host" "$1" loadtime)"
		l+=("$(echo "$out" | field load_us)") n+=("$(echo "$out" | field init_us)")
		r0+=("$(echo "$out" | field rss_kb_before)") r1+=("$(echo "$out" | field rss_kb_after)")
	done
	LD[load]=$(printf '%s\n' "${l[@]}" | median) LD[init]=$(printf '%s\n' "${n[@]}" | median)
	LD[rss0]=$(printf '%s\n' "${r0[@]}" | median) LD[rss1]=$(printf '%s\n' "${r1[@]}" | median)
}
declare -A FS
firsts() { # MODULE MECH [PIN] -> FS[...] medians of each phase
	local i out k pin=() vals
	[ -n "${3:-}" ] && pin=(--pin "$3")
	vals=$work/first.txt
	: >"$vals"
	for i in $(seq "$RUNS"); do
		"$host" "$1" first --mech "$2" "${pin[@]}" | grep '^first ' >>"$vals"
	done
	for k in load_us init_us open_us find_us sign1_us sign2_us total_us; do
		FS[$k]=$(while read -r line; do echo " $line" | field "$k"; done <"$vals" | median)
	done
}
tool_ms() { # MODULE LABEL MECH INPUT [PIN] -> median ms of whole pkcs11-tool runs
	local i t0 t1 pin=() all=()
	[ -n "${5:-}" ] && pin=(--login --pin "$5")
	for i in $(seq "$RUNS"); do
		t0=$(now_us)
		pkcs11-tool --module "$1" "${pin[@]}" --sign --label "$2" -m "$3" -i "$4" -o "$work/sig" >/dev/null 2>&1
		t1=$(now_us)
		all+=($(((t1 - t0) / 1000)))
	done
	printf '%s\n' "${all[@]}" | median
}
head -c 32 /dev/urandom >"$work/hash32"
echo "signed by pkcs11-tool" >"$work/msg"

loadtimes "$module"
ours_load=${LD[load]} ours_init=${LD[init]} ours_rss0=${LD[rss0]} ours_rss1=${LD[rss1]}
firsts "$module" ecdsa
declare -A OF
for k in "${!FS[@]}"; do OF[$k]=${FS[$k]}; done
ours_tool_ec=$(tool_ms "$module" ec ECDSA "$work/hash32")
ours_tool_rsa=$(tool_ms "$module" rsa SHA256-RSA-PKCS "$work/msg")
t2p_load=- t2p_init=- t2p_rss0=- t2p_rss1=- t2p_tool_ec=- t2p_tool_rsa=-
declare -A TF=([load_us]=- [init_us]=- [open_us]=- [find_us]=- [sign1_us]=- [sign2_us]=- [total_us]=-)
if [ -n "$T2P" ]; then
	loadtimes "$T2P"
	t2p_load=${LD[load]} t2p_init=${LD[init]} t2p_rss0=${LD[rss0]} t2p_rss1=${LD[rss1]}
	firsts "$T2P" ecdsa "$PIN"
	for k in "${!FS[@]}"; do TF[$k]=${FS[$k]}; done
	t2p_tool_ec=$(tool_ms "$T2P" ec ECDSA "$work/hash32" "$PIN")
	t2p_tool_rsa=$(tool_ms "$T2P" rsa SHA256-RSA-PKCS "$work/msg" "$PIN")
	flush_tpm
fi

# --- what listing p11-kit modules costs ---------------------------------------------
say "p11-kit list-modules with and without the module"
list_ms() { # MODULE-DIR: median ms of p11-kit list-modules with DIR as the module directory
	local script="for i in \$(seq $RUNS); do t0=\$(date +%s%N); p11-kit list-modules >/dev/null 2>&1; t1=\$(date +%s%N); echo \$(((t1-t0)/1000)); done"
	if [ "$(id -u)" -eq 0 ]; then
		# p11-kit reads only the system directories for root: show it
		# another one in a mount namespace of its own.
		unshare -m bash -c "mount --bind '$1' /usr/share/p11-kit/modules && $script" | median
	else
		HOME=$work/home-$(basename "$1") bash -c "$script" | median
	fi
}
list_base=- list_ours=-
if command -v p11-kit >/dev/null && { [ "$(id -u)" -ne 0 ] || command -v unshare >/dev/null; }; then
	mkdir -p "$work/mods-base" "$work/mods-ours"
	if [ "$(id -u)" -eq 0 ]; then
		cp /usr/share/p11-kit/modules/*.module "$work/mods-base/" 2>/dev/null || true
		cp "$work/mods-base/"* "$work/mods-ours/" 2>/dev/null || true
		printf 'module: %s\ncritical: no\n' "$module" >"$work/mods-ours/simple-tpm-pk11.module"
	else
		mkdir -p "$work/home-mods-ours/.config/pkcs11/modules" "$work/home-mods-base"
		printf 'module: %s\ncritical: no\n' "$module" >"$work/home-mods-ours/.config/pkcs11/modules/simple-tpm-pk11.module"
	fi
	if list_base=$(list_ms "$work/mods-base") && list_ours=$(list_ms "$work/mods-ours"); then
		list_base=$((list_base / 1000)).$(printf '%03d' $((list_base % 1000)) | cut -c1) list_ours=$((list_ours / 1000)).$(printf '%03d' $((list_ours % 1000)) | cut -c1)
	else
		list_base=- list_ours=-
	fi
	flush_tpm
fi

# --- ssh logins -------------------------------------------------------------------
say "ssh logins (go test -bench SSHLogin ./tests/)"
sshb=$work/ssh.txt
if go test -run '^$' -bench 'BenchmarkSSHLogin$' -benchtime "$SSH_RUNS" -timeout 20m ./tests/ >"$sshb" 2>&1; then
	ssh_ms() { awk -v v="$(bench_ns "$sshb" "BenchmarkSSHLogin/$1")" 'BEGIN{ if (v == "") print "-"; else printf "%.1f", v/1e6 }'; }
	ssh_file=$(ssh_ms file-key) ssh_mod=$(ssh_ms module) ssh_kit=$(ssh_ms p11-kit-server) ssh_bridge=$(ssh_ms bridge)
else
	say "ssh benchmark failed:"
	tail -n 20 "$sshb" >&2
	ssh_file=- ssh_mod=- ssh_kit=- ssh_bridge=-
fi

# --- scaling --------------------------------------------------------------------------
say "scaling over threads and processes"
scale=$work/scale.md
{
	echo "| threads | per s |     | processes | per s (total) | first finish ÷ last |"
	echo "|---|---|---|---|---|---|"
	for t in 1 2 4 8; do
		read -r _ _ tps < <(sign "$module" ecdsa $((N_EC / t)) "$t")
		p=$((t <= 4 ? t : 0))
		pps="" share=""
		if [ "$p" -gt 0 ]; then
			start=$(now_us)
			procs=()
			for i in $(seq "$p"); do
				("$host" "$module" sign --mech ecdsa --count $((N_EC / p)) | grep '^signed=' >"$work/proc$i.txt"; now_us >"$work/proc$i.end") &
				procs+=($!)
			done
			for q in "${procs[@]}"; do wait "$q"; done
			end=$(now_us)
			pps=$(awk "BEGIN{printf \"%.1f\", $N_EC/(($end-$start)/1e6)}")
			# Starvation shows as one process finishing long before the
			# others: 1.00 means they all finished together.
			first_end=$(cat "$work"/proc*.end | sort -n | head -n1)
			share=$(awk "BEGIN{printf \"%.2f\", ($first_end-$start)/($end-$start)}")
			rm -f "$work"/proc*.txt "$work"/proc*.end
		fi
		echo "| $t | $tps |     | $([ "$p" -gt 0 ] && echo "$p") | $pps | $share |"
	done
} >"$scale"

soak_run

# --- targets ------------------------------------------------------------------------------
key_load=$((ST[primary+flush] + ST[load+flush/ecdsa]))
first_budget=$((key_load + ${P50[ec.b]} + 5000))
targets=$work/targets.md
{
	echo "| target | measured | |"
	echo "|---|---|---|"
	for tag in ec rsa-pkcs sha256; do
		want=1.5
		[ "$tag" = ec ] && want=2.5
		got=$(ratio "${PS[$tag.b]}" "${PS[$tag.d]}")
		if [ "$got" = - ]; then v="tpm2-pkcs11 not measured"; else v=$(verdict "$got >= $want"); fi
		echo "| module C_Sign throughput ≥ ${want}× tpm2-pkcs11 ($tag) | ${got}× | $v |"
	done
	for tag in ec rsa-pkcs; do
		want=1.15
		[ "$tag" = ec ] && want=1.5
		got=$(ratio "${P50[$tag.k]}" "${P50[$tag.a]}")
		echo "| key kept loaded ≤ ${want}× raw TPM2_Sign ($tag, TPM layer) | ${got}× | $(verdict "$got <= $want") |"
	done
	li=$((ours_load + ours_init))
	echo "| load + C_Initialize < 10 ms, no TPM traffic | $(awk "BEGIN{printf \"%.1f\", $li/1000}") ms | $(verdict "$li < 10000") |"
	echo "| first signature of a fresh process ≤ key load + steady signature + 5 ms ($((first_budget / 1000)).$(((first_budget % 1000) / 100)) ms) | $(awk "BEGIN{printf \"%.1f\", ${OF[total_us]}/1000}") ms | $(verdict "${OF[total_us]} <= $first_budget") |"
	rss=$((ours_rss1 - ours_rss0))
	echo "| RSS added < 15 MB | $(awk "BEGIN{printf \"%.1f\", $rss/1024}") MB | $(verdict "$rss < 15360") |"
	if [ "$ssh_bridge" != - ]; then
		dd=$(awk "BEGIN{printf \"%.1f\", $ssh_bridge-$ssh_file}")
		echo "| ssh login through the bridge within 10 ms of a file key | +$dd ms | $(verdict "$dd <= 10") |"
	fi
} >"$targets"

t2p_version=$(dpkg-query -W -f='${Version}' libtpm2-pkcs11-1 2>/dev/null || echo "not installed")
doc=$work/doc.md
{
	echo "# Performance"
	echo
	echo "Measured by \`make bench\` on $(date -u +%Y-%m-%d) in one run: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1),"
	echo "$(swtpm --version | head -n1 | sed 's/,.*//'), $(go version | cut -d' ' -f3), tpm2-pkcs11 $t2p_version, p11-kit $(dpkg-query -W -f='${Version}' p11-kit 2>/dev/null || echo unknown), $(ssh -V 2>&1 | cut -d, -f1)."
	echo "Single thread unless said. Ratios are from this run, so they hold on a busy machine where the absolute figures do not."
	echo
	echo "## Targets"
	echo
	cat "$targets"
	echo
	echo "A ratio within a few percent of 1.00 (or just below it) is run-to-run noise: the kept-loaded path"
	echo "sends the same single TPM2_Sign as the raw measurement."
	echo
	echo "## One signature, layer by layer"
	echo
	echo "(a) is the floor: TPM2_Sign on a key already loaded, over an open connection. The module's TPM layer"
	echo "per operation is what it does on swtpm and /dev/tpm0 (no resource manager: connect, lock, reload the key's"
	echo "saved context, sign, flush, disconnect); with the key kept loaded it is the /dev/tpmrm0 path, run here on"
	echo "swtpm by one process. (b) adds PKCS#11 and cgo: a C program dlopens the module and loops C_Sign. (c) adds"
	echo "p11-kit's RPC. (d) is tpm2-pkcs11 (provisioned with tpm2_ptool on the same swtpm, user PIN logged in) through"
	echo "the same C program. The last column is throughput divided by tpm2-pkcs11's for the same mechanism."
	echo
	cat "$rows"
	echo
	echo "## What each step costs on swtpm"
	echo
	echo "From \`go test -bench Step ./tpm/\` (median of many; loads include the flush that undoes them):"
	echo
	echo "| step | µs | when |"
	echo "|---|---|---|"
	echo "| connect + disconnect (unix socket) | ${ST[connect]} | every operation without a resource manager; once per process on /dev/tpmrm0 |"
	echo "| lock (flock) | ${ST[lock]} | every operation on swtpm; never on a device |"
	echo "| storage primary (CreatePrimary, ECC P-256) | ${ST[primary+flush]} | the first signature with a key in a process, then never (the key's context is saved) |"
	echo "| load key from its file (ECDSA / RSA) | ${ST[load+flush/ecdsa]} / ${ST[load+flush/rsa]} | with the primary, the first time |"
	echo "| reload the saved key context (ECDSA / RSA) | ${ST[contextload+flush/ecdsa]} / ${ST[contextload+flush/rsa]} | every later operation without a resource manager |"
	echo "| TPM2_Sign (ECDSA / RSA-2048) | ${ST[sign/ecdsa]} / ${ST[sign/rsa]} | always: the floor |"
	echo
	echo "On /dev/tpmrm0 the connection, the primary and the key stay for the life of the process, so a signature is"
	echo "one TPM2_Sign (the kernel's resource manager swaps the key in and out around it, which costs the same for"
	echo "every program). A key with a PIN also reloads its parent's saved context per operation, for the salted"
	echo "HMAC session that carries the PIN."
	echo
	echo "## Loading and whole processes"
	echo
	echo "| | simple-tpm-pk11 | tpm2-pkcs11 |"
	echo "|---|---|---|"
	echo "| dlopen + C_GetFunctionList, µs | $ours_load | $t2p_load |"
	echo "| C_Initialize, µs | $ours_init | $t2p_init |"
	echo "| RSS before → after loading and C_Initialize, kB | $ours_rss0 → $ours_rss1 | $t2p_rss0 → $t2p_rss1 |"
	echo "| first signature of a fresh process (from before dlopen), µs | ${OF[total_us]} | ${TF[total_us]} |"
	echo "| … of which slot, session and login, µs | ${OF[open_us]} | ${TF[open_us]} |"
	echo "| … of which C_FindObjects and the public keys, µs | ${OF[find_us]} | ${TF[find_us]} |"
	echo "| … of which the first C_SignInit + C_Sign, µs | ${OF[sign1_us]} | ${TF[sign1_us]} |"
	echo "| the second C_Sign in that process, µs | ${OF[sign2_us]} | ${TF[sign2_us]} |"
	echo "| whole \`pkcs11-tool --sign\`, ECDSA, ms | $ours_tool_ec | $t2p_tool_ec |"
	echo "| whole \`pkcs11-tool --sign\`, SHA256-RSA-PKCS, ms | $ours_tool_rsa | $t2p_tool_rsa |"
	echo
	echo "Medians of $RUNS fresh processes each. tpm2-pkcs11 logs in with its user PIN (its keys need one); ours have none."
	echo
	echo "\`p11-kit list-modules\` (which loads, initializes and lists every registered module): $list_base ms without"
	echo "simple-tpm-pk11 registered, $list_ours ms with it (median of $RUNS)."
	echo
	echo "## ssh login to a loopback sshd"
	echo
	echo "| key | ms per login |"
	echo "|---|---|"
	echo "| ECDSA P-256 key file | $ssh_file |"
	echo "| TPM key through the module (PKCS11Provider) | $ssh_mod |"
	echo "| TPM key through p11-kit server on a local socket (p11-kit-client.so) | $ssh_kit |"
	echo "| TPM key through the bridge (p11-kit-client.so on a socket forwarded by ssh -R) | $ssh_bridge |"
	echo
	echo "From \`go test -bench SSHLogin ./tests/\` ($SSH_RUNS); each login runs \`echo\` on the server. The forward"
	echo "rides on an ssh session, as stpm-bridge ssh's does. A bare \`ssh -N -R\` forward is much slower (about"
	echo "+160 ms per login here): without a session sshd leaves Nagle's algorithm on, and p11-kit calls that"
	echo "cross the forward wait for delayed ACKs."
	echo
	echo "## Scaling (ECDSA through the module)"
	echo
	echo "One process with several threads, then several processes of one thread each, on one swtpm. The TPM"
	echo "serializes; what matters is that nothing is lost beyond that and no process starves."
	echo
	cat "$scale"
	echo
	echo "## Long run: memory and goroutines"
	echo
	echo "$N_SOAK ECDSA P-256 signatures in one process (\`p11host soak\`, one thread, one session, each verified),"
	echo "sampled every $((N_SOAK / 10)). Reproduce with \`BENCH_SOAK_ONLY=1 N_SOAK=$N_SOAK bash scripts/bench.sh\`;"
	echo "\`STPM_LONG=1 go test -run TestModuleSoak ./tests/\` checks the same run (at most 8 MB of growth after the"
	echo "first tenth, no more goroutines at the end)."
	echo
	soak_print
} >"$doc"
cp "$doc" docs/PERFORMANCE.md
cat "$doc"
