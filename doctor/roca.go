package doctor

import "math/big"

// ROCA (CVE-2017-15361; Nemec, Sýs, Švenda, Klinec, Matyáš: "The Return
// of Coppersmith's Attack: Practical Factorization of Widely Used RSA
// Moduli", ACM CCS 2017): Infineon's RSA library, in its smart cards and
// TPMs (firmware before 2017), made primes of the form
// p = k·M + (65537^a mod M), M a primorial. Such primes, and so their
// products, are powers of 65537 modulo every small prime dividing M, which
// random moduli almost never are; and the structure lets anyone factor
// the modulus from the public key.
//
// The test is the published detector's: for every prime r below, N mod r
// must lie in the subgroup that 65537 generates in (Z/rZ)*. A random
// modulus passes all 38 with a probability far below 2^-100.

// rocaPrimes are the small primes the published detector tests.
var rocaPrimes = []uint64{
	3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73,
	79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
}

// rocaGenerator is the generator of the vulnerable primes' structure.
const rocaGenerator = 65537

// residueSet is a set of residues modulo a prime below 192.
type residueSet [3]uint64

func (s *residueSet) add(r uint64)      { s[r/64] |= 1 << (r % 64) }
func (s *residueSet) has(r uint64) bool { return s[r/64]&(1<<(r%64)) != 0 }

// rocaSubgroups[i] is the subgroup 65537 generates modulo rocaPrimes[i].
var rocaSubgroups = func() []residueSet {
	sets := make([]residueSet, len(rocaPrimes))
	for i, p := range rocaPrimes {
		g := rocaGenerator % p
		for r := uint64(1); ; {
			sets[i].add(r)
			if r = r * g % p; r == 1 {
				break
			}
		}
	}
	return sets
}()

// ROCAVulnerable reports whether the RSA modulus n has the ROCA
// fingerprint: its private key can then be computed from it.
func ROCAVulnerable(n *big.Int) bool {
	if n == nil || n.Sign() <= 0 {
		return false
	}
	var r, m big.Int
	for i, p := range rocaPrimes {
		m.SetUint64(p)
		if !rocaSubgroups[i].has(r.Mod(n, &m).Uint64()) {
			return false
		}
	}
	return true
}
