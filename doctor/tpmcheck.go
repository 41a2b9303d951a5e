package doctor

import (
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/google/go-tpm/tpm2"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// familyQuery is TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES,
// TPM_PT_FAMILY_INDICATOR, 1), sent raw so that the answer of a TPM 1.2
// can be recognized by its tag instead of failing to parse.
var familyQuery = []byte{
	0x80, 0x01, // TPM_ST_NO_SESSIONS
	0, 0, 0, 22, // size
	0, 0, 0x01, 0x7a, // TPM_CC_GetCapability
	0, 0, 0, 6, // TPM_CAP_TPM_PROPERTIES
	0, 0, 0x01, 0x00, // TPM_PT_FAMILY_INDICATOR
	0, 0, 0, 1, // one property
}

// tpm12ResponseTag is TPM_TAG_RSP_COMMAND, the tag of every TPM 1.2
// answer; a TPM 1.2 answers a TPM 2.0 command with it and TPM_BADTAG.
const tpm12ResponseTag = 0x00c4

// errTPM12 marks a TPM that answers as a TPM 1.2.
var errTPM12 = errors.New("TPM 1.2")

const tpm12Fix = "simple-tpm-pk11 needs a TPM 2.0: many machines can switch their TPM to 2.0 in the firmware setup or with the maker's firmware update; for a TPM 1.2 there is the original C++ simple-tpm-pk11"

// specSource says where the TPM spec came from, as tpm.ResolveSpec picks it.
func (d *Doctor) specSource() string {
	switch {
	case strings.TrimSpace(d.opts.TPM) != "":
		return "from --tpm"
	case strings.TrimSpace(os.Getenv(tpm.EnvSpec)) != "":
		return "from " + tpm.EnvSpec
	case d.cfg != nil && strings.TrimSpace(d.cfg.TPM) != "":
		return fmt.Sprintf("from the tpm line of %q", d.cfg.File)
	}
	return "the default"
}

// CheckTPM finds the TPM and asks it what it is: which spec names it,
// whether it answers and this user may use it, whether a resource manager
// shares it, who made it and which firmware it runs, whether it is a TPM
// 2.0, whether it is locked out, and which keys it can make.
func (d *Doctor) CheckTPM() []Result {
	d.loadConfig()
	cfgTPM := ""
	if d.cfg != nil {
		cfgTPM = d.cfg.TPM
	}
	d.spec, d.specErr = tpm.ResolveSpec(d.opts.TPM, cfgTPM)
	if d.specErr != nil {
		return []Result{problem("name it as device:/dev/tpmrm0, swtpm:path=SOCKET or swtpm:host=H,port=P", "%v", d.specErr)}
	}
	d.tpm = d.sys.openTPM(d.spec)
	// One connection per question: a kept connection would hold a swtpm
	// (which serves one client at a time) against the module that the
	// p11-kit check loads later.
	if err := d.tpm.SetKeepOpen(false); err != nil {
		return []Result{problem("", "%v", err)}
	}
	spec := d.tpm.Spec()
	src := d.specSource()
	if spec.Kind == tpm.Device && spec.Path != d.spec.Path {
		src += fmt.Sprintf("; there is no %s", d.spec.Path)
	}
	out := []Result{ok("TPM %s (%s)", spec, src)}

	if spec.Kind == tpm.Device {
		if major, found := sysfsVersionMajor(d.sys.sysfsTPM, spec.Path); found && major == "1" {
			return append(out, problem(tpm12Fix, "%s is a TPM 1.2, which is not supported (the kernel says tpm_version_major 1)", spec.Path))
		}
	}
	if err := probe(d.tpm); err != nil {
		if errors.Is(err, errTPM12) {
			return append(out, problem(tpm12Fix, "the TPM at %s answers as a TPM 1.2, which is not supported", spec))
		}
		return append(out, d.accessProblem(spec, err))
	}
	if spec.Kind == tpm.Device {
		out = append(out, ok("%s is readable and writable by this user", spec.Path))
	}
	out = append(out, resourceManager(spec))

	caps, err := d.tpm.Capabilities()
	if err != nil {
		return append(out, problem(tpm.Hint(err), "asking the TPM what it is: %v", err))
	}
	d.caps = caps
	d.tpmOK = true
	out = append(out, ok("TPM 2.0 made by %s, firmware %s", vendorName(caps.Manufacturer), firmwareString(caps.Manufacturer, caps.Firmware)))
	out = append(out, d.lockout())
	out = append(out, algorithms(caps))
	return out
}

// sysfsVersionMajor reads tpm_version_major for a device /dev/tpmN or
// /dev/tpmrmN from the kernel's TPM class directory.
func sysfsVersionMajor(root, dev string) (string, bool) {
	m := regexp.MustCompile(`^tpm(?:rm)?([0-9]+)$`).FindStringSubmatch(filepath.Base(dev))
	if m == nil {
		return "", false
	}
	b, err := os.ReadFile(filepath.Join(root, "tpm"+m[1], "tpm_version_major"))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// probe sends one harmless command: it fails as opening the TPM fails
// (no device, no permission, swtpm not running), or with errTPM12.
func probe(t *tpm.TPM) error {
	return t.Do(func(c *tpm.Conn) error {
		rsp, err := c.Transport().Send(familyQuery)
		if err != nil {
			return err
		}
		if len(rsp) >= 2 && int(rsp[0])<<8|int(rsp[1]) == tpm12ResponseTag {
			return errTPM12
		}
		return nil
	})
}

// accessProblem turns a failure to reach the TPM into a problem with the
// fix that fits this machine.
func (d *Doctor) accessProblem(spec tpm.Spec, err error) Result {
	fix := tpm.Hint(err)
	if errors.Is(err, tpm.ErrPermission) && spec.Kind == tpm.Device {
		if f := permissionFix(spec.Path); f != "" {
			fix = f
		}
	}
	return problem(fix, "%v", err)
}

// permissionFix says how this user gets access to a TPM device that
// refused it, from the device's group and mode.
func permissionFix(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	st, isUnix := fi.Sys().(*syscall.Stat_t)
	if !isUnix {
		return ""
	}
	const udev = "its group has no access: install the tpm-udev package (apt-get install tpm-udev; its udev rule gives the tss group the TPM devices), then add your user to the tss group ('sudo usermod -aG tss $USER') and log in again"
	if st.Gid == 0 || fi.Mode().Perm()&0o060 != 0o060 {
		return fmt.Sprintf("%s belongs to root and %s", path, udev)
	}
	gid := strconv.FormatUint(uint64(st.Gid), 10)
	name := gid
	if g, err := user.LookupGroupId(gid); err == nil {
		name = g.Name
	}
	if u, err := user.Current(); err == nil {
		if ids, err := u.GroupIds(); err == nil && slices.Contains(ids, gid) {
			if groups, err := os.Getgroups(); err == nil && !slices.Contains(groups, int(st.Gid)) {
				return fmt.Sprintf("you are in the %s group, but this login session started before you were added: log in again (or run 'newgrp %s')", name, name)
			}
		}
	}
	return fmt.Sprintf("add your user to the %s group ('sudo usermod -aG %s $USER'), then log in again", name, name)
}

// resourceManager says whether programs can share the TPM.
func resourceManager(spec tpm.Spec) Result {
	if spec.Kind != tpm.Device {
		return ok("swtpm has no resource manager and serves one connection at a time: simple-tpm-pk11's programs take turns through a lock file")
	}
	if strings.HasPrefix(filepath.Base(spec.Path), "tpmrm") {
		return ok("%s is the kernel's resource manager: programs share the TPM", spec.Path)
	}
	fix := "Linux 4.12 and later have /dev/tpmrm0; on an older kernel run tpm2-abrmd"
	if _, err := os.Stat(tpm.DeviceRM); err == nil {
		fix = "use " + tpm.DeviceRM + " (--tpm device:" + tpm.DeviceRM + ", or the config's tpm line)"
	}
	return warning(fix, "%s has no resource manager: one program at a time can use the TPM, the others wait for it", spec.Path)
}

// lockout reports the dictionary-attack state.
func (d *Doctor) lockout() Result {
	l, err := d.tpm.LockoutState()
	if err != nil {
		return problem(tpm.Hint(err), "reading the TPM's lockout state: %v", err)
	}
	every := fmt.Sprintf("one is forgotten every %v", l.Interval)
	if l.Interval == 0 {
		every = "none is ever forgotten"
	}
	switch n := l.Remaining(); {
	case n == 0 && l.Interval == 0:
		return problem("clear the lockout with 'tpm2_dictionarylockout --clear-lockout' (needs the lockout authorization)",
			"the TPM is locked out after too many wrong PINs, until the lockout is cleared")
	case n == 0:
		return problem("wait, or clear the lockout with 'tpm2_dictionarylockout --clear-lockout' (needs the lockout authorization)",
			"the TPM is locked out after too many wrong PINs; it accepts a new try in about %v", l.Interval)
	case l.Counter == 0:
		return ok("not locked out: %s allowed before the TPM locks out, %s", plural(int(l.Max), "wrong PIN"), every)
	case n == 1:
		return warning("type the next PIN carefully; "+strings.Replace(every, "one is", "a wrong one is", 1),
			"%s counted: 1 more and the TPM locks out", plural(int(l.Counter), "wrong PIN"))
	default:
		return ok("%s counted, %d more allowed before the TPM locks out, %s", plural(int(l.Counter), "wrong PIN"), n, every)
	}
}

// algorithms lists the key types and sizes the TPM can make.
func algorithms(caps *tpm.Caps) Result {
	var parts []string
	if len(caps.RSABits) > 0 {
		parts = append(parts, "RSA "+joinInts(caps.RSABits, ", ")+" bits")
	}
	if len(caps.ECCBits) > 0 {
		var curves []string
		for _, b := range caps.ECCBits {
			curves = append(curves, fmt.Sprintf("P-%d", b))
		}
		parts = append(parts, "ECDSA "+strings.Join(curves, ", "))
	}
	switch {
	case len(parts) == 0:
		return problem("", "the TPM makes neither RSA nor ECDSA signing keys")
	case !slices.Contains(caps.RSABits, 2048) && !slices.Contains(caps.ECCBits, 256):
		return warning("", "keys: %s; neither RSA 2048 nor ECDSA P-256, which ssh servers expect", strings.Join(parts, "; "))
	}
	return ok("keys: %s", strings.Join(parts, "; "))
}

func joinInts(v []int, sep string) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, sep)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// CheckParent makes sure keys can be loaded: the standard storage primary
// can be created (with srk_pin as the owner authorization when the config
// has one), or the configured persistent parent exists and its PIN works.
func (d *Doctor) CheckParent() []Result {
	if !d.tpmOK {
		return []Result{skipped("storage parent: not checked, the TPM is not usable (see above)")}
	}
	d.parents = nil
	seen := map[[2]uint32]*parentState{}
	var order []*parentState
	for _, k := range d.keys {
		if k.key == nil {
			continue
		}
		id := [2]uint32{k.key.Parent, 0}
		if k.key.RSAParent {
			id[1] = 1
		}
		if seen[id] == nil {
			seen[id] = &parentState{handle: k.key.Parent, rsa: k.key.RSAParent}
			order = append(order, seen[id])
		}
	}
	if len(order) == 0 {
		order = append(order, &parentState{handle: tpm.OwnerParent})
	}
	var out []Result
	for _, p := range order {
		out = append(out, d.checkParent(p))
		d.parents = append(d.parents, p)
	}
	return out
}

// srkPIN is the parent authorization from the config, as the module uses it.
func (d *Doctor) srkPIN() []byte {
	if d.cfg == nil {
		return nil
	}
	return d.cfg.SRKPIN
}

func (d *Doctor) checkParent(p *parentState) Result {
	var pub tpm2.TPMTPublic
	var tested bool
	p.err = d.tpm.Do(func(c *tpm.Conn) error {
		parent, err := c.LoadParent(p.handle, p.rsa, d.srkPIN())
		if err != nil {
			return err
		}
		pub = parent.Public
		if p.handle == tpm.OwnerParent {
			return nil
		}
		// A persistent parent's PIN is checked by the first command
		// that uses it: loading one of its keys.
		for _, k := range d.keys {
			if k.key != nil && k.key.Parent == p.handle && k.key.RSAParent == p.rsa {
				tested = true
				_, err := c.LoadKey(k.key, d.srkPIN())
				if errors.Is(err, tpm.ErrWrongPIN) || errors.Is(err, tpm.ErrLockedOut) {
					return err
				}
				return nil
			}
		}
		return nil
	})
	if p.err != nil {
		return problem(d.parentFix(p), "storage parent %s: %v", parentName(p), p.err)
	}
	p.ok = true
	p.rsaN = rsaModulus(&pub)
	if p.handle == tpm.OwnerParent {
		auth := ""
		if d.cfg != nil && d.cfg.HasSRKPIN {
			auth = " with srk_pin as the owner authorization"
		}
		return ok("storage parent %s: the owner hierarchy's standard storage primary can be created%s", parentName(p), auth)
	}
	what := "its PIN works"
	if !tested {
		what = "no key uses it"
	}
	return ok("storage parent %s: a persistent %s storage key; %s", parentName(p), describePublic(&pub, "ECC"), what)
}

// parentFix is what to do about a parent that failed.
func (d *Doctor) parentFix(p *parentState) string {
	if errors.Is(p.err, tpm.ErrWrongPIN) {
		file := "the config file"
		if d.cfg != nil && d.cfg.File != "" {
			file = strconv.Quote(d.cfg.File)
		}
		if d.cfg != nil && d.cfg.HasSRKPIN {
			return "srk_pin in " + file + " is not the parent's authorization: correct it"
		}
		return "the parent has an authorization value: put it in " + file + " as srk_pin (keep the file mode 0600), or give it to the commands with -s"
	}
	return tpm.Hint(p.err)
}

func parentName(p *parentState) string {
	switch {
	case p.handle == tpm.OwnerParent && p.rsa:
		return fmt.Sprintf("0x%08x (RSA 2048)", p.handle)
	case p.handle == tpm.OwnerParent:
		return fmt.Sprintf("0x%08x (ECC P-256)", p.handle)
	}
	return fmt.Sprintf("0x%08x", p.handle)
}

// describePublic names a key's type and size: "RSA 2048", or ecc
// ("ECDSA" for a signing key, "ECC" for a storage key) and the curve.
func describePublic(pub *tpm2.TPMTPublic, ecc string) string {
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		if parms, err := pub.Parameters.RSADetail(); err == nil {
			return fmt.Sprintf("RSA %d", parms.KeyBits)
		}
		return "RSA"
	case tpm2.TPMAlgECC:
		if parms, err := pub.Parameters.ECCDetail(); err == nil {
			switch parms.CurveID {
			case tpm2.TPMECCNistP256:
				return ecc + " P-256"
			case tpm2.TPMECCNistP384:
				return ecc + " P-384"
			case tpm2.TPMECCNistP521:
				return ecc + " P-521"
			}
		}
		return ecc
	}
	return fmt.Sprintf("algorithm 0x%04x", uint16(pub.Type))
}

// rsaModulus is an RSA key's modulus, nil for other keys.
func rsaModulus(pub *tpm2.TPMTPublic) *big.Int {
	if pub.Type != tpm2.TPMAlgRSA {
		return nil
	}
	n, err := pub.Unique.RSA()
	if err != nil || len(n.Buffer) == 0 {
		return nil
	}
	return new(big.Int).SetBytes(n.Buffer)
}
