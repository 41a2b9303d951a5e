package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// p11kitInclude holds p11-kit's pkcs11.h, the reference our own header is
// compared with. It comes from the Debian package libp11-kit-dev.
const p11kitInclude = "/usr/include/p11-kit-1"

// needP11KitHeader skips the test (fails it in CI) when p11-kit's
// pkcs11.h is missing.
func needP11KitHeader(t *testing.T) {
	t.Helper()
	ref := filepath.Join(p11kitInclude, "p11-kit", "pkcs11.h")
	if _, err := os.Stat(ref); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found: install the Debian package libp11-kit-dev", ref)
		}
		t.Skipf("%s not found: install the Debian package libp11-kit-dev", ref)
	}
}

// TestPKCS11HeaderABI builds and runs tests/c/abi_check: module/pkcs11.h
// in one translation unit, p11-kit's pkcs11.h in another, compared on the
// size and signedness of every scalar type, the size, alignment and field
// offsets of every struct, the position and signature of all 68
// CK_FUNCTION_LIST members, and the value of every constant our header and
// tests/c/p11consts.h define. Signature mismatches fail the compilation.
func TestPKCS11HeaderABI(t *testing.T) {
	gcc := need(t, "gcc")
	needP11KitHeader(t)
	bin := filepath.Join(t.TempDir(), "abi_check")
	build := command(t, gcc, "-std=gnu11", "-Wall", "-Wextra", "-Werror",
		"-I", filepath.Join("..", "module"), "-I", p11kitInclude,
		"-o", bin, filepath.Join("c", "abi_check.c"), filepath.Join("c", "abi_p11kit.c"))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("compiling abi_check: %v\n%s", err, out)
	}
	out, err := command(t, bin).CombinedOutput()
	if err != nil {
		t.Fatalf("module/pkcs11.h differs from p11-kit's pkcs11.h: %v\n%s", err, out)
	}
	t.Log(strings.TrimSpace(string(out)))
}

// TestPKCS11HeaderStrict compiles module/pkcs11.h on its own as strict
// C89, C99 and C11 with every warning an error, and as C++ when g++ is
// there, so that it fits any application that includes it.
func TestPKCS11HeaderStrict(t *testing.T) {
	gcc := need(t, "gcc")
	src := "#include \"pkcs11.h\"\nint stpm_header_check;\n"
	compile := func(t *testing.T, compiler string, args ...string) {
		t.Helper()
		args = append(args, "-Wall", "-Wextra", "-Wpedantic", "-Werror",
			"-fsyntax-only", "-I", filepath.Join("..", "module"), "-")
		cmd := command(t, compiler, args...)
		cmd.Stdin = strings.NewReader(src)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", compiler, strings.Join(args, " "), err, out)
		}
	}
	for _, std := range []string{"c89", "c99", "c11"} {
		t.Run(std, func(t *testing.T) {
			compile(t, gcc, "-std="+std, "-x", "c")
		})
	}
	t.Run("c++", func(t *testing.T) {
		gxx, err := exec.LookPath("g++")
		if err != nil {
			t.Skip("g++ not found")
		}
		compile(t, gxx, "-x", "c++")
	})
}
