package bridge

import (
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
	return filepath.Join(home, homeSubdir, forwardedName), nil
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

// RemoteForwardLines are the ssh_config lines for the workstation that do
// what "stpm-bridge ssh" does, for users of plain ssh: the remote half is
// the stable socket under remoteHome (this host's home directory), the
// local half where "stpm-bridge serve" listens by default on the
// workstation. That path is only known there, so it is written for ssh
// to expand: ssh_config(5) expands ${VAR} from ssh's environment and %d
// (the local home directory) in RemoteForward's local path. The first
// line is for a workstation with XDG_RUNTIME_DIR (any systemd login), the
// second for one without.
func RemoteForwardLines(remoteHome string) (withRuntimeDir, withoutRuntimeDir string) {
	remote := filepath.Join(remoteHome, homeSubdir, forwardedName)
	return "RemoteForward " + remote + " ${XDG_RUNTIME_DIR}/" + runtimeSubdir + "/" + socketName,
		"RemoteForward " + remote + " %d/" + homeSubdir + "/" + socketName
}
