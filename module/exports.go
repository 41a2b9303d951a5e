package main

// #include "pkcs11.h"
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/p11"
)

// mod is the module's one state.
var mod = p11.New()

// Bounds on lengths the caller gives with its pointers: the module cannot
// check the real size of a caller's buffer, but it never trusts an absurd
// one. Larger values are refused before any byte is read (the bounds of
// templates and mechanism parameters are in package p11).
const (
	maxDataLen = 64 << 20
	maxPINLen  = 1 << 10
	// maxSignatureLen is far above the longest signature a TPM makes
	// (512 bytes, RSA-4096).
	maxSignatureLen = 1 << 16
	// maxRandomLen bounds C_GenerateRandom: the TPM gives at most 32
	// bytes per TPM2_GetRandom, so 1 MiB is already 32768 TPM commands.
	maxRandomLen = 1 << 20
)

// The structures package p11 decodes from bytes must be laid out as the
// C compiler lays them out: a mismatch stops the build (a negative array
// length) instead of misreading a caller's memory.
var (
	_ [C.sizeof_CK_ATTRIBUTE - p11.CAttributeSize]struct{}
	_ [p11.CAttributeSize - C.sizeof_CK_ATTRIBUTE]struct{}
	_ [C.sizeof_CK_MECHANISM - p11.CMechanismSize]struct{}
	_ [p11.CMechanismSize - C.sizeof_CK_MECHANISM]struct{}
)

// guard turns a Go panic into CKR_GENERAL_ERROR and one log line (see
// p11.Module.Panicked): a panic must never unwind into the C caller.
// recover only works in the deferred function itself, so it stays here.
func guard(fn string, rv *C.CK_RV) {
	if r := recover(); r != nil {
		*rv = C.CK_RV(mod.Panicked(fn, r))
	}
}

// ret maps err to a CK_RV and logs it: one line naming the function, the
// code and the cause.
func ret(fn string, err error) C.CK_RV {
	rv := p11.RV(err)
	switch {
	case err == nil:
		mod.Log().Debugf("%s: CKR_OK", fn)
	case expected[rv] || p11.Logged(err):
		mod.Log().Debugf("%s: %s: %s", fn, p11.RVName(rv), p11.Message(err))
	default:
		mod.Log().Errorf("%s: %s: %s", fn, p11.RVName(rv), p11.Message(err))
	}
	return C.CK_RV(rv)
}

// expected are answers that callers ask for on purpose (probing what a
// token can do); they are logged only with debug on.
var expected = map[uint]bool{
	p11.CKR_FUNCTION_NOT_SUPPORTED:    true,
	p11.CKR_RANDOM_SEED_NOT_SUPPORTED: true,
	p11.CKR_FUNCTION_NOT_PARALLEL:     true,
	p11.CKR_NO_EVENT:                  true,
	p11.CKR_MECHANISM_INVALID:         true,
}

func bad(fn, format string, args ...any) C.CK_RV {
	return ret(fn, &p11.Error{RV: p11.CKR_ARGUMENTS_BAD, Msg: fmt.Sprintf(format, args...)})
}

// pad copies s into a fixed-size CK_UTF8CHAR field, space-padded as
// PKCS#11 requires (no NUL terminator; see p11.Pad).
func pad(dst []C.CK_UTF8CHAR, s string) {
	for i, b := range p11.Pad(s, len(dst)) {
		dst[i] = C.CK_UTF8CHAR(b)
	}
}

// padChar is pad for CK_CHAR fields.
func padChar(dst []C.CK_CHAR, s string) {
	for i, b := range p11.Pad(s, len(dst)) {
		dst[i] = C.CK_CHAR(b)
	}
}

func version(v [2]byte) C.CK_VERSION {
	return C.CK_VERSION{major: C.CK_BYTE(v[0]), minor: C.CK_BYTE(v[1])}
}

// bytesIn copies a caller's buffer; a NULL pointer is only fine with a
// zero length.
func bytesIn(p C.CK_BYTE_PTR, n C.CK_ULONG) ([]byte, bool) {
	if n == 0 {
		return []byte{}, true
	}
	if p == nil {
		return nil, false
	}
	return C.GoBytes(unsafe.Pointer(p), C.int(n)), true
}

// putList applies the two-call rule to a CK_ULONG array: NULL list gives
// the count; a short one CKR_BUFFER_TOO_SMALL with the count.
func putList(fn string, vals []uint, list *C.CK_ULONG, count C.CK_ULONG_PTR) C.CK_RV {
	n := C.CK_ULONG(len(vals))
	if list == nil {
		*count = n
		return C.CKR_OK
	}
	if *count < n {
		*count = n
		return C.CK_RV(p11.CKR_BUFFER_TOO_SMALL)
	}
	out := unsafe.Slice(list, n)
	for i, v := range vals {
		out[i] = C.CK_ULONG(v)
	}
	*count = n
	return C.CKR_OK
}

// putSig applies the two-call rule to a signature: a NULL buffer asks
// only for the length (the operation stays active), a short buffer gets
// CKR_BUFFER_TOO_SMALL (the operation stays active), else produce runs.
func putSig(fn string, h C.CK_SESSION_HANDLE, out C.CK_BYTE_PTR, outLen C.CK_ULONG_PTR, produce func() ([]byte, error)) C.CK_RV {
	if outLen == nil {
		return bad(fn, "pulSignatureLen is NULL")
	}
	need, err := mod.SignLength(uint(h), fn == "C_Sign")
	if err != nil {
		return ret(fn, err)
	}
	if out == nil {
		*outLen = C.CK_ULONG(need)
		return C.CKR_OK
	}
	if *outLen < C.CK_ULONG(need) {
		*outLen = C.CK_ULONG(need)
		return C.CK_RV(p11.CKR_BUFFER_TOO_SMALL)
	}
	sig, err := produce()
	if err != nil {
		return ret(fn, err)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(out)), len(sig)), sig)
	*outLen = C.CK_ULONG(len(sig))
	return ret(fn, nil)
}

// cPointer turns an address read from the caller's memory back into a
// pointer (it points to C memory, never to Go's).
func cPointer(p uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }

// readC is the p11.Reader of the caller's memory.
func readC(p uintptr, n uint) []byte { return C.GoBytes(cPointer(p), C.int(n)) }

// mechanism copies a CK_MECHANISM; p11.DecodeMechanism checks it and
// reads its parameter.
func mechanism(fn string, m C.CK_MECHANISM_PTR) (p11.Mechanism, C.CK_RV) {
	if m == nil {
		return p11.Mechanism{}, bad(fn, "pMechanism is NULL")
	}
	mech, err := p11.DecodeMechanism(C.GoBytes(unsafe.Pointer(m), C.sizeof_CK_MECHANISM), readC)
	if err != nil {
		return p11.Mechanism{}, ret(fn, err)
	}
	return mech, C.CKR_OK
}

// template copies a caller's CK_ATTRIBUTE array once p11 has checked its
// pointer and count; p11 decodes it.
func template(p C.CK_ATTRIBUTE_PTR, n C.CK_ULONG) ([]p11.CAttribute, error) {
	if err := p11.CheckTemplate(p == nil, uint(n)); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	return p11.DecodeAttributes(C.GoBytes(unsafe.Pointer(p), C.int(n*C.sizeof_CK_ATTRIBUTE)))
}

//export goInitialize
func goInitialize(pInitArgs C.CK_VOID_PTR) (rv C.CK_RV) {
	defer guard("C_Initialize", &rv)
	var args p11.InitArgs
	if pInitArgs != nil {
		a := (*C.CK_C_INITIALIZE_ARGS)(pInitArgs)
		for _, f := range []unsafe.Pointer{unsafe.Pointer(a.CreateMutex), unsafe.Pointer(a.DestroyMutex),
			unsafe.Pointer(a.LockMutex), unsafe.Pointer(a.UnlockMutex)} {
			if f != nil {
				args.Mutexes++
			}
		}
		args.Flags = uint(a.flags)
		args.Reserved = a.pReserved != nil
	}
	return ret("C_Initialize", mod.Initialize(args))
}

//export goFinalize
func goFinalize(pReserved C.CK_VOID_PTR) (rv C.CK_RV) {
	defer guard("C_Finalize", &rv)
	if pReserved != nil {
		return bad("C_Finalize", "pReserved must be NULL")
	}
	return ret("C_Finalize", mod.Finalize())
}

//export goGetInfo
func goGetInfo(p C.CK_INFO_PTR) (rv C.CK_RV) {
	defer guard("C_GetInfo", &rv)
	if p == nil {
		return bad("C_GetInfo", "pInfo is NULL")
	}
	info, err := mod.GetInfo()
	if err != nil {
		return ret("C_GetInfo", err)
	}
	p.cryptokiVersion = version([2]byte{2, 40})
	pad(p.manufacturerID[:], info.Manufacturer)
	p.flags = 0
	pad(p.libraryDescription[:], info.Description)
	p.libraryVersion = version(info.Version)
	return ret("C_GetInfo", nil)
}

//export goGetSlotList
func goGetSlotList(present C.CK_BBOOL, list C.CK_SLOT_ID_PTR, count C.CK_ULONG_PTR) (rv C.CK_RV) {
	defer guard("C_GetSlotList", &rv)
	if count == nil {
		return bad("C_GetSlotList", "pulCount is NULL")
	}
	slots, err := mod.SlotList(present != 0)
	if err != nil {
		return ret("C_GetSlotList", err)
	}
	return putList("C_GetSlotList", slots, (*C.CK_ULONG)(list), count)
}

//export goGetSlotInfo
func goGetSlotInfo(slot C.CK_SLOT_ID, p C.CK_SLOT_INFO_PTR) (rv C.CK_RV) {
	defer guard("C_GetSlotInfo", &rv)
	if p == nil {
		return bad("C_GetSlotInfo", "pInfo is NULL")
	}
	si, err := mod.GetSlotInfo(uint(slot))
	if err != nil {
		return ret("C_GetSlotInfo", err)
	}
	pad(p.slotDescription[:], si.Description)
	pad(p.manufacturerID[:], si.Manufacturer)
	p.flags = C.CK_FLAGS(si.Flags)
	p.hardwareVersion = version([2]byte{2, 0})
	p.firmwareVersion = version([2]byte{2, 0})
	return ret("C_GetSlotInfo", nil)
}

//export goGetTokenInfo
func goGetTokenInfo(slot C.CK_SLOT_ID, p C.CK_TOKEN_INFO_PTR) (rv C.CK_RV) {
	defer guard("C_GetTokenInfo", &rv)
	if p == nil {
		return bad("C_GetTokenInfo", "pInfo is NULL")
	}
	ti, err := mod.GetTokenInfo(uint(slot))
	if err != nil {
		return ret("C_GetTokenInfo", err)
	}
	pad(p.label[:], ti.Label)
	pad(p.manufacturerID[:], ti.Manufacturer)
	pad(p.model[:], ti.Model)
	padChar(p.serialNumber[:], ti.Serial)
	p.flags = C.CK_FLAGS(ti.Flags)
	p.ulMaxSessionCount = p11.CK_EFFECTIVELY_INFINITE
	p.ulSessionCount = C.CK_ULONG(ti.Sessions)
	p.ulMaxRwSessionCount = p11.CK_EFFECTIVELY_INFINITE
	p.ulRwSessionCount = C.CK_ULONG(ti.RWSessions)
	p.ulMaxPinLen = C.CK_ULONG(ti.MaxPIN)
	p.ulMinPinLen = C.CK_ULONG(ti.MinPIN)
	unavailable := C.CK_ULONG(p11.CK_UNAVAILABLE_INFORMATION)
	p.ulTotalPublicMemory, p.ulFreePublicMemory = unavailable, unavailable
	p.ulTotalPrivateMemory, p.ulFreePrivateMemory = unavailable, unavailable
	p.hardwareVersion = version([2]byte{2, 0})
	p.firmwareVersion = version(ti.Firmware)
	padChar(p.utcTime[:], "")
	return ret("C_GetTokenInfo", nil)
}

//export goGetMechanismList
func goGetMechanismList(slot C.CK_SLOT_ID, list C.CK_MECHANISM_TYPE_PTR, count C.CK_ULONG_PTR) (rv C.CK_RV) {
	defer guard("C_GetMechanismList", &rv)
	if count == nil {
		return bad("C_GetMechanismList", "pulCount is NULL")
	}
	ms, err := mod.MechanismList(uint(slot))
	if err != nil {
		return ret("C_GetMechanismList", err)
	}
	return putList("C_GetMechanismList", ms, (*C.CK_ULONG)(list), count)
}

//export goGetMechanismInfo
func goGetMechanismInfo(slot C.CK_SLOT_ID, t C.CK_MECHANISM_TYPE, p C.CK_MECHANISM_INFO_PTR) (rv C.CK_RV) {
	defer guard("C_GetMechanismInfo", &rv)
	if p == nil {
		return bad("C_GetMechanismInfo", "pInfo is NULL")
	}
	mi, err := mod.GetMechanismInfo(uint(slot), uint(t))
	if err != nil {
		return ret("C_GetMechanismInfo", err)
	}
	p.ulMinKeySize, p.ulMaxKeySize, p.flags = C.CK_ULONG(mi.MinKeySize), C.CK_ULONG(mi.MaxKeySize), C.CK_FLAGS(mi.Flags)
	return ret("C_GetMechanismInfo", nil)
}

//export goOpenSession
func goOpenSession(slot C.CK_SLOT_ID, flags C.CK_FLAGS, ph C.CK_SESSION_HANDLE_PTR) (rv C.CK_RV) {
	defer guard("C_OpenSession", &rv)
	if ph == nil {
		return bad("C_OpenSession", "phSession is NULL")
	}
	h, err := mod.OpenSession(uint(slot), uint(flags))
	if err != nil {
		return ret("C_OpenSession", err)
	}
	*ph = C.CK_SESSION_HANDLE(h)
	return ret("C_OpenSession", nil)
}

//export goCloseSession
func goCloseSession(h C.CK_SESSION_HANDLE) (rv C.CK_RV) {
	defer guard("C_CloseSession", &rv)
	return ret("C_CloseSession", mod.CloseSession(uint(h)))
}

//export goCloseAllSessions
func goCloseAllSessions(slot C.CK_SLOT_ID) (rv C.CK_RV) {
	defer guard("C_CloseAllSessions", &rv)
	return ret("C_CloseAllSessions", mod.CloseAllSessions(uint(slot)))
}

//export goGetSessionInfo
func goGetSessionInfo(h C.CK_SESSION_HANDLE, p C.CK_SESSION_INFO_PTR) (rv C.CK_RV) {
	defer guard("C_GetSessionInfo", &rv)
	if p == nil {
		return bad("C_GetSessionInfo", "pInfo is NULL")
	}
	si, err := mod.GetSessionInfo(uint(h))
	if err != nil {
		return ret("C_GetSessionInfo", err)
	}
	p.slotID, p.state, p.flags, p.ulDeviceError = C.CK_SLOT_ID(si.Slot), C.CK_STATE(si.State), C.CK_FLAGS(si.Flags), 0
	return ret("C_GetSessionInfo", nil)
}

//export goLogin
func goLogin(h C.CK_SESSION_HANDLE, user C.CK_USER_TYPE, pin C.CK_UTF8CHAR_PTR, n C.CK_ULONG) (rv C.CK_RV) {
	defer guard("C_Login", &rv)
	if n > maxPINLen {
		return ret("C_Login", &p11.Error{RV: p11.CKR_PIN_LEN_RANGE, Msg: "PIN too long"})
	}
	b, ok := bytesIn(C.CK_BYTE_PTR(pin), n)
	if !ok {
		return bad("C_Login", "pPin is NULL with a non-zero length (protected authentication paths are not supported)")
	}
	defer clear(b)
	return ret("C_Login", mod.Login(uint(h), uint(user), b))
}

//export goLogout
func goLogout(h C.CK_SESSION_HANDLE) (rv C.CK_RV) {
	defer guard("C_Logout", &rv)
	return ret("C_Logout", mod.Logout(uint(h)))
}

//export goGetObjectSize
func goGetObjectSize(h C.CK_SESSION_HANDLE, o C.CK_OBJECT_HANDLE, n C.CK_ULONG_PTR) (rv C.CK_RV) {
	defer guard("C_GetObjectSize", &rv)
	if n == nil {
		return bad("C_GetObjectSize", "pulSize is NULL")
	}
	size, err := mod.ObjectSize(uint(h), uint(o))
	if err != nil {
		return ret("C_GetObjectSize", err)
	}
	*n = C.CK_ULONG(size)
	return ret("C_GetObjectSize", nil)
}

//export goGetAttributeValue
func goGetAttributeValue(h C.CK_SESSION_HANDLE, o C.CK_OBJECT_HANDLE, p C.CK_ATTRIBUTE_PTR, n C.CK_ULONG) (rv C.CK_RV) {
	defer guard("C_GetAttributeValue", &rv)
	attrs, err := template(p, n)
	if err != nil {
		return ret("C_GetAttributeValue", err)
	}
	types := make([]uint, len(attrs))
	for i, a := range attrs {
		types[i] = a.Type
	}
	vals, err := mod.GetAttributeValue(uint(h), uint(o), types)
	if err != nil {
		return ret("C_GetAttributeValue", err)
	}
	answers, result := p11.AnswerAttributes(attrs, vals)
	out := unsafe.Slice(p, len(attrs))
	for i, a := range answers {
		if a.Value != nil {
			copy(unsafe.Slice((*byte)(cPointer(attrs[i].Ptr)), len(a.Value)), a.Value)
		}
		out[i].ulValueLen = C.CK_ULONG(a.Len)
	}
	if result != p11.CKR_OK {
		// Expected answers while probing attributes: debug only.
		mod.Log().Debugf("C_GetAttributeValue: %s", p11.RVName(result))
	}
	return C.CK_RV(result)
}

//export goFindObjectsInit
func goFindObjectsInit(h C.CK_SESSION_HANDLE, p C.CK_ATTRIBUTE_PTR, n C.CK_ULONG) (rv C.CK_RV) {
	defer guard("C_FindObjectsInit", &rv)
	attrs, err := template(p, n)
	if err != nil {
		return ret("C_FindObjectsInit", err)
	}
	tmpl, err := p11.SearchTemplate(attrs, readC)
	if err != nil {
		return ret("C_FindObjectsInit", err)
	}
	return ret("C_FindObjectsInit", mod.FindObjectsInit(uint(h), tmpl))
}

//export goFindObjects
func goFindObjects(h C.CK_SESSION_HANDLE, p C.CK_OBJECT_HANDLE_PTR, max C.CK_ULONG, n C.CK_ULONG_PTR) (rv C.CK_RV) {
	defer guard("C_FindObjects", &rv)
	if n == nil || (p == nil && max > 0) {
		return bad("C_FindObjects", "phObject or pulObjectCount is NULL")
	}
	found, err := mod.FindObjects(uint(h), uint(max))
	if err != nil {
		return ret("C_FindObjects", err)
	}
	if len(found) > 0 {
		out := unsafe.Slice(p, len(found))
		for i, o := range found {
			out[i] = C.CK_OBJECT_HANDLE(o)
		}
	}
	*n = C.CK_ULONG(len(found))
	return ret("C_FindObjects", nil)
}

//export goFindObjectsFinal
func goFindObjectsFinal(h C.CK_SESSION_HANDLE) (rv C.CK_RV) {
	defer guard("C_FindObjectsFinal", &rv)
	return ret("C_FindObjectsFinal", mod.FindObjectsFinal(uint(h)))
}

//export goSignInit
func goSignInit(h C.CK_SESSION_HANDLE, m C.CK_MECHANISM_PTR, k C.CK_OBJECT_HANDLE) (rv C.CK_RV) {
	defer guard("C_SignInit", &rv)
	mech, r := mechanism("C_SignInit", m)
	if r != C.CKR_OK {
		return r
	}
	return ret("C_SignInit", mod.SignInit(uint(h), mech, uint(k)))
}

// dataIn copies a caller's data for a running operation; a refusal ends
// the operation, as any failed C_Sign does. name is the pointer argument
// as the specification calls it (pData, pPart), for the log.
func dataIn(fn, name string, h C.CK_SESSION_HANDLE, p C.CK_BYTE_PTR, n C.CK_ULONG, end func(uint, error) error) ([]byte, C.CK_RV) {
	length := "ul" + name[1:] + "Len"
	if n > maxDataLen {
		return nil, ret(fn, end(uint(h), &p11.Error{RV: p11.CKR_DATA_LEN_RANGE, Msg: fmt.Sprintf("%s %d is more than %d, the most the module takes per call", length, n, maxDataLen)}))
	}
	b, ok := bytesIn(p, n)
	if !ok {
		return nil, ret(fn, end(uint(h), &p11.Error{RV: p11.CKR_ARGUMENTS_BAD, Msg: fmt.Sprintf("%s is NULL with %s %d", name, length, n)}))
	}
	return b, C.CKR_OK
}

// sigIn copies a signature to verify; a refusal ends the operation. A
// length no signature has is CKR_SIGNATURE_LEN_RANGE, as a signature of
// the wrong length is (PKCS#11 2.40, 5.13).
func sigIn(fn string, h C.CK_SESSION_HANDLE, p C.CK_BYTE_PTR, n C.CK_ULONG) ([]byte, C.CK_RV) {
	if n > maxSignatureLen {
		return nil, ret(fn, mod.EndVerify(uint(h), &p11.Error{RV: p11.CKR_SIGNATURE_LEN_RANGE, Msg: fmt.Sprintf("ulSignatureLen %d is more than %d: no signature of this token is that long", n, maxSignatureLen)}))
	}
	b, ok := bytesIn(p, n)
	if !ok {
		return nil, ret(fn, mod.EndVerify(uint(h), &p11.Error{RV: p11.CKR_ARGUMENTS_BAD, Msg: fmt.Sprintf("pSignature is NULL with ulSignatureLen %d", n)}))
	}
	return b, C.CKR_OK
}

//export goSign
func goSign(h C.CK_SESSION_HANDLE, d C.CK_BYTE_PTR, n C.CK_ULONG, s C.CK_BYTE_PTR, sn C.CK_ULONG_PTR) (rv C.CK_RV) {
	defer guard("C_Sign", &rv)
	if sn == nil {
		return ret("C_Sign", mod.EndSign(uint(h), &p11.Error{RV: p11.CKR_ARGUMENTS_BAD, Msg: "pulSignatureLen is NULL"}))
	}
	data, r := dataIn("C_Sign", "pData", h, d, n, mod.EndSign)
	if r != C.CKR_OK {
		return r
	}
	return putSig("C_Sign", h, s, sn, func() ([]byte, error) { return mod.Sign(uint(h), data) })
}

//export goSignUpdate
func goSignUpdate(h C.CK_SESSION_HANDLE, d C.CK_BYTE_PTR, n C.CK_ULONG) (rv C.CK_RV) {
	defer guard("C_SignUpdate", &rv)
	data, r := dataIn("C_SignUpdate", "pPart", h, d, n, mod.EndSign)
	if r != C.CKR_OK {
		return r
	}
	return ret("C_SignUpdate", mod.SignUpdate(uint(h), data))
}

//export goSignFinal
func goSignFinal(h C.CK_SESSION_HANDLE, s C.CK_BYTE_PTR, sn C.CK_ULONG_PTR) (rv C.CK_RV) {
	defer guard("C_SignFinal", &rv)
	if sn == nil {
		return ret("C_SignFinal", mod.EndSign(uint(h), &p11.Error{RV: p11.CKR_ARGUMENTS_BAD, Msg: "pulSignatureLen is NULL"}))
	}
	return putSig("C_SignFinal", h, s, sn, func() ([]byte, error) { return mod.SignFinal(uint(h)) })
}

//export goVerifyInit
func goVerifyInit(h C.CK_SESSION_HANDLE, m C.CK_MECHANISM_PTR, k C.CK_OBJECT_HANDLE) (rv C.CK_RV) {
	defer guard("C_VerifyInit", &rv)
	mech, r := mechanism("C_VerifyInit", m)
	if r != C.CKR_OK {
		return r
	}
	return ret("C_VerifyInit", mod.VerifyInit(uint(h), mech, uint(k)))
}

//export goVerify
func goVerify(h C.CK_SESSION_HANDLE, d C.CK_BYTE_PTR, n C.CK_ULONG, s C.CK_BYTE_PTR, sn C.CK_ULONG) (rv C.CK_RV) {
	defer guard("C_Verify", &rv)
	data, r := dataIn("C_Verify", "pData", h, d, n, mod.EndVerify)
	if r != C.CKR_OK {
		return r
	}
	sig, r := sigIn("C_Verify", h, s, sn)
	if r != C.CKR_OK {
		return r
	}
	return ret("C_Verify", mod.Verify(uint(h), data, sig))
}

//export goVerifyUpdate
func goVerifyUpdate(h C.CK_SESSION_HANDLE, d C.CK_BYTE_PTR, n C.CK_ULONG) (rv C.CK_RV) {
	defer guard("C_VerifyUpdate", &rv)
	data, r := dataIn("C_VerifyUpdate", "pPart", h, d, n, mod.EndVerify)
	if r != C.CKR_OK {
		return r
	}
	return ret("C_VerifyUpdate", mod.VerifyUpdate(uint(h), data))
}

//export goVerifyFinal
func goVerifyFinal(h C.CK_SESSION_HANDLE, s C.CK_BYTE_PTR, sn C.CK_ULONG) (rv C.CK_RV) {
	defer guard("C_VerifyFinal", &rv)
	sig, r := sigIn("C_VerifyFinal", h, s, sn)
	if r != C.CKR_OK {
		return r
	}
	return ret("C_VerifyFinal", mod.VerifyFinal(uint(h), sig))
}

//export goSeedRandom
func goSeedRandom(h C.CK_SESSION_HANDLE, s C.CK_BYTE_PTR, n C.CK_ULONG) (rv C.CK_RV) {
	defer guard("C_SeedRandom", &rv)
	return ret("C_SeedRandom", mod.SeedRandom(uint(h)))
}

//export goGenerateRandom
func goGenerateRandom(h C.CK_SESSION_HANDLE, p C.CK_BYTE_PTR, n C.CK_ULONG) (rv C.CK_RV) {
	defer guard("C_GenerateRandom", &rv)
	if n > maxRandomLen {
		return bad("C_GenerateRandom", "ulRandomLen %d is more than %d (1 MiB), the most one call fills: the TPM gives 32 bytes per command; ask in smaller calls", n, maxRandomLen)
	}
	if p == nil && n > 0 {
		return bad("C_GenerateRandom", "RandomData is NULL with ulRandomLen %d", n)
	}
	buf := make([]byte, n)
	if err := mod.GenerateRandom(uint(h), buf); err != nil {
		return ret("C_GenerateRandom", err)
	}
	if n > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(p)), n), buf)
	}
	return ret("C_GenerateRandom", nil)
}

//export goGetFunctionStatus
func goGetFunctionStatus(h C.CK_SESSION_HANDLE) (rv C.CK_RV) {
	defer guard("C_GetFunctionStatus", &rv)
	return ret("C_GetFunctionStatus", mod.LegacyParallel(uint(h)))
}

//export goCancelFunction
func goCancelFunction(h C.CK_SESSION_HANDLE) (rv C.CK_RV) {
	defer guard("C_CancelFunction", &rv)
	return ret("C_CancelFunction", mod.LegacyParallel(uint(h)))
}

//export goWaitForSlotEvent
func goWaitForSlotEvent(flags C.CK_FLAGS, slot C.CK_SLOT_ID_PTR, reserved C.CK_VOID_PTR) (rv C.CK_RV) {
	defer guard("C_WaitForSlotEvent", &rv)
	if slot == nil || reserved != nil {
		return bad("C_WaitForSlotEvent", "pSlot is NULL or pReserved is not")
	}
	err := mod.WaitForSlotEvent(uint(flags))
	if p11.RV(err) == p11.CKR_NO_EVENT {
		return C.CK_RV(p11.CKR_NO_EVENT) // the expected answer, not worth a log line
	}
	return ret("C_WaitForSlotEvent", err)
}

//export goUnsupported
func goUnsupported(fn *C.char) (rv C.CK_RV) {
	name := C.GoString(fn)
	defer guard(name, &rv)
	return ret(name, mod.Unsupported(name))
}
