package p11kit

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// alive reports whether pid runs (a zombie waiting for its new parent to
// reap it does not count).
func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// "pid (comm) S ...": the state follows the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// TestServer: the trust module exported with StartServer is visible
// through p11-kit-client.so; every connection runs the module in an
// exec'd p11-kit-remote; Stop ends the server and removes the socket
// while a client is still connected.
func TestServer(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "p11.sock")
	s := startTrust(t, sock, "")
	if s.Socket != sock || s.Address != "unix:path="+sock || s.PID <= 0 {
		t.Errorf("server %+v", s)
	}
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o711 {
		t.Errorf("socket mode %v, want socket 0711 (p11-kit sets umask 066)", fi.Mode())
	}
	if !SocketAlive(sock) || !listening(sock) {
		t.Error("socket not alive")
	}
	if out := pkcs11ToolList(t, s.Address); !strings.Contains(out, "System Trust") {
		t.Errorf("pkcs11-tool -L does not show System Trust:\n%s", out)
	}

	// The server itself never maps the module.
	maps, err := os.ReadFile("/proc/" + strconv.Itoa(s.PID) + "/maps")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(maps), "p11-kit-trust.so") {
		t.Error("the server process has the module loaded")
	}
	// A connection gets its own exec'd p11-kit-remote, which loads it.
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var remote int
	for deadline := time.Now().Add(5 * time.Second); remote == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, c := range children(t, s.PID) {
			pid, err := strconv.Atoi(c)
			if err != nil {
				t.Fatal(err)
			}
			exe, err := os.Readlink("/proc/" + c + "/exe")
			if err == nil && filepath.Base(exe) == "p11-kit-remote" {
				maps, err := os.ReadFile("/proc/" + c + "/maps")
				if err == nil && strings.Contains(string(maps), "p11-kit-trust.so") {
					remote = pid
				}
			}
		}
	}
	if remote == 0 {
		t.Fatal("no p11-kit-remote child with the module loaded while a client is connected")
	}

	start := time.Now()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Stop took %v: SIGTERM did not work", d)
	}
	select {
	case <-s.Done():
	default:
		t.Error("Done not closed after Stop")
	}
	if err := s.Wait(); err != nil {
		t.Errorf("Wait after Stop: %v", err)
	}
	if alive(s.PID) {
		t.Errorf("pid %d still alive", s.PID)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	// The connected client's p11-kit-remote outlives the server and ends
	// when the client hangs up.
	if !alive(remote) {
		t.Log("p11-kit-remote ended with the server (p11-kit behaviour changed?)")
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); alive(remote) && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
	}
	if alive(remote) {
		t.Errorf("p11-kit-remote %d still alive after its client hung up", remote)
	}
}

// TestServerAddressEncoding: p11-kit server percent-encodes the path in
// its address exactly like UnixAddress, and the client decodes it.
func TestServerAddressEncoding(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a b~c")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	s := startTrust(t, sock, "pkcs11:token=System%20Trust")
	if s.Address != UnixAddress(sock) || !strings.Contains(s.Address, "a%20b%7Ec") {
		t.Errorf("address %q, UnixAddress %q", s.Address, UnixAddress(sock))
	}
	if p, err := ParseUnixAddress(s.Address); err != nil || p != sock {
		t.Errorf("ParseUnixAddress: %q, %v", p, err)
	}
	if out := pkcs11ToolList(t, s.Address); !strings.Contains(out, "System Trust") {
		t.Errorf("pkcs11-tool -L:\n%s", out)
	}
}

func TestServerTokenFilter(t *testing.T) {
	s := startTrust(t, filepath.Join(t.TempDir(), "s.sock"), "pkcs11:token=No%20such%20token")
	out, err := pkcs11ToolListErr(t, s.Address)
	if strings.Contains(out, "System Trust") || !strings.Contains(out, "No slots") {
		t.Errorf("the filter let System Trust through (%v):\n%s", err, out)
	}
}

// TestServerStaleSocket: a socket file nobody listens on is replaced.
func TestServerStaleSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if SocketAlive(sock) {
		t.Fatal("stale socket reported alive")
	}
	s := startTrust(t, sock, "")
	if !SocketAlive(sock) {
		t.Error("server not listening")
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestServerRefuses: a live socket, a regular file, a missing directory,
// a relative path, a missing module or a bad URI fail before p11-kit
// server could do harm, and leave the path alone.
func TestServerRefuses(t *testing.T) {
	needTool(t, "p11-kit")
	mod := trustModule(t)
	dir := t.TempDir()
	ctx := context.Background()

	live := filepath.Join(dir, "live.sock")
	l, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = StartServer(ctx, ServerOptions{Module: mod, Socket: live})
	if !errors.Is(err, ErrSocketInUse) {
		t.Errorf("live socket: %v, want ErrSocketInUse", err)
	}
	if !SocketAlive(live) {
		t.Error("the live socket was disturbed")
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := StartServer(ctx, ServerOptions{Module: mod, Socket: file}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: %v", err)
	}
	if data, err := os.ReadFile(file); err != nil || string(data) != "keep me" {
		t.Errorf("regular file changed: %q, %v", data, err)
	}

	_, err = StartServer(ctx, ServerOptions{Module: mod, Socket: filepath.Join(dir, "nodir", "s.sock")})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "nodir") || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing directory: %v", err)
	}
	for name, o := range map[string]ServerOptions{
		"relative":   {Module: mod, Socket: "s.sock"},
		"too long":   {Module: mod, Socket: "/" + strings.Repeat("x", 200)},
		"no module":  {Socket: filepath.Join(dir, "a.sock")},
		"bad module": {Module: filepath.Join(dir, "nope.so"), Socket: filepath.Join(dir, "b.sock")},
		"bad uri":    {Module: mod, Socket: filepath.Join(dir, "c.sock"), URI: "token=x"},
	} {
		if s, err := StartServer(ctx, o); err == nil {
			t.Errorf("%s: started", name)
			if err := s.Stop(); err != nil {
				t.Error(err)
			}
		}
	}
}

// TestServerKilled: a server that dies (SIGKILL, no cleanup of its own)
// closes Done; Wait reports it; Stop removes the socket it left.
func TestServerKilled(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	s := startTrust(t, sock, "")
	if err := syscall.Kill(s.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after SIGKILL")
	}
	if err := s.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Wait: %v", err)
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("SIGKILL should leave the socket file: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left after Stop: %v", err)
	}
}

// fakeTool puts a fake p11-kit first in PATH.
func fakeTool(t *testing.T, script string) {
	t.Helper()
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "p11-kit"), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
}

// TestServerStartFailure: a server that exits at start gives an error
// with its stderr; one that reports another PID is refused and killed.
func TestServerStartFailure(t *testing.T) {
	needTool(t, "sh")
	mod := trustModule(t)
	dir := t.TempDir()
	fakeTool(t, "echo 'p11-kit: something broke' >&2\nexit 3\n")
	var stderr lockedBuffer
	_, err := StartServer(context.Background(), ServerOptions{Module: mod, Socket: filepath.Join(dir, "a.sock"), Stderr: &stderr})
	if err == nil || !strings.Contains(err.Error(), "something broke") || !strings.Contains(err.Error(), "status 3") {
		t.Errorf("err = %v", err)
	}
	if !strings.Contains(stderr.String(), "something broke") {
		t.Errorf("stderr not forwarded: %q", stderr.String())
	}

	fakeTool(t, `echo "P11_KIT_SERVER_ADDRESS=unix:path=$5; export P11_KIT_SERVER_ADDRESS;"
echo "P11_KIT_SERVER_PID=1; export P11_KIT_SERVER_PID;"
exec sleep 30
`)
	start := time.Now()
	_, err = StartServer(context.Background(), ServerOptions{Module: mod, Socket: filepath.Join(dir, "b.sock")})
	if err == nil || !strings.Contains(err.Error(), "reports pid 1") {
		t.Errorf("err = %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("refusing took %v", time.Since(start))
	}

	// Cancelled while waiting for the address.
	fakeTool(t, "exec sleep 30\n")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := StartServer(ctx, ServerOptions{Module: mod, Socket: filepath.Join(dir, "c.sock")}); !strings.Contains(fmtErr(err), "deadline") {
		t.Errorf("cancelled start: %v", err)
	}
}

func fmtErr(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestEnvLines(t *testing.T) {
	// Byte for byte what p11-kit 0.24.1 prints with -s and -c.
	if got, want := EnvLines("unix:path=/tmp/a%20b/s.sock", 3993, false),
		"P11_KIT_SERVER_ADDRESS=unix:path=/tmp/a%20b/s.sock; export P11_KIT_SERVER_ADDRESS;\n"+
			"P11_KIT_SERVER_PID=3993; export P11_KIT_SERVER_PID;\n"; got != want {
		t.Errorf("sh: %q", got)
	}
	if got, want := EnvLines("unix:path=/tmp/a%20b/s.sock", 3989, true),
		"setenv P11_KIT_SERVER_ADDRESS unix:path=/tmp/a%20b/s.sock;\nsetenv P11_KIT_SERVER_PID 3989;\n"; got != want {
		t.Errorf("csh: %q", got)
	}
	// And readHello reads the sh form back.
	h := readHello(strings.NewReader(EnvLines("unix:path=/x", 42, false)))
	if h.err != nil || h.addr != "unix:path=/x" || h.pid != 42 {
		t.Errorf("readHello: %+v", h)
	}
}

func TestUnixAddress(t *testing.T) {
	// p11-kit 0.24.1 printed this for the path below.
	const path = "/tmp/p11exp/x~y:z,w=q+r@%\u00e9/s.sock"
	const want = "unix:path=/tmp/p11exp/x%7Ey%3Az%2Cw%3Dq%2Br%40%25%C3%A9/s.sock"
	if got := UnixAddress(path); got != want {
		t.Errorf("UnixAddress = %q, want %q", got, want)
	}
	if got, err := ParseUnixAddress(want); err != nil || got != path {
		t.Errorf("ParseUnixAddress = %q, %v", got, err)
	}
	for _, bad := range []string{"tcp:x", "unix:path=/a%2", "unix:path=/a%zz"} {
		if _, err := ParseUnixAddress(bad); err == nil {
			t.Errorf("ParseUnixAddress(%q) accepted it", bad)
		}
	}
}
