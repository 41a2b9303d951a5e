package tests

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/swtpmtest"
)

// TestCLI runs the scripts in testdata/cli. Each script gets two fresh
// swtpm processes: $TPM (TCP, also in $SIMPLE_TPM_PK11_TPM and, for
// openssl's tpm2 provider, $TPM2OPENSSL_TCTI) and $TPM_B (unix socket), with
// $TCTI and $TCTI_B for tpm2-tools.
func TestCLI(t *testing.T) {
	for _, tool := range []string{"openssl", "ssh-keygen", "tpm2_getcap", "setpriv"} {
		need(t, tool)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/cli",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			tb := env.T().(testing.TB)
			a := swtpmtest.Start(tb, swtpmtest.Options{TCP: true})
			b := swtpmtest.Start(tb, swtpmtest.Options{})
			a.RelaxLockout(tb)
			env.Setenv("PATH", binDir+string(os.PathListSeparator)+env.Getenv("PATH"))
			env.Setenv("HOME", env.WorkDir)
			env.Setenv("TPM", a.Spec)
			env.Setenv("TCTI", a.TCTI)
			env.Setenv("SIMPLE_TPM_PK11_TPM", a.Spec)
			env.Setenv("TPM2OPENSSL_TCTI", a.TCTI)
			env.Setenv("TPM_B", b.Spec)
			env.Setenv("TCTI_B", b.TCTI)
			env.Setenv("BIN", binDir)
			if v := os.Getenv("GORACE"); v != "" {
				env.Setenv("GORACE", v)
			}
			return nil
		},
		// [tpm2provider]: openssl has the tpm2 provider (Debian's
		// tpm2-openssl). Scripts that need it skip without it, except
		// in CI, where make test has installed it.
		Condition: func(cond string) (bool, error) {
			if cond != "tpm2provider" {
				return false, fmt.Errorf("unknown condition %q", cond)
			}
			// Loading the provider needs a TPM; its file is enough here.
			out, err := command(t, "openssl", "version", "-m").Output()
			if err != nil {
				return false, fmt.Errorf("openssl version -m: %v", err)
			}
			dir, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "MODULESDIR: ")
			if !ok {
				return false, fmt.Errorf("openssl version -m: unexpected %q", out)
			}
			if _, err := os.Stat(filepath.Join(strings.Trim(dir, `"`), "tpm2.so")); err != nil {
				if os.Getenv("CI") != "" {
					return false, fmt.Errorf("openssl has no tpm2 provider (%v): install tpm2-openssl (scripts/install-deps.sh)", err)
				}
				return false, nil
			}
			return true, nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mode":      cmdMode,
			"chmod":     cmdChmod,
			"samelines": cmdSameLines,
			"exits":     cmdExits,
		},
	})
}

// exits CODE PROG [ARGS...] runs PROG like exec and checks its exit
// status; standard output and error are kept for stdout/stderr checks.
func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits CODE PROG [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exits: %v", err)
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("exits: %v", err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}

// mode FILE PERM checks a file's permission bits.
func cmdMode(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: mode FILE PERM")
	}
	want, err := strconv.ParseUint(args[1], 8, 32)
	if err != nil {
		ts.Fatalf("mode: %v", err)
	}
	fi, err := os.Stat(ts.MkAbs(args[0]))
	if err != nil {
		ts.Fatalf("mode: %v", err)
	}
	if got := fi.Mode().Perm(); (uint64(got) == want) == neg {
		ts.Fatalf("%s has mode %o, want %s%o", args[0], got, map[bool]string{true: "not ", false: ""}[neg], want)
	}
}

// chmod PERM FILE sets permission bits.
func cmdChmod(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || neg {
		ts.Fatalf("usage: chmod PERM FILE")
	}
	perm, err := strconv.ParseUint(args[0], 8, 32)
	if err != nil {
		ts.Fatalf("chmod: %v", err)
	}
	ts.Check(os.Chmod(ts.MkAbs(args[1]), os.FileMode(perm)))
}

// samelines A B checks that two files hold the same lines in any order
// (e.g. ssh-keygen -D output against the .pub files).
func cmdSameLines(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: samelines A B")
	}
	read := func(name string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(strings.TrimSpace(ts.ReadFile(name)), "\n") {
			m[strings.TrimSpace(l)]++
		}
		return m
	}
	a, b := read(args[0]), read(args[1])
	same := fmt.Sprint(a) == fmt.Sprint(b)
	if same == neg {
		ts.Fatalf("%s and %s: same lines = %v", args[0], args[1], same)
	}
}
