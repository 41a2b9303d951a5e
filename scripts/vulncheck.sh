#!/usr/bin/env bash
# Runs govulncheck against the Go vulnerability database. The database
# is built from the golang.org/x/vulndb module (served by the Go module
# proxy) with its own gendb tool, so no other site needs to be reachable.
# Raise VULNDB to the newest version now and then: `go list -m -versions`
# does not list pseudo-versions; take the one `go get golang.org/x/vulndb@latest` picks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VULNDB=${VULNDB:-golang.org/x/vulndb@v0.0.0-20261105234957-e22db6528018}
GOVULNCHECK=${GOVULNCHECK:-golang.org/x/vuln/cmd/govulncheck@v1.9.0}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=$(go mod download -json "$VULNDB" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$src" ] || { echo "vulncheck: cannot download $VULNDB" >&2; exit 1; }
# gendb reads the reports from a git repository.
cp -r "$src" "$work/vulndb"
chmod -R u+w "$work/vulndb"
git -C "$work/vulndb" init -q
git -C "$work/vulndb" add -A
git -C "$work/vulndb" -c user.name=vulncheck -c user.email=vulncheck@localhost commit -q -m snapshot
(cd "$work/vulndb" && go run ./cmd/gendb -repo . -out "$work/db" 2>"$work/gendb.log") || {
	cat "$work/gendb.log" >&2
	exit 1
}
go run "$GOVULNCHECK" -db "file://$work/db" "${@:-./...}"
