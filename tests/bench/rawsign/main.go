// Command rawsign measures the floor for a signature: TPM2_Sign on a key
// that is already loaded, over one open connection, straight through
// go-tpm. make bench compares the module against it. Two more modes time
// the module's TPM layer without the PKCS#11 part: "perop" signs as the
// module does on a TPM without resource manager (connect, lock, load from
// the saved context, sign, flush, each time), "keep" as it does on
// /dev/tpmrm0 (the key stays loaded; on swtpm this holds the TPM for the
// whole run).
//
//	rawsign -tpm SPEC -k KEY -n COUNT [-mode raw|perop|keep]
package main

import (
	"crypto"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

func main() {
	specFlag := flag.String("tpm", "", "TPM spec")
	keyPath := flag.String("k", "", "key file")
	n := flag.Int("n", 1000, "signatures")
	mode := flag.String("mode", "raw", "raw, perop or keep")
	flag.Parse()
	if *n < 1 {
		fmt.Fprintln(os.Stderr, "rawsign: -n must be at least 1")
		os.Exit(2)
	}
	var err error
	switch *mode {
	case "raw":
		err = run(*specFlag, *keyPath, *n)
	case "perop", "keep":
		err = runLayer(*specFlag, *keyPath, *n, *mode == "keep")
	default:
		fmt.Fprintf(os.Stderr, "rawsign: unknown -mode %q\n", *mode)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rawsign:", err)
		os.Exit(1)
	}
}

// open parses the spec and loads the key file.
func open(specStr, keyPath string) (tpm.Spec, *keyfile.Key, error) {
	spec, err := tpm.ParseSpec(specStr)
	if err != nil {
		return tpm.Spec{}, nil, err
	}
	k, err := keyfile.Load(keyPath)
	return spec, k, err
}

func run(specStr, keyPath string, n int) error {
	spec, k, err := open(specStr, keyPath)
	if err != nil {
		return err
	}
	pub, err := tpm.KeyPublic(k)
	if err != nil {
		return err
	}
	scheme := tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgECDSA,
		Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256})}
	if pub.Type == tpm2.TPMAlgRSA {
		scheme = tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgRSASSA,
			Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256})}
	}
	lat := make([]time.Duration, 0, n)
	start := time.Now()
	err = tpm.Open(spec).Do(func(c *tpm.Conn) error {
		l, err := c.LoadKey(k, nil)
		if err != nil {
			return err
		}
		for i := range n {
			d := sha256.Sum256([]byte{byte(i), byte(i >> 8), byte(i >> 16)})
			t0 := time.Now()
			_, err := tpm2.Sign{
				KeyHandle:  tpm2.NamedHandle{Handle: l.Handle, Name: l.Name},
				Digest:     tpm2.TPM2BDigest{Buffer: d[:]},
				InScheme:   scheme,
				Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
			}.Execute(c.Transport())
			if err != nil {
				return err
			}
			lat = append(lat, time.Since(t0))
		}
		return nil
	})
	if err != nil {
		return err
	}
	report(lat, time.Since(start))
	return nil
}

// runLayer signs through tpm.TPM.SignDigest, per operation or kept.
func runLayer(specStr, keyPath string, n int, keep bool) (err error) {
	spec, k, err := open(specStr, keyPath)
	if err != nil {
		return err
	}
	t := tpm.Open(spec)
	if err := t.SetKeepOpen(keep); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, t.Close()) }()
	lat := make([]time.Duration, 0, n)
	start := time.Now()
	for i := range n {
		d := sha256.Sum256([]byte{byte(i), byte(i >> 8), byte(i >> 16)})
		t0 := time.Now()
		if _, err := t.SignDigest(k, nil, nil, d[:], tpm.SignOpts{Hash: crypto.SHA256}); err != nil {
			return err
		}
		lat = append(lat, time.Since(t0))
	}
	report(lat, time.Since(start))
	return nil
}

func report(lat []time.Duration, elapsed time.Duration) {
	n := len(lat)
	slices.Sort(lat)
	fmt.Printf("signed=%d p50_us=%d p95_us=%d per_s=%.1f\n", n,
		lat[(n-1)*50/100].Microseconds(), lat[(n-1)*95/100].Microseconds(), float64(n)/elapsed.Seconds())
}
