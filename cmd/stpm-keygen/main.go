// Command stpm-keygen makes a key inside the TPM and writes it as a
// TSS2 PRIVATE KEY file plus an OpenSSH public key.
package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/cli"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keybackup"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

var command = cli.Command{Synopsis: synopsis, Usage: usage}

const synopsis = "stpm-keygen -o FILE [-t rsa|ecdsa] [-b BITS] [-p] [-s] [-S] [-f] [--tpm SPEC] [--pin-file F] [--comment C]"

const usage = `Usage:
    stpm-keygen -o FILE [-t rsa|ecdsa] [-b BITS] [-p] [-s] [-S] [-f] [--tpm SPEC] [--pin-file F] [--comment C]
    stpm-keygen --restore BACKUP -o FILE [-p] [-s] [-f] [--tpm SPEC]
    stpm-keygen -y -k FILE

Makes a key inside the TPM and writes FILE (a TSS2 PRIVATE KEY, usable only
with this TPM) and FILE.pub (an OpenSSH public key for authorized_keys).

Options:
    -o FILE              Write the key to FILE and the public key to FILE.pub.
    -t rsa|ecdsa         Key type (default rsa).
    -b BITS              RSA: 2048 (default), 3072, 4096. ECDSA: 256 (default), 384.
    -p                   Protect the key with a PIN, asked twice on the terminal.
    --pin-file F         Read the key's PIN from the first line of F.
    -s                   The parent needs a PIN (the owner hierarchy's, or the
                         persistent parent's); asked on the terminal.
    --srk-pin-file F     Read the parent's PIN from F.
    --parent HANDLE      Persistent parent key, e.g. 0x81000001 (default: the
                         standard storage primary, 0x40000001).
    -S                   Backup-able key: made in software, imported into the
                         TPM, and written once to a passphrase-encrypted backup.
    --backup FILE        Where -S writes the backup (default FILE.backup).
    --backup-pass-file F Read the backup passphrase from F.
    --restore BACKUP     Import the key in BACKUP (made by -S) into this TPM.
    --comment C          Comment for FILE.pub (default user@host).
    -f                   Overwrite existing files.
    -y -k FILE           Print the public key of key file FILE in OpenSSH format.
    --tpm SPEC           TPM to use: device:/dev/tpmrm0 (default),
                         swtpm:path=SOCKET or swtpm:host=H,port=P.
                         Also $SIMPLE_TPM_PK11_TPM or "tpm" in the config file.
    -h, --help           Show this help.
    --version            Show the version.

Example:
    $ stpm-keygen -t ecdsa -o ~/.simple-tpm-pk11/$(hostname -s).key
`

type options struct {
	out, keyType, pinFile, srkPinFile, parent, backup, backupPassFile string
	restore, comment, key, tpmSpec                                    string
	bits                                                              int
	askPIN, askSRK, software, force, printPub                         bool
}

func main() { os.Exit(run(os.Args[1:], cli.New("stpm-keygen"))) }

func run(args []string, ui *cli.UI) int {
	var o options
	fs := cli.NewFlagSet("stpm-keygen")
	fs.StringVar(&o.out, "o", "", "")
	fs.StringVar(&o.keyType, "t", "rsa", "")
	fs.IntVar(&o.bits, "b", 0, "")
	fs.BoolVar(&o.askPIN, "p", false, "")
	fs.StringVar(&o.pinFile, "pin-file", "", "")
	fs.BoolVar(&o.askSRK, "s", false, "")
	fs.StringVar(&o.srkPinFile, "srk-pin-file", "", "")
	fs.StringVar(&o.parent, "parent", "", "")
	fs.BoolVar(&o.software, "S", false, "")
	fs.StringVar(&o.backup, "backup", "", "")
	fs.StringVar(&o.backupPassFile, "backup-pass-file", "", "")
	fs.StringVar(&o.restore, "restore", "", "")
	fs.StringVar(&o.comment, "comment", "", "")
	fs.BoolVar(&o.force, "f", false, "")
	fs.BoolVar(&o.printPub, "y", false, "")
	fs.StringVar(&o.key, "k", "", "")
	fs.StringVar(&o.tpmSpec, "tpm", "", "")
	if code, done := ui.Parse(fs, command, args); done {
		return code
	}
	if o.printPub {
		if o.key == "" {
			return ui.Usage(synopsis, "-y needs -k FILE")
		}
		return printPublic(ui, o.key)
	}
	if o.out == "" {
		return ui.Usage(synopsis, "missing -o FILE")
	}
	ks, err := o.keySpec()
	if err != nil {
		return ui.Usage(synopsis, "%v", err)
	}
	return generate(ui, &o, ks)
}

func (o *options) keySpec() (tpm.KeySpec, error) {
	var ks tpm.KeySpec
	switch strings.ToLower(o.keyType) {
	case "rsa":
		ks.Type, ks.Bits = tpm.RSA, 2048
	case "ecdsa", "ecc", "ec":
		ks.Type, ks.Bits = tpm.ECDSA, 256
	default:
		return ks, fmt.Errorf("unknown key type %q (want rsa or ecdsa)", o.keyType)
	}
	if o.bits != 0 {
		ks.Bits = o.bits
	}
	if err := ks.Validate(); err != nil && o.restore == "" {
		return ks, err
	}
	if o.parent != "" {
		h, err := strconv.ParseUint(o.parent, 0, 32)
		if err != nil || (h != uint64(tpm.OwnerParent) && h>>24 != 0x81) {
			return ks, fmt.Errorf("--parent %q: want 0x40000001 or a persistent handle 0x81xxxxxx", o.parent)
		}
		ks.Parent = uint32(h)
	}
	if o.restore != "" && o.software {
		return ks, errors.New("-S and --restore cannot be combined")
	}
	if o.askPIN && o.pinFile != "" {
		return ks, errors.New("-p and --pin-file cannot be combined")
	}
	return ks, nil
}

func generate(ui *cli.UI, o *options, ks tpm.KeySpec) int {
	pubPath := o.out + ".pub"
	backupPath := o.backup
	if backupPath == "" {
		backupPath = o.out + ".backup"
	}
	// Refuse before the slow part, not after it.
	paths := []string{o.out, pubPath}
	if o.software {
		paths = append(paths, backupPath)
	}
	if !o.force {
		for _, p := range paths {
			if _, err := os.Lstat(p); err == nil {
				ui.Errorf("%q already exists", p)
				ui.Hintf("choose another name, or overwrite with -f")
				return cli.ExitError
			}
		}
	}
	for _, p := range paths {
		if err := writableDir(p); err != nil {
			return ui.Fail(err)
		}
	}
	spec, err := cli.TPMSpec(ui, o.tpmSpec)
	if err != nil {
		return ui.Fail(err)
	}
	if o.askPIN || o.pinFile != "" {
		if ks.PIN, err = cli.Secret(ui, o.pinFile, "Enter new PIN for "+o.out, true); err != nil {
			return ui.Fail(err)
		}
		defer cli.Zero(ks.PIN)
		if len(ks.PIN) == 0 {
			ui.Errorf("empty PIN")
			ui.Hintf("leave out -p for a key without a PIN")
			return cli.ExitError
		}
	}
	if o.askSRK || o.srkPinFile != "" {
		if ks.ParentAuth, err = cli.Secret(ui, o.srkPinFile, "Enter SRK PIN", false); err != nil {
			return ui.Fail(err)
		}
		defer cli.Zero(ks.ParentAuth)
	}
	// The comment goes only into FILE.pub: the key file's description
	// field [4] makes tpm2-openssl 1.1 (Debian 12) refuse the key.
	comment := o.comment
	if comment == "" {
		comment = defaultComment()
	}

	t := tpm.Open(spec)
	var k *keyfile.Key
	switch {
	case o.restore != "":
		k, err = restore(ui, t, o, &ks)
	case o.software:
		k, err = softwareKey(ui, t, o, &ks, backupPath)
	default:
		stop := progress(ui, ks)
		err = t.Do(func(c *tpm.Conn) error {
			var err error
			k, err = c.CreateKey(ks)
			return err
		})
		stop()
	}
	if err != nil {
		return ui.Fail(err)
	}
	return writeKey(ui, k, o.out, pubPath, comment, o.force)
}

// writableDir checks that the file path can be created, so that a key
// made in the TPM is not lost for want of a directory.
func writableDir(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return cli.WithHint(fmt.Errorf("%q: directory %q: %w", path, dir, err), "create the directory first, or choose another path with -o")
	case !fi.IsDir():
		return cli.WithHint(fmt.Errorf("%q: %q is not a directory", path, dir), "choose another path with -o")
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return cli.WithHint(fmt.Errorf("%q: cannot write in directory %q: %w", path, dir, err), "choose a directory you can write to with -o")
	}
	return nil
}

// progress tells the user that a slow key generation is under way: RSA
// keys take seconds to a minute on hardware TPMs.
func progress(ui *cli.UI, ks tpm.KeySpec) func() {
	if ks.Type != tpm.RSA {
		return func() {}
	}
	ui.Infof("making an RSA %d key in the TPM; this can take a minute", ks.Bits)
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		dots := false
		for {
			select {
			case <-done:
				if dots {
					fmt.Fprintln(ui.Stderr)
				}
				return
			case <-tick.C:
				fmt.Fprint(ui.Stderr, ".")
				dots = true
			}
		}
	}()
	return func() { close(done); <-finished }
}

func softwareKey(ui *cli.UI, t *tpm.TPM, o *options, ks *tpm.KeySpec, backupPath string) (*keyfile.Key, error) {
	pass, err := cli.Secret(ui, o.backupPassFile, "Enter passphrase for the backup "+backupPath, true)
	if err != nil {
		return nil, err
	}
	defer cli.Zero(pass)
	if len(pass) < 8 {
		return nil, cli.WithHint(errors.New("backup passphrase too short"), "use at least 8 characters; the backup holds the private key")
	}
	var priv crypto.Signer
	if ks.Type == tpm.RSA {
		priv, err = rsa.GenerateKey(rand.Reader, ks.Bits)
	} else {
		curve := elliptic.P256()
		if ks.Bits == 384 {
			curve = elliptic.P384()
		}
		priv, err = ecdsa.GenerateKey(curve, rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	defer wipe(priv)
	// Import first: a TPM that refuses the key must not leave a backup of
	// a key that was never usable.
	var k *keyfile.Key
	err = t.Do(func(c *tpm.Conn) error {
		var err error
		k, err = c.ImportKey(priv, *ks)
		return err
	})
	if err != nil {
		return nil, err
	}
	pemBytes, err := keybackup.Encrypt(priv, pass)
	if err != nil {
		return nil, err
	}
	defer cli.Zero(pemBytes)
	if err := keyfile.WriteFileAtomic(backupPath, pemBytes, 0o600, o.force); err != nil {
		return nil, fmt.Errorf("writing backup: %w", err)
	}
	ui.Infof("wrote the backup %q: keep it offline; it is the only copy of the private key outside the TPM", backupPath)
	return k, nil
}

func restore(ui *cli.UI, t *tpm.TPM, o *options, ks *tpm.KeySpec) (*keyfile.Key, error) {
	data, err := os.ReadFile(o.restore)
	if err != nil {
		return nil, fmt.Errorf("reading backup %q: %w", o.restore, errors.Unwrap(err))
	}
	defer cli.Zero(data)
	pass, err := cli.Secret(ui, o.backupPassFile, "Enter passphrase for "+o.restore, false)
	if err != nil {
		return nil, err
	}
	defer cli.Zero(pass)
	priv, err := keybackup.Decrypt(data, pass)
	if err != nil {
		if errors.Is(err, keybackup.ErrWrongPassphrase) {
			return nil, fmt.Errorf("%q: wrong passphrase", o.restore)
		}
		return nil, fmt.Errorf("%q: %w", o.restore, err)
	}
	defer wipe(priv)
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%q: not a signing key", o.restore)
	}
	var k *keyfile.Key
	err = t.Do(func(c *tpm.Conn) error {
		var err error
		k, err = c.ImportKey(signer, *ks)
		return err
	})
	return k, err
}

// wipe clears a software RSA key's secret numbers as far as Go allows
// (big.Int may have copied its words earlier). An ECDSA key's scalar is
// kept inside crypto/ecdsa, out of reach since Go 1.26.
func wipe(priv crypto.PrivateKey) {
	if k, ok := priv.(*rsa.PrivateKey); ok {
		k.D.SetInt64(0)
		for _, p := range k.Primes {
			p.SetInt64(0)
		}
	}
}

func writeKey(ui *cli.UI, k *keyfile.Key, keyPath, pubPath, comment string, force bool) int {
	pub, err := tpm.PublicKey(k)
	if err != nil {
		return ui.Fail(err)
	}
	line, err := authorizedKey(pub, comment)
	if err != nil {
		return ui.Fail(err)
	}
	if err := keyfile.Write(keyPath, k, force); err != nil {
		return ui.Fail(writeErr(keyPath, err))
	}
	if err := keyfile.WriteFileAtomic(pubPath, line, 0o644, force); err != nil {
		return ui.Fail(writeErr(pubPath, err))
	}
	ui.Infof("wrote %q (the key, usable only with this TPM) and %q", keyPath, pubPath)
	ui.Infof("next: add %q to ~/.ssh/authorized_keys on your servers", pubPath)
	return cli.ExitOK
}

func writeErr(path string, err error) error {
	if errors.Is(err, fs.ErrExist) {
		return cli.WithHint(fmt.Errorf("%q already exists", path), "choose another name, or overwrite with -f")
	}
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return cli.WithHint(err, "free space there and run again; a file that was already there is unchanged")
	}
	return err
}

func authorizedKey(pub crypto.PublicKey, comment string) ([]byte, error) {
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	line := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(sp)), "\n")
	if comment != "" {
		line += " " + comment
	}
	return []byte(line + "\n"), nil
}

func defaultComment() string {
	name := "stpm"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, err := os.Hostname()
	if err != nil {
		return name
	}
	return name + "@" + host
}

func printPublic(ui *cli.UI, path string) int {
	k, err := keyfile.Load(path)
	if err != nil {
		return ui.Fail(err)
	}
	pub, err := tpm.PublicKey(k)
	if err != nil {
		return ui.Fail(cli.KeyErr(path, err))
	}
	line, err := authorizedKey(pub, pubComment(path, pub, k.Description))
	if err != nil {
		return ui.Fail(cli.KeyErr(path, err))
	}
	if _, err := os.Stdout.Write(line); err != nil {
		return ui.Fail(err)
	}
	return cli.ExitOK
}

// pubComment finds the comment for -y: the key file's description if it
// has one, else the comment of FILE.pub when that file holds the same key.
func pubComment(path string, pub crypto.PublicKey, description string) string {
	if description != "" {
		return description
	}
	data, err := os.ReadFile(path + ".pub")
	if err != nil {
		return ""
	}
	sp, comment, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return ""
	}
	want, err := ssh.NewPublicKey(pub)
	if err != nil || string(want.Marshal()) != string(sp.Marshal()) {
		return ""
	}
	return comment
}
