// Package keyfile reads and writes TPM 2.0 key files in the "TSS2 PRIVATE KEY"
// format defined by J. Bottomley, "ASN.1 Specification for TPM 2.0 Key Files"
// (draft-bottomley-tpm-keys, cited below as "spec"). The same format is used
// by the tpm2 OpenSSL provider, openssl_tpm2_engine and tpm2-tss-engine, so a
// key written here can be used by those tools and the other way round.
//
// The package only encodes and decodes: it makes no TPM calls. The pubkey and
// privkey blobs are kept as opaque TPM2B byte strings; only their 2-byte size
// prefix is checked, so that a truncated or spliced file is caught here rather
// than as an obscure TPM error later.
//
// Errors never quote file contents, because a key file holds a wrapped private
// key and possibly policy secrets. They name the field that failed instead and
// wrap one of the sentinel errors (ErrNotPEM, ErrWrongLabel, ErrCorrupt,
// ErrUnsupportedType, ErrUnsupportedField) for errors.Is.
package keyfile

import (
	"bytes"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Key type OIDs, under id-tpmkey {2 23 133 10 1}, which the TCG reserved for
// this format (spec §3.1, "type").
var (
	OIDLoadableKey   = asn1.ObjectIdentifier{2, 23, 133, 10, 1, 3} // loaded with TPM2_Load
	OIDImportableKey = asn1.ObjectIdentifier{2, 23, 133, 10, 1, 4} // TPM2_Import, then TPM2_Load
	OIDSealedData    = asn1.ObjectIdentifier{2, 23, 133, 10, 1, 5} // TPM2_Unseal
)

// PEMType is the PEM label the spec mandates (spec §3).
const PEMType = "TSS2 PRIVATE KEY"

// ParentOwner is the owner hierarchy handle. A permanent handle as parent
// means "the primary key created under this hierarchy from the TCG template":
// ECC P-256, or RSA-2048 when Key.RSAParent is set (spec §3.1, "parent" and
// "rsaParent").
const ParentOwner uint32 = 0x40000001

// maxFileSize bounds what Load reads. Real key files are a few KiB; the bound
// stops a wrong path (a device, a huge log) from exhausting memory.
const maxFileSize = 1 << 20

// Sentinel errors; every error from this package that concerns the file's
// contents wraps exactly one of them.
var (
	// ErrNotPEM means the input holds no decodable PEM block.
	ErrNotPEM = errors.New("keyfile: no PEM block")
	// ErrWrongLabel means a PEM block was found but its label is not
	// PEMType.
	ErrWrongLabel = errors.New("keyfile: wrong PEM label")
	// ErrCorrupt means the DER or one of its fields is malformed, or a Key
	// given to MarshalDER breaks a rule of the spec.
	ErrCorrupt = errors.New("keyfile: malformed key")
	// ErrUnsupportedType means the key type OID is not one of the three
	// the spec defines.
	ErrUnsupportedType = errors.New("keyfile: unsupported key type")
	// ErrUnsupportedField means the key carries an optional field newer
	// than this package ([6] or above). It is refused rather than skipped,
	// because rewriting the file would silently drop it.
	ErrUnsupportedField = errors.New("keyfile: unsupported optional field")
)

// Error describes why a key file or Key was rejected. Its message never
// contains bytes of the file.
type Error struct {
	Path  string // file name, set by Load and Write; empty otherwise
	Field string // TPMKey field that failed, e.g. "pubkey"; empty if none
	Msg   string // what is wrong
	Err   error  // one of the sentinel errors
}

func (e *Error) Error() string {
	var b strings.Builder
	// With a path the message is for a user, who knows files, not
	// packages: `"k.key": pubkey: expected OCTET STRING`.
	if e.Path != "" {
		fmt.Fprintf(&b, "%q: ", e.Path)
	} else {
		b.WriteString("keyfile: ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Hint tells a user holding a rejected file what a key file is and what
// to do about a damaged one.
func (e *Error) Hint() string {
	switch e.Err {
	case ErrNotPEM, ErrWrongLabel, ErrCorrupt:
		return `a key file is the "TSS2 PRIVATE KEY" PEM that stpm-keygen or 'openssl genpkey -provider tpm2' writes; if this one was damaged, use a copy`
	case ErrUnsupportedType, ErrUnsupportedField:
		return "make the key with stpm-keygen, or check that this is a TPM 2.0 signing key file"
	}
	return ""
}

func corrupt(field, format string, args ...any) *Error {
	return &Error{Field: field, Msg: fmt.Sprintf(format, args...), Err: ErrCorrupt}
}

// withPath returns err with the file name attached, without repeating the
// "keyfile:" prefix.
func withPath(err error, path string) error {
	var e *Error
	if errors.As(err, &e) {
		c := *e
		c.Path = path
		return &c
	}
	return fmt.Errorf("%q: %w", path, err)
}

// Policy is one TPMPolicy statement (spec §4.1): a TPM command code and the
// marshalled body of that policy command.
type Policy struct {
	CommandCode   uint32
	CommandPolicy []byte
}

// Key is a decoded TPMKey (spec §3.1). Byte slices never alias the input of
// Parse or ParseDER. Optional fields that are absent, or present but empty,
// decode to their zero value (nil, false, ""), and zero values are omitted
// when encoding, so Parse(MarshalPEM(k)) yields a Key equal to k.
type Key struct {
	Type      asn1.ObjectIdentifier
	EmptyAuth bool // no password needed to use the key (spec §3.1, "emptyAuth")
	// Policy is decoded and kept so a re-encode round-trips; the product
	// does not use policies yet.
	Policy []Policy
	// Secret is the marshalled TPM2B_ENCRYPTED_SECRET (inSymSeed) of an
	// importable key; it must be set for, and only for, OIDImportableKey.
	Secret []byte
	// AuthPolicy is the raw DER of the [3] contents (a SEQUENCE OF
	// TPMAuthPolicy, spec §5.1), kept verbatim for round-trip.
	AuthPolicy  []byte
	Description string // free text, e.g. "user@host"
	RSAParent   bool   // permanent parent means the RSA-2048 primary, not ECC P-256
	Parent      uint32 // parent handle; see ParentOwner
	Public      []byte // TPM2B_PUBLIC bytes, size prefix included
	Private     []byte // TPM2B_PRIVATE bytes, size prefix included
}

// Parse decodes a PEM-encoded key file. Text before the PEM block is ignored,
// as OpenSSL does; anything but white space after it is rejected, since a
// second block would make it ambiguous which key the file holds.
func Parse(pemBytes []byte) (*Key, error) {
	block, rest := pem.Decode(pemBytes)
	if block == nil {
		msg := `no PEM block (want "-----BEGIN TSS2 PRIVATE KEY-----")`
		if bytes.Contains(pemBytes, []byte("-----BEGIN ")) {
			msg = "malformed PEM block (bad base64, or no matching END line)"
		}
		return nil, &Error{Msg: msg, Err: ErrNotPEM}
	}
	if block.Type != PEMType {
		label := block.Type
		if len(label) > 40 {
			label = label[:40] + "..."
		}
		return nil, &Error{Msg: fmt.Sprintf("PEM label is %q, want %q", label, PEMType), Err: ErrWrongLabel}
	}
	if len(block.Headers) != 0 {
		return nil, corrupt("", "unexpected PEM headers (the format has none)")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, corrupt("", "trailing data after the PEM block")
	}
	return ParseDER(block.Bytes)
}

// ParseDER decodes the DER form of a TPMKey (spec §3.1). Fields must appear in
// the order the ASN.1 gives; each optional field uses an EXPLICIT context tag.
func ParseDER(der []byte) (*Key, error) {
	in := cryptobyte.String(der)
	var s cryptobyte.String
	if err := read(&in, &s, cbasn1.SEQUENCE, "TPMKey", "SEQUENCE"); err != nil {
		return nil, err
	}
	if !in.Empty() {
		return nil, corrupt("TPMKey", "trailing data after the SEQUENCE")
	}

	k := new(Key)
	if !s.PeekASN1Tag(cbasn1.OBJECT_IDENTIFIER) {
		return nil, corrupt("type", "expected OBJECT IDENTIFIER")
	}
	if !s.ReadASN1ObjectIdentifier(&k.Type) {
		return nil, corrupt("type", "malformed OBJECT IDENTIFIER")
	}
	// Check the type first: under another OID the rest of the structure
	// means something else, so later errors would mislead.
	if err := checkType(k.Type); err != nil {
		return nil, err
	}

	// emptyAuth [0]. The spec (§3.1, "emptyAuth") asks readers to accept
	// absent, FALSE and TRUE; absent and FALSE both mean false.
	if inner, ok, err := optional(&s, 0, "emptyAuth"); err != nil {
		return nil, err
	} else if ok {
		if k.EmptyAuth, err = readWrappedBool(inner, "emptyAuth"); err != nil {
			return nil, err
		}
	}
	// policy [1] SEQUENCE OF TPMPolicy.
	if inner, ok, err := optional(&s, 1, "policy"); err != nil {
		return nil, err
	} else if ok {
		if k.Policy, err = parsePolicies(inner); err != nil {
			return nil, err
		}
	}
	// secret [2] OCTET STRING.
	if inner, ok, err := optional(&s, 2, "secret"); err != nil {
		return nil, err
	} else if ok {
		if k.Secret, err = readWrappedOctets(inner, "secret"); err != nil {
			return nil, err
		}
	}
	// authPolicy [3]: kept verbatim; checked for shape by k.check.
	if inner, ok, err := optional(&s, 3, "authPolicy"); err != nil {
		return nil, err
	} else if ok {
		k.AuthPolicy = clone(inner)
	}
	// description [4] UTF8String.
	if inner, ok, err := optional(&s, 4, "description"); err != nil {
		return nil, err
	} else if ok {
		var d cryptobyte.String
		if err := read(&inner, &d, cbasn1.UTF8String, "description", "UTF8String"); err != nil {
			return nil, err
		}
		if err := end(inner, "description", "UTF8String"); err != nil {
			return nil, err
		}
		if !utf8.Valid(d) {
			return nil, corrupt("description", "not valid UTF-8")
		}
		k.Description = string(d)
	}
	// rsaParent [5] BOOLEAN.
	if inner, ok, err := optional(&s, 5, "rsaParent"); err != nil {
		return nil, err
	} else if ok {
		if k.RSAParent, err = readWrappedBool(inner, "rsaParent"); err != nil {
			return nil, err
		}
	}
	// Any context tag left here is either out of order (a repeat of [0]..[5])
	// or a field from a later revision of the spec.
	if len(s) > 0 && s[0]&0xc0 == 0x80 {
		n := int(s[0] & 0x1f)
		if n <= 5 {
			return nil, corrupt(fmt.Sprintf("[%d]", n), "optional field repeated or out of order")
		}
		name := fmt.Sprintf("[%d]", n)
		if n == 0x1f {
			name = "[31 or above]"
		}
		return nil, &Error{Field: name, Msg: "optional field not supported by this version", Err: ErrUnsupportedField}
	}

	var err error
	if k.Parent, err = readUint32(&s, "parent"); err != nil {
		return nil, err
	}
	if k.Public, err = readOctetString(&s, "pubkey"); err != nil {
		return nil, err
	}
	if k.Private, err = readOctetString(&s, "privkey"); err != nil {
		return nil, err
	}
	if !s.Empty() {
		return nil, corrupt("TPMKey", "unexpected data after privkey")
	}
	if err := k.check(); err != nil {
		return nil, err
	}
	return k, nil
}

// MarshalDER encodes k as DER. It applies the same checks as ParseDER, so
// whatever it writes can be read back.
func (k *Key) MarshalDER() ([]byte, error) {
	if k == nil {
		return nil, corrupt("", "nil Key")
	}
	if err := k.check(); err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(k.Type)
		// False is written by leaving the field out, as spec §3.1
		// ("emptyAuth") recommends.
		if k.EmptyAuth {
			b.AddASN1(ctx(0), func(b *cryptobyte.Builder) { b.AddASN1Boolean(true) })
		}
		if len(k.Policy) > 0 {
			b.AddASN1(ctx(1), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					for _, p := range k.Policy {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1(ctx(0), func(b *cryptobyte.Builder) { b.AddASN1Uint64(uint64(p.CommandCode)) })
							b.AddASN1(ctx(1), func(b *cryptobyte.Builder) { b.AddASN1OctetString(p.CommandPolicy) })
						})
					}
				})
			})
		}
		if len(k.Secret) > 0 {
			b.AddASN1(ctx(2), func(b *cryptobyte.Builder) { b.AddASN1OctetString(k.Secret) })
		}
		if len(k.AuthPolicy) > 0 {
			b.AddASN1(ctx(3), func(b *cryptobyte.Builder) { b.AddBytes(k.AuthPolicy) })
		}
		if k.Description != "" {
			b.AddASN1(ctx(4), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(k.Description)) })
			})
		}
		if k.RSAParent {
			b.AddASN1(ctx(5), func(b *cryptobyte.Builder) { b.AddASN1Boolean(true) })
		}
		b.AddASN1Uint64(uint64(k.Parent))
		b.AddASN1OctetString(k.Public)
		b.AddASN1OctetString(k.Private)
	})
	der, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("keyfile: encode: %w", err)
	}
	return der, nil
}

// MarshalPEM encodes k as a PEM block labelled PEMType.
func (k *Key) MarshalPEM() ([]byte, error) {
	der, err := k.MarshalDER()
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: PEMType, Bytes: der}), nil
}

// Load reads and parses the key file at path. Errors name the path.
func Load(path string) (*Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fileError(path, err)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fileError(path, err)
	}
	if len(data) > maxFileSize {
		return nil, &Error{Path: path, Msg: "file larger than 1 MiB, not a key file", Err: ErrCorrupt}
	}
	k, err := Parse(data)
	if err != nil {
		return nil, withPath(err, path)
	}
	return k, nil
}

// fileError formats an I/O error as `"path": reason`, without
// the second copy of the path that *fs.PathError would add.
func fileError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%q: %w", path, pe.Err)
	}
	return fmt.Errorf("%q: %w", path, err)
}

// check enforces the rules of spec §3.1 that do not depend on the encoding.
// Both ParseDER and MarshalDER call it.
func (k *Key) check() error {
	if err := checkType(k.Type); err != nil {
		return err
	}
	// spec §3.1, "secret": MUST be present for importable keys and MUST NOT
	// be present for any other type.
	importable := k.Type.Equal(OIDImportableKey)
	switch {
	case importable && len(k.Secret) == 0:
		return corrupt("secret", "required for an importable key")
	case !importable && len(k.Secret) > 0:
		return corrupt("secret", "only importable keys may have one")
	case len(k.Secret) > 0:
		if err := checkTPM2B(k.Secret, "secret"); err != nil {
			return err
		}
	}
	if len(k.AuthPolicy) > 0 {
		if err := checkAuthPolicy(k.AuthPolicy); err != nil {
			return err
		}
	}
	if !utf8.ValidString(k.Description) {
		return corrupt("description", "not valid UTF-8")
	}
	// spec §3.1, "parent": the handle's top octet must be 0x40 (permanent),
	// 0x80 (transient, discouraged) or 0x81 (persistent).
	switch k.Parent >> 24 {
	case 0x40, 0x80, 0x81:
	default:
		return corrupt("parent", "handle 0x%08x is not permanent (0x40...), transient (0x80...) or persistent (0x81...)", k.Parent)
	}
	if err := checkTPM2B(k.Public, "pubkey"); err != nil {
		return err
	}
	return checkTPM2B(k.Private, "privkey")
}

func checkType(oid asn1.ObjectIdentifier) error {
	switch {
	case oid.Equal(OIDLoadableKey), oid.Equal(OIDImportableKey), oid.Equal(OIDSealedData):
		return nil
	case len(oid) == 0:
		return &Error{Field: "type", Msg: "key type OID not set", Err: ErrUnsupportedType}
	}
	return &Error{Field: "type", Msg: "unknown key type OID " + oid.String(), Err: ErrUnsupportedType}
}

// checkTPM2B checks that b is a TPM2B: a 2-byte big-endian size followed by
// exactly that many bytes (TPM 2.0 Part 2, §10.4). A zero size is refused:
// none of the structures stored here may be empty.
func checkTPM2B(b []byte, field string) error {
	switch {
	case len(b) == 0:
		return corrupt(field, "empty")
	case len(b) < 2:
		return corrupt(field, "TPM2B shorter than its 2-byte size field")
	}
	n := int(binary.BigEndian.Uint16(b))
	switch {
	case n == 0:
		return corrupt(field, "empty (TPM2B size 0)")
	case n != len(b)-2:
		return corrupt(field, "TPM2B size field says %d bytes but %d follow", n, len(b)-2)
	}
	return nil
}

// checkAuthPolicy checks that raw is one SEQUENCE whose elements are all
// SEQUENCEs (SEQUENCE OF TPMAuthPolicy, spec §5.1). The inside of each
// TPMAuthPolicy is not interpreted: the product does not use signed policies,
// and the bytes are written back verbatim.
func checkAuthPolicy(raw []byte) error {
	s := cryptobyte.String(raw)
	var seq cryptobyte.String
	if err := read(&s, &seq, cbasn1.SEQUENCE, "authPolicy", "SEQUENCE OF TPMAuthPolicy"); err != nil {
		return err
	}
	if err := end(s, "authPolicy", "SEQUENCE OF TPMAuthPolicy"); err != nil {
		return err
	}
	for i := 0; !seq.Empty(); i++ {
		var e cryptobyte.String
		if err := read(&seq, &e, cbasn1.SEQUENCE, fmt.Sprintf("authPolicy[%d]", i), "TPMAuthPolicy SEQUENCE"); err != nil {
			return err
		}
	}
	return nil
}

// parsePolicies decodes the contents of [1]: SEQUENCE OF TPMPolicy, where
// TPMPolicy ::= SEQUENCE { commandCode [0] EXPLICIT INTEGER,
// commandPolicy [1] EXPLICIT OCTET STRING } (spec §4.1).
func parsePolicies(inner cryptobyte.String) ([]Policy, error) {
	var seq cryptobyte.String
	if err := read(&inner, &seq, cbasn1.SEQUENCE, "policy", "SEQUENCE OF TPMPolicy"); err != nil {
		return nil, err
	}
	if err := end(inner, "policy", "SEQUENCE OF TPMPolicy"); err != nil {
		return nil, err
	}
	var out []Policy
	for i := 0; !seq.Empty(); i++ {
		field := fmt.Sprintf("policy[%d]", i)
		var p, cc, cp cryptobyte.String
		if err := read(&seq, &p, cbasn1.SEQUENCE, field, "TPMPolicy SEQUENCE"); err != nil {
			return nil, err
		}
		if err := read(&p, &cc, ctx(0), field+".commandCode", "[0]"); err != nil {
			return nil, err
		}
		code, err := readUint32(&cc, field+".commandCode")
		if err != nil {
			return nil, err
		}
		if err := end(cc, field+".commandCode", "INTEGER"); err != nil {
			return nil, err
		}
		if err := read(&p, &cp, ctx(1), field+".commandPolicy", "[1]"); err != nil {
			return nil, err
		}
		body, err := readWrappedOctets(cp, field+".commandPolicy")
		if err != nil {
			return nil, err
		}
		if err := end(p, field, "commandPolicy"); err != nil {
			return nil, err
		}
		out = append(out, Policy{CommandCode: code, CommandPolicy: body})
	}
	return out, nil
}

// ctx returns the tag of an EXPLICIT [n] field: context-specific, constructed.
func ctx(n uint8) cbasn1.Tag { return cbasn1.Tag(n).ContextSpecific().Constructed() }

// read reads the next element, which must carry tag, into out (contents
// only). what names the expected ASN.1 type in the error.
func read(s, out *cryptobyte.String, tag cbasn1.Tag, field, what string) error {
	switch {
	case s.Empty():
		return corrupt(field, "missing %s", what)
	case !s.PeekASN1Tag(tag):
		return corrupt(field, "expected %s", what)
	case !s.ReadASN1(out, tag):
		return corrupt(field, "malformed %s (bad length or truncated)", what)
	}
	return nil
}

// end reports an error if anything follows the last element of s.
func end(s cryptobyte.String, field, after string) error {
	if !s.Empty() {
		return corrupt(field, "unexpected data after %s", after)
	}
	return nil
}

// optional reads the EXPLICIT [n] wrapper if it comes next and returns its
// contents.
func optional(s *cryptobyte.String, n uint8, field string) (cryptobyte.String, bool, error) {
	if !s.PeekASN1Tag(ctx(n)) {
		return nil, false, nil
	}
	var inner cryptobyte.String
	if err := read(s, &inner, ctx(n), field, fmt.Sprintf("[%d]", n)); err != nil {
		return nil, false, err
	}
	return inner, true, nil
}

// readWrappedBool decodes the single BOOLEAN inside an EXPLICIT wrapper. DER writes
// TRUE as 0xFF, but any non-zero octet is accepted as BER allows (X.690
// §8.2.2), so a key from a lax writer still loads; it is re-encoded as 0xFF.
func readWrappedBool(inner cryptobyte.String, field string) (bool, error) {
	var v cryptobyte.String
	if err := read(&inner, &v, cbasn1.BOOLEAN, field, "BOOLEAN"); err != nil {
		return false, err
	}
	if len(v) != 1 {
		return false, corrupt(field, "BOOLEAN must be 1 byte, not %d", len(v))
	}
	if err := end(inner, field, "BOOLEAN"); err != nil {
		return false, err
	}
	return v[0] != 0, nil
}

// readWrappedOctets decodes the single OCTET STRING inside an EXPLICIT wrapper.
func readWrappedOctets(inner cryptobyte.String, field string) ([]byte, error) {
	b, err := readOctetString(&inner, field)
	if err != nil {
		return nil, err
	}
	return b, end(inner, field, "OCTET STRING")
}

// readOctetString reads the next OCTET STRING of s and returns a copy of it.
func readOctetString(s *cryptobyte.String, field string) ([]byte, error) {
	var v cryptobyte.String
	if err := read(s, &v, cbasn1.OCTET_STRING, field, "OCTET STRING"); err != nil {
		return nil, err
	}
	return clone(v), nil
}

// readUint32 reads an INTEGER that must fit a TPM handle or command code.
// The DER rules of X.690 §8.3 apply: two's complement, minimal length.
func readUint32(s *cryptobyte.String, field string) (uint32, error) {
	var c cryptobyte.String
	if err := read(s, &c, cbasn1.INTEGER, field, "INTEGER"); err != nil {
		return 0, err
	}
	switch {
	case len(c) == 0:
		return 0, corrupt(field, "malformed INTEGER (no content)")
	case len(c) > 1 && (c[0] == 0 && c[1]&0x80 == 0 || c[0] == 0xff && c[1]&0x80 != 0):
		return 0, corrupt(field, "malformed INTEGER (not minimally encoded)")
	case c[0]&0x80 != 0:
		return 0, corrupt(field, "INTEGER is negative, out of range for 32 bits")
	}
	if c[0] == 0 {
		c = c[1:]
	}
	if len(c) > 4 {
		return 0, corrupt(field, "INTEGER out of range for 32 bits")
	}
	var v uint32
	for _, b := range c {
		v = v<<8 | uint32(b)
	}
	return v, nil
}

// clone copies b so the Key does not alias the caller's buffer; empty
// becomes nil so that decoded Keys compare equal across a round trip.
func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return bytes.Clone(b)
}
