package doctor

import (
	"crypto/rand"
	"crypto/rsa"
	"math/big"
	"testing"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/rocatest"
)

// TestROCASubgroups checks the computed subgroups against the first
// bitmasks the published detector lists.
func TestROCASubgroups(t *testing.T) {
	published := []uint64{6, 30, 126, 1026, 5658, 107286, 199410, 8388606, 536870910, 2147483646}
	for i, want := range published {
		if got := rocaSubgroups[i][0]; got != want {
			t.Errorf("subgroup of 65537 mod %d: mask %d, the detector has %d", rocaPrimes[i], got, want)
		}
	}
	if len(rocaPrimes) != 38 || rocaPrimes[len(rocaPrimes)-1] != 167 {
		t.Errorf("the detector tests the 38 primes from 3 to 167, not %v", rocaPrimes)
	}
}

// TestROCAFlagsStructuredModuli: moduli made as Infineon's library made
// them are flagged, at several sizes.
func TestROCAFlagsStructuredModuli(t *testing.T) {
	for _, bits := range []int{512, 512, 512, 1024, 2048} {
		k, err := rocatest.Key(bits, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if !ROCAVulnerable(k.N) {
			t.Errorf("a %d-bit modulus of structured primes is not flagged", bits)
		}
	}
}

// TestROCASparesOtherModuli: keys from crypto/rsa, a modulus with only
// one structured prime, and nonsense are not flagged.
func TestROCASparesOtherModuli(t *testing.T) {
	for _, bits := range []int{1024, 1024, 1024, 1024, 2048, 2048} {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		if ROCAVulnerable(k.N) {
			t.Errorf("crypto/rsa's %d-bit key flagged", bits)
		}
	}
	for i := 0; i < 3; i++ {
		p, err := rocatest.Prime(512, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		q, err := rand.Prime(rand.Reader, 512)
		if err != nil {
			t.Fatal(err)
		}
		if ROCAVulnerable(new(big.Int).Mul(p, q)) {
			t.Error("a modulus with one structured and one random prime flagged")
		}
	}
	for _, n := range []*big.Int{nil, big.NewInt(0), big.NewInt(-65537)} {
		if ROCAVulnerable(n) {
			t.Errorf("%v flagged", n)
		}
	}
	// 65537 itself is in every subgroup: the test is about residues.
	if !ROCAVulnerable(big.NewInt(65537)) {
		t.Error("65537 is a power of 65537 modulo every prime, yet not flagged")
	}
}
