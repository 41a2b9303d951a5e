package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// manSources lists the man page sources the way the Makefile finds them.
func manSources(t testing.TB) []string {
	t.Helper()
	var srcs []string
	for _, pattern := range []string{"../cmd/*/*.[1-9].md", "../module/*.[1-9].md", "../config/*.[1-9].md"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, m...)
	}
	return srcs
}

// manName splits "dir/stpm-keygen.1.md" into "stpm-keygen" and "1".
func manName(src string) (name, sec string) {
	base := strings.TrimSuffix(filepath.Base(src), ".md")
	ext := filepath.Ext(base)
	return strings.TrimSuffix(base, ext), strings.TrimPrefix(ext, ".")
}

// mdSection returns the lines of a man source's "# TITLE" section.
func mdSection(md, title string) []string {
	var out []string
	in := false
	for _, l := range strings.Split(md, "\n") {
		switch {
		case l == "# "+title:
			in = true
		case in && strings.HasPrefix(l, "# "):
			return out
		case in:
			out = append(out, l)
		}
	}
	return out
}

// paragraphs joins lines into paragraphs, each with its markup removed.
func paragraphs(lines []string) []string {
	var out []string
	var cur []string
	flush := func() {
		if len(cur) > 0 {
			out = append(out, plainMarkdown(strings.Join(cur, " ")))
			cur = nil
		}
	}
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			flush()
			continue
		}
		cur = append(cur, l)
	}
	flush()
	return out
}

// emphUnderscore is an underscore that opens or closes emphasis, as in
// _SOCKET_; not one inside a name such as SIMPLE_TPM_PK11_TPM.
var emphUnderscore = regexp.MustCompile(`(^|[^A-Za-z0-9_])_+|_+([^A-Za-z0-9_]|$)`)

// plainMarkdown drops go-md2man's inline markup and collapses white space.
func plainMarkdown(s string) string {
	s = strings.NewReplacer("*", "", "`", "", `\`, "").Replace(s)
	s = emphUnderscore.ReplaceAllString(s, "$1$2")
	return strings.Join(strings.Fields(s), " ")
}

// TestManSourceForEveryCommand: each command has its page beside its
// code, and every page's title and NAME agree with its file name.
func TestManSourceForEveryCommand(t *testing.T) {
	srcs := manSources(t)
	for _, c := range sourceCommands(t) {
		want := filepath.Join("..", "cmd", c, c+".1.md")
		if !slices.Contains(srcs, want) {
			t.Errorf("%s has no man page: write %s", c, strings.TrimPrefix(want, "../"))
		}
	}
	for _, want := range []string{"../module/simple-tpm-pk11.8.md", "../config/simple-tpm-pk11-config.5.md"} {
		if !slices.Contains(srcs, want) {
			t.Errorf("%s is missing", want)
		}
	}
	for _, src := range srcs {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		md := string(data)
		name, sec := manName(src)
		title := fmt.Sprintf(`%% %s %s "" "simple-tpm-pk11" "`, strings.ToUpper(name), sec)
		if first, _, _ := strings.Cut(md, "\n"); !strings.HasPrefix(first, title) {
			t.Errorf("%s: first line %q, want it to start with %q", src, first, title)
		}
		for _, s := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"} {
			if len(mdSection(md, s)) == 0 {
				t.Errorf("%s: no %s section", src, s)
			}
		}
		if p := paragraphs(mdSection(md, "NAME")); len(p) != 1 || !strings.HasPrefix(p[0], name+" - ") && !strings.HasPrefix(p[0], name+", ") {
			t.Errorf("%s: NAME is %q, want one line starting %q", src, p, name+" - ")
		}
	}
}

// TestManSynopsisMatchesHelp: a command's SYNOPSIS has exactly the usage
// lines its --help prints, so the page cannot drift from the program.
func TestManSynopsisMatchesHelp(t *testing.T) {
	for _, c := range sourceCommands(t) {
		t.Run(c, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("..", "cmd", c, c+".1.md"))
			if err != nil {
				t.Fatal(err)
			}
			got := paragraphs(mdSection(string(data), "SYNOPSIS"))
			want := usageLines(t, c, helpText(t, c))
			if !slices.Equal(got, want) {
				t.Errorf("SYNOPSIS of cmd/%s/%s.1.md:\n\t%s\nwant the usage lines of %s --help:\n\t%s",
					c, c, strings.Join(got, "\n\t"), c, strings.Join(want, "\n\t"))
			}
		})
	}
}

// TestManPagesRender renders every page as "make man" does and checks
// that go-md2man and groff (and man, when man-db is here) have nothing to
// warn about, that no text of the source got lost on the way (go-md2man
// drops paragraphs after a definition term that spans two lines), and
// that the rendered SYNOPSIS still reads as the command's usage.
func TestManPagesRender(t *testing.T) {
	md2man := need(t, "go-md2man")
	groff, groffErr := exec.LookPath("groff")
	man, manErr := exec.LookPath("man")
	if groffErr != nil {
		t.Log("groff not found: checking go-md2man's output only")
	}
	dir := t.TempDir()
	commands := sourceCommands(t)
	for _, src := range manSources(t) {
		name, sec := manName(src)
		t.Run(name+"."+sec, func(t *testing.T) {
			page := filepath.Join(dir, name+"."+sec)
			stderr := mustRun(t, md2man, "-in", src, "-out", page)
			if stderr != "" {
				t.Errorf("go-md2man warns:\n%s", stderr)
			}
			if groffErr != nil {
				return
			}
			// All warnings on; a line length no paragraph reaches, so
			// each paragraph is one line and no word is broken.
			if w := mustRun(t, groff, "-man", "-t", "-ww", "-z", page); w != "" {
				t.Errorf("groff warns:\n%s", w)
			}
			text := render(t, groff, page)
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if missing := lostWords(string(data), text); missing != "" {
				t.Errorf("rendered page lost text of the source at: %s", missing)
			}
			if slices.Contains(commands, name) {
				got := renderedSection(text, "SYNOPSIS")
				want := usageLines(t, name, helpText(t, name))
				if !slices.Equal(got, want) {
					t.Errorf("rendered SYNOPSIS:\n\t%s\nwant:\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
				}
			}
			if manErr == nil {
				cmd := command(t, man, "--warnings", "-l", page)
				cmd.Env = append(os.Environ(), "MANWIDTH=80", "LC_ALL=C.UTF-8", "MANPAGER=cat", "PAGER=cat")
				var errBuf bytes.Buffer
				cmd.Stderr = &errBuf
				out, err := cmd.Output()
				if err != nil || errBuf.Len() > 0 || len(out) == 0 {
					t.Errorf("man -l %s: %v\n%s", page, err, errBuf.String())
				}
			}
		})
	}
}

// mustRun runs a command that must succeed and returns its standard error.
func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := command(t, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if out, err := cmd.Output(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return stderr.String()
}

// render formats a page as plain UTF-8 text, one line per paragraph.
func render(t *testing.T, groff, page string) string {
	t.Helper()
	cmd := command(t, groff, "-man", "-t", "-Tutf8", "-rLL=5000n", "-rHY=0", "-P-cbou", page)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("groff %s: %v\n%s", page, err, stderr.String())
	}
	return strings.NewReplacer("\u2018", "'", "\u2019", "'", "\u201c", `"`, "\u201d", `"`,
		"\u2010", "-", "\u2212", "-", "\u2013", "-", "\u2014", "--").Replace(string(out))
}

// renderedSection returns the paragraphs of a rendered page's section,
// white space collapsed.
func renderedSection(text, title string) []string {
	var out []string
	in := false
	for _, l := range strings.Split(text, "\n") {
		switch {
		case l == title:
			in = true
		case in && l != "" && !strings.HasPrefix(l, " "):
			return out
		case in && strings.TrimSpace(l) != "":
			out = append(out, strings.Join(strings.Fields(l), " "))
		}
	}
	return out
}

// lostWords checks that the words of a man source, markup removed, appear
// in the rendered text in the same order, and returns the source words
// around the first one that does not ("" when none is lost).
func lostWords(md, text string) string {
	var src []string
	code := false
	for i, l := range strings.Split(md, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case i == 0 && strings.HasPrefix(l, "% "):
			continue
		case strings.HasPrefix(l, "```"):
			code = !code
			continue
		case !code:
			// Heading and definition markers.
			l = strings.TrimLeft(l, "#")
			l = strings.TrimPrefix(strings.TrimSpace(l), ":")
		}
		src = append(src, strings.Fields(plainMarkdown(l))...)
	}
	out := strings.Fields(plainMarkdown(text))
	j := 0
	for i, w := range src {
		for j < len(out) && out[j] != w {
			j++
		}
		if j == len(out) {
			return strings.Join(src[max(0, i-6):min(len(src), i+4)], " ")
		}
		j++
	}
	return ""
}
