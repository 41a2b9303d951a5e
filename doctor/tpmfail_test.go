package doctor

import (
	"strings"
	"testing"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

func fw(a, b, c, d uint64) uint64 { return a<<48 | b<<32 | c<<16 | d }

func TestTPMFailVersions(t *testing.T) {
	for _, tc := range []struct {
		maker string
		fw    uint64
		want  verdict
		fixed string
	}{
		{"INTC", fw(11, 8, 50, 3426), affected, "11.8.70"},
		{"INTC", fw(11, 8, 70, 3626), notAffected, ""},
		{"INTC", fw(11, 8, 77, 3664), notAffected, ""},
		{"INTC", fw(11, 0, 25, 3000), affected, "11.8.70"},
		{"INTC", fw(11, 11, 65, 1590), affected, "11.11.70"},
		{"INTC", fw(11, 22, 65, 1590), affected, "11.22.70"},
		{"INTC", fw(11, 22, 70, 1600), notAffected, ""},
		{"INTC", fw(12, 0, 35, 1427), affected, "12.0.45"},
		{"INTC", fw(12, 0, 45, 1509), notAffected, ""},
		{"INTC", fw(13, 0, 0, 1000), notAffected, ""},
		{"INTC", fw(14, 0, 9, 1000), affected, "14.0.10"},
		{"INTC", fw(14, 0, 10, 1000), notAffected, ""},
		{"INTC", fw(15, 0, 20, 1000), notAffected, ""},
		{"INTC", fw(3, 0, 13, 1144), affected, "3.1.70"},
		{"INTC", fw(3, 1, 70, 2000), notAffected, ""},
		{"INTC", fw(4, 0, 20, 1000), notAffected, ""},
		{"INTC", fw(4, 1, 4, 300), mayBeAffected, "4.0.20 (TXE)"},
		{"INTC", fw(10, 0, 50, 1000), mayBeAffected, ""},
		{"STM", fw(73, 4, 0, 0), affected, "73.20"},
		{"STM", fw(73, 8, 17568, 4000), affected, "73.64"},
		{"STM", fw(71, 12, 0, 0), affected, "71.16"},
		{"STM", fw(74, 16, 0, 0), affected, "74.64"},
		{"STM", fw(73, 20, 0, 0), notAffected, ""},
		{"STM", fw(73, 64, 0, 0), notAffected, ""},
		{"STM", fw(1, 769, 0, 0), notAffected, ""},
		{"IFX", fw(7, 61, 0, 0xae100), notAffected, ""},
		{"IBM", 0x2019102300163636, notAffected, ""},
	} {
		f := tpmFail(tc.maker, tc.fw)
		if f.verdict != tc.want || f.fixed != tc.fixed {
			t.Errorf("%s %s: verdict %d fixed %q, want %d %q", tc.maker, firmwareString(tc.maker, tc.fw), f.verdict, f.fixed, tc.want, tc.fixed)
		}
	}
}

func TestFirmwareString(t *testing.T) {
	for _, tc := range []struct {
		maker string
		fw    uint64
		want  string
	}{
		{"INTC", 720904<<32 | 3280226, "11.8.50.3426"},
		{"IFX", 0x00070055<<32 | 0x0011cb00, "7.85.4555.0"},
		{"IFX", 0x0007003d<<32 | 0x000ae100, "7.61.2785.0"},
		{"STM", 0x00490004<<32 | 0x12345678, "73.4"},
		{"IBM", 0x20191023<<32 | 0x00163636, "20191023.163636"},
		{"NTC", 0x00070002<<32 | 0x00000003, "7.2 (0x00070002 0x00000003)"},
	} {
		if got := firmwareString(tc.maker, tc.fw); got != tc.want {
			t.Errorf("%s %#x: %q, want %q", tc.maker, tc.fw, got, tc.want)
		}
	}
}

// TestTPMFailWarning: an affected TPM is a warning that names the ECDSA
// keys and recommends RSA and a firmware update; it is not a problem.
func TestTPMFailWarning(t *testing.T) {
	d := New(Options{})
	d.caps = &tpm.Caps{Manufacturer: "INTC", Firmware: fw(11, 8, 50, 3426)}
	d.keys = []*keyState{
		{cfg: configKey("laptop", 1), key: nopKey(), ecdsa: true},
		{cfg: configKey("work", 2), key: nopKey()},
	}
	r := d.checkTPMFail()
	want := Result{Status: Warning,
		Msg: `CVE-2019-11090: the Intel firmware TPM 11.8.50.3426 leaks ECDSA keys through the time it takes to sign, and the config has ECDSA keys: "laptop"`,
		Fix: "update the TPM's firmware to 11.8.70 or later (the machine maker's firmware update); until then use RSA keys: stpm-keygen -t rsa"}
	if r != want {
		t.Errorf("got  %+v\nwant %+v", r, want)
	}
	d.keys = d.keys[1:]
	if r := d.checkTPMFail(); r.Status != Warning || !strings.Contains(r.Msg, "not ECDSA") || !strings.Contains(r.Fix, "stpm-keygen -t rsa") {
		t.Errorf("without ECDSA keys: %+v", r)
	}
	d.caps = &tpm.Caps{Manufacturer: "STM", Firmware: fw(73, 20, 0, 0)}
	if r := d.checkTPMFail(); r.Status != OK {
		t.Errorf("fixed ST firmware: %+v", r)
	}
	d.caps = nil
	if r := d.checkTPMFail(); r.Status != Skipped {
		t.Errorf("no TPM: %+v", r)
	}
}
