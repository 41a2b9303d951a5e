package p11

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// cStructs lays out CK_ATTRIBUTE (or CK_MECHANISM) structs as the C ABI
// of this platform has them: three native words each.
func cStructs(words ...uint) []byte {
	var b []byte
	for _, w := range words {
		if wordSize == 8 {
			b = binary.NativeEndian.AppendUint64(b, uint64(w))
		} else {
			b = binary.NativeEndian.AppendUint32(b, uint32(w))
		}
	}
	return b
}

// fakeMemory stands for the caller's memory: what is read at an address
// depends on the address, and every read is recorded.
type fakeMemory struct {
	reads []CAttribute
}

var bigValue []byte // shared by long reads, made once

func (m *fakeMemory) read(p uintptr, n uint) []byte {
	m.reads = append(m.reads, CAttribute{Ptr: p, Len: n})
	if n > 1<<12 {
		if bigValue == nil {
			bigValue = make([]byte, MaxValueLen)
		}
		return bigValue[:n]
	}
	return memAt(p, n)
}

func memAt(p uintptr, n uint) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(p>>(8*(i%8))) ^ byte(i)
	}
	return b
}

// refAttributes decodes CK_ATTRIBUTE structs another way: through
// binary.Read into fixed-size structs.
func refAttributes(t *testing.T, raw []byte) []CAttribute {
	var out []CAttribute
	r := bytes.NewReader(raw)
	for r.Len() > 0 {
		if wordSize == 8 {
			var w [3]uint64
			if err := binary.Read(r, binary.NativeEndian, &w); err != nil {
				t.Fatal(err)
			}
			out = append(out, CAttribute{uint(w[0]), uintptr(w[1]), uint(w[2])})
		} else {
			var w [3]uint32
			if err := binary.Read(r, binary.NativeEndian, &w); err != nil {
				t.Fatal(err)
			}
			out = append(out, CAttribute{uint(w[0]), uintptr(w[1]), uint(w[2])})
		}
	}
	return out
}

// FuzzDecodeTemplate: any bytes laid out as a CK_ATTRIBUTE array decode
// to the same attributes as a reference decoder; a search template is
// refused (CKR_ARGUMENTS_BAD, nothing read) exactly when an attribute has
// a NULL pValue with a length or a length over MaxValueLen; otherwise
// each value is read once, in order, from its own pointer and length, and
// a zero length reads nothing.
func FuzzDecodeTemplate(f *testing.F) {
	f.Add([]byte{})
	f.Add(cStructs(CKA_CLASS, 0x1000, uint(wordSize)))
	f.Add(cStructs(CKA_LABEL, 0x2000, 2, CKA_ID, 0, 0, CKA_SIGN, 0x3000, 1))
	f.Add(cStructs(CKA_LABEL, 0, 5))
	f.Add(cStructs(CKA_VALUE, 0x4000, MaxValueLen+1))
	f.Add(cStructs(CKA_VALUE, 0x4000, MaxValueLen))
	f.Add(cStructs(CKA_CLASS, 0x1000, 8)[:CAttributeSize-1])
	f.Fuzz(func(t *testing.T, raw []byte) {
		attrs, err := DecodeAttributes(raw)
		if len(raw)%CAttributeSize != 0 || len(raw)/CAttributeSize > MaxAttributes {
			if err == nil {
				t.Fatalf("%d bytes decoded as %d attributes", len(raw), len(attrs))
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		ref := refAttributes(t, raw)
		if len(ref) != len(attrs) {
			t.Fatalf("decoded %d attributes, want %d", len(attrs), len(ref))
		}
		for i := range ref {
			if attrs[i] != ref[i] {
				t.Fatalf("attribute %d: %+v, want %+v", i, attrs[i], ref[i])
			}
		}
		var mem fakeMemory
		tmpl, err := SearchTemplate(attrs, mem.read)
		bad := false
		for _, a := range ref {
			bad = bad || a.Len > MaxValueLen || (a.Ptr == 0 && a.Len > 0)
		}
		if bad {
			if RV(err) != CKR_ARGUMENTS_BAD || len(mem.reads) != 0 {
				t.Fatalf("bad template: %v (%s), %d reads", err, RVName(RV(err)), len(mem.reads))
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		var wantReads []CAttribute
		for i, a := range ref {
			if tmpl[i].Type != a.Type || uint(len(tmpl[i].Value)) != a.Len {
				t.Fatalf("attribute %d: type 0x%X, %d bytes; want 0x%X, %d", i, tmpl[i].Type, len(tmpl[i].Value), a.Type, a.Len)
			}
			if a.Len > 0 {
				wantReads = append(wantReads, CAttribute{Ptr: a.Ptr, Len: a.Len})
				if a.Len <= 1<<12 && !bytes.Equal(tmpl[i].Value, memAt(a.Ptr, a.Len)) {
					t.Fatalf("attribute %d: value not read from its own pointer", i)
				}
			}
		}
		if len(mem.reads) != len(wantReads) {
			t.Fatalf("reads %v, want %v", mem.reads, wantReads)
		}
		for i := range wantReads {
			if mem.reads[i] != wantReads[i] {
				t.Fatalf("reads %v, want %v", mem.reads, wantReads)
			}
		}
	})
}

// FuzzDecodeMechanism: a CK_MECHANISM decodes to its type and the
// parameter its pointer and length give; a NULL pParameter with a length
// is CKR_MECHANISM_PARAM_INVALID, a length over MaxParamLen
// CKR_ARGUMENTS_BAD, and neither reads anything.
func FuzzDecodeMechanism(f *testing.F) {
	f.Add(cStructs(CKM_ECDSA, 0, 0))
	f.Add(cStructs(CKM_RSA_PKCS_PSS, 0x5000, 3*uint(wordSize)))
	f.Add(cStructs(CKM_RSA_PKCS_PSS, 0, 3*uint(wordSize)))
	f.Add(cStructs(CKM_RSA_PKCS, 0x5000, MaxParamLen+1))
	f.Add(cStructs(CKM_RSA_PKCS, 0x5000, 0))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var mem fakeMemory
		mech, err := DecodeMechanism(raw, mem.read)
		if len(raw) != CMechanismSize {
			if err == nil || len(mem.reads) != 0 {
				t.Fatalf("%d bytes: %v, %d reads", len(raw), err, len(mem.reads))
			}
			return
		}
		ref := refAttributes(t, raw)[0]
		var want uint = CKR_OK
		switch {
		case ref.Len > MaxParamLen:
			want = CKR_ARGUMENTS_BAD
		case ref.Ptr == 0 && ref.Len > 0:
			want = CKR_MECHANISM_PARAM_INVALID
		}
		if RV(err) != want {
			t.Fatalf("%+v: %v (%s), want %s", ref, err, RVName(RV(err)), RVName(want))
		}
		if want != CKR_OK {
			if len(mem.reads) != 0 {
				t.Fatalf("refused, yet read %v", mem.reads)
			}
			return
		}
		if mech.Type != ref.Type || mech.Param == nil || !bytes.Equal(mech.Param, memAt(ref.Ptr, ref.Len)) {
			t.Fatalf("%+v: got type 0x%X, parameter %x", ref, mech.Type, mech.Param)
		}
		if n := len(mem.reads); (ref.Len == 0 && n != 0) || (ref.Len > 0 && n != 1) {
			t.Fatalf("%+v: %d reads", ref, n)
		}
	})
}

// TestAnswerAttributes: the rules of C_GetAttributeValue (PKCS#11 2.40,
// 5.7), attribute by attribute.
func TestAnswerAttributes(t *testing.T) {
	attrs := []CAttribute{
		{Type: CKA_CLASS, Ptr: 0x100, Len: 8}, // fits
		{Type: CKA_LABEL, Ptr: 0, Len: 0},     // length query
		{Type: CKA_ID, Ptr: 0x200, Len: 3},    // too small
		{Type: CKA_VALUE, Ptr: 0x300, Len: 9}, // sensitive
		{Type: CKA_SUBJECT, Ptr: 0x400, Len: 0},
	}
	vals := []AttrValue{
		{Value: []byte("12345678")}, {Value: []byte("label")}, {Value: []byte("1234")},
		{RV: CKR_ATTRIBUTE_SENSITIVE}, {Value: []byte{}},
	}
	got, rv := AnswerAttributes(attrs, vals)
	want := []AttrAnswer{
		{Len: 8, Value: []byte("12345678")}, {Len: 5}, {Len: CK_UNAVAILABLE_INFORMATION},
		{Len: CK_UNAVAILABLE_INFORMATION}, {Len: 0, Value: []byte{}},
	}
	if rv != CKR_ATTRIBUTE_SENSITIVE {
		t.Errorf("rv %s, want CKR_ATTRIBUTE_SENSITIVE (a problem other than a short buffer wins)", RVName(rv))
	}
	for i := range want {
		if got[i].Len != want[i].Len || !bytes.Equal(got[i].Value, want[i].Value) || (got[i].Value == nil) != (want[i].Value == nil) {
			t.Errorf("attribute %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if _, rv := AnswerAttributes(attrs[:3], vals[:3]); rv != CKR_BUFFER_TOO_SMALL {
		t.Errorf("short buffer alone: %s, want CKR_BUFFER_TOO_SMALL", RVName(rv))
	}
}

// TestCheckTemplate: the log line says which of pointer and count is wrong.
func TestCheckTemplate(t *testing.T) {
	for _, tc := range []struct {
		null  bool
		count uint
		want  string
	}{
		{true, 1, "pTemplate is NULL with ulCount 1"},
		{false, MaxAttributes + 1, "ulCount 4097 is more than 4096, the most attributes the module takes in one template"},
		{true, 1 << 20, "ulCount 1048576 is more than 4096"},
	} {
		err := CheckTemplate(tc.null, tc.count)
		if RV(err) != CKR_ARGUMENTS_BAD || !bytes.HasPrefix([]byte(Message(err)), []byte(tc.want)) {
			t.Errorf("CheckTemplate(%v, %d) = %v, want CKR_ARGUMENTS_BAD %q", tc.null, tc.count, err, tc.want)
		}
	}
	for _, n := range []uint{0, 1, MaxAttributes} {
		if err := CheckTemplate(n == 0, n); err != nil {
			t.Errorf("CheckTemplate(%v, %d): %v", n == 0, n, err)
		}
	}
}
