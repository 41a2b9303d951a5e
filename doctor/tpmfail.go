package doctor

import "fmt"

// TPM-Fail (Moghimi, Sunar, Eisenbarth, Heninger: "TPM-FAIL: TPM meets
// Timing and Lattice Attacks", USENIX Security 2020): the time some TPMs
// take to make an ECDSA signature depends on the secret nonce, and a few
// thousand timed signatures give away the key, even over a network. RSA
// signatures are not affected.
//
//   - CVE-2019-11090, Intel PTT (the firmware TPM in the CSME/TXE):
//     fixed in 11.8.70, 11.11.70, 11.22.70, 12.0.45, 14.0.10 and TXE
//     3.1.70, 4.0.20 (INTEL-SA-00241; 13.x was never affected).
//     TPM_PT_FIRMWARE_VERSION_1 and _2 hold major<<16|minor and
//     hotfix<<16|build of that firmware.
//   - CVE-2019-16863, STMicroelectronics ST33TPHF2E and ST33TPHF20 (SPI
//     and I2C): ST lists the affected firmware versions; every other
//     version is not affected. TPM_PT_FIRMWARE_VERSION_1 holds
//     major<<16|minor.

// verdict is what is known about a TPM's firmware and one weakness.
type verdict int

const (
	notAffected verdict = iota
	mayBeAffected
	affected
)

// tpmFailFinding says whether a TPM is affected by TPM-Fail.
type tpmFailFinding struct {
	verdict verdict
	cve     string
	what    string // "Intel PTT firmware 11.8.50.3426"
	fixed   string // the first fixed version of that line, "" if unknown
}

// stAffected are ST's affected versions, from ST's advisory, with the
// fixed version of each line.
var stAffected = map[[2]uint64]string{
	{71, 0}: "71.16", {71, 4}: "71.16", {71, 12}: "71.16",
	{73, 0}: "73.20", {73, 4}: "73.20", {73, 8}: "73.64",
	{73, 5}: "73.21", {73, 9}: "73.65",
	{74, 0}: "74.20", {74, 4}: "74.20", {74, 8}: "74.64", {74, 16}: "74.64",
	{74, 5}: "74.21", {74, 9}: "74.65",
}

// firmwareParts splits TPM_PT_FIRMWARE_VERSION_1 and _2 (as tpm.Caps
// holds them) into four 16-bit numbers.
func firmwareParts(fw uint64) [4]uint64 {
	return [4]uint64{fw >> 48, fw >> 32 & 0xffff, fw >> 16 & 0xffff, fw & 0xffff}
}

// tpmFail checks a TPM's manufacturer and firmware against TPM-Fail.
func tpmFail(manufacturer string, fw uint64) tpmFailFinding {
	v := firmwareParts(fw)
	switch manufacturer {
	case "INTC":
		f := tpmFailFinding{cve: "CVE-2019-11090", what: "Intel firmware TPM " + firmwareString(manufacturer, fw)}
		f.verdict, f.fixed = intelTPMFail(v)
		return f
	case "STM":
		f := tpmFailFinding{cve: "CVE-2019-16863", what: fmt.Sprintf("STMicroelectronics TPM firmware %d.%d", v[0], v[1])}
		if fixed, bad := stAffected[[2]uint64{v[0], v[1]}]; bad {
			f.verdict, f.fixed = affected, fixed
		}
		return f
	}
	return tpmFailFinding{}
}

// intelTPMFail places an Intel firmware version major.minor.hotfix.build
// against INTEL-SA-00241.
func intelTPMFail(v [4]uint64) (verdict, string) {
	major, minor, hotfix := v[0], v[1], v[2]
	before := func(fixMinor, fixHotfix uint64) bool {
		return minor < fixMinor || minor == fixMinor && hotfix < fixHotfix
	}
	judge := func(bad bool, fixed string) (verdict, string) {
		if bad {
			return affected, fixed
		}
		return notAffected, ""
	}
	switch {
	case major == 11 && minor <= 8:
		return judge(before(8, 70), "11.8.70")
	case major == 11 && minor >= 10 && minor <= 11:
		return judge(before(11, 70), "11.11.70")
	case major == 11 && minor >= 20 && minor <= 22:
		return judge(before(22, 70), "11.22.70")
	case major == 11:
		return mayBeAffected, ""
	case major == 12:
		return judge(before(0, 45), "12.0.45")
	case major == 13:
		return notAffected, ""
	case major == 14:
		return judge(before(0, 10), "14.0.10")
	case major == 3:
		return judge(before(1, 70), "3.1.70")
	case major == 4 && minor == 0 && hotfix >= 20:
		return notAffected, ""
	case major == 4:
		// TXE 4.0 before 4.0.20, or the server firmware (SPS 4.x), whose
		// fixed builds differ by platform.
		return mayBeAffected, "4.0.20 (TXE)"
	case major < 11:
		// Older than every line Intel fixed: Haswell and Broadwell
		// machines (firmware 9 and 10) got no update.
		return mayBeAffected, ""
	}
	return notAffected, ""
}

// firmwareString formats a TPM's firmware version the way its maker
// writes it, as far as we know the maker's convention.
func firmwareString(manufacturer string, fw uint64) string {
	v := firmwareParts(fw)
	switch manufacturer {
	case "INTC":
		return fmt.Sprintf("%d.%d.%d.%d", v[0], v[1], v[2], v[3])
	case "IFX":
		// Infineon: 7.85.4555.0 is 0x00070055, 0x0011cb00.
		lo := fw & 0xffffffff
		return fmt.Sprintf("%d.%d.%d.%d", v[0], v[1], lo>>8&0xffff, lo&0xff)
	case "STM":
		return fmt.Sprintf("%d.%d", v[0], v[1])
	case "IBM":
		// The reference implementation (swtpm, the IBM simulator) puts
		// its date and time there: 0x20191023, 0x00163636.
		return fmt.Sprintf("%08x.%06x", fw>>32, fw&0xffffffff)
	}
	return fmt.Sprintf("%d.%d (0x%08x 0x%08x)", v[0], v[1], fw>>32, fw&0xffffffff)
}

// vendorNames are TCG vendor IDs (TPM_PT_MANUFACTURER) of makers whose
// TPMs are common, from the TCG Vendor ID Registry.
var vendorNames = map[string]string{
	"AMD":  "AMD",
	"ATML": "Atmel",
	"BRCM": "Broadcom",
	"GOOG": "Google",
	"HPE":  "HPE",
	"IBM":  "IBM",
	"IFX":  "Infineon",
	"INTC": "Intel",
	"LEN":  "Lenovo",
	"MSFT": "Microsoft",
	"NTC":  "Nuvoton",
	"NTZ":  "Nationz",
	"QCOM": "Qualcomm",
	"ROCC": "Fuzhou Rockchip",
	"SMSN": "Samsung",
	"SNS":  "Sinosun",
	"STM":  "STMicroelectronics",
	"TXN":  "Texas Instruments",
	"WEC":  "Winbond",
}

// vendorName names a TPM's maker.
func vendorName(id string) string {
	if n, ok := vendorNames[id]; ok && n != id {
		return fmt.Sprintf("%s (%s)", n, id)
	}
	if id == "" {
		return "an unnamed maker"
	}
	return id
}
