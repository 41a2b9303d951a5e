package doctor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// providerLine is a PKCS11Provider line of an ssh config file.
type providerLine struct {
	line  int
	value string // as written, unquoted
	block string // "Host a b" or "Match ...", "" before the first block
}

// parseSSHConfig finds the PKCS11Provider lines of an ssh_config(5)
// file: keywords are case-insensitive and separated from their argument
// by white space or one "=", arguments may be double-quoted. Host and
// Match lines are only remembered, to say which hosts a line is for;
// Include is not followed.
func parseSSHConfig(data []byte) []providerLine {
	var out []providerLine
	block := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		kw, arg := splitSSHLine(sc.Text())
		switch strings.ToLower(kw) {
		case "host", "match":
			block = kw + " " + arg
		case "pkcs11provider":
			v := arg
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			out = append(out, providerLine{line: n, value: v, block: block})
		}
	}
	return out
}

// splitSSHLine splits a config line into its keyword and the rest.
func splitSSHLine(line string) (kw, arg string) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", ""
	}
	i := strings.IndexAny(line, " \t=")
	if i < 0 {
		return line, ""
	}
	kw, rest := line[:i], strings.TrimLeft(line[i:], " \t")
	if strings.HasPrefix(rest, "=") {
		rest = strings.TrimLeft(rest[1:], " \t")
	}
	return kw, strings.TrimSpace(rest)
}

// expandSSHPath expands what ssh expands in PKCS11Provider: a leading ~
// and ${VAR}.
func expandSSHPath(p, home string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		p = home + p[1:]
	}
	var b strings.Builder
	for {
		i := strings.Index(p, "${")
		j := strings.Index(p[max(i, 0):], "}")
		if i < 0 || j < 0 {
			b.WriteString(p)
			return b.String()
		}
		j += i
		b.WriteString(p[:i])
		b.WriteString(os.Getenv(p[i+2 : j]))
		p = p[j+1:]
	}
}

// CheckSSH reports whether ssh is set up to use the module (a
// PKCS11Provider in ~/.ssh/config) and whether ssh-agent may load it.
func (d *Doctor) CheckSSH() []Result {
	home, err := d.sys.home()
	if err != nil {
		return []Result{skipped("ssh: not checked, no home directory: %v", err)}
	}
	out := d.sshConfig(home)
	return append(out, d.sshAgent())
}

func (d *Doctor) sshConfig(home string) []Result {
	const add = "add 'PKCS11Provider %s' to ~/.ssh/config (under 'Host *' or the hosts you use the TPM key for), or run ssh -I %s"
	file := filepath.Join(home, ".ssh", "config")
	mod := d.module
	if d.registered != nil {
		if proxy, err := d.sys.findProxy(); err == nil {
			mod = proxy
		}
	}
	if mod == "" {
		mod = "/usr/local/lib/" + moduleBase
	}
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return []Result{warning(fmt.Sprintf(add, mod, mod), "ssh: there is no ~/.ssh/config, so ssh uses the TPM keys only with -I MODULE or through ssh-agent")}
	}
	if err != nil {
		return []Result{warning("", "ssh: cannot read %q: %v", file, errors.Unwrap(err))}
	}
	var out []Result
	for _, p := range parseSSHConfig(data) {
		if strings.EqualFold(p.value, "none") {
			continue
		}
		out = append(out, d.provider(p, expandSSHPath(p.value, home)))
	}
	if len(out) == 0 {
		return []Result{warning(fmt.Sprintf(add, mod, mod), "ssh: ~/.ssh/config names no PKCS11Provider, so ssh uses the TPM keys only with -I MODULE or through ssh-agent")}
	}
	return out
}

// provider judges one PKCS11Provider line.
func (d *Doctor) provider(p providerLine, path string) Result {
	where := fmt.Sprintf("ssh: ~/.ssh/config line %d", p.line)
	if p.block != "" {
		where += " (" + p.block + ")"
	}
	base := filepath.Base(path)
	switch {
	case !exists(path):
		fix := "correct the path"
		if d.module != "" {
			fix += "; the module is " + d.module
		}
		return problem(fix, "%s: PKCS11Provider %s does not exist", where, path)
	case sameFile(path, d.module) || base == moduleBase:
		return ok("%s: PKCS11Provider %s, the module", where, path)
	case base == "p11-kit-proxy.so" && d.registered != nil:
		return ok("%s: PKCS11Provider %s, which loads the module through p11-kit", where, path)
	case base == "p11-kit-proxy.so":
		return problem("run 'stpm-bridge register', or name the module itself",
			"%s: PKCS11Provider %s, but the module is not registered with p11-kit, so ssh does not see the TPM keys", where, path)
	case base == "p11-kit-client.so":
		return ok("%s: PKCS11Provider %s: ssh uses a token that stpm-bridge forwards (P11_KIT_SERVER_ADDRESS)", where, path)
	}
	fix := ""
	if d.module != "" {
		fix = "to use the TPM keys, name " + d.module
	}
	return warning(fix, "%s: PKCS11Provider %s is another PKCS#11 module: ssh offers its keys, not the TPM's", where, path)
}

// sshAgent says whether ssh-agent would load the module: it refuses
// providers whose real path does not match its -P allowlist.
func (d *Doctor) sshAgent() Result {
	allowed := d.sys.agentAllowed
	if d.module == "" {
		return skipped("ssh-agent: not checked, the module was not found")
	}
	real, err := filepath.EvalSymlinks(d.module)
	if err != nil {
		real = d.module
	}
	if matchPatternList(real, allowed) {
		return ok("ssh-agent may load the module (ssh-add -s %s): it matches the agent's default allowlist %s", d.module, allowed)
	}
	if d.registered != nil {
		if proxy, err := d.sys.findProxy(); err == nil {
			if rp, err := filepath.EvalSymlinks(proxy); err == nil && matchPatternList(rp, allowed) {
				return ok("ssh-agent may load p11-kit-proxy.so, which loads the module (ssh-add -s %s); the module itself is outside the agent's default allowlist %s", proxy, allowed)
			}
		}
	}
	return warning(fmt.Sprintf("install the module under /usr/local/lib (make install), or start ssh-agent with -P '%s/*'", filepath.Dir(real)),
		"ssh-agent refuses to load %s: it is outside the agent's default allowlist %s", real, allowed)
}

// matchPatternList matches s against an ssh pattern-list (ssh_config(5),
// PATTERNS): comma-separated patterns, a leading ! negates, and a
// negated match refuses whatever else matches.
func matchPatternList(s, list string) bool {
	matched := false
	for _, p := range strings.Split(list, ",") {
		neg := strings.HasPrefix(p, "!")
		if neg {
			p = p[1:]
		}
		if matchPattern(s, p) {
			if neg {
				return false
			}
			matched = true
		}
	}
	return matched
}

// matchPattern matches s against one ssh pattern: '*' is any run of
// characters ('/' included), '?' any one character.
func matchPattern(s, p string) bool {
	// Greedy matching with backtracking to the last '*'.
	si, pi := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == s[si]):
			si++
			pi++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			mark++
			si, pi = mark, star+1
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
