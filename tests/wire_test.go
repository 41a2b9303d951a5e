package tests

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/sshtest"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/swtpmtest"
)

// wireTap is a unix socket in front of a swtpm that records every byte
// its clients send.
type wireTap struct {
	sent lockedBuffer
	wg   sync.WaitGroup
}

// startWireTap listens on a socket of its own and relays each connection
// to the swtpm socket target. It returns the spec clients use.
func startWireTap(t *testing.T, target string) (*wireTap, string) {
	t.Helper()
	path := filepath.Join(sshtest.SocketDir(t), "tap.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	w := &wireTap{}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
		w.wg.Wait()
	})
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return // closed by the cleanup
			}
			s, err := net.Dial("unix", target)
			if err != nil {
				t.Errorf("wire tap: %v", errors.Join(err, c.Close()))
				continue
			}
			w.wg.Add(2)
			go func() {
				defer w.wg.Done()
				// Client to TPM, recorded; then tell the TPM we are done.
				if _, err := io.Copy(io.MultiWriter(s, &w.sent), c); err != nil && !errors.Is(err, net.ErrClosed) {
					t.Logf("wire tap: %v", err)
				}
				if err := s.(*net.UnixConn).CloseWrite(); err != nil {
					t.Logf("wire tap: %v", err)
				}
			}()
			go func() {
				defer w.wg.Done()
				if _, err := io.Copy(c, s); err != nil && !errors.Is(err, net.ErrClosed) {
					t.Logf("wire tap: %v", err)
				}
				if err := errors.Join(c.Close(), s.Close()); err != nil && !errors.Is(err, net.ErrClosed) {
					t.Logf("wire tap: %v", err)
				}
			}()
		}
	}()
	return w, "swtpm:path=" + path
}

// TestPINNotOnTheWire records every byte sent to a real swtpm while keys
// with a PIN are made under an owner hierarchy with a password, signed
// with by the commands (right and wrong PIN) and by the module after
// C_Login: neither the PIN nor the owner password ever crosses in clear.
func TestPINNotOnTheWire(t *testing.T) {
	need(t, "pkcs11-tool")
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	sw.RelaxLockout(t)
	tap, spec := startWireTap(t, strings.TrimPrefix(sw.Spec, "swtpm:path="))
	const pin, wrong, owner = "pin-8e21-SECRET", "pin-77aa-WRONG", "owner-5d0c-SECRET"
	sw.Tool(t, "tpm2_changeauth", "-c", "owner", owner)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pinFile, wrongFile, ownerFile := write("pin", pin+"\n"), write("wrong", wrong+"\n"), write("owner", owner+"\n")
	data := write("data.txt", "data\n")
	key := filepath.Join(dir, "k.key")
	run := func(wantOK bool, name string, args ...string) {
		t.Helper()
		if _, err := stpm(t, spec, dir, name, args...); (err == nil) != wantOK {
			t.Fatalf("%s %v: %v", name, args, err)
		}
	}
	run(true, "stpm-keygen", "-t", "ecdsa", "-o", key, "--pin-file", pinFile, "--srk-pin-file", ownerFile)
	run(true, "stpm-sign", "-k", key, "-f", data, "--pin-file", pinFile, "--srk-pin-file", ownerFile, "-o", filepath.Join(dir, "sig"))
	run(false, "stpm-sign", "-k", key, "-f", data, "--pin-file", wrongFile, "--srk-pin-file", ownerFile)

	cfg := write("config", "tpm "+spec+"\nkey k.key\nsrk_pin "+owner+"\n")
	cmd := command(t, "pkcs11-tool", "--module", modulePath, "--login", "--pin", pin,
		"--sign", "--mechanism", "ECDSA-SHA256", "--input-file", data, "--output-file", filepath.Join(dir, "p11.sig"))
	cmd.Env = append(cleanEnv(), "HOME="+dir, "SIMPLE_TPM_PK11_CONFIG="+cfg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pkcs11-tool --sign: %v\n%s", err, out)
	}
	sent := []byte(tap.sent.String())
	if len(sent) < 1000 {
		t.Fatalf("recorded only %d bytes: the commands did not go through the tap", len(sent))
	}
	for _, secret := range []string{pin, wrong, owner} {
		if bytes.Contains(sent, []byte(secret)) {
			t.Errorf("%q crossed to the TPM in clear", secret)
		}
	}
	sw.Tool(t, "tpm2_changeauth", "-c", "owner", "-p", owner)
}
