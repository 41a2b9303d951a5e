package tests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestModuleThreads: 8 threads × 1000 signatures in one process through
// the C host, RSA and ECDSA keys in turn, a new session for every
// signature (so sessions open and close on all threads at once), every
// signature verified with OpenSSL.
func TestModuleThreads(t *testing.T) {
	tk := newToken(t, false)
	out, err := runCHost(t, tk.env, modulePath, "sign", "--threads", "8", "--count", "1000", "--session-each")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^signed=8000 verified=8000 failed=0 `).MatchString(out) {
		t.Fatalf("want 8000 verified signatures:\n%s", out)
	}
	t.Log(lastLine(out, "signed="))
	tk.noTransient(t)
}

// TestModuleThreadsPIN: the same with a login and a PIN key among the keys.
func TestModuleThreadsPIN(t *testing.T) {
	tk := newToken(t, true)
	out, err := runCHost(t, tk.env, modulePath, "sign", "--threads", "8", "--count", "50", "--pin", testPIN)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^signed=400 verified=400 failed=0 `).MatchString(out) {
		t.Fatalf("want 400 verified signatures:\n%s", out)
	}
	tk.noTransient(t)
}

// TestModuleMisuse: NULL pointers, short buffers, bad handles, wrong
// order, absurd lengths. The matrix in docs/RELIABILITY.md ("C API
// misuse") is the specification: for each of its rows the C host's case
// of that name must return exactly that CK_RV, and the module must log
// as the row says: "error" is exactly one error line naming the function,
// the code and a cause; "debug" is nothing unless SIMPLE_TPM_PK11_DEBUG
// is set, then exactly one debug line naming the function and the code;
// "none" is no line naming the code even with debug on. A case the C
// host no longer runs, or one the matrix does not list, fails too.
func TestModuleMisuse(t *testing.T) {
	rows, stated := misuseMatrix(t, filepath.Join("..", "docs", "RELIABILITY.md"))
	if stated != len(rows) {
		t.Errorf("docs/RELIABILITY.md says %d cases, its matrix has %d rows", stated, len(rows))
	}
	tk := newToken(t, true)
	quiet := runMisuse(t, tk.env)
	debug := runMisuse(t, append(tk.env, "SIMPLE_TPM_PK11_DEBUG=1"))
	for name := range quiet {
		if _, ok := rows[name]; !ok {
			t.Errorf("case %s is not in the matrix of docs/RELIABILITY.md", name)
		}
	}
	names := make([]string, 0, len(rows))
	for name := range rows {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		row := rows[name]
		t.Run(name, func(t *testing.T) {
			q, ok := quiet[name]
			if !ok {
				t.Fatalf("p11host ran no case %s", name)
			}
			d, ok := debug[name]
			if !ok {
				t.Fatalf("p11host ran no case %s with debug logging", name)
			}
			for _, r := range []misuseResult{q, d} {
				if r.line == "" {
					t.Fatalf("no result line; output of the case:\n%s", strings.Join(r.logs, "\n"))
				}
				if r.want != row.code || r.got != row.code || !r.ok {
					t.Fatalf("%s: want %s (docs/RELIABILITY.md), p11host wants %s and got %s:\n%s",
						row.fn, row.code, r.want, r.got, r.line)
				}
			}
			checkMisuseLog(t, row, q.logs, d.logs)
		})
	}
}

// misuseRow is one row of the matrix: the C host's case, the function
// it misuses, the one CK_RV it must return and how the module logs it.
type misuseRow struct {
	name, fn, code, log string
	msg                 *regexp.Regexp // the error line's end, when the row quotes it
}

// misuseMatrix reads the "C API misuse" section of the reliability
// document: every table row whose first cell is a case name in
// backquotes, and the case count its first paragraph states.
func misuseMatrix(t *testing.T, path string) (map[string]misuseRow, int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## C API misuse (PKCS#11)\n")
	if !ok {
		t.Fatalf("%s: no section \"C API misuse (PKCS#11)\"", path)
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	m := regexp.MustCompile(`\((\d+) cases`).FindStringSubmatch(sec)
	if m == nil {
		t.Fatalf("%s: the C API section does not say how many cases there are", path)
	}
	stated, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(err)
	}
	rowRE := regexp.MustCompile("^\\| `([a-z0-9_]+)` \\| `(C_[A-Za-z]+)` \\| (.*) \\| `(CKR_[A-Z_]+)` \\| (error|debug|none) \\|$")
	logRE := regexp.MustCompile("\\blog `([^`]+)`")
	rows := map[string]misuseRow{}
	for i, line := range strings.Split(sec, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		f := rowRE.FindStringSubmatch(line)
		if f == nil {
			t.Errorf("%s: C API section line %d is not | `case` | `C_Function` | misuse | `CKR_X` | error/debug/none |: %q", path, i+1, line)
			continue
		}
		if _, dup := rows[f[1]]; dup {
			t.Errorf("%s: case %s listed twice", path, f[1])
		}
		row := misuseRow{name: f[1], fn: f[2], code: f[4], log: f[5]}
		if l := logRE.FindStringSubmatch(f[3]); l != nil {
			// N is a number, … any text; the rest is literal.
			q := regexp.QuoteMeta(l[1])
			q = regexp.MustCompile(`\bN\b`).ReplaceAllString(q, `\d+`)
			q = strings.ReplaceAll(q, "…", ".*")
			row.msg = regexp.MustCompile(": " + q + "$")
		}
		rows[f[1]] = row
	}
	if len(rows) == 0 {
		t.Fatalf("%s: no rows in the C API matrix", path)
	}
	return rows, stated
}

// misuseResult is what p11host printed for one case: its result line,
// the parsed codes, and the module's log lines written while it ran.
type misuseResult struct {
	line      string
	want, got string
	ok        bool
	logs      []string
}

var (
	misuseStart = regexp.MustCompile(`^running case=(\S+)$`)
	misuseResLn = regexp.MustCompile(`^case=(\S+) want=(\S+) got=(\S+) rv=0x[0-9a-f]{8}( detail="(?:[^"\\]|\\.)*")? (ok|FAIL)$`)
	misuseOther = regexp.MustCompile(`^case=(\S+) `)
	moduleLogLn = regexp.MustCompile(`^\d{4}-\d\d-\d\dT[\d:.]+ simple-tpm-pk11\[\d+\]: (error|warning|debug): (.*)$`)
	misuseSumm  = regexp.MustCompile(`(?m)^misuse ok=\d+ fail=0 skip=0$`)
)

// runMisuse runs p11host's misuse mode with -v, standard output and
// standard error in one pipe, so that each of the module's log lines
// falls between the "running case=" line of the case that caused it and
// that case's result line. It returns the results by case name.
func runMisuse(t *testing.T, env []string) map[string]misuseResult {
	t.Helper()
	host := buildCHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), chostTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, host, modulePath, "misuse", "--pin", testPIN, "-v")
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		// Each failing case is reported below by name.
		t.Errorf("p11host misuse: %v", err)
	}
	if !misuseSumm.MatchString(out.String()) {
		t.Errorf("misuse summary: %q", lastLine(out.String(), "misuse "))
	}
	res := map[string]misuseResult{}
	cur := ""
	var logs []string
	for _, line := range strings.Split(out.String(), "\n") {
		if m := misuseStart.FindStringSubmatch(line); m != nil {
			cur, logs = m[1], nil
			continue
		}
		if m := misuseResLn.FindStringSubmatch(line); m != nil {
			if _, dup := res[m[1]]; dup {
				t.Errorf("case %s ran twice", m[1])
			}
			if m[1] != cur {
				t.Errorf("result of case %s while case %q ran", m[1], cur)
			}
			res[m[1]] = misuseResult{line: line, want: m[2], got: m[3], ok: m[5] == "ok", logs: logs}
			cur, logs = "", nil
			continue
		}
		if m := misuseOther.FindStringSubmatch(line); m != nil {
			// A skip, a crash or a hang.
			t.Errorf("case %s: %s", m[1], line)
			continue
		}
		if cur != "" && line != "" {
			logs = append(logs, line)
		}
	}
	return res
}

// checkMisuseLog checks a case's log lines in the run without debug
// (quiet) and with it (debug) against its row's log column.
func checkMisuseLog(t *testing.T, row misuseRow, quiet, debug []string) {
	t.Helper()
	tag := row.fn + ": " + row.code
	naming := func(lines []string) (n int) {
		for _, l := range lines {
			if m := moduleLogLn.FindStringSubmatch(l); m != nil && strings.HasPrefix(m[2], tag) {
				n++
			}
		}
		return n
	}
	switch row.log {
	case "error":
		if len(quiet) != 1 {
			t.Fatalf("want one log line \"error: %s: cause\", got %d:\n%s", tag, len(quiet), strings.Join(quiet, "\n"))
		}
		m := moduleLogLn.FindStringSubmatch(quiet[0])
		if m == nil || m[1] != "error" || !strings.HasPrefix(m[2], tag+": ") || len(strings.TrimSpace(m[2])) <= len(tag)+2 {
			t.Fatalf("want \"error: %s: cause\", got %q", tag, quiet[0])
		}
		if row.msg != nil && !row.msg.MatchString(m[2]) {
			t.Errorf("error line %q does not end as docs/RELIABILITY.md says (%s)", m[2], row.msg)
		}
		if n := naming(debug); n != 1 {
			t.Errorf("with debug logging: %d lines naming %s, want 1:\n%s", n, tag, strings.Join(debug, "\n"))
		}
	case "debug":
		if len(quiet) != 0 {
			t.Errorf("want no log line without debug, got:\n%s", strings.Join(quiet, "\n"))
		}
		if n := naming(debug); n != 1 {
			t.Errorf("with debug logging: %d lines naming %s, want 1:\n%s", n, tag, strings.Join(debug, "\n"))
		}
	case "none":
		if len(quiet) != 0 {
			t.Errorf("want no log line, got:\n%s", strings.Join(quiet, "\n"))
		}
		if row.code != "CKR_OK" {
			for _, l := range debug {
				if strings.Contains(l, row.code) {
					t.Errorf("want no line naming %s even with debug logging, got %q", row.code, l)
				}
			}
		}
	}
}

// TestModuleFork: a child forked after the module was loaded is answered
// from C and never hangs; the parent keeps working.
// The child's C_Initialize says why it fails, on stderr, exactly once;
// everything else in the child and the parent's signing log nothing.
func TestModuleFork(t *testing.T) {
	tk := newToken(t, false)
	out, stderr, err := runHost(t, tk.env, nil, modulePath, "fork")
	if err != nil {
		t.Fatalf("%v\n%s\nstderr:\n%s", err, out, stderr)
	}
	for _, want := range []string{"fork result=ok", "child finalize rv=0x00000000", "child initialize rv=0x00000005",
		"child getslotlist rv=0x00000190"} {
		if !strings.Contains(out, want) {
			t.Errorf("fork: no %q in\n%s", want, out)
		}
	}
	const want = "simple-tpm-pk11: not available in a process forked after loading the module; load it after fork\n"
	if stderr != want {
		t.Errorf("stderr:\n%q\nwant exactly one line:\n%q", stderr, want)
	}
}

// TestModuleProcesses: three programs load the module at once and sign
// with it on two threads each against one swtpm and one config; the
// TPM lock serializes them. Every signature verifies in every process,
// and the swtpm's own check at the end finds no object left.
func TestModuleProcesses(t *testing.T) {
	tk := newToken(t, false)
	const procs, threads, count = 3, 2, 200
	type result struct {
		out, stderr string
		err         error
	}
	buildCHost(t) // here: t.Fatal must not run on the goroutines
	results := make(chan result, procs)
	for range procs {
		go func() {
			out, stderr, err := runHost(t, tk.env, nil, modulePath, "sign",
				"--threads", strconv.Itoa(threads), "--count", strconv.Itoa(count))
			results <- result{out, stderr, err}
		}()
	}
	want := regexp.MustCompile(fmt.Sprintf(`(?m)^signed=%d verified=%d failed=0 `, threads*count, threads*count))
	for i := range procs {
		r := <-results
		if r.err != nil {
			t.Errorf("process %d: %v\n%s\nstderr:\n%s", i, r.err, r.out, tail(r.stderr, 20))
			continue
		}
		if !want.MatchString(r.out) {
			t.Errorf("process %d: want %d verified signatures:\n%s\nstderr:\n%s", i, threads*count, r.out, tail(r.stderr, 20))
			continue
		}
		if strings.Contains(r.stderr, "simple-tpm-pk11[") {
			t.Errorf("process %d: the module logged:\n%s", i, tail(r.stderr, 20))
		}
		t.Logf("process %d: %s", i, lastLine(r.out, "signed="))
	}
	tk.noTransient(t)
}

// TestModuleTPMRestart: the TPM goes away under a loaded module: the next
// signature fails with CKR_DEVICE_ERROR and a log line naming the TPM;
// once the TPM is back the next one works, without reloading the module.
func TestModuleTPMRestart(t *testing.T) {
	tk := newToken(t, false)
	var h *hostProc
	assertUnchanged(t, tk.home, func() {
		h = startHost(t, tk.env, modulePath, "steps")
		step := func(cmdline, want string) {
			t.Helper()
			h.send(cmdline)
			if got := h.next(time.Minute); !strings.HasPrefix(got, want) {
				t.Fatalf("%s: got %q, want %q; stderr:\n%s", cmdline, got, want, h.stderr.String())
			}
		}
		if got := h.next(time.Minute); got != "steps ready" {
			t.Fatalf("start: %q", got)
		}
		step("sign", "step sign rv=0x00000000 name=CKR_OK stage=C_Sign verified=1")
		if err := tk.tpm.Stop(); err != nil {
			t.Fatal(err)
		}
		step("sign", "step sign rv=0x00000030 name=CKR_DEVICE_ERROR")
		tk.tpm.Restart(t)
		step("sign", "step sign rv=0x00000000 name=CKR_OK stage=C_Sign verified=1")
		h.send("quit")
		if got := h.next(time.Minute); got != "finalize rv=0x00000000 name=CKR_OK" {
			t.Errorf("finalize: %q", got)
		}
		if err := h.wait(); err != nil {
			t.Errorf("p11host: %v", err)
		}
	})
	// The whole log: one line, for the one call that met the stopped TPM.
	want := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} simple-tpm-pk11\[\d+\]: error: ` +
		regexp.QuoteMeta("C_Sign: CKR_DEVICE_ERROR: key rsa ("+tk.path("rsa.key")+"): swtpm not reachable at "+tk.tpm.Spec+
			": connection refused (hint: start swtpm, or point --tpm / SIMPLE_TPM_PK11_TPM at the right socket)") + "\n$")
	if stderr := h.stderr.String(); !want.MatchString(stderr) {
		t.Errorf("log:\n%s\nwant exactly one line matching\n%s", stderr, want)
	}
	tk.noTransient(t)
}

func lastLine(out, prefix string) string {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], prefix) {
			return lines[i]
		}
	}
	return ""
}

// TestModuleNoGoroutineLeak: after a thousand signatures on four threads,
// each with its own session, the module's Go runtime runs no more
// goroutines than after a handful (the count is logged at C_Finalize
// with debug on).
func TestModuleNoGoroutineLeak(t *testing.T) {
	tk := newToken(t, false)
	count := func(n string) int {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), chostTimeout)
		defer cancel()
		cmd := hostCommand(ctx, t, withEnv(tk.env, "SIMPLE_TPM_PK11_DEBUG=1"), nil, modulePath, "sign", "--threads", "4", "--count", n, "--session-each")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v\n%s", err, tail(stderr.String(), 20))
		}
		t.Log(lastLine(string(out), "signed="))
		m := regexp.MustCompile(`finalize: (\d+) goroutines`).FindStringSubmatch(stderr.String())
		if m == nil {
			t.Fatalf("no goroutine count in the debug log:\n%s", tail(stderr.String(), 10))
		}
		g, err := strconv.Atoi(m[1])
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	few, many := count("5"), count("250")
	if many > few+2 {
		t.Errorf("%d goroutines after 1000 signatures, %d after 20: a leak", many, few)
	}
}
