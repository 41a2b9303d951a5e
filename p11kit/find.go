package p11kit

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// NotFoundError says that a p11-kit program or module is not installed.
type NotFoundError struct {
	What    string   // e.g. "p11-kit-client.so"
	Tried   []string // paths and patterns looked at, with why a file was rejected
	Package string   // Debian package that ships it
	Other   string   // the package's name on other distributions, if known
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("%s not found (tried %s)", e.What, strings.Join(e.Tried, ", "))
}

// Hint says what to install.
func (e *NotFoundError) Hint() string {
	h := "install the " + e.Package + " package (apt-get install " + e.Package + ")"
	if e.Other != "" {
		h += "; elsewhere: " + e.Other
	}
	return h
}

// FindTool returns the path of the p11-kit command: from PATH, else
// /usr/bin/p11-kit.
func FindTool() (string, error) {
	tried := []string{"$PATH"}
	if p, err := exec.LookPath("p11-kit"); err == nil {
		return p, nil
	}
	const fallback = "/usr/bin/p11-kit"
	tried = append(tried, fallback)
	if isExecutable(fallback) {
		return fallback, nil
	}
	return "", &NotFoundError{What: "the p11-kit command", Tried: tried, Package: "p11-kit"}
}

// serverPaths are where distributions put the helper that "p11-kit
// server" execs (Debian and Fedora: libexec; Arch: /usr/lib/p11-kit).
var serverPaths = []string{
	"/usr/libexec/p11-kit/p11-kit-server",
	"/usr/lib/p11-kit/p11-kit-server",
	"/usr/lib/*/p11-kit/p11-kit-server",
	"/usr/lib64/p11-kit/p11-kit-server",
	"/usr/local/libexec/p11-kit/p11-kit-server",
}

// FindServer returns the path of p11-kit's server helper. It is for
// diagnostics: StartServer runs it through "p11-kit server", which knows
// its own compiled-in path.
func FindServer() (string, error) {
	p, tried := firstMatch(serverPaths, isExecutableErr)
	if p != "" {
		return p, nil
	}
	return "", &NotFoundError{What: "p11-kit-server", Tried: tried, Package: "p11-kit",
		Other: "Fedora: p11-kit-server"}
}

// moduleDirPatterns are the directories PKCS#11 modules live in, in
// search order: Debian multiarch (no dpkg-architecture needed: files of
// another architecture are skipped), Fedora, Arch.
var moduleDirPatterns = []string{"/usr/lib/*/pkcs11", "/usr/lib64/pkcs11", "/usr/lib/pkcs11"}

// FindPKCS11Module finds a PKCS#11 module by file name (for example
// "p11-kit-trust.so") in the system's module directories, skipping
// files built for another architecture than this program's. pkg names
// the Debian package to suggest when it is missing.
func FindPKCS11Module(base, pkg string) (string, error) {
	var pats []string
	for _, d := range moduleDirPatterns {
		pats = append(pats, filepath.Join(d, base))
	}
	p, tried := firstMatch(pats, nativeELF)
	if p != "" {
		return p, nil
	}
	return "", &NotFoundError{What: base, Tried: tried, Package: pkg}
}

// FindClientModule returns the path of p11-kit-client.so, the module that
// forwards to a p11-kit server named by P11_KIT_SERVER_ADDRESS.
func FindClientModule() (string, error) {
	p, err := FindPKCS11Module("p11-kit-client.so", "p11-kit-modules")
	if nf, ok := err.(*NotFoundError); ok {
		nf.Other = "Fedora: p11-kit-server"
	}
	return p, err
}

// FindProxy returns the path of p11-kit-proxy.so, the module that loads
// every registered module (Debian: p11-kit-modules, a symlink to
// libp11-kit.so.0).
func FindProxy() (string, error) {
	p, tried := firstMatch([]string{
		"/usr/lib/*/p11-kit-proxy.so", "/usr/lib64/p11-kit-proxy.so", "/usr/lib/p11-kit-proxy.so",
	}, nativeELF)
	if p != "" {
		return p, nil
	}
	return "", &NotFoundError{What: "p11-kit-proxy.so", Tried: tried, Package: "p11-kit-modules",
		Other: "Fedora: p11-kit"}
}

// ClientModuleShellProbe returns POSIX sh code that prints the path of
// p11-kit-client.so on the machine it runs on, or nothing, searching as
// FindClientModule does (the directory named after `uname -m` first,
// since the ELF check is not available there). It contains no single
// quotes, so it can be wrapped in '...' for "sh -c", and it works inside
// $(...).
func ClientModuleShellProbe() string {
	return `for f in "/usr/lib/$(uname -m 2>/dev/null)-linux-gnu/pkcs11/p11-kit-client.so" ` +
		`/usr/lib/*/pkcs11/p11-kit-client.so /usr/lib64/pkcs11/p11-kit-client.so /usr/lib/pkcs11/p11-kit-client.so; ` +
		`do if [ -f "$f" ]; then printf "%s\n" "$f"; break; fi; done`
}

// firstMatch expands the glob patterns in order and returns the first
// file accepted by ok, and what it tried.
func firstMatch(patterns []string, ok func(string) error) (string, []string) {
	var tried []string
	for _, pat := range patterns {
		tried = append(tried, pat)
		matches, err := filepath.Glob(pat)
		if err != nil {
			continue // only ErrBadPattern; the patterns are constants
		}
		for _, m := range matches {
			if err := ok(m); err != nil {
				tried = append(tried, m+" ("+err.Error()+")")
				continue
			}
			return m, tried
		}
	}
	return "", tried
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

func isExecutableErr(p string) error {
	if !isExecutable(p) {
		return fmt.Errorf("not an executable file")
	}
	return nil
}

// elfMachines maps GOARCH to the ELF machine of its shared libraries.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "386": elf.EM_386, "arm64": elf.EM_AARCH64, "arm": elf.EM_ARM,
	"ppc64le": elf.EM_PPC64, "ppc64": elf.EM_PPC64, "s390x": elf.EM_S390, "riscv64": elf.EM_RISCV,
	"loong64": elf.EM_LOONGARCH, "mips": elf.EM_MIPS, "mipsle": elf.EM_MIPS,
	"mips64": elf.EM_MIPS, "mips64le": elf.EM_MIPS,
}

// nativeELF accepts a shared library this program's architecture can
// load (so a multiarch system's foreign copy is skipped).
func nativeELF(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		if os.IsNotExist(err) {
			return fmt.Errorf("missing")
		}
		return fmt.Errorf("not a shared library: %v", err)
	}
	defer f.Close()
	want, known := elfMachines[runtime.GOARCH]
	if !known {
		return nil
	}
	wantClass := elf.ELFCLASS32
	if strings.Contains(runtime.GOARCH, "64") || runtime.GOARCH == "s390x" {
		wantClass = elf.ELFCLASS64
	}
	if f.Machine != want || f.Class != wantClass {
		return fmt.Errorf("built for %v %v, not %s", f.Machine, f.Class, runtime.GOARCH)
	}
	return nil
}
