// The C face of libsimple-tpm-pk11.so: the CK_FUNCTION_LIST and one
// shim per PKCS#11 function, each with its real signature, each passing
// its arguments to the Go function of the same name (module/exports.go).
//
// One rule lives here and not in Go: a Go runtime does not survive fork()
// (its threads are gone in the child), so a process that forked after
// loading us must never enter Go again. The shims answer such a child
// from C.

#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

#include "pkcs11.h"
#include "_cgo_export.h"

static pid_t load_pid;

// A Go runtime cannot be unloaded: pin the library so that dlclose()
// leaves it mapped (RTLD_NODELETE on ourselves), and remember who loaded us.
__attribute__((constructor)) static void stpm_loaded(void) {
	Dl_info self;
	load_pid = getpid();
	if (dladdr((void *)stpm_loaded, &self) && self.dli_fname != NULL)
		(void)dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

static int forked(void) { return getpid() != load_pid; }

// In a forked child: say once why the module is unavailable there.
static CK_RV child_init(void) {
	static int told;
	if (!told) {
		told = 1;
		fputs("simple-tpm-pk11: not available in a process forked after loading the module; load it after fork\n", stderr);
	}
	return CKR_GENERAL_ERROR;
}

#define CHILD_RV CKR_CRYPTOKI_NOT_INITIALIZED
#define GO(call) return forked() ? CHILD_RV : (call)
#define NOTSUP(name) return forked() ? CHILD_RV : goUnsupported((char *)name)

CK_RV C_Initialize(CK_VOID_PTR a) { return forked() ? child_init() : goInitialize(a); }
CK_RV C_Finalize(CK_VOID_PTR r) { return forked() ? CKR_OK : goFinalize(r); }
CK_RV C_GetInfo(CK_INFO_PTR i) { GO(goGetInfo(i)); }
CK_RV C_GetSlotList(CK_BBOOL p, CK_SLOT_ID_PTR l, CK_ULONG_PTR n) { GO(goGetSlotList(p, l, n)); }
CK_RV C_GetSlotInfo(CK_SLOT_ID s, CK_SLOT_INFO_PTR i) { GO(goGetSlotInfo(s, i)); }
CK_RV C_GetTokenInfo(CK_SLOT_ID s, CK_TOKEN_INFO_PTR i) { GO(goGetTokenInfo(s, i)); }
CK_RV C_GetMechanismList(CK_SLOT_ID s, CK_MECHANISM_TYPE_PTR l, CK_ULONG_PTR n) { GO(goGetMechanismList(s, l, n)); }
CK_RV C_GetMechanismInfo(CK_SLOT_ID s, CK_MECHANISM_TYPE t, CK_MECHANISM_INFO_PTR i) { GO(goGetMechanismInfo(s, t, i)); }
CK_RV C_InitToken(CK_SLOT_ID s, CK_UTF8CHAR_PTR p, CK_ULONG n, CK_UTF8CHAR_PTR l) { (void)s; (void)p; (void)n; (void)l; NOTSUP("C_InitToken"); }
CK_RV C_InitPIN(CK_SESSION_HANDLE h, CK_UTF8CHAR_PTR p, CK_ULONG n) { (void)h; (void)p; (void)n; NOTSUP("C_InitPIN"); }
CK_RV C_SetPIN(CK_SESSION_HANDLE h, CK_UTF8CHAR_PTR o, CK_ULONG on, CK_UTF8CHAR_PTR p, CK_ULONG n) { (void)h; (void)o; (void)on; (void)p; (void)n; NOTSUP("C_SetPIN"); }
CK_RV C_OpenSession(CK_SLOT_ID s, CK_FLAGS f, CK_VOID_PTR a, CK_NOTIFY n, CK_SESSION_HANDLE_PTR h) { (void)a; (void)n; GO(goOpenSession(s, f, h)); }
CK_RV C_CloseSession(CK_SESSION_HANDLE h) { GO(goCloseSession(h)); }
CK_RV C_CloseAllSessions(CK_SLOT_ID s) { GO(goCloseAllSessions(s)); }
CK_RV C_GetSessionInfo(CK_SESSION_HANDLE h, CK_SESSION_INFO_PTR i) { GO(goGetSessionInfo(h, i)); }
CK_RV C_GetOperationState(CK_SESSION_HANDLE h, CK_BYTE_PTR s, CK_ULONG_PTR n) { (void)h; (void)s; (void)n; NOTSUP("C_GetOperationState"); }
CK_RV C_SetOperationState(CK_SESSION_HANDLE h, CK_BYTE_PTR s, CK_ULONG n, CK_OBJECT_HANDLE e, CK_OBJECT_HANDLE a) { (void)h; (void)s; (void)n; (void)e; (void)a; NOTSUP("C_SetOperationState"); }
CK_RV C_Login(CK_SESSION_HANDLE h, CK_USER_TYPE u, CK_UTF8CHAR_PTR p, CK_ULONG n) { GO(goLogin(h, u, p, n)); }
CK_RV C_Logout(CK_SESSION_HANDLE h) { GO(goLogout(h)); }
CK_RV C_CreateObject(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR o) { (void)h; (void)t; (void)n; (void)o; NOTSUP("C_CreateObject"); }
CK_RV C_CopyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR p) { (void)h; (void)o; (void)t; (void)n; (void)p; NOTSUP("C_CopyObject"); }
CK_RV C_DestroyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o) { (void)h; (void)o; NOTSUP("C_DestroyObject"); }
CK_RV C_GetObjectSize(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ULONG_PTR n) { GO(goGetObjectSize(h, o, n)); }
CK_RV C_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, CK_ULONG n) { GO(goGetAttributeValue(h, o, t, n)); }
CK_RV C_SetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, CK_ULONG n) { (void)h; (void)o; (void)t; (void)n; NOTSUP("C_SetAttributeValue"); }
CK_RV C_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n) { GO(goFindObjectsInit(h, t, n)); }
CK_RV C_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR o, CK_ULONG m, CK_ULONG_PTR n) { GO(goFindObjects(h, o, m, n)); }
CK_RV C_FindObjectsFinal(CK_SESSION_HANDLE h) { GO(goFindObjectsFinal(h)); }
CK_RV C_EncryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k) { (void)h; (void)m; (void)k; NOTSUP("C_EncryptInit"); }
CK_RV C_Encrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR e, CK_ULONG_PTR en) { (void)h; (void)d; (void)n; (void)e; (void)en; NOTSUP("C_Encrypt"); }
CK_RV C_EncryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR e, CK_ULONG_PTR en) { (void)h; (void)d; (void)n; (void)e; (void)en; NOTSUP("C_EncryptUpdate"); }
CK_RV C_EncryptFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR e, CK_ULONG_PTR en) { (void)h; (void)e; (void)en; NOTSUP("C_EncryptFinal"); }
CK_RV C_DecryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k) { (void)h; (void)m; (void)k; NOTSUP("C_DecryptInit"); }
CK_RV C_Decrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR e, CK_ULONG en, CK_BYTE_PTR d, CK_ULONG_PTR n) { (void)h; (void)e; (void)en; (void)d; (void)n; NOTSUP("C_Decrypt"); }
CK_RV C_DecryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR e, CK_ULONG en, CK_BYTE_PTR d, CK_ULONG_PTR n) { (void)h; (void)e; (void)en; (void)d; (void)n; NOTSUP("C_DecryptUpdate"); }
CK_RV C_DecryptFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG_PTR n) { (void)h; (void)d; (void)n; NOTSUP("C_DecryptFinal"); }
CK_RV C_DigestInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m) { (void)h; (void)m; NOTSUP("C_DigestInit"); }
CK_RV C_Digest(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR o, CK_ULONG_PTR on) { (void)h; (void)d; (void)n; (void)o; (void)on; NOTSUP("C_Digest"); }
CK_RV C_DigestUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n) { (void)h; (void)d; (void)n; NOTSUP("C_DigestUpdate"); }
CK_RV C_DigestKey(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE k) { (void)h; (void)k; NOTSUP("C_DigestKey"); }
CK_RV C_DigestFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR o, CK_ULONG_PTR on) { (void)h; (void)o; (void)on; NOTSUP("C_DigestFinal"); }
CK_RV C_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k) { GO(goSignInit(h, m, k)); }
CK_RV C_Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR s, CK_ULONG_PTR sn) { GO(goSign(h, d, n, s, sn)); }
CK_RV C_SignUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n) { GO(goSignUpdate(h, d, n)); }
CK_RV C_SignFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR s, CK_ULONG_PTR sn) { GO(goSignFinal(h, s, sn)); }
CK_RV C_SignRecoverInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k) { (void)h; (void)m; (void)k; NOTSUP("C_SignRecoverInit"); }
CK_RV C_SignRecover(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR s, CK_ULONG_PTR sn) { (void)h; (void)d; (void)n; (void)s; (void)sn; NOTSUP("C_SignRecover"); }
CK_RV C_VerifyInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k) { GO(goVerifyInit(h, m, k)); }
CK_RV C_Verify(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR s, CK_ULONG sn) { GO(goVerify(h, d, n, s, sn)); }
CK_RV C_VerifyUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n) { GO(goVerifyUpdate(h, d, n)); }
CK_RV C_VerifyFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR s, CK_ULONG sn) { GO(goVerifyFinal(h, s, sn)); }
CK_RV C_VerifyRecoverInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k) { (void)h; (void)m; (void)k; NOTSUP("C_VerifyRecoverInit"); }
CK_RV C_VerifyRecover(CK_SESSION_HANDLE h, CK_BYTE_PTR s, CK_ULONG sn, CK_BYTE_PTR d, CK_ULONG_PTR n) { (void)h; (void)s; (void)sn; (void)d; (void)n; NOTSUP("C_VerifyRecover"); }
CK_RV C_DigestEncryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR p, CK_ULONG n, CK_BYTE_PTR e, CK_ULONG_PTR en) { (void)h; (void)p; (void)n; (void)e; (void)en; NOTSUP("C_DigestEncryptUpdate"); }
CK_RV C_DecryptDigestUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR e, CK_ULONG en, CK_BYTE_PTR p, CK_ULONG_PTR n) { (void)h; (void)e; (void)en; (void)p; (void)n; NOTSUP("C_DecryptDigestUpdate"); }
CK_RV C_SignEncryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR p, CK_ULONG n, CK_BYTE_PTR e, CK_ULONG_PTR en) { (void)h; (void)p; (void)n; (void)e; (void)en; NOTSUP("C_SignEncryptUpdate"); }
CK_RV C_DecryptVerifyUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR e, CK_ULONG en, CK_BYTE_PTR p, CK_ULONG_PTR n) { (void)h; (void)e; (void)en; (void)p; (void)n; NOTSUP("C_DecryptVerifyUpdate"); }
CK_RV C_GenerateKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k) { (void)h; (void)m; (void)t; (void)n; (void)k; NOTSUP("C_GenerateKey"); }
CK_RV C_GenerateKeyPair(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pt, CK_ULONG pn, CK_ATTRIBUTE_PTR st, CK_ULONG sn, CK_OBJECT_HANDLE_PTR pk, CK_OBJECT_HANDLE_PTR sk) { (void)h; (void)m; (void)pt; (void)pn; (void)st; (void)sn; (void)pk; (void)sk; NOTSUP("C_GenerateKeyPair"); }
CK_RV C_WrapKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE w, CK_OBJECT_HANDLE k, CK_BYTE_PTR o, CK_ULONG_PTR on) { (void)h; (void)m; (void)w; (void)k; (void)o; (void)on; NOTSUP("C_WrapKey"); }
CK_RV C_UnwrapKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE u, CK_BYTE_PTR w, CK_ULONG wn, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k) { (void)h; (void)m; (void)u; (void)w; (void)wn; (void)t; (void)n; (void)k; NOTSUP("C_UnwrapKey"); }
CK_RV C_DeriveKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k) { (void)h; (void)m; (void)b; (void)t; (void)n; (void)k; NOTSUP("C_DeriveKey"); }
CK_RV C_SeedRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR s, CK_ULONG n) { GO(goSeedRandom(h, s, n)); }
CK_RV C_GenerateRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR r, CK_ULONG n) { GO(goGenerateRandom(h, r, n)); }
CK_RV C_GetFunctionStatus(CK_SESSION_HANDLE h) { GO(goGetFunctionStatus(h)); }
CK_RV C_CancelFunction(CK_SESSION_HANDLE h) { GO(goCancelFunction(h)); }
CK_RV C_WaitForSlotEvent(CK_FLAGS f, CK_SLOT_ID_PTR s, CK_VOID_PTR r) { GO(goWaitForSlotEvent(f, s, r)); }

static CK_FUNCTION_LIST function_list = {
	{2, 40},
	C_Initialize, C_Finalize, C_GetInfo, C_GetFunctionList,
	C_GetSlotList, C_GetSlotInfo, C_GetTokenInfo, C_GetMechanismList, C_GetMechanismInfo,
	C_InitToken, C_InitPIN, C_SetPIN,
	C_OpenSession, C_CloseSession, C_CloseAllSessions, C_GetSessionInfo,
	C_GetOperationState, C_SetOperationState, C_Login, C_Logout,
	C_CreateObject, C_CopyObject, C_DestroyObject, C_GetObjectSize,
	C_GetAttributeValue, C_SetAttributeValue, C_FindObjectsInit, C_FindObjects, C_FindObjectsFinal,
	C_EncryptInit, C_Encrypt, C_EncryptUpdate, C_EncryptFinal,
	C_DecryptInit, C_Decrypt, C_DecryptUpdate, C_DecryptFinal,
	C_DigestInit, C_Digest, C_DigestUpdate, C_DigestKey, C_DigestFinal,
	C_SignInit, C_Sign, C_SignUpdate, C_SignFinal, C_SignRecoverInit, C_SignRecover,
	C_VerifyInit, C_Verify, C_VerifyUpdate, C_VerifyFinal, C_VerifyRecoverInit, C_VerifyRecover,
	C_DigestEncryptUpdate, C_DecryptDigestUpdate, C_SignEncryptUpdate, C_DecryptVerifyUpdate,
	C_GenerateKey, C_GenerateKeyPair, C_WrapKey, C_UnwrapKey, C_DeriveKey,
	C_SeedRandom, C_GenerateRandom,
	C_GetFunctionStatus, C_CancelFunction, C_WaitForSlotEvent,
};

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR pp) {
	if (pp == NULL_PTR)
		return CKR_ARGUMENTS_BAD;
	*pp = &function_list;
	return CKR_OK;
}

// PKCS#11 3.0 discovery: the same 2.40 table under the standard name.
static CK_INTERFACE interface = {(CK_CHAR *)"PKCS 11", &function_list, 0};

CK_RV C_GetInterfaceList(CK_INTERFACE_PTR list, CK_ULONG_PTR count) {
	if (count == NULL_PTR)
		return CKR_ARGUMENTS_BAD;
	if (list == NULL_PTR) {
		*count = 1;
		return CKR_OK;
	}
	if (*count < 1) {
		*count = 1;
		return 0x150UL; // CKR_BUFFER_TOO_SMALL
	}
	list[0] = interface;
	*count = 1;
	return CKR_OK;
}

CK_RV C_GetInterface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version, CK_INTERFACE_PTR_PTR pp, CK_FLAGS flags) {
	const char *want = "PKCS 11";
	if (pp == NULL_PTR)
		return CKR_ARGUMENTS_BAD;
	if (name != NULL_PTR) {
		for (int i = 0; want[i] || name[i]; i++)
			if ((CK_UTF8CHAR)want[i] != name[i])
				return CKR_ARGUMENTS_BAD;
	}
	if (version != NULL_PTR && (version->major != 2 || version->minor != 40))
		return CKR_ARGUMENTS_BAD;
	if (flags != 0)
		return CKR_ARGUMENTS_BAD;
	*pp = &interface;
	return CKR_OK;
}
