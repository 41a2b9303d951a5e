package doctor

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/rocatest"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/swtpmtest"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// setup is a swtpm and a config directory for one test.
type setup struct {
	sw  *swtpmtest.TPM
	dir string // ~/.simple-tpm-pk11
}

func newSetup(t *testing.T, relax bool) *setup {
	t.Helper()
	home := isolate(t)
	sw := swtpmtest.Start(t, swtpmtest.Options{TCP: true})
	if relax {
		sw.RelaxLockout(t)
	}
	dir := filepath.Join(home, ".simple-tpm-pk11")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SIMPLE_TPM_PK11_TPM", sw.Spec)
	return &setup{sw: sw, dir: dir}
}

func (s *setup) tpm(t *testing.T) *tpm.TPM {
	t.Helper()
	sp, err := tpm.ParseSpec(s.sw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	return tpm.Open(sp)
}

// key makes a key in the TPM (or imports priv) and writes its file.
func (s *setup) key(t *testing.T, name string, ks tpm.KeySpec, priv crypto.Signer) string {
	t.Helper()
	var k *keyfile.Key
	err := s.tpm(t).Do(func(c *tpm.Conn) error {
		var err error
		if priv != nil {
			k, err = c.ImportKey(priv, ks)
		} else {
			k, err = c.CreateKey(ks)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	pem, err := k.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.dir, name+".key")
	if err := os.WriteFile(path, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (s *setup) config(t *testing.T, text string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(s.dir, "config")
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// diagnose runs the checks that need no p11-kit or ssh.
func diagnose(d *Doctor) []Result {
	var rs []Result
	for _, f := range []func() []Result{d.CheckTPM, d.CheckParent, d.CheckConfig, d.CheckWeaknesses} {
		rs = append(rs, f()...)
	}
	return rs
}

func statuses(rs []Result, s Status) []Result {
	var out []Result
	for _, r := range rs {
		if r.Status == s {
			out = append(out, r)
		}
	}
	return out
}

// TestSwtpmHealthy: keys that load, a TPM that is not locked out: only
// ok lines, each saying what was found.
func TestSwtpmHealthy(t *testing.T) {
	s := newSetup(t, true)
	s.key(t, "rsa", tpm.KeySpec{Type: tpm.RSA, Bits: 2048}, nil)
	s.key(t, "ec", tpm.KeySpec{Type: tpm.ECDSA, Bits: 256, PIN: []byte("123456")}, nil)
	s.config(t, "key rsa.key\nkey ec.key label=laptop\n", 0o600)
	rs := diagnose(New(Options{}))
	if bad := append(statuses(rs, Problem), append(statuses(rs, Warning), statuses(rs, Skipped)...)...); len(bad) > 0 {
		t.Fatalf("a healthy setup has findings:\n%s", format(rs))
	}
	for _, want := range []string{
		"TPM " + s.sw.Spec + " (from SIMPLE_TPM_PK11_TPM)",
		"swtpm has no resource manager",
		"TPM 2.0 made by IBM, firmware ",
		"not locked out: 1000 wrong PINs allowed before the TPM locks out",
		"keys: RSA 1024, 2048, 3072 bits; ECDSA P-256, P-384",
		"storage parent 0x40000001 (ECC P-256): the owner hierarchy's standard storage primary can be created",
		`config "` + filepath.Join(s.dir, "config") + `": 2 keys`,
		`key "rsa" (line 1): "` + filepath.Join(s.dir, "rsa.key") + `", RSA 2048, loads in this TPM, no PIN`,
		`key "laptop" (line 2): "` + filepath.Join(s.dir, "ec.key") + `", ECDSA P-256, loads in this TPM, asks for its PIN when used`,
		"ROCA (CVE-2017-15361): the RSA key does not have the fingerprint",
		"TPM-Fail (CVE-2019-11090, CVE-2019-16863): this TPM is not one of the affected ones",
	} {
		if len(find(rs, want)) != 1 {
			t.Errorf("no line %q in:\n%s", want, format(rs))
		}
	}
}

// TestSwtpmWrongTPM: a key made by another TPM, and a key of a TPM that
// was cleared since, are problems that say so.
func TestSwtpmWrongTPM(t *testing.T) {
	s := newSetup(t, true)
	s.key(t, "k", tpm.KeySpec{Type: tpm.ECDSA, Bits: 256}, nil)
	s.config(t, "key k.key\n", 0o600)
	other := swtpmtest.Start(t, swtpmtest.Options{})
	const msg = `key "k" (line 1): "%s": the key was made by another TPM, this TPM was cleared since, or the key file's parts do not belong together (TPM_RC_INTEGRITY on load)`
	want := strings.Replace(msg, "%s", filepath.Join(s.dir, "k.key"), 1)

	rs := diagnose(New(Options{TPM: other.Spec}))
	wantOne(t, rs, Problem, want, "make a new key on this TPM with stpm-keygen")
	if n := len(statuses(rs, Problem)); n != 1 {
		t.Errorf("want exactly one problem:\n%s", format(rs))
	}

	if rs := diagnose(New(Options{})); len(statuses(rs, Problem)) != 0 {
		t.Fatalf("the key's own TPM:\n%s", format(rs))
	}
	s.sw.Tool(t, "tpm2_clear")
	wantOne(t, diagnose(New(Options{})), Problem, want, "restore a backup")
}

// TestSwtpmLockout: the dictionary-attack counter, as wrong PINs
// accumulate, until the TPM locks out (swtpm's defaults: 3 tries).
func TestSwtpmLockout(t *testing.T) {
	s := newSetup(t, false)
	path := s.key(t, "pin", tpm.KeySpec{Type: tpm.ECDSA, Bits: 256, PIN: []byte("123456")}, nil)
	s.config(t, "key pin.key\n", 0o600)
	k, err := keyfile.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("data"))
	wrong := func() {
		t.Helper()
		_, err := s.tpm(t).SignDigest(k, nil, []byte("999999"), digest[:], tpm.SignOpts{Hash: crypto.SHA256})
		if !errors.Is(err, tpm.ErrWrongPIN) {
			t.Fatalf("a wrong PIN: %v", err)
		}
	}
	lockoutLine := func() Result {
		t.Helper()
		rs := New(Options{}).CheckTPM()
		for _, r := range rs {
			if strings.Contains(r.Msg, "wrong PIN") {
				return r
			}
		}
		t.Fatalf("no lockout line:\n%s", format(rs))
		return Result{}
	}
	if r := lockoutLine(); r != ok("not locked out: 3 wrong PINs allowed before the TPM locks out, one is forgotten every 16m40s") {
		t.Errorf("fresh: %+v", r)
	}
	wrong()
	if r := lockoutLine(); r != ok("1 wrong PIN counted, 2 more allowed before the TPM locks out, one is forgotten every 16m40s") {
		t.Errorf("one wrong PIN: %+v", r)
	}
	wrong()
	if r := lockoutLine(); r != warning("type the next PIN carefully; a wrong one is forgotten every 16m40s", "2 wrong PINs counted: 1 more and the TPM locks out") {
		t.Errorf("two wrong PINs: %+v", r)
	}
	wrong()
	want := problem("wait, or clear the lockout with 'tpm2_dictionarylockout --clear-lockout' (needs the lockout authorization)",
		"the TPM is locked out after too many wrong PINs; it accepts a new try in about 16m40s")
	if r := lockoutLine(); r != want {
		t.Errorf("locked out: %+v", r)
	}
	// Loading the key needs no PIN: the doctor still checks it.
	rs := diagnose(New(Options{}))
	if len(statuses(rs, Problem)) != 1 || len(find(rs, `key "pin" (line 1)`)) != 1 || find(rs, `key "pin" (line 1)`)[0].Status != OK {
		t.Errorf("locked out:\n%s", format(rs))
	}
}

// TestSwtpmConfigProblems: broken lines, a missing and a corrupt key file,
// and a PIN in a file others can read; the PIN is never shown.
func TestSwtpmConfigProblems(t *testing.T) {
	s := newSetup(t, true)
	s.key(t, "good", tpm.KeySpec{Type: tpm.ECDSA, Bits: 256}, nil)
	if err := os.WriteFile(filepath.Join(s.dir, "corrupt.key"), []byte("-----BEGIN TSS2 PRIVATE KEY-----\nMAA=\n-----END TSS2 PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const pin = "4711-secret"
	cfg := s.config(t, "key good.key\nkye other.key\nkey missing.key\nkey corrupt.key\ntpm\nkey_pin "+pin+"\n", 0o644)
	rs := diagnose(New(Options{}))
	wantOne(t, rs, Problem, cfg+`:2: unknown directive "kye"`, "")
	wantOne(t, rs, Problem, cfg+`:5: missing value for "tpm"`, "")
	wantOne(t, rs, Problem, `key "missing" (line 3): "`+filepath.Join(s.dir, "missing.key")+`": no such file or directory`,
		"make it with 'stpm-keygen -o "+filepath.Join(s.dir, "missing.key")+"', or correct line 3 of")
	wantOne(t, rs, Problem, `key "corrupt" (line 4): "`+filepath.Join(s.dir, "corrupt.key")+`": `, "")
	wantOne(t, rs, Problem, `"`+cfg+`" holds a PIN and others may read it (mode 0644)`, `chmod 600 "`+cfg+`"`)
	wantOne(t, rs, Warning, "holds the keys' PIN (key_pin)", "remove key_pin")
	wantOne(t, rs, OK, `key "good" (line 1)`, "")
	if out := format(rs); strings.Contains(out, pin) {
		t.Errorf("the PIN is in the output:\n%s", out)
	}

	// -c names a config that does not exist.
	rs = New(Options{Config: filepath.Join(s.dir, "nope")}).CheckConfig()
	wantOne(t, rs, Problem, `no config file at "`+filepath.Join(s.dir, "nope")+`"`, "give -c the right file")
}

// TestSwtpmROCA: an RSA key with the ROCA fingerprint, imported into the
// TPM as a backed-up key would be, is a problem; a crypto/rsa key is not.
func TestSwtpmROCA(t *testing.T) {
	s := newSetup(t, true)
	weak, err := rocatest.Key(2048, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	strong, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	s.key(t, "weak", tpm.KeySpec{}, weak)
	s.key(t, "strong", tpm.KeySpec{}, strong)
	s.config(t, "key strong.key\nkey weak.key\n", 0o600)
	rs := diagnose(New(Options{}))
	wantOne(t, rs, Problem, `key "weak" (line 2): its RSA modulus has the ROCA fingerprint (CVE-2017-15361)`, "make a new key with stpm-keygen")
	if len(find(rs, "CVE-2017-15361")) != 1 || len(statuses(rs, Problem)) != 1 {
		t.Errorf("want only the weak key flagged:\n%s", format(rs))
	}
	s.config(t, "key strong.key\n", 0o600)
	wantOne(t, diagnose(New(Options{})), OK, "ROCA (CVE-2017-15361): the RSA key does not have the fingerprint", "")
}

// TestSwtpmParents: an owner hierarchy with a password (srk_pin missing,
// wrong, right) and a persistent parent (present, then gone).
func TestSwtpmParents(t *testing.T) {
	s := newSetup(t, true)
	s.sw.Tool(t, "tpm2_changeauth", "-c", "owner", "owner-pass")
	cfg := s.config(t, "", 0o600)
	parent := func() Result {
		t.Helper()
		d := New(Options{})
		d.CheckTPM()
		rs := d.CheckParent()
		if len(rs) != 1 {
			t.Fatalf("parent:\n%s", format(rs))
		}
		return rs[0]
	}
	r := parent()
	if r.Status != Problem || !strings.Contains(r.Msg, "storage parent 0x40000001 (ECC P-256): incorrect SRK PIN (owner hierarchy authorization)") ||
		!strings.Contains(r.Fix, `put it in "`+cfg+`" as srk_pin`) {
		t.Errorf("no srk_pin: %+v", r)
	}
	s.config(t, "srk_pin wrong-pass\n", 0o600)
	if r := parent(); r.Status != Problem || !strings.Contains(r.Fix, "srk_pin in \""+cfg+"\" is not the parent's authorization") {
		t.Errorf("wrong srk_pin: %+v", r)
	}
	s.config(t, "srk_pin owner-pass\n", 0o600)
	if r := parent(); r != ok("storage parent 0x40000001 (ECC P-256): the owner hierarchy's standard storage primary can be created with srk_pin as the owner authorization") {
		t.Errorf("right srk_pin: %+v", r)
	}

	// A persistent RSA storage key as the parent.
	ctx := filepath.Join(t.TempDir(), "p.ctx")
	s.sw.Tool(t, "tpm2_createprimary", "-C", "o", "-P", "owner-pass", "-c", ctx)
	s.sw.Tool(t, "tpm2_evictcontrol", "-C", "o", "-P", "owner-pass", "-c", ctx, "0x81000001")
	s.sw.Tool(t, "tpm2_flushcontext", "-t")
	s.key(t, "p", tpm.KeySpec{Type: tpm.ECDSA, Bits: 256, Parent: 0x81000001}, nil)
	s.config(t, "key p.key\n", 0o600)
	rs := diagnose(New(Options{}))
	wantOne(t, rs, OK, "storage parent 0x81000001: a persistent RSA 2048 storage key; its PIN works", "")
	wantOne(t, rs, OK, "ROCA (CVE-2017-15361): the RSA key does not have the fingerprint", "")
	s.sw.Tool(t, "tpm2_evictcontrol", "-C", "o", "-P", "owner-pass", "-c", "0x81000001")
	rs = diagnose(New(Options{}))
	wantOne(t, rs, Problem, "storage parent 0x81000001: no persistent parent key at 0x81000001 in this TPM", "tpm2_evictcontrol")
	wantOne(t, rs, Skipped, `key "p" (line 1): not loaded, its storage parent failed`, "")
}
