// Command crypto11-sign signs a file with a simple-tpm-pk11 key from Go,
// through crypto11, and prints the signature in hex: PKCS#1 v1.5 for RSA
// keys, ASN.1 DER for ECDSA keys, both over the file's SHA-256.
//
// A Go program must not load libsimple-tpm-pk11.so itself: the module is
// written in Go, and two Go runtimes in one process can hang it (the
// module's runtime takes over signals the host's runtime needs). So this
// program loads p11-kit-client.so, a small C module that forwards every
// PKCS#11 call over a unix socket to a separate process that loads ours:
//
//	p11-kit server -f -n /tmp/stpm.sock --provider /usr/local/lib/libsimple-tpm-pk11.so 'pkcs11:token=simple-tpm-pk11' &
//	export P11_KIT_SERVER_ADDRESS=unix:path=/tmp/stpm.sock
//	go run ./examples/crypto11-sign --label mykey FILE
//
// Instead of p11-kit server, `stpm-bridge serve` runs one for you; point
// P11_KIT_SERVER_ADDRESS at the socket it listens on. For a token with
// PIN-protected keys, put the PIN in STPM_PIN.
package main

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ThalesGroup/crypto11"
)

func main() {
	module := flag.String("module", "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so", "PKCS#11 module written in C")
	token := flag.String("token", "simple-tpm-pk11", "token label")
	label := flag.String("label", "", "key label (the key file's name without extension)")
	flag.Parse()
	if *label == "" || flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: crypto11-sign [--module SO] [--token LABEL] --label KEY FILE")
		os.Exit(2)
	}
	if err := run(*module, *token, *label, flag.Arg(0)); err != nil {
		fmt.Fprintln(os.Stderr, "crypto11-sign:", err)
		os.Exit(1)
	}
}

func run(module, token, label, file string) error {
	if strings.HasPrefix(filepath.Base(module), "libsimple-tpm-pk11") {
		return errors.New("refusing to load " + module + " into this Go program: the module runs its own Go " +
			"runtime, and two Go runtimes in one process can hang. Serve it with `p11-kit server` or " +
			"`stpm-bridge serve` and use p11-kit-client.so with P11_KIT_SERVER_ADDRESS")
	}
	if filepath.Base(module) == "p11-kit-client.so" && os.Getenv("P11_KIT_SERVER_ADDRESS") == "" {
		fmt.Fprintln(os.Stderr, "crypto11-sign: P11_KIT_SERVER_ADDRESS is not set: using p11-kit's default socket")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	pin := os.Getenv("STPM_PIN")
	ctx, err := crypto11.Configure(&crypto11.Config{Path: module, TokenLabel: token, Pin: pin, LoginNotSupported: pin == ""})
	if err != nil {
		return err
	}
	defer ctx.Close()
	key, err := ctx.FindKeyPair(nil, []byte(label))
	if err != nil {
		return err
	}
	digest := sha256.Sum256(data)
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return err
	}
	fmt.Printf("%x\n", sig)
	return nil
}
