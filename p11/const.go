package p11

// PKCS#11 2.40 constants, in the specification's spelling, for the parts
// of the standard this module implements. Values are from PKCS#11 Base
// Specification 2.40, section 3 and the Current Mechanisms Specification.
//
//nolint:revive // spec spelling on purpose
const (
	CK_UNAVAILABLE_INFORMATION = ^uint(0)
	CK_EFFECTIVELY_INFINITE    = 0
	CK_INVALID_HANDLE          = 0
)

// Return values (CK_RV).
const (
	CKR_OK                             = 0x00
	CKR_CANCEL                         = 0x01
	CKR_HOST_MEMORY                    = 0x02
	CKR_SLOT_ID_INVALID                = 0x03
	CKR_GENERAL_ERROR                  = 0x05
	CKR_FUNCTION_FAILED                = 0x06
	CKR_ARGUMENTS_BAD                  = 0x07
	CKR_NO_EVENT                       = 0x08
	CKR_NEED_TO_CREATE_THREADS         = 0x09
	CKR_CANT_LOCK                      = 0x0A
	CKR_ATTRIBUTE_READ_ONLY            = 0x10
	CKR_ATTRIBUTE_SENSITIVE            = 0x11
	CKR_ATTRIBUTE_TYPE_INVALID         = 0x12
	CKR_ATTRIBUTE_VALUE_INVALID        = 0x13
	CKR_DATA_INVALID                   = 0x20
	CKR_DATA_LEN_RANGE                 = 0x21
	CKR_DEVICE_ERROR                   = 0x30
	CKR_DEVICE_MEMORY                  = 0x31
	CKR_DEVICE_REMOVED                 = 0x32
	CKR_FUNCTION_CANCELED              = 0x50
	CKR_FUNCTION_NOT_PARALLEL          = 0x51
	CKR_FUNCTION_NOT_SUPPORTED         = 0x54
	CKR_KEY_HANDLE_INVALID             = 0x60
	CKR_KEY_TYPE_INCONSISTENT          = 0x63
	CKR_KEY_FUNCTION_NOT_PERMITTED     = 0x68
	CKR_MECHANISM_INVALID              = 0x70
	CKR_MECHANISM_PARAM_INVALID        = 0x71
	CKR_OBJECT_HANDLE_INVALID          = 0x82
	CKR_OPERATION_ACTIVE               = 0x90
	CKR_OPERATION_NOT_INITIALIZED      = 0x91
	CKR_PIN_INCORRECT                  = 0xA0
	CKR_PIN_INVALID                    = 0xA1
	CKR_PIN_LEN_RANGE                  = 0xA2
	CKR_PIN_LOCKED                     = 0xA4
	CKR_SESSION_CLOSED                 = 0xB0
	CKR_SESSION_HANDLE_INVALID         = 0xB3
	CKR_SESSION_PARALLEL_NOT_SUPPORTED = 0xB4
	CKR_SESSION_READ_ONLY              = 0xB5
	CKR_SESSION_EXISTS                 = 0xB6
	CKR_SIGNATURE_INVALID              = 0xC0
	CKR_SIGNATURE_LEN_RANGE            = 0xC1
	CKR_TEMPLATE_INCONSISTENT          = 0xD1
	CKR_TOKEN_NOT_PRESENT              = 0xE0
	CKR_TOKEN_WRITE_PROTECTED          = 0xE2
	CKR_USER_ALREADY_LOGGED_IN         = 0x100
	CKR_USER_NOT_LOGGED_IN             = 0x101
	CKR_USER_PIN_NOT_INITIALIZED       = 0x102
	CKR_USER_TYPE_INVALID              = 0x103
	CKR_RANDOM_SEED_NOT_SUPPORTED      = 0x120
	CKR_BUFFER_TOO_SMALL               = 0x150
	CKR_CRYPTOKI_NOT_INITIALIZED       = 0x190
	CKR_CRYPTOKI_ALREADY_INITIALIZED   = 0x191
)

// Object classes, key types, certificate types.
const (
	CKO_CERTIFICATE = 1
	CKO_PUBLIC_KEY  = 2
	CKO_PRIVATE_KEY = 3

	CKK_RSA = 0
	CKK_EC  = 3

	CKC_X_509 = 0
)

// Attribute types.
const (
	CKA_CLASS                = 0x000
	CKA_TOKEN                = 0x001
	CKA_PRIVATE              = 0x002
	CKA_LABEL                = 0x003
	CKA_VALUE                = 0x011
	CKA_CERTIFICATE_TYPE     = 0x080
	CKA_ISSUER               = 0x081
	CKA_SERIAL_NUMBER        = 0x082
	CKA_TRUSTED              = 0x086
	CKA_CERTIFICATE_CATEGORY = 0x087
	CKA_KEY_TYPE             = 0x100
	CKA_SUBJECT              = 0x101
	CKA_ID                   = 0x102
	CKA_SENSITIVE            = 0x103
	CKA_ENCRYPT              = 0x104
	CKA_DECRYPT              = 0x105
	CKA_WRAP                 = 0x106
	CKA_UNWRAP               = 0x107
	CKA_SIGN                 = 0x108
	CKA_SIGN_RECOVER         = 0x109
	CKA_VERIFY               = 0x10A
	CKA_VERIFY_RECOVER       = 0x10B
	CKA_DERIVE               = 0x10C
	CKA_START_DATE           = 0x110
	CKA_END_DATE             = 0x111
	CKA_MODULUS              = 0x120
	CKA_MODULUS_BITS         = 0x121
	CKA_PUBLIC_EXPONENT      = 0x122
	CKA_PRIVATE_EXPONENT     = 0x123
	CKA_PUBLIC_KEY_INFO      = 0x129
	CKA_EXTRACTABLE          = 0x162
	CKA_LOCAL                = 0x163
	CKA_NEVER_EXTRACTABLE    = 0x164
	CKA_ALWAYS_SENSITIVE     = 0x165
	CKA_KEY_GEN_MECHANISM    = 0x166
	CKA_MODIFIABLE           = 0x170
	CKA_COPYABLE             = 0x171
	CKA_DESTROYABLE          = 0x172
	CKA_EC_PARAMS            = 0x180
	CKA_EC_POINT             = 0x181
	CKA_ALWAYS_AUTHENTICATE  = 0x202
	CKA_WRAP_WITH_TRUSTED    = 0x210
	// CKA_ALLOWED_MECHANISMS is not offered: p11-kit's RPC (0.24) cannot
	// carry array attributes, so a forwarded token would answer
	// CKR_DEVICE_ERROR for it.
)

// Mechanisms.
const (
	CKM_RSA_PKCS_KEY_PAIR_GEN = 0x0000
	CKM_RSA_PKCS              = 0x0001
	CKM_SHA1_RSA_PKCS         = 0x0006
	CKM_RSA_PKCS_PSS          = 0x000D
	CKM_SHA1_RSA_PKCS_PSS     = 0x000E
	CKM_SHA256_RSA_PKCS       = 0x0040
	CKM_SHA384_RSA_PKCS       = 0x0041
	CKM_SHA512_RSA_PKCS       = 0x0042
	CKM_SHA256_RSA_PKCS_PSS   = 0x0043
	CKM_SHA384_RSA_PKCS_PSS   = 0x0044
	CKM_SHA512_RSA_PKCS_PSS   = 0x0045
	CKM_SHA_1                 = 0x0220
	CKM_SHA256                = 0x0250
	CKM_SHA384                = 0x0260
	CKM_SHA512                = 0x0270
	CKM_EC_KEY_PAIR_GEN       = 0x1040
	CKM_ECDSA                 = 0x1041
	CKM_ECDSA_SHA1            = 0x1042
	CKM_ECDSA_SHA256          = 0x1044
	CKM_ECDSA_SHA384          = 0x1045
	CKM_ECDSA_SHA512          = 0x1046

	CKG_MGF1_SHA1   = 1
	CKG_MGF1_SHA256 = 2
	CKG_MGF1_SHA384 = 3
	CKG_MGF1_SHA512 = 4
)

// Flags.
const (
	// CK_SLOT_INFO
	CKF_TOKEN_PRESENT = 0x1
	CKF_HW_SLOT       = 0x4

	// CK_TOKEN_INFO
	CKF_RNG                  = 0x1
	CKF_WRITE_PROTECTED      = 0x2
	CKF_LOGIN_REQUIRED       = 0x4
	CKF_USER_PIN_INITIALIZED = 0x8
	CKF_TOKEN_INITIALIZED    = 0x400
	CKF_USER_PIN_COUNT_LOW   = 0x10000
	CKF_USER_PIN_FINAL_TRY   = 0x20000
	CKF_USER_PIN_LOCKED      = 0x40000

	// CK_SESSION_INFO / C_OpenSession
	CKF_RW_SESSION     = 0x2
	CKF_SERIAL_SESSION = 0x4

	// CK_MECHANISM_INFO
	CKF_HW            = 0x1
	CKF_SIGN          = 0x800
	CKF_VERIFY        = 0x2000
	CKF_EC_F_P        = 0x100000
	CKF_EC_NAMEDCURVE = 0x800000
	CKF_EC_UNCOMPRESS = 0x1000000

	// CK_C_INITIALIZE_ARGS
	CKF_LIBRARY_CANT_CREATE_OS_THREADS = 0x1
	CKF_OS_LOCKING_OK                  = 0x2

	// C_WaitForSlotEvent
	CKF_DONT_BLOCK = 0x1
)

// Users and session states.
const (
	CKU_SO               = 0
	CKU_USER             = 1
	CKU_CONTEXT_SPECIFIC = 2

	CKS_RO_PUBLIC_SESSION = 0
	CKS_RO_USER_FUNCTIONS = 1
	CKS_RW_PUBLIC_SESSION = 2
	CKS_RW_USER_FUNCTIONS = 3
)
