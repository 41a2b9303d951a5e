package bridge

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/p11kit"
)

// StableRemoteSocket is where "stpm-bridge ssh" links the forwarded
// socket on the remote host, and what "remote-setup" registers with
// p11-kit there.
func StableRemoteSocket() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", &Error{Msg: "cannot find the home directory: " + err.Error(), Err: err}
	}
	return filepath.Join(home, ".simple-tpm-pk11", forwardedName), nil
}

// RemoteSetup registers the forwarded token with p11-kit on this (remote)
// host: a module file with "remote: unix:path=~/.simple-tpm-pk11/forwarded.sock",
// so programs using p11-kit-proxy.so see the workstation's token while a
// bridge session is open. It returns the module file written and the
// stable socket path.
func RemoteSetup(force bool) (file, sock string, err error) {
	sock, err = StableRemoteSocket()
	if err != nil {
		return "", "", err
	}
	if err := privateDir(filepath.Dir(sock)); err != nil {
		return "", "", err
	}
	dir, err := p11kit.UserModuleDir()
	if err != nil {
		return "", "", err
	}
	file, err = p11kit.Register(dir, p11kit.ModuleFile{
		Name:     remoteModule,
		Comment:  "simple-tpm-pk11: the workstation's TPM token, forwarded by stpm-bridge ssh",
		Remote:   "unix:path=" + sock,
		Critical: new(bool),
	}, force)
	return file, sock, err
}

// RemoteUnsetup removes what RemoteSetup wrote.
func RemoteUnsetup() (string, bool, error) { return unregister(remoteModule) }

// unregister removes this user's module file NAME.module if we wrote it,
// and returns its path and whether it was there.
func unregister(name string) (string, bool, error) {
	dir, err := p11kit.UserModuleDir()
	if err != nil {
		return "", false, err
	}
	removed, err := p11kit.Unregister(dir, name)
	return filepath.Join(dir, name+".module"), removed, err
}

// Register tells p11-kit about the module for this user (for root, for
// the whole system: p11-kit ignores root's user directory), so
// p11-kit-proxy.so and "p11-kit list-modules" include it.
func Register(module string, force bool) (string, error) {
	module, err := FindModule(module)
	if err != nil {
		return "", err
	}
	dir, err := p11kit.UserModuleDir()
	if err != nil {
		return "", err
	}
	return p11kit.Register(dir, p11kit.ModuleFile{
		Name:     moduleFileName,
		Comment:  "simple-tpm-pk11: TPM 2.0 keys for ssh",
		Module:   module,
		Critical: new(bool),
	}, force)
}

// Unregister removes what Register wrote.
func Unregister() (string, bool, error) { return unregister(moduleFileName) }

// RemoteForwardLine is the ssh_config line that does what "stpm-bridge
// ssh" does, for users of plain ssh.
func RemoteForwardLine(remoteHome string) (string, error) {
	local, err := DefaultSocket()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("RemoteForward %s/.simple-tpm-pk11/%s %s", remoteHome, forwardedName, local), nil
}
