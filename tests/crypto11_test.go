package tests

// Go programs use the token through crypto11, the way a Go service would:
// crypto11 loads p11-kit-client.so (plain C) in the test process, which
// speaks p11-kit's RPC to a `p11-kit server` child process that loads our
// module. The module is never loaded into this process: two Go runtimes
// in one process can hang it (see docs and /work/shared/NOTES.md).

import (
	"bufio"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

// c11Timeout bounds every single crypto11 call, server start and stop.
const c11Timeout = time.Minute

// c11Need skips (fails in CI) a test without p11-kit or its client module.
func c11Need(t *testing.T) {
	t.Helper()
	need(t, "p11-kit")
	clientModule(t)
}

// startP11KitServer exports the token with p11-kit server, stopped at
// the end of the test, and returns its address.
func startP11KitServer(t *testing.T, env []string) (address string) {
	t.Helper()
	return startServer(t, env).Address
}

// within runs f and fails the test if it takes longer than c11Timeout. A
// call stuck in the RPC is freed when the cleanup stops the server.
func within[T any](t *testing.T, what string, f func() (T, error)) (T, error) {
	t.Helper()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-time.After(c11Timeout):
		t.Fatalf("%s: no answer after %v", what, c11Timeout)
		panic("unreachable")
	}
}

// c11Configure points p11-kit-client.so at the server and opens a
// crypto11 context on our token. The returned close function (also run
// at cleanup, before the server stops) closes it once; crypto11
// finalizes the client module when its last context closes, so the next
// test's C_Initialize reads its own P11_KIT_SERVER_ADDRESS.
func c11Configure(t *testing.T, address string, cfg crypto11.Config) (*crypto11.Context, func(), error) {
	t.Helper()
	t.Setenv("P11_KIT_SERVER_ADDRESS", address)
	cfg.Path = clientModule(t)
	cfg.TokenLabel = "simple-tpm-pk11"
	cfg.PoolWaitTimeout = c11Timeout
	ctx, err := within(t, "crypto11.Configure", func() (*crypto11.Context, error) { return crypto11.Configure(&cfg) })
	if err != nil {
		return nil, func() {}, err
	}
	var once sync.Once
	closeCtx := func() {
		once.Do(func() {
			if _, err := within(t, "crypto11 Close", func() (struct{}, error) { return struct{}{}, ctx.Close() }); err != nil {
				t.Errorf("crypto11 Close: %v", err)
			}
		})
	}
	t.Cleanup(closeCtx)
	return ctx, closeCtx, nil
}

func c11SamePublic(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// c11Find finds a key pair by label or ID and checks its public half.
func c11Find(t *testing.T, ctx *crypto11.Context, tk *token, id, label []byte, name string) crypto11.Signer {
	t.Helper()
	s, err := within(t, "FindKeyPair", func() (crypto11.Signer, error) { return ctx.FindKeyPair(id, label) })
	if err != nil {
		t.Fatalf("FindKeyPair(id=%x, label=%q): %v", id, label, err)
	}
	if s == nil {
		t.Fatalf("FindKeyPair(id=%x, label=%q): no key", id, label)
	}
	if !c11SamePublic(s.Public(), tk.publicKey(t, name)) {
		t.Fatalf("FindKeyPair(id=%x, label=%q): public key %T is not the one in %s.key.pub", id, label, s.Public(), name)
	}
	return s
}

func c11ID(t *testing.T, tk *token, name string) []byte {
	t.Helper()
	id, err := hex.DecodeString(tk.id(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestCrypto11FindKeys finds each key by label and by CKA_ID.
func TestCrypto11FindKeys(t *testing.T) {
	c11Need(t)
	tk := newToken(t, false)
	addr := startP11KitServer(t, tk.env)
	ctx, closeCtx, err := c11Configure(t, addr, crypto11.Config{LoginNotSupported: true})
	if err != nil {
		t.Fatalf("crypto11.Configure: %v", err)
	}
	for _, k := range testKeys {
		c11Find(t, ctx, tk, nil, []byte(k.name), k.name)
		c11Find(t, ctx, tk, c11ID(t, tk, k.name), nil, k.name)
		c11Find(t, ctx, tk, c11ID(t, tk, k.name), []byte(k.name), k.name)
	}
	all, err := within(t, "FindAllKeyPairs", func() ([]crypto11.Signer, error) { return ctx.FindAllKeyPairs() })
	if err != nil || len(all) != len(testKeys) {
		t.Errorf("FindAllKeyPairs: %d keys, %v; want %d", len(all), err, len(testKeys))
	}
	if _, err := within(t, "FindKeyPair", func() (crypto11.Signer, error) { return ctx.FindKeyPair(nil, []byte("nosuchkey")) }); err == nil {
		t.Error("FindKeyPair(label=nosuchkey) found a key")
	}
	closeCtx()
	tk.noTransient(t)
}

// TestCrypto11Sign signs through crypto.Signer with every scheme crypto11
// maps to a raw mechanism, and verifies with the standard library.
func TestCrypto11Sign(t *testing.T) {
	c11Need(t)
	tk := newToken(t, false)
	addr := startP11KitServer(t, tk.env)
	ctx, closeCtx, err := c11Configure(t, addr, crypto11.Config{LoginNotSupported: true})
	if err != nil {
		t.Fatalf("crypto11.Configure: %v", err)
	}
	msg := []byte("signed by a TPM key through crypto11 and p11-kit\n")
	digest := func(h crypto.Hash) []byte {
		switch h {
		case crypto.SHA256:
			d := sha256.Sum256(msg)
			return d[:]
		case crypto.SHA384:
			d := sha512.Sum384(msg)
			return d[:]
		default:
			d := sha512.Sum512(msg)
			return d[:]
		}
	}
	pss := func(h crypto.Hash) *rsa.PSSOptions {
		return &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}
	}
	for _, tc := range []struct {
		name, key string
		opts      crypto.SignerOpts
	}{
		{"rsa-pkcs1-sha256", "rsa", crypto.SHA256},
		{"rsa-pkcs1-sha384", "rsa", crypto.SHA384},
		{"rsa-pkcs1-sha512", "rsa", crypto.SHA512},
		{"rsa-pss-sha256", "rsa", pss(crypto.SHA256)},
		{"rsa-pss-sha384", "rsa", pss(crypto.SHA384)},
		{"rsa-pss-sha512", "rsa", pss(crypto.SHA512)},
		{"ecdsa-p256-sha256", "ec256", crypto.SHA256},
		{"ecdsa-p384-sha384", "ec384", crypto.SHA384},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := c11Find(t, ctx, tk, nil, []byte(tc.key), tc.key)
			h := tc.opts.HashFunc()
			d := digest(h)
			sig, err := within(t, "Sign", func() ([]byte, error) { return s.Sign(rand.Reader, d, tc.opts) })
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			switch pub := tk.publicKey(t, tc.key).(type) {
			case *rsa.PublicKey:
				if o, ok := tc.opts.(*rsa.PSSOptions); ok {
					err = rsa.VerifyPSS(pub, h, d, sig, o)
				} else {
					err = rsa.VerifyPKCS1v15(pub, h, d, sig)
				}
			case *ecdsa.PublicKey:
				if !ecdsa.VerifyASN1(pub, d, sig) {
					err = errors.New("ecdsa.VerifyASN1 failed")
				}
			default:
				err = fmt.Errorf("unexpected key type %T", pub)
			}
			if err != nil {
				t.Errorf("signature does not verify: %v", err)
			}
		})
	}
	closeCtx()
	tk.noTransient(t)
}

// TestCrypto11PIN logs in with crypto11's Config.Pin; a wrong PIN fails
// Configure with CKR_PIN_INCORRECT.
func TestCrypto11PIN(t *testing.T) {
	c11Need(t)
	tk := newToken(t, true)
	addr := startP11KitServer(t, tk.env)

	_, _, err := c11Configure(t, addr, crypto11.Config{Pin: "999999"})
	var p11err pkcs11.Error
	if err == nil || !strings.Contains(err.Error(), "CKR_PIN_INCORRECT") || !errors.As(err, &p11err) || p11err != pkcs11.CKR_PIN_INCORRECT {
		t.Fatalf("Configure with a wrong PIN: %v, want CKR_PIN_INCORRECT", err)
	}

	ctx, closeCtx, err := c11Configure(t, addr, crypto11.Config{Pin: testPIN})
	if err != nil {
		t.Fatalf("crypto11.Configure with the PIN: %v", err)
	}
	s := c11Find(t, ctx, tk, nil, []byte("pin"), "pin")
	c11Find(t, ctx, tk, c11ID(t, tk, "pin"), nil, "pin")
	d := sha256.Sum256([]byte("needs a PIN"))
	sig, err := within(t, "Sign", func() ([]byte, error) { return s.Sign(rand.Reader, d[:], crypto.SHA256) })
	if err != nil {
		t.Fatalf("Sign with the PIN key: %v", err)
	}
	if !ecdsa.VerifyASN1(tk.publicKey(t, "pin").(*ecdsa.PublicKey), d[:], sig) {
		t.Error("the PIN key's signature does not verify")
	}
	// Keys without a PIN work in the same logged-in context.
	s = c11Find(t, ctx, tk, nil, []byte("ec256"), "ec256")
	if sig, err = within(t, "Sign", func() ([]byte, error) { return s.Sign(rand.Reader, d[:], crypto.SHA256) }); err != nil {
		t.Fatalf("Sign with ec256: %v", err)
	}
	if !ecdsa.VerifyASN1(tk.publicKey(t, "ec256").(*ecdsa.PublicKey), d[:], sig) {
		t.Error("ec256's signature does not verify")
	}
	closeCtx()
	tk.noTransient(t)
}

// c11CA is a test certificate authority, in memory.
type c11CA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newC11CA(t *testing.T) *c11CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "simple-tpm-pk11 test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &c11CA{key: key, cert: cert}
}

// issue makes a leaf certificate for pub.
func (ca *c11CA) issue(t *testing.T, serial int64, cn string, pub crypto.PublicKey, usage x509.ExtKeyUsage, ips ...net.IP) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// c11Recorder notes the options TLS signs with.
type c11Recorder struct {
	crypto.Signer
	opts []crypto.SignerOpts
}

func (r *c11Recorder) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	r.opts = append(r.opts, opts)
	return r.Signer.Sign(rand, digest, opts)
}

// TestCrypto11TLSClientAuth: a TLS 1.3 client authenticates with a TPM
// key (ECDSA P-256, and RSA, which TLS 1.3 signs with RSA-PSS) and the
// certificate the token offers for it.
func TestCrypto11TLSClientAuth(t *testing.T) {
	c11Need(t)
	tk := newToken(t, false)
	ca := newC11CA(t)
	keys := []string{"ec256", "rsa"}
	issued := map[string]*x509.Certificate{}
	for i, name := range keys {
		cert := ca.issue(t, int64(10+i), name, tk.publicKey(t, name), x509.ExtKeyUsageClientAuth)
		// The module reads KEY.crt at C_Initialize: before the server starts.
		tk.write(t, name+".crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
		issued[name] = cert
	}
	serverKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serverCert := ca.issue(t, 2, "127.0.0.1", serverKey.Public(), x509.ExtKeyUsageServerAuth, net.IPv4(127, 0, 0, 1))
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)

	addr := startP11KitServer(t, tk.env)
	ctx, closeCtx, err := c11Configure(t, addr, crypto11.Config{LoginNotSupported: true})
	if err != nil {
		t.Fatalf("crypto11.Configure: %v", err)
	}
	for _, name := range keys {
		t.Run(name, func(t *testing.T) {
			signer := &c11Recorder{Signer: c11Find(t, ctx, tk, nil, []byte(name), name)}
			cert, err := within(t, "FindCertificate", func() (*x509.Certificate, error) {
				return ctx.FindCertificate(c11ID(t, tk, name), nil, nil)
			})
			if err != nil || cert == nil {
				t.Fatalf("FindCertificate: %v, %v", cert, err)
			}
			if !cert.Equal(issued[name]) {
				t.Fatal("the token's certificate is not the one written to " + name + ".crt")
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			type result struct {
				peer *x509.Certificate
				line string
				err  error
			}
			served := make(chan result, 1)
			go func() {
				var r result
				defer func() { served <- r }()
				c, err := ln.Accept()
				if err != nil {
					r.err = err
					return
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(c11Timeout))
				tc := tls.Server(c, &tls.Config{
					MinVersion:   tls.VersionTLS13,
					Certificates: []tls.Certificate{{Certificate: [][]byte{serverCert.Raw}, PrivateKey: serverKey, Leaf: serverCert}},
					ClientAuth:   tls.RequireAndVerifyClientCert,
					ClientCAs:    pool,
				})
				if r.err = tc.Handshake(); r.err != nil {
					return
				}
				pc := tc.ConnectionState().PeerCertificates
				if len(pc) == 0 {
					r.err = errors.New("no client certificate")
					return
				}
				r.peer = pc[0]
				if r.line, r.err = bufio.NewReader(tc).ReadString('\n'); r.err != nil {
					return
				}
				_, r.err = fmt.Fprintf(tc, "hello %s\n", r.peer.Subject.CommonName)
			}()

			c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(c11Timeout))
			tc := tls.Client(c, &tls.Config{
				MinVersion:   tls.VersionTLS13,
				MaxVersion:   tls.VersionTLS13,
				RootCAs:      pool,
				ServerName:   "127.0.0.1",
				Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: signer, Leaf: cert}},
			})
			if err := tc.Handshake(); err != nil {
				c.Close()
				t.Fatalf("client handshake: %v (server: %v)", err, (<-served).err)
			}
			if _, err := fmt.Fprintf(tc, "client %s\n", name); err != nil {
				t.Fatal(err)
			}
			reply, err := bufio.NewReader(tc).ReadString('\n')
			if err != nil {
				t.Fatalf("reading the reply: %v", err)
			}
			r := <-served
			if r.err != nil {
				t.Fatalf("server: %v", r.err)
			}
			if r.peer == nil || !r.peer.Equal(issued[name]) {
				t.Errorf("the server saw another client certificate: %v", r.peer)
			}
			if r.line != "client "+name+"\n" || reply != "hello "+name+"\n" {
				t.Errorf("exchanged %q and %q", r.line, reply)
			}
			if v := tc.ConnectionState().Version; v != tls.VersionTLS13 {
				t.Errorf("TLS version %x, want 1.3", v)
			}
			// One CertificateVerify signature; RSA keys sign it with PSS.
			if len(signer.opts) != 1 {
				t.Fatalf("the TPM key signed %d times, want once", len(signer.opts))
			}
			_, isPSS := signer.opts[0].(*rsa.PSSOptions)
			if isPSS != (name == "rsa") {
				t.Errorf("signed with %T %v", signer.opts[0], signer.opts[0].HashFunc())
			}
			t.Logf("client signature: %T %v", signer.opts[0], signer.opts[0].HashFunc())
		})
	}
	closeCtx()
	tk.noTransient(t)
}
