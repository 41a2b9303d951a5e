// Command stpm-sign signs the SHA-256 of a file with a key in the TPM.
package main

import (
	"crypto"
	"encoding/asn1"
	"encoding/hex"
	"math/big"
	"os"

	"github.com/google/go-tpm/tpm2"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/cli"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

var command = cli.Command{Synopsis: synopsis, Usage: usage}

const synopsis = "stpm-sign -k KEY -f DATA [-r] [-o OUT] [-s] [--tpm SPEC] [--pin-file F]"

const usage = `Usage:
    stpm-sign -k KEY -f DATA [-r] [-o OUT] [-s] [--tpm SPEC] [--pin-file F]

Signs the SHA-256 of DATA with the TPM key in KEY: PKCS#1 v1.5 for RSA keys,
an ASN.1 DER signature for ECDSA keys, as "openssl dgst -sha256 -verify"
expects. Writes the signature in hex, or raw bytes with -r.

Options:
    -k KEY             The key file (TSS2 PRIVATE KEY) made by stpm-keygen.
    -f DATA            The file to sign; "-" reads standard input.
    -r                 Write the raw signature instead of hex.
    -o OUT             Write the signature to OUT instead of standard output.
    --pin-file F       Read the key's PIN from the first line of F (else it
                       is asked on the terminal when the key has one).
    -s                 The parent needs a PIN; asked on the terminal.
    --srk-pin-file F   Read the parent's PIN from F.
    --tpm SPEC         TPM to use: device:/dev/tpmrm0 (default),
                       swtpm:path=SOCKET or swtpm:host=H,port=P.
                       Also $SIMPLE_TPM_PK11_TPM or "tpm" in the config file.
    -h, --help         Show this help.
    --version          Show the version.

Example:
    $ stpm-sign -k my.key -f message.txt -r -o message.sig
    $ openssl dgst -sha256 -verify my.pem -signature message.sig message.txt
`

func main() { os.Exit(run(os.Args[1:], cli.New("stpm-sign"))) }

func run(args []string, ui *cli.UI) int {
	var keyPath, dataPath, out, pinFile, srkPinFile, tpmSpec string
	var raw, askSRK bool
	fs := cli.NewFlagSet("stpm-sign")
	fs.StringVar(&keyPath, "k", "", "")
	fs.StringVar(&dataPath, "f", "", "")
	fs.BoolVar(&raw, "r", false, "")
	fs.StringVar(&out, "o", "", "")
	fs.StringVar(&pinFile, "pin-file", "", "")
	fs.BoolVar(&askSRK, "s", false, "")
	fs.StringVar(&srkPinFile, "srk-pin-file", "", "")
	fs.StringVar(&tpmSpec, "tpm", "", "")
	if code, done := ui.Parse(fs, command, args); done {
		return code
	}
	switch {
	case keyPath == "":
		return ui.Usage(synopsis, "missing -k KEY")
	case dataPath == "":
		return ui.Usage(synopsis, "missing -f DATA")
	}

	k, err := keyfile.Load(keyPath)
	if err != nil {
		return ui.Fail(err)
	}
	if err := tpm.CheckKeyFile(k); err != nil {
		return ui.Fail(cli.KeyErr(keyPath, err))
	}
	digest, err := cli.HashFile(dataPath)
	if err != nil {
		return ui.Fail(err)
	}
	spec, err := cli.TPMSpec(ui, tpmSpec)
	if err != nil {
		return ui.Fail(err)
	}
	var pin, srkPIN []byte
	if tpm.NeedsPIN(k) {
		if pin, err = cli.Secret(ui, pinFile, "Enter PIN for "+keyPath, false); err != nil {
			return ui.Fail(cli.KeyErr(keyPath, err))
		}
		defer cli.Zero(pin)
	}
	if askSRK || srkPinFile != "" {
		if srkPIN, err = cli.Secret(ui, srkPinFile, "Enter SRK PIN", false); err != nil {
			return ui.Fail(err)
		}
		defer cli.Zero(srkPIN)
	}
	sig, err := tpm.Open(spec).SignDigest(k, srkPIN, pin, digest, tpm.SignOpts{Hash: crypto.SHA256})
	if err != nil {
		return ui.Fail(cli.KeyErr(keyPath, err))
	}
	if sig, err = encode(k, sig); err != nil {
		return ui.Fail(err)
	}
	if !raw {
		sig = []byte(hex.EncodeToString(sig) + "\n")
	}
	if out == "" {
		if _, err := os.Stdout.Write(sig); err != nil {
			return ui.Fail(err)
		}
		return cli.ExitOK
	}
	if err := keyfile.WriteFileAtomic(out, sig, 0o644, true); err != nil {
		return ui.Fail(err)
	}
	return cli.ExitOK
}

// encode turns the TPM's ECDSA r||s into the DER form openssl and most
// tools verify; RSA signatures are already in their final form.
func encode(k *keyfile.Key, sig []byte) ([]byte, error) {
	pub, err := tpm.KeyPublic(k)
	if err != nil {
		return nil, err
	}
	if pub.Type == tpm2.TPMAlgRSA {
		return sig, nil
	}
	half := len(sig) / 2
	return asn1.Marshal(struct{ R, S *big.Int }{
		new(big.Int).SetBytes(sig[:half]), new(big.Int).SetBytes(sig[half:]),
	})
}
