package tests

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// sourceCommands lists the commands in ../cmd, one per directory with a
// main.go: the docs, completion and install tests check each of them, so
// a new command is covered without editing a list.
func sourceCommands(t testing.TB) []string {
	t.Helper()
	mains, err := filepath.Glob("../cmd/*/main.go")
	if err != nil {
		t.Fatal(err)
	}
	if len(mains) == 0 {
		t.Fatal("no commands in ../cmd")
	}
	var names []string
	for _, m := range mains {
		names = append(names, filepath.Base(filepath.Dir(m)))
	}
	sort.Strings(names)
	return names
}

var buildMu sync.Mutex

// commandPath returns the built command name from binDir, building it
// there first when TestMain did not.
func commandPath(t testing.TB, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	p := filepath.Join(binDir, name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if out, err := command(t, goTool(), "build", "-o", p, "../cmd/"+name).CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", name, err, out)
	}
	return p
}

// helpText is what "NAME --help" prints on standard output.
func helpText(t testing.TB, name string) string {
	t.Helper()
	cmd := command(t, commandPath(t, name), "--help")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s --help: %v\n%s", name, err, stderr.String())
	}
	return string(out)
}

// usageLines returns the lines of the "Usage:" block that starts a help
// text, each with its white space collapsed.
func usageLines(t testing.TB, name, help string) []string {
	t.Helper()
	lines := strings.Split(help, "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[0]) != "Usage:" {
		t.Fatalf("%s --help does not start with a \"Usage:\" line:\n%s", name, help)
	}
	var usage []string
	for _, l := range lines[1:] {
		if strings.TrimSpace(l) == "" {
			break
		}
		usage = append(usage, strings.Join(strings.Fields(l), " "))
	}
	if len(usage) == 0 {
		t.Fatalf("%s --help has an empty \"Usage:\" block", name)
	}
	return usage
}

// section returns the lines of a help text after the line "TITLE:" up to
// the next line that is not indented.
func section(help, title string) []string {
	var out []string
	in := false
	for _, l := range strings.Split(help, "\n") {
		switch {
		case l == title+":":
			in = true
		case in && l != "" && !strings.HasPrefix(l, " "):
			return out
		case in:
			out = append(out, l)
		}
	}
	return out
}

// subcommands returns, for a command whose usage lines all read
// "NAME SUBCOMMAND ...", the flags each subcommand's usage lines show;
// nil for a command without subcommands.
func subcommands(name string, usage []string) map[string][]string {
	subs := map[string][]string{}
	for _, u := range usage {
		f := strings.Fields(u)
		// A subcommand is a plain word: not a flag, not an optional part.
		if len(f) < 2 || f[0] != name || strings.HasPrefix(f[1], "-") || strings.HasPrefix(f[1], "[") {
			return nil
		}
		subs[f[1]] = append(subs[f[1]], usageFlags(f[2:])...)
	}
	return subs
}

// usageFlags picks the flags out of usage words: "[-s|-c]" gives -s
// and -c, "[--module PATH]" gives --module.
func usageFlags(words []string) []string {
	var flags []string
	for _, w := range words {
		for _, alt := range strings.Split(strings.Trim(w, "[]"), "|") {
			if strings.HasPrefix(alt, "-") {
				flags = append(flags, alt)
			}
		}
	}
	return flags
}

// optionFlags returns the flags listed in the "Options:" section of a
// help text: the words that start each option line while they begin
// with '-' ("-y -k FILE" gives -y and -k, "-h, --help" -h and --help).
func optionFlags(help string) []string {
	var flags []string
	for _, l := range section(help, "Options") {
		for _, w := range strings.Fields(l) {
			w = strings.TrimSuffix(w, ",")
			if !strings.HasPrefix(w, "-") {
				break
			}
			flags = append(flags, w)
		}
	}
	return flags
}

// set returns the sorted unique words of list.
func set(list []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, w := range list {
		if !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	sort.Strings(out)
	return out
}

// TestHelpAndVersion: every command answers -h, --help and --version on
// standard output with exit status 0 and nothing on standard error; an
// unknown flag is a usage error (exit 2) on standard error only.
func TestHelpAndVersion(t *testing.T) {
	for _, name := range sourceCommands(t) {
		t.Run(name, func(t *testing.T) {
			bin := commandPath(t, name)
			for _, tc := range []struct {
				args   []string
				code   int
				stdout string // prefix of standard output
			}{
				{[]string{"-h"}, 0, "Usage:\n"},
				{[]string{"--help"}, 0, "Usage:\n"},
				{[]string{"--version"}, 0, name + " "},
				{[]string{"--no-such-flag"}, 2, ""},
			} {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				cmd := exec.CommandContext(ctx, bin, tc.args...)
				var stdout, stderr strings.Builder
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				cancel()
				code := 0
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					code = ee.ExitCode()
				} else if err != nil {
					t.Fatalf("%s %v: %v", name, tc.args, err)
				}
				if code != tc.code {
					t.Errorf("%s %v: exit status %d, want %d\n%s", name, tc.args, code, tc.code, stderr.String())
				}
				if tc.code == 0 {
					if !strings.HasPrefix(stdout.String(), tc.stdout) || stderr.Len() != 0 {
						t.Errorf("%s %v: stdout %q, stderr %q; want stdout starting %q and no stderr", name, tc.args, stdout.String(), stderr.String(), tc.stdout)
					}
				} else if stdout.Len() != 0 || !strings.HasPrefix(stderr.String(), name+": error: ") {
					t.Errorf("%s %v: stdout %q, stderr %q; want only an error on stderr", name, tc.args, stdout.String(), stderr.String())
				}
			}
		})
	}
}
