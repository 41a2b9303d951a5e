package tests

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/sshtest"
)

// sshEnv is the environment for ssh, ssh-add and ssh-agent using the
// token: the module finds its config and TPM through it.
func (tk *token) sshEnv(t testing.TB, extra ...string) []string {
	return sshtest.Env(t, append([]string{
		"HOME=" + tk.home,
		"SIMPLE_TPM_PK11_CONFIG=" + tk.path("config"),
		"SIMPLE_TPM_PK11_TPM=" + tk.tpm.Spec,
		"SIMPLE_TPM_PK11_LOG_STDERR=1",
	}, extra...)...)
}

func (tk *token) pub(t testing.TB, name string) string {
	t.Helper()
	data, err := os.ReadFile(tk.path(name + ".key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// TestSSHLogin logs in to a loopback sshd with each key through the
// module, the way users do: PKCS11Provider, BatchMode where no PIN is
// needed, SSH_ASKPASS for the PIN key. A token with a PIN key has
// CKF_LOGIN_REQUIRED, and ssh then asks for the PIN before using any of
// its keys, so the PIN key gets a token of its own here.
func TestSSHLogin(t *testing.T) {
	need(t, "ssh")
	need(t, sshtest.SSHDPath)
	plain, withPIN := newToken(t, false), newToken(t, true)
	srv := sshtest.StartServer(t, nil)
	for _, tc := range []struct {
		name, key string
		opts      []string
		askpass   bool
		logWant   string
	}{
		{"rsa-sha2-512", "rsa", []string{"-o", "PubkeyAcceptedAlgorithms=rsa-sha2-512"}, false, "rsa-sha2-512"},
		{"rsa-sha2-256", "rsa", []string{"-o", "PubkeyAcceptedAlgorithms=rsa-sha2-256"}, false, "rsa-sha2-256"},
		{"ecdsa-p256", "ec256", nil, false, "ecdsa-sha2-nistp256"},
		{"ecdsa-p384", "ec384", nil, false, "ecdsa-sha2-nistp384"},
		{"pin-askpass", "pin", nil, true, "ecdsa-sha2-nistp256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tk := plain
			if tc.askpass {
				tk = withPIN
			}
			srv.SetAuthorizedKeys(t, []string{tk.pub(t, tc.key)})
			env := tk.sshEnv(t)
			opts := append([]string{"-o", "PKCS11Provider=" + modulePath}, tc.opts...)
			if tc.askpass {
				env = append(env, sshtest.Askpass(t, testPIN)...)
			} else {
				opts = append(opts, "-o", "BatchMode=yes")
			}
			before := len(srv.Log())
			stdout, stderr, err := sshtest.Run(t, env, "ssh", append(srv.SSHArgs(opts...), "echo", "logged-in")...)
			if err != nil || strings.TrimSpace(stdout) != "logged-in" {
				t.Fatalf("ssh: %v\nstdout: %s\nstderr: %s\nsshd: %s", err, stdout, stderr, srv.Log()[before:])
			}
			if log := srv.Log()[before:]; !strings.Contains(log, "Accepted publickey") || !strings.Contains(log, tc.logWant) {
				t.Errorf("sshd did not log an accepted %s key:\n%s", tc.logWant, log)
			}
		})
	}
	t.Run("pin-batchmode-refused", func(t *testing.T) {
		srv.SetAuthorizedKeys(t, []string{withPIN.pub(t, "pin")})
		_, stderr, err := sshtest.Run(t, withPIN.sshEnv(t), "ssh",
			append(srv.SSHArgs("-o", "PKCS11Provider="+modulePath, "-o", "BatchMode=yes"), "true")...)
		if err == nil || !strings.Contains(stderr, "pin required") {
			t.Fatalf("BatchMode with a PIN key: %v\n%s", err, stderr)
		}
	})
	plain.noTransient(t)
	withPIN.noTransient(t)
}

// TestSSHForkAfterAuth: ssh -f authenticates with the module, forks, and
// the child (where a Go runtime cannot run) keeps forwarding and exits
// cleanly.
func TestSSHForkAfterAuth(t *testing.T) {
	need(t, "ssh")
	tk := newToken(t, false)
	srv := sshtest.StartServer(t, []string{tk.pub(t, "ec256")})
	port := srv.StartForward(t, tk.sshEnv(t), "-o", "PKCS11Provider="+modulePath, "-o", "BatchMode=yes")
	// The forward leads to sshd itself: its banner proves the tunnel works.
	for i := 0; i < 3; i++ {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
		if err != nil {
			t.Fatalf("forwarded port: %v", err)
		}
		if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		banner, err := bufio.NewReader(c).ReadString('\n')
		if cerr := c.Close(); cerr != nil {
			t.Error(cerr)
		}
		if err != nil || !strings.HasPrefix(banner, "SSH-2.0-") {
			t.Fatalf("through the forward: %q, %v", banner, err)
		}
	}
}

// TestSSHAgent: ssh-agent loads the module (ssh-add -s) and a BatchMode
// login then signs through the agent.
func TestSSHAgent(t *testing.T) {
	need(t, "ssh-agent")
	tk := newToken(t, true)
	srv := sshtest.StartServer(t, []string{tk.pub(t, "rsa"), tk.pub(t, "pin")})
	agent := sshtest.StartAgent(t, tk.sshEnv(t)...)
	env := append(tk.sshEnv(t, agent.Env()...), sshtest.Askpass(t, testPIN)...)
	if _, stderr, err := sshtest.Run(t, env, "ssh-add", "-s", modulePath); err != nil {
		t.Fatalf("ssh-add -s: %v\n%s", err, stderr)
	}
	stdout, stderr, err := sshtest.Run(t, env, "ssh-add", "-L")
	if err != nil {
		t.Fatalf("ssh-add -L: %v\n%s", err, stderr)
	}
	for _, k := range []string{"rsa", "pin"} {
		f := strings.Fields(tk.pub(t, k))
		if !strings.Contains(stdout, f[1]) {
			t.Errorf("agent lacks key %s:\n%s", k, stdout)
		}
	}
	for _, k := range []string{"rsa", "pin"} {
		srv.SetAuthorizedKeys(t, []string{tk.pub(t, k)})
		stdout, stderr, err := sshtest.Run(t, tk.sshEnv(t, agent.Env()...), "ssh",
			append(srv.SSHArgs("-o", "BatchMode=yes"), "echo", "via-agent")...)
		if err != nil || strings.TrimSpace(stdout) != "via-agent" {
			t.Errorf("login with %s through the agent: %v\n%s\n%s", k, err, stdout, stderr)
		}
	}
	tk.noTransient(t)
}
