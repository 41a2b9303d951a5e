package tests

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/sshtest"
)

// BenchmarkSSHLogin times one ssh login to a loopback sshd (running
// "true") with an ECDSA P-256 key three ways: from a key file, through
// the module (PKCS11Provider), through p11-kit server on a local socket,
// and through the bridge (p11-kit-client.so on a socket forwarded with
// ssh -R to that server). The
// token holds that one key, so no login offers a key the server refuses.
// make bench reports the results.
func BenchmarkSSHLogin(b *testing.B) {
	for _, tool := range []string{"ssh", "ssh-keygen", "p11-kit", sshtest.SSHDPath} {
		need(b, tool)
	}
	tk := newToken(b, false)
	cfg := tk.write(b, "config-ec256", []byte("key ec256.key\n"))
	env := append(tk.env, "SIMPLE_TPM_PK11_CONFIG="+cfg)

	key := filepath.Join(b.TempDir(), "id_ecdsa")
	if out, err := command(b, "ssh-keygen", "-q", "-t", "ecdsa", "-b", "256", "-N", "", "-f", key).CombinedOutput(); err != nil {
		b.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	srv := sshtest.StartServer(b, nil)
	srv.SetAuthorizedKeys(b, []string{readPub(b, key+".pub"), tk.pub(b, "ec256")})

	ps := startServer(b, env)
	// The forward rides on a session, as stpm-bridge ssh's does: sshd
	// turns Nagle's algorithm off (TCP_NODELAY) only for connections
	// with a session, and a bare "ssh -N -R" costs every p11-kit call
	// that crosses it a delayed-ACK stall.
	remote := filepath.Join(sshtest.SocketDir(b), "forwarded.sock")
	fwd := command(b, "ssh", append(srv.SSHArgs("-i", key, "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
		"-R", remote+":"+ps.Socket), "echo forwarding; exec sleep 3600")...)
	fwd.Env = sshtest.Env(b)
	var fwdErr strings.Builder
	fwd.Stderr = &fwdErr
	out, err := fwd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := fwd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := fwd.Process.Kill(); err != nil {
			b.Error(err)
		}
		if err := fwd.Wait(); err == nil {
			b.Error("the forwarding ssh exited before it was stopped")
		}
	})
	// The remote command runs once the forward is set up
	// (ExitOnForwardFailure), and says so.
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "forwarding\n" {
		b.Fatalf("ssh -R: %q, %v\n%s", line, err, fwdErr.String())
	}

	for _, c := range []struct {
		name string
		env  []string
		args []string
	}{
		{"file-key", sshtest.Env(b), srv.SSHArgs("-i", key, "-o", "BatchMode=yes")},
		{"module", tk.sshEnv(b, "SIMPLE_TPM_PK11_CONFIG="+cfg), srv.SSHArgs("-o", "PKCS11Provider="+modulePath, "-o", "BatchMode=yes")},
		{"p11-kit-server", sshtest.Env(b, "P11_KIT_SERVER_ADDRESS="+ps.Address), srv.SSHArgs("-o", "PKCS11Provider="+clientModule(b), "-o", "BatchMode=yes")},
		{"bridge", sshtest.Env(b, "P11_KIT_SERVER_ADDRESS=unix:path="+remote), srv.SSHArgs("-o", "PKCS11Provider="+clientModule(b), "-o", "BatchMode=yes")},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				stdout, stderr, err := sshtest.Run(b, c.env, "ssh", append(c.args, "echo", "in")...)
				if err != nil || strings.TrimSpace(stdout) != "in" {
					b.Fatalf("ssh: %v\n%s\n%s", err, stdout, stderr)
				}
			}
		})
	}
	tk.noTransient(b)
}

func readPub(b *testing.B, path string) string {
	b.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}
