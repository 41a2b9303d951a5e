package p11

import (
	"bytes"
	"crypto"
	"crypto/sha256"
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

// FuzzFindTemplate: a search with any template returns exactly the
// objects whose attributes all equal the template's.
func FuzzFindTemplate(f *testing.F) {
	f.Add(uint(CKA_CLASS), ulong(CKO_PRIVATE_KEY), uint(CKA_LABEL), []byte("ec"))
	f.Add(uint(CKA_SIGN), []byte{0xff}, uint(CKA_KEY_TYPE), ulong(CKK_RSA))
	f.Add(uint(CKA_VALUE), []byte{}, uint(0x7777), []byte{1})
	m := newModule(f, allKeys)
	h, err := m.OpenSession(SlotID, CKF_SERIAL_SESSION)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, t1 uint, v1 []byte, t2 uint, v2 []byte) {
		tmpl := []Attribute{{t1, v1}, {t2, v2}}
		if err := m.FindObjectsInit(h, tmpl); err != nil {
			t.Fatal(err)
		}
		found, err := m.FindObjects(h, 100)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.FindObjectsFinal(h); err != nil {
			t.Fatal(err)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		var want []uint
		for _, o := range m.objects {
			ok := m.visible(o)
			for _, a := range tmpl {
				v, rv := o.attr(a.Type)
				ok = ok && rv == CKR_OK && bytes.Equal(v, normalize(a))
			}
			if ok {
				want = append(want, o.handle)
			}
		}
		if len(found) != len(want) {
			t.Fatalf("template %v: found %v, want %v", tmpl, found, want)
		}
	})
}
