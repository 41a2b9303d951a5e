// Command stpm-verify checks a signature made by stpm-sign, in software.
package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/cli"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
	"golang.org/x/crypto/ssh"
)

var command = cli.Command{Synopsis: synopsis, Usage: usage}

const synopsis = "stpm-verify -k KEY|PUB -f DATA -s SIG [-q]"

const usage = `Usage:
    stpm-verify -k KEY|PUB -f DATA -s SIG [-q]

Verifies, in software, a signature over the SHA-256 of DATA. KEY is a key
file made by stpm-keygen; PUB an OpenSSH public key (.pub) or a PEM public
key. SIG is hex (as stpm-sign writes by default) or raw bytes.

Exit status: 0 when the signature is valid, 1 when it is not, 2 on errors.

Options:
    -k KEY|PUB   The key to verify with.
    -f DATA      The signed file; "-" reads standard input.
    -s SIG       The signature file.
    -q           Print nothing; only the exit status tells.
    -h, --help   Show this help.
    --version    Show the version.

Example:
    $ stpm-sign -k my.key -f message.txt -o message.sig
    $ stpm-verify -k my.key.pub -f message.txt -s message.sig
    signature OK
`

// Exit statuses: verification failures are 1 so scripts can tell them
// from errors.
const (
	exitInvalid = 1
	exitError   = 2
)

func main() { os.Exit(run(os.Args[1:], cli.New("stpm-verify"))) }

func run(args []string, ui *cli.UI) int {
	var keyPath, dataPath, sigPath string
	var quiet bool
	fs := cli.NewFlagSet("stpm-verify")
	fs.StringVar(&keyPath, "k", "", "")
	fs.StringVar(&dataPath, "f", "", "")
	fs.StringVar(&sigPath, "s", "", "")
	fs.BoolVar(&quiet, "q", false, "")
	if code, done := ui.Parse(fs, command, args); done {
		return code
	}
	if keyPath == "" || dataPath == "" || sigPath == "" {
		return ui.Usage(synopsis, "-k, -f and -s are all needed")
	}
	pub, err := loadPublic(keyPath)
	if err != nil {
		ui.Fail(err)
		return exitError
	}
	sig, err := readSig(sigPath)
	if err != nil {
		ui.Fail(err)
		return exitError
	}
	digest, err := cli.HashFile(dataPath)
	if err != nil {
		ui.Fail(err)
		return exitError
	}
	if err := check(pub, digest, sig); err != nil {
		if !quiet {
			fmt.Fprintln(os.Stdout, "signature INVALID")
		}
		return exitInvalid
	}
	if !quiet {
		fmt.Fprintln(os.Stdout, "signature OK")
	}
	return cli.ExitOK
}

// loadPublic accepts a TSS2 key file, an OpenSSH public key line or a PEM
// public key, in that order.
func loadPublic(path string) (crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, cli.ReadErr(path, err)
	}
	if block, _ := pem.Decode(data); block != nil {
		switch block.Type {
		case keyfile.PEMType:
			k, err := keyfile.Parse(data)
			if err != nil {
				return nil, fmt.Errorf("%q: %w", path, err)
			}
			pub, err := tpm.PublicKey(k)
			if err != nil {
				return nil, cli.KeyErr(path, err)
			}
			return pub, nil
		case "PUBLIC KEY":
			pub, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%q: not a valid PUBLIC KEY", path)
			}
			return pub, nil
		default:
			return nil, fmt.Errorf("%q: PEM block %q is not a public key or TSS2 key file", path, block.Type)
		}
	}
	sp, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil, cli.WithHint(fmt.Errorf("%q: not a key file, OpenSSH public key or PEM public key", path),
			"use the .pub file stpm-keygen wrote, or the key file itself")
	}
	cpk, ok := sp.(ssh.CryptoPublicKey)
	if !ok {
		return nil, fmt.Errorf("%q: unsupported OpenSSH key type %s", path, sp.Type())
	}
	return cpk.CryptoPublicKey(), nil
}

// readSig accepts hex (stpm-sign's default output) or raw bytes.
func readSig(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, cli.ReadErr(path, err)
	}
	if t := bytes.TrimSpace(data); len(t) > 0 && len(t)%2 == 0 {
		if b, err := hex.DecodeString(string(t)); err == nil {
			return b, nil
		}
	}
	return data, nil
}

func check(pub crypto.PublicKey, digest, sig []byte) error {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(p, crypto.SHA256, digest, sig)
	case *ecdsa.PublicKey:
		if ecdsa.VerifyASN1(p, digest, sig) {
			return nil
		}
		return errors.New("invalid")
	}
	return fmt.Errorf("unsupported public key %T", pub)
}
