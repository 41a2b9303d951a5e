// Package rocatest makes RSA keys with the ROCA fingerprint
// (CVE-2017-15361) for tests: each prime is k·M + (65537^a mod M), M the
// product of the small primes the published detector tests, which is the
// structure of the primes Infineon's library made.
package rocatest

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"math/big"
)

// smallPrimes are the primes 3 to 167 that divide M.
var smallPrimes = []int64{
	3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73,
	79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
}

// Key makes an RSA key of bits (at least 512, a multiple of 16) whose
// modulus has the ROCA fingerprint, with public exponent 65537.
func Key(bits int, random io.Reader) (*rsa.PrivateKey, error) {
	if bits < 512 || bits%16 != 0 {
		return nil, errors.New("rocatest: bits must be a multiple of 16, at least 512")
	}
	if random == nil {
		random = rand.Reader
	}
	for {
		p, err := Prime(bits/2, random)
		if err != nil {
			return nil, err
		}
		q, err := Prime(bits/2, random)
		if err != nil {
			return nil, err
		}
		if p.Cmp(q) == 0 {
			continue
		}
		k, err := fromPrimes(p, q)
		if err != nil {
			continue // 65537 divides p-1 or q-1: try other primes
		}
		if k.N.BitLen() == bits {
			return k, nil
		}
	}
}

// Prime returns a prime of exactly bits bits (its top two bits set, so
// two of them make a modulus of 2·bits bits) of the form
// k·M + (65537^a mod M).
func Prime(bits int, random io.Reader) (*big.Int, error) {
	m := big.NewInt(1)
	for _, p := range smallPrimes {
		m.Mul(m, big.NewInt(p))
	}
	if bits <= m.BitLen()+8 {
		return nil, errors.New("rocatest: too few bits for the structure")
	}
	// a is drawn from a range much larger than any order modulo M.
	aMax := new(big.Int).Lsh(big.NewInt(1), 64)
	kMax := new(big.Int).Rsh(new(big.Int).Lsh(big.NewInt(1), uint(bits)), uint(m.BitLen()-1))
	top := new(big.Int).Lsh(big.NewInt(3), uint(bits-2))
	g := big.NewInt(65537)
	for {
		a, err := rand.Int(random, aMax)
		if err != nil {
			return nil, err
		}
		k, err := rand.Int(random, kMax)
		if err != nil {
			return nil, err
		}
		p := new(big.Int).Exp(g, a, m)
		p.Add(p, k.Mul(k, m))
		if p.BitLen() != bits || new(big.Int).And(p, top).Cmp(top) != 0 {
			continue
		}
		if p.ProbablyPrime(20) {
			return p, nil
		}
	}
}

// fromPrimes builds a checked private key with exponent 65537.
func fromPrimes(p, q *big.Int) (*rsa.PrivateKey, error) {
	one := big.NewInt(1)
	pm, qm := new(big.Int).Sub(p, one), new(big.Int).Sub(q, one)
	lambda := new(big.Int).Div(new(big.Int).Mul(pm, qm), new(big.Int).GCD(nil, nil, pm, qm))
	e := big.NewInt(65537)
	d := new(big.Int).ModInverse(e, lambda)
	if d == nil {
		return nil, errors.New("rocatest: 65537 is not invertible")
	}
	k := &rsa.PrivateKey{
		PublicKey: rsa.PublicKey{N: new(big.Int).Mul(p, q), E: 65537},
		D:         d,
		Primes:    []*big.Int{p, q},
	}
	k.Precompute()
	if err := k.Validate(); err != nil {
		return nil, err
	}
	return k, nil
}
