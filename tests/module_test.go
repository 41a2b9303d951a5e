package tests

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestModuleThreads: 8 threads × 1000 signatures in one process through
// the C host, RSA and ECDSA keys in turn, a new session for every
// signature (so sessions open and close on all threads at once), every
// signature verified with OpenSSL.
func TestModuleThreads(t *testing.T) {
	tk := newToken(t, false)
	out, err := runCHost(t, tk.env, modulePath, "sign", "--threads", "8", "--count", "1000", "--session-each")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^signed=8000 verified=8000 failed=0 `).MatchString(out) {
		t.Fatalf("want 8000 verified signatures:\n%s", out)
	}
	t.Log(lastLine(out, "signed="))
	tk.noTransient(t)
}

// TestModuleThreadsPIN: the same with a login and a PIN key among the keys.
func TestModuleThreadsPIN(t *testing.T) {
	tk := newToken(t, true)
	out, err := runCHost(t, tk.env, modulePath, "sign", "--threads", "8", "--count", "50", "--pin", testPIN)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^signed=400 verified=400 failed=0 `).MatchString(out) {
		t.Fatalf("want 400 verified signatures:\n%s", out)
	}
	tk.noTransient(t)
}

// TestModuleMisuse: NULL pointers, short buffers, bad handles, wrong
// order, absurd lengths: each gets its precise CK_RV and nothing crashes.
func TestModuleMisuse(t *testing.T) {
	tk := newToken(t, true)
	out, err := runCHost(t, tk.env, modulePath, "misuse", "--pin", testPIN)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !regexp.MustCompile(`(?m)^misuse ok=\d+ fail=0 skip=0$`).MatchString(out) {
		t.Fatalf("misuse summary:\n%s", lastLine(out, "misuse "))
	}
	t.Log(lastLine(out, "misuse "))
}

// TestModuleFork: a child forked after the module was loaded is answered
// from C and never hangs; the parent keeps working.
func TestModuleFork(t *testing.T) {
	tk := newToken(t, false)
	out, err := runCHost(t, tk.env, modulePath, "fork")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"fork result=ok", "child finalize rv=0x00000000", "child initialize rv=0x00000005"} {
		if !strings.Contains(out, want) {
			t.Errorf("fork: no %q in\n%s", want, out)
		}
	}
}

// TestModuleTPMRestart: the TPM goes away under a loaded module: the next
// signature fails with CKR_DEVICE_ERROR and a log line naming the TPM;
// once the TPM is back the next one works, without reloading the module.
func TestModuleTPMRestart(t *testing.T) {
	tk := newToken(t, false)
	h := startHost(t, tk.env, modulePath, "steps")
	step := func(cmdline, want string) {
		t.Helper()
		h.send(cmdline)
		if got := h.next(time.Minute); !strings.HasPrefix(got, want) {
			t.Fatalf("%s: got %q, want %q; stderr:\n%s", cmdline, got, want, h.stderr.String())
		}
	}
	if got := h.next(time.Minute); got != "steps ready" {
		t.Fatalf("start: %q", got)
	}
	step("sign", "step sign rv=0x00000000 name=CKR_OK stage=C_Sign verified=1")
	if err := tk.tpm.Stop(); err != nil {
		t.Fatal(err)
	}
	step("sign", "step sign rv=0x00000030 name=CKR_DEVICE_ERROR")
	tk.tpm.Restart(t)
	step("sign", "step sign rv=0x00000000 name=CKR_OK stage=C_Sign verified=1")
	h.send("quit")
	if got := h.next(time.Minute); got != "finalize rv=0x00000000 name=CKR_OK" {
		t.Errorf("finalize: %q", got)
	}
	if err := h.wait(); err != nil {
		t.Errorf("p11host: %v", err)
	}
	stderr := h.stderr.String()
	if !strings.Contains(stderr, "C_Sign: CKR_DEVICE_ERROR: key ") || !strings.Contains(stderr, "swtpm not reachable at "+tk.tpm.Spec) {
		t.Errorf("no log line naming the lost TPM:\n%s", stderr)
	}
	if strings.Count(stderr, "\n") != 1 {
		t.Errorf("want exactly one log line:\n%s", stderr)
	}
}

func lastLine(out, prefix string) string {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], prefix) {
			return lines[i]
		}
	}
	return ""
}

// TestModuleNoGoroutineLeak: after a thousand signatures on four threads,
// each with its own session, the module's Go runtime runs no more
// goroutines than after a handful (the count is logged at C_Finalize
// with debug on).
func TestModuleNoGoroutineLeak(t *testing.T) {
	tk := newToken(t, false)
	count := func(n string) int {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), chostTimeout)
		defer cancel()
		cmd := hostCommand(ctx, t, withEnv(tk.env, "SIMPLE_TPM_PK11_DEBUG=1"), nil, modulePath, "sign", "--threads", "4", "--count", n, "--session-each")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v\n%s", err, tail(stderr.String(), 20))
		}
		t.Log(lastLine(string(out), "signed="))
		m := regexp.MustCompile(`finalize: (\d+) goroutines`).FindStringSubmatch(stderr.String())
		if m == nil {
			t.Fatalf("no goroutine count in the debug log:\n%s", tail(stderr.String(), 10))
		}
		g, err := strconv.Atoi(m[1])
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	few, many := count("5"), count("250")
	if many > few+2 {
		t.Errorf("%d goroutines after 1000 signatures, %d after 20: a leak", many, few)
	}
}
