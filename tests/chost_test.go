package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// p11host (tests/c/p11host.c) loads a PKCS#11 module with dlopen and
// drives it: "info", "sign", "misuse" and "fork" modes, documented at the
// top of the C file. Tests use it instead of loading the module into the
// test binary, where the module's Go runtime would be a second one in the
// process, which can hang.
//
// Exit status: 0 success; 1 the module misbehaved; 2 usage error or the
// module could not be loaded; 3 the module crashed or hung inside a
// misuse case.
var chost struct {
	once sync.Once
	path string
	err  error
}

// chostTimeout bounds one run of p11host.
const chostTimeout = 2 * time.Minute

// buildCHost compiles p11host once per test process (into the directory
// TestMain made for the commands) and returns its path. It needs gcc and
// the OpenSSL headers (libssl-dev).
func buildCHost(t testing.TB) string {
	t.Helper()
	gcc := need(t, "gcc")
	chost.once.Do(func() {
		dir := binDir
		if dir == "" {
			d, err := os.MkdirTemp("", "stpm-p11host-")
			if err != nil {
				chost.err = err
				return
			}
			dir = d
		}
		out := filepath.Join(dir, "p11host")
		cmd := command(t, gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-pthread",
			"-I", filepath.Join("..", "module"),
			"-o", out, filepath.Join("c", "p11host.c"), "-ldl", "-lcrypto")
		if b, err := cmd.CombinedOutput(); err != nil {
			chost.err = fmt.Errorf("building p11host (needs gcc and libssl-dev): %v\n%s", err, b)
			return
		}
		chost.path = out
	})
	if chost.err != nil {
		t.Fatal(chost.err)
	}
	return chost.path
}

// runCHost runs p11host with args (module path, mode, options) and env
// added to the test's environment (for example "P11HOST_PIN=1234", or
// the module's own configuration variables), and returns its standard
// output. err is non-nil when p11host exits non-zero or runs longer than
// two minutes; it wraps the *exec.ExitError (errors.As gives the exit
// status) and includes standard error.
func runCHost(t testing.TB, env []string, args ...string) (stdout string, err error) {
	t.Helper()
	host := buildCHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), chostTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, host, args...)
	cmd.Env = append(os.Environ(), env...)
	// Its own process group, so a timeout also ends the child that
	// "fork" mode starts.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	name := "p11host " + strings.Join(args, " ")
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		err = fmt.Errorf("%s: timed out after %v: %w\nstdout:\n%s\nstderr:\n%s",
			name, chostTimeout, err, out.String(), errOut.String())
	case err != nil:
		err = fmt.Errorf("%s: %w\nstderr:\n%s", name, err, errOut.String())
	case errOut.Len() > 0:
		t.Logf("%s: stderr:\n%s", name, errOut.String())
	}
	return out.String(), err
}

// TestCHostWithoutModule builds p11host and checks that a module that does
// not exist is a clean error (status 2, dlopen's message), not a crash.
func TestCHostWithoutModule(t *testing.T) {
	out, err := runCHost(t, nil, "/nonexistent.so", "info")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("want exit status 2, got %v", err)
	}
	if !strings.Contains(err.Error(), "dlopen /nonexistent.so") {
		t.Errorf("error does not name dlopen and the path: %v", err)
	}
	if out != "" {
		t.Errorf("unexpected output: %q", out)
	}

	_, err = runCHost(t, nil, "/nonexistent.so", "no-such-mode")
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(err.Error(), "usage:") {
		t.Fatalf("unknown mode: want usage and exit status 2, got %v", err)
	}
}
