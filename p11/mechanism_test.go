package p11

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/config"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// TestMechanismsOf: what the token lists follows what the TPM reports,
// with the key sizes it accepts and the flags of a hardware signer that
// also verifies (in software).
func TestMechanismsOf(t *testing.T) {
	algs := func(ids ...tpm2.TPMAlgID) map[tpm2.TPMAlgID]bool {
		m := map[tpm2.TPMAlgID]bool{}
		for _, id := range ids {
			m[id] = true
		}
		return m
	}
	hashes := []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512}
	noSHA1 := hashes[1:]
	rsa := []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS}
	ecc := []tpm2.TPMAlgID{tpm2.TPMAlgECC, tpm2.TPMAlgECDSA}
	all := slices.Concat(hashes, rsa, ecc)

	rsaPKCS := []uint{CKM_RSA_PKCS, CKM_SHA1_RSA_PKCS, CKM_SHA256_RSA_PKCS, CKM_SHA384_RSA_PKCS, CKM_SHA512_RSA_PKCS}
	rsaPSS := []uint{CKM_RSA_PKCS_PSS, CKM_SHA1_RSA_PKCS_PSS, CKM_SHA256_RSA_PKCS_PSS, CKM_SHA384_RSA_PKCS_PSS, CKM_SHA512_RSA_PKCS_PSS}
	ecdsa := []uint{CKM_ECDSA, CKM_ECDSA_SHA1, CKM_ECDSA_SHA256, CKM_ECDSA_SHA384, CKM_ECDSA_SHA512}
	without := func(list []uint, drop ...uint) []uint {
		return slices.DeleteFunc(slices.Clone(list), func(m uint) bool { return slices.Contains(drop, m) })
	}
	noPSS := slices.DeleteFunc(slices.Clone(all), func(a tpm2.TPMAlgID) bool { return a == tpm2.TPMAlgRSAPSS })
	const signFlags = CKF_HW | CKF_SIGN | CKF_VERIFY
	const ecFlags = signFlags | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS

	for _, tc := range []struct {
		name           string
		caps           tpm.Caps
		rsa, ec        []uint
		rsaMin, rsaMax uint
		ecMin, ecMax   uint
	}{
		{"everything", tpm.Caps{Algs: algs(all...), RSABits: []int{1024, 2048, 3072, 4096}, ECCBits: []int{256, 384}},
			slices.Concat(rsaPKCS, rsaPSS), ecdsa, 1024, 4096, 256, 384},
		{"no RSA-PSS", tpm.Caps{Algs: algs(noPSS...), RSABits: []int{2048, 3072}, ECCBits: []int{256, 384}},
			rsaPKCS, ecdsa, 2048, 3072, 256, 384},
		{"no SHA-1", tpm.Caps{Algs: algs(slices.Concat(noSHA1, rsa, ecc)...), RSABits: []int{2048}, ECCBits: []int{256}},
			without(slices.Concat(rsaPKCS, rsaPSS), CKM_SHA1_RSA_PKCS, CKM_SHA1_RSA_PKCS_PSS), without(ecdsa, CKM_ECDSA_SHA1), 2048, 2048, 256, 256},
		{"RSA 2048 only", tpm.Caps{Algs: algs(slices.Concat(hashes, rsa)...), RSABits: []int{2048}},
			slices.Concat(rsaPKCS, rsaPSS), nil, 2048, 2048, 0, 0},
		{"ECC P-256 only", tpm.Caps{Algs: algs(slices.Concat(hashes, ecc)...), ECCBits: []int{256}},
			nil, ecdsa, 0, 0, 256, 256},
		{"RSA listed, no size accepted; ECC without ECDSA", tpm.Caps{Algs: algs(slices.Concat(hashes, rsa, []tpm2.TPMAlgID{tpm2.TPMAlgECC})...), ECCBits: []int{256}},
			nil, nil, 0, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := mechanismsOf(&tc.caps)
			want := map[uint]MechanismInfo{}
			for _, m := range tc.rsa {
				want[m] = MechanismInfo{MinKeySize: tc.rsaMin, MaxKeySize: tc.rsaMax, Flags: signFlags}
			}
			for _, m := range tc.ec {
				want[m] = MechanismInfo{MinKeySize: tc.ecMin, MaxKeySize: tc.ecMax, Flags: ecFlags}
			}
			if !maps.Equal(got, want) {
				t.Errorf("mechanisms:\n got %s\nwant %s", mechString(got), mechString(want))
			}
		})
	}
}

func mechString(m map[uint]MechanismInfo) string {
	s := ""
	for _, k := range slices.Sorted(maps.Keys(m)) {
		s += fmt.Sprintf("0x%X:%d-%d/%#x ", k, m[k].MinKeySize, m[k].MaxKeySize, m[k].Flags)
	}
	return s
}

// countingTPM passes commands to the simulator and counts them.
type countingTPM struct {
	transport.TPM
	sends *atomic.Int64
}

func (c countingTPM) Send(cmd []byte) ([]byte, error) {
	c.sends.Add(1)
	return c.TPM.Send(cmd)
}

// TestMechanismListCached: the mechanism list is worked out once per
// C_Initialize; the many C_GetMechanismInfo calls a tool makes send
// nothing to the TPM. A new C_Initialize asks again.
func TestMechanismListCached(t *testing.T) {
	dir := makeKeys(t)
	var sends atomic.Int64
	m := New()
	m.LoadConfig = func() (*config.Config, error) {
		return config.Parse(strings.NewReader("key ec.key\n"), filepath.Join(dir, "config")), nil
	}
	m.OpenTPM = func(tpm.Spec) *tpm.TPM { return tpm.FromTransport(countingTPM{TPM: sim, sends: &sends}) }
	m.Getenv = func(string) string { return "" }
	for round := range 2 {
		if err := m.Initialize(InitArgs{}); err != nil {
			t.Fatal(err)
		}
		before := sends.Load()
		list, err := m.MechanismList(SlotID)
		if err != nil {
			t.Fatal(err)
		}
		asked := sends.Load()
		if asked == before {
			t.Errorf("round %d: the first C_GetMechanismList sent no command to the TPM", round)
		}
		m.mu.Lock()
		cached := m.mechs
		m.mu.Unlock()
		if cached == nil {
			t.Fatalf("round %d: no mechanism list kept after C_GetMechanismList", round)
		}
		for range 3 {
			for _, mech := range list {
				if _, err := m.GetMechanismInfo(SlotID, mech); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := m.MechanismList(SlotID); err != nil {
				t.Fatal(err)
			}
		}
		if n := sends.Load() - asked; n != 0 {
			t.Errorf("round %d: %d commands to the TPM after the first list, want 0", round, n)
		}
		m.mu.Lock()
		same := fmt.Sprintf("%p", m.mechs) == fmt.Sprintf("%p", cached)
		m.mu.Unlock()
		if !same {
			t.Errorf("round %d: the mechanism list was worked out again", round)
		}
		if err := m.Finalize(); err != nil {
			t.Fatal(err)
		}
		m.mu.Lock()
		if m.mechs != nil {
			t.Errorf("round %d: mechanism list kept after C_Finalize", round)
		}
		m.mu.Unlock()
	}
}
