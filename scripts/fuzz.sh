#!/usr/bin/env bash
# Runs each fuzz target given as PKG:Target for FUZZTIME (make fuzz).
#
# A finding always writes its input to PKG/testdata/fuzz/Target/ and
# fails. Go 1.26's fuzzing coordinator can also fail a clean run with a
# bare "context deadline exceeded" when -fuzztime ends while a worker is
# busy (golang/go#75804, fixed in Go 1.27): that result, with no input
# written and nothing else reported, is run again instead of failing the
# build, up to twice (on two CPUs it comes once in a dozen runs or so);
# anything else fails.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
go=${GO:-go}
fuzztime=${FUZZTIME:-15s}

corpus_files() { find "$1" -type f 2>/dev/null | sort; }

run_one() {
	local pkg=$1 target=$2 log=$3
	"$go" test "./$pkg/" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" 2>&1 | tee "$log"
	return "${PIPESTATUS[0]}"
}

# coordinator_race: the log's only failure is the coordinator's deadline.
coordinator_race() {
	local log=$1
	grep -q '^    context deadline exceeded$' "$log" &&
		! grep -q 'Failing input written to' "$log" &&
		! grep -Eq '^\s+[a-z_]+_test\.go:[0-9]+:|^panic:|fuzz: minimizing' "$log"
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "$@"; do
	pkg=${t%%:*} target=${t#*:}
	dir=$pkg/testdata/fuzz/$target
	echo "fuzz $t for $fuzztime"
	before=$(corpus_files "$dir")
	for attempt in 1 2 3; do
		if run_one "$pkg" "$target" "$log"; then
			continue 2
		fi
		if [ "$(corpus_files "$dir")" != "$before" ] || ! coordinator_race "$log" || [ "$attempt" = 3 ]; then
			echo "fuzz: $t failed" >&2
			exit 1
		fi
		echo "fuzz: $t: the fuzzing coordinator's end-of-run race (golang/go#75804), no input found; running it again"
	done
done
