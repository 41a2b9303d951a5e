package tpm

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// TPM is a handle on one TPM named by a Spec. Creating it does no I/O;
// every operation runs inside Do, which connects, serializes against other
// users of a TPM without a resource manager, and flushes what it loaded.
type TPM struct {
	spec Spec
	// mu serializes operations of this process; the flock serializes
	// processes.
	mu sync.Mutex
	// open replaces dial in tests (the in-process simulator).
	open func() (transport.TPMCloser, error)
	// shared is an already open transport that Do reuses (tests).
	shared transport.TPM

	caps *Caps // guarded by mu

	// keep holds the connection, the parents and the loaded keys for the
	// life of the process (until Close): right for a TPM behind a
	// resource manager, where nobody else waits for our connection and
	// loaded objects cost nothing. Guarded by mu, like what follows.
	keep    bool
	conn    transport.TPMCloser
	parents map[parentID]*Parent
	keys    map[string]*Loaded
	// saved holds the saved contexts of keys signed with per operation
	// (see savedKey). Guarded by mu.
	saved map[string]*savedKey
	// infoMu guards identity; it is taken before mu.
	infoMu   sync.Mutex
	identity *Identity
}

// Open returns a TPM for spec without talking to it. When the default
// device is asked for and the kernel has no resource manager device, the
// raw device is used.
func Open(spec Spec) *TPM {
	if spec.Kind == Device && spec.Fallback && spec.Path == deviceRM {
		if _, err := os.Stat(deviceRM); errors.Is(err, os.ErrNotExist) {
			if _, err := os.Stat(deviceRaw); err == nil {
				spec.Path = deviceRaw
			}
		}
	}
	return &TPM{spec: spec, keep: spec.Kind == Device && strings.HasPrefix(filepath.Base(spec.Path), "tpmrm")}
}

// SetKeepOpen turns keeping the connection and loaded keys on or off (see
// TPM.keep). It is on by default for /dev/tpmrm*. On a TPM without a
// resource manager it blocks every other user for as long as it is held:
// only for a single process that owns the TPM (benchmarks, tests).
func (t *TPM) SetKeepOpen(keep bool) error {
	if !keep {
		if err := t.Close(); err != nil {
			return err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.keep = keep
	return nil
}

// Close flushes what keep mode holds loaded and closes its connection.
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.drop(true)
}

// drop forgets the kept connection; with flush it first unloads the kept
// objects (pointless when the connection is already lost).
func (t *TPM) drop(flush bool) error {
	var errs []error
	if t.conn != nil && flush {
		c := &Conn{tpm: retrying{TPMCloser: t.conn, sleep: time.Sleep}, owner: t}
		for _, l := range t.keys {
			c.track(l.Handle)
		}
		for _, p := range t.parents {
			if p.Handle>>24 == 0x80 {
				c.track(p.Handle)
			}
		}
		errs = append(errs, c.finish(nil))
	}
	if t.conn != nil {
		errs = append(errs, t.conn.Close())
	}
	t.conn, t.parents, t.keys = nil, nil, nil
	return errors.Join(errs...)
}

// FromTransport wraps an open transport (for example the in-process
// simulator). The caller keeps ownership of it.
func FromTransport(t transport.TPM) *TPM {
	return &TPM{spec: Spec{Kind: Device, Path: "(in-process)"}, shared: t}
}

// Spec returns the spec this TPM was opened with.
func (t *TPM) Spec() Spec { return t.spec }

// Conn is one connection to the TPM for the length of an operation.
type Conn struct {
	tpm    transport.TPM
	owner  *TPM
	loaded []tpm2.TPMHandle
}

// Do runs fn with a connection. Transient objects that fn loads through
// Conn are flushed before Do returns, whatever fn returns, so a TPM
// without a resource manager never fills up with our objects.
func (t *TPM) Do(fn func(c *Conn) error) (err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.keep {
		return t.doKept(fn)
	}
	if t.shared != nil {
		c := &Conn{tpm: retrying{TPMCloser: nopCloser{t.shared}, sleep: time.Sleep}, owner: t}
		return c.finish(fn(c))
	}
	if lock, err := t.lock(); err != nil {
		return err
	} else if lock != nil {
		defer func() { err = errors.Join(err, closeLock(lock)) }()
	}
	open := t.open
	if open == nil {
		open = func() (transport.TPMCloser, error) { return dial(t.spec) }
	}
	raw, err := open()
	if err != nil {
		return err
	}
	c := &Conn{tpm: retrying{TPMCloser: raw, sleep: time.Sleep}, owner: t}
	err = c.finish(fn(c))
	if t.spec.Kind != Device && (errors.Is(err, tpm2.TPMRCObjectMemory) || errors.Is(err, tpm2.TPMRCSessionMemory)) {
		// swtpm has no resource manager and serves one client at a time,
		// and we hold the lock: whatever else is loaded was left by a
		// client that died. Unload it and try once more.
		if ferr := c.flushLeftovers(); ferr == nil {
			err = c.finish(fn(c))
		}
	}
	if cerr := raw.Close(); cerr != nil && err == nil {
		err = newErr(ErrUnreachable, cerr, "", "closing TPM connection to %s: %v", t.spec, cerr)
	}
	return err
}

// lock takes the lock that serializes processes on a TPM without a
// resource manager (nil for a device). For a swtpm socket that does not
// exist it gives the connection error instead: no lock file is made next
// to a socket that is not there.
func (t *TPM) lock() (*os.File, error) {
	p := lockPath(t.spec)
	if p == "" {
		return nil, nil
	}
	if t.spec.Kind == SwtpmUnix && t.open == nil {
		if _, err := os.Stat(t.spec.Path); errors.Is(err, os.ErrNotExist) {
			c, err := dial(t.spec)
			if err != nil {
				return nil, err
			}
			// It appeared in between: go on as usual.
			if err := c.Close(); err != nil {
				return nil, newErr(ErrUnreachable, err, "", "closing TPM connection to %s: %v", t.spec, err)
			}
		}
	}
	return acquireLock(p)
}

// doKept runs fn on the kept connection, opening it when needed. A lost
// connection drops it and everything loaded through it; the next call
// connects again.
func (t *TPM) doKept(fn func(c *Conn) error) (err error) {
	if lock, err := t.lock(); err != nil {
		return err
	} else if lock != nil {
		defer func() { err = errors.Join(err, closeLock(lock)) }()
	}
	if t.conn == nil {
		open := t.open
		switch {
		case t.shared != nil:
			open = func() (transport.TPMCloser, error) { return nopCloser{t.shared}, nil }
		case open == nil:
			open = func() (transport.TPMCloser, error) { return dial(t.spec) }
		}
		if t.conn, err = open(); err != nil {
			t.conn = nil
			return err
		}
	}
	c := &Conn{tpm: retrying{TPMCloser: t.conn, sleep: time.Sleep}, owner: t}
	err = c.finish(fn(c))
	if errors.Is(err, ErrUnreachable) {
		if derr := t.drop(false); derr != nil {
			err = errors.Join(err, derr)
		}
	}
	return err
}

func closeLock(f *os.File) error {
	// Closing the descriptor drops the flock.
	return f.Close()
}

// finish flushes every object the operation loaded, newest first, and
// turns lost connections into ErrUnreachable.
func (c *Conn) finish(opErr error) error {
	var flushErr error
	for i := len(c.loaded) - 1; i >= 0; i-- {
		if _, err := (tpm2.FlushContext{FlushHandle: c.loaded[i]}).Execute(c.tpm); err != nil && flushErr == nil {
			flushErr = tpmErr("flush transient object", c.connErr(err))
		}
	}
	c.loaded = nil
	if opErr != nil {
		return c.connErr(opErr)
	}
	return flushErr
}

// track records a transient handle to flush when the operation ends.
func (c *Conn) track(h tpm2.TPMHandle) { c.loaded = append(c.loaded, h) }

// retain keeps a tracked handle loaded after the operation (keep mode).
func (c *Conn) retain(h tpm2.TPMHandle) {
	for i, l := range c.loaded {
		if l == h {
			c.loaded = append(c.loaded[:i], c.loaded[i+1:]...)
			return
		}
	}
}

// flush releases one tracked handle early.
func (c *Conn) flush(h tpm2.TPMHandle) error {
	for i, l := range c.loaded {
		if l == h {
			c.loaded = append(c.loaded[:i], c.loaded[i+1:]...)
			break
		}
	}
	if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(c.tpm); err != nil {
		return tpmErr("flush transient object", err)
	}
	return nil
}

// connErr turns an I/O failure in the middle of an operation into an
// ErrUnreachable that names the TPM.
func (c *Conn) connErr(err error) error {
	var e *Error
	if err == nil || errors.As(err, &e) {
		return err
	}
	var rc tpm2.TPMRC
	if errors.As(err, &rc) {
		return err
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrDeadlineExceeded) {
		return newErr(ErrUnreachable, err, "check that the TPM (or swtpm) is still running",
			"connection to TPM at %s lost: %s", c.owner.spec, causeText(err))
	}
	return err
}

// flushLeftovers unloads every transient object and session in the TPM.
// Only for a TPM we hold exclusively (swtpm under our lock).
func (c *Conn) flushLeftovers() error {
	for _, first := range []tpm2.TPMHandle{tpm2.TPMHandle(tpm2.TPMHTTransient) << 24, tpm2.TPMHandle(tpm2.TPMHTHMACSession) << 24, tpm2.TPMHandle(tpm2.TPMHTPolicySession) << 24} {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(first), PropertyCount: 64}.Execute(c.tpm)
		if err != nil {
			return tpmErr("list leftover handles", err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return tpmErr("list leftover handles", err)
		}
		for _, h := range hs.Handle {
			if h>>24 != first>>24 {
				continue
			}
			if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(c.tpm); err != nil {
				return tpmErr("flush leftover handle", err)
			}
		}
	}
	return nil
}

// Transport exposes the raw connection for commands this package does not
// wrap (tests and diagnostics). Objects loaded through it are not tracked.
func (c *Conn) Transport() transport.TPM { return c.tpm }

type nopCloser struct{ transport.TPM }

func (nopCloser) Close() error { return nil }
