package tests

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/swtpmtest"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// TestDuplicationRefused asks swtpm to export (TPM2_Duplicate) a key that
// stpm-keygen made, and expects the TPM to refuse: the private key of a
// non-migratable key cannot leave the TPM.
func TestDuplicationRefused(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{TCP: true})
	dir := t.TempDir()
	for _, args := range [][]string{{"-o", "rsa.key"}, {"-t", "ecdsa", "-o", "ec.key"}} {
		if _, err := stpm(t, sw.Spec, dir, "stpm-keygen", args...); err != nil {
			t.Fatal(err)
		}
	}
	spec, err := tpm.ParseSpec(sw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"rsa.key", "ec.key"} {
		k, err := keyfile.Load(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		err = tpm.Open(spec).Do(func(c *tpm.Conn) error {
			l, err := c.LoadKey(k, nil)
			if err != nil {
				return err
			}
			_, err = tpm2.Duplicate{
				ObjectHandle: tpm2.AuthHandle{Handle: l.Handle, Name: l.Name,
					Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(t transport.TPM, h tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) error {
						_, err := tpm2.PolicyCommandCode{PolicySession: h, Code: tpm2.TPMCCDuplicate}.Execute(t)
						return err
					})},
				NewParentHandle: tpm2.TPMRHNull,
				Symmetric:       tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
			}.Execute(c.Transport())
			return err
		})
		if !errors.Is(err, tpm2.TPMRCPolicyFail) {
			t.Errorf("%s: TPM2_Duplicate gave %v, want TPM_RC_POLICY_FAIL (no duplication allowed)", name, err)
		}
	}
	if hs := sw.TransientHandles(t); len(hs) != 0 {
		t.Errorf("transient objects left: %v", hs)
	}
}
