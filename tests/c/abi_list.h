/*
 * abi_list.h - what tests/c/abi_check.c compares between module/pkcs11.h
 * and p11-kit's pkcs11.h. Included by both translation units: abi_check.c
 * (our header) and abi_p11kit.c (p11-kit's header, never both in one unit,
 * since they declare the same names).
 *
 * Each list is an X-macro: the including file defines what one entry
 * expands to. Function signatures are written in plain C types (unsigned
 * long, unsigned char *, ...) plus struct pointer names both headers have,
 * so each unit can assert with __builtin_types_compatible_p that its
 * header agrees with this neutral spelling; a difference between the two
 * headers then fails one of the two compilations.
 */
#ifndef ABI_LIST_H
#define ABI_LIST_H

/* One row of the runtime table: "sizeof(CK_INFO)" -> 88 and so on. */
struct abi_entry {
	const char *name;
	unsigned long value;
};

/* Implemented by abi_p11kit.c: the same rows measured on p11-kit's header. */
const struct abi_entry *abi_p11kit_table(unsigned long *n);

/* Scalar typedefs: size and signedness are compared. */
#define ABI_SCALARS(X) \
	X(CK_BYTE) X(CK_CHAR) X(CK_UTF8CHAR) X(CK_BBOOL) X(CK_ULONG) \
	X(CK_LONG) X(CK_FLAGS) X(CK_RV) X(CK_SLOT_ID) X(CK_SESSION_HANDLE) \
	X(CK_OBJECT_HANDLE) X(CK_OBJECT_CLASS) X(CK_HW_FEATURE_TYPE) \
	X(CK_KEY_TYPE) X(CK_CERTIFICATE_TYPE) X(CK_ATTRIBUTE_TYPE) \
	X(CK_MECHANISM_TYPE) X(CK_USER_TYPE) X(CK_STATE) X(CK_NOTIFICATION) \
	X(CK_RSA_PKCS_MGF_TYPE) X(CK_RSA_PKCS_OAEP_SOURCE_TYPE)

/* Pointer typedefs both headers define, with the plain C type each must
 * be compatible with. */
#define ABI_POINTERS(X) \
	X(CK_BYTE_PTR, unsigned char *) \
	X(CK_CHAR_PTR, unsigned char *) \
	X(CK_UTF8CHAR_PTR, unsigned char *) \
	X(CK_ULONG_PTR, unsigned long *) \
	X(CK_VOID_PTR, void *) \
	X(CK_VOID_PTR_PTR, void **) \
	X(CK_SLOT_ID_PTR, unsigned long *) \
	X(CK_SESSION_HANDLE_PTR, unsigned long *) \
	X(CK_OBJECT_HANDLE_PTR, unsigned long *) \
	X(CK_OBJECT_CLASS_PTR, unsigned long *) \
	X(CK_MECHANISM_TYPE_PTR, unsigned long *) \
	X(CK_RSA_PKCS_MGF_TYPE_PTR, unsigned long *) \
	X(CK_VERSION_PTR, CK_VERSION *) \
	X(CK_INFO_PTR, CK_INFO *) \
	X(CK_SLOT_INFO_PTR, CK_SLOT_INFO *) \
	X(CK_TOKEN_INFO_PTR, CK_TOKEN_INFO *) \
	X(CK_SESSION_INFO_PTR, CK_SESSION_INFO *) \
	X(CK_ATTRIBUTE_PTR, CK_ATTRIBUTE *) \
	X(CK_MECHANISM_PTR, CK_MECHANISM *) \
	X(CK_MECHANISM_INFO_PTR, CK_MECHANISM_INFO *) \
	X(CK_C_INITIALIZE_ARGS_PTR, CK_C_INITIALIZE_ARGS *) \
	X(CK_RSA_PKCS_PSS_PARAMS_PTR, CK_RSA_PKCS_PSS_PARAMS *) \
	X(CK_FUNCTION_LIST_PTR, CK_FUNCTION_LIST *) \
	X(CK_FUNCTION_LIST_PTR_PTR, CK_FUNCTION_LIST **)

/* Callback typedefs in plain C. */
#define ABI_NOTIFY_T unsigned long (*)(unsigned long, unsigned long, void *)
#define ABI_CALLBACKS(X) \
	X(CK_NOTIFY, ABI_NOTIFY_T) \
	X(CK_CREATEMUTEX, unsigned long (*)(void **)) \
	X(CK_DESTROYMUTEX, unsigned long (*)(void *)) \
	X(CK_LOCKMUTEX, unsigned long (*)(void *)) \
	X(CK_UNLOCKMUTEX, unsigned long (*)(void *))

/* Constants module/pkcs11.h defines. */
#define ABI_CONSTANTS(X) \
	X(CK_TRUE) X(CK_FALSE) X(CKR_OK) X(CKR_GENERAL_ERROR) \
	X(CKR_ARGUMENTS_BAD) X(CKR_FUNCTION_NOT_SUPPORTED) \
	X(CKR_CRYPTOKI_NOT_INITIALIZED)

/* Structs (S) and their fields (F): size and alignment of each struct,
 * offset and size of each field. */
#define ABI_STRUCTS(S, F) \
	S(CK_VERSION) F(CK_VERSION, major) F(CK_VERSION, minor) \
	S(CK_INFO) F(CK_INFO, cryptokiVersion) F(CK_INFO, manufacturerID) \
		F(CK_INFO, flags) F(CK_INFO, libraryDescription) \
		F(CK_INFO, libraryVersion) \
	S(CK_SLOT_INFO) F(CK_SLOT_INFO, slotDescription) \
		F(CK_SLOT_INFO, manufacturerID) F(CK_SLOT_INFO, flags) \
		F(CK_SLOT_INFO, hardwareVersion) F(CK_SLOT_INFO, firmwareVersion) \
	S(CK_TOKEN_INFO) F(CK_TOKEN_INFO, label) \
		F(CK_TOKEN_INFO, manufacturerID) F(CK_TOKEN_INFO, model) \
		F(CK_TOKEN_INFO, serialNumber) F(CK_TOKEN_INFO, flags) \
		F(CK_TOKEN_INFO, ulMaxSessionCount) \
		F(CK_TOKEN_INFO, ulSessionCount) \
		F(CK_TOKEN_INFO, ulMaxRwSessionCount) \
		F(CK_TOKEN_INFO, ulRwSessionCount) \
		F(CK_TOKEN_INFO, ulMaxPinLen) F(CK_TOKEN_INFO, ulMinPinLen) \
		F(CK_TOKEN_INFO, ulTotalPublicMemory) \
		F(CK_TOKEN_INFO, ulFreePublicMemory) \
		F(CK_TOKEN_INFO, ulTotalPrivateMemory) \
		F(CK_TOKEN_INFO, ulFreePrivateMemory) \
		F(CK_TOKEN_INFO, hardwareVersion) \
		F(CK_TOKEN_INFO, firmwareVersion) F(CK_TOKEN_INFO, utcTime) \
	S(CK_SESSION_INFO) F(CK_SESSION_INFO, slotID) \
		F(CK_SESSION_INFO, state) F(CK_SESSION_INFO, flags) \
		F(CK_SESSION_INFO, ulDeviceError) \
	S(CK_ATTRIBUTE) F(CK_ATTRIBUTE, type) F(CK_ATTRIBUTE, pValue) \
		F(CK_ATTRIBUTE, ulValueLen) \
	S(CK_DATE) F(CK_DATE, year) F(CK_DATE, month) F(CK_DATE, day) \
	S(CK_MECHANISM) F(CK_MECHANISM, mechanism) \
		F(CK_MECHANISM, pParameter) F(CK_MECHANISM, ulParameterLen) \
	S(CK_MECHANISM_INFO) F(CK_MECHANISM_INFO, ulMinKeySize) \
		F(CK_MECHANISM_INFO, ulMaxKeySize) F(CK_MECHANISM_INFO, flags) \
	S(CK_C_INITIALIZE_ARGS) F(CK_C_INITIALIZE_ARGS, CreateMutex) \
		F(CK_C_INITIALIZE_ARGS, DestroyMutex) \
		F(CK_C_INITIALIZE_ARGS, LockMutex) \
		F(CK_C_INITIALIZE_ARGS, UnlockMutex) \
		F(CK_C_INITIALIZE_ARGS, flags) F(CK_C_INITIALIZE_ARGS, pReserved) \
	S(CK_RSA_PKCS_PSS_PARAMS) F(CK_RSA_PKCS_PSS_PARAMS, hashAlg) \
		F(CK_RSA_PKCS_PSS_PARAMS, mgf) F(CK_RSA_PKCS_PSS_PARAMS, sLen) \
	S(CK_FUNCTION_LIST) F(CK_FUNCTION_LIST, version)

/* Shorthands for the neutral signatures below. */
#define UL unsigned long
#define UB unsigned char
#define ULP unsigned long *
#define UBP unsigned char *
#define VP void *

/* The 68 members of CK_FUNCTION_LIST after "version", in the order of
 * PKCS#11 2.40 section 5, each with its parameter list in plain C. */
#define ABI_FUNCTIONS(X) \
	X(C_Initialize, (VP)) \
	X(C_Finalize, (VP)) \
	X(C_GetInfo, (CK_INFO_PTR)) \
	X(C_GetFunctionList, (CK_FUNCTION_LIST_PTR_PTR)) \
	X(C_GetSlotList, (UB, ULP, ULP)) \
	X(C_GetSlotInfo, (UL, CK_SLOT_INFO_PTR)) \
	X(C_GetTokenInfo, (UL, CK_TOKEN_INFO_PTR)) \
	X(C_GetMechanismList, (UL, ULP, ULP)) \
	X(C_GetMechanismInfo, (UL, UL, CK_MECHANISM_INFO_PTR)) \
	X(C_InitToken, (UL, UBP, UL, UBP)) \
	X(C_InitPIN, (UL, UBP, UL)) \
	X(C_SetPIN, (UL, UBP, UL, UBP, UL)) \
	X(C_OpenSession, (UL, UL, VP, ABI_NOTIFY_T, ULP)) \
	X(C_CloseSession, (UL)) \
	X(C_CloseAllSessions, (UL)) \
	X(C_GetSessionInfo, (UL, CK_SESSION_INFO_PTR)) \
	X(C_GetOperationState, (UL, UBP, ULP)) \
	X(C_SetOperationState, (UL, UBP, UL, UL, UL)) \
	X(C_Login, (UL, UL, UBP, UL)) \
	X(C_Logout, (UL)) \
	X(C_CreateObject, (UL, CK_ATTRIBUTE_PTR, UL, ULP)) \
	X(C_CopyObject, (UL, UL, CK_ATTRIBUTE_PTR, UL, ULP)) \
	X(C_DestroyObject, (UL, UL)) \
	X(C_GetObjectSize, (UL, UL, ULP)) \
	X(C_GetAttributeValue, (UL, UL, CK_ATTRIBUTE_PTR, UL)) \
	X(C_SetAttributeValue, (UL, UL, CK_ATTRIBUTE_PTR, UL)) \
	X(C_FindObjectsInit, (UL, CK_ATTRIBUTE_PTR, UL)) \
	X(C_FindObjects, (UL, ULP, UL, ULP)) \
	X(C_FindObjectsFinal, (UL)) \
	X(C_EncryptInit, (UL, CK_MECHANISM_PTR, UL)) \
	X(C_Encrypt, (UL, UBP, UL, UBP, ULP)) \
	X(C_EncryptUpdate, (UL, UBP, UL, UBP, ULP)) \
	X(C_EncryptFinal, (UL, UBP, ULP)) \
	X(C_DecryptInit, (UL, CK_MECHANISM_PTR, UL)) \
	X(C_Decrypt, (UL, UBP, UL, UBP, ULP)) \
	X(C_DecryptUpdate, (UL, UBP, UL, UBP, ULP)) \
	X(C_DecryptFinal, (UL, UBP, ULP)) \
	X(C_DigestInit, (UL, CK_MECHANISM_PTR)) \
	X(C_Digest, (UL, UBP, UL, UBP, ULP)) \
	X(C_DigestUpdate, (UL, UBP, UL)) \
	X(C_DigestKey, (UL, UL)) \
	X(C_DigestFinal, (UL, UBP, ULP)) \
	X(C_SignInit, (UL, CK_MECHANISM_PTR, UL)) \
	X(C_Sign, (UL, UBP, UL, UBP, ULP)) \
	X(C_SignUpdate, (UL, UBP, UL)) \
	X(C_SignFinal, (UL, UBP, ULP)) \
	X(C_SignRecoverInit, (UL, CK_MECHANISM_PTR, UL)) \
	X(C_SignRecover, (UL, UBP, UL, UBP, ULP)) \
	X(C_VerifyInit, (UL, CK_MECHANISM_PTR, UL)) \
	X(C_Verify, (UL, UBP, UL, UBP, UL)) \
	X(C_VerifyUpdate, (UL, UBP, UL)) \
	X(C_VerifyFinal, (UL, UBP, UL)) \
	X(C_VerifyRecoverInit, (UL, CK_MECHANISM_PTR, UL)) \
	X(C_VerifyRecover, (UL, UBP, UL, UBP, ULP)) \
	X(C_DigestEncryptUpdate, (UL, UBP, UL, UBP, ULP)) \
	X(C_DecryptDigestUpdate, (UL, UBP, UL, UBP, ULP)) \
	X(C_SignEncryptUpdate, (UL, UBP, UL, UBP, ULP)) \
	X(C_DecryptVerifyUpdate, (UL, UBP, UL, UBP, ULP)) \
	X(C_GenerateKey, (UL, CK_MECHANISM_PTR, CK_ATTRIBUTE_PTR, UL, ULP)) \
	X(C_GenerateKeyPair, (UL, CK_MECHANISM_PTR, CK_ATTRIBUTE_PTR, UL, \
		CK_ATTRIBUTE_PTR, UL, ULP, ULP)) \
	X(C_WrapKey, (UL, CK_MECHANISM_PTR, UL, UL, UBP, ULP)) \
	X(C_UnwrapKey, (UL, CK_MECHANISM_PTR, UL, UBP, UL, CK_ATTRIBUTE_PTR, \
		UL, ULP)) \
	X(C_DeriveKey, (UL, CK_MECHANISM_PTR, UL, CK_ATTRIBUTE_PTR, UL, ULP)) \
	X(C_SeedRandom, (UL, UBP, UL)) \
	X(C_GenerateRandom, (UL, UBP, UL)) \
	X(C_GetFunctionStatus, (UL)) \
	X(C_CancelFunction, (UL)) \
	X(C_WaitForSlotEvent, (UL, ULP, VP))

/*
 * The body both units share: static assertions of their header against
 * the neutral spelling, and the runtime table. ABI_TABLE_FN names the
 * function that returns the table.
 */
#define ABI_ASSERT_PTR(name, plain) \
	_Static_assert(__builtin_types_compatible_p(name, plain), \
		#name " is not " #plain);
#define ABI_ASSERT_CB(name, plain) ABI_ASSERT_PTR(name, plain)
#define ABI_ASSERT_FN(fn, params) \
	_Static_assert(__builtin_types_compatible_p( \
		__typeof__(((CK_FUNCTION_LIST *)0)->fn), UL (*) params), \
		"CK_FUNCTION_LIST." #fn " has the wrong signature"); \
	_Static_assert(__builtin_types_compatible_p( \
		__typeof__(&fn), UL (*) params), \
		"prototype of " #fn " has the wrong signature");

#define ABI_ROW_SCALAR(T) \
	{ "sizeof(" #T ")", sizeof(T) }, \
	{ "signed(" #T ")", (T)-1 < (T)1 },
#define ABI_ROW_CONST(C) { #C, (unsigned long)(C) },
#define ABI_ROW_STRUCT(T) \
	{ "sizeof(" #T ")", sizeof(T) }, \
	{ "alignof(" #T ")", _Alignof(T) },
#define ABI_ROW_FIELD(T, f) \
	{ "offsetof(" #T "," #f ")", __builtin_offsetof(T, f) }, \
	{ "sizeof(" #T "." #f ")", sizeof(((T *)0)->f) },
#define ABI_ROW_FN(fn, params) \
	{ "offsetof(CK_FUNCTION_LIST," #fn ")", \
		__builtin_offsetof(CK_FUNCTION_LIST, fn) }, \
	{ "sizeof(CK_FUNCTION_LIST." #fn ")", \
		sizeof(((CK_FUNCTION_LIST *)0)->fn) },

#define ABI_COUNT_FN(fn, params) + 1
enum { ABI_NFUNCTIONS = 0 ABI_FUNCTIONS(ABI_COUNT_FN) };

#define ABI_DEFINE_TABLE(fnname) \
	ABI_POINTERS(ABI_ASSERT_PTR) \
	ABI_CALLBACKS(ABI_ASSERT_CB) \
	ABI_FUNCTIONS(ABI_ASSERT_FN) \
	_Static_assert(ABI_NFUNCTIONS == 68, "PKCS#11 2.40 has 68 functions"); \
	static const struct abi_entry abi_rows[] = { \
		ABI_SCALARS(ABI_ROW_SCALAR) \
		ABI_CONSTANTS(ABI_ROW_CONST) \
		P11_CONSTANT_NAMES(ABI_ROW_CONST) \
		ABI_STRUCTS(ABI_ROW_STRUCT, ABI_ROW_FIELD) \
		ABI_FUNCTIONS(ABI_ROW_FN) \
	}; \
	const struct abi_entry *fnname(unsigned long *n) \
	{ \
		*n = sizeof(abi_rows) / sizeof(abi_rows[0]); \
		return abi_rows; \
	}

#endif /* ABI_LIST_H */
