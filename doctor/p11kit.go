package doctor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/bridge"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/config"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/p11"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/p11kit"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// moduleBase is the module's file name.
const moduleBase = "libsimple-tpm-pk11.so"

// waitFor bounds each program the doctor runs (p11-kit, pkcs11-tool).
const waitFor = time.Minute

// registration is a p11-kit module file that names our module.
type registration struct {
	file     string // the module file
	name     string // its module name (file name without .module)
	module   string // its module: line, resolved to a path
	critical bool
}

// defaultModuleDirs are the directories p11-kit reads module files from,
// as this user's programs see them (p11-kit ignores the user directory
// for root: p11kit.UserModuleDir then names the system one).
func defaultModuleDirs() []string {
	var dirs []string
	if d, err := p11kit.UserModuleDir(); err == nil {
		dirs = append(dirs, d)
	}
	for _, d := range []string{p11kit.SystemModuleDir, "/usr/share/p11-kit/modules"} {
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// CheckP11Kit reports p11-kit: installed, the module found and registered
// with it, and the module loading with its token visible (through p11-kit
// when registered, else through pkcs11-tool).
func (d *Doctor) CheckP11Kit() []Result {
	var out []Result
	tool, err := d.sys.findTool()
	if err != nil {
		out = append(out, problem(hintOf(err), "p11-kit is not installed: programs using p11-kit-proxy.so cannot see the token, and stpm-bridge cannot export it"))
	} else {
		d.p11kitTool = tool
		out = append(out, ok("p11-kit: %s", tool))
	}
	if mod, err := bridge.FindModule(d.opts.Module); err != nil {
		out = append(out, problem(hintOf(err), "%v", err))
	} else {
		d.module = mod
		out = append(out, ok("module: %s", mod))
	}
	regs, results := d.registrations()
	out = append(out, results...)
	switch {
	case len(regs) == 0:
		out = append(out, warning("run 'stpm-bridge register' (a PREFIX=/usr install registers it for everyone)",
			"the module is not registered with p11-kit: programs using p11-kit-proxy.so do not see the token"))
	default:
		d.registered = &regs[0]
		for _, r := range regs {
			out = append(out, d.describeRegistration(r)...)
		}
	}
	out = append(out, d.tokenVisible())
	if d.p11kitTool != "" {
		if proxy, err := d.sys.findProxy(); err != nil {
			out = append(out, warning(hintOf(err), "p11-kit-proxy.so is not installed: programs cannot load the registered modules through it"))
		} else {
			out = append(out, ok("p11-kit-proxy.so: %s", proxy))
		}
	}
	return out
}

// hintOf returns the advice an error carries.
func hintOf(err error) string {
	if h := tpm.Hint(err); h != "" {
		return h
	}
	var h interface{ Hint() string }
	if errors.As(err, &h) {
		return h.Hint()
	}
	return ""
}

// registrations finds the module files that name our module, in the order
// p11-kit reads them. A module file p11-kit cannot parse is a problem of
// its own: p11-kit then loads no module at all.
func (d *Doctor) registrations() ([]registration, []Result) {
	var regs []registration
	var out []Result
	for _, dir := range d.sys.moduleDirs() {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			out = append(out, warning("", "cannot read the p11-kit module directory %q: %v", dir, errors.Unwrap(err)))
			continue
		}
		for _, e := range entries {
			// p11-kit reads every file whose name does not start with a dot.
			if strings.HasPrefix(e.Name(), ".") || e.IsDir() {
				continue
			}
			path := filepath.Join(dir, e.Name())
			m, err := p11kit.ReadModuleFile(path)
			if err != nil {
				out = append(out, problem("correct or remove the file",
					"%s: p11-kit then loads no module at all", strings.ReplaceAll(err.Error(), "p11kit: ", "")))
				continue
			}
			if m.Module == "" {
				continue // a remote module, such as stpm-bridge remote-setup's
			}
			resolved := resolveModule(m.Module)
			if !d.isOurModule(resolved) {
				continue
			}
			regs = append(regs, registration{file: path, name: strings.TrimSuffix(e.Name(), ".module"),
				module: resolved, critical: m.Critical != nil && *m.Critical})
		}
	}
	return regs, out
}

// resolveModule makes a module file's relative module: path absolute, as
// p11-kit takes it relative to its module directory.
func resolveModule(m string) string {
	if filepath.IsAbs(m) {
		return m
	}
	for _, pat := range []string{"/usr/lib/*/pkcs11", "/usr/lib64/pkcs11", "/usr/lib/pkcs11"} {
		dirs, _ := filepath.Glob(pat) // the patterns are valid
		for _, dir := range dirs {
			if _, err := os.Stat(filepath.Join(dir, m)); err == nil {
				return filepath.Join(dir, m)
			}
		}
	}
	return m
}

// isOurModule reports whether path is the module being checked, or
// another copy of it.
func (d *Doctor) isOurModule(path string) bool {
	return sameFile(path, d.module) || filepath.Base(path) == moduleBase
}

func sameFile(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

func (d *Doctor) describeRegistration(r registration) []Result {
	var out []Result
	switch {
	case !exists(r.module):
		out = append(out, problem("run 'stpm-bridge register -f', or install the module again",
			"%q registers %s with p11-kit, which does not exist", r.file, r.module))
	case d.module != "" && !sameFile(r.module, d.module):
		out = append(out, warning("", "%q registers %s with p11-kit, another copy than %s", r.file, r.module, d.module))
	default:
		out = append(out, ok("registered with p11-kit in %q", r.file))
	}
	if r.critical {
		out = append(out, warning("write 'critical: no' in it, as stpm-bridge register does",
			"%q says critical: yes: when the module cannot load, every program using p11-kit-proxy.so fails", r.file))
	}
	return out
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// tokenLabel is the label the module gives its token.
func (d *Doctor) tokenLabel() string {
	if d.cfg != nil && d.cfg.Label != "" {
		return d.cfg.Label
	}
	return p11.DefaultLabel
}

// childEnv is the environment for programs that load the module: ours,
// with the TPM and config this run was told to check.
func (d *Doctor) childEnv() []string {
	env := os.Environ()
	set := func(k, v string) {
		env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, k+"=") })
		env = append(env, k+"="+v)
	}
	if d.opts.TPM != "" && d.specErr == nil {
		set(tpm.EnvSpec, d.spec.String())
	}
	if d.opts.Config != "" {
		if abs, err := filepath.Abs(d.opts.Config); err == nil {
			set(config.EnvConfig, abs)
		}
	}
	return env
}

// tokenVisible loads the module the way programs will and looks for its
// token: through "p11-kit list-modules" when it is registered, else with
// pkcs11-tool.
func (d *Doctor) tokenVisible() Result {
	label := d.tokenLabel()
	switch {
	case d.module == "" && d.registered == nil:
		return skipped("loading the module: not tried, it was not found")
	case !d.tpmOK:
		return skipped("loading the module: not tried, the TPM is not usable")
	case d.registered != nil && d.p11kitTool == "":
		return skipped("loading the module through p11-kit: not tried, p11-kit is not installed")
	case d.registered != nil:
		return d.listModules(label)
	}
	pt, err := d.sys.lookPath("pkcs11-tool")
	if err != nil {
		return skipped("loading the module: not tried, it is not registered with p11-kit and pkcs11-tool (opensc) is not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	cmd := exec.CommandContext(ctx, pt, "--module", d.module, "-L")
	cmd.Env = d.childEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return problem("", "the module does not load: pkcs11-tool --module %s -L: %v: %s", d.module, err, lastLine(stderr.String()))
	}
	for _, line := range strings.Split(stdout.String(), "\n") {
		k, v, found := strings.Cut(line, ":")
		if found && strings.TrimSpace(k) == "token label" && strings.TrimSpace(v) == label {
			return ok("the module loads and shows its token %q (pkcs11-tool -L)", label)
		}
	}
	return problem("", "the module loads but shows no token %q (pkcs11-tool --module %s -L)", label, d.module)
}

func (d *Doctor) listModules(label string) Result {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	out, err := p11kit.ListModules(ctx, d.childEnv())
	if err != nil {
		return problem("", "%s", strings.ReplaceAll(err.Error(), "p11kit: ", ""))
	}
	mods, err := p11kit.ParseListModules(out)
	if err != nil {
		return problem("", "reading p11-kit list-modules: %s", strings.ReplaceAll(err.Error(), "p11kit: ", ""))
	}
	for _, m := range mods {
		if m.Name != d.registered.name {
			continue
		}
		var labels []string
		for _, t := range m.Tokens {
			if t.Label == label {
				return ok("p11-kit loads the module, and its token %q is visible through p11-kit-proxy.so", label)
			}
			labels = append(labels, fmt.Sprintf("%q", t.Label))
		}
		return problem("", "p11-kit loads the module but it shows no token %q (tokens: %s)", label, strings.Join(labels, ", "))
	}
	return problem("run 'P11_KIT_DEBUG=all p11-kit list-modules' to see why",
		"p11-kit does not load the module registered in %q", d.registered.file)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
