package doctor

import (
	"fmt"
	"math/big"
)

// CheckWeaknesses looks for known weaknesses: RSA keys (and an RSA
// storage parent) with the ROCA fingerprint, and TPM firmware that leaks
// ECDSA keys through timing (TPM-Fail).
func (d *Doctor) CheckWeaknesses() []Result {
	return append(d.checkROCA(), d.checkTPMFail())
}

func (d *Doctor) checkROCA() []Result {
	const name = "ROCA (CVE-2017-15361)"
	const fix = "update the TPM's firmware (Infineon fixed it in 2017), then make a new key with stpm-keygen and replace the public key everywhere it is authorized; ECDSA keys (stpm-keygen -t ecdsa) are not affected"
	var out []Result
	tested := 0
	test := func(what string, n *big.Int) {
		if n == nil {
			return
		}
		tested++
		if ROCAVulnerable(n) {
			out = append(out, problem(fix, "%s: its RSA modulus has the ROCA fingerprint (CVE-2017-15361): the private key can be computed from the public key", what))
		}
	}
	for _, k := range d.keys {
		test(keyName(k), k.rsaN)
	}
	for _, p := range d.parents {
		test("storage parent "+parentName(p), p.rsaN)
	}
	switch {
	case len(out) > 0:
		return out
	case tested == 0:
		return []Result{ok("%s: no RSA key to test", name)}
	case tested == 1:
		return []Result{ok("%s: the RSA key does not have the fingerprint", name)}
	}
	return []Result{ok("%s: none of the %d RSA keys has the fingerprint", name, tested)}
}

func (d *Doctor) checkTPMFail() Result {
	const name = "TPM-Fail (CVE-2019-11090, CVE-2019-16863)"
	if d.caps == nil {
		return skipped("%s: not checked, the TPM is not usable", name)
	}
	f := tpmFail(d.caps.Manufacturer, d.caps.Firmware)
	if f.verdict == notAffected {
		return ok("%s: this TPM is not one of the affected ones", name)
	}
	update := "update the TPM's firmware (the machine maker's firmware update)"
	if f.fixed != "" {
		update = fmt.Sprintf("update the TPM's firmware to %s or later (the machine maker's firmware update)", f.fixed)
	}
	is := "leaks"
	if f.verdict == mayBeAffected {
		is = "may leak"
	}
	ecdsa := d.ecdsaKeys()
	if len(ecdsa) > 0 {
		return warning(update+"; until then use RSA keys: stpm-keygen -t rsa",
			"%s: the %s %s ECDSA keys through the time it takes to sign, and the config has ECDSA keys: %s", f.cve, f.what, is, joinNames(ecdsa))
	}
	return warning(update+"; until then make RSA keys only: stpm-keygen -t rsa",
		"%s: the %s %s ECDSA keys through the time it takes to sign (the configured keys are not ECDSA)", f.cve, f.what, is)
}
