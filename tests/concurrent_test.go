package tests

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/swtpmtest"
)

// stpm runs one of the built commands with SIMPLE_TPM_PK11_TPM=spec.
func stpm(t testing.TB, spec, dir, name string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := command(t, filepath.Join(binDir, name), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SIMPLE_TPM_PK11_TPM="+spec, "HOME="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %v: %v: %s", name, args, err, stderr.String())
	}
	return out, nil
}

// TestConcurrentProcesses signs from several processes at once against one
// swtpm, which serves one connection at a time and has three object
// slots: every signature must succeed and verify, and no object may be
// left in the TPM afterwards.
func TestConcurrentProcesses(t *testing.T) {
	for _, mode := range []struct {
		name string
		opts swtpmtest.Options
	}{{"tcp", swtpmtest.Options{TCP: true}}, {"unix", swtpmtest.Options{}}} {
		t.Run(mode.name, func(t *testing.T) {
			tpm := swtpmtest.Start(t, mode.opts)
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "data"), []byte("concurrent"), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, k := range [][]string{{"-o", "rsa.key"}, {"-t", "ecdsa", "-o", "ec.key"}} {
				if _, err := stpm(t, tpm.Spec, dir, "stpm-keygen", k...); err != nil {
					t.Fatal(err)
				}
			}
			const workers, signs = 4, 8
			var wg sync.WaitGroup
			errs := make(chan error, workers*signs)
			start := time.Now()
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range signs {
						key := []string{"rsa.key", "ec.key"}[(w+i)%2]
						sig := fmt.Sprintf("sig-%d-%d", w, i)
						if _, err := stpm(t, tpm.Spec, dir, "stpm-sign", "-k", key, "-f", "data", "-o", sig); err != nil {
							errs <- err
							continue
						}
						if _, err := stpm(t, tpm.Spec, dir, "stpm-verify", "-q", "-k", key+".pub", "-f", "data", "-s", sig); err != nil {
							errs <- fmt.Errorf("signature %s does not verify: %v", sig, err)
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			t.Logf("%d signatures from %d concurrent processes in %v", workers*signs, workers, time.Since(start))
			if hs := tpm.TransientHandles(t); len(hs) != 0 {
				t.Errorf("transient objects left in the TPM: %v", hs)
			}
		})
	}
}

// TestSwtpmRestart: a TPM that goes away fails the operation with a clear
// error, and works again as soon as it is back.
func TestSwtpmRestart(t *testing.T) {
	tpm := swtpmtest.Start(t, swtpmtest.Options{})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := stpm(t, tpm.Spec, dir, "stpm-keygen", "-t", "ecdsa", "-o", "k.key"); err != nil {
		t.Fatal(err)
	}
	if err := tpm.Stop(); err != nil {
		t.Fatal(err)
	}
	_, err := stpm(t, tpm.Spec, dir, "stpm-sign", "-k", "k.key", "-f", "data")
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("swtpm not reachable at "+tpm.Spec)) {
		t.Fatalf("sign with swtpm stopped: %v, want 'swtpm not reachable'", err)
	}
	tpm.Restart(t)
	if _, err := stpm(t, tpm.Spec, dir, "stpm-sign", "-k", "k.key", "-f", "data"); err != nil {
		t.Fatalf("sign after restart: %v", err)
	}
}
