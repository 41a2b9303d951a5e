package p11kit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// Marker is the value of the MarkerKey line that Register writes into
// every module file, and that Register and Unregister look for before
// they replace or remove a file. pkcs11.conf(5) reserves "x-" keys for
// uses like this; p11-kit ignores them.
const (
	MarkerKey = "x-written-by"
	Marker    = "simple-tpm-pk11"
)

// SystemModuleDir is where root's (system-wide) module files go.
const SystemModuleDir = "/etc/pkcs11/modules"

// Field is a key and value of a module file that ModuleFile has no
// field for (priority, trust-policy, managed, log-calls, x-...).
type Field struct{ Key, Value string }

// ModuleFile is a p11-kit module file, NAME.module (pkcs11.conf(5)).
type ModuleFile struct {
	Name      string   // file name without ".module"; not stored in the file
	Module    string   // "module:": the .so (relative: p11-kit's module directory)
	Remote    string   // "remote:": "|command args" or "unix:path=/socket"
	Critical  *bool    // "critical: yes|no"; nil: not written (p11-kit's default is no)
	EnableIn  []string // "enable-in:": program base names
	DisableIn []string // "disable-in:": program base names
	Comment   string   // "# " lines at the top; may span lines
	WrittenBy string   // MarkerKey's value; Register sets it to Marker
	Extra     []Field  // other keys, kept in order
}

// Well-known keys, in the order Marshal writes them.
const (
	keyModule    = "module"
	keyRemote    = "remote"
	keyCritical  = "critical"
	keyEnableIn  = "enable-in"
	keyDisableIn = "disable-in"
)

var (
	// pkcs11.conf(5): letters, digits, underscore, comma, dash and dot;
	// the first character alphanumeric.
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.,-]*$`)
	// pkcs11.conf(5): "alpha numeric characters, dot, hyphen and underscore".
	keyRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

// Marshal formats the file: the comment, then module, remote, critical,
// enable-in, disable-in, the Extra fields and the marker, each only when
// set. Call Validate first: Marshal turns line breaks inside values into
// spaces rather than write a line p11-kit cannot parse (one bad line in
// any module file makes p11-kit load no module at all).
func (m ModuleFile) Marshal() []byte {
	var b bytes.Buffer
	if m.Comment != "" {
		for _, l := range strings.Split(strings.TrimRight(m.Comment, "\n"), "\n") {
			b.WriteString(strings.TrimRight("# "+l, " \t\r") + "\n")
		}
	}
	put := func(k, v string) {
		v = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(v)
		b.WriteString(k + ": " + v + "\n")
	}
	if m.Module != "" {
		put(keyModule, m.Module)
	}
	if m.Remote != "" {
		put(keyRemote, m.Remote)
	}
	if m.Critical != nil {
		put(keyCritical, map[bool]string{true: "yes", false: "no"}[*m.Critical])
	}
	if len(m.EnableIn) > 0 {
		put(keyEnableIn, strings.Join(m.EnableIn, ", "))
	}
	if len(m.DisableIn) > 0 {
		put(keyDisableIn, strings.Join(m.DisableIn, ", "))
	}
	for _, f := range m.Extra {
		put(f.Key, f.Value)
	}
	if m.WrittenBy != "" {
		put(MarkerKey, m.WrittenBy)
	}
	return b.Bytes()
}

// Validate reports what would make the file wrong for p11-kit or for
// Register.
func (m ModuleFile) Validate() error {
	if !nameRE.MatchString(m.Name) {
		return fmt.Errorf("p11kit: module name %q: use letters, digits, '_', ',', '-' and '.', starting with a letter or digit", m.Name)
	}
	if (m.Module == "") == (m.Remote == "") {
		return fmt.Errorf("p11kit: module %q: set exactly one of module and remote", m.Name)
	}
	if m.Remote != "" && !strings.HasPrefix(m.Remote, "|") && !strings.HasPrefix(m.Remote, "unix:") &&
		!strings.HasPrefix(m.Remote, "vsock:") {
		return fmt.Errorf("p11kit: module %q: remote %q: want \"|command\" or \"unix:path=SOCKET\"", m.Name, m.Remote)
	}
	if len(m.EnableIn) > 0 && len(m.DisableIn) > 0 {
		return fmt.Errorf("p11kit: module %q: enable-in and disable-in together (pkcs11.conf(5) forbids it)", m.Name)
	}
	for _, p := range append(append([]string{}, m.EnableIn...), m.DisableIn...) {
		if p == "" || strings.ContainsAny(p, ", \t\r\n") {
			return fmt.Errorf("p11kit: module %q: program name %q: no commas or spaces", m.Name, p)
		}
	}
	vals := []Field{{keyModule, m.Module}, {keyRemote, m.Remote}, {MarkerKey, m.WrittenBy}}
	for _, f := range m.Extra {
		if !keyRE.MatchString(f.Key) {
			return fmt.Errorf("p11kit: module %q: bad key %q", m.Name, f.Key)
		}
		switch f.Key {
		case keyModule, keyRemote, keyCritical, keyEnableIn, keyDisableIn, MarkerKey:
			return fmt.Errorf("p11kit: module %q: key %q belongs in its own field, not Extra", m.Name, f.Key)
		}
		vals = append(vals, f)
	}
	for _, f := range vals {
		if strings.ContainsAny(f.Value, "\r\n") || strings.TrimSpace(f.Value) != f.Value {
			return fmt.Errorf("p11kit: module %q: %s value %q has line breaks or surrounding spaces", m.Name, f.Key, f.Value)
		}
	}
	return nil
}

// ParseModuleFile parses a module file as p11-kit does: blank lines and
// lines starting with '#' are skipped (the '#' lines before the first
// key become Comment), every other line must be "key: value". A line
// without a colon is an error, as it is for p11-kit 0.24 (which then
// loads no module at all, silently). A repeated key: the last one wins.
// Name is left empty; ReadModuleFile sets it.
func ParseModuleFile(data []byte) (ModuleFile, error) {
	var m ModuleFile
	var comment []string
	seenKey := false
	for i, raw := range strings.Split(string(data), "\n") {
		line := strings.TrimSpace(raw)
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			if !seenKey {
				c := strings.TrimPrefix(line, "#")
				comment = append(comment, strings.TrimPrefix(c, " "))
			}
			continue
		}
		seenKey = true
		k, v, ok := strings.Cut(line, ":")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || !keyRE.MatchString(k) {
			return ModuleFile{}, fmt.Errorf("p11kit: module file line %d: %q is not \"key: value\"", i+1, line)
		}
		switch k {
		case keyModule:
			m.Module = v
		case keyRemote:
			m.Remote = v
		case keyCritical:
			b, err := parseBool(v)
			if err != nil {
				return ModuleFile{}, fmt.Errorf("p11kit: module file line %d: critical: %v", i+1, err)
			}
			m.Critical = &b
		case keyEnableIn:
			m.EnableIn = splitList(v)
		case keyDisableIn:
			m.DisableIn = splitList(v)
		case MarkerKey:
			m.WrittenBy = v
		default:
			m.Extra = append(m.Extra, Field{k, v})
		}
	}
	m.Comment = strings.Join(comment, "\n")
	return m, nil
}

// ReadModuleFile reads and parses a module file, and sets Name from its
// file name.
func ReadModuleFile(path string) (ModuleFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return ModuleFile{}, err
	}
	m, err := ParseModuleFile(data)
	if err != nil {
		return ModuleFile{}, fmt.Errorf("%s: %w", path, err)
	}
	m.Name = strings.TrimSuffix(filepath.Base(path), ".module")
	return m, nil
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "yes", "true":
		return true, nil
	case "no", "false":
		return false, nil
	}
	return false, fmt.Errorf("%q is not yes or no", v)
}

// splitList splits a "comma and/or space separated list".
func splitList(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

// UserModuleDir returns the directory where this user's module files go,
// so that p11-kit (and p11-kit-proxy.so) in this user's programs load
// them.
//
// Verified with p11-kit 0.24.1 ("P11_KIT_DEBUG=conf p11-kit list-modules"):
//   - As root it never reads a user directory, whatever HOME or
//     XDG_CONFIG_HOME say ("skipping user config in program running as
//     root"); pkcs11.conf(5) says the same for setuid and setgid
//     programs. So root (and a setuid caller) gets /etc/pkcs11/modules,
//     which every user's programs read.
//   - Otherwise it reads $XDG_CONFIG_HOME/pkcs11/modules when
//     XDG_CONFIG_HOME is non-empty (even a relative one, taken from the
//     program's working directory: refused here), else
//     $HOME/.config/pkcs11/modules, else the passwd entry's home
//     directory + /.config/pkcs11/modules (HOME unset or empty). The
//     user directory replaces nothing: /etc/pkcs11/modules and
//     /usr/share/p11-kit/modules are read too, unless the global
//     pkcs11.conf sets "user-config: none".
//   - Two module files naming the same .so give one module (the first
//     one read; "duplicate module ..., using previous").
func UserModuleDir() (string, error) {
	return userModuleDir(os.Getuid(), os.Geteuid(), os.Getenv)
}

func userModuleDir(uid, euid int, getenv func(string) string) (string, error) {
	if uid == 0 || euid == 0 || uid != euid {
		return SystemModuleDir, nil
	}
	if x := getenv("XDG_CONFIG_HOME"); x != "" {
		if !filepath.IsAbs(x) {
			return "", fmt.Errorf("p11kit: XDG_CONFIG_HOME %q is not an absolute path", x)
		}
		return filepath.Join(x, "pkcs11", "modules"), nil
	}
	home := getenv("HOME")
	if home == "" {
		u, err := user.LookupId(strconv.Itoa(uid))
		if err != nil {
			return "", fmt.Errorf("p11kit: HOME is not set and uid %d has no passwd entry: %w", uid, err)
		}
		home = u.HomeDir
	}
	if !filepath.IsAbs(home) {
		return "", fmt.Errorf("p11kit: home directory %q is not an absolute path", home)
	}
	return filepath.Join(home, ".config", "pkcs11", "modules"), nil
}

// ForeignFileError is returned by Register and Unregister for a module
// file this package did not write.
type ForeignFileError struct {
	Path   string
	Reason string
}

func (e *ForeignFileError) Error() string {
	return fmt.Sprintf("p11kit: %s was not written by %s (%s); leaving it alone", e.Path, Marker, e.Reason)
}

// Hint says how to proceed.
func (e *ForeignFileError) Hint() string {
	return "look at " + e.Path + " and remove it yourself, or force the overwrite"
}

// ours reports whether the existing file at path was written by Register.
func ours(path string, data []byte) error {
	m, err := ParseModuleFile(data)
	if err != nil {
		return &ForeignFileError{Path: path, Reason: "it does not parse: " + err.Error()}
	}
	if m.WrittenBy != Marker {
		return &ForeignFileError{Path: path, Reason: "no \"" + MarkerKey + ": " + Marker + "\" line"}
	}
	return nil
}

// Register writes dir/NAME.module (0644) atomically: a hidden temporary
// file in dir (p11-kit reads every file in the directory whose name
// does not start with '.', whatever its suffix, so the temporary name
// must be hidden) renamed over the target. It creates dir (0755) when
// needed and returns the file's path. m.WrittenBy is set to Marker.
// An existing file with the same content is left as it is; one with
// other content is replaced only if it carries the marker, or if force.
func Register(dir string, m ModuleFile, force bool) (string, error) {
	m.WrittenBy = Marker
	if err := m.Validate(); err != nil {
		return "", err
	}
	if dir == "" {
		return "", errors.New("p11kit: no module directory")
	}
	path := filepath.Join(dir, m.Name+".module")
	data := m.Marshal()
	old, err := os.ReadFile(path)
	switch {
	case err == nil:
		if bytes.Equal(old, data) {
			return path, nil
		}
		if err := ours(path, old); err != nil && !force {
			return "", err
		}
	case !errors.Is(err, os.ErrNotExist):
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := writeAtomic(path, data, 0o644); err != nil {
		return "", err
	}
	return path, nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if rerr := os.Remove(f.Name()); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
				err = errors.Join(err, rerr)
			}
		}
	}()
	if _, err := f.Write(data); err != nil {
		return errors.Join(err, f.Close())
	}
	if err := f.Chmod(mode); err != nil {
		return errors.Join(err, f.Close())
	}
	if err := f.Sync(); err != nil {
		return errors.Join(err, f.Close())
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	// Best effort durability for the rename: some file systems cannot
	// sync a directory, and the file is in place either way.
	d, err := os.Open(dir)
	if err != nil {
		return nil
	}
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return errors.Join(err, d.Close())
	}
	return d.Close()
}

// Unregister removes dir/NAME.module if Register wrote it, and reports
// whether it removed a file. A missing file is not an error; a file
// without the marker is left alone and reported as *ForeignFileError.
func Unregister(dir, name string) (bool, error) {
	if !nameRE.MatchString(name) {
		return false, fmt.Errorf("p11kit: bad module name %q", name)
	}
	path := filepath.Join(dir, name+".module")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := ours(path, data); err != nil {
		return false, err
	}
	if err := os.Remove(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}
