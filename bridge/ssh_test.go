package bridge

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestSplitSSHArgs(t *testing.T) {
	for _, tc := range []struct {
		args          []string
		opts          []string
		host          string
		command       []string
		wantErrSubstr string
	}{
		{args: []string{"host"}, host: "host"},
		{args: []string{"-v", "host", "ls", "-l"}, opts: []string{"-v"}, host: "host", command: []string{"ls", "-l"}},
		{args: []string{"-p", "22", "-o", "BatchMode=yes", "u@h", "true"}, opts: []string{"-p", "22", "-o", "BatchMode=yes"}, host: "u@h", command: []string{"true"}},
		{args: []string{"-vp22", "h"}, opts: []string{"-vp22"}, host: "h"},
		{args: []string{"-vp", "22", "h"}, opts: []string{"-vp", "22"}, host: "h"},
		{args: []string{"-A", "-i", "k", "--", "h", "cmd"}, opts: []string{"-A", "-i", "k"}, host: "h", command: []string{"cmd"}},
		{args: []string{"-p"}, wantErrSubstr: "ssh option -p needs an argument"},
		{args: []string{"-v"}, wantErrSubstr: "no host given"},
		{args: nil, wantErrSubstr: "no host given"},
		{args: []string{"-h"}, wantErrSubstr: "help requested"},
		{args: []string{"-v", "--help", "h"}, wantErrSubstr: "help requested"},
		{args: []string{"-i", "-h", "h"}, opts: []string{"-i", "-h"}, host: "h"}, // an identity file named -h
		{args: []string{"h", "--help"}, host: "h", command: []string{"--help"}},  // the remote command's
	} {
		opts, host, command, err := splitSSHArgs(tc.args)
		if tc.wantErrSubstr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstr) {
				t.Errorf("%q: err %v, want %q", tc.args, err, tc.wantErrSubstr)
			}
			continue
		}
		if err != nil || host != tc.host || !sameStrings(opts, tc.opts) || !sameStrings(command, tc.command) {
			t.Errorf("%q: got %q %q %q %v", tc.args, opts, host, command, err)
		}
	}
}

func sameStrings(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
}

// TestRemoteScript runs the remote side locally with sh: the command sees
// the address, the stable link is made when ~/.simple-tpm-pk11 exists and
// removed afterwards with the socket, and the exit status is kept.
func TestRemoteScript(t *testing.T) {
	home := t.TempDir()
	if err := os.Mkdir(filepath.Join(home, ".simple-tpm-pk11"), 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "it's a sock")
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(home, ".simple-tpm-pk11", forwardedName)
	for _, tc := range []struct {
		command string
		status  int
	}{
		{`echo "$P11_KIT_SERVER_ADDRESS"; readlink "$HOME/.simple-tpm-pk11/forwarded.sock"; exit 3`, 3},
		{`echo "$P11_KIT_SERVER_ADDRESS"; readlink "$HOME/.simple-tpm-pk11/forwarded.sock"`, 0},
		{`echo "$P11_KIT_SERVER_ADDRESS"; readlink "$HOME/.simple-tpm-pk11/forwarded.sock"; false`, 1},
	} {
		if err := os.WriteFile(sock, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "-c", remoteScript(sock, tc.command))
		cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
		out, err := cmd.Output()
		status := 0
		if ee, ok := err.(*exec.ExitError); ok {
			status = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		want := "unix:path=" + sock + "\n" + sock + "\n"
		if string(out) != want || status != tc.status {
			t.Errorf("%s: got %q status %d, want %q status %d", tc.command, out, status, want, tc.status)
		}
		for _, p := range []string{sock, link} {
			if _, err := os.Lstat(p); !os.IsNotExist(err) {
				t.Errorf("%s: %s not removed after the command: %v", tc.command, p, err)
			}
		}
	}
}

// TestRemoteScriptKeepsRealSockets: when the remote home is the local one
// (a bridge to the same machine, NFS homes), the script must not replace
// anything but its own link, or the forward would loop into itself.
func TestRemoteScriptKeepsRealSockets(t *testing.T) {
	home := t.TempDir()
	dir := filepath.Join(home, ".simple-tpm-pk11")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(dir, forwardedName)
	if err := os.WriteFile(real, []byte("not ours"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", remoteScript(filepath.Join(t.TempDir(), "s.sock"), "true"))
	cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if b, err := os.ReadFile(real); err != nil || string(b) != "not ours" {
		t.Errorf("the file at %s was replaced: %q %v", real, b, err)
	}
	if socketName == forwardedName {
		t.Error("the local socket and the remote link must have different names")
	}
}

// TestRemoteScriptWithoutClient runs the remote side where p11-kit's
// client module is missing (hidden by an empty tmpfs in a private mount
// namespace): the user is told which package to install, in one line, and
// the command still runs and its exit status comes back.
func TestRemoteScriptWithoutClient(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root for a private mount namespace")
		}
		t.Skip("needs root for a private mount namespace")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatal("unshare (util-linux) is missing")
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "s.sock")
	unixSocketFile(t, sock, false)
	if err := os.Chmod(sock, 0o600); err != nil { // as sshd makes it
		t.Fatal(err)
	}
	hide := `for d in /usr/lib/*/pkcs11 /usr/lib64/pkcs11 /usr/lib/pkcs11; do if [ -d "$d" ]; then mount -t tmpfs none "$d" || exit 99; fi; done; exec sh -c "$0"`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", hide,
		remoteScript(sock, "echo ran; exit 3"))
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 || string(out) != "ran\n" {
		t.Errorf("%v, stdout %q; want the command run and its status 3\nstderr:\n%s", err, out, stderr.String())
	}
	want := regexp.MustCompile(`\Astpm-bridge: warning: p11-kit-client\.so not found on ` + regexp.QuoteMeta(host) +
		`: install p11-kit-modules \(Debian, Ubuntu\) or p11-kit-server \(Fedora\)\n\z`)
	if !want.MatchString(stderr.String()) {
		t.Errorf("stderr:\n%s\nwant exactly one line matching %s", stderr.String(), want)
	}
}

// TestRemoteCommandShells runs the command line ssh sends through each
// login shell found here, as sshd would ("$SHELL -c LINE"): a command
// with quotes, "!", "%", a backslash, "$" and a newline arrives intact,
// and its exit status comes back.
func TestRemoteCommandShells(t *testing.T) {
	command := "echo \"a!b 'q' \\\\ $HOME %d\"; printf '%s\\n' \"x\ny\"; exit 3"
	home := t.TempDir()
	want := "a!b 'q' \\ " + home + " %d\nx\ny\n"
	ran := 0
	for _, shell := range []string{"sh", "bash", "dash", "csh", "tcsh", "bsd-csh", "fish", "zsh", "mksh"} {
		path, err := exec.LookPath(shell)
		if err != nil {
			continue
		}
		ran++
		cmd := exec.Command(path, "-c", remoteCommand(filepath.Join(t.TempDir(), "s.sock"), command))
		cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
		out, err := cmd.Output()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 3 || string(out) != want {
			t.Errorf("%s: %v, stdout %q, want status 3 and %q", shell, err, out, want)
		}
	}
	if ran < 2 {
		t.Errorf("only %d shells found", ran)
	}
}

// unixSocketFile leaves a socket file at path: listening (the returned
// listener, closed at cleanup) or, with stale, one nobody listens on.
func unixSocketFile(t *testing.T, path string, stale bool) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	if stale {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Cleanup(func() { l.Close() })
}

// TestRemoteScriptSocketMode: a forwarded socket that sshd made with any
// permission for group or others (a widened StreamLocalBindMask) ends the
// session before the command runs, and is removed; one only its owner can
// use is kept for the command.
func TestRemoteScriptSocketMode(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode    os.FileMode
		refused string // ls's mode column when refused
	}{
		{0o600, ""},
		{0o700, ""},
		{0o200, ""},
		{0o777, "srwxrwxrwx"},
		{0o660, "srw-rw----"},
		{0o602, "srw-----w-"},
		{0o620, "srw--w----"},
	} {
		sock := filepath.Join(t.TempDir(), "s.sock")
		unixSocketFile(t, sock, false)
		if err := os.Chmod(sock, tc.mode); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "-c", remoteScript(sock, `echo ran`))
		cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if tc.refused == "" {
			if err != nil || string(out) != "ran\n" || !strings.Contains(stderr.String(), "p11-kit-client.so") && stderr.Len() != 0 {
				t.Errorf("mode %04o: %v, stdout %q, stderr %q; want the command run", tc.mode, err, out, stderr.String())
			}
			continue
		}
		want := "stpm-bridge: error: the forwarded socket " + sock + " on " + host + " arrived open to other users (mode " + tc.refused +
			"): sshd there has a StreamLocalBindMask wider than 0177\n" +
			"stpm-bridge: hint: ask the administrator of " + host + " to keep StreamLocalBindMask in sshd_config at its default, 0177 (sockets only their owner can use)\n"
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || len(out) != 0 || stderr.String() != want {
			t.Errorf("mode %04o: %v, stdout %q, stderr:\n%s\nwant status 1, no output and:\n%s", tc.mode, err, out, stderr.String(), want)
		}
		if _, err := os.Lstat(sock); !os.IsNotExist(err) {
			t.Errorf("mode %04o: the open socket is still there: %v", tc.mode, err)
		}
	}
}

// TestRemoteScriptStaleSocket: a socket nobody listens on at the stable
// path (left by a plain ssh -R on an sshd without StreamLocalBindUnlink)
// is replaced by the session's link; one that is listened on is kept.
func TestRemoteScriptStaleSocket(t *testing.T) {
	for _, stale := range []bool{true, false} {
		home := t.TempDir()
		if err := os.Mkdir(filepath.Join(home, ".simple-tpm-pk11"), 0o700); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(home, ".simple-tpm-pk11", forwardedName)
		unixSocketFile(t, link, stale)
		sock := filepath.Join(t.TempDir(), "s.sock")
		cmd := exec.Command("sh", "-c", remoteScript(sock, `readlink "$HOME/.simple-tpm-pk11/forwarded.sock" || echo no-link`))
		cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
		out, err := cmd.Output()
		want := sock + "\n"
		if !stale {
			want = "no-link\n"
		}
		if err != nil || string(out) != want {
			t.Errorf("stale %v: %q %v, want %q", stale, out, err, want)
		}
		fi, err := os.Lstat(link)
		if stale && !os.IsNotExist(err) {
			t.Errorf("stale socket: after the session %s is %v %v, want it gone", link, fi, err)
		}
		if !stale && (err != nil || fi.Mode().Type() != os.ModeSocket) {
			t.Errorf("live socket: after the session %s is %v %v, want it kept", link, fi, err)
		}
	}
}

// TestRemoteScriptMakesDir: on a host where the bridge module file was
// written by hand (no remote-setup, so no ~/.simple-tpm-pk11), the
// session makes the directory 0700 and links the forwarded socket there,
// where p11-kit-proxy.so looks; without the module file it makes nothing.
func TestRemoteScriptMakesDir(t *testing.T) {
	for _, tc := range []struct {
		name      string
		moduleDir string // under HOME; "" means no module file
		xdg       bool   // XDG_CONFIG_HOME set to HOME/xdg
	}{
		{"module-file", ".config/pkcs11/modules", false},
		{"xdg-config-home", "xdg/pkcs11/modules", true},
		{"no-module-file", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			if tc.moduleDir != "" {
				dir := filepath.Join(home, tc.moduleDir)
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, remoteModule+".module"), []byte("remote: unix:path="+filepath.Join(home, homeSubdir, forwardedName)+"\ncritical: no\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			sock := filepath.Join(t.TempDir(), "s.sock")
			unixSocketFile(t, sock, false)
			if err := os.Chmod(sock, 0o600); err != nil { // as sshd makes it
				t.Fatal(err)
			}
			cmd := exec.Command("sh", "-c", remoteScript(sock, `readlink "$HOME/.simple-tpm-pk11/forwarded.sock" || echo no-link`))
			cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
			if tc.xdg {
				cmd.Env = append(cmd.Env, "XDG_CONFIG_HOME="+filepath.Join(home, "xdg"))
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			want := sock + "\n"
			if tc.moduleDir == "" {
				want = "no-link\n"
			}
			if err != nil || string(out) != want || strings.Contains(stderr.String(), "mkdir") {
				t.Errorf("%v, stdout %q, stderr %q; want %q", err, out, stderr.String(), want)
			}
			fi, err := os.Lstat(filepath.Join(home, homeSubdir))
			switch {
			case tc.moduleDir == "" && !os.IsNotExist(err):
				t.Errorf("without a module file the session made %s: %v %v", homeSubdir, fi, err)
			case tc.moduleDir != "" && (err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700):
				t.Errorf("%s after the session: %v %v, want a directory with mode 0700", homeSubdir, fi, err)
			}
			if _, err := os.Lstat(filepath.Join(home, homeSubdir, forwardedName)); !os.IsNotExist(err) {
				t.Errorf("the link is still there after the session: %v", err)
			}
		})
	}
}
