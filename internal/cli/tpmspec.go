package cli

import (
	"github.com/simple-tpm-pk11/simple-tpm-pk11/config"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// TPMSpec picks the TPM: --tpm, then $SIMPLE_TPM_PK11_TPM, then the
// config file's "tpm" line, then /dev/tpmrm0. The config file is read only
// when the first two are unset; a config that cannot be read is reported
// as a warning, not a failure, since the command may not need it.
func TPMSpec(u *UI, flag string) (tpm.Spec, error) {
	fromConfig := ""
	if flag == "" && getenv(tpm.EnvSpec) == "" {
		c, err := config.LoadDefault()
		switch {
		case err != nil:
			u.Warnf("%v", err)
		case c != nil:
			fromConfig = c.TPM
			c.Zero()
		}
	}
	return tpm.ResolveSpec(flag, fromConfig)
}
