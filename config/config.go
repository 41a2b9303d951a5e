// Package config reads the simple-tpm-pk11 configuration file,
// ~/.simple-tpm-pk11/config, in the format used by the original C++
// simple-tpm-pk11.
//
// The file holds one directive per line: a keyword, whitespace, and a value
// that runs to the end of the line. Surrounding whitespace is trimmed from the
// value; there is no quoting, so a value may contain spaces and '#'. A line
// whose first non-blank character is '#' is a comment; blank lines are
// ignored. Keywords are case-sensitive:
//
//	key FILE [label=LABEL]  a key blob; repeatable; relative to the config dir
//	tpm SPEC                which TPM to use (passed on, not checked here)
//	key_pin PIN             authorization value of the keys
//	srk_pin PIN             authorization value of the storage root key
//	log FILE                log file; relative to the config dir
//	debug [yes|no]          enable debug logging
//	label LABEL             PKCS#11 token label
//
// When no key directive is present, the key is <hostname>.key in the config
// directory, where hostname is the host name up to its first dot.
//
// A faulty file never stops the caller: [Parse] keeps every good directive and
// reports the rest as [Problem] values, whose messages never include PINs.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// EnvConfig names the environment variable that, when set to a non-empty
// value, overrides the location of the config file.
const EnvConfig = "SIMPLE_TPM_PK11_CONFIG"

// dirName and fileName make up the default location below the home directory.
const (
	dirName  = ".simple-tpm-pk11"
	fileName = "config"
)

// knownList is shown in the message about an unknown directive.
const knownList = "key, tpm, key_pin, srk_pin, log, debug, label"

// hostname is os.Hostname; tests replace it.
var hostname = os.Hostname

// Key is one key named by the config.
type Key struct {
	// Path is the key file. It is absolute when the config file's path
	// was, because relative names are taken relative to the config's
	// directory.
	Path string
	// Label is the label= given on the key line, or else the key file's
	// base name without its extension ("id.tpm.key" gives "id.tpm").
	Label string
	// Line is the config line that named the key; 0 for the default key.
	Line int
}

// Problem is a fault found in a config file. It is a warning: the faulty line
// is ignored (or, for duplicates, overrides the earlier one) and parsing goes
// on. Msg never holds a PIN or the value of an unrecognized line.
type Problem struct {
	File string // config file; "" when unnamed
	Line int    // 1-based line number; 0 when the fault concerns no one line
	Msg  string
}

// String formats p as "FILE:LINE: MSG", leaving out the parts that are unset.
func (p Problem) String() string {
	switch {
	case p.File != "" && p.Line > 0:
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
	case p.File != "":
		return p.File + ": " + p.Msg
	case p.Line > 0:
		return fmt.Sprintf("line %d: %s", p.Line, p.Msg)
	}
	return p.Msg
}

// Config is a parsed config file.
type Config struct {
	File string // path it was read from ("" when none)
	Keys []Key  // in file order; the default key when the file names none
	TPM  string // tpm directive, unchecked; "" when not set

	// KeyPIN and SRKPIN are nil when not set. They are the only copies
	// the package keeps; callers should call Zero once done with them.
	KeyPIN, SRKPIN       []byte
	HasKeyPIN, HasSRKPIN bool

	Log   string // log file, "" when not set
	Debug bool
	Label string // token label; "" means the caller's default

	Problems []Problem
}

// Path returns the config file's location: $SIMPLE_TPM_PK11_CONFIG when set
// and non-empty, else $HOME/.simple-tpm-pk11/config. It does not check that
// the file exists.
func Path() (string, error) {
	if p := os.Getenv(EnvConfig); p != "" {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("config: finding the home directory: %w", err)
	}
	return filepath.Join(home, dirName, fileName), nil
}

// Load reads and parses the config file named by file. Relative names in
// the file, and Config.File, are made absolute when the current directory is
// known, so that they stay valid if the process changes directory.
//
// The error is non-nil only when the file cannot be read; for a missing file
// it wraps fs.ErrNotExist. Faults in the file's contents are reported in
// Config.Problems instead.
func Load(file string) (*Config, error) {
	if abs, err := filepath.Abs(file); err == nil {
		file = abs
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	c := parse(data, file)
	clear(data) // it may hold PINs
	return c, nil
}

// LoadDefault loads the config file named by [Path].
//
// A missing file at the default location is normal (the user has not written
// one) and is not an error: LoadDefault then returns a Config with File "",
// no problems, and the default key <hostname>.key in ~/.simple-tpm-pk11, as
// an empty file there would give. A missing file named by
// $SIMPLE_TPM_PK11_CONFIG is an error wrapping fs.ErrNotExist, because the
// user asked for that file and a typo should not pass silently. Any other
// failure to read the file is an error, too.
func LoadDefault() (*Config, error) {
	p, err := Path()
	if err != nil {
		return nil, err
	}
	c, err := Load(p)
	if err == nil {
		return c, nil
	}
	if errors.Is(err, fs.ErrNotExist) && os.Getenv(EnvConfig) == "" {
		c = &Config{}
		c.addDefaultKey(filepath.Dir(p))
		return c, nil
	}
	return nil, err
}

// Parse reads a config from r. file names it in problems and gives the
// directory that relative paths are taken from ("" means the current
// directory). Parse always returns a Config; faults, including a read error,
// are listed in its Problems.
func Parse(r io.Reader, file string) *Config {
	data, err := io.ReadAll(r)
	c := parse(data, file)
	clear(data)
	if err != nil {
		c.Problems = append(c.Problems, Problem{File: file, Msg: fmt.Sprintf("reading config: %v", err)})
	}
	return c
}

// Zero overwrites the PIN bytes with zeros. The slices keep their length and
// HasKeyPIN/HasSRKPIN keep their values.
func (c *Config) Zero() {
	if c == nil {
		return
	}
	clear(c.KeyPIN)
	clear(c.SRKPIN)
}

// InsecurePINs reports whether c holds key_pin or srk_pin and was read from a
// file that group or others may access (any of the permission bits 0o077),
// and if so returns a warning to show the user. It returns "", false when the
// file cannot be examined.
func (c *Config) InsecurePINs() (string, bool) {
	if c == nil || c.File == "" || !(c.HasKeyPIN || c.HasSRKPIN) {
		return "", false
	}
	fi, err := os.Stat(c.File)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return "", false
	}
	return fmt.Sprintf("%q holds a PIN and is readable by others; run: chmod 600 %q", c.File, c.File), true
}

// String describes c with its PINs left out.
func (c Config) String() string {
	pin := func(set bool) string {
		if set {
			return "(set)"
		}
		return "(unset)"
	}
	return fmt.Sprintf("{File:%q Keys:%v TPM:%q KeyPIN:%s SRKPIN:%s Log:%q Debug:%t Label:%q Problems:%v}",
		c.File, c.Keys, c.TPM, pin(c.HasKeyPIN), pin(c.HasSRKPIN), c.Log, c.Debug, c.Label, c.Problems)
}

// Format prints c as String does, whatever the verb, so that no fmt verb
// (%v, %+v, %#v, %x, ...) shows the PINs.
func (c Config) Format(f fmt.State, _ rune) {
	io.WriteString(f, c.String())
}

// parser holds the state of one parse.
type parser struct {
	c    *Config
	dir  string
	seen map[string]int // single-valued directive -> line that last set it

	// named lists the problems that show an unknown directive's name,
	// to be hidden after all if the name turns out to be part of a PIN.
	named []namedProblem
}

type namedProblem struct {
	index int // in c.Problems
	name  string
}

func parse(data []byte, file string) *Config {
	p := &parser{
		c:    &Config{File: file},
		dir:  filepath.Dir(file),
		seen: make(map[string]int),
	}
	data = bytes.TrimPrefix(data, []byte("\uFEFF"))
	for n := 1; len(data) > 0; n++ {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		p.line(n, line)
	}
	for _, np := range p.named {
		if name := []byte(np.name); bytes.Contains(p.c.KeyPIN, name) || bytes.Contains(p.c.SRKPIN, name) {
			p.c.Problems[np.index].Msg = hiddenMsg
		}
	}
	if len(p.c.Keys) == 0 {
		p.c.addDefaultKey(p.dir)
	}
	return p.c
}

// isSpace reports whether b separates a keyword from its value. Only ASCII
// white space counts, so that a PIN's non-ASCII bytes are kept as written.
func isSpace(b byte) bool {
	switch b {
	case ' ', '\t', '\r', '\v', '\f':
		return true
	}
	return false
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func (p *parser) problem(line int, format string, args ...any) {
	p.c.Problems = append(p.c.Problems, Problem{File: p.c.File, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// line handles line number n.
func (p *parser) line(n int, line []byte) {
	line = trimSpace(line)
	if len(line) == 0 || line[0] == '#' {
		return
	}
	kw, val := line, []byte(nil)
	for i, b := range line {
		if isSpace(b) {
			kw, val = line[:i], trimSpace(line[i+1:])
			break
		}
	}
	switch name := string(kw); name {
	case "key":
		p.key(n, string(val))
	case "tpm", "log", "label":
		if !p.single(n, name, val) {
			return
		}
		v := string(val)
		switch name {
		case "tpm":
			p.c.TPM = v
		case "log":
			p.c.Log = p.resolve(v)
		case "label":
			p.c.Label = v
		}
	case "key_pin", "srk_pin":
		if !p.single(n, name, val) {
			return
		}
		pin := bytes.Clone(val)
		if name == "key_pin" {
			clear(p.c.KeyPIN)
			p.c.KeyPIN, p.c.HasKeyPIN = pin, true
		} else {
			clear(p.c.SRKPIN)
			p.c.SRKPIN, p.c.HasSRKPIN = pin, true
		}
	case "debug":
		p.duplicate(n, name) // the value is optional
		switch strings.ToLower(string(val)) {
		case "", "1", "yes", "true", "on":
			p.c.Debug = true
		case "0", "no", "false", "off":
			p.c.Debug = false
		default:
			p.c.Debug = true
			p.problem(n, `unexpected value for "debug" (expected none, or one of 1/0, yes/no, true/false, on/off); debug enabled`)
		}
	default:
		p.unknown(n, kw)
	}
}

// single checks a single-valued directive: it reports a missing value
// (returning false: the line is ignored) and a repeated directive (returning
// true: the later line wins).
func (p *parser) single(n int, name string, val []byte) bool {
	if len(val) == 0 {
		p.problem(n, "missing value for %q", name)
		return false
	}
	p.duplicate(n, name)
	return true
}

// duplicate reports name when an earlier line set it, and records line n.
func (p *parser) duplicate(n int, name string) {
	if prev, ok := p.seen[name]; ok {
		p.problem(n, "duplicate directive %q (previous on line %d); using this one", name, prev)
	}
	p.seen[name] = n
}

// key handles "key FILE [label=LABEL]".
func (p *parser) key(n int, val string) {
	file, label, hasLabel := splitLabel(val)
	if file == "" {
		if val == "" {
			p.problem(n, `missing value for "key"`)
		} else {
			p.problem(n, `missing key file for "key"`)
		}
		return
	}
	path := p.resolve(file)
	if hasLabel && label == "" {
		label = defaultLabel(path)
		p.problem(n, `empty "label=" for "key"; using %q`, label)
	} else if !hasLabel {
		label = defaultLabel(path)
	}
	p.c.Keys = append(p.c.Keys, Key{Path: path, Label: label, Line: n})
}

// splitLabel splits "FILE label=LABEL" at the first "label=" that starts the
// value or follows white space. A file name therefore cannot contain
// " label=", while a label can contain anything.
func splitLabel(val string) (file, label string, ok bool) {
	const tag = "label="
	for i := 0; ; {
		j := strings.Index(val[i:], tag)
		if j < 0 {
			return val, "", false
		}
		j += i
		if j == 0 || isSpace(val[j-1]) {
			return string(trimSpace([]byte(val[:j]))), string(trimSpace([]byte(val[j+len(tag):]))), true
		}
		i = j + 1
	}
}

// defaultLabel is the base name of path without its extension.
func defaultLabel(path string) string {
	base := filepath.Base(path)
	if l := strings.TrimSuffix(base, filepath.Ext(base)); l != "" {
		return l
	}
	return base
}

// resolve makes a relative name relative to the config's directory.
func (p *parser) resolve(name string) string {
	if filepath.IsAbs(name) {
		return filepath.Clean(name)
	}
	return filepath.Join(p.dir, name)
}

// unknown reports an unrecognized keyword kw without revealing anything that
// might be a secret: a PIN written on a line of its own, or after a keyword
// glued to it ("key_pin=1234"). The name is shown only when it looks like a
// directive name: up to 24 ASCII letters, '_' or '-', starting with a letter.
// parse hides it afterwards if it is part of the key or SRK PIN.
func (p *parser) unknown(n int, kw []byte) {
	i := 0
	for i < len(kw) && isNameByte(kw[i]) {
		i++
	}
	switch {
	case i > 0 && i < len(kw) && isKnown(string(kw[:i])):
		p.problem(n, "directive %q must be separated from its value by white space; line ignored", kw[:i])
	case i == len(kw) && i <= 24 && isLetter(kw[0]):
		p.named = append(p.named, namedProblem{len(p.c.Problems), string(kw)})
		p.problem(n, "unknown directive %q (known: %s)", kw, knownList)
	default:
		p.problem(n, "%s", hiddenMsg)
	}
}

// hiddenMsg reports an unknown directive whose name is not shown.
const hiddenMsg = "unknown directive, not shown as it may hold a secret (known: " + knownList + ")"

// isNameByte reports whether b can be part of a directive name as shown in
// problems. Digits are left out as they are typical of PINs.
func isNameByte(b byte) bool { return isLetter(b) || b == '_' || b == '-' }

func isLetter(b byte) bool { return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' }

func isKnown(name string) bool {
	switch name {
	case "key", "tpm", "key_pin", "srk_pin", "log", "debug", "label":
		return true
	}
	return false
}

// addDefaultKey adds the key <hostname>.key in dir, the key used when the
// config names none. When the host name is unknown it adds a problem instead.
func (c *Config) addDefaultKey(dir string) {
	host, err := hostname()
	host, _, _ = strings.Cut(host, ".")
	if err == nil && (host == "" || strings.ContainsAny(host, `/\`)) {
		err = fmt.Errorf("unusable host name %q", host)
	}
	if err != nil {
		c.Problems = append(c.Problems, Problem{File: c.File, Msg: fmt.Sprintf(`no "key" directive and no default key: %v`, err)})
		return
	}
	c.Keys = append(c.Keys, Key{Path: filepath.Join(dir, host+".key"), Label: host})
}
