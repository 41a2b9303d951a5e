// Package bridge makes the workstation's TPM token usable on remote
// hosts: it runs p11-kit server for the module on a private socket and
// forwards that socket over ssh -R, so ssh (or anything using
// p11-kit-client.so) on the remote host signs with the local TPM key.
//
// It is built on package p11kit and knows nothing of TPMs.
package bridge

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Names of the socket and module files.
const (
	socketName = "bridge.sock"
	// forwardedName is the link to the forwarded socket on the remote
	// host. It must differ from socketName: with a home directory shared
	// between the hosts (NFS, or a bridge to the same machine) one name
	// would make the forward lead back into itself.
	forwardedName  = "forwarded.sock"
	moduleFileName = "simple-tpm-pk11"
	// runtimeSubdir is the socket directory's name under XDG_RUNTIME_DIR.
	runtimeSubdir = "simple-tpm-pk11"
	// homeSubdir is the socket directory's name under the home directory
	// (without XDG_RUNTIME_DIR), and where the remote link lives.
	homeSubdir   = ".simple-tpm-pk11"
	remoteModule = "simple-tpm-pk11-bridge"
	// EnvModule overrides where the module is looked for.
	EnvModule = "SIMPLE_TPM_PK11_MODULE"
	// EnvTPM selects the module's TPM (the tpm package's EnvSpec; this
	// package does not speak to TPMs).
	EnvTPM = "SIMPLE_TPM_PK11_TPM"
	// moduleName is the library's file name.
	moduleName = "libsimple-tpm-pk11.so"
)

// Error is a failure with advice for the user.
type Error struct {
	Msg, Advice string
	Err         error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// Hint is the advice, shown as a "hint:" line.
func (e *Error) Hint() string { return e.Advice }

// SocketDir is the private directory of the local socket:
// $XDG_RUNTIME_DIR/simple-tpm-pk11 (a tmpfs that only this user can
// reach, cleaned at logout), or ~/.simple-tpm-pk11 when that is unset.
func SocketDir() (string, error) {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, runtimeSubdir), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", &Error{Msg: "cannot find the home directory: " + err.Error(), Advice: "set XDG_RUNTIME_DIR or HOME", Err: err}
	}
	return filepath.Join(home, homeSubdir), nil
}

// DefaultSocket is where the local server listens unless told otherwise.
func DefaultSocket() (string, error) {
	d, err := SocketDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, socketName), nil
}

// MakeSocketDir makes the socket's directory private (see privateDir)
// before anything is put there, such as the background server's log.
func MakeSocketDir(socket string) error {
	abs, err := filepath.Abs(socket)
	if err != nil {
		return err
	}
	return privateDir(filepath.Dir(abs))
}

// privateDir makes dir (0700) if needed and refuses it when it is not
// ours or anyone but us has any access to it: whoever can replace the
// socket there can stand between ssh and the TPM, and whoever can reach
// the socket can ask the TPM to sign (the socket's own mode is p11-kit's
// business, so the directory is the guard).
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return &Error{Msg: fmt.Sprintf("cannot create the socket directory %q: %v", dir, errors.Unwrap(err)), Err: err}
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return &Error{Msg: fmt.Sprintf("socket directory %q: %v", dir, errors.Unwrap(err)), Err: err}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return &Error{Msg: fmt.Sprintf("socket directory %q is not a directory", dir), Advice: "remove it or choose another socket with -n"}
	case fi.Mode().Perm()&0o077 != 0:
		return &Error{Msg: fmt.Sprintf("socket directory %q is open to other users (mode %04o, want 0700)", dir, fi.Mode().Perm()),
			Advice: fmt.Sprintf("run: chmod 700 %q", dir)}
	case ok && int(st.Uid) != os.Getuid():
		return &Error{Msg: fmt.Sprintf("socket directory %q belongs to another user (uid %d)", dir, st.Uid),
			Advice: "choose a socket in a directory of your own with -n"}
	}
	return nil
}

// FindModule locates libsimple-tpm-pk11.so: the flag, $SIMPLE_TPM_PK11_MODULE,
// beside this program or in ../lib from it, then the usual system places.
func FindModule(flag string) (string, error) {
	var tried []string
	try := func(p string) bool {
		tried = append(tried, p)
		fi, err := os.Stat(p)
		return err == nil && fi.Mode().IsRegular()
	}
	for _, p := range []string{flag, os.Getenv(EnvModule)} {
		if p == "" {
			continue
		}
		abs, err := filepath.Abs(p)
		if err == nil && try(abs) {
			return abs, nil
		}
		if err == nil {
			_, err = os.Stat(abs)
		}
		msg := fmt.Sprintf("no module at %q", p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			msg = fmt.Sprintf("cannot use the module at %q: %v", p, errors.Unwrap(err))
		}
		return "", &Error{Msg: msg, Advice: "build it with make build, or point --module at libsimple-tpm-pk11.so", Err: err}
	}
	var candidates []string
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			dir := filepath.Dir(exe)
			candidates = append(candidates, filepath.Join(dir, moduleName), filepath.Join(dir, "..", "lib", moduleName))
		}
	}
	multi, _ := filepath.Glob("/usr/lib/*/pkcs11/" + moduleName) // a bad pattern is impossible here
	candidates = append(candidates, multi...)
	candidates = append(candidates, "/usr/local/lib/"+moduleName, "/usr/lib/"+moduleName, "/usr/lib64/"+moduleName)
	for _, p := range candidates {
		if try(filepath.Clean(p)) {
			return filepath.Clean(p), nil
		}
	}
	return "", &Error{Msg: "libsimple-tpm-pk11.so not found (tried " + fmt.Sprint(tried) + ")",
		Advice: "install it (make install), or give --module PATH or " + EnvModule}
}
