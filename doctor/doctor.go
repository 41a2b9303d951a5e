// Package doctor finds out why simple-tpm-pk11 does not work on a machine,
// or that it does: it looks at the TPM, the storage parent, the config and
// key files, known weaknesses of TPM firmware and keys, p11-kit, ssh and
// what the bridge needs, in that order, and says what to do about each
// fault.
//
// Each check is a method returning Results. Later checks use what earlier
// ones found (the TPM, the parsed config, the loaded keys), so they run in
// the order Checks gives. A check that cannot run because an earlier one
// failed says so in one Skipped result instead of repeating the fault.
//
// The doctor never signs, never sends a key's PIN to the TPM and never
// prints a PIN, so it cannot make the TPM count a wrong key PIN against its
// dictionary-attack limit. The only authorization it gives is the
// config's srk_pin (or none), exactly as the module would.
package doctor

import (
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"strings"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/config"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/p11kit"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// Status is how a check came out.
type Status int

const (
	// OK: nothing to do.
	OK Status = iota
	// Warning: works, but weaker or less convenient than it could be.
	Warning
	// Problem: something does not work, or is unsafe; the doctor exits 1.
	Problem
	// Skipped: not checked because an earlier check failed.
	Skipped
)

func (s Status) String() string {
	switch s {
	case Warning:
		return "warning"
	case Problem:
		return "problem"
	case Skipped:
		return "skipped"
	}
	return "ok"
}

// Result is one finding: one line, and for most faults what to do.
type Result struct {
	Status Status
	Msg    string
	Fix    string // "" when there is nothing to suggest
}

// String formats r as the doctor prints it: "ok: MSG", and an indented
// "  fix: FIX" line when there is a fix. Line breaks inside the texts (a
// file name can hold one) become spaces, so every finding keeps its lines.
func (r Result) String() string {
	s := r.Status.String() + ": " + oneLine(r.Msg) + "\n"
	if r.Fix != "" {
		s += "  fix: " + oneLine(r.Fix) + "\n"
	}
	return s
}

var lineBreaks = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ")

func oneLine(s string) string { return lineBreaks.Replace(s) }

func ok(format string, args ...any) Result {
	return Result{Status: OK, Msg: fmt.Sprintf(format, args...)}
}

func warning(fix, format string, args ...any) Result {
	return Result{Status: Warning, Msg: fmt.Sprintf(format, args...), Fix: fix}
}

func problem(fix, format string, args ...any) Result {
	return Result{Status: Problem, Msg: fmt.Sprintf(format, args...), Fix: fix}
}

func skipped(format string, args ...any) Result {
	return Result{Status: Skipped, Msg: fmt.Sprintf(format, args...)}
}

// Options are what the user chose on the command line.
type Options struct {
	// TPM is --tpm; "" picks the TPM as every command does
	// ($SIMPLE_TPM_PK11_TPM, the config's tpm line, /dev/tpmrm0).
	TPM string
	// Config is -c; "" means $SIMPLE_TPM_PK11_CONFIG, else
	// ~/.simple-tpm-pk11/config, as the module reads.
	Config string
	// Module is --module; "" finds libsimple-tpm-pk11.so as stpm-bridge
	// does.
	Module string
}

// Doctor runs the checks and keeps what each one learned for the next.
type Doctor struct {
	opts Options
	sys  system

	// Found by the TPM check.
	spec    tpm.Spec
	specErr error
	tpm     *tpm.TPM
	tpmOK   bool // the TPM answers, is a TPM 2.0 and told us its capabilities
	caps    *tpm.Caps

	// Found by the config check (loaded first: the TPM check needs its
	// tpm and srk_pin lines).
	cfg     *config.Config
	cfgErr  error
	cfgPath string
	keys    []*keyState

	// Found by the parent check.
	parents []*parentState

	// Found by the p11-kit check.
	p11kitTool string
	module     string // our module's path, "" when not found
	registered *registration
}

// keyState is one key the config names.
type keyState struct {
	cfg   config.Key
	key   *keyfile.Key // nil when the file did not parse
	err   error        // why it did not
	desc  string       // "RSA 2048", "ECDSA P-256"
	rsaN  *big.Int     // the RSA modulus, nil for ECDSA keys
	ecdsa bool
}

// parentState is one storage parent the keys use.
type parentState struct {
	handle uint32
	rsa    bool
	ok     bool
	err    error
	rsaN   *big.Int // modulus of an RSA parent
}

// system is what the doctor asks of the machine, replaced in tests.
type system struct {
	sysfsTPM     string // /sys/class/tpm
	openTPM      func(tpm.Spec) *tpm.TPM
	findTool     func() (string, error)
	findServer   func() (string, error)
	findClient   func() (string, error)
	findProxy    func() (string, error)
	moduleDirs   func() []string
	lookPath     func(string) (string, error)
	home         func() (string, error)
	agentAllowed string // ssh-agent's default -P list
}

func defaultSystem() system {
	return system{
		sysfsTPM:   "/sys/class/tpm",
		openTPM:    tpm.Open,
		findTool:   p11kit.FindTool,
		findServer: p11kit.FindServer,
		findClient: p11kit.FindClientModule,
		findProxy:  p11kit.FindProxy,
		moduleDirs: defaultModuleDirs,
		lookPath:   exec.LookPath,
		home:       os.UserHomeDir,
		// OpenSSH's DEFAULT_ALLOWED_PROVIDERS since 8.9 (the 9.2 manual
		// still says /usr/lib/*,/usr/local/lib/*; the binary has this).
		agentAllowed: "/usr/lib*/*,/usr/local/lib*/*",
	}
}

// New returns a doctor for the setup opts names.
func New(opts Options) *Doctor {
	return &Doctor{opts: opts, sys: defaultSystem()}
}

// Check is one step of the diagnosis.
type Check struct {
	Name string
	Run  func() []Result
}

// Checks lists the checks in the order they must run.
func (d *Doctor) Checks() []Check {
	return []Check{
		{"tpm", d.CheckTPM},
		{"parent", d.CheckParent},
		{"config", d.CheckConfig},
		{"weaknesses", d.CheckWeaknesses},
		{"p11-kit", d.CheckP11Kit},
		{"ssh", d.CheckSSH},
		{"bridge", d.CheckBridge},
	}
}

// Run runs every check in order, handing each result to emit as soon as
// it is known, and reports whether any was a Problem. emit's error stops
// the run. Call Close afterwards.
func (d *Doctor) Run(emit func(Result) error) (problems bool, err error) {
	for _, c := range d.Checks() {
		for _, r := range c.Run() {
			if r.Status == Problem {
				problems = true
			}
			if err := emit(r); err != nil {
				return problems, err
			}
		}
	}
	return problems, nil
}

// Close forgets the PINs read from the config and drops the TPM
// connection, if one is kept.
func (d *Doctor) Close() error {
	d.cfg.Zero()
	if d.tpm == nil {
		return nil
	}
	return d.tpm.Close()
}
