package tests

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemo runs scripts/demo.sh (make demo) with the commands built for
// this test run and a swtpm of its own (never the machine's TPM): it
// makes keys, signs and verifies, logs in with ssh, and logs in again
// from the "remote host" through stpm-bridge; its last lines show sshd
// accepting the TPM key for both logins.
func TestDemo(t *testing.T) {
	for _, tool := range []string{"bash", "swtpm", "ssh", "openssl", "p11-kit"} {
		need(t, tool)
	}
	clientModule(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../scripts/demo.sh")
	cmd.Env = append(cleanEnv(), "HOME="+t.TempDir(), "TMPDIR="+t.TempDir(), "STPM_DEMO_SWTPM=1", "STPM_DEMO_BIN="+binDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo.sh: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "\n== using a throwaway swtpm (pid ") || !strings.Contains(string(out), "\n  logged in with the TPM key\n") {
		t.Errorf("demo.sh did not use its swtpm or did not log in directly:\n%s", out)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) < 6 {
		t.Fatalf("demo.sh printed too little:\n%s", out)
	}
	last := lines[len(lines)-6:]
	accepted := func(typ string) *regexp.Regexp {
		return regexp.MustCompile(`^  sshd: Accepted publickey for \S+ from 127\.0\.0\.1 port \d+ ssh2: ` + typ + ` (SHA256:\S+)$`)
	}
	direct := accepted("ECDSA").FindStringSubmatch(last[1])
	outer := accepted("ED25519").FindStringSubmatch(last[2])
	forwarded := accepted("ECDSA").FindStringSubmatch(last[3])
	if last[0] != "  forwarded login: signed by the workstation TPM" || direct == nil || outer == nil || forwarded == nil ||
		direct[1] != forwarded[1] || last[4] != "" || last[5] != "== done: the private keys never left the TPM" {
		t.Errorf("the demo's last lines are not the direct and the forwarded login with the TPM key:\n%q", last)
	}
}

// TestCrypto11SignExample builds examples/crypto11-sign and runs it the
// way its documentation says: against a p11-kit server exporting the
// module, reached through p11-kit-client.so (the module never enters the
// example's Go process). Its signatures verify with the keys' .pub files.
func TestCrypto11SignExample(t *testing.T) {
	need(t, "p11-kit")
	client := clientModule(t)
	tk := newToken(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	exe := filepath.Join(t.TempDir(), "crypto11-sign")
	if out, err := exec.CommandContext(ctx, goTool(), "build", "-o", exe, "../examples/crypto11-sign").CombinedOutput(); err != nil {
		t.Fatalf("building examples/crypto11-sign: %v\n%s", err, out)
	}
	ps := startServer(t, tk.env)
	data := []byte("signed by crypto11 through p11-kit\n")
	file := tk.write(t, "data", data)
	digest := sha256.Sum256(data)
	for _, name := range []string{"rsa", "ec256"} {
		cmd := exec.CommandContext(ctx, exe, "--module", client, "--label", name, file)
		cmd.Env = append(cleanEnv(), "HOME="+t.TempDir(), "P11_KIT_SERVER_ADDRESS="+ps.Address)
		var errb strings.Builder
		cmd.Stderr = &errb
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("crypto11-sign --label %s: %v\n%s", name, err, errb.String())
		}
		sig, err := hex.DecodeString(strings.TrimSpace(string(out)))
		if err != nil {
			t.Fatalf("crypto11-sign --label %s printed %q: %v", name, out, err)
		}
		switch pub := tk.publicKey(t, name).(type) {
		case *rsa.PublicKey:
			if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
				t.Errorf("%s: the signature does not verify: %v", name, err)
			}
		case *ecdsa.PublicKey:
			if !ecdsa.VerifyASN1(pub, digest[:], sig) {
				t.Errorf("%s: the signature does not verify", name)
			}
		default:
			t.Fatalf("%s: unexpected key type %T", name, pub)
		}
	}
	tk.noTransient(t)
}
