package p11

import (
	"encoding/binary"
	"fmt"
)

// The C structures a caller hands the module by pointer, decoded from
// plain bytes: the c-shared layer only copies the caller's memory and
// calls these functions, which check every count, length and pointer
// before a value is read. Fuzzed by FuzzDecodeTemplate and
// FuzzDecodeMechanism.

// wordSize is the size of a CK_ULONG (C unsigned long) and of a pointer:
// on every Linux ABI, LP64 and ILP32 alike, both are the size of a Go
// uint.
const wordSize = 4 << (^uint(0) >> 63)

// CAttributeSize is sizeof(CK_ATTRIBUTE) and CMechanismSize is
// sizeof(CK_MECHANISM): each is a CK_ULONG, a pointer and a CK_ULONG
// (PKCS#11 2.40, 3.7 and 3.12), three words without padding. The module
// checks at compile time that its C headers agree.
const (
	CAttributeSize = 3 * wordSize
	CMechanismSize = 3 * wordSize
)

// Bounds on what the module reads from a caller: it cannot know the real
// size of a caller's buffer, but it never trusts an absurd length, and
// refuses one before any byte is read.
const (
	// MaxAttributes is the most attributes one template may have; the
	// token's objects have fewer than 60.
	MaxAttributes = 1 << 12
	// MaxValueLen is the longest attribute value read; the longest the
	// token holds is a certificate.
	MaxValueLen = 64 << 20
	// MaxParamLen is the longest mechanism parameter read; the only one
	// the module takes, CK_RSA_PKCS_PSS_PARAMS, is three words.
	MaxParamLen = 1 << 12
)

// CAttribute is one CK_ATTRIBUTE as the caller laid it out: Ptr is its
// pValue, Len its ulValueLen.
type CAttribute struct {
	Type uint
	Ptr  uintptr
	Len  uint
}

// Reader copies n bytes from address p of the caller's memory. The
// decoders call it only with p != 0 and n > 0 within their bounds.
type Reader func(p uintptr, n uint) []byte

// CheckTemplate checks a template's pointer and ulCount before anything
// is read: null says pTemplate is NULL.
func CheckTemplate(null bool, count uint) error {
	switch {
	case count > MaxAttributes:
		return rvErr(CKR_ARGUMENTS_BAD, "ulCount %d is more than %d, the most attributes the module takes in one template", count, MaxAttributes)
	case null && count > 0:
		return rvErr(CKR_ARGUMENTS_BAD, "pTemplate is NULL with ulCount %d", count)
	}
	return nil
}

// word reads the i-th word of b in the platform's byte order.
func word(b []byte, i int) uint {
	if wordSize == 8 {
		return uint(binary.NativeEndian.Uint64(b[i*8:]))
	}
	return uint(binary.NativeEndian.Uint32(b[i*4:]))
}

// DecodeAttributes decodes a copy of a caller's CK_ATTRIBUTE array:
// raw holds the structures one after the other, CAttributeSize bytes
// each. Nothing is read through their pointers.
func DecodeAttributes(raw []byte) ([]CAttribute, error) {
	if len(raw)%CAttributeSize != 0 {
		return nil, rvErr(CKR_GENERAL_ERROR, "template of %d bytes is not a whole number of %d-byte CK_ATTRIBUTEs", len(raw), CAttributeSize)
	}
	n := len(raw) / CAttributeSize
	if err := CheckTemplate(false, uint(n)); err != nil {
		return nil, err
	}
	out := make([]CAttribute, n)
	for i := range out {
		s := raw[i*CAttributeSize:]
		out[i] = CAttribute{Type: word(s, 0), Ptr: uintptr(word(s, 1)), Len: word(s, 2)}
	}
	return out, nil
}

// SearchTemplate builds C_FindObjectsInit's template. Every attribute is
// checked before any value is read: a length over MaxValueLen, or a NULL
// pValue with a length, refuses the template and reads nothing. A value
// of length 0 is empty, whatever its pointer.
func SearchTemplate(attrs []CAttribute, read Reader) ([]Attribute, error) {
	for i, a := range attrs {
		switch {
		case a.Len > MaxValueLen:
			return nil, rvErr(CKR_ARGUMENTS_BAD, "attribute %d (type 0x%X): ulValueLen %d is more than %d, the longest value the module reads", i, a.Type, a.Len, MaxValueLen)
		case a.Ptr == 0 && a.Len > 0:
			return nil, rvErr(CKR_ARGUMENTS_BAD, "attribute %d (type 0x%X): pValue is NULL with ulValueLen %d", i, a.Type, a.Len)
		}
	}
	out := make([]Attribute, len(attrs))
	for i, a := range attrs {
		v := []byte{}
		if a.Len > 0 {
			v = read(a.Ptr, a.Len)
			if uint(len(v)) != a.Len {
				return nil, rvErr(CKR_GENERAL_ERROR, "attribute %d: read %d bytes, want %d", i, len(v), a.Len)
			}
		}
		out[i] = Attribute{Type: a.Type, Value: v}
	}
	return out, nil
}

// AttrAnswer is what C_GetAttributeValue writes back into one
// CK_ATTRIBUTE: ulValueLen, and the value to copy to pValue (nil: none).
type AttrAnswer struct {
	Len   uint
	Value []byte
}

// AnswerAttributes applies the rules of C_GetAttributeValue (PKCS#11
// 2.40, 5.7) to the caller's template and the token's values: every
// attribute is processed, and the return value reports one of the
// problems met (a missing or sensitive attribute before a short buffer).
func AnswerAttributes(attrs []CAttribute, vals []AttrValue) ([]AttrAnswer, uint) {
	out := make([]AttrAnswer, len(attrs))
	rv := uint(CKR_OK)
	for i, a := range attrs {
		v := vals[i]
		switch {
		case v.RV != CKR_OK:
			out[i].Len = CK_UNAVAILABLE_INFORMATION
			rv = v.RV
		case a.Ptr == 0:
			out[i].Len = uint(len(v.Value))
		case a.Len < uint(len(v.Value)):
			out[i].Len = CK_UNAVAILABLE_INFORMATION
			if rv == CKR_OK {
				rv = CKR_BUFFER_TOO_SMALL
			}
		default:
			out[i] = AttrAnswer{Len: uint(len(v.Value)), Value: v.Value}
		}
	}
	return out, rv
}

// DecodeMechanism decodes a copy of a caller's CK_MECHANISM (raw is
// CMechanismSize bytes) and reads its parameter.
func DecodeMechanism(raw []byte, read Reader) (Mechanism, error) {
	if len(raw) != CMechanismSize {
		return Mechanism{}, rvErr(CKR_GENERAL_ERROR, "CK_MECHANISM of %d bytes, want %d", len(raw), CMechanismSize)
	}
	t, p, n := word(raw, 0), uintptr(word(raw, 1)), word(raw, 2)
	switch {
	case n > MaxParamLen:
		return Mechanism{}, rvErr(CKR_ARGUMENTS_BAD, "mechanism 0x%X: ulParameterLen %d is more than %d, the longest parameter the module reads", t, n, MaxParamLen)
	case n == 0:
		return Mechanism{Type: t, Param: []byte{}}, nil
	case p == 0:
		return Mechanism{}, rvErr(CKR_MECHANISM_PARAM_INVALID, "mechanism 0x%X: pParameter is NULL with ulParameterLen %d", t, n)
	}
	param := read(p, n)
	if uint(len(param)) != n {
		return Mechanism{}, &Error{RV: CKR_GENERAL_ERROR, Msg: fmt.Sprintf("mechanism parameter: read %d bytes, want %d", len(param), n)}
	}
	return Mechanism{Type: t, Param: param}, nil
}
