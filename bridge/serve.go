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
	// A socket nobody listens on (left by a server that died) is
	// replaced by p11kit.StartServer; a live one is another server's.
	if p11kit.Listening(o.Socket) {
		return &Error{Msg: fmt.Sprintf("a server already listens on %q", o.Socket),
			Advice: "use it (P11_KIT_SERVER_ADDRESS=" + p11kit.UnixAddress(o.Socket) + "), or stop it first"}
	}
	return nil
}

// StartServer starts p11-kit server for the module on the socket, as a
// child of this process.
func StartServer(ctx context.Context, o ServeOptions) (*p11kit.Server, error) {
	if err := o.prepare(); err != nil {
		return nil, err
	}
	return p11kit.StartServer(ctx, p11kit.ServerOptions{
		Module: o.Module,
		Socket: o.Socket,
		URI:    tokenURI(),
		Env:    os.Environ(),
		Stderr: os.Stderr,
	})
}
