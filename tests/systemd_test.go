package tests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/bridge"
)

const bridgeUnit = "../contrib/systemd/user/stpm-bridge.service"

// unitSettings returns the KEY=VALUE lines of a unit file, by key.
func unitSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string][]string{}
	for _, l := range strings.Split(string(data), "\n") {
		if l == "" || l[0] == '#' || l[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s: line %q is not KEY=VALUE", path, l)
		}
		settings[k] = append(settings[k], v)
	}
	return settings
}

// TestSystemdUnitServesDefaultSocket: the user unit runs "stpm-bridge
// serve -f" on the very socket that "stpm-bridge ssh" looks for (so
// sessions reuse it), in the directory systemd creates for it.
func TestSystemdUnitServesDefaultSocket(t *testing.T) {
	s := unitSettings(t, bridgeUnit)
	t.Setenv("XDG_RUNTIME_DIR", "%t") // the unit's specifier for it
	sock, err := bridge.DefaultSocket()
	if err != nil {
		t.Fatal(err)
	}
	want := "/usr/bin/stpm-bridge serve -f -n " + sock
	if got := strings.Join(s["ExecStart"], "|"); got != want {
		t.Errorf("ExecStart=%s, want %s", got, want)
	}
	if got, want := strings.Join(s["RuntimeDirectory"], "|"), filepath.Base(filepath.Dir(sock)); got != want {
		t.Errorf("RuntimeDirectory=%s, want %s (the socket's directory under %%t)", got, want)
	}
	for k, want := range map[string]string{"Type": "simple", "Restart": "on-failure", "RuntimeDirectoryMode": "0700", "NoNewPrivileges": "yes"} {
		if got := strings.Join(s[k], "|"); got != want {
			t.Errorf("%s=%s, want %s", k, got, want)
		}
	}
	// The hardening must leave what the module needs: the TPM device,
	// a swtpm socket in /tmp, the home directory's config.
	for _, k := range []string{"PrivateDevices", "PrivateTmp", "DevicePolicy"} {
		if v, ok := s[k]; ok {
			t.Errorf("%s=%s would hide the TPM or a swtpm socket from the module", k, strings.Join(v, "|"))
		}
	}
	if got := strings.Join(s["ProtectHome"], "|"); got != "read-only" {
		t.Errorf("ProtectHome=%s, want read-only: the module reads ~/.simple-tpm-pk11", got)
	}
}

// TestSystemdUnitVerifies runs "systemd-analyze verify --user" on the
// unit, with the built stpm-bridge in ExecStart and the rendered man
// pages for Documentation=. Without systemd-analyze, or where it cannot
// start its user manager, the test is skipped; when it runs, any
// complaint fails it.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not found")
	}
	dir := t.TempDir()
	data, err := os.ReadFile(bridgeUnit)
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, "stpm-bridge.service")
	data = bytes.ReplaceAll(data, []byte("/usr/bin/stpm-bridge"), []byte(commandPath(t, "stpm-bridge")))
	if err := os.WriteFile(unit, data, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"verify", "--user"}
	if md2man, err := exec.LookPath("go-md2man"); err == nil {
		// Documentation=man:... is checked with man: give it our pages.
		for _, src := range manSources(t) {
			name, sec := manName(src)
			mandir := filepath.Join(dir, "man", "man"+sec)
			if err := os.MkdirAll(mandir, 0o755); err != nil {
				t.Fatal(err)
			}
			if out, err := command(t, md2man, "-in", src, "-out", filepath.Join(mandir, name+"."+sec)).CombinedOutput(); err != nil {
				t.Fatalf("go-md2man %s: %v\n%s", src, err, out)
			}
		}
	} else {
		args = append(args, "--man=no")
	}
	runtime := filepath.Join(dir, "run")
	if err := os.Mkdir(runtime, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := command(t, analyze, append(args, unit)...)
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+runtime, "MANPATH="+filepath.Join(dir, "man"))
	out, err := cmd.CombinedOutput()
	if bytes.Contains(out, []byte("Failed to initialize manager")) || bytes.Contains(out, []byte("Failed to create ")) {
		t.Skipf("systemd-analyze cannot run its user manager here: %s", out)
	}
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify --user rejects the unit: %v\n%s", err, out)
	}
}
