package bridge

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/config"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/p11kit"
)

// ServeOptions configures the local server.
type ServeOptions struct {
	Socket string // "" means DefaultSocket
	Module string // "" means FindModule
	// TPM is the TPM spec the module uses (SIMPLE_TPM_PK11_TPM in the
	// server's environment); "" leaves the environment's or the config's.
	TPM string
}

// tokenURI selects our token for p11-kit server: only it is exported.
func tokenURI() string {
	label := "simple-tpm-pk11"
	if c, err := config.LoadDefault(); err == nil && c != nil {
		if c.Label != "" {
			label = c.Label
		}
		c.Zero()
	}
	return "pkcs11:token=" + url.PathEscape(label)
}

// prepare resolves the socket and module and makes sure the socket can
// be used: its directory private, no other server on it, no stale file.
func (o *ServeOptions) prepare() error {
	var err error
	if o.Socket == "" {
		if o.Socket, err = DefaultSocket(); err != nil {
			return err
		}
		if err := privateDir(filepath.Dir(o.Socket)); err != nil {
			return err
		}
	} else {
		if o.Socket, err = filepath.Abs(o.Socket); err != nil {
			return err
		}
		if err := privateDir(filepath.Dir(o.Socket)); err != nil {
			return err
		}
	}
	if o.Module, err = FindModule(o.Module); err != nil {
		return err
	}
	if _, err := p11kit.FindTool(); err != nil {
		return err
	}
	return SocketFree(o.Socket)
}

// SocketFree refuses a socket that a server listens on already. A socket
// nobody listens on (left by a server that died) is fine: p11kit.StartServer
// replaces it.
func SocketFree(socket string) error {
	if !p11kit.Listening(socket) {
		return nil
	}
	return &Error{Msg: fmt.Sprintf("a server already listens on %q", socket),
		Advice: "use it (export P11_KIT_SERVER_ADDRESS=" + p11kit.UnixAddress(socket) +
			`), or stop it: eval "$(stpm-bridge serve -k)" in the shell that started it, or systemctl --user stop stpm-bridge.service`}
}

// StartServer starts p11-kit server for the module on the socket, as a
// child of this process.
func StartServer(ctx context.Context, o ServeOptions) (*p11kit.Server, error) {
	if err := o.prepare(); err != nil {
		return nil, err
	}
	env := os.Environ()
	if o.TPM != "" {
		// exec keeps the last of duplicate names.
		env = append(env, EnvTPM+"="+o.TPM)
	}
	return p11kit.StartServer(ctx, p11kit.ServerOptions{
		Module: o.Module,
		Socket: o.Socket,
		URI:    tokenURI(),
		Env:    env,
		Stderr: os.Stderr,
	})
}
