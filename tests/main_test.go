// Package tests holds the end-to-end tests: the built commands against real
// swtpm processes, openssl with the tpm2 provider, tpm2-tools and OpenSSH
// tools. Each test starts the services it needs in a temporary directory
// and stops them by PID.
package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binDir holds the commands and the module built for this test run. It
// is world-readable so tests can run them as an unprivileged user.
var binDir string

// modulePath is the built libsimple-tpm-pk11.so.
var modulePath string

var commands = []string{"stpm-keygen", "stpm-sign", "stpm-verify", "stpm-bridge", "stpm-doctor"}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "stpm-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintln(os.Stderr, "cleanup:", err)
		}
	}()
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binDir = dir
	// Under go test -race the commands are built with the race detector
	// too, so the tests that drive them check them for races as well. The
	// module cannot be: the race runtime must start with the process and
	// fails to map its memory when a C host dlopens it. Its PKCS#11 logic
	// runs under the race detector in package p11's own concurrent tests.
	var race []string
	if raceEnabled {
		race = []string{"-race"}
		// A race-built program sleeps a second at exit by default, to
		// let late reports out; hundreds of runs make that minutes.
		if os.Getenv("GORACE") == "" {
			if err := os.Setenv("GORACE", "atexit_sleep_ms=0"); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
	}
	args := append([]string{"build"}, race...)
	args = append(args, "-o", dir+"/")
	for _, c := range commands {
		args = append(args, "../cmd/"+c)
	}
	build := exec.Command(goTool(), args...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the commands:", err)
		return 1
	}
	modulePath = filepath.Join(dir, "libsimple-tpm-pk11.so")
	build = exec.Command(goTool(), "build", "-buildmode=c-shared", "-o", modulePath, "../module")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the module:", err)
		return 1
	}
	return m.Run()
}

// goTool finds the go command: on PATH, or where the Go tarball installs
// it (make adds that to PATH, a bare "go test" may not have it).
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// need returns the path of a tool the test cannot do without. In CI a
// missing tool fails the test; elsewhere it skips it.
func need(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found: run scripts/install-deps.sh", name)
		}
		t.Skipf("%s not found: run scripts/install-deps.sh", name)
	}
	return p
}
