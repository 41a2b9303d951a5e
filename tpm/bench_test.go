package tpm

import (
	"crypto"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/swtpmtest"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
)

// The benchmarks below run against a real swtpm and take one operation
// apart: what connecting, locking, making the storage primary, loading a
// key, reloading a saved key context, signing and flushing each cost, and
// what a whole signature costs per operation and in keep mode. make bench
// reports them; nothing here is a pass/fail test.

type benchEnv struct {
	sw   *swtpmtest.TPM
	spec Spec
	ec   *keyfile.Key
	rsa  *keyfile.Key
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	sw := swtpmtest.Start(b, swtpmtest.Options{})
	spec, err := ParseSpec(sw.Spec)
	if err != nil {
		b.Fatal(err)
	}
	e := &benchEnv{sw: sw, spec: spec}
	tp := Open(spec)
	err = tp.Do(func(c *Conn) error {
		var err error
		if e.ec, err = c.CreateKey(KeySpec{Type: ECDSA, Bits: 256}); err != nil {
			return err
		}
		e.rsa, err = c.CreateKey(KeySpec{Type: RSA, Bits: 2048})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

func (e *benchEnv) key(rsa bool) *keyfile.Key {
	if rsa {
		return e.rsa
	}
	return e.ec
}

// withConn runs fn on one open connection, outside Do's bookkeeping.
func (e *benchEnv) withConn(b *testing.B, fn func(c *Conn)) {
	b.Helper()
	raw, err := dial(e.spec)
	if err != nil {
		b.Fatal(err)
	}
	c := &Conn{tpm: retrying{TPMCloser: raw, sleep: time.Sleep}, owner: Open(e.spec)}
	fn(c)
	if err := c.finish(nil); err != nil {
		b.Fatal(err)
	}
	if err := raw.Close(); err != nil {
		b.Fatal(err)
	}
}

func mustFlush(b *testing.B, c *Conn, h tpm2.TPMHandle) {
	if err := c.flush(h); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkStep(b *testing.B) {
	e := newBenchEnv(b)
	b.Run("connect", func(b *testing.B) {
		for b.Loop() {
			raw, err := dial(e.spec)
			if err != nil {
				b.Fatal(err)
			}
			if err := raw.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lock", func(b *testing.B) {
		for b.Loop() {
			f, err := acquireLock(lockPath(e.spec))
			if err != nil {
				b.Fatal(err)
			}
			if err := closeLock(f); err != nil {
				b.Fatal(err)
			}
		}
	})
	e.withConn(b, func(c *Conn) {
		b.Run("primary+flush", func(b *testing.B) {
			for b.Loop() {
				p, err := c.LoadParent(OwnerParent, false, nil)
				if err != nil {
					b.Fatal(err)
				}
				mustFlush(b, c, p.Handle)
			}
		})
		p, err := c.LoadParent(OwnerParent, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		for _, rsa := range []bool{false, true} {
			name := map[bool]string{false: "ecdsa", true: "rsa"}[rsa]
			k := e.key(rsa)
			b.Run("load+flush/"+name, func(b *testing.B) {
				for b.Loop() {
					l, err := c.loadKey(k, func() (*Parent, error) { return p, nil })
					if err != nil {
						b.Fatal(err)
					}
					mustFlush(b, c, l.Handle)
				}
			})
			l, err := c.loadKey(k, func() (*Parent, error) { return p, nil })
			if err != nil {
				b.Fatal(err)
			}
			saved, err := tpm2.ContextSave{SaveHandle: l.Handle}.Execute(c.tpm)
			if err != nil {
				b.Fatal(err)
			}
			b.Run("contextload+flush/"+name, func(b *testing.B) {
				for b.Loop() {
					rsp, err := tpm2.ContextLoad{Context: saved.Context}.Execute(c.tpm)
					if err != nil {
						b.Fatal(err)
					}
					mustFlush(b, c, rsp.LoadedHandle)
				}
			})
			b.Run("sign/"+name, func(b *testing.B) {
				d := sha256.Sum256([]byte("bench"))
				for b.Loop() {
					if _, err := c.Sign(l, nil, d[:], SignOpts{Hash: crypto.SHA256}); err != nil {
						b.Fatal(err)
					}
				}
			})
			mustFlush(b, c, l.Handle)
		}
		mustFlush(b, c, p.Handle)
	})
}

// BenchmarkSignDigest is a whole signature as the module makes it: per
// operation (the swtpm and /dev/tpm0 path) and with the key kept loaded
// (the /dev/tpmrm0 path, run here on swtpm by a single process).
func BenchmarkSignDigest(b *testing.B) {
	e := newBenchEnv(b)
	for _, keep := range []bool{false, true} {
		for _, rsa := range []bool{false, true} {
			name := map[bool]string{false: "perop", true: "keep"}[keep] + "/" + map[bool]string{false: "ecdsa", true: "rsa"}[rsa]
			b.Run(name, func(b *testing.B) {
				tp := Open(e.spec)
				if err := tp.SetKeepOpen(keep); err != nil {
					b.Fatal(err)
				}
				defer func() {
					if err := tp.Close(); err != nil {
						b.Fatal(err)
					}
				}()
				d := sha256.Sum256([]byte("bench"))
				k := e.key(rsa)
				for b.Loop() {
					if _, err := tp.SignDigest(k, nil, nil, d[:], SignOpts{Hash: crypto.SHA256}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
	if h := e.sw.TransientHandles(b); len(h) != 0 {
		b.Fatalf("transient objects left: %v", h)
	}
}
