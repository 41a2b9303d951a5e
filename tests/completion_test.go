package tests

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const completionDir = "../contrib/completions/bash"

// complete sources the bash completion of the command that line starts
// with, sets COMP_LINE, COMP_POINT, COMP_WORDS and COMP_CWORD as bash
// does for a Tab at the end of line, calls the function the file
// registered with "complete -F" and returns COMPREPLY.
func complete(t *testing.T, line string) []string {
	t.Helper()
	bash := need(t, "bash")
	name, _, _ := strings.Cut(line, " ")
	script := `set -u
source "$1"
fn=$(complete -p "$2" | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
[ -n "$fn" ] || { echo "no complete -F for $2" >&2; exit 1; }
COMP_LINE=$3
COMP_POINT=${#COMP_LINE}
read -r -a COMP_WORDS <<<"$COMP_LINE"
[[ $COMP_LINE == *' ' ]] && COMP_WORDS+=('')
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMPREPLY=()
"$fn" "$2" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
printf '%s\n' "${COMPREPLY[@]}"
`
	file, err := filepath.Abs(filepath.Join(completionDir, name))
	if err != nil {
		t.Fatal(err)
	}
	cmd := command(t, bash, "--norc", "--noprofile", "-c", script, "bash", file, name, line)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+cmd.Dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("completing %q: %v\n%s", line, err, stderr.String())
	}
	return strings.Fields(string(out))
}

// TestCompletionForEveryCommand: each command has a bash completion that
// bash can parse, and the files share their helper functions word for
// word (bash-completion loads one file per command, so each carries its
// own copy).
func TestCompletionForEveryCommand(t *testing.T) {
	bash := need(t, "bash")
	var helpers, first string
	for _, c := range sourceCommands(t) {
		f := filepath.Join(completionDir, c)
		data, err := os.ReadFile(f)
		if err != nil {
			t.Errorf("%s has no bash completion: write contrib/completions/bash/%s (%v)", c, c, err)
			continue
		}
		if out, err := command(t, bash, "-n", f).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", f, err, out)
		}
		// The helpers run from __stpm_words to the end of __stpm_files.
		s := string(data)
		start, last := strings.Index(s, "\n# __stpm_words"), strings.Index(s, "\n__stpm_files() {")
		end := -1
		if last >= 0 {
			if i := strings.Index(s[last:], "\n}\n"); i >= 0 {
				end = last + i + 3
			}
		}
		if start < 0 || end < start {
			t.Errorf("%s: no helper functions __stpm_words ... __stpm_files", f)
			continue
		}
		if helpers == "" {
			helpers, first = s[start:end], f
		} else if s[start:end] != helpers {
			t.Errorf("%s: helper functions differ from those in %s", f, first)
		}
	}
}

// TestCompletionFlagsMatchHelp: completing "-" offers exactly the flags
// the command's --help lists: the Options section for a plain command,
// each subcommand's usage lines (plus -h, --help, --version) for one with
// subcommands.
func TestCompletionFlagsMatchHelp(t *testing.T) {
	for _, c := range sourceCommands(t) {
		t.Run(c, func(t *testing.T) {
			help := helpText(t, c)
			subs := subcommands(c, usageLines(t, c, help))
			common := []string{"-h", "--help", "--version"}
			if subs == nil {
				if got, want := set(complete(t, c+" -")), set(optionFlags(help)); !slices.Equal(got, want) {
					t.Errorf("%s -<Tab> offers %v; --help lists %v", c, got, want)
				}
				return
			}
			var names []string
			for s := range subs {
				names = append(names, s)
			}
			if got, want := set(complete(t, c+" ")), set(append(names, common...)); !slices.Equal(got, want) {
				t.Errorf("%s <Tab> offers %v; want the subcommands and %v: %v", c, got, common, want)
			}
			for s, flags := range subs {
				if s == "ssh" {
					continue // ssh's own options
				}
				if got, want := set(complete(t, c+" "+s+" -")), set(append(flags, common...)); !slices.Equal(got, want) {
					t.Errorf("%s %s -<Tab> offers %v; its usage lines show %v", c, s, got, want)
				}
			}
		})
	}
}

// TestCompletionValues: flag prefixes, flag values, TPM specs (which hold
// ':' and '=', where bash splits words) and file names.
func TestCompletionValues(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "laptop.key"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"stpm-keygen --re", []string{"--restore"}},
		{"stpm-keygen --backup", []string{"--backup", "--backup-pass-file"}},
		{"stpm-keygen -t ", []string{"rsa", "ecdsa"}},
		{"stpm-keygen -t e", []string{"ecdsa"}},
		{"stpm-keygen -b 3", []string{"3072", "384"}},
		{"stpm-keygen --tpm d", []string{"device:/dev/tpmrm0", "device:/dev/tpm0"}},
		// Bash replaces only the text after the last ':' or '='.
		{"stpm-keygen --tpm device:/dev/tpmr", []string{"/dev/tpmrm0"}},
		{"stpm-keygen --tpm swtpm:h", []string{"host=127.0.0.1,port=2321"}},
		{"stpm-keygen --tpm=swtpm:p", []string{"path="}},
		{"stpm-sign --tpm=sw", []string{"swtpm:path=", "swtpm:host=127.0.0.1,port=2321"}},
		{"stpm-sign -k " + dir + "/lap", []string{dir + "/laptop.key"}},
		{"stpm-sign -r --p", []string{"--pin-file"}},
		{"stpm-verify -q -s " + dir + "/l", []string{dir + "/laptop.key"}},
		{"stpm-bridge se", []string{"serve"}},
		{"stpm-bridge r", []string{"remote-setup", "register"}},
		{"stpm-bridge serve --mod", []string{"--module"}},
		{"stpm-bridge serve -n " + dir + "/l", []string{dir + "/laptop.key"}},
		{"stpm-bridge remote-setup --", []string{"--remove", "--help", "--version"}},
	} {
		if got := complete(t, tc.line); !slices.Equal(set(got), set(tc.want)) {
			t.Errorf("%q<Tab> offers %q, want %q", tc.line, got, tc.want)
		}
	}
}
