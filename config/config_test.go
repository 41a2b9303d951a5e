package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// testHost is the host name every test sees unless it sets another.
const testHost = "myhost.example.com"

func TestMain(m *testing.M) {
	hostname = func() (string, error) { return testHost, nil }
	os.Exit(m.Run())
}

// setHostname replaces the host name lookup for one test.
func setHostname(t *testing.T, f func() (string, error)) {
	t.Helper()
	old := hostname
	hostname = f
	t.Cleanup(func() { hostname = old })
}

const (
	cfgFile = "/etc/stpm/config"
	known   = "(known: key, tpm, key_pin, srk_pin, log, debug, label)"
)

// Secrets used as PINs; no message may contain them.
const (
	pin1 = "s3cr3t#PIN 42"
	pin2 = "#hunter2 two"
)

var defaultKey = []Key{{Path: "/etc/stpm/myhost.key", Label: "myhost"}}

// want is the part of a Config a test case checks.
type want struct {
	Keys           []Key
	TPM            string
	KeyPIN, SRKPIN []byte
	Log            string
	Debug          bool
	Label          string
	Problems       []string // Problem.String() of each problem
}

func got(c *Config) want {
	w := want{
		Keys: c.Keys, TPM: c.TPM, Log: c.Log, Debug: c.Debug, Label: c.Label,
		KeyPIN: c.KeyPIN, SRKPIN: c.SRKPIN,
	}
	for _, p := range c.Problems {
		w.Problems = append(w.Problems, p.String())
	}
	return w
}

func prob(line int, msg string) string { return fmt.Sprintf("%s:%d: %s", cfgFile, line, msg) }

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		file string // cfgFile when ""
		in   string
		want want
	}{
		{
			name: "empty",
			in:   "",
			want: want{Keys: defaultKey},
		},
		{
			name: "comments and blank lines",
			in:   "# a comment\n   # indented comment\n\t#tabbed\n\n  \t \n#key other.key\n",
			want: want{Keys: defaultKey},
		},
		{
			name: "every directive",
			in: "key rsa.key\n" +
				"key /abs/id.tpm.key label=My Key\n" +
				"tpm /dev/tpmrm0\n" +
				"key_pin " + pin1 + "\n" +
				"srk_pin " + pin2 + "\n" +
				"log stpm.log\n" +
				"debug\n" +
				"label My Token\n",
			want: want{
				Keys: []Key{
					{Path: "/etc/stpm/rsa.key", Label: "rsa", Line: 1},
					{Path: "/abs/id.tpm.key", Label: "My Key", Line: 2},
				},
				TPM:    "/dev/tpmrm0",
				KeyPIN: []byte(pin1),
				SRKPIN: []byte(pin2),
				Log:    "/etc/stpm/stpm.log",
				Debug:  true,
				Label:  "My Token",
			},
		},
		{
			name: "whitespace around keyword and value",
			in:   "  \tkey\t  a key.key  \t\n key_pin   " + pin1 + "   \r\n",
			want: want{
				Keys:   []Key{{Path: "/etc/stpm/a key.key", Label: "a key", Line: 1}},
				KeyPIN: []byte(pin1),
			},
		},
		{
			name: "hash inside values",
			in:   "key_pin #1234\nsrk_pin ab#cd # not a comment\nlabel #1\n",
			want: want{
				Keys:   defaultKey,
				KeyPIN: []byte("#1234"),
				SRKPIN: []byte("ab#cd # not a comment"),
				Label:  "#1",
			},
		},
		{
			name: "CRLF and byte order mark",
			in:   "\uFEFFkey a.key\r\ntpm swtpm:port=2321\r\n",
			want: want{
				Keys: []Key{{Path: "/etc/stpm/a.key", Label: "a", Line: 1}},
				TPM:  "swtpm:port=2321",
			},
		},
		{
			name: "relative and absolute paths",
			in:   "key keys/../k1.key\nkey sub/k2\nkey /k/./k3.pem\nkey ../up.key\nlog /var/log/stpm.log\n",
			want: want{
				Keys: []Key{
					{Path: "/etc/stpm/k1.key", Label: "k1", Line: 1},
					{Path: "/etc/stpm/sub/k2", Label: "k2", Line: 2},
					{Path: "/k/k3.pem", Label: "k3", Line: 3},
					{Path: "/etc/up.key", Label: "up", Line: 4},
				},
				Log: "/var/log/stpm.log",
			},
		},
		{
			name: "no file name keeps paths relative",
			file: "-",
			in:   "key a.key\nlog x/y.log\nkye\n",
			want: want{
				Keys:     []Key{{Path: "a.key", Label: "a", Line: 1}},
				Log:      "x/y.log",
				Problems: []string{`line 3: unknown directive "kye" ` + known},
			},
		},
		{
			name: "labels",
			in: "key id.tpm.key\n" +
				"key .key\n" +
				"key noext\n" +
				"key a.key label=ssh\n" +
				"key b.key   label=  two words  \n" +
				"key my label=x.key\n" +
				"key c.key label=x label=y\n" +
				"key mylabel=z.key\n",
			want: want{Keys: []Key{
				{Path: "/etc/stpm/id.tpm.key", Label: "id.tpm", Line: 1},
				{Path: "/etc/stpm/.key", Label: ".key", Line: 2},
				{Path: "/etc/stpm/noext", Label: "noext", Line: 3},
				{Path: "/etc/stpm/a.key", Label: "ssh", Line: 4},
				{Path: "/etc/stpm/b.key", Label: "two words", Line: 5},
				{Path: "/etc/stpm/my", Label: "x.key", Line: 6},
				{Path: "/etc/stpm/c.key", Label: "x label=y", Line: 7},
				{Path: "/etc/stpm/mylabel=z.key", Label: "mylabel=z", Line: 8},
			}},
		},
		{
			name: "debug values",
			in:   "debug 1\n",
			want: want{Keys: defaultKey, Debug: true},
		},
		{
			name: "debug yes",
			in:   "debug yes",
			want: want{Keys: defaultKey, Debug: true},
		},
		{
			name: "debug TRUE",
			in:   "debug TRUE",
			want: want{Keys: defaultKey, Debug: true},
		},
		{
			name: "debug on",
			in:   "debug on",
			want: want{Keys: defaultKey, Debug: true},
		},
		{
			name: "debug 0",
			in:   "debug 0",
			want: want{Keys: defaultKey},
		},
		{
			name: "debug no",
			in:   "debug no",
			want: want{Keys: defaultKey},
		},
		{
			name: "debug false",
			in:   "debug False",
			want: want{Keys: defaultKey},
		},
		{
			name: "debug off",
			in:   "debug off",
			want: want{Keys: defaultKey},
		},
		{
			name: "value where none expected",
			in:   "debug maybe\n",
			want: want{Keys: defaultKey, Debug: true, Problems: []string{
				prob(1, `unexpected value for "debug" (expected none, or one of 1/0, yes/no, true/false, on/off); debug enabled`),
			}},
		},
		{
			name: "unknown directives",
			in: "kye a.key\n" +
				"key_pinn " + pin1 + "\n" +
				"Key b.key\n" +
				"KEY_PIN " + pin2 + "\n",
			want: want{Keys: defaultKey, Problems: []string{
				prob(1, `unknown directive "kye" `+known),
				prob(2, `unknown directive "key_pinn" `+known),
				prob(3, `unknown directive "Key" `+known),
				prob(4, `unknown directive "KEY_PIN" `+known),
			}},
		},
		{
			name: "unknown directives that may be secrets",
			in: "1234\n" +
				"hunter2\n" +
				"pin:4321\n" +
				"averyveryverylongsecretword\n" +
				"key_pin=1234\n" +
				"srk_pin:" + pin2 + "\n" +
				"key=a.key\n",
			want: want{Keys: defaultKey, Problems: []string{
				prob(1, `unknown directive, not shown as it may hold a secret `+known),
				prob(2, `unknown directive, not shown as it may hold a secret `+known),
				prob(3, `unknown directive, not shown as it may hold a secret `+known),
				prob(4, `unknown directive, not shown as it may hold a secret `+known),
				prob(5, `directive "key_pin" must be separated from its value by white space; line ignored`),
				prob(6, `directive "srk_pin" must be separated from its value by white space; line ignored`),
				prob(7, `directive "key" must be separated from its value by white space; line ignored`),
			}},
		},
		{
			name: "unknown directive names that are part of a PIN",
			in:   "wordpin\nkey_pin my wordpin x\nabc\nsecret\nsrk_pin abc\n",
			want: want{
				Keys:   defaultKey,
				KeyPIN: []byte("my wordpin x"),
				SRKPIN: []byte("abc"),
				Problems: []string{
					prob(1, `unknown directive, not shown as it may hold a secret `+known),
					prob(3, `unknown directive, not shown as it may hold a secret `+known),
					prob(4, `unknown directive "secret" `+known),
				},
			},
		},
		{
			name: "missing values",
			in:   "key\nkey   \ntpm\nkey_pin\nsrk_pin \t\nlog\nlabel\nkey label=x\nkey b.key label=\n",
			want: want{
				Keys: []Key{{Path: "/etc/stpm/b.key", Label: "b", Line: 9}},
				Problems: []string{
					prob(1, `missing value for "key"`),
					prob(2, `missing value for "key"`),
					prob(3, `missing value for "tpm"`),
					prob(4, `missing value for "key_pin"`),
					prob(5, `missing value for "srk_pin"`),
					prob(6, `missing value for "log"`),
					prob(7, `missing value for "label"`),
					prob(8, `missing key file for "key"`),
					prob(9, `empty "label=" for "key"; using "b"`),
				},
			},
		},
		{
			name: "missing value does not count as a duplicate",
			in:   "tpm\ntpm a\n",
			want: want{Keys: defaultKey, TPM: "a", Problems: []string{
				prob(1, `missing value for "tpm"`),
			}},
		},
		{
			name: "duplicates: the later one wins",
			in: "tpm a\ntpm b\n" +
				"key_pin " + pin2 + "\nkey_pin " + pin1 + "\n" +
				"srk_pin " + pin1 + "\nsrk_pin " + pin2 + "\n" +
				"log a.log\nlog b.log\n" +
				"debug\ndebug no\n" +
				"label A\nlabel B\nlabel C\n" +
				"key k.key\nkey k.key\n",
			want: want{
				Keys: []Key{
					{Path: "/etc/stpm/k.key", Label: "k", Line: 14},
					{Path: "/etc/stpm/k.key", Label: "k", Line: 15},
				},
				TPM:    "b",
				KeyPIN: []byte(pin1),
				SRKPIN: []byte(pin2),
				Log:    "/etc/stpm/b.log",
				Label:  "C",
				Problems: []string{
					prob(2, `duplicate directive "tpm" (previous on line 1); using this one`),
					prob(4, `duplicate directive "key_pin" (previous on line 3); using this one`),
					prob(6, `duplicate directive "srk_pin" (previous on line 5); using this one`),
					prob(8, `duplicate directive "log" (previous on line 7); using this one`),
					prob(10, `duplicate directive "debug" (previous on line 9); using this one`),
					prob(12, `duplicate directive "label" (previous on line 11); using this one`),
					prob(13, `duplicate directive "label" (previous on line 12); using this one`),
				},
			},
		},
		{
			name: "good lines survive bad ones",
			in:   "kye x\nkey a.key\nkey\nkey_pin " + pin1 + "\ndebug perhaps\n",
			want: want{
				Keys:   []Key{{Path: "/etc/stpm/a.key", Label: "a", Line: 2}},
				KeyPIN: []byte(pin1),
				Debug:  true,
				Problems: []string{
					prob(1, `unknown directive "kye" `+known),
					prob(3, `missing value for "key"`),
					prob(5, `unexpected value for "debug" (expected none, or one of 1/0, yes/no, true/false, on/off); debug enabled`),
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := tt.file
			switch file {
			case "":
				file = cfgFile
			case "-":
				file = ""
			}
			c := Parse(strings.NewReader(tt.in), file)
			if c.File != file {
				t.Errorf("File = %q, want %q", c.File, file)
			}
			if g := got(c); !reflect.DeepEqual(g, tt.want) {
				t.Errorf("Parse(%q):\n got %#v\nwant %#v", tt.in, g, tt.want)
			}
			if c.HasKeyPIN != (tt.want.KeyPIN != nil) || c.HasSRKPIN != (tt.want.SRKPIN != nil) {
				t.Errorf("HasKeyPIN, HasSRKPIN = %t, %t; want %t, %t",
					c.HasKeyPIN, c.HasSRKPIN, tt.want.KeyPIN != nil, tt.want.SRKPIN != nil)
			}
			for _, p := range c.Problems {
				if p.File != file {
					t.Errorf("problem %v: File = %q, want %q", p, p.File, file)
				}
			}
			checkNoSecrets(t, c, pin1, pin2, "1234", "4321", "hunter2", "averyveryverylongsecretword")
		})
	}
}

// checkNoSecrets fails when a problem, or c in any fmt form, shows a secret.
func checkNoSecrets(t *testing.T, c *Config, secrets ...string) {
	t.Helper()
	var texts []string
	for _, p := range c.Problems {
		texts = append(texts, p.Msg, p.String())
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x"} {
		texts = append(texts,
			fmt.Sprintf(verb, c.Problems),
			fmt.Sprintf(verb, c),
			fmt.Sprintf(verb, *c))
	}
	for _, text := range texts {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%q shows secret %q", text, s)
			}
		}
		for _, pin := range [][]byte{c.KeyPIN, c.SRKPIN} {
			if len(pin) > 0 && strings.Contains(text, string(pin)) {
				t.Errorf("%q shows PIN %q", text, pin)
			}
			if len(pin) > 0 && strings.Contains(text, fmt.Sprint([]byte(pin))) {
				t.Errorf("%q shows PIN bytes %v", text, pin)
			}
		}
	}
}

func TestConfigFormatHidesPINs(t *testing.T) {
	c := Parse(strings.NewReader("key_pin "+pin1+"\nlabel T\n"), cfgFile)
	s := fmt.Sprint(c)
	for _, want := range []string{`KeyPIN:(set)`, `SRKPIN:(unset)`, `Label:"T"`, `/etc/stpm/myhost.key`} {
		if !strings.Contains(s, want) {
			t.Errorf("fmt.Sprint(config) = %s; lacks %s", s, want)
		}
	}
	checkNoSecrets(t, c, pin1)
}

func TestProblemString(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{
			Problem{"/home/u/.simple-tpm-pk11/config", 7, `unknown directive "kye" ` + known},
			`/home/u/.simple-tpm-pk11/config:7: unknown directive "kye" ` + known,
		},
		{Problem{"f", 0, "m"}, "f: m"},
		{Problem{"", 3, "m"}, "line 3: m"},
		{Problem{"", 0, "m"}, "m"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.p, got, tt.want)
		}
		if got := fmt.Sprint(tt.p); got != tt.want {
			t.Errorf("fmt.Sprint(%#v) = %q, want %q", tt.p, got, tt.want)
		}
	}
}

func TestDefaultKeyHostname(t *testing.T) {
	tests := []struct {
		name    string
		host    string
		err     error
		want    []Key
		problem string
	}{
		{name: "short", host: "box", want: []Key{{Path: "/etc/stpm/box.key", Label: "box"}}},
		{name: "fqdn", host: "box.example.org", want: []Key{{Path: "/etc/stpm/box.key", Label: "box"}}},
		{name: "error", err: errors.New("no name"), problem: cfgFile + `: no "key" directive and no default key: no name`},
		{name: "empty", host: "", problem: cfgFile + `: no "key" directive and no default key: unusable host name ""`},
		{name: "dot", host: ".local", problem: cfgFile + `: no "key" directive and no default key: unusable host name ""`},
		{name: "slash", host: "a/b", problem: cfgFile + `: no "key" directive and no default key: unusable host name "a/b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setHostname(t, func() (string, error) { return tt.host, tt.err })
			c := Parse(strings.NewReader("# no keys\n"), cfgFile)
			if !reflect.DeepEqual(c.Keys, tt.want) {
				t.Errorf("Keys = %v, want %v", c.Keys, tt.want)
			}
			var probs []string
			for _, p := range c.Problems {
				probs = append(probs, p.String())
			}
			var want []string
			if tt.problem != "" {
				want = []string{tt.problem}
			}
			if !reflect.DeepEqual(probs, want) {
				t.Errorf("Problems = %q, want %q", probs, want)
			}
		})
	}
	// With a key line the host name is not needed.
	setHostname(t, func() (string, error) { return "", errors.New("no name") })
	if c := Parse(strings.NewReader("key a.key\n"), cfgFile); len(c.Problems) != 0 {
		t.Errorf("Problems = %v, want none", c.Problems)
	}
}

type errReader struct{ data []byte }

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, errors.New("disk on fire")
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestParseReadError(t *testing.T) {
	c := Parse(&errReader{[]byte("tpm a\n")}, cfgFile)
	if c.TPM != "a" {
		t.Errorf("TPM = %q, want a", c.TPM)
	}
	want := []Problem{{File: cfgFile, Msg: "reading config: disk on fire"}}
	if !reflect.DeepEqual(c.Problems, want) {
		t.Errorf("Problems = %v, want %v", c.Problems, want)
	}
}

func writeFile(t *testing.T, path, content string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config")
	writeFile(t, file, "key rsa.key label=ssh\nkey_pin "+pin1+"\nlog l.log\nbogus\n", 0o600)

	check := func(t *testing.T, c *Config) {
		t.Helper()
		if c.File != file {
			t.Errorf("File = %q, want %q", c.File, file)
		}
		wantKeys := []Key{{Path: filepath.Join(dir, "rsa.key"), Label: "ssh", Line: 1}}
		if !reflect.DeepEqual(c.Keys, wantKeys) {
			t.Errorf("Keys = %v, want %v", c.Keys, wantKeys)
		}
		if string(c.KeyPIN) != pin1 || !c.HasKeyPIN {
			t.Errorf("KeyPIN not set as written")
		}
		if want := filepath.Join(dir, "l.log"); c.Log != want {
			t.Errorf("Log = %q, want %q", c.Log, want)
		}
		want := []Problem{{File: file, Line: 4, Msg: `unknown directive "bogus" ` + known}}
		if !reflect.DeepEqual(c.Problems, want) {
			t.Errorf("Problems = %v, want %v", c.Problems, want)
		}
	}

	t.Run("absolute", func(t *testing.T) {
		c, err := Load(file)
		if err != nil {
			t.Fatal(err)
		}
		check(t, c)
	})
	t.Run("relative name is made absolute", func(t *testing.T) {
		t.Chdir(dir)
		c, err := Load("config")
		if err != nil {
			t.Fatal(err)
		}
		check(t, c)
	})
	t.Run("missing", func(t *testing.T) {
		c, err := Load(filepath.Join(dir, "nope"))
		if c != nil || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load(missing) = %v, %v; want nil, error wrapping fs.ErrNotExist", c, err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		c, err := Load(dir)
		if c != nil || err == nil {
			t.Errorf("Load(dir) = %v, %v; want nil, error", c, err)
		}
	})
	t.Run("unreadable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root can read any file")
		}
		f := filepath.Join(t.TempDir(), "config")
		writeFile(t, f, "key_pin "+pin1+"\n", 0o000)
		c, err := Load(f)
		if c != nil || !errors.Is(err, fs.ErrPermission) {
			t.Errorf("Load(unreadable) = %v, %v; want nil, error wrapping fs.ErrPermission", c, err)
		}
		if err != nil && strings.Contains(err.Error(), pin1) {
			t.Errorf("error %q shows the PIN", err)
		}
	})
	t.Run("example", func(t *testing.T) {
		c, err := Load(filepath.Join("testdata", "example.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Problems) != 0 || len(c.Keys) != 2 || !c.HasSRKPIN || c.HasKeyPIN || c.Debug {
			t.Errorf("testdata/example.conf gave %v", c)
		}
	})
}

func TestPath(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)

	t.Setenv(EnvConfig, "")
	p, err := Path()
	if want := filepath.Join(home, ".simple-tpm-pk11", "config"); p != want || err != nil {
		t.Errorf("Path() = %q, %v; want %q, nil", p, err, want)
	}

	t.Setenv(EnvConfig, "/x/y.conf")
	if p, err := Path(); p != "/x/y.conf" || err != nil {
		t.Errorf("Path() with $%s set = %q, %v; want /x/y.conf, nil", EnvConfig, p, err)
	}
}

func TestLoadDefault(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv(EnvConfig, "")
	dir := filepath.Join(home, ".simple-tpm-pk11")

	t.Run("missing default file", func(t *testing.T) {
		c, err := LoadDefault()
		if err != nil {
			t.Fatal(err)
		}
		want := &Config{Keys: []Key{{Path: filepath.Join(dir, "myhost.key"), Label: "myhost"}}}
		if !reflect.DeepEqual(c, want) {
			t.Errorf("LoadDefault() = %v, want %v", c, want)
		}
	})
	t.Run("default file", func(t *testing.T) {
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, "config")
		writeFile(t, file, "tpm /dev/tpm0\n", 0o600)
		c, err := LoadDefault()
		if err != nil {
			t.Fatal(err)
		}
		if c.File != file || c.TPM != "/dev/tpm0" || len(c.Keys) != 1 || c.Keys[0].Path != filepath.Join(dir, "myhost.key") {
			t.Errorf("LoadDefault() = %v", c)
		}
	})
	t.Run("file named by environment", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "other.conf")
		writeFile(t, file, "key k.key\n", 0o600)
		t.Setenv(EnvConfig, file)
		c, err := LoadDefault()
		if err != nil {
			t.Fatal(err)
		}
		if c.File != file || len(c.Keys) != 1 || c.Keys[0].Path != filepath.Join(filepath.Dir(file), "k.key") {
			t.Errorf("LoadDefault() = %v", c)
		}
	})
	t.Run("missing file named by environment", func(t *testing.T) {
		t.Setenv(EnvConfig, filepath.Join(t.TempDir(), "typo.conf"))
		c, err := LoadDefault()
		if c != nil || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("LoadDefault() = %v, %v; want nil, error wrapping fs.ErrNotExist", c, err)
		}
	})
	t.Run("unusable home", func(t *testing.T) {
		t.Setenv("HOME", "")
		c, err := LoadDefault()
		if c != nil || err == nil {
			t.Errorf("LoadDefault() without a home = %v, %v; want nil, error", c, err)
		}
	})
}

func TestInsecurePINs(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string
		perm    os.FileMode
		warn    bool
	}{
		{"key_pin 0600", "key_pin " + pin1 + "\n", 0o600, false},
		{"key_pin 0400", "key_pin " + pin1 + "\n", 0o400, false},
		{"key_pin 0644", "key_pin " + pin1 + "\n", 0o644, true},
		{"srk_pin 0640", "srk_pin " + pin1 + "\n", 0o640, true},
		{"srk_pin 0602", "srk_pin " + pin1 + "\n", 0o602, true},
		{"no PIN 0644", "key a.key\n", 0o644, false},
		{"empty PIN line 0644", "key_pin\n", 0o644, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(dir, fmt.Sprintf("config%d", i))
			writeFile(t, file, tt.content, tt.perm)
			if tt.perm&0o400 == 0 {
				t.Fatal("test file must be readable")
			}
			c, err := Load(file)
			if err != nil {
				t.Fatal(err)
			}
			msg, warn := c.InsecurePINs()
			want := ""
			if tt.warn {
				want = fmt.Sprintf("%q holds a PIN and is readable by others; run: chmod 600 %q", file, file)
			}
			if msg != want || warn != tt.warn {
				t.Errorf("InsecurePINs() = %q, %t; want %q, %t", msg, warn, want, tt.warn)
			}
			if strings.Contains(msg, pin1) {
				t.Errorf("warning shows the PIN")
			}
		})
	}
	t.Run("not from a file", func(t *testing.T) {
		c := Parse(strings.NewReader("key_pin 1\n"), "")
		if msg, warn := c.InsecurePINs(); msg != "" || warn {
			t.Errorf("InsecurePINs() = %q, %t; want \"\", false", msg, warn)
		}
	})
	t.Run("file gone", func(t *testing.T) {
		c := Parse(strings.NewReader("key_pin 1\n"), filepath.Join(dir, "gone"))
		if msg, warn := c.InsecurePINs(); msg != "" || warn {
			t.Errorf("InsecurePINs() = %q, %t; want \"\", false", msg, warn)
		}
	})
	t.Run("nil", func(t *testing.T) {
		var c *Config
		if msg, warn := c.InsecurePINs(); msg != "" || warn {
			t.Errorf("InsecurePINs() = %q, %t; want \"\", false", msg, warn)
		}
	})
}

func TestZero(t *testing.T) {
	c := Parse(strings.NewReader("key_pin "+pin1+"\nsrk_pin "+pin2+"\n"), cfgFile)
	kp, sp := c.KeyPIN, c.SRKPIN
	c.Zero()
	for _, b := range [][]byte{kp, sp, c.KeyPIN, c.SRKPIN} {
		if len(b) == 0 || !bytes.Equal(b, make([]byte, len(b))) {
			t.Errorf("after Zero: PIN = %v, want %d zero bytes", b, len(b))
		}
	}
	if !c.HasKeyPIN || !c.HasSRKPIN {
		t.Errorf("Zero cleared HasKeyPIN or HasSRKPIN")
	}
	(&Config{}).Zero()
	(*Config)(nil).Zero()
}

func TestDuplicatePINZeroesOld(t *testing.T) {
	c := Parse(strings.NewReader("key_pin aaaa\nkey_pin bbbb\n"), cfgFile)
	if string(c.KeyPIN) != "bbbb" {
		t.Errorf("KeyPIN = %q, want bbbb", c.KeyPIN)
	}
}

// redactValues replaces the value of every key_pin, srk_pin and unrecognized
// line in data with a fixed text, keeping the line structure. Parsing the
// result must give the same problems: that is, no problem depends on (so
// none can show) a PIN or the rest of an unrecognized line.
func redactValues(data []byte) []byte {
	// The byte order mark the parser skips stays, or a second one
	// behind it would start the file.
	bom := []byte("\uFEFF")
	hasBOM := bytes.HasPrefix(data, bom)
	data = bytes.TrimPrefix(data, bom)
	lines := bytes.Split(data, []byte("\n"))
	for i, line := range lines {
		t := trimSpace(line)
		j := bytes.IndexFunc(t, func(r rune) bool { return r < 0x80 && isSpace(byte(r)) })
		if j < 0 {
			continue
		}
		switch string(t[:j]) {
		case "key", "tpm", "log", "label", "debug":
			continue
		}
		// Digits only: the parser hides a shown name that is part of a
		// PIN, and no name can be part of this one.
		// The line's indentation stays too: a mark after it is not at
		// the start of the file.
		if len(trimSpace(t[j:])) > 0 && t[0] != '#' {
			lead := line[:bytes.Index(line, t)]
			lines[i] = slices.Concat(lead, t[:j], []byte(" 00000000"))
		}
	}
	out := bytes.Join(lines, []byte("\n"))
	if hasBOM {
		out = append(bom, out...)
	}
	return out
}

func countLines(data []byte) int {
	if len(data) == 0 {
		return 0
	}
	n := bytes.Count(data, []byte("\n"))
	if data[len(data)-1] != '\n' {
		n++
	}
	return n
}

func FuzzParse(f *testing.F) {
	// The corpus in testdata/fuzz/FuzzParse is added automatically.
	f.Add([]byte("key a.key\nkey_pin 1#2 3\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.Clone(data)
		c := Parse(bytes.NewReader(data), cfgFile)
		if !bytes.Equal(in, data) {
			t.Fatalf("Parse changed its input")
		}
		lines := countLines(data)
		for _, p := range c.Problems {
			if p.Line < 1 || p.Line > lines {
				t.Errorf("problem %v: line %d outside 1..%d", p, p.Line, lines)
			}
			if p.File != cfgFile || p.Msg == "" {
				t.Errorf("problem %#v: bad file or empty message", p)
			}
		}
		for _, k := range c.Keys {
			if k.Path == "" || k.Label == "" || k.Line < 0 || k.Line > lines {
				t.Errorf("bad key %#v (input has %d lines)", k, lines)
			}
		}
		if c.HasKeyPIN != (c.KeyPIN != nil) || c.HasSRKPIN != (c.SRKPIN != nil) {
			t.Errorf("Has flags disagree with PINs")
		}
		if c.HasKeyPIN && len(c.KeyPIN) == 0 || c.HasSRKPIN && len(c.SRKPIN) == 0 {
			t.Errorf("empty PIN set")
		}
		// Problems may differ only where a name shown after redaction is
		// part of a PIN, and is hidden in the original.
		r := Parse(bytes.NewReader(redactValues(data)), cfgFile)
		same := len(c.Problems) == len(r.Problems)
		for i := 0; same && i < len(c.Problems); i++ {
			same = c.Problems[i] == r.Problems[i] ||
				c.Problems[i].Msg == hiddenMsg && strings.HasPrefix(r.Problems[i].Msg, "unknown directive \"")
		}
		if !same {
			t.Errorf("problems depend on PIN or unknown-line values:\n%v\n%v", c.Problems, r.Problems)
		}
		_ = fmt.Sprintf("%v %+v %#v %d", c, c.Problems, c, c)
		c.Zero()
	})
}
