package keyfile

import (
	"bytes"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the files in testdata/")

// h decodes hex, ignoring spaces and newlines, so DER can be laid out by
// structure in the source.
func h(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

// tlv assembles a DER element by hand (definite length, short or long
// form). Tests use it instead of the package's encoder so that malformed
// inputs can be built and the encoder is checked against an independent one.
func tlv(tag byte, parts ...[]byte) []byte {
	body := bytes.Join(parts, nil)
	n := len(body)
	var hdr []byte
	switch {
	case n < 0x80:
		hdr = []byte{tag, byte(n)}
	case n < 0x100:
		hdr = []byte{tag, 0x81, byte(n)}
	default:
		hdr = []byte{tag, 0x82, byte(n >> 8), byte(n)}
	}
	return append(hdr, body...)
}

func pemOf(label string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: label, Bytes: der})
}

// The blobs are not real TPM structures: the package treats them as opaque
// TPM2Bs, so only the size prefix has to be right.
var (
	testPub  = h("0004 01020304")
	testPriv = h("0003 0a0b0c")
)

func minimalKey() *Key {
	return &Key{Type: OIDLoadableKey, Parent: ParentOwner, Public: testPub, Private: testPriv}
}

// fullKey sets every field. It is importable because only importable keys may
// carry a secret (spec §3.1, "secret").
func fullKey() *Key {
	return &Key{
		Type:      OIDImportableKey,
		EmptyAuth: true,
		Policy: []Policy{
			{CommandCode: 0x16b}, // TPM2_PolicyAuthValue, no body
			{CommandCode: 0x17f, CommandPolicy: h("000000000000")}, // TPM2_PolicyPCR
		},
		Secret:      h("0002 aabb"),
		AuthPolicy:  h("3019 3017 a005 0c03 70696e a10e 300c 300a a004 0202016b a102 0400"),
		Description: "alice@host",
		RSAParent:   true,
		Parent:      0x81000001,
		Public:      testPub,
		Private:     testPriv,
	}
}

// minimalDER and fullDER are assembled by hand from the ASN.1 in spec §3.1.
//
// `openssl asn1parse -inform DER -i` prints minimalDER as:
//
//	 0:d=0  hl=2 l=  29 cons: SEQUENCE
//	 2:d=1  hl=2 l=   6 prim:  OBJECT            :2.23.133.10.1.3
//	10:d=1  hl=2 l=   4 prim:  INTEGER           :40000001
//	16:d=1  hl=2 l=   6 prim:  OCTET STRING      [HEX DUMP]:000401020304
//	24:d=1  hl=2 l=   5 prim:  OCTET STRING      [HEX DUMP]:00030A0B0C
var minimalDER = h(`
	301d
	  0606 6781050a0103 ` /* type 2.23.133.10.1.3 (loadable) */ + `
	  0204 40000001     ` /* parent 0x40000001 */ + `
	  0406 000401020304 ` /* pubkey */ + `
	  0405 00030a0b0c   ` /* privkey */)

// `openssl asn1parse -inform DER -i` prints fullDER as:
//
//	  0:d=0  hl=2 l= 125 cons: SEQUENCE
//	  2:d=1  hl=2 l=   6 prim:  OBJECT            :2.23.133.10.1.4
//	 10:d=1  hl=2 l=   3 cons:  cont [ 0 ]
//	 12:d=2  hl=2 l=   1 prim:   BOOLEAN           :255
//	 15:d=1  hl=2 l=  32 cons:  cont [ 1 ]
//	 17:d=2  hl=2 l=  30 cons:   SEQUENCE
//	 19:d=3  hl=2 l=  10 cons:    SEQUENCE
//	 21:d=4  hl=2 l=   4 cons:     cont [ 0 ]
//	 23:d=5  hl=2 l=   2 prim:      INTEGER           :016B
//	 27:d=4  hl=2 l=   2 cons:     cont [ 1 ]
//	 29:d=5  hl=2 l=   0 prim:      OCTET STRING
//	 31:d=3  hl=2 l=  16 cons:    SEQUENCE
//	 33:d=4  hl=2 l=   4 cons:     cont [ 0 ]
//	 35:d=5  hl=2 l=   2 prim:      INTEGER           :017F
//	 39:d=4  hl=2 l=   8 cons:     cont [ 1 ]
//	 41:d=5  hl=2 l=   6 prim:      OCTET STRING      [HEX DUMP]:000000000000
//	 49:d=1  hl=2 l=   6 cons:  cont [ 2 ]
//	 51:d=2  hl=2 l=   4 prim:   OCTET STRING      [HEX DUMP]:0002AABB
//	 57:d=1  hl=2 l=  27 cons:  cont [ 3 ]
//	 59:d=2  hl=2 l=  25 cons:   SEQUENCE
//	 61:d=3  hl=2 l=  23 cons:    SEQUENCE
//	 63:d=4  hl=2 l=   5 cons:     cont [ 0 ]
//	 65:d=5  hl=2 l=   3 prim:      UTF8STRING        :pin
//	 70:d=4  hl=2 l=  14 cons:     cont [ 1 ]
//	 72:d=5  hl=2 l=  12 cons:      SEQUENCE
//	 74:d=6  hl=2 l=  10 cons:       SEQUENCE
//	 76:d=7  hl=2 l=   4 cons:        cont [ 0 ]
//	 78:d=8  hl=2 l=   2 prim:         INTEGER           :016B
//	 82:d=7  hl=2 l=   2 cons:        cont [ 1 ]
//	 84:d=8  hl=2 l=   0 prim:         OCTET STRING
//	 86:d=1  hl=2 l=  12 cons:  cont [ 4 ]
//	 88:d=2  hl=2 l=  10 prim:   UTF8STRING        :alice@host
//	100:d=1  hl=2 l=   3 cons:  cont [ 5 ]
//	102:d=2  hl=2 l=   1 prim:   BOOLEAN           :255
//	105:d=1  hl=2 l=   5 prim:  INTEGER           :81000001
//	112:d=1  hl=2 l=   6 prim:  OCTET STRING      [HEX DUMP]:000401020304
//	120:d=1  hl=2 l=   5 prim:  OCTET STRING      [HEX DUMP]:00030A0B0C
var fullDER = h(`
	307d
	  0606 6781050a0104                        ` /* type 2.23.133.10.1.4 (importable) */ + `
	  a003 0101ff                              ` /* [0] emptyAuth TRUE */ + `
	  a120 301e                                ` /* [1] policy: SEQUENCE OF */ + `
	    300a a004 0202016b a102 0400           ` /*   {0x16b, ""} */ + `
	    3010 a004 0202017f a108 0406 000000000000 ` /* {0x17f, 6 zero bytes} */ + `
	  a206 0404 0002aabb                       ` /* [2] secret */ + `
	  a31b 3019 3017 a005 0c03 70696e a10e 300c 300a a004 0202016b a102 0400 ` /* [3] authPolicy */ + `
	  a40c 0c0a 616c69636540686f7374           ` /* [4] description "alice@host" */ + `
	  a503 0101ff                              ` /* [5] rsaParent TRUE */ + `
	  0205 0081000001                          ` /* parent 0x81000001: leading 00 keeps it positive */ + `
	  0406 000401020304                        ` /* pubkey */ + `
	  0405 00030a0b0c                          ` /* privkey */)

// eccKey has blobs of realistic size, so the encoding needs long-form
// lengths: `openssl asn1parse -in testdata/ecc.pem` shows the SEQUENCE as
// "hl=3 l= 254" and privkey as "hl=3 l= 128" (header 30 81 fe, 04 81 80).
func eccKey() *Key {
	pub := h(`0058
		0023 000b 00040072 0000        ` /* ECC, SHA-256, sign|userWithAuth|..., no authPolicy */ + `
		0010 0018 000b 0003 0010       ` /* no symmetric, ECDSA-SHA256, NIST P-256, no KDF */)
	x := bytes.Repeat([]byte{0x11}, 32)
	y := bytes.Repeat([]byte{0x22}, 32)
	pub = append(pub, 0x00, 0x20)
	pub = append(pub, x...)
	pub = append(pub, 0x00, 0x20)
	pub = append(pub, y...)
	priv := append([]byte{0x00, 0x7e}, bytes.Repeat([]byte{0x5a}, 0x7e)...)
	return &Key{Type: OIDLoadableKey, EmptyAuth: true, Description: "ecc@host", Parent: ParentOwner, Public: pub, Private: priv}
}

func TestGoldenDER(t *testing.T) {
	tests := []struct {
		name string
		key  *Key
		der  []byte
	}{
		{"minimal", minimalKey(), minimalDER},
		{"full", fullKey(), fullDER},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.key.MarshalDER()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.der) {
				t.Errorf("MarshalDER:\n got %x\nwant %x", got, tt.der)
			}
			k, err := ParseDER(tt.der)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(k, tt.key) {
				t.Errorf("ParseDER:\n got %+v\nwant %+v", k, tt.key)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	sealed := minimalKey()
	sealed.Type = OIDSealedData
	transient := minimalKey()
	transient.Parent = 0x80000000
	tests := []struct {
		name string
		key  *Key
	}{
		{"minimal", minimalKey()},
		{"full", fullKey()},
		{"ecc", eccKey()},
		{"sealed", sealed},
		{"transient parent", transient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.key.MarshalPEM()
			if err != nil {
				t.Fatal(err)
			}
			k, err := Parse(p)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(k, tt.key) {
				t.Errorf("round trip:\n got %+v\nwant %+v", k, tt.key)
			}
		})
	}
}

// TestParseDoesNotAlias checks that a Key survives the caller wiping its
// input buffer (callers should, since it held key material).
func TestParseDoesNotAlias(t *testing.T) {
	der := bytes.Clone(fullDER)
	k, err := ParseDER(der)
	if err != nil {
		t.Fatal(err)
	}
	clear(der)
	if !reflect.DeepEqual(k, fullKey()) {
		t.Errorf("Key changed after clearing the input: %+v", k)
	}
}

// Fields used to hand-assemble variants of minimalDER.
var (
	fOID    = h("0606 6781050a0103")
	fParent = h("0204 40000001")
	fPub    = h("0406 000401020304")
	fPriv   = h("0405 00030a0b0c")
)

func key(fields ...[]byte) []byte { return tlv(0x30, fields...) }

// testFile is a file in testdata/. The files are generated from these
// definitions (go test ./keyfile -run TestTestdata -update) and checked in;
// the test fails if a file and its definition disagree.
type testFile struct {
	name    string
	data    func() []byte
	want    *Key   // for valid files
	wantErr error  // sentinel, for invalid files
	wantMsg string // exact error text, for invalid files
}

var testFiles = []testFile{
	{name: "minimal.pem", data: func() []byte { return pemOf(PEMType, minimalDER) }, want: minimalKey()},
	{name: "full.pem", data: func() []byte { return pemOf(PEMType, fullDER) }, want: fullKey()},
	{name: "ecc.pem", data: func() []byte { return must(eccKey().MarshalPEM()) }, want: eccKey()},

	{name: "bad-empty.pem", data: func() []byte { return nil },
		wantErr: ErrNotPEM, wantMsg: `keyfile: no PEM block (want "-----BEGIN TSS2 PRIVATE KEY-----")`},
	{name: "bad-garbage.pem", data: func() []byte { return []byte("ssh-ed25519 AAAA\x00\x01\xff not a key\n") },
		wantErr: ErrNotPEM, wantMsg: `keyfile: no PEM block (want "-----BEGIN TSS2 PRIVATE KEY-----")`},
	{name: "bad-truncated-pem.pem", data: func() []byte { p := pemOf(PEMType, fullDER); return p[:len(p)/2] },
		wantErr: ErrNotPEM, wantMsg: "keyfile: malformed PEM block (bad base64, or no matching END line)"},
	{name: "bad-truncated-der.pem", data: func() []byte { return pemOf(PEMType, fullDER[:60]) },
		wantErr: ErrCorrupt, wantMsg: "keyfile: TPMKey: malformed SEQUENCE (bad length or truncated)"},
	{name: "bad-wrong-label.pem", data: func() []byte { return pemOf("RSA PRIVATE KEY", minimalDER) },
		wantErr: ErrWrongLabel, wantMsg: `keyfile: PEM label is "RSA PRIVATE KEY", want "TSS2 PRIVATE KEY"`},
	{name: "bad-wrong-oid.pem", data: func() []byte {
		return pemOf(PEMType, key(h("0609 2a864886f70d010101"), fParent, fPub, fPriv)) // rsaEncryption
	}, wantErr: ErrUnsupportedType, wantMsg: "keyfile: type: unknown key type OID 1.2.840.113549.1.1.1"},
	{name: "bad-trailing-der.pem", data: func() []byte { return pemOf(PEMType, append(bytes.Clone(minimalDER), 0, 0)) },
		wantErr: ErrCorrupt, wantMsg: "keyfile: TPMKey: trailing data after the SEQUENCE"},
	{name: "bad-trailing-pem.pem", data: func() []byte {
		return append(pemOf(PEMType, minimalDER), pemOf(PEMType, fullDER)...)
	}, wantErr: ErrCorrupt, wantMsg: "keyfile: trailing data after the PEM block"},
	{name: "bad-tpm2b-size.pem", data: func() []byte {
		return pemOf(PEMType, key(fOID, fParent, h("0406 000501020304"), fPriv))
	}, wantErr: ErrCorrupt, wantMsg: "keyfile: pubkey: TPM2B size field says 5 bytes but 4 follow"},
	{name: "bad-empty-privkey.pem", data: func() []byte { return pemOf(PEMType, key(fOID, fParent, fPub, h("0400"))) },
		wantErr: ErrCorrupt, wantMsg: "keyfile: privkey: empty"},
	{name: "bad-pubkey-type.pem", data: func() []byte {
		return pemOf(PEMType, key(fOID, fParent, h("0201 05"), fPriv))
	}, wantErr: ErrCorrupt, wantMsg: "keyfile: pubkey: expected OCTET STRING"},
	{name: "bad-parent-range.pem", data: func() []byte {
		return pemOf(PEMType, key(fOID, h("0205 0100000000"), fPub, fPriv))
	}, wantErr: ErrCorrupt, wantMsg: "keyfile: parent: INTEGER out of range for 32 bits"},
	{name: "bad-unknown-field.pem", data: func() []byte {
		return pemOf(PEMType, key(fOID, h("a602 0400"), fParent, fPub, fPriv))
	}, wantErr: ErrUnsupportedField, wantMsg: "keyfile: [6]: optional field not supported by this version"},
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestTestdata(t *testing.T) {
	for _, tf := range testFiles {
		t.Run(tf.name, func(t *testing.T) {
			path := filepath.Join("testdata", tf.name)
			if *update {
				if err := os.WriteFile(path, tf.data(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// Pins the encoding: valid files must be exactly what
			// MarshalPEM writes today.
			if !bytes.Equal(data, tf.data()) {
				t.Fatalf("%s differs from its definition; rerun with -update if the change is intended", path)
			}
			k, err := Parse(data)
			if tf.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(k, tf.want) {
					t.Errorf("got %+v\nwant %+v", k, tf.want)
				}
				if p := must(k.MarshalPEM()); !bytes.Equal(p, data) {
					t.Errorf("MarshalPEM does not reproduce %s", path)
				}
				return
			}
			if !errors.Is(err, tf.wantErr) {
				t.Fatalf("err = %v, want %v", err, tf.wantErr)
			}
			if err.Error() != tf.wantMsg {
				t.Errorf("err = %q\nwant  %q", err, tf.wantMsg)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("err is %T, want *Error", err)
			}
		})
	}
}

// TestParseDER covers decoder rules not worth a testdata file each.
func TestParseDER(t *testing.T) {
	withEmptyAuth := minimalKey()
	withEmptyAuth.EmptyAuth = true
	tests := []struct {
		name    string
		der     []byte
		want    *Key   // when valid
		wantErr error  // when invalid
		wantMsg string // substring of the error
	}{
		{name: "explicit FALSE emptyAuth equals absent",
			der: key(fOID, h("a003 010100"), fParent, fPub, fPriv), want: minimalKey()},
		{name: "BER TRUE 0x01 accepted",
			der: key(fOID, h("a003 010101"), fParent, fPub, fPriv), want: withEmptyAuth},
		{name: "empty policy sequence decodes to nil",
			der: key(fOID, h("a102 3000"), fParent, fPub, fPriv), want: minimalKey()},
		{name: "empty description decodes to empty",
			der: key(fOID, h("a402 0c00"), fParent, fPub, fPriv), want: minimalKey()},

		{name: "not a SEQUENCE", der: h("0400"), wantErr: ErrCorrupt, wantMsg: "TPMKey: expected SEQUENCE"},
		{name: "empty input", der: nil, wantErr: ErrCorrupt, wantMsg: "TPMKey: missing SEQUENCE"},
		{name: "type not an OID", der: key(fParent, fPub, fPriv), wantErr: ErrCorrupt, wantMsg: "type: expected OBJECT IDENTIFIER"},
		{name: "legacy OID", der: key(h("0605 6781050a02"), fParent, fPub, fPriv),
			wantErr: ErrUnsupportedType, wantMsg: "type: unknown key type OID 2.23.133.10.2"},
		{name: "missing privkey", der: key(fOID, fParent, fPub), wantErr: ErrCorrupt, wantMsg: "privkey: missing OCTET STRING"},
		{name: "data after privkey", der: key(fOID, fParent, fPub, fPriv, h("0500")),
			wantErr: ErrCorrupt, wantMsg: "TPMKey: unexpected data after privkey"},
		{name: "parent negative", der: key(fOID, h("0201 ff"), fPub, fPriv),
			wantErr: ErrCorrupt, wantMsg: "parent: INTEGER is negative"},
		{name: "parent not minimal", der: key(fOID, h("0205 0040000001"), fPub, fPriv),
			wantErr: ErrCorrupt, wantMsg: "parent: malformed INTEGER (not minimally encoded)"},
		{name: "parent bad handle type", der: key(fOID, h("0204 01000001"), fPub, fPriv),
			wantErr: ErrCorrupt, wantMsg: "parent: handle 0x01000001 is not permanent"},
		{name: "parent zero", der: key(fOID, h("0201 00"), fPub, fPriv),
			wantErr: ErrCorrupt, wantMsg: "parent: handle 0x00000000"},
		{name: "repeated emptyAuth", der: key(fOID, h("a003 0101ff a003 0101ff"), fParent, fPub, fPriv),
			wantErr: ErrCorrupt, wantMsg: "[0]: optional field repeated or out of order"},
		{name: "fields out of order", der: key(fOID, h("a402 0c00 a003 0101ff"), fParent, fPub, fPriv),
			wantErr: ErrCorrupt, wantMsg: "[0]: optional field repeated or out of order"},
		{name: "emptyAuth two bytes", der: key(fOID, h("a004 0102ffff"), fParent, fPub, fPriv),
			wantErr: ErrCorrupt, wantMsg: "emptyAuth: BOOLEAN must be 1 byte, not 2"},
		{name: "emptyAuth not BOOLEAN", der: key(fOID, h("a003 020101"), fParent, fPub, fPriv),
			wantErr: ErrCorrupt, wantMsg: "emptyAuth: expected BOOLEAN"},
		{name: "rsaParent extra element", der: key(fOID, h("a505 0101ff 0500"), fParent, fPub, fPriv),
			wantErr: ErrCorrupt, wantMsg: "rsaParent: unexpected data after BOOLEAN"},
		{name: "description not UTF-8", der: key(fOID, h("a404 0c02 c328"), fParent, fPub, fPriv),
			wantErr: ErrCorrupt, wantMsg: "description: not valid UTF-8"},
		{name: "description wrong string type", der: key(fOID, h("a403 1601 41"), fParent, fPub, fPriv),
			wantErr: ErrCorrupt, wantMsg: "description: expected UTF8String"},
		{name: "secret on loadable key", der: key(fOID, h("a206 0404 0002aabb"), fParent, fPub, fPriv),
			wantErr: ErrCorrupt, wantMsg: "secret: only importable keys may have one"},
		{name: "importable without secret", der: key(h("0606 6781050a0104"), fParent, fPub, fPriv),
			wantErr: ErrCorrupt, wantMsg: "secret: required for an importable key"},
		{name: "policy missing commandPolicy", der: key(fOID, h("a10a 3008 3006 a004 0202016b"), fParent, fPub, fPriv),
			wantErr: ErrCorrupt, wantMsg: "policy[0].commandPolicy: missing [1]"},
		{name: "policy code too big",
			der:     key(fOID, tlv(0xa1, tlv(0x30, tlv(0x30, tlv(0xa0, h("0205 0100000000")), h("a102 0400")))), fParent, fPub, fPriv),
			wantErr: ErrCorrupt, wantMsg: "policy[0].commandCode: INTEGER out of range for 32 bits"},
		{name: "authPolicy not a SEQUENCE", der: key(fOID, h("a302 0400"), fParent, fPub, fPriv),
			wantErr: ErrCorrupt, wantMsg: "authPolicy: expected SEQUENCE OF TPMAuthPolicy"},
		{name: "authPolicy element not a SEQUENCE", der: key(fOID, h("a304 3002 0400"), fParent, fPub, fPriv),
			wantErr: ErrCorrupt, wantMsg: "authPolicy[0]: expected TPMAuthPolicy SEQUENCE"},
		{name: "pubkey one byte", der: key(fOID, fParent, h("0401 00"), fPriv),
			wantErr: ErrCorrupt, wantMsg: "pubkey: TPM2B shorter than its 2-byte size field"},
		{name: "pubkey size zero", der: key(fOID, fParent, h("0402 0000"), fPriv),
			wantErr: ErrCorrupt, wantMsg: "pubkey: empty (TPM2B size 0)"},
		{name: "length overruns input", der: h("3064 0606 6781050a0103"),
			wantErr: ErrCorrupt, wantMsg: "TPMKey: malformed SEQUENCE (bad length or truncated)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseDER(tt.der)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(k, tt.want) {
					t.Errorf("got %+v\nwant %+v", k, tt.want)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %q, want it to contain %q", err, tt.wantMsg)
			}
		})
	}
}

// TestErrorsHideContents checks that an error about one field does not
// quote other parts of the file.
func TestErrorsHideContents(t *testing.T) {
	k := fullKey()
	k.Description = "TOPSECRET"
	der := must(k.MarshalDER())
	der[len(der)-4] = 0x09 // privkey TPM2B size 0x0009 instead of 0x0003
	_, err := Parse(pemOf(PEMType, der))
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
	for _, leak := range []string{"TOPSECRET", "aabb", "0a0b0c", "AAQBAgME"} {
		if strings.Contains(strings.ToLower(err.Error()), strings.ToLower(leak)) {
			t.Errorf("error %q contains file contents %q", err, leak)
		}
	}
}

func TestMarshalRejects(t *testing.T) {
	mod := func(f func(k *Key)) *Key { k := minimalKey(); f(k); return k }
	tests := []struct {
		name    string
		key     *Key
		wantErr error
		wantMsg string
	}{
		{"nil", nil, ErrCorrupt, "keyfile: nil Key"},
		{"no type", mod(func(k *Key) { k.Type = nil }), ErrUnsupportedType, "keyfile: type: key type OID not set"},
		{"unknown type", mod(func(k *Key) { k.Type = asn1.ObjectIdentifier{1, 2, 3} }), ErrUnsupportedType, "keyfile: type: unknown key type OID 1.2.3"},
		{"zero parent", mod(func(k *Key) { k.Parent = 0 }), ErrCorrupt, "keyfile: parent: handle 0x00000000 is not permanent (0x40...), transient (0x80...) or persistent (0x81...)"},
		{"no public", mod(func(k *Key) { k.Public = nil }), ErrCorrupt, "keyfile: pubkey: empty"},
		{"bad private", mod(func(k *Key) { k.Private = h("0001") }), ErrCorrupt, "keyfile: privkey: TPM2B size field says 1 bytes but 0 follow"},
		{"bad secret", mod(func(k *Key) { k.Type = OIDImportableKey; k.Secret = h("00") }), ErrCorrupt, "keyfile: secret: TPM2B shorter than its 2-byte size field"},
		{"bad authPolicy", mod(func(k *Key) { k.AuthPolicy = h("3000 3000") }), ErrCorrupt, "keyfile: authPolicy: unexpected data after SEQUENCE OF TPMAuthPolicy"},
		{"bad description", mod(func(k *Key) { k.Description = "\xff" }), ErrCorrupt, "keyfile: description: not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.key.MarshalPEM()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err.Error() != tt.wantMsg {
				t.Errorf("err = %q\nwant  %q", err, tt.wantMsg)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	k, err := Load(filepath.Join("testdata", "full.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(k, fullKey()) {
		t.Errorf("Load: got %+v", k)
	}

	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, maxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path    string
		wantErr error
		wantMsg string
	}{
		{filepath.Join(dir, "missing"), fs.ErrNotExist,
			`"` + filepath.Join(dir, "missing") + `": no such file or directory`},
		{dir, nil, `"` + dir + `": is a directory`},
		{big, ErrCorrupt, `"` + big + `": file larger than 1 MiB, not a key file`},
		{"testdata/bad-tpm2b-size.pem", ErrCorrupt,
			`"testdata/bad-tpm2b-size.pem": pubkey: TPM2B size field says 5 bytes but 4 follow`},
		{"testdata/bad-wrong-label.pem", ErrWrongLabel,
			`"testdata/bad-wrong-label.pem": PEM label is "RSA PRIVATE KEY", want "TSS2 PRIVATE KEY"`},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.path), func(t *testing.T) {
			_, err := Load(tt.path)
			if err == nil {
				t.Fatal("no error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if err.Error() != tt.wantMsg {
				t.Errorf("err = %q\nwant  %q", err, tt.wantMsg)
			}
		})
	}
}

// FuzzParse checks that no input panics and that whatever parses is
// re-encoded and re-parsed to the same Key. Seeds are the testdata files and
// their DER.
func FuzzParse(f *testing.F) {
	paths, err := filepath.Glob(filepath.Join("testdata", "*.pem"))
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		if b, _ := pem.Decode(data); b != nil {
			f.Add(b.Bytes)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, parse := range []func([]byte) (*Key, error){Parse, ParseDER} {
			k, err := parse(data)
			if err != nil {
				var e *Error
				if !errors.As(err, &e) {
					t.Fatalf("error %v is %T, want *Error", err, err)
				}
				continue
			}
			der, err := k.MarshalDER()
			if err != nil {
				t.Fatalf("parsed key does not re-encode: %v", err)
			}
			k2, err := ParseDER(der)
			if err != nil {
				t.Fatalf("re-encoded key does not parse: %v", err)
			}
			if !reflect.DeepEqual(k, k2) {
				t.Fatalf("round trip changed the key:\n got %+v\nwant %+v", k2, k)
			}
			// The encoding is canonical: a second pass is byte-identical.
			if der2 := must(k2.MarshalDER()); !bytes.Equal(der, der2) {
				t.Fatalf("re-encoding is not stable")
			}
			k3, err := Parse(must(k.MarshalPEM()))
			if err != nil || !reflect.DeepEqual(k, k3) {
				t.Fatalf("PEM round trip: %v", err)
			}
		}
	})
}
