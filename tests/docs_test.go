package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocsCiteRealTests: every test, fuzz target and CLI script that
// docs/RELIABILITY.md and docs/SECURITY.md name as the proof of a row
// exists, so a renamed or deleted test cannot leave a row unbacked.
// Subtest names (TestX/sub) are checked too.
func TestDocsCiteRealTests(t *testing.T) {
	var src strings.Builder
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "dist") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(path, "_test.go") {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			src.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	code := src.String()
	cited := regexp.MustCompile(`\*\*((?:Test|Fuzz|Benchmark)[A-Za-z0-9_]*)(/[^*]+)?\*\*`)
	script := regexp.MustCompile("`?([a-z0-9_-]+)\\.txtar")
	for _, doc := range []string{"RELIABILITY.md", "SECURITY.md"} {
		b, err := os.ReadFile(filepath.Join("..", "docs", doc))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, m := range cited.FindAllStringSubmatch(string(b), -1) {
			n++
			if !strings.Contains(code, "func "+m[1]+"(") {
				t.Errorf("%s cites %s, which no test file defines", doc, m[0])
				continue
			}
			// A subtest is named by a literal, or by a table entry its
			// name is made from (a file "sub.key"); <case> stands for
			// every row of a table the test reads itself.
			if sub := strings.TrimPrefix(m[2], "/"); sub != "" && !strings.HasPrefix(sub, "<") && !strings.Contains(code, `"`+sub) {
				t.Errorf("%s cites %s: no subtest named %q", doc, m[0], sub)
			}
		}
		for _, m := range script.FindAllStringSubmatch(string(b), -1) {
			if _, err := os.Stat(filepath.Join("testdata", "cli", m[1]+".txtar")); err != nil {
				t.Errorf("%s cites %s.txtar: %v", doc, m[1], err)
			}
		}
		if n == 0 {
			t.Errorf("%s cites no test at all", doc)
		}
	}
}
