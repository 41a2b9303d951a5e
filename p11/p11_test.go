package p11

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/config"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

var sim transport.TPMCloser

func TestMain(m *testing.M) {
	var err error
	if sim, err = simulator.OpenSimulator(); err != nil {
		fmt.Fprintln(os.Stderr, "simulator:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := sim.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// keys made once on the simulator and reused by every test.
var (
	keysOnce sync.Once
	keyDir   string
	keysErr  error
)

const testPIN = "1234"

func makeKeys(t testing.TB) string {
	t.Helper()
	keysOnce.Do(func() {
		keyDir, keysErr = os.MkdirTemp("", "p11test")
		if keysErr != nil {
			return
		}
		tp := tpm.FromTransport(sim)
		for name, ks := range map[string]tpm.KeySpec{
			"rsa.key":   {Type: tpm.RSA, Bits: 2048},
			"ec.key":    {Type: tpm.ECDSA, Bits: 256},
			"ec384.key": {Type: tpm.ECDSA, Bits: 384},
			"pin.key":   {Type: tpm.ECDSA, Bits: 256, PIN: []byte(testPIN)},
		} {
			keysErr = tp.Do(func(c *tpm.Conn) error {
				k, err := c.CreateKey(ks)
				if err != nil {
					return err
				}
				return keyfile.Write(filepath.Join(keyDir, name), k, false)
			})
			if keysErr != nil {
				return
			}
		}
		// A backup-able key, imported.
		priv, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			keysErr = err
			return
		}
		keysErr = tp.Do(func(c *tpm.Conn) error {
			k, err := c.ImportKey(priv, tpm.KeySpec{})
			if err != nil {
				return err
			}
			return keyfile.Write(filepath.Join(keyDir, "imported.key"), k, false)
		})
		if keysErr != nil {
			return
		}
		keysErr = writeCert(filepath.Join(keyDir, "ec.key"), filepath.Join(keyDir, "ec.crt"))
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
	return keyDir
}

// writeCert makes a self-signed certificate for a key file's public key
// (signed by a throwaway CA key: only the subject key matters here).
func writeCert(keyPath, certPath string) error {
	k, err := keyfile.Load(keyPath)
	if err != nil {
		return err
	}
	pub, err := tpm.PublicKey(k)
	if err != nil {
		return err
	}
	ca, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, ca)
	if err != nil {
		return err
	}
	return os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// newModule returns an initialized module whose config is text (key paths
// relative to the test keys).
func newModule(t testing.TB, text string) *Module {
	t.Helper()
	dir := makeKeys(t)
	m := startModule(t, func() (*config.Config, error) {
		return config.Parse(strings.NewReader(text), filepath.Join(dir, "config")), nil
	}, tpm.FromTransport(sim))
	m.log.Store(NewLogger(io.Discard, true)) // debug on: every path that logs runs
	return m
}

// startModule returns a module initialized with the config load gives
// and the TPM tp, finalized when the test ends; the module lock must be
// free by then.
func startModule(t testing.TB, load func() (*config.Config, error), tp *tpm.TPM) *Module {
	t.Helper()
	m := New()
	m.LoadConfig = load
	m.OpenTPM = func(tpm.Spec) *tpm.TPM { return tp }
	m.Getenv = func(string) string { return "" }
	if err := m.Initialize(InitArgs{Flags: CKF_OS_LOCKING_OK}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !m.mu.TryLock() {
			t.Error("the module lock is still held at the end of the test")
			return
		}
		initialized := m.initialized
		m.mu.Unlock()
		if initialized {
			if err := m.Finalize(); err != nil {
				t.Error(err)
			}
		}
	})
	return m
}

const allKeys = "key rsa.key\nkey ec.key\nkey ec384.key\nkey imported.key\n"

func rvOf(err error) uint { return RV(err) }

func wantRV(t *testing.T, what string, err error, want uint) {
	t.Helper()
	if got := rvOf(err); got != want {
		t.Errorf("%s: %s (%v), want %s", what, RVName(got), err, RVName(want))
	}
}

// wantMsg checks that err's log text contains want.
func wantMsg(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(Message(err), want) {
		t.Errorf("message %v, want one containing %q", err, want)
	}
}

func TestInitialize(t *testing.T) {
	m := New()
	m.LoadConfig = func() (*config.Config, error) { return &config.Config{}, nil }
	m.Getenv = func(string) string { return "" }
	_, err := m.GetInfo()
	wantRV(t, "GetInfo before Initialize", err, CKR_CRYPTOKI_NOT_INITIALIZED)
	wantRV(t, "Finalize before Initialize", m.Finalize(), CKR_CRYPTOKI_NOT_INITIALIZED)
	wantRV(t, "pReserved", m.Initialize(InitArgs{Reserved: true}), CKR_ARGUMENTS_BAD)
	wantRV(t, "two mutex callbacks", m.Initialize(InitArgs{Mutexes: 2}), CKR_ARGUMENTS_BAD)
	wantRV(t, "four mutex callbacks", m.Initialize(InitArgs{Mutexes: 4}), CKR_OK)
	wantRV(t, "twice", m.Initialize(InitArgs{}), CKR_CRYPTOKI_ALREADY_INITIALIZED)
	slots, err := m.SlotList(true)
	if err != nil || len(slots) != 0 {
		t.Errorf("no keys: present slots %v, %v; want none", slots, err)
	}
	slots, err = m.SlotList(false)
	if err != nil || len(slots) != 1 {
		t.Errorf("no keys: all slots %v, %v; want one", slots, err)
	}
	_, err = m.GetTokenInfo(SlotID)
	wantRV(t, "token info without keys", err, CKR_TOKEN_NOT_PRESENT)
	wantRV(t, "Finalize", m.Finalize(), CKR_OK)
	_, err = m.SlotList(false)
	wantRV(t, "after Finalize", err, CKR_CRYPTOKI_NOT_INITIALIZED)
}

// TestInitializeArgs pins C_Initialize's answer to each use of
// CK_C_INITIALIZE_ARGS (PKCS#11 2.40, 5.4). The module locks with Go's
// own (OS-level) mutexes, so it needs no application callbacks in any of
// the four locking cases; it cannot promise not to create OS threads.
func TestInitializeArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		args InitArgs
		want uint
	}{
		{"1: no callbacks, no CKF_OS_LOCKING_OK", InitArgs{}, CKR_OK},
		{"2: no callbacks, CKF_OS_LOCKING_OK", InitArgs{Flags: CKF_OS_LOCKING_OK}, CKR_OK},
		{"3: callbacks, no CKF_OS_LOCKING_OK", InitArgs{Mutexes: 4}, CKR_OK},
		{"4: callbacks and CKF_OS_LOCKING_OK", InitArgs{Flags: CKF_OS_LOCKING_OK, Mutexes: 4}, CKR_OK},
		{"one callback of four", InitArgs{Mutexes: 1}, CKR_ARGUMENTS_BAD},
		{"three callbacks of four", InitArgs{Flags: CKF_OS_LOCKING_OK, Mutexes: 3}, CKR_ARGUMENTS_BAD},
		{"pReserved set", InitArgs{Flags: CKF_OS_LOCKING_OK, Reserved: true}, CKR_ARGUMENTS_BAD},
		{"CKF_LIBRARY_CANT_CREATE_OS_THREADS", InitArgs{Flags: CKF_LIBRARY_CANT_CREATE_OS_THREADS}, CKR_OK},
		{"CKF_LIBRARY_CANT_CREATE_OS_THREADS with CKF_OS_LOCKING_OK", InitArgs{Flags: CKF_LIBRARY_CANT_CREATE_OS_THREADS | CKF_OS_LOCKING_OK}, CKR_OK},
	} {
		m := New()
		m.LoadConfig = func() (*config.Config, error) { return &config.Config{}, nil }
		m.Getenv = func(string) string { return "" }
		m.log.Store(NewLogger(io.Discard, false))
		wantRV(t, tc.name, m.Initialize(tc.args), tc.want)
		_, err := m.GetInfo()
		if tc.want != CKR_OK {
			wantRV(t, tc.name+": then C_GetInfo", err, CKR_CRYPTOKI_NOT_INITIALIZED)
			continue
		}
		wantRV(t, tc.name+": then C_GetInfo", err, CKR_OK)
		wantRV(t, tc.name+": then C_Finalize", m.Finalize(), CKR_OK)
	}
}

func TestBrokenConfigKeepsGoodKeys(t *testing.T) {
	m := newModule(t, "key rsa.key\nkey missing.key\nbogus line\nkey ec.key label=laptop\n")
	m.mu.Lock()
	n := len(m.keys)
	labels := []string{}
	for _, k := range m.keys {
		labels = append(labels, k.Label)
	}
	m.mu.Unlock()
	if n != 2 || labels[0] != "rsa" || labels[1] != "laptop" {
		t.Errorf("keys %v, want [rsa laptop]", labels)
	}
}

func TestBrokenConfigLogs(t *testing.T) {
	dir := makeKeys(t)
	m := New()
	m.OpenTPM = func(tpm.Spec) *tpm.TPM { return tpm.FromTransport(sim) }
	m.Getenv = func(string) string { return "" }
	// Log to a file to see what Initialize writes.
	logPath := filepath.Join(t.TempDir(), "log")
	m.LoadConfig = func() (*config.Config, error) {
		c := config.Parse(strings.NewReader("key rsa.key\nkey missing.key\nkye x\nlog "+logPath+"\n"), filepath.Join(dir, "config"))
		return c, nil
	}
	if err := m.Initialize(InitArgs{}); err != nil {
		t.Fatal(err)
	}
	if err := m.Finalize(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config")
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	want := []string{
		// Problems in the file first, then the keys as they load.
		"error: config " + cfg + `:3: unknown directive "kye" (known: key, tpm, key_pin, srk_pin, log, debug, label)`,
		"error: config " + cfg + `:2: key left out: "` + filepath.Join(dir, "missing.key") + `": no such file or directory (hint: make the key with stpm-keygen, or correct the key line)`,
	}
	if len(lines) != len(want) {
		t.Fatalf("want one line per problem (%d), got %d:\n%s", len(want), len(lines), data)
	}
	for i, w := range want {
		if !strings.HasSuffix(lines[i], w) {
			t.Errorf("line %d:\n%s\nwant it to end with\n%s", i+1, lines[i], w)
		}
	}
}

func TestTokenInfo(t *testing.T) {
	m := newModule(t, allKeys)
	ti, err := m.GetTokenInfo(SlotID)
	if err != nil {
		t.Fatal(err)
	}
	if ti.Label != DefaultLabel || ti.Manufacturer == "" || len(ti.Serial) != 16 || ti.Model != "TPM 2.0" {
		t.Errorf("token info %+v", ti)
	}
	if ti.Flags&CKF_LOGIN_REQUIRED != 0 || ti.Flags&CKF_TOKEN_INITIALIZED == 0 {
		t.Errorf("flags %#x: no PIN key, so no login required", ti.Flags)
	}
	again, err := m.GetTokenInfo(SlotID)
	if err != nil || again.Serial != ti.Serial {
		t.Errorf("serial not stable: %q then %q (%v)", ti.Serial, again.Serial, err)
	}

	pm := newModule(t, "key pin.key\nlabel My Token\n")
	ti, err = pm.GetTokenInfo(SlotID)
	if err != nil {
		t.Fatal(err)
	}
	if ti.Label != "My Token" || ti.Flags&CKF_LOGIN_REQUIRED == 0 || ti.Flags&CKF_USER_PIN_INITIALIZED == 0 {
		t.Errorf("PIN key: label %q flags %#x, want login required", ti.Label, ti.Flags)
	}
	// The CK_CHAR fields as the export layer fills them: space-padded,
	// no NUL, the value in front.
	for _, f := range []struct {
		name, value string
		size        int
	}{{"label", ti.Label, 32}, {"manufacturerID", ti.Manufacturer, 32}, {"model", ti.Model, 16}, {"serialNumber", ti.Serial, 16}} {
		b := Pad(f.value, f.size)
		if len(b) != f.size || bytes.IndexByte(b, 0) >= 0 || !bytes.HasPrefix(b, []byte(f.value)) ||
			strings.Trim(string(b[len(f.value):]), " ") != "" {
			t.Errorf("token info %s %q as a field: %q", f.name, f.value, b)
		}
	}
	km := newModule(t, "key pin.key\nkey_pin "+testPIN+"\n")
	ti, err = km.GetTokenInfo(SlotID)
	if err != nil {
		t.Fatal(err)
	}
	if ti.Flags&CKF_LOGIN_REQUIRED != 0 {
		t.Errorf("key_pin set: flags %#x, want no login required", ti.Flags)
	}
}

func open(t *testing.T, m *Module) uint {
	t.Helper()
	h, err := m.OpenSession(SlotID, CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func find(t *testing.T, m *Module, h uint, tmpl ...Attribute) []uint {
	t.Helper()
	if err := m.FindObjectsInit(h, tmpl); err != nil {
		t.Fatal(err)
	}
	var all []uint
	for {
		got, err := m.FindObjects(h, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			break
		}
		all = append(all, got...)
	}
	if err := m.FindObjectsFinal(h); err != nil {
		t.Fatal(err)
	}
	return all
}

func attr(t *testing.T, m *Module, h, o, typ uint) []byte {
	t.Helper()
	v, err := m.GetAttributeValue(h, o, []uint{typ})
	if err != nil {
		t.Fatal(err)
	}
	if v[0].RV != CKR_OK {
		t.Fatalf("attribute 0x%X: %s", typ, RVName(v[0].RV))
	}
	return v[0].Value
}

func TestObjects(t *testing.T) {
	m := newModule(t, allKeys)
	h := open(t, m)
	all := find(t, m, h)
	if len(all) != 9 { // 4 keys × 2 + the EC key's certificate
		t.Fatalf("found %d objects, want 9", len(all))
	}
	privs := find(t, m, h, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)})
	if len(privs) != 4 {
		t.Fatalf("found %d private keys, want 4", len(privs))
	}
	ecPriv := find(t, m, h, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)}, Attribute{CKA_LABEL, []byte("ec")})
	ecPub := find(t, m, h, Attribute{CKA_CLASS, ulong(CKO_PUBLIC_KEY)}, Attribute{CKA_LABEL, []byte("ec")})
	ecCert := find(t, m, h, Attribute{CKA_CLASS, ulong(CKO_CERTIFICATE)})
	if len(ecPriv) != 1 || len(ecPub) != 1 || len(ecCert) != 1 {
		t.Fatalf("ec objects: %v %v %v", ecPriv, ecPub, ecCert)
	}
	id := attr(t, m, h, ecPriv[0], CKA_ID)
	if !bytes.Equal(id, attr(t, m, h, ecPub[0], CKA_ID)) || !bytes.Equal(id, attr(t, m, h, ecCert[0], CKA_ID)) || len(id) != 20 {
		t.Error("CKA_ID differs between the key's objects")
	}
	if got := find(t, m, h, Attribute{CKA_ID, id}); len(got) != 3 {
		t.Errorf("find by ID: %d objects, want 3", len(got))
	}
	if got := find(t, m, h, Attribute{CKA_SIGN, []byte{0xff}}, Attribute{CKA_KEY_TYPE, ulong(CKK_RSA)}); len(got) != 2 {
		t.Errorf("RSA signing keys: %d, want 2 (rsa, imported)", len(got))
	}
	if got := find(t, m, h, Attribute{CKA_LABEL, []byte("nope")}); len(got) != 0 {
		t.Errorf("find by missing label: %v", got)
	}
	if got := find(t, m, h, Attribute{CKA_MODULUS_BITS, ulong(2048)}, Attribute{CKA_CLASS, ulong(CKO_PUBLIC_KEY)}); len(got) != 2 {
		t.Errorf("find 2048-bit public keys: %d", len(got))
	}

	for _, tc := range []struct {
		typ  uint
		want []byte
	}{
		{CKA_TOKEN, []byte{1}}, {CKA_PRIVATE, []byte{0}}, {CKA_SENSITIVE, []byte{1}}, {CKA_EXTRACTABLE, []byte{0}},
		{CKA_NEVER_EXTRACTABLE, []byte{1}}, {CKA_ALWAYS_SENSITIVE, []byte{1}}, {CKA_LOCAL, []byte{1}},
		{CKA_SIGN, []byte{1}}, {CKA_DECRYPT, []byte{0}}, {CKA_DERIVE, []byte{0}}, {CKA_MODIFIABLE, []byte{0}},
		{CKA_KEY_TYPE, ulong(CKK_EC)}, {CKA_EC_PARAMS, []byte{6, 8, 0x2a, 0x86, 0x48, 0xce, 0x3d, 3, 1, 7}},
	} {
		if got := attr(t, m, h, ecPriv[0], tc.typ); !bytes.Equal(got, tc.want) {
			t.Errorf("private key attribute 0x%X = %x, want %x", tc.typ, got, tc.want)
		}
	}
	v, err := m.GetAttributeValue(h, ecPriv[0], []uint{CKA_VALUE, 0x7777, CKA_LABEL})
	if err != nil {
		t.Fatal(err)
	}
	if v[0].RV != CKR_ATTRIBUTE_SENSITIVE || v[1].RV != CKR_ATTRIBUTE_TYPE_INVALID || string(v[2].Value) != "ec" {
		t.Errorf("CKA_VALUE %s, unknown %s, label %q", RVName(v[0].RV), RVName(v[1].RV), v[2].Value)
	}
	// Secrets are sensitive only where the key type has them: an RSA
	// private key has no CKA_VALUE, an EC one no CKA_PRIVATE_EXPONENT.
	rsaPriv := find(t, m, h, Attribute{CKA_LABEL, []byte("rsa")}, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)})
	for _, tc := range []struct {
		obj, typ, want uint
	}{
		{rsaPriv[0], CKA_VALUE, CKR_ATTRIBUTE_TYPE_INVALID},
		{rsaPriv[0], CKA_PRIVATE_EXPONENT, CKR_ATTRIBUTE_SENSITIVE},
		{rsaPriv[0], 0x128, CKR_ATTRIBUTE_SENSITIVE}, // CKA_COEFFICIENT
		{ecPriv[0], CKA_VALUE, CKR_ATTRIBUTE_SENSITIVE},
		{ecPriv[0], CKA_PRIVATE_EXPONENT, CKR_ATTRIBUTE_TYPE_INVALID},
	} {
		v, err := m.GetAttributeValue(h, tc.obj, []uint{tc.typ})
		if err != nil {
			t.Fatal(err)
		}
		if v[0].RV != tc.want {
			t.Errorf("object %d attribute 0x%X: %s, want %s", tc.obj, tc.typ, RVName(v[0].RV), RVName(tc.want))
		}
	}
	point := attr(t, m, h, ecPub[0], CKA_EC_POINT)
	if len(point) != 67 || point[0] != 4 || point[1] != 65 || point[2] != 4 {
		t.Errorf("CKA_EC_POINT %x: want DER OCTET STRING of an uncompressed P-256 point", point)
	}
	if _, err := m.GetAttributeValue(h, 999, []uint{CKA_CLASS}); rvOf(err) != CKR_OBJECT_HANDLE_INVALID {
		t.Errorf("bad object handle: %v", err)
	}

	imp := find(t, m, h, Attribute{CKA_LABEL, []byte("imported")}, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)})
	if len(imp) != 1 {
		t.Fatal("imported key not found")
	}
	if !bytes.Equal(attr(t, m, h, imp[0], CKA_LOCAL), []byte{0}) || !bytes.Equal(attr(t, m, h, imp[0], CKA_NEVER_EXTRACTABLE), []byte{0}) {
		t.Error("an imported (backup-able) key must report LOCAL and NEVER_EXTRACTABLE false")
	}
	if size, err := m.ObjectSize(h, ecPub[0]); err != nil || size == 0 {
		t.Errorf("ObjectSize = %d, %v", size, err)
	}

	pubs := find(t, m, h, Attribute{CKA_CLASS, ulong(CKO_PUBLIC_KEY)})
	if len(pubs) != 4 {
		t.Fatalf("found %d public keys, want 4", len(pubs))
	}
	for _, o := range pubs {
		if got := attr(t, m, h, o, CKA_VERIFY); !bytes.Equal(got, []byte{1}) {
			t.Errorf("public key %d: CKA_VERIFY %x, want true", o, got)
		}
	}
	// The RSA numbers, on both key objects, against the key file's public
	// key read independently.
	kf, err := keyfile.Load(filepath.Join(makeKeys(t), "rsa.key"))
	if err != nil {
		t.Fatal(err)
	}
	filePub, err := tpm.PublicKey(kf)
	if err != nil {
		t.Fatal(err)
	}
	rsaPub := filePub.(*rsa.PublicKey)
	for _, class := range []uint{CKO_PUBLIC_KEY, CKO_PRIVATE_KEY} {
		o := find(t, m, h, Attribute{CKA_LABEL, []byte("rsa")}, Attribute{CKA_CLASS, ulong(class)})
		if len(o) != 1 {
			t.Fatalf("rsa key object of class %d: %v", class, o)
		}
		if got := attr(t, m, h, o[0], CKA_MODULUS); !bytes.Equal(got, rsaPub.N.Bytes()) {
			t.Errorf("class %d: CKA_MODULUS differs from the key file's", class)
		}
		if got := attr(t, m, h, o[0], CKA_PUBLIC_EXPONENT); new(big.Int).SetBytes(got).Int64() != int64(rsaPub.E) || got[0] == 0 {
			t.Errorf("class %d: CKA_PUBLIC_EXPONENT %x, want %d as a minimal big-endian integer", class, got, rsaPub.E)
		}
	}
}

// TestPad: fixed-size character fields are space-padded, never hold a
// NUL, and are cut only between UTF-8 characters.
func TestPad(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"", 4, "    "},
		{"abc", 5, "abc  "},
		{"abcde", 5, "abcde"},
		{"abcdef", 5, "abcde"},
		{"aé", 2, "a "},
		{"aé", 3, "aé"},
		{"a\x00b\n", 5, "a b  "},
		{"a\xffb", 4, "a b "},
	} {
		if got := string(Pad(tc.in, tc.n)); got != tc.want {
			t.Errorf("Pad(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

func TestLogin(t *testing.T) {
	m := newModule(t, "key pin.key\nkey ec.key\n")
	h := open(t, m)
	if got := find(t, m, h, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)}); len(got) != 1 {
		t.Fatalf("before login: %d private keys visible, want 1 (the one without PIN)", len(got))
	}
	pub := find(t, m, h, Attribute{CKA_LABEL, []byte("pin")})
	if len(pub) != 1 {
		t.Fatalf("before login: the PIN key's public key must be visible")
	}
	wantRV(t, "wrong PIN", m.Login(h, CKU_USER, []byte("9999")), CKR_PIN_INCORRECT)
	wantRV(t, "SO login", m.Login(h, CKU_SO, []byte("x")), CKR_USER_TYPE_INVALID)
	wantRV(t, "long PIN", m.Login(h, CKU_USER, bytes.Repeat([]byte("1"), 33)), CKR_PIN_LEN_RANGE)
	wantRV(t, "right PIN", m.Login(h, CKU_USER, []byte(testPIN)), CKR_OK)
	wantRV(t, "again", m.Login(h, CKU_USER, []byte(testPIN)), CKR_USER_ALREADY_LOGGED_IN)
	si, err := m.GetSessionInfo(h)
	if err != nil || si.State != CKS_RO_USER_FUNCTIONS {
		t.Errorf("session state %d, want CKS_RO_USER_FUNCTIONS", si.State)
	}
	priv := find(t, m, h, Attribute{CKA_LABEL, []byte("pin")}, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)})
	if len(priv) != 1 || !bytes.Equal(attr(t, m, h, priv[0], CKA_PRIVATE), []byte{1}) {
		t.Fatal("after login the PIN key's private key is visible and CKA_PRIVATE")
	}
	sign(t, m, h, priv[0], CKM_ECDSA_SHA256, nil)
	wantRV(t, "logout", m.Logout(h), CKR_OK)
	wantRV(t, "logout again", m.Logout(h), CKR_USER_NOT_LOGGED_IN)
	wantRV(t, "sign after logout", m.SignInit(h, Mechanism{Type: CKM_ECDSA_SHA256}, priv[0]), CKR_KEY_HANDLE_INVALID)
}

func TestKeyPINFromConfig(t *testing.T) {
	m := newModule(t, "key pin.key\nkey_pin "+testPIN+"\n")
	h := open(t, m)
	priv := find(t, m, h, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)})
	if len(priv) != 1 {
		t.Fatal("with key_pin the PIN key is usable without login")
	}
	sign(t, m, h, priv[0], CKM_ECDSA_SHA256, nil)
}

// sign signs "hello" (or its hash, for raw mechanisms) and verifies the
// result with the public key in software.
func sign(t *testing.T, m *Module, h, key, mech uint, param []byte) []byte {
	t.Helper()
	msg := []byte("hello")
	d256 := sha256.Sum256(msg)
	input := msg
	switch mech {
	case CKM_ECDSA:
		input = d256[:]
	case CKM_RSA_PKCS:
		input = append([]byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}, d256[:]...)
	case CKM_RSA_PKCS_PSS:
		input = d256[:]
	}
	if err := m.SignInit(h, Mechanism{Type: mech, Param: param}, key); err != nil {
		t.Fatalf("SignInit(0x%X): %v", mech, err)
	}
	n, err := m.SignLength(h, true)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := m.Sign(h, input)
	if err != nil {
		t.Fatalf("Sign(0x%X): %v", mech, err)
	}
	if len(sig) != n {
		t.Errorf("signature %d bytes, SignLength said %d", len(sig), n)
	}
	// Verify through the module's own software verification and
	// independently.
	m.mu.Lock()
	o, err := m.object(key)
	m.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	verifyGo(t, o.key.Public, mech, msg, sig)
	// The public key's handle follows its private key's (see addKey).
	if err := m.VerifyInit(h, Mechanism{Type: mech, Param: param}, key+1); err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(h, input, sig); err != nil {
		t.Errorf("C_Verify of our own signature (0x%X): %v", mech, err)
	}
	return sig
}

func verifyGo(t *testing.T, pub crypto.PublicKey, mech uint, msg, sig []byte) {
	t.Helper()
	spec := mechs[mech]
	h := spec.hash
	if h == 0 {
		h = crypto.SHA256
	}
	hh := h.New()
	hh.Write(msg)
	d := hh.Sum(nil)
	switch p := pub.(type) {
	case *rsa.PublicKey:
		var err error
		if spec.pss {
			err = rsa.VerifyPSS(p, h, d, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			err = rsa.VerifyPKCS1v15(p, h, d, sig)
		}
		if err != nil {
			t.Errorf("mechanism 0x%X: signature does not verify: %v", mech, err)
		}
	case *ecdsa.PublicKey:
		half := len(sig) / 2
		if !ecdsa.Verify(p, d, new(big.Int).SetBytes(sig[:half]), new(big.Int).SetBytes(sig[half:])) {
			t.Errorf("mechanism 0x%X: ECDSA signature does not verify", mech)
		}
	}
}

func pssParams(hashMech, mgf, slen uint) []byte {
	return append(append(ulong(hashMech), ulong(mgf)...), ulong(slen)...)
}

func TestSignMechanisms(t *testing.T) {
	m := newModule(t, allKeys)
	h := open(t, m)
	rsaKey := find(t, m, h, Attribute{CKA_LABEL, []byte("rsa")}, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)})[0]
	ecKey := find(t, m, h, Attribute{CKA_LABEL, []byte("ec")}, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)})[0]
	ec384 := find(t, m, h, Attribute{CKA_LABEL, []byte("ec384")}, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)})[0]
	for _, mech := range []uint{CKM_RSA_PKCS, CKM_SHA1_RSA_PKCS, CKM_SHA256_RSA_PKCS, CKM_SHA384_RSA_PKCS, CKM_SHA512_RSA_PKCS} {
		sign(t, m, h, rsaKey, mech, nil)
	}
	sign(t, m, h, rsaKey, CKM_RSA_PKCS_PSS, pssParams(CKM_SHA256, CKG_MGF1_SHA256, 32))
	sign(t, m, h, rsaKey, CKM_SHA256_RSA_PKCS_PSS, pssParams(CKM_SHA256, CKG_MGF1_SHA256, 32))
	sign(t, m, h, rsaKey, CKM_SHA512_RSA_PKCS_PSS, pssParams(CKM_SHA512, CKG_MGF1_SHA512, 64))
	for _, key := range []uint{ecKey, ec384} {
		for _, mech := range []uint{CKM_ECDSA, CKM_ECDSA_SHA1, CKM_ECDSA_SHA256, CKM_ECDSA_SHA384, CKM_ECDSA_SHA512} {
			sign(t, m, h, key, mech, nil)
		}
	}
	if sig := sign(t, m, h, ec384, CKM_ECDSA_SHA384, nil); len(sig) != 96 {
		t.Errorf("P-384 signature is %d bytes, want 96 (r||s padded to 48 each)", len(sig))
	}

	// Multi-part.
	if err := m.SignInit(h, Mechanism{Type: CKM_SHA512_RSA_PKCS}, rsaKey); err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{"he", "l", "lo"} {
		if err := m.SignUpdate(h, []byte(part)); err != nil {
			t.Fatal(err)
		}
	}
	sig, err := m.SignFinal(h)
	if err != nil {
		t.Fatal(err)
	}
	verifyGo(t, mustPub(t, m, rsaKey), CKM_SHA512_RSA_PKCS, []byte("hello"), sig)
}

func mustPub(t *testing.T, m *Module, key uint) crypto.PublicKey {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, err := m.object(key)
	if err != nil {
		t.Fatal(err)
	}
	return o.key.Public
}

func TestSignErrors(t *testing.T) {
	m := newModule(t, allKeys)
	h := open(t, m)
	rsaKey := find(t, m, h, Attribute{CKA_LABEL, []byte("rsa")}, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)})[0]
	rsaPub := find(t, m, h, Attribute{CKA_LABEL, []byte("rsa")}, Attribute{CKA_CLASS, ulong(CKO_PUBLIC_KEY)})[0]
	ecKey := find(t, m, h, Attribute{CKA_LABEL, []byte("ec")}, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)})[0]
	ecPub := find(t, m, h, Attribute{CKA_LABEL, []byte("ec")}, Attribute{CKA_CLASS, ulong(CKO_PUBLIC_KEY)})[0]

	_, err := m.Sign(h, []byte("x"))
	wantRV(t, "Sign without SignInit", err, CKR_OPERATION_NOT_INITIALIZED)
	wantRV(t, "unknown mechanism", m.SignInit(h, Mechanism{Type: 0x9999}, rsaKey), CKR_MECHANISM_INVALID)
	wantRV(t, "ECDSA on RSA", m.SignInit(h, Mechanism{Type: CKM_ECDSA}, rsaKey), CKR_KEY_TYPE_INCONSISTENT)
	wantRV(t, "RSA on EC", m.SignInit(h, Mechanism{Type: CKM_RSA_PKCS}, ecKey), CKR_KEY_TYPE_INCONSISTENT)
	wantRV(t, "public key", m.SignInit(h, Mechanism{Type: CKM_RSA_PKCS}, rsaPub), CKR_KEY_FUNCTION_NOT_PERMITTED)
	wantMsg(t, m.SignInit(h, Mechanism{Type: CKM_RSA_PKCS}, rsaPub), `is the public key of "rsa", which cannot sign: use the private key with the same CKA_ID`)
	wantRV(t, "verify with a private key", m.VerifyInit(h, Mechanism{Type: CKM_RSA_PKCS}, rsaKey), CKR_KEY_FUNCTION_NOT_PERMITTED)
	wantMsg(t, m.VerifyInit(h, Mechanism{Type: CKM_RSA_PKCS}, rsaKey), `is the private key of "rsa", which has no CKA_VERIFY: verify with the public key with the same CKA_ID`)
	if err := m.VerifyInit(h, Mechanism{Type: CKM_RSA_PKCS}, rsaPub); err != nil {
		t.Errorf("VerifyInit with the public key after refusals: %v", err)
	} else if err := m.EndVerify(h, nil); err != nil {
		t.Fatal(err)
	}
	wantRV(t, "bad handle", m.SignInit(h, Mechanism{Type: CKM_RSA_PKCS}, 12345), CKR_KEY_HANDLE_INVALID)
	for name, p := range map[string][]byte{
		"no params":       nil,
		"short":           []byte{1, 2, 3},
		"salt 20":         pssParams(CKM_SHA256, CKG_MGF1_SHA256, 20),
		"mgf mismatch":    pssParams(CKM_SHA256, CKG_MGF1_SHA1, 32),
		"hash mismatch":   pssParams(CKM_SHA_1, CKG_MGF1_SHA1, 20),
		"unknown hashAlg": pssParams(0x9999, CKG_MGF1_SHA256, 32),
	} {
		wantRV(t, "PSS "+name, m.SignInit(h, Mechanism{Type: CKM_SHA256_RSA_PKCS_PSS, Param: p}, rsaKey), CKR_MECHANISM_PARAM_INVALID)
	}
	wantRV(t, "param on ECDSA", m.SignInit(h, Mechanism{Type: CKM_ECDSA, Param: []byte{1}}, ecKey), CKR_MECHANISM_PARAM_INVALID)

	if err := m.SignInit(h, Mechanism{Type: CKM_RSA_PKCS}, rsaKey); err != nil {
		t.Fatal(err)
	}
	wantRV(t, "SignInit twice", m.SignInit(h, Mechanism{Type: CKM_RSA_PKCS}, rsaKey), CKR_OPERATION_ACTIVE)
	_, err = m.Sign(h, bytes.Repeat([]byte{1}, 17))
	wantRV(t, "RSA_PKCS on non-DigestInfo", err, CKR_DATA_INVALID)
	_, err = m.Sign(h, []byte("x"))
	wantRV(t, "operation ended after the error", err, CKR_OPERATION_NOT_INITIALIZED)

	if err := m.SignInit(h, Mechanism{Type: CKM_ECDSA}, ecKey); err != nil {
		t.Fatal(err)
	}
	_, err = m.Sign(h, make([]byte, 31))
	wantRV(t, "ECDSA on 31 bytes", err, CKR_DATA_LEN_RANGE)

	if err := m.VerifyInit(h, Mechanism{Type: CKM_ECDSA_SHA256}, ecPub); err != nil {
		t.Fatal(err)
	}
	wantRV(t, "bad signature", m.Verify(h, []byte("x"), make([]byte, 64)), CKR_SIGNATURE_INVALID)
	if err := m.VerifyInit(h, Mechanism{Type: CKM_ECDSA_SHA256}, ecPub); err != nil {
		t.Fatal(err)
	}
	wantRV(t, "short signature", m.Verify(h, []byte("x"), make([]byte, 10)), CKR_SIGNATURE_LEN_RANGE)

	// The length for C_Sign after C_SignUpdate: refused as C_Sign is,
	// and the operation ends; for C_SignFinal it is the length.
	if err := m.SignInit(h, Mechanism{Type: CKM_ECDSA_SHA256}, ecKey); err != nil {
		t.Fatal(err)
	}
	if err := m.SignUpdate(h, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if n, err := m.SignLength(h, false); err != nil || n != 64 {
		t.Errorf("C_SignFinal length after C_SignUpdate: %d, %v; want 64", n, err)
	}
	_, err = m.SignLength(h, true)
	wantRV(t, "C_Sign length after C_SignUpdate", err, CKR_OPERATION_ACTIVE)
	wantMsg(t, err, "C_Sign after C_SignUpdate; finish with C_SignFinal")
	_, err = m.SignFinal(h)
	wantRV(t, "C_SignFinal after the refused C_Sign", err, CKR_OPERATION_NOT_INITIALIZED)

	wantRV(t, "closed session", m.CloseSession(h), CKR_OK)
	_, err = m.Sign(h, []byte("x"))
	wantRV(t, "sign on closed session", err, CKR_SESSION_HANDLE_INVALID)
}

func TestParseDigestInfo(t *testing.T) {
	d := sha256.Sum256([]byte("x"))
	withNull := append([]byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}, d[:]...)
	withoutNull := append([]byte{0x30, 0x2f, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x04, 0x20}, d[:]...)
	for name, in := range map[string][]byte{"with NULL": withNull, "without NULL": withoutNull} {
		h, digest, err := ParseDigestInfo(in)
		if err != nil || h != crypto.SHA256 || !bytes.Equal(digest, d[:]) {
			t.Errorf("%s: %v %x %v", name, h, digest, err)
		}
	}
	short := append([]byte(nil), withNull[:len(withNull)-1]...)
	short[1]--
	short[len(withNull)-d256Len-2]--
	for name, in := range map[string][]byte{
		"empty":    nil,
		"raw hash": d[:],
		"trailing": append(append([]byte(nil), withNull...), 0),
		"md5 oid":  {0x30, 0x20, 0x30, 0x0c, 0x06, 0x08, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x05, 0x05, 0x00, 0x04, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		"short":    short,
	} {
		if _, _, err := ParseDigestInfo(in); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

const d256Len = 32

func TestConcurrentSigning(t *testing.T) {
	m := newModule(t, allKeys)
	h0 := open(t, m)
	keys := find(t, m, h0, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)})
	const workers, n = 8, 12
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := m.OpenSession(SlotID, CKF_SERIAL_SESSION)
			if err != nil {
				t.Error(err)
				return
			}
			defer func() {
				if err := m.CloseSession(h); err != nil {
					t.Error(err)
				}
			}()
			for i := range n {
				key := keys[(w+i)%len(keys)]
				mech := uint(CKM_ECDSA_SHA256)
				if isRSA(mustKey(m, key)) {
					mech = CKM_SHA256_RSA_PKCS
				}
				msg := []byte(fmt.Sprintf("worker %d sign %d", w, i))
				if err := m.SignInit(h, Mechanism{Type: mech}, key); err != nil {
					t.Error(err)
					return
				}
				sig, err := m.Sign(h, msg)
				if err != nil {
					t.Error(err)
					return
				}
				verifyGo(t, mustKey(m, key).Public, mech, msg, sig)
				if _, err := m.GetSessionInfo(h); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
}

func mustKey(m *Module, h uint) *Key {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, err := m.object(h)
	if err != nil {
		panic(err)
	}
	return o.key
}

func TestSessions(t *testing.T) {
	m := newModule(t, allKeys)
	_, err := m.OpenSession(SlotID, 0)
	wantRV(t, "no CKF_SERIAL_SESSION", err, CKR_SESSION_PARALLEL_NOT_SUPPORTED)
	_, err = m.OpenSession(7, CKF_SERIAL_SESSION)
	wantRV(t, "bad slot", err, CKR_SLOT_ID_INVALID)
	rw, err := m.OpenSession(SlotID, CKF_SERIAL_SESSION|CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	si, err := m.GetSessionInfo(rw)
	if err != nil || si.State != CKS_RW_PUBLIC_SESSION || si.Flags&CKF_RW_SESSION == 0 {
		t.Errorf("rw session info %+v %v", si, err)
	}
	ti, err := m.GetTokenInfo(SlotID)
	if err != nil || ti.Sessions != 1 || ti.RWSessions != 1 {
		t.Errorf("token session counts %d/%d, want 1/1", ti.Sessions, ti.RWSessions)
	}
	wantRV(t, "close all", m.CloseAllSessions(SlotID), CKR_OK)
	_, err = m.GetSessionInfo(rw)
	wantRV(t, "after close all", err, CKR_SESSION_HANDLE_INVALID)
	wantRV(t, "WaitForSlotEvent DONT_BLOCK", m.WaitForSlotEvent(CKF_DONT_BLOCK), CKR_NO_EVENT)
	h := open(t, m)
	buf := make([]byte, 100)
	if err := m.GenerateRandom(h, buf); err != nil || bytes.Equal(buf, make([]byte, 100)) {
		t.Errorf("GenerateRandom: %v", err)
	}
	_, err = m.FindObjects(h, 1)
	wantRV(t, "FindObjects without Init", err, CKR_OPERATION_NOT_INITIALIZED)
}

// TestFilesChangeWhileLoaded: the module reads its config and key files
// once per C_Initialize. Changing or truncating them afterwards changes
// nothing until the next C_Initialize, and never breaks a signature.
func TestFilesChangeWhileLoaded(t *testing.T) {
	src := makeKeys(t)
	dir := t.TempDir()
	for _, f := range []string{"ec.key", "rsa.key"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfgPath := filepath.Join(dir, "config")
	if err := os.WriteFile(cfgPath, []byte("key ec.key\nkey rsa.key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := startModule(t, func() (*config.Config, error) { return config.Load(cfgPath) }, tpm.FromTransport(sim))
	h := open(t, m)
	key := find(t, m, h, Attribute{CKA_LABEL, []byte("ec")}, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)})[0]
	if err := os.WriteFile(cfgPath, []byte("key rsa.key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, "ec.key"), 10); err != nil {
		t.Fatal(err)
	}
	sign(t, m, h, key, CKM_ECDSA_SHA256, nil)
	if got := find(t, m, h, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)}); len(got) != 2 {
		t.Errorf("%d keys after the files changed, want the 2 loaded at C_Initialize", len(got))
	}
	if err := m.Finalize(); err != nil {
		t.Fatal(err)
	}
	if err := m.Initialize(InitArgs{}); err != nil {
		t.Fatal(err)
	}
	h = open(t, m)
	if got := find(t, m, h, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)}); len(got) != 1 {
		t.Errorf("%d keys after a new C_Initialize, want 1 (the new config)", len(got))
	}
}

// TestNoTokenLoggedOnce: without keys, C_GetTokenInfo and C_OpenSession
// answer CKR_TOKEN_NOT_PRESENT naming the config file actually used; the
// cause goes to the log at error level once per C_Initialize, or not at
// all when C_Initialize already logged it.
func TestNoTokenLoggedOnce(t *testing.T) {
	const path = "/nonexistent/stpm/config"
	m := New()
	m.Getenv = func(string) string { return "" }
	m.LoadConfig = func() (*config.Config, error) { return &config.Config{File: path}, nil }
	for round := range 2 {
		if err := m.Initialize(InitArgs{}); err != nil {
			t.Fatal(err)
		}
		_, err := m.GetTokenInfo(SlotID)
		wantRV(t, "token info", err, CKR_TOKEN_NOT_PRESENT)
		wantMsg(t, err, "make one with stpm-keygen and name it in "+path)
		if Logged(err) {
			t.Errorf("round %d: first CKR_TOKEN_NOT_PRESENT is marked logged; its cause was never logged", round)
		}
		for i := range 2 {
			_, err = m.GetTokenInfo(SlotID)
			if !Logged(err) {
				t.Errorf("round %d: C_GetTokenInfo %d: not marked logged: %v", round, i+2, err)
			}
			_, err = m.OpenSession(SlotID, CKF_SERIAL_SESSION)
			wantRV(t, "open session", err, CKR_TOKEN_NOT_PRESENT)
			if !Logged(err) {
				t.Errorf("round %d: C_OpenSession: not marked logged: %v", round, err)
			}
		}
		if err := m.Finalize(); err != nil {
			t.Fatal(err)
		}
	}

	// An unreadable config is logged by C_Initialize: no second error.
	m.LoadConfig = func() (*config.Config, error) {
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	}
	if err := m.Initialize(InitArgs{}); err != nil {
		t.Fatal(err)
	}
	defer m.Finalize()
	_, err := m.OpenSession(SlotID, CKF_SERIAL_SESSION)
	wantMsg(t, err, "name it in "+path)
	if !Logged(err) {
		t.Errorf("config error logged at C_Initialize, yet C_OpenSession is not marked logged: %v", err)
	}
}

// TestConfigProblemsBounded: a file full of lines that are no directive
// (a key or a binary named as the config) logs at most maxProblemLines
// problems and one line counting the rest, not a line per problem.
func TestConfigProblemsBounded(t *testing.T) {
	dir := makeKeys(t)
	for _, tc := range []struct {
		name     string
		problems int
		lines    int
		more     string
	}{
		{"none", 0, 0, ""},
		{"five", 5, 5, ""},
		{"six", 6, 6, "1 more problem;"},
		{"hundred", 100, 6, "95 more problems;"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "log")
			cfgPath := filepath.Join(dir, "config")
			var text strings.Builder
			text.WriteString("key rsa.key\nlog " + logPath + "\n")
			for i := range tc.problems {
				fmt.Fprintf(&text, "\x01garbage%d\n", i)
			}
			m := New()
			m.Getenv = func(string) string { return "" }
			m.OpenTPM = func(tpm.Spec) *tpm.TPM { return tpm.FromTransport(sim) }
			m.LoadConfig = func() (*config.Config, error) {
				return config.Parse(strings.NewReader(text.String()), cfgPath), nil
			}
			if err := m.Initialize(InitArgs{}); err != nil {
				t.Fatal(err)
			}
			if err := m.Finalize(); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(logPath)
			if err != nil && !(tc.lines == 0 && errors.Is(err, fs.ErrNotExist)) {
				t.Fatal(err)
			}
			var lines []string
			if len(data) > 0 {
				lines = strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
			}
			if len(lines) != tc.lines {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), tc.lines, data)
			}
			if tc.more == "" {
				return
			}
			want := "error: config " + cfgPath + ": " + tc.more + " it does not look like a simple-tpm-pk11 config (see simple-tpm-pk11-config(5))"
			if !strings.HasSuffix(lines[len(lines)-1], want) {
				t.Errorf("last line:\n%s\nwant it to end with\n%s", lines[len(lines)-1], want)
			}
		})
	}
}

// retryOnSign passes every command to the simulator but answers
// TPM2_Sign with TPM_RC_RETRY, as a TPM that stays busy does.
type retryOnSign struct{ transport.TPM }

func (r retryOnSign) Send(cmd []byte) ([]byte, error) {
	if len(cmd) >= 10 && bytes.Equal(cmd[6:10], []byte{0, 0, 0x01, 0x5d}) { // TPM_CC_Sign
		return []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x09, 0x22}, nil // TPM_RC_RETRY
	}
	return r.TPM.Send(cmd)
}

// TestRetryStormDeviceError: when the TPM answers TPM_RC_RETRY to every
// try (about 2.4 s of them), C_Sign gives CKR_DEVICE_ERROR with a line
// that says the TPM stayed busy and what to do.
func TestRetryStormDeviceError(t *testing.T) {
	m := newModule(t, "key ec.key\n")
	m.mu.Lock()
	m.tpm = tpm.FromTransport(retryOnSign{sim})
	m.mu.Unlock()
	h := open(t, m)
	key := find(t, m, h, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)})[0]
	if err := m.SignInit(h, Mechanism{Type: CKM_ECDSA}, key); err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	_, err := m.Sign(h, d[:])
	wantRV(t, "C_Sign while the TPM answers TPM_RC_RETRY", err, CKR_DEVICE_ERROR)
	wantMsg(t, err, "): the TPM stayed busy: TPM_RC_RETRY for 31 tries over about 2.4 s (hint: try again; if it lasts, restart the TPM daemon or swtpm)")
}
