package p11kit

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/testutil"
)

// missing skips the test, or fails it in CI, when a tool is absent.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

func needTool(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			missing(t, "%s not installed: %v", n, err)
		}
	}
}

func needFile(t *testing.T, find func() (string, error)) string {
	t.Helper()
	p, err := find()
	if err != nil {
		var nf *NotFoundError
		if errors.As(err, &nf) {
			missing(t, "%v; %s", err, nf.Hint())
		}
		t.Fatal(err)
	}
	return p
}

func trustModule(t *testing.T) string {
	t.Helper()
	return needFile(t, func() (string, error) { return FindPKCS11Module("p11-kit-trust.so", "p11-kit-modules") })
}

// sharedDir is a fresh directory that other users can traverse.
func sharedDir(t *testing.T) string { return testutil.SharedDir(t, "p11kit-") }

// startTrust exports p11-kit's trust module on a socket in dir.
func startTrust(t *testing.T, sock, uri string) *Server {
	t.Helper()
	needTool(t, "p11-kit")
	mod := trustModule(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := StartServer(ctx, ServerOptions{Module: mod, Socket: sock, URI: uri, Stderr: &lockedBuffer{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// pkcs11ToolList runs "pkcs11-tool -L" through p11-kit-client.so against
// the server at addr.
func pkcs11ToolList(t *testing.T, addr string) string {
	t.Helper()
	out, err := pkcs11ToolListErr(t, addr)
	if err != nil {
		t.Fatalf("pkcs11-tool -L: %v\n%s", err, out)
	}
	return out
}

// pkcs11ToolListErr is pkcs11ToolList for a listing that may fail
// (pkcs11-tool -L exits 1 when there are no slots).
func pkcs11ToolListErr(t *testing.T, addr string) (string, error) {
	t.Helper()
	needTool(t, "pkcs11-tool")
	client := needFile(t, FindClientModule)
	cmd := exec.Command("pkcs11-tool", "--module", client, "-L")
	cmd.Env = append(os.Environ(), "P11_KIT_SERVER_ADDRESS="+addr)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// children lists the child processes of pid.
func children(t *testing.T, pid int) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "task", strconv.Itoa(pid), "children"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(data))
}

// lockedBuffer is an io.Writer safe for the stderr goroutine.
type lockedBuffer = testutil.LockedBuffer
