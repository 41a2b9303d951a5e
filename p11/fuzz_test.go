package p11

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"slices"
	"testing"
)

// FuzzParseDigestInfo: any input either parses to a digest of its
// algorithm's length or is refused; never a panic.
func FuzzParseDigestInfo(f *testing.F) {
	d := sha256.Sum256([]byte("seed"))
	f.Add(append([]byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}, d[:]...))
	f.Add(append([]byte{0x30, 0x2f, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x04, 0x20}, d[:]...))
	f.Add([]byte{})
	f.Add(d[:])
	f.Fuzz(func(t *testing.T, in []byte) {
		h, digest, err := ParseDigestInfo(in)
		if err != nil {
			return
		}
		if h != crypto.SHA1 && h != crypto.SHA256 && h != crypto.SHA384 && h != crypto.SHA512 {
			t.Fatalf("hash %v", h)
		}
		if len(digest) != h.Size() || !bytes.HasSuffix(in, digest) {
			t.Fatalf("digest %x of %v from %x", digest, h, in)
		}
	})
}

// FuzzPSSParams: parameters are accepted only in the form a TPM signs
// (MGF1 over the signature hash, salt = hash length).
func FuzzPSSParams(f *testing.F) {
	f.Add(pssParams(CKM_SHA256, CKG_MGF1_SHA256, 32), uint(0))
	f.Add(pssParams(CKM_SHA512, CKG_MGF1_SHA512, 64), uint(CKM_SHA512_RSA_PKCS_PSS))
	f.Add([]byte{1, 2, 3}, uint(0))
	f.Fuzz(func(t *testing.T, param []byte, mech uint) {
		var mechHash crypto.Hash
		if s, ok := mechs[mech]; ok && s.pss {
			mechHash = s.hash
		}
		h, err := parsePSSParams(param, mechHash)
		if err != nil {
			if RV(err) != CKR_MECHANISM_PARAM_INVALID {
				t.Fatalf("error %v with CK_RV %s", err, RVName(RV(err)))
			}
			return
		}
		if !bytes.Equal(param, pssParams(hashMechOf(h), mgfOf(h), uint(h.Size()))) {
			t.Fatalf("accepted %x for %v", param, h)
		}
	})
}

func hashMechOf(h crypto.Hash) uint {
	for m, mh := range hashMechs {
		if mh == h {
			return m
		}
	}
	return 0
}

func mgfOf(h crypto.Hash) uint {
	for m, mh := range mgfs {
		if mh == h {
			return m
		}
	}
	return 0
}

// FuzzFindTemplate: a search with any template, of any length, returns
// exactly the objects whose attributes all equal the template's, as an
// independent matcher in the test finds them attribute by attribute.
// The input is a list of attributes: a type byte (known types, and
// unknown ones from 0x80 up) and a length byte, then the value (cut
// short at the end of the input: values of the wrong length too).
func FuzzFindTemplate(f *testing.F) {
	f.Add(encTemplate())
	f.Add(encTemplate(Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)}, Attribute{CKA_LABEL, []byte("ec")}))
	f.Add(encTemplate(Attribute{CKA_SIGN, []byte{0xff}}, Attribute{CKA_KEY_TYPE, ulong(CKK_RSA)}))
	f.Add(encTemplate(Attribute{CKA_VALUE, []byte{}}, Attribute{0x7777, []byte{1}}))
	f.Add(encTemplate(Attribute{CKA_TOKEN, []byte{1}}, Attribute{CKA_PRIVATE, []byte{0}}, Attribute{CKA_CLASS, ulong(CKO_PUBLIC_KEY)},
		Attribute{CKA_KEY_TYPE, ulong(CKK_EC)}, Attribute{CKA_VERIFY, []byte{2}}))
	f.Add(encTemplate(Attribute{CKA_CLASS, []byte{3}}))
	m := newModule(f, allKeys)
	h, err := m.OpenSession(SlotID, CKF_SERIAL_SESSION)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tmpl := decTemplate(data)
		if err := m.FindObjectsInit(h, tmpl); err != nil {
			t.Fatal(err)
		}
		found, err := m.FindObjects(h, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.FindObjectsFinal(h); err != nil {
			t.Fatal(err)
		}
		want := matchIndependently(t, m, h, tmpl)
		if !slices.Equal(sorted(found), want) {
			t.Fatalf("template %v: found %v, want %v", tmpl, found, want)
		}
	})
}

// findTypes are the attribute types a FuzzFindTemplate input names with
// a type byte below 0x80.
var findTypes = []uint{
	CKA_CLASS, CKA_TOKEN, CKA_PRIVATE, CKA_LABEL, CKA_VALUE, CKA_CERTIFICATE_TYPE, CKA_ISSUER,
	CKA_SERIAL_NUMBER, CKA_TRUSTED, CKA_KEY_TYPE, CKA_SUBJECT, CKA_ID, CKA_SENSITIVE, CKA_ENCRYPT,
	CKA_DECRYPT, CKA_WRAP, CKA_UNWRAP, CKA_SIGN, CKA_SIGN_RECOVER, CKA_VERIFY, CKA_VERIFY_RECOVER,
	CKA_DERIVE, CKA_MODULUS, CKA_MODULUS_BITS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT,
	CKA_EXTRACTABLE, CKA_LOCAL, CKA_NEVER_EXTRACTABLE, CKA_ALWAYS_SENSITIVE, CKA_KEY_GEN_MECHANISM,
	CKA_MODIFIABLE, CKA_COPYABLE, CKA_DESTROYABLE, CKA_EC_PARAMS, CKA_EC_POINT,
	CKA_ALWAYS_AUTHENTICATE, CKA_WRAP_WITH_TRUSTED, CKA_PUBLIC_KEY_INFO, CKA_START_DATE, CKA_END_DATE,
}

// boolTypes are the CK_BBOOL attributes of PKCS#11 2.40 (4.4-4.9), listed
// here apart from the module's own list: a template's CK_BBOOL is true
// for any non-zero byte.
var boolTypes = map[uint]bool{
	CKA_TOKEN: true, CKA_PRIVATE: true, CKA_TRUSTED: true, CKA_SENSITIVE: true, CKA_ENCRYPT: true,
	CKA_DECRYPT: true, CKA_WRAP: true, CKA_UNWRAP: true, CKA_SIGN: true, CKA_SIGN_RECOVER: true,
	CKA_VERIFY: true, CKA_VERIFY_RECOVER: true, CKA_DERIVE: true, CKA_EXTRACTABLE: true, CKA_LOCAL: true,
	CKA_NEVER_EXTRACTABLE: true, CKA_ALWAYS_SENSITIVE: true, CKA_MODIFIABLE: true, CKA_COPYABLE: true,
	CKA_DESTROYABLE: true, CKA_ALWAYS_AUTHENTICATE: true, CKA_WRAP_WITH_TRUSTED: true,
}

func encTemplate(tmpl ...Attribute) []byte {
	var b []byte
	for _, a := range tmpl {
		i := slices.Index(findTypes, a.Type)
		if i < 0 {
			i = 0x80 | int(a.Type&0x7f)
		}
		b = append(b, byte(i), byte(len(a.Value)))
		b = append(b, a.Value...)
	}
	return b
}

func decTemplate(data []byte) []Attribute {
	tmpl := []Attribute{}
	for len(data) >= 2 {
		t := uint(0x7000) | uint(data[0])
		if int(data[0]) < len(findTypes) {
			t = findTypes[data[0]]
		}
		n := min(int(data[1]), len(data)-2)
		tmpl = append(tmpl, Attribute{Type: t, Value: bytes.Clone(data[2 : 2+n])})
		data = data[2+n:]
	}
	return tmpl
}

// matchIndependently lists the visible objects whose every attribute the
// template names has the template's value, reading each object's
// attributes through C_GetAttributeValue.
func matchIndependently(t *testing.T, m *Module, h uint, tmpl []Attribute) []uint {
	m.mu.Lock()
	var handles []uint
	for _, o := range m.objects {
		if m.visible(o) {
			handles = append(handles, o.handle)
		}
	}
	m.mu.Unlock()
	want := []uint{}
	for _, obj := range handles {
		ok := true
		for _, a := range tmpl {
			v, err := m.GetAttributeValue(h, obj, []uint{a.Type})
			if err != nil {
				t.Fatal(err)
			}
			have := v[0]
			switch {
			case have.RV != CKR_OK:
				ok = false
			case boolTypes[a.Type] && len(a.Value) == 1 && len(have.Value) == 1:
				ok = ok && (a.Value[0] != 0) == (have.Value[0] != 0)
			default:
				ok = ok && string(a.Value) == string(have.Value)
			}
		}
		if ok {
			want = append(want, obj)
		}
	}
	return sorted(want)
}

func sorted(s []uint) []uint {
	s = slices.Clone(s)
	slices.Sort(s)
	if s == nil {
		s = []uint{}
	}
	return s
}
