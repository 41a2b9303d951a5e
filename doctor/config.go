package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/config"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// loadConfig reads the config file as the module does (or the one -c
// names) and parses every key file it names. It runs once, before the
// TPM check, which needs the config's tpm line.
func (d *Doctor) loadConfig() {
	if d.cfg != nil || d.cfgErr != nil {
		return
	}
	switch {
	case d.opts.Config != "":
		d.cfgPath = d.opts.Config
		d.cfg, d.cfgErr = config.Load(d.opts.Config)
	default:
		d.cfgPath, d.cfgErr = config.Path()
		if d.cfgErr == nil {
			d.cfg, d.cfgErr = config.LoadDefault()
		}
	}
	if d.cfg == nil {
		return
	}
	for _, ck := range d.cfg.Keys {
		ks := &keyState{cfg: ck}
		d.keys = append(d.keys, ks)
		k, err := keyfile.Load(ck.Path)
		if err == nil {
			err = tpm.CheckKeyFile(k)
		}
		if err != nil {
			ks.err = err
			continue
		}
		pub, err := tpm.KeyPublic(k)
		if err != nil {
			ks.err = err
			continue
		}
		ks.key = k
		ks.desc = describePublic(pub, "ECDSA")
		ks.rsaN = rsaModulus(pub)
		ks.ecdsa = pub.Type == tpm2.TPMAlgECC
	}
}

// CheckConfig reports the config file: whether it parses, each key it
// names (the file parses and the key loads in this TPM), how the keys'
// PINs are given, and whether a PIN in the file is exposed.
func (d *Doctor) CheckConfig() []Result {
	d.loadConfig()
	if d.cfgErr != nil {
		return []Result{d.configReadProblem()}
	}
	var out []Result
	c := d.cfg
	if c.File == "" {
		out = append(out, ok("no config file at %q (none is needed): the module offers the default key", d.cfgPath))
	} else {
		out = append(out, ok("config %q: %s", c.File, plural(len(c.Keys), "key")))
	}
	for _, p := range c.Problems {
		// The module skips such lines and logs each one at every start.
		out = append(out, problem("", "%s", p))
	}
	if _, bad := c.InsecurePINs(); bad {
		mode := ""
		if fi, err := os.Stat(c.File); err == nil {
			mode = fmt.Sprintf(" (mode %04o)", fi.Mode().Perm())
		}
		out = append(out, problem(fmt.Sprintf("chmod 600 %q", c.File),
			"%q holds a PIN and others may read it%s", c.File, mode))
	}
	if c.HasKeyPIN {
		out = append(out, warning("remove key_pin and let programs ask for the PIN (ssh-agent asks once: ssh-add -s MODULE)",
			"%q holds the keys' PIN (key_pin): whoever can read the file, or a backup of it, can use the keys without you", c.File))
	}
	for _, k := range d.keys {
		out = append(out, d.checkKey(k))
	}
	return out
}

// configReadProblem explains a config that cannot be read.
func (d *Doctor) configReadProblem() Result {
	err := d.cfgErr
	var pe *fs.PathError
	reason := err.Error()
	if errors.As(err, &pe) {
		reason = pe.Err.Error()
	}
	switch {
	case errors.Is(err, fs.ErrNotExist) && d.opts.Config != "":
		return problem("create it, or give -c the right file", "no config file at %q", d.cfgPath)
	case errors.Is(err, fs.ErrNotExist):
		return problem("create it, or set "+config.EnvConfig+" to the right file", "no config file at %q (named by %s)", d.cfgPath, config.EnvConfig)
	case errors.Is(err, fs.ErrPermission):
		return problem("make it readable by this user (its owner should be you, mode 0600)", "cannot read the config %q: %s; the module then offers no keys", d.cfgPath, reason)
	}
	return problem("", "cannot read the config %q: %s", d.cfgPath, reason)
}

// keyName names a configured key in results.
func keyName(k *keyState) string {
	where := "the default key"
	if k.cfg.Line > 0 {
		where = fmt.Sprintf("line %d", k.cfg.Line)
	}
	return fmt.Sprintf("key %q (%s)", k.cfg.Label, where)
}

func (d *Doctor) checkKey(k *keyState) Result {
	if k.err != nil {
		return problem(d.keyFileFix(k), "%s: %v", keyName(k), k.err)
	}
	if !d.tpmOK {
		return skipped("%s: %q holds an %s key; not loaded, the TPM is not usable", keyName(k), k.cfg.Path, k.desc)
	}
	for _, p := range d.parents {
		if p.handle == k.key.Parent && p.rsa == k.key.RSAParent && !p.ok {
			return skipped("%s: not loaded, its storage parent failed (see above)", keyName(k))
		}
	}
	err := d.tpm.Do(func(c *tpm.Conn) error {
		_, err := c.LoadKey(k.key, d.srkPIN())
		return err
	})
	if err != nil {
		return problem(tpm.Hint(err), "%s: %q: %v", keyName(k), k.cfg.Path, err)
	}
	return ok("%s: %q, %s, loads in this TPM, %s", keyName(k), k.cfg.Path, k.desc, d.pinStatus(k))
}

// pinStatus says how a key's PIN is given.
func (d *Doctor) pinStatus(k *keyState) string {
	switch {
	case !tpm.NeedsPIN(k.key):
		return "no PIN"
	case d.cfg.HasKeyPIN:
		return "its PIN comes from key_pin"
	}
	return "asks for its PIN when used"
}

// keyFileFix says what to do about a key file that does not parse.
func (d *Doctor) keyFileFix(k *keyState) string {
	where := "the key line"
	if k.cfg.Line > 0 && d.cfg != nil {
		where = fmt.Sprintf("line %d of %q", k.cfg.Line, d.cfg.File)
	}
	switch {
	case errors.Is(k.err, fs.ErrNotExist) && k.cfg.Line == 0:
		return fmt.Sprintf("make it with 'stpm-keygen -o %s', or name your keys in %q with key lines", k.cfg.Path, d.cfgPath)
	case errors.Is(k.err, fs.ErrNotExist):
		return fmt.Sprintf("make it with 'stpm-keygen -o %s', or correct %s (relative names are taken from %s)", k.cfg.Path, where, filepath.Dir(k.cfg.Path))
	case errors.Is(k.err, fs.ErrPermission):
		return "make it readable by this user"
	case errors.Is(k.err, tpm.ErrBadKey):
		return "make a new key with stpm-keygen, or remove " + where
	}
	return "it is not a TSS2 PRIVATE KEY file: point " + where + " at one made by stpm-keygen"
}

// ecdsaKeys names the configured ECDSA keys.
func (d *Doctor) ecdsaKeys() []string {
	var names []string
	for _, k := range d.keys {
		if k.key != nil && k.ecdsa {
			names = append(names, fmt.Sprintf("%q", k.cfg.Label))
		}
	}
	return names
}

func joinNames(names []string) string { return strings.Join(names, ", ") }
