/*
 * p11host.c - loads a PKCS#11 module with dlopen and exercises it.
 *
 * Go tests use this program to drive libsimple-tpm-pk11.so: loading a Go
 * c-shared library into a Go test binary would put two Go runtimes in one
 * process. It works with any PKCS#11 2.40 module.
 *
 *   p11host MODULE info     [--pin PIN] [--slot ID]
 *   p11host MODULE sign     [--threads N] [--count M] [--pin PIN] [--slot ID]
 *                           [--session-each]
 *                           [--mech auto|rsa-pkcs|sha256-rsa-pkcs|rsa-pss|
 *                                   sha256-rsa-pss|ecdsa|ecdsa-sha256]
 *                           [--login-each]
 *   p11host MODULE misuse   [--pin PIN] [--slot ID] [--skip NAME,PREFIX*,...]
 *                           [-v]
 *   p11host MODULE fork     [--pin PIN] [--slot ID]
 *   p11host MODULE steps    [--pin PIN] [--slot ID]
 *   p11host MODULE loadtime
 *   p11host MODULE first    [--pin PIN] [--slot ID] [--mech ...]
 *
 * "loadtime" prints what loading costs a program: "loadtime load_us=
 * init_us= rss_kb_before= rss_kb_after=" (dlopen + C_GetFunctionList,
 * then C_Initialize).
 *
 * "first" measures a fresh process's first signature, phase by phase:
 * "first load_us= init_us= open_us= find_us= sign1_us= sign2_us=
 * total_us= verified=0|1" (open = slot, session and login; total runs
 * from before dlopen to the end of the first signature; sign2 is the
 * second signature, for comparison).
 *
 * "steps" keeps the module loaded and reads commands from standard input,
 * one per line, so a test can change the world in between (stop the TPM,
 * start it again): "sign" signs with the first key and verifies, printing
 * "step sign rv=0x... name=... verified=0|1"; "quit" finalizes.
 *
 * The PIN may also come from the environment variable P11HOST_PIN.
 * Output is one record per line, "word key=value ...": numbers in decimal,
 * flags and return values in hex, free text double-quoted with \" \\ and
 * \xNN escapes, byte strings (CKA_ID) in lower-case hex.
 *
 * Exit status: 0 success; 1 the module misbehaved (failed signature, a
 * misuse case that failed, a hang); 2 usage error or the module could not
 * be loaded; 3 the module crashed or hung inside a misuse case.
 *
 * Build:
 *   gcc -O2 -Wall -Wextra -Werror -pthread -I module -o p11host \
 *       tests/c/p11host.c -ldl -lcrypto
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include "pkcs11.h"
#include "p11consts.h"

/* ------------------------------------------------------------------ */
/* Options and globals                                                 */
/* ------------------------------------------------------------------ */

enum mech_kind {
	MK_AUTO,
	MK_RSA_PKCS,        /* CKM_RSA_PKCS over a SHA-256 DigestInfo */
	MK_SHA256_RSA_PKCS, /* CKM_SHA256_RSA_PKCS over the message */
	MK_RSA_PSS,         /* CKM_RSA_PKCS_PSS over a SHA-256 hash */
	MK_SHA256_RSA_PSS,  /* CKM_SHA256_RSA_PKCS_PSS over the message */
	MK_ECDSA,           /* CKM_ECDSA over a SHA-256 hash */
	MK_ECDSA_SHA256,    /* CKM_ECDSA_SHA256 over the message */
};

static struct {
	const char *module;
	const char *mode;
	const char *pin;
	int have_slot;
	CK_SLOT_ID slot;
	long threads;
	long count;
	enum mech_kind mech;
	int login_each;
	int session_each;
	const char *skip;
	int verbose;
} opt = { .threads = 1, .count = 1, .mech = MK_AUTO };

static void *g_dl;
static CK_C_GetFunctionList g_getfl;
static CK_FUNCTION_LIST_PTR F;

#define MAX_KEYS 64
#define HUGE_LEN (1UL << 40)

/* ------------------------------------------------------------------ */
/* Small utilities                                                     */
/* ------------------------------------------------------------------ */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	fflush(stdout);
	fputs("p11host: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static void *xmalloc(size_t n)
{
	void *p = calloc(1, n ? n : 1);
	if (!p)
		die("out of memory");
	return p;
}

struct name { unsigned long v; const char *s; };
#define NAME_ROW(c) { (unsigned long)(c), #c },
static const struct name rv_names[] = { P11_RV_NAMES(NAME_ROW) };
static const struct name mech_names[] = { P11_MECH_NAMES(NAME_ROW) };

static const char *lookup(const struct name *t, size_t n, unsigned long v,
	char *buf, size_t bufsz, const char *prefix)
{
	size_t i;
	for (i = 0; i < n; i++)
		if (t[i].v == v)
			return t[i].s;
	snprintf(buf, bufsz, "%s0x%lx", prefix, v);
	return buf;
}

/* Name of a return value; thread-safe (buffer per thread). */
static const char *rvname(CK_RV rv)
{
	static __thread char buf[40];
	return lookup(rv_names, sizeof(rv_names) / sizeof(rv_names[0]), rv,
		buf, sizeof(buf), "CKR_");
}

static const char *mechname(CK_MECHANISM_TYPE m)
{
	static __thread char buf[40];
	return lookup(mech_names, sizeof(mech_names) / sizeof(mech_names[0]), m,
		buf, sizeof(buf), "CKM_");
}

static const char *classname(CK_OBJECT_CLASS c)
{
	switch (c) {
	case CKO_DATA: return "data";
	case CKO_CERTIFICATE: return "certificate";
	case CKO_PUBLIC_KEY: return "public-key";
	case CKO_PRIVATE_KEY: return "private-key";
	case CKO_SECRET_KEY: return "secret-key";
	case CKO_HW_FEATURE: return "hw-feature";
	case CKO_DOMAIN_PARAMETERS: return "domain-parameters";
	case CKO_MECHANISM: return "mechanism";
	}
	return "other";
}

static const char *keytypename(CK_KEY_TYPE k)
{
	switch (k) {
	case CKK_RSA: return "rsa";
	case CKK_DSA: return "dsa";
	case CKK_DH: return "dh";
	case CKK_EC: return "ec";
	case CKK_GENERIC_SECRET: return "generic-secret";
	case CKK_AES: return "aes";
	}
	return "other";
}

static const char *statename(CK_STATE s)
{
	switch (s) {
	case CKS_RO_PUBLIC_SESSION: return "CKS_RO_PUBLIC_SESSION";
	case CKS_RO_USER_FUNCTIONS: return "CKS_RO_USER_FUNCTIONS";
	case CKS_RW_PUBLIC_SESSION: return "CKS_RW_PUBLIC_SESSION";
	case CKS_RW_USER_FUNCTIONS: return "CKS_RW_USER_FUNCTIONS";
	case CKS_RW_SO_FUNCTIONS: return "CKS_RW_SO_FUNCTIONS";
	}
	return "CKS_?";
}

/* Prints " key=" and the text quoted; blank padding and NULs at the end
 * of fixed-width Cryptoki fields are dropped. */
static void put_text(const char *key, const unsigned char *s, size_t n)
{
	size_t i;
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\0'))
		n--;
	printf(" %s=\"", key);
	for (i = 0; i < n; i++) {
		unsigned char c = s[i];
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			printf("\\x%02x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void put_hex(const char *key, const unsigned char *s, size_t n)
{
	size_t i;
	printf(" %s=", key);
	if (n == 0)
		putchar('-');
	for (i = 0; i < n; i++)
		printf("%02x", s[i]);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sha256(const void *msg, size_t n, unsigned char out[32])
{
	unsigned int len = 32;
	if (!EVP_Digest(msg, n, out, &len, EVP_sha256(), NULL))
		die("EVP_Digest(SHA-256) failed");
}

/* DER prefix of a DigestInfo for SHA-256 (RFC 8017, section 9.2):
 * SEQUENCE { SEQUENCE { OID 2.16.840.1.101.3.4.2.1, NULL },
 *            OCTET STRING (32 bytes) } */
static const unsigned char sha256_digestinfo_prefix[19] = {
	0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
	0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
};

/* ------------------------------------------------------------------ */
/* Loading and initializing the module                                 */
/* ------------------------------------------------------------------ */

static void load_module(void)
{
	CK_RV rv;
	g_dl = dlopen(opt.module, RTLD_NOW | RTLD_LOCAL);
	if (!g_dl)
		die("dlopen %s: %s", opt.module, dlerror());
	*(void **)&g_getfl = dlsym(g_dl, "C_GetFunctionList");
	if (!g_getfl)
		die("%s has no C_GetFunctionList: %s", opt.module, dlerror());
	rv = g_getfl(&F);
	if (rv != CKR_OK || !F)
		die("C_GetFunctionList: rv=0x%08lx (%s)", rv, rvname(rv));
}

/* C_Initialize with CKF_OS_LOCKING_OK: the application is multi-threaded
 * and lets the module use the operating system's locks. */
static CK_RV init_os_locking(void)
{
	CK_C_INITIALIZE_ARGS a;
	memset(&a, 0, sizeof(a));
	a.flags = CKF_OS_LOCKING_OK;
	return F->C_Initialize(&a);
}

static void must(CK_RV rv, const char *what)
{
	if (rv != CKR_OK)
		die("%s: rv=0x%08lx (%s)", what, rv, rvname(rv));
}

/* The slot to use: --slot, else the first slot with a token. */
static CK_RV pick_slot(CK_SLOT_ID *slot)
{
	CK_SLOT_ID ids[64];
	CK_ULONG n = 64;
	CK_RV rv;
	if (opt.have_slot) {
		*slot = opt.slot;
		return CKR_OK;
	}
	rv = F->C_GetSlotList(CK_TRUE, ids, &n);
	if (rv != CKR_OK)
		return rv;
	if (n == 0)
		return CKR_TOKEN_NOT_PRESENT;
	*slot = ids[0];
	return CKR_OK;
}

/* Reads one attribute with the two-call rule into a fresh buffer. */
static CK_RV get_attr(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
	CK_ATTRIBUTE_TYPE type, unsigned char **val, CK_ULONG *len)
{
	CK_ATTRIBUTE a = { type, NULL, 0 };
	CK_RV rv = F->C_GetAttributeValue(s, o, &a, 1);
	*val = NULL;
	*len = 0;
	if (rv != CKR_OK)
		return rv;
	if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return CKR_ATTRIBUTE_TYPE_INVALID;
	if (a.ulValueLen > (1UL << 24))
		return CKR_GENERAL_ERROR;
	a.pValue = xmalloc(a.ulValueLen + 1);
	rv = F->C_GetAttributeValue(s, o, &a, 1);
	if (rv != CKR_OK) {
		free(a.pValue);
		return rv;
	}
	*val = a.pValue;
	*len = a.ulValueLen;
	return CKR_OK;
}

static CK_RV get_ulong(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
	CK_ATTRIBUTE_TYPE type, CK_ULONG *v)
{
	CK_ATTRIBUTE a = { type, v, sizeof(*v) };
	CK_RV rv = F->C_GetAttributeValue(s, o, &a, 1);
	if (rv == CKR_OK && a.ulValueLen != sizeof(*v))
		return CKR_GENERAL_ERROR;
	return rv;
}

static CK_RV get_bool(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
	CK_ATTRIBUTE_TYPE type, CK_BBOOL *v)
{
	CK_ATTRIBUTE a = { type, v, sizeof(*v) };
	CK_RV rv = F->C_GetAttributeValue(s, o, &a, 1);
	if (rv == CKR_OK && a.ulValueLen != sizeof(*v))
		return CKR_GENERAL_ERROR;
	return rv;
}

/* All objects matching a template, up to max. */
static CK_RV find_all(CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG n,
	CK_OBJECT_HANDLE *out, CK_ULONG max, CK_ULONG *found)
{
	CK_RV rv = F->C_FindObjectsInit(s, tmpl, n);
	*found = 0;
	if (rv != CKR_OK)
		return rv;
	while (*found < max) {
		CK_ULONG got = 0;
		rv = F->C_FindObjects(s, out + *found, max - *found, &got);
		if (rv != CKR_OK || got == 0)
			break;
		*found += got;
	}
	if (rv != CKR_OK) {
		F->C_FindObjectsFinal(s);
		return rv;
	}
	return F->C_FindObjectsFinal(s);
}

/* All objects matching a template, in a malloc'd array (free it). */
static CK_RV find_every(CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG n,
	CK_OBJECT_HANDLE **out, CK_ULONG *found)
{
	CK_ULONG cap = 256;
	CK_RV rv = F->C_FindObjectsInit(s, tmpl, n);
	*out = NULL;
	*found = 0;
	if (rv != CKR_OK)
		return rv;
	*out = xmalloc(sizeof(CK_OBJECT_HANDLE) * cap);
	for (;;) {
		CK_ULONG got = 0;
		if (*found == cap) {
			CK_OBJECT_HANDLE *p;
			if (cap >= (1UL << 24))
				break;
			cap *= 2;
			p = realloc(*out, sizeof(CK_OBJECT_HANDLE) * cap);
			if (!p)
				die("out of memory");
			*out = p;
		}
		rv = F->C_FindObjects(s, *out + *found, cap - *found, &got);
		if (rv != CKR_OK || got == 0)
			break;
		*found += got;
	}
	if (rv != CKR_OK) {
		F->C_FindObjectsFinal(s);
		return rv;
	}
	return F->C_FindObjectsFinal(s);
}

/* Curve short name from a DER OBJECT IDENTIFIER (CKA_EC_PARAMS). */
static const char *curve_name(const unsigned char *der, CK_ULONG len)
{
	const unsigned char *p = der;
	ASN1_OBJECT *oid = d2i_ASN1_OBJECT(NULL, &p, (long)len);
	const char *sn = NULL;
	if (oid && p == der + len) {
		int nid = OBJ_obj2nid(oid);
		if (nid != NID_undef)
			sn = OBJ_nid2sn(nid);
	}
	ASN1_OBJECT_free(oid);
	return sn;
}

/* ------------------------------------------------------------------ */
/* Keys: discovery and public-key material for OpenSSL                 */
/* ------------------------------------------------------------------ */

struct key {
	CK_OBJECT_HANDLE priv;
	CK_OBJECT_HANDLE pub;   /* 0 when only the private key has the data */
	CK_KEY_TYPE type;
	unsigned char *id;
	CK_ULONG idlen;
	unsigned char *label;
	CK_ULONG labellen;
	EVP_PKEY *pkey;         /* public key for verification, or NULL */
	size_t siglen;          /* expected signature length */
	int bits;
	const char *curve;
	const char *point_encoding; /* "der" or "raw" for EC keys */
	char why[160];          /* why pkey is NULL */
};

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM *params)
{
	EVP_PKEY *pkey = NULL;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	if (ctx && EVP_PKEY_fromdata_init(ctx) == 1)
		EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
	EVP_PKEY_CTX_free(ctx);
	return pkey;
}

static EVP_PKEY *rsa_public(const unsigned char *n, CK_ULONG nlen,
	const unsigned char *e, CK_ULONG elen)
{
	EVP_PKEY *pkey = NULL;
	BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL);
	BIGNUM *be = BN_bin2bn(e, (int)elen, NULL);
	OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	if (bn && be && b &&
	    OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_N, bn) &&
	    OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_E, be))
		params = OSSL_PARAM_BLD_to_param(b);
	if (params)
		pkey = pkey_from_params("RSA", params);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(b);
	BN_free(bn);
	BN_free(be);
	return pkey;
}

static EVP_PKEY *ec_public_raw(const char *curve, const unsigned char *pt,
	size_t ptlen)
{
	OSSL_PARAM params[3];
	params[0] = OSSL_PARAM_construct_utf8_string(
		OSSL_PKEY_PARAM_GROUP_NAME, (char *)curve, 0);
	params[1] = OSSL_PARAM_construct_octet_string(
		OSSL_PKEY_PARAM_PUB_KEY, (void *)pt, ptlen);
	params[2] = OSSL_PARAM_construct_end();
	return pkey_from_params("EC", params);
}

/* CKA_EC_POINT is a DER OCTET STRING wrapping the uncompressed point
 * (04 || X || Y). A raw point is accepted too, and reported as "raw". */
static EVP_PKEY *ec_public(struct key *k, const unsigned char *params,
	CK_ULONG plen, const unsigned char *point, CK_ULONG ptlen)
{
	const unsigned char *p = point;
	ASN1_OCTET_STRING *os;
	EVP_PKEY *pkey = NULL;

	k->curve = curve_name(params, plen);
	if (!k->curve) {
		snprintf(k->why, sizeof(k->why),
			"CKA_EC_PARAMS is not a named-curve OID known to OpenSSL");
		return NULL;
	}
	os = d2i_ASN1_OCTET_STRING(NULL, &p, (long)ptlen);
	if (os && p == point + ptlen) {
		pkey = ec_public_raw(k->curve, ASN1_STRING_get0_data(os),
			(size_t)ASN1_STRING_length(os));
		if (pkey)
			k->point_encoding = "der";
	}
	ASN1_OCTET_STRING_free(os);
	if (!pkey) {
		pkey = ec_public_raw(k->curve, point, ptlen);
		if (pkey)
			k->point_encoding = "raw";
	}
	if (!pkey)
		snprintf(k->why, sizeof(k->why),
			"CKA_EC_POINT is not a point on %s", k->curve);
	return pkey;
}

/* Public material for k: from the public key object with the same CKA_ID
 * (and key type), else from the private key object itself. */
static void load_public(CK_SESSION_HANDLE s, struct key *k)
{
	CK_OBJECT_CLASS pubclass = CKO_PUBLIC_KEY;
	CK_ATTRIBUTE t[3] = {
		{ CKA_CLASS, &pubclass, sizeof(pubclass) },
		{ CKA_KEY_TYPE, &k->type, sizeof(k->type) },
		{ CKA_ID, k->id, k->idlen },
	};
	CK_OBJECT_HANDLE cand[2] = { CK_INVALID_HANDLE, CK_INVALID_HANDLE };
	CK_OBJECT_HANDLE srcs[2];
	CK_ULONG found = 0;
	int nsrc = 0, i;

	if (find_all(s, t, 3, cand, 1, &found) == CKR_OK && found == 1) {
		k->pub = cand[0];
		srcs[nsrc++] = cand[0];
	}
	srcs[nsrc++] = k->priv;
	snprintf(k->why, sizeof(k->why), "no public key object with this CKA_ID");

	for (i = 0; i < nsrc && !k->pkey; i++) {
		unsigned char *a = NULL, *b = NULL;
		CK_ULONG alen = 0, blen = 0;
		if (k->type == CKK_RSA) {
			if (get_attr(s, srcs[i], CKA_MODULUS, &a, &alen) == CKR_OK &&
			    get_attr(s, srcs[i], CKA_PUBLIC_EXPONENT, &b, &blen) == CKR_OK)
				k->pkey = rsa_public(a, alen, b, blen);
		} else if (k->type == CKK_EC) {
			if (get_attr(s, srcs[i], CKA_EC_PARAMS, &a, &alen) == CKR_OK &&
			    get_attr(s, srcs[i], CKA_EC_POINT, &b, &blen) == CKR_OK)
				k->pkey = ec_public(k, a, alen, b, blen);
		}
		free(a);
		free(b);
	}
	if (k->pkey) {
		k->bits = EVP_PKEY_get_bits(k->pkey);
		k->siglen = k->type == CKK_RSA ? (size_t)(k->bits + 7) / 8
			: 2 * (size_t)((k->bits + 7) / 8);
		k->why[0] = '\0';
	}
}

/* Private keys with CKA_SIGN = TRUE, each with its public key. */
static int find_keys(CK_SESSION_HANDLE s, struct key *keys, int max)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_BBOOL yes = CK_TRUE;
	CK_ATTRIBUTE t[2] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_SIGN, &yes, sizeof(yes) },
	};
	CK_OBJECT_HANDLE h[MAX_KEYS];
	CK_ULONG n = 0, i;
	int nk = 0;
	CK_RV rv = find_all(s, t, 2, h, MAX_KEYS, &n);
	if (rv != CKR_OK) {
		fprintf(stderr, "p11host: finding private keys: %s\n", rvname(rv));
		return 0;
	}
	for (i = 0; i < n && nk < max; i++) {
		struct key *k = &keys[nk];
		memset(k, 0, sizeof(*k));
		k->priv = h[i];
		if (get_ulong(s, h[i], CKA_KEY_TYPE, &k->type) != CKR_OK)
			continue;
		get_attr(s, h[i], CKA_ID, &k->id, &k->idlen);
		get_attr(s, h[i], CKA_LABEL, &k->label, &k->labellen);
		load_public(s, k);
		nk++;
	}
	return nk;
}

static void free_keys(struct key *keys, int n)
{
	int i;
	for (i = 0; i < n; i++) {
		free(keys[i].id);
		free(keys[i].label);
		EVP_PKEY_free(keys[i].pkey);
	}
}

static void print_key(const struct key *k, enum mech_kind mk)
{
	printf("key handle=%lu type=%s", k->priv, keytypename(k->type));
	put_text("label", k->label, k->labellen);
	put_hex("id", k->id, k->idlen);
	if (k->pkey) {
		printf(" bits=%d", k->bits);
		if (k->curve)
			printf(" curve=%s ec_point=%s", k->curve, k->point_encoding);
		printf(" public=%s", k->pub ? "object" : "private-object");
	} else {
		printf(" public=none why=\"%s\"", k->why);
	}
	if (mk != MK_AUTO)
		printf(" mech=%s", mechname(
			mk == MK_RSA_PKCS ? CKM_RSA_PKCS :
			mk == MK_SHA256_RSA_PKCS ? CKM_SHA256_RSA_PKCS :
			mk == MK_RSA_PSS ? CKM_RSA_PKCS_PSS :
			mk == MK_SHA256_RSA_PSS ? CKM_SHA256_RSA_PKCS_PSS :
			mk == MK_ECDSA ? CKM_ECDSA : CKM_ECDSA_SHA256));
	putchar('\n');
}

/* ------------------------------------------------------------------ */
/* Signing and verification                                            */
/* ------------------------------------------------------------------ */

static enum mech_kind mech_for(const struct key *k, enum mech_kind want)
{
	if (want != MK_AUTO)
		return want;
	return k->type == CKK_EC ? MK_ECDSA : MK_RSA_PKCS;
}

static int mech_fits(enum mech_kind mk, CK_KEY_TYPE t)
{
	if (mk == MK_AUTO)
		return t == CKK_RSA || t == CKK_EC;
	if (mk == MK_ECDSA || mk == MK_ECDSA_SHA256)
		return t == CKK_EC;
	return t == CKK_RSA;
}

static CK_RSA_PKCS_PSS_PARAMS pss_sha256 = {
	CKM_SHA256, CKG_MGF1_SHA256, 32
};

/* Fills the mechanism and the data to sign for msg; hash is SHA-256(msg).
 * data must hold at least 51 bytes or msglen. */
static CK_ULONG sign_input(enum mech_kind mk, const unsigned char *msg,
	size_t msglen, const unsigned char hash[32], CK_MECHANISM *m,
	unsigned char *data)
{
	memset(m, 0, sizeof(*m));
	switch (mk) {
	case MK_RSA_PKCS:
		m->mechanism = CKM_RSA_PKCS;
		memcpy(data, sha256_digestinfo_prefix, 19);
		memcpy(data + 19, hash, 32);
		return 51;
	case MK_SHA256_RSA_PKCS:
		m->mechanism = CKM_SHA256_RSA_PKCS;
		break;
	case MK_RSA_PSS:
		m->mechanism = CKM_RSA_PKCS_PSS;
		m->pParameter = &pss_sha256;
		m->ulParameterLen = sizeof(pss_sha256);
		memcpy(data, hash, 32);
		return 32;
	case MK_SHA256_RSA_PSS:
		m->mechanism = CKM_SHA256_RSA_PKCS_PSS;
		m->pParameter = &pss_sha256;
		m->ulParameterLen = sizeof(pss_sha256);
		break;
	case MK_ECDSA:
	case MK_AUTO:
		m->mechanism = CKM_ECDSA;
		memcpy(data, hash, 32);
		return 32;
	case MK_ECDSA_SHA256:
		m->mechanism = CKM_ECDSA_SHA256;
		break;
	}
	memcpy(data, msg, msglen);
	return (CK_ULONG)msglen;
}

/* Checks sig over the SHA-256 hash with OpenSSL. Returns 1 if valid. */
static int verify(const struct key *k, enum mech_kind mk,
	const unsigned char hash[32], const unsigned char *sig, size_t siglen)
{
	EVP_PKEY_CTX *ctx;
	unsigned char *der = NULL;
	const unsigned char *s = sig;
	size_t slen = siglen;
	int ok = 0;

	if (!k->pkey)
		return 0;
	if (k->type == CKK_EC) {
		/* PKCS#11 ECDSA signatures are r || s, each as long as the
		 * order; OpenSSL wants DER SEQUENCE { INTEGER r, INTEGER s }. */
		ECDSA_SIG *es;
		BIGNUM *r, *sv;
		int dl;
		if (siglen == 0 || siglen % 2 != 0)
			return 0;
		es = ECDSA_SIG_new();
		r = BN_bin2bn(sig, (int)(siglen / 2), NULL);
		sv = BN_bin2bn(sig + siglen / 2, (int)(siglen / 2), NULL);
		if (!es || !r || !sv || !ECDSA_SIG_set0(es, r, sv)) {
			BN_free(r);
			BN_free(sv);
			ECDSA_SIG_free(es);
			return 0;
		}
		dl = i2d_ECDSA_SIG(es, &der);
		ECDSA_SIG_free(es);
		if (dl <= 0)
			return 0;
		s = der;
		slen = (size_t)dl;
	}
	ctx = EVP_PKEY_CTX_new(k->pkey, NULL);
	if (ctx && EVP_PKEY_verify_init(ctx) == 1 &&
	    EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1) {
		int pad_ok = 1;
		if (k->type == CKK_RSA && (mk == MK_RSA_PSS || mk == MK_SHA256_RSA_PSS))
			pad_ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) == 1 &&
				EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) == 1 &&
				EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, 32) == 1;
		else if (k->type == CKK_RSA)
			pad_ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1;
		ok = pad_ok && EVP_PKEY_verify(ctx, s, slen, hash, 32) == 1;
	}
	EVP_PKEY_CTX_free(ctx);
	OPENSSL_free(der);
	return ok;
}

/* One signature by the two-call rule: C_SignInit, C_Sign with NULL for
 * the length, C_Sign with a buffer. *stage names the failing call. */
static CK_RV sign_once(CK_SESSION_HANDLE s, const struct key *k,
	CK_MECHANISM *m, unsigned char *data, CK_ULONG dlen,
	unsigned char *sig, CK_ULONG sigcap, CK_ULONG *siglen,
	const char **stage)
{
	CK_RV rv;
	CK_ULONG len = 0;
	*stage = "C_SignInit";
	rv = F->C_SignInit(s, m, k->priv);
	if (rv != CKR_OK)
		return rv;
	*stage = "C_Sign(length)";
	rv = F->C_Sign(s, data, dlen, NULL, &len);
	if (rv != CKR_OK)
		return rv;
	if (len == 0 || len > sigcap) {
		/* The operation is still active: the caller closes the
		 * session. */
		*stage = "C_Sign(length out of range)";
		return CKR_GENERAL_ERROR;
	}
	*stage = "C_Sign";
	rv = F->C_Sign(s, data, dlen, sig, &len);
	*siglen = len;
	return rv;
}

/* ------------------------------------------------------------------ */
/* Mode: info                                                          */
/* ------------------------------------------------------------------ */

static void flag_names(CK_FLAGS f, const struct name *t, size_t n)
{
	size_t i;
	int first = 1;
	printf(" flag_names=");
	for (i = 0; i < n; i++)
		if (f & t[i].v) {
			printf("%s%s", first ? "" : ",", t[i].s);
			first = 0;
		}
	if (first)
		putchar('-');
}

static const struct name token_flags[] = {
	{ CKF_RNG, "RNG" }, { CKF_WRITE_PROTECTED, "WRITE_PROTECTED" },
	{ CKF_LOGIN_REQUIRED, "LOGIN_REQUIRED" },
	{ CKF_USER_PIN_INITIALIZED, "USER_PIN_INITIALIZED" },
	{ CKF_RESTORE_KEY_NOT_NEEDED, "RESTORE_KEY_NOT_NEEDED" },
	{ CKF_CLOCK_ON_TOKEN, "CLOCK_ON_TOKEN" },
	{ CKF_PROTECTED_AUTHENTICATION_PATH, "PROTECTED_AUTHENTICATION_PATH" },
	{ CKF_DUAL_CRYPTO_OPERATIONS, "DUAL_CRYPTO_OPERATIONS" },
	{ CKF_TOKEN_INITIALIZED, "TOKEN_INITIALIZED" },
	{ CKF_USER_PIN_COUNT_LOW, "USER_PIN_COUNT_LOW" },
	{ CKF_USER_PIN_FINAL_TRY, "USER_PIN_FINAL_TRY" },
	{ CKF_USER_PIN_LOCKED, "USER_PIN_LOCKED" },
	{ CKF_USER_PIN_TO_BE_CHANGED, "USER_PIN_TO_BE_CHANGED" },
	{ CKF_SO_PIN_LOCKED, "SO_PIN_LOCKED" },
};

static const struct name slot_flags[] = {
	{ CKF_TOKEN_PRESENT, "TOKEN_PRESENT" },
	{ CKF_REMOVABLE_DEVICE, "REMOVABLE_DEVICE" },
	{ CKF_HW_SLOT, "HW_SLOT" },
};

static const struct name mech_flags[] = {
	{ CKF_HW, "HW" }, { CKF_ENCRYPT, "ENCRYPT" }, { CKF_DECRYPT, "DECRYPT" },
	{ CKF_DIGEST, "DIGEST" }, { CKF_SIGN, "SIGN" },
	{ CKF_SIGN_RECOVER, "SIGN_RECOVER" }, { CKF_VERIFY, "VERIFY" },
	{ CKF_VERIFY_RECOVER, "VERIFY_RECOVER" }, { CKF_GENERATE, "GENERATE" },
	{ CKF_GENERATE_KEY_PAIR, "GENERATE_KEY_PAIR" }, { CKF_WRAP, "WRAP" },
	{ CKF_UNWRAP, "UNWRAP" }, { CKF_DERIVE, "DERIVE" },
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static void print_interfaces(void)
{
	CK_C_GetInterfaceList gil;
	CK_INTERFACE list[8];
	CK_ULONG n = 8, i;
	CK_RV rv;
	*(void **)&gil = dlsym(g_dl, "C_GetInterfaceList");
	if (!gil) {
		printf("interfaces exported=0\n");
		return;
	}
	rv = gil(list, &n);
	if (rv != CKR_OK) {
		printf("interfaces exported=1 rv=0x%08lx\n", rv);
		return;
	}
	printf("interfaces exported=1 count=%lu\n", n);
	for (i = 0; i < n; i++) {
		const char *name = (const char *)list[i].pInterfaceName;
		const CK_VERSION *v = list[i].pFunctionList;
		printf("interface");
		put_text("name", (const unsigned char *)(name ? name : ""),
			name ? strlen(name) : 0);
		if (v)
			printf(" version=%u.%u", v->major, v->minor);
		printf(" flags=0x%lx same_as_getfunctionlist=%d\n",
			list[i].flags, list[i].pFunctionList == (void *)F);
	}
}

static int print_objects(CK_SESSION_HANDLE s, CK_SLOT_ID slot)
{
	CK_OBJECT_HANDLE *h;
	CK_ULONG n = 0, i;
	CK_RV rv = find_every(s, NULL, 0, &h, &n);
	if (rv != CKR_OK) {
		printf("objects slot=%lu rv=0x%08lx\n", slot, rv);
		free(h);
		return 1;
	}
	printf("objects slot=%lu count=%lu\n", slot, n);
	for (i = 0; i < n; i++) {
		CK_OBJECT_CLASS cls = ~0UL;
		CK_KEY_TYPE kt;
		CK_BBOOL b;
		unsigned char *v = NULL;
		CK_ULONG vl = 0;
		printf("object slot=%lu handle=%lu", slot, h[i]);
		if (get_ulong(s, h[i], CKA_CLASS, &cls) == CKR_OK)
			printf(" class=%s", classname(cls));
		else
			printf(" class=-");
		if (get_attr(s, h[i], CKA_LABEL, &v, &vl) == CKR_OK)
			put_text("label", v, vl);
		free(v);
		if (get_attr(s, h[i], CKA_ID, &v, &vl) == CKR_OK)
			put_hex("id", v, vl);
		free(v);
		if (cls == CKO_PUBLIC_KEY || cls == CKO_PRIVATE_KEY ||
		    cls == CKO_SECRET_KEY) {
			if (get_ulong(s, h[i], CKA_KEY_TYPE, &kt) == CKR_OK)
				printf(" key_type=%s", keytypename(kt));
			else
				printf(" key_type=-");
			if (get_attr(s, h[i], CKA_MODULUS, &v, &vl) == CKR_OK)
				printf(" bits=%lu", vl * 8);
			free(v);
			if (get_attr(s, h[i], CKA_EC_PARAMS, &v, &vl) == CKR_OK) {
				const char *c = curve_name(v, vl);
				printf(" curve=%s", c ? c : "unknown");
			}
			free(v);
			if (get_bool(s, h[i], CKA_SIGN, &b) == CKR_OK)
				printf(" sign=%u", b);
		}
		if (get_bool(s, h[i], CKA_TOKEN, &b) == CKR_OK)
			printf(" token=%u", b);
		if (get_bool(s, h[i], CKA_PRIVATE, &b) == CKR_OK)
			printf(" private=%u", b);
		putchar('\n');
	}
	free(h);
	return 0;
}

static int mode_info(void)
{
	CK_INFO info;
	CK_SLOT_ID slots[64];
	CK_ULONG nslots = NELEM(slots), i;
	CK_RV rv;
	int bad = 0;

	printf("module path=\"%s\" function_list_version=%u.%u\n", opt.module,
		F->version.major, F->version.minor);
	print_interfaces();
	must(init_os_locking(), "C_Initialize");
	must(F->C_GetInfo(&info), "C_GetInfo");
	printf("info cryptoki=%u.%u", info.cryptokiVersion.major,
		info.cryptokiVersion.minor);
	put_text("manufacturer", info.manufacturerID, sizeof(info.manufacturerID));
	put_text("description", info.libraryDescription,
		sizeof(info.libraryDescription));
	printf(" library_version=%u.%u flags=0x%lx\n", info.libraryVersion.major,
		info.libraryVersion.minor, info.flags);

	must(F->C_GetSlotList(CK_FALSE, slots, &nslots), "C_GetSlotList");
	printf("slots count=%lu\n", nslots);
	for (i = 0; i < nslots; i++) {
		CK_SLOT_INFO si;
		CK_TOKEN_INFO ti;
		CK_MECHANISM_TYPE mechs[256];
		CK_ULONG nm = NELEM(mechs), j;
		CK_SESSION_HANDLE s;

		if (opt.have_slot && slots[i] != opt.slot)
			continue;
		rv = F->C_GetSlotInfo(slots[i], &si);
		if (rv != CKR_OK) {
			printf("slot id=%lu rv=0x%08lx\n", slots[i], rv);
			bad = 1;
			continue;
		}
		printf("slot id=%lu", slots[i]);
		put_text("description", si.slotDescription, sizeof(si.slotDescription));
		put_text("manufacturer", si.manufacturerID, sizeof(si.manufacturerID));
		printf(" flags=0x%lx", si.flags);
		flag_names(si.flags, slot_flags, NELEM(slot_flags));
		printf(" hardware=%u.%u firmware=%u.%u\n", si.hardwareVersion.major,
			si.hardwareVersion.minor, si.firmwareVersion.major,
			si.firmwareVersion.minor);
		if (!(si.flags & CKF_TOKEN_PRESENT))
			continue;

		rv = F->C_GetTokenInfo(slots[i], &ti);
		if (rv != CKR_OK) {
			printf("token slot=%lu rv=0x%08lx\n", slots[i], rv);
			bad = 1;
			continue;
		}
		printf("token slot=%lu", slots[i]);
		put_text("label", ti.label, sizeof(ti.label));
		put_text("manufacturer", ti.manufacturerID, sizeof(ti.manufacturerID));
		put_text("model", ti.model, sizeof(ti.model));
		put_text("serial", ti.serialNumber, sizeof(ti.serialNumber));
		printf(" flags=0x%lx", ti.flags);
		flag_names(ti.flags, token_flags, NELEM(token_flags));
		printf(" max_sessions=%ld sessions=%ld max_rw_sessions=%ld"
			" rw_sessions=%ld min_pin=%lu max_pin=%lu"
			" hardware=%u.%u firmware=%u.%u\n",
			(long)ti.ulMaxSessionCount, (long)ti.ulSessionCount,
			(long)ti.ulMaxRwSessionCount, (long)ti.ulRwSessionCount,
			ti.ulMinPinLen, ti.ulMaxPinLen,
			ti.hardwareVersion.major, ti.hardwareVersion.minor,
			ti.firmwareVersion.major, ti.firmwareVersion.minor);

		rv = F->C_GetMechanismList(slots[i], mechs, &nm);
		if (rv != CKR_OK) {
			printf("mechanisms slot=%lu rv=0x%08lx\n", slots[i], rv);
			bad = 1;
		} else {
			printf("mechanisms slot=%lu count=%lu\n", slots[i], nm);
			for (j = 0; j < nm; j++) {
				CK_MECHANISM_INFO mi;
				printf("mechanism slot=%lu type=0x%lx name=%s", slots[i],
					mechs[j], mechname(mechs[j]));
				rv = F->C_GetMechanismInfo(slots[i], mechs[j], &mi);
				if (rv == CKR_OK) {
					printf(" min=%lu max=%lu flags=0x%lx", mi.ulMinKeySize,
						mi.ulMaxKeySize, mi.flags);
					flag_names(mi.flags, mech_flags, NELEM(mech_flags));
				} else {
					printf(" rv=0x%08lx", rv);
					bad = 1;
				}
				putchar('\n');
			}
		}

		rv = F->C_OpenSession(slots[i], CKF_SERIAL_SESSION, NULL, NULL, &s);
		if (rv != CKR_OK) {
			printf("session slot=%lu rv=0x%08lx name=%s\n", slots[i], rv,
				rvname(rv));
			/* A token nobody has initialized yet may refuse sessions. */
			if (ti.flags & CKF_TOKEN_INITIALIZED)
				bad = 1;
			continue;
		}
		if (opt.pin) {
			rv = F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)opt.pin,
				strlen(opt.pin));
			printf("login slot=%lu rv=0x%08lx name=%s\n", slots[i], rv,
				rvname(rv));
			if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
				bad = 1;
		}
		bad |= print_objects(s, slots[i]);
		F->C_CloseSession(s);
	}
	rv = F->C_Finalize(NULL);
	printf("finalize rv=0x%08lx\n", rv);
	return bad || rv != CKR_OK;
}

/* ------------------------------------------------------------------ */
/* Mode: sign                                                          */
/* ------------------------------------------------------------------ */

static struct key g_keys[MAX_KEYS];
static int g_nkeys;

struct worker {
	int idx;
	pthread_t th;
	unsigned long nsigned, nverified, nfailed;
	uint64_t *lat_us;
	unsigned long nlat;
	char err[256];
};

static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;
static int err_printed;

static void report_error(struct worker *w, long iter, const struct key *k,
	const char *stage, CK_RV rv)
{
	pthread_mutex_lock(&err_lock);
	if (err_printed++ < 20)
		fprintf(stderr, "error thread=%d iter=%ld key=%lu stage=%s"
			" rv=0x%08lx name=%s\n", w->idx, iter, k ? k->priv : 0,
			stage, rv, rvname(rv));
	pthread_mutex_unlock(&err_lock);
}

static void *sign_worker(void *arg)
{
	struct worker *w = arg;
	CK_SESSION_HANDLE s;
	long i;
	CK_RV rv = F->C_OpenSession(opt.slot, CKF_SERIAL_SESSION, NULL, NULL, &s);
	if (rv != CKR_OK) {
		report_error(w, -1, NULL, "C_OpenSession", rv);
		w->nfailed = (unsigned long)opt.count;
		return NULL;
	}
	if (opt.pin && opt.login_each) {
		rv = F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)opt.pin,
			strlen(opt.pin));
		if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
			report_error(w, -1, NULL, "C_Login", rv);
	}
	for (i = 0; i < opt.count; i++) {
		const struct key *k = &g_keys[(w->idx + i) % g_nkeys];
		enum mech_kind mk = mech_for(k, opt.mech);
		char msg[128];
		unsigned char hash[32], data[160], sig[1024];
		CK_MECHANISM m;
		CK_ULONG dlen, siglen = 0;
		const char *stage;
		uint64_t t0;
		int n = snprintf(msg, sizeof(msg),
			"p11host pid=%d thread=%d iteration=%ld key=%lu",
			(int)getpid(), w->idx, i, k->priv);

		sha256(msg, (size_t)n, hash);
		dlen = sign_input(mk, (unsigned char *)msg, (size_t)n, hash, &m, data);
		if (opt.session_each && i > 0) {
			/* A new session for every signature: sessions open and
			 * close on all threads at once. */
			F->C_CloseSession(s);
			rv = F->C_OpenSession(opt.slot, CKF_SERIAL_SESSION, NULL, NULL, &s);
			if (rv != CKR_OK) {
				report_error(w, i, k, "C_OpenSession", rv);
				w->nfailed += (unsigned long)(opt.count - i);
				return NULL;
			}
		}
		t0 = now_ns();
		rv = sign_once(s, k, &m, data, dlen, sig, sizeof(sig), &siglen, &stage);
		if (rv != CKR_OK) {
			w->nfailed++;
			report_error(w, i, k, stage, rv);
			/* Start over in a clean session: the failed call may have
			 * left an operation active. */
			F->C_CloseSession(s);
			if (F->C_OpenSession(opt.slot, CKF_SERIAL_SESSION, NULL, NULL,
			    &s) != CKR_OK) {
				w->nfailed += (unsigned long)(opt.count - i - 1);
				return NULL;
			}
			continue;
		}
		w->lat_us[w->nlat++] = (now_ns() - t0) / 1000;
		w->nsigned++;
		if (verify(k, mk, hash, sig, siglen)) {
			w->nverified++;
		} else {
			w->nfailed++;
			report_error(w, i, k, "verify", CKR_SIGNATURE_INVALID);
		}
	}
	F->C_CloseSession(s);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static CK_RV login_user(CK_SESSION_HANDLE s)
{
	CK_RV rv;
	if (!opt.pin)
		return CKR_OK;
	rv = F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)opt.pin, strlen(opt.pin));
	return rv == CKR_USER_ALREADY_LOGGED_IN ? CKR_OK : rv;
}

/* Keeps only the keys the requested mechanism can use, and warms up the
 * OpenSSL keys before threads share them. */
static void select_keys(enum mech_kind mk)
{
	int i, n = 0;
	for (i = 0; i < g_nkeys; i++) {
		if (!mech_fits(mk, g_keys[i].type)) {
			EVP_PKEY_free(g_keys[i].pkey);
			free(g_keys[i].id);
			free(g_keys[i].label);
			continue;
		}
		g_keys[n++] = g_keys[i];
	}
	g_nkeys = n;
	for (i = 0; i < g_nkeys; i++) {
		if (g_keys[i].pkey) {
			EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(g_keys[i].pkey, NULL);
			if (c)
				EVP_PKEY_verify_init(c);
			EVP_PKEY_CTX_free(c);
		}
	}
}

/* proc_status reads a number from /proc/self/status ("VmRSS:" in kB,
 * "Threads:"), or -1. */
static long proc_status(const char *field)
{
	char line[256];
	long v = -1;
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, field, strlen(field)) == 0) {
			v = strtol(line + strlen(field), NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static int mode_sign(void)
{
	CK_SESSION_HANDLE s;
	struct worker *w;
	uint64_t t0, elapsed, *all;
	unsigned long nsigned = 0, nverified = 0, nfailed = 0, nall = 0;
	long t;
	CK_RV rv;
	int i;

	must(init_os_locking(), "C_Initialize");
	must(pick_slot(&opt.slot), "choosing a slot");
	/* The first session: logs in (once) and stays open so the login
	 * lasts while the workers run. */
	must(F->C_OpenSession(opt.slot, CKF_SERIAL_SESSION, NULL, NULL, &s),
		"C_OpenSession");
	must(login_user(s), "C_Login");
	g_nkeys = find_keys(s, g_keys, MAX_KEYS);
	select_keys(opt.mech);
	if (g_nkeys == 0)
		die("no private key with CKA_SIGN for this mechanism in slot %lu%s",
			opt.slot, opt.pin ? "" : " (a PIN may be needed: --pin)");
	printf("sign slot=%lu threads=%ld count=%ld keys=%d\n", opt.slot,
		opt.threads, opt.count, g_nkeys);
	for (i = 0; i < g_nkeys; i++)
		print_key(&g_keys[i], mech_for(&g_keys[i], opt.mech));
	fflush(stdout);

	w = xmalloc(sizeof(*w) * (size_t)opt.threads);
	t0 = now_ns();
	for (t = 0; t < opt.threads; t++) {
		w[t].idx = (int)t;
		w[t].lat_us = xmalloc(sizeof(uint64_t) * (size_t)opt.count);
		if (pthread_create(&w[t].th, NULL, sign_worker, &w[t]) != 0)
			die("pthread_create failed");
	}
	for (t = 0; t < opt.threads; t++)
		pthread_join(w[t].th, NULL);
	elapsed = now_ns() - t0;

	all = xmalloc(sizeof(uint64_t) * (size_t)(opt.threads * opt.count));
	for (t = 0; t < opt.threads; t++) {
		nsigned += w[t].nsigned;
		nverified += w[t].nverified;
		nfailed += w[t].nfailed;
		memcpy(all + nall, w[t].lat_us, sizeof(uint64_t) * w[t].nlat);
		nall += w[t].nlat;
		free(w[t].lat_us);
	}
	qsort(all, nall, sizeof(uint64_t), cmp_u64);
	printf("signed=%lu verified=%lu failed=%lu elapsed_ms=%llu",
		nsigned, nverified, nfailed,
		(unsigned long long)(elapsed / 1000000));
	if (nall > 0)
		printf(" p50_us=%llu p95_us=%llu max_us=%llu per_s=%.1f",
			(unsigned long long)all[(nall - 1) * 50 / 100],
			(unsigned long long)all[(nall - 1) * 95 / 100],
			(unsigned long long)all[nall - 1],
			(double)nsigned * 1e9 / (double)(elapsed ? elapsed : 1));
	else
		printf(" p50_us=- p95_us=- max_us=- per_s=0");
	printf(" rss_kb=%ld threads=%ld", proc_status("VmRSS:"), proc_status("Threads:"));
	putchar('\n');
	free(all);
	free(w);

	F->C_CloseSession(s);
	rv = F->C_Finalize(NULL);
	printf("finalize rv=0x%08lx\n", rv);
	free_keys(g_keys, g_nkeys);
	return !(nfailed == 0 && nverified == nsigned &&
		nsigned == (unsigned long)(opt.threads * opt.count) &&
		rv == CKR_OK);
}

/* ------------------------------------------------------------------ */
/* Mode: misuse                                                        */
/* ------------------------------------------------------------------ */

/*
 * Each case calls the module the wrong way (or a right way with a
 * precondition) and compares the return value with the one code that
 * simple-tpm-pk11 returns and PKCS#11 2.40 prescribes for it (another
 * module may legitimately answer some cases with another allowed code).
 * Output, one line per case, the status always last:
 *   case=NAME want=CKR_X got=CKR_Y rv=0x%08lx [detail="..."] ok|FAIL
 *   case=NAME reason="..." skip
 *   case=NAME signal=N crashed|hung FAIL   (exit status 3; hung = 60 s)
 *   case=NAME exited-inside-module FAIL    (the module called exit())
 * then "misuse ok=N fail=N skip=N". -v writes "running case=NAME" to
 * stderr as each case starts, which identifies a case the Go runtime
 * itself crashed in and, with stdout and stderr in one pipe, tells which
 * case each of the module's log lines belongs to.
 *
 * The host never passes a pointer the module could read past, except in
 * the cases whose point is that the module must refuse a length before
 * reading: those use a buffer that ends at a PROT_NONE page, so a module
 * that reads on crashes at once (reported as "crashed") instead of
 * silently reading the host's memory. They run last.
 */

static const char *volatile g_case = "(none)";
static volatile int g_in_case;
static int n_ok, n_fail, n_skip;
static char g_detail[256];

static void crash_handler(int sig)
{
	char buf[256];
	int n = snprintf(buf, sizeof(buf), "case=%s signal=%d %s FAIL\n",
		g_case, sig, sig == SIGALRM ? "hung" : "crashed");
	if (n > 0)
		(void)!write(1, buf, (size_t)n);
	_exit(3);
}

/* A module that calls exit() inside a case (SoftHSM does when an
 * allocation fails) is reported too. */
static void exit_in_case(void)
{
	if (g_in_case) {
		printf("case=%s exited-inside-module FAIL\n", g_case);
		fflush(stdout);
	}
}

static void install_crash_handlers(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = crash_handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGALRM, &sa, NULL); /* a case that hangs for 60 s */
	atexit(exit_in_case);
}

/* --skip: comma-separated names; a trailing '*' matches a prefix. */
static int skipped_by_option(const char *name)
{
	const char *p = opt.skip;
	size_t nl = strlen(name);
	while (p && *p) {
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l > 0 && p[l - 1] == '*') {
			if (nl >= l - 1 && strncmp(name, p, l - 1) == 0)
				return 1;
		} else if (l == nl && strncmp(name, p, l) == 0) {
			return 1;
		}
		p = e ? e + 1 : NULL;
	}
	return 0;
}

static void skip(const char *name, const char *reason)
{
	printf("case=%s reason=\"%s\" skip\n", name, reason);
	n_skip++;
}

/* Starts a case; 0 when --skip names it. */
static int begin(const char *name)
{
	if (skipped_by_option(name)) {
		skip(name, "--skip");
		return 0;
	}
	g_case = name;
	g_detail[0] = '\0';
	if (opt.verbose)
		fprintf(stderr, "running case=%s\n", name);
	g_in_case = 1;
	alarm(60);
	return 1;
}

static void detail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void detail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(g_detail, sizeof(g_detail), fmt, ap);
	va_end(ap);
}

/* Reports the current case: ok when rv is want and extra holds (extra
 * is for postconditions; detail() says what was wrong). */
static int report(CK_RV rv, CK_RV want, int extra)
{
	alarm(0);
	g_in_case = 0;
	/* Two printf calls: rvname() may use one static buffer. */
	printf("case=%s want=%s", g_case, rvname(want));
	printf(" got=%s rv=0x%08lx", rvname(rv), rv);
	if (g_detail[0])
		printf(" detail=\"%s\"", g_detail);
	if (rv == want && extra) {
		printf(" ok\n");
		n_ok++;
		return 1;
	}
	printf(" FAIL\n");
	n_fail++;
	return 0;
}

#define CHECK(rv, want) report((rv), (want), 1)
#define CHECKX(rv, extra, want) report((rv), (want), (extra))
/* CASE("name") statement: runs the statement unless skipped. */
#define CASE(name) if (begin(name))
/* The same in a new read-only session *s (the old one is closed), so
 * that what one case leaves behind cannot change the next result. */
#define CASE_FRESH(name, s, slot) if (begin(name) && fresh(&(s), (slot)))

/* Application mutex callbacks, for the C_Initialize cases. */
static CK_RV mx_create(CK_VOID_PTR_PTR pp)
{
	pthread_mutex_t *m;
	if (!pp)
		return CKR_ARGUMENTS_BAD;
	m = xmalloc(sizeof(*m));
	pthread_mutex_init(m, NULL);
	*pp = m;
	return CKR_OK;
}
static CK_RV mx_destroy(CK_VOID_PTR p)
{
	if (!p)
		return CKR_MUTEX_BAD;
	pthread_mutex_destroy(p);
	free(p);
	return CKR_OK;
}
static CK_RV mx_lock(CK_VOID_PTR p)
{
	return p && pthread_mutex_lock(p) == 0 ? CKR_OK : CKR_MUTEX_BAD;
}
static CK_RV mx_unlock(CK_VOID_PTR p)
{
	return p && pthread_mutex_unlock(p) == 0 ? CKR_OK : CKR_MUTEX_NOT_LOCKED;
}

/* A buffer of n usable bytes that ends exactly at a PROT_NONE page. */
static void *guarded(size_t n)
{
	long pg = sysconf(_SC_PAGESIZE);
	size_t span = ((n + (size_t)pg - 1) / (size_t)pg) * (size_t)pg;
	unsigned char *p = mmap(NULL, span + (size_t)pg, PROT_READ | PROT_WRITE,
		MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap failed");
	if (mprotect(p + span, (size_t)pg, PROT_NONE) != 0)
		die("mprotect failed");
	return p + span - n;
}

static CK_SESSION_HANDLE open_ro(CK_SLOT_ID slot)
{
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	CK_RV rv = F->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s);
	if (rv != CKR_OK) {
		fprintf(stderr, "p11host: C_OpenSession: %s\n", rvname(rv));
		return CK_INVALID_HANDLE;
	}
	return s;
}

/* For cases that need an active signing operation: starts it, or
 * reports the case as failed because it could not. */
static int signinit_ok(CK_SESSION_HANDLE s, CK_MECHANISM *m,
	CK_OBJECT_HANDLE key)
{
	CK_RV rv = F->C_SignInit(s, m, key);
	if (rv == CKR_OK)
		return 1;
	detail("precondition C_SignInit(%s) failed", mechname(m->mechanism));
	CHECK(rv, CKR_OK);
	return 0;
}

static int fresh(CK_SESSION_HANDLE *s, CK_SLOT_ID slot)
{
	F->C_CloseSession(*s);
	*s = open_ro(slot);
	return 1;
}

static int has_mech(const CK_MECHANISM_TYPE *m, CK_ULONG n, CK_MECHANISM_TYPE t)
{
	CK_ULONG i;
	for (i = 0; i < n; i++)
		if (m[i] == t)
			return 1;
	return 0;
}

static CK_STATE session_state(CK_SESSION_HANDLE s, CK_RV *rv)
{
	CK_SESSION_INFO si;
	memset(&si, 0xff, sizeof(si));
	*rv = F->C_GetSessionInfo(s, &si);
	return si.state;
}

/* A handle that is not in list[0..n). */
static CK_ULONG unused_handle(const CK_ULONG *list, CK_ULONG n, CK_ULONG start)
{
	CK_ULONG h = start, i;
	for (;;) {
		for (i = 0; i < n && list[i] != h; i++)
			;
		if (i == n)
			return h;
		h++;
	}
}

/* Signs and verifies once with k in a new session; for the cases that
 * check the module still works. */
static CK_RV sign_check(CK_SLOT_ID slot, const struct key *k, int *verified)
{
	CK_SESSION_HANDLE s = open_ro(slot);
	unsigned char hash[32], data[160], sig[1024];
	const char msg[] = "p11host misuse check";
	enum mech_kind mk = mech_for(k, MK_AUTO);
	CK_MECHANISM m;
	CK_ULONG dlen, siglen = 0;
	const char *stage;
	CK_RV rv;

	*verified = 0;
	if (s == CK_INVALID_HANDLE)
		return CKR_GENERAL_ERROR;
	sha256(msg, sizeof(msg) - 1, hash);
	dlen = sign_input(mk, (const unsigned char *)msg, sizeof(msg) - 1, hash,
		&m, data);
	rv = sign_once(s, k, &m, data, dlen, sig, sizeof(sig), &siglen, &stage);
	if (rv == CKR_OK)
		*verified = verify(k, mk, hash, sig, siglen);
	else
		detail("%s failed", stage);
	F->C_CloseSession(s);
	return rv;
}

static void init_with_callbacks(int which_mask, CK_FLAGS flags, CK_RV *rv)
{
	CK_C_INITIALIZE_ARGS a;
	memset(&a, 0, sizeof(a));
	if (which_mask & 1) a.CreateMutex = mx_create;
	if (which_mask & 2) a.DestroyMutex = mx_destroy;
	if (which_mask & 4) a.LockMutex = mx_lock;
	if (which_mask & 8) a.UnlockMutex = mx_unlock;
	a.flags = flags;
	*rv = F->C_Initialize(&a);
}

/* After a C_Initialize case that should have failed but did not. */
static void undo_init(CK_RV rv)
{
	if (rv == CKR_OK)
		F->C_Finalize(NULL);
}

static int mode_misuse(void)
{
	CK_RV rv;
	CK_INFO info;
	CK_SLOT_INFO si;
	CK_TOKEN_INFO ti;
	CK_SESSION_INFO sinfo;
	CK_SLOT_ID slot = 0, slots[64], bad_slot;
	CK_ULONG nslots = 0, n, i;
	CK_MECHANISM_TYPE mechs[256];
	CK_ULONG nmechs = 0;
	CK_SESSION_HANDLE s_keep = CK_INVALID_HANDLE, s_rw = CK_INVALID_HANDLE;
	CK_SESSION_HANDLE s, s2;
	CK_OBJECT_HANDLE h1;
	CK_OBJECT_HANDLE *objs = NULL;
	CK_ULONG nobjs = 0;
	struct key keys[MAX_KEYS];
	int nkeys = 0, verified;
	struct key *rsa = NULL, *ec = NULL, *any = NULL;
	int logged_in = 0, have_rw = 0;
	unsigned char hash[32], data[600], sig[1024];
	CK_ULONG siglen;
	CK_MECHANISM m;
	CK_ATTRIBUTE a, at[2];
	int dummy = 0;
	const CK_ULONG bad_session = 0x7fffabcdUL;
	const CK_ULONG unknown_mech = 0x7ffe0002UL;   /* not a CKM_ value */
	const CK_ULONG unknown_attr = 0x7ffe0001UL;   /* not a CKA_ value */
	const char *pin = opt.pin ? opt.pin : "0000";
	CK_ULONG pinlen = strlen(pin);

	/* install_crash_handlers() ran before the module was loaded, so a
	 * Go runtime's own SIGSEGV handler chains to ours for C faults. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	memset(data, 0x5a, sizeof(data));
	sha256("p11host", 7, hash);

	/* ---- Before C_Initialize ---------------------------------------- */
	/* Only C_GetFunctionList (and 3.0's C_GetInterface*) may be called
	 * before C_Initialize; everything else returns NOT_INITIALIZED. */
	CASE("getfunctionlist_null") CHECK(g_getfl(NULL), CKR_ARGUMENTS_BAD);
	CASE("uninit_getinfo") CHECK(F->C_GetInfo(&info),
		CKR_CRYPTOKI_NOT_INITIALIZED);
	CASE("uninit_getslotlist") {
		n = 0;
		CHECK(F->C_GetSlotList(CK_FALSE, NULL, &n),
			CKR_CRYPTOKI_NOT_INITIALIZED);
	}
	CASE("uninit_getslotinfo") CHECK(F->C_GetSlotInfo(0, &si),
		CKR_CRYPTOKI_NOT_INITIALIZED);
	CASE("uninit_gettokeninfo") CHECK(F->C_GetTokenInfo(0, &ti),
		CKR_CRYPTOKI_NOT_INITIALIZED);
	CASE("uninit_opensession") CHECK(F->C_OpenSession(0, CKF_SERIAL_SESSION,
		NULL, NULL, &s), CKR_CRYPTOKI_NOT_INITIALIZED);
	CASE("uninit_closeallsessions") CHECK(F->C_CloseAllSessions(0),
		CKR_CRYPTOKI_NOT_INITIALIZED);
	CASE("uninit_getsessioninfo") CHECK(F->C_GetSessionInfo(1, &sinfo),
		CKR_CRYPTOKI_NOT_INITIALIZED);
	CASE("uninit_waitforslotevent") CHECK(F->C_WaitForSlotEvent(
		CKF_DONT_BLOCK, &slot, NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
	CASE("uninit_finalize") CHECK(F->C_Finalize(NULL),
		CKR_CRYPTOKI_NOT_INITIALIZED);

	/* 3.0 interface discovery, when exported (allowed before init). */
	{
		CK_C_GetInterfaceList gil;
		CK_C_GetInterface gi;
		*(void **)&gil = dlsym(g_dl, "C_GetInterfaceList");
		*(void **)&gi = dlsym(g_dl, "C_GetInterface");
		if (!gil || !gi) {
			skip("getinterfacelist_null_count", "C_GetInterface* not exported");
			skip("getinterfacelist", "C_GetInterface* not exported");
			skip("getinterface_default", "C_GetInterface* not exported");
			skip("getinterface_null_pp", "C_GetInterface* not exported");
		} else {
			CASE("getinterfacelist_null_count")
				CHECK(gil(NULL, NULL), CKR_ARGUMENTS_BAD);
			CASE("getinterfacelist") {
				CK_INTERFACE il[8];
				CK_ULONG cnt = 0;
				int found = 0;
				rv = gil(NULL, &cnt);
				if (rv == CKR_OK && cnt >= 1 && cnt <= 8) {
					rv = gil(il, &cnt);
					for (i = 0; rv == CKR_OK && i < cnt; i++)
						if (il[i].pInterfaceName &&
						    strcmp((char *)il[i].pInterfaceName, "PKCS 11") == 0 &&
						    il[i].pFunctionList)
							found = 1;
				}
				if (!found)
					detail("no \"PKCS 11\" interface among %lu", cnt);
				CHECKX(rv, found, CKR_OK);
			}
			CASE("getinterface_default") {
				CK_INTERFACE_PTR ip = NULL;
				rv = gi(NULL, NULL, &ip, 0);
				if (rv == CKR_OK && !ip)
					detail("no interface returned");
				CHECKX(rv, ip != NULL, CKR_OK);
			}
			CASE("getinterface_null_pp")
				CHECK(gi(NULL, NULL, NULL, 0), CKR_ARGUMENTS_BAD);
		}
	}

	/* ---- C_Initialize arguments ------------------------------------- */
	CASE("init_reserved_nonnull") {
		CK_C_INITIALIZE_ARGS ia;
		memset(&ia, 0, sizeof(ia));
		ia.flags = CKF_OS_LOCKING_OK;
		ia.pReserved = &dummy;
		rv = F->C_Initialize(&ia);
		CHECK(rv, CKR_ARGUMENTS_BAD);
		undo_init(rv);
	}
	/* The four mutex callbacks come all together or not at all. */
	CASE("init_mutex_one_of_four") {
		init_with_callbacks(1, CKF_OS_LOCKING_OK, &rv);
		CHECK(rv, CKR_ARGUMENTS_BAD);
		undo_init(rv);
	}
	CASE("init_mutex_three_of_four") {
		init_with_callbacks(1 | 2 | 4, CKF_OS_LOCKING_OK, &rv);
		CHECK(rv, CKR_ARGUMENTS_BAD);
		undo_init(rv);
	}
	CASE("init_mutex_lock_unlock_only") {
		init_with_callbacks(4 | 8, 0, &rv);
		CHECK(rv, CKR_ARGUMENTS_BAD);
		undo_init(rv);
	}
	CASE("init_reserved_nonnull_all_mutexes") {
		CK_C_INITIALIZE_ARGS ia;
		memset(&ia, 0, sizeof(ia));
		ia.CreateMutex = mx_create;
		ia.DestroyMutex = mx_destroy;
		ia.LockMutex = mx_lock;
		ia.UnlockMutex = mx_unlock;
		ia.pReserved = &dummy;
		rv = F->C_Initialize(&ia);
		CHECK(rv, CKR_ARGUMENTS_BAD);
		undo_init(rv);
	}
	/* All four plus CKF_OS_LOCKING_OK: the module may use either. */
	CASE("init_mutex_all_with_os_locking") {
		init_with_callbacks(15, CKF_OS_LOCKING_OK, &rv);
		CHECK(rv, CKR_OK);
		undo_init(rv);
	}
	/* All four without CKF_OS_LOCKING_OK: the module's own locks are
	 * OS locks, safe from any thread, so it needs no callbacks. */
	CASE("init_mutex_all_no_os_locking") {
		init_with_callbacks(15, 0, &rv);
		CHECK(rv, CKR_OK);
		undo_init(rv);
	}
	/* The module's Go runtime started its threads when it was loaded,
	 * before this flag could say no: it accepts the flag. */
	CASE("init_cant_create_threads") {
		CK_C_INITIALIZE_ARGS ia;
		memset(&ia, 0, sizeof(ia));
		ia.flags = CKF_OS_LOCKING_OK | CKF_LIBRARY_CANT_CREATE_OS_THREADS;
		rv = F->C_Initialize(&ia);
		CHECK(rv, CKR_OK);
		undo_init(rv);
	}
	CASE("init_null_args") {
		rv = F->C_Initialize(NULL);
		CHECK(rv, CKR_OK);
		if (rv == CKR_OK)
			CASE("finalize_after_init_null")
				CHECK(F->C_Finalize(NULL), CKR_OK);
	}
	rv = init_os_locking();
	CASE("init_os_locking") CHECK(rv, CKR_OK);
	if (rv != CKR_OK)
		goto out;
	CASE("init_twice") CHECK(init_os_locking(),
		CKR_CRYPTOKI_ALREADY_INITIALIZED);
	CASE("finalize_nonnull") {
		rv = F->C_Finalize(&dummy);
		CHECK(rv, CKR_ARGUMENTS_BAD);
		if (rv == CKR_OK)
			init_os_locking();
	}

	/* ---- Library, slots, tokens, mechanisms -------------------------- */
	CASE("getinfo") {
		int v240;
		rv = F->C_GetInfo(&info);
		v240 = info.cryptokiVersion.major == 2 &&
			info.cryptokiVersion.minor == 40;
		if (rv == CKR_OK && !v240)
			detail("cryptokiVersion %u.%u, want 2.40",
				info.cryptokiVersion.major,
				info.cryptokiVersion.minor);
		CHECKX(rv, rv != CKR_OK || v240, CKR_OK);
	}
	CASE("null_getinfo") CHECK(F->C_GetInfo(NULL), CKR_ARGUMENTS_BAD);

	nslots = 0;
	rv = F->C_GetSlotList(CK_TRUE, NULL, &nslots);
	CASE("getslotlist_count") {
		if (rv == CKR_OK && nslots == 0)
			detail("no slot with a token");
		CHECKX(rv, nslots > 0, CKR_OK);
	}
	if (rv != CKR_OK || nslots == 0 || nslots > NELEM(slots))
		goto finalize;
	CASE("null_getslotlist_count") CHECK(F->C_GetSlotList(CK_FALSE, NULL,
		NULL), CKR_ARGUMENTS_BAD);
	CASE("null_getslotlist_count_with_buffer") CHECK(F->C_GetSlotList(CK_TRUE,
		slots, NULL), CKR_ARGUMENTS_BAD);
	/* Too small a list: BUFFER_TOO_SMALL and the count needed. */
	CASE("getslotlist_too_small") {
		n = nslots - 1;
		rv = F->C_GetSlotList(CK_TRUE, slots, &n);
		if (n != nslots)
			detail("count=%lu, want %lu", n, nslots);
		CHECKX(rv, n == nslots, CKR_BUFFER_TOO_SMALL);
	}
	CASE("getslotlist_exact") {
		n = nslots;
		rv = F->C_GetSlotList(CK_TRUE, slots, &n);
		CHECKX(rv, n == nslots, CKR_OK);
	}
	n = NELEM(slots);
	must(F->C_GetSlotList(CK_TRUE, slots, &n), "C_GetSlotList");
	nslots = n;
	slot = opt.have_slot ? opt.slot : slots[0];
	{
		CK_SLOT_ID all[64];
		CK_ULONG na = NELEM(all);
		if (F->C_GetSlotList(CK_FALSE, all, &na) != CKR_OK)
			na = 0;
		bad_slot = unused_handle(all, na, 0x7ff0dead);
	}

	CASE("invalid_slot_getslotinfo") CHECK(F->C_GetSlotInfo(bad_slot, &si),
		CKR_SLOT_ID_INVALID);
	CASE("invalid_slot_gettokeninfo") CHECK(F->C_GetTokenInfo(bad_slot, &ti),
		CKR_SLOT_ID_INVALID);
	CASE("invalid_slot_getmechanismlist") {
		n = 0;
		CHECK(F->C_GetMechanismList(bad_slot, NULL, &n), CKR_SLOT_ID_INVALID);
	}
	CASE("invalid_slot_getmechanisminfo") {
		CK_MECHANISM_INFO mi;
		CHECK(F->C_GetMechanismInfo(bad_slot, CKM_RSA_PKCS, &mi),
			CKR_SLOT_ID_INVALID);
	}
	CASE("invalid_slot_opensession") CHECK(F->C_OpenSession(bad_slot,
		CKF_SERIAL_SESSION, NULL, NULL, &s), CKR_SLOT_ID_INVALID);
	CASE("invalid_slot_closeallsessions") CHECK(F->C_CloseAllSessions(bad_slot),
		CKR_SLOT_ID_INVALID);
	CASE("null_getslotinfo") CHECK(F->C_GetSlotInfo(slot, NULL),
		CKR_ARGUMENTS_BAD);
	CASE("null_gettokeninfo") CHECK(F->C_GetTokenInfo(slot, NULL),
		CKR_ARGUMENTS_BAD);
	memset(&ti, 0, sizeof(ti));
	CASE("gettokeninfo") CHECK(F->C_GetTokenInfo(slot, &ti), CKR_OK);

	nmechs = 0;
	rv = F->C_GetMechanismList(slot, NULL, &nmechs);
	CASE("getmechanismlist_count") {
		detail("count=%lu", nmechs);
		CHECKX(rv, nmechs <= NELEM(mechs), CKR_OK);
	}
	CASE("null_getmechanismlist_count") CHECK(F->C_GetMechanismList(slot,
		mechs, NULL), CKR_ARGUMENTS_BAD);
	if (rv == CKR_OK && nmechs > 0 && nmechs <= NELEM(mechs)) {
		CASE("getmechanismlist_too_small") {
			n = nmechs - 1;
			rv = F->C_GetMechanismList(slot, mechs, &n);
			if (n != nmechs)
				detail("count=%lu, want %lu", n, nmechs);
			CHECKX(rv, n == nmechs, CKR_BUFFER_TOO_SMALL);
		}
		n = nmechs;
		rv = F->C_GetMechanismList(slot, mechs, &n);
		CASE("getmechanismlist_exact") CHECKX(rv, n == nmechs, CKR_OK);
		nmechs = rv == CKR_OK ? n : 0;
	} else {
		nmechs = 0;
	}
	if (nmechs > 0) {
		CK_MECHANISM_INFO mi;
		CASE("getmechanisminfo") CHECK(F->C_GetMechanismInfo(slot, mechs[0],
			&mi), CKR_OK);
		CASE("null_getmechanisminfo") CHECK(F->C_GetMechanismInfo(slot,
			mechs[0], NULL), CKR_ARGUMENTS_BAD);
	} else {
		skip("getmechanisminfo", "no mechanisms");
		skip("null_getmechanisminfo", "no mechanisms");
	}
	CASE("getmechanisminfo_invalid") {
		CK_MECHANISM_INFO mi;
		CHECK(F->C_GetMechanismInfo(slot, unknown_mech, &mi),
			CKR_MECHANISM_INVALID);
	}
	/* No slot events happen here; the one slot never changes, so a
	 * blocking wait would never end and is refused. */
	CASE("waitforslotevent_dontblock") {
		CK_SLOT_ID es = 0;
		CHECK(F->C_WaitForSlotEvent(CKF_DONT_BLOCK, &es, NULL), CKR_NO_EVENT);
	}
	CASE("waitforslotevent_blocking") {
		CK_SLOT_ID es = 0;
		CHECK(F->C_WaitForSlotEvent(0, &es, NULL), CKR_FUNCTION_NOT_SUPPORTED);
	}
	CASE("waitforslotevent_reserved_nonnull") {
		CK_SLOT_ID es = 0;
		CHECK(F->C_WaitForSlotEvent(CKF_DONT_BLOCK, &es, &dummy),
			CKR_ARGUMENTS_BAD);
	}
	CASE("null_waitforslotevent_slot") CHECK(F->C_WaitForSlotEvent(
		CKF_DONT_BLOCK, NULL, NULL), CKR_ARGUMENTS_BAD);

	/* ---- Sessions before login -------------------------------------- */
	rv = F->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s_keep);
	CASE("opensession_ro") CHECK(rv, CKR_OK);
	if (rv != CKR_OK)
		goto finalize;
	CASE("null_opensession_phsession") CHECK(F->C_OpenSession(slot,
		CKF_SERIAL_SESSION, NULL, NULL, NULL), CKR_ARGUMENTS_BAD);
	/* CKF_SERIAL_SESSION must always be set (legacy parallel sessions). */
	CASE("opensession_no_serial_flag") {
		rv = F->C_OpenSession(slot, 0, NULL, NULL, &s);
		CHECK(rv, CKR_SESSION_PARALLEL_NOT_SUPPORTED);
		if (rv == CKR_OK)
			F->C_CloseSession(s);
	}
	CASE("session_state_ro_public") {
		memset(&sinfo, 0xff, sizeof(sinfo));
		rv = F->C_GetSessionInfo(s_keep, &sinfo);
		detail("state=%s slot=%lu flags=0x%lx", statename(sinfo.state),
			sinfo.slotID, sinfo.flags);
		CHECKX(rv, sinfo.state == CKS_RO_PUBLIC_SESSION &&
			sinfo.slotID == slot && (sinfo.flags & CKF_SERIAL_SESSION) &&
			!(sinfo.flags & CKF_RW_SESSION), CKR_OK);
	}
	/* The token is not write-protected: read/write sessions open. */
	rv = F->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
		NULL, &s_rw);
	have_rw = rv == CKR_OK;
	CASE("opensession_rw") CHECK(rv, CKR_OK);
	if (have_rw) {
		CASE("session_state_rw_public") {
			CK_STATE st = session_state(s_rw, &rv);
			detail("state=%s", statename(st));
			CHECKX(rv, st == CKS_RW_PUBLIC_SESSION, CKR_OK);
		}
	} else {
		skip("session_state_rw_public", "no read/write session");
	}
	CASE("null_getsessioninfo") CHECK(F->C_GetSessionInfo(s_keep, NULL),
		CKR_ARGUMENTS_BAD);

	CASE("invalid_session0_getsessioninfo") CHECK(F->C_GetSessionInfo(
		CK_INVALID_HANDLE, &sinfo), CKR_SESSION_HANDLE_INVALID);
	CASE("invalid_session_getsessioninfo") CHECK(F->C_GetSessionInfo(
		bad_session, &sinfo), CKR_SESSION_HANDLE_INVALID);
	CASE("invalid_session_closesession") CHECK(F->C_CloseSession(bad_session),
		CKR_SESSION_HANDLE_INVALID);
	CASE("invalid_session_findobjectsinit") CHECK(F->C_FindObjectsInit(
		bad_session, NULL, 0), CKR_SESSION_HANDLE_INVALID);
	CASE("invalid_session_login") CHECK(F->C_Login(bad_session, CKU_USER,
		(CK_UTF8CHAR_PTR)pin, pinlen), CKR_SESSION_HANDLE_INVALID);
	CASE("invalid_session_logout") CHECK(F->C_Logout(bad_session),
		CKR_SESSION_HANDLE_INVALID);
	CASE("invalid_session_signinit") {
		m.mechanism = CKM_RSA_PKCS;
		m.pParameter = NULL;
		m.ulParameterLen = 0;
		CHECK(F->C_SignInit(bad_session, &m, 1), CKR_SESSION_HANDLE_INVALID);
	}
	CASE("invalid_session_sign") {
		siglen = sizeof(sig);
		CHECK(F->C_Sign(bad_session, data, 32, sig, &siglen),
			CKR_SESSION_HANDLE_INVALID);
	}
	s = open_ro(slot);
	CASE("closesession") CHECK(F->C_CloseSession(s), CKR_OK);
	CASE("closed_session_getsessioninfo") CHECK(F->C_GetSessionInfo(s,
		&sinfo), CKR_SESSION_HANDLE_INVALID);
	CASE("closed_session_closesession") CHECK(F->C_CloseSession(s),
		CKR_SESSION_HANDLE_INVALID);
	CASE("closed_session_findobjectsinit") CHECK(F->C_FindObjectsInit(s,
		NULL, 0), CKR_SESSION_HANDLE_INVALID);

	/* ---- Object search ----------------------------------------------- */
	CASE("findobjects_without_init") {
		n = 0;
		CHECK(F->C_FindObjects(s_keep, &h1, 1, &n),
			CKR_OPERATION_NOT_INITIALIZED);
	}
	CASE("findobjectsfinal_without_init") CHECK(F->C_FindObjectsFinal(s_keep),
		CKR_OPERATION_NOT_INITIALIZED);
	CASE("null_findobjectsinit_template") {
		rv = F->C_FindObjectsInit(s_keep, NULL, 1);
		CHECK(rv, CKR_ARGUMENTS_BAD);
		if (rv == CKR_OK)
			F->C_FindObjectsFinal(s_keep);
	}
	rv = F->C_FindObjectsInit(s_keep, NULL, 0);
	CASE("findobjectsinit_all") CHECK(rv, CKR_OK);
	if (rv == CKR_OK) {
		CASE("findobjectsinit_twice") CHECK(F->C_FindObjectsInit(s_keep,
			NULL, 0), CKR_OPERATION_ACTIVE);
		CASE("null_findobjects_phobject") {
			n = 0;
			CHECK(F->C_FindObjects(s_keep, NULL, 1, &n), CKR_ARGUMENTS_BAD);
		}
		CASE("null_findobjects_count") CHECK(F->C_FindObjects(s_keep, &h1,
			1, NULL), CKR_ARGUMENTS_BAD);
		CASE("findobjectsfinal") CHECK(F->C_FindObjectsFinal(s_keep), CKR_OK);
	}

	/* ---- Login -------------------------------------------------------- */
	/* NULL PIN with a length: ARGUMENTS_BAD, before any PIN check. */
	CASE("null_login_pin") CHECK(F->C_Login(s_keep, CKU_USER, NULL, 4),
		CKR_ARGUMENTS_BAD);
	CASE("login_bad_user_type") CHECK(F->C_Login(s_keep, 0x7fffUL,
		(CK_UTF8CHAR_PTR)pin, pinlen), CKR_USER_TYPE_INVALID);
	CASE("logout_not_logged_in") CHECK(F->C_Logout(s_keep),
		CKR_USER_NOT_LOGGED_IN);
	if (opt.pin) {
		rv = F->C_Login(s_keep, CKU_USER, (CK_UTF8CHAR_PTR)pin, pinlen);
		logged_in = rv == CKR_OK;
		CASE("login_user") CHECK(rv, CKR_OK);
		if (logged_in) {
			CASE("login_twice") CHECK(F->C_Login(s_keep, CKU_USER,
				(CK_UTF8CHAR_PTR)pin, pinlen), CKR_USER_ALREADY_LOGGED_IN);
			CASE("session_state_ro_user") {
				CK_STATE st = session_state(s_keep, &rv);
				detail("state=%s", statename(st));
				CHECKX(rv, st == CKS_RO_USER_FUNCTIONS, CKR_OK);
			}
			if (have_rw) {
				CASE("session_state_rw_user") {
					CK_STATE st = session_state(s_rw, &rv);
					detail("state=%s", statename(st));
					CHECKX(rv, st == CKS_RW_USER_FUNCTIONS, CKR_OK);
				}
			}
			/* A session opened after login shares the login. */
			CASE("session_state_new_after_login") {
				CK_STATE st;
				s = open_ro(slot);
				st = session_state(s, &rv);
				detail("state=%s", statename(st));
				CHECKX(rv, st == CKS_RO_USER_FUNCTIONS, CKR_OK);
				F->C_CloseSession(s);
			}
		}
	} else {
		skip("login_user", "no --pin");
	}

	/* ---- Keys and attributes ------------------------------------------ */
	if (find_every(s_keep, NULL, 0, &objs, &nobjs) != CKR_OK)
		nobjs = 0;
	nkeys = find_keys(s_keep, keys, MAX_KEYS);
	for (i = 0; i < (CK_ULONG)nkeys; i++) {
		if (keys[i].type == CKK_RSA && !rsa)
			rsa = &keys[i];
		if (keys[i].type == CKK_EC && !ec)
			ec = &keys[i];
	}
	any = rsa ? rsa : ec;
	for (i = 0; i < (CK_ULONG)nkeys; i++)
		print_key(&keys[i], MK_AUTO);

	if (nobjs > 0) {
		CK_OBJECT_HANDLE o = any ? any->priv : objs[0];
		CK_OBJECT_HANDLE bad_obj = unused_handle(objs, nobjs, 0x7fff0badUL);
		CK_OBJECT_CLASS cls = 0;
		unsigned char canary[sizeof(CK_ULONG)];

		/* The object is a private key that signs (found by
		 * find_keys), so its class is CKO_PRIVATE_KEY. */
		CASE("getattr_class") {
			cls = 0x7fffffffUL;
			a.type = CKA_CLASS;
			a.pValue = &cls;
			a.ulValueLen = sizeof(cls);
			rv = F->C_GetAttributeValue(s_keep, o, &a, 1);
			if (rv == CKR_OK && (!any || cls != CKO_PRIVATE_KEY))
				detail("class 0x%lx, want CKO_PRIVATE_KEY (0x%lx)%s",
					cls, (CK_ULONG)CKO_PRIVATE_KEY,
					any ? "" : ": no private key found");
			CHECKX(rv, a.ulValueLen == sizeof(CK_ULONG) && any &&
				cls == CKO_PRIVATE_KEY, CKR_OK);
		}
		/* pValue NULL: the length only. */
		CASE("getattr_length_query") {
			a.type = CKA_CLASS;
			a.pValue = NULL;
			a.ulValueLen = 0;
			rv = F->C_GetAttributeValue(s_keep, o, &a, 1);
			detail("ulValueLen=%lu", a.ulValueLen);
			CHECKX(rv, a.ulValueLen == sizeof(CK_ULONG), CKR_OK);
		}
		/* Too small: BUFFER_TOO_SMALL, and (2.40, C_GetAttributeValue
		 * rule 5) ulValueLen = CK_UNAVAILABLE_INFORMATION. The byte past
		 * the claimed length must stay untouched. */
		CASE("getattr_too_small") {
			memset(canary, 0xa5, sizeof(canary));
			a.type = CKA_CLASS;
			a.pValue = canary;
			a.ulValueLen = sizeof(CK_ULONG) - 1;
			rv = F->C_GetAttributeValue(s_keep, o, &a, 1);
			if (a.ulValueLen != CK_UNAVAILABLE_INFORMATION)
				detail("ulValueLen=%lu, want CK_UNAVAILABLE_INFORMATION",
					a.ulValueLen);
			if (canary[sizeof(CK_ULONG) - 1] != 0xa5)
				detail("wrote past the buffer");
			CHECKX(rv, a.ulValueLen == CK_UNAVAILABLE_INFORMATION &&
				canary[sizeof(CK_ULONG) - 1] == 0xa5, CKR_BUFFER_TOO_SMALL);
		}
		CASE("getattr_unknown_type") {
			a.type = unknown_attr;
			a.pValue = canary;
			a.ulValueLen = sizeof(canary);
			rv = F->C_GetAttributeValue(s_keep, o, &a, 1);
			if (a.ulValueLen != CK_UNAVAILABLE_INFORMATION)
				detail("ulValueLen=%lu", a.ulValueLen);
			CHECKX(rv, a.ulValueLen == CK_UNAVAILABLE_INFORMATION,
				CKR_ATTRIBUTE_TYPE_INVALID);
		}
		/* Every attribute of the template is processed, even after an
		 * error in another one. */
		CASE("getattr_mixed_valid_and_unknown") {
			cls = ~0UL;
			at[0].type = unknown_attr;
			at[0].pValue = canary;
			at[0].ulValueLen = sizeof(canary);
			at[1].type = CKA_CLASS;
			at[1].pValue = &cls;
			at[1].ulValueLen = sizeof(cls);
			rv = F->C_GetAttributeValue(s_keep, o, at, 2);
			if (at[1].ulValueLen != sizeof(CK_ULONG) || cls == ~0UL)
				detail("CKA_CLASS not returned alongside the error");
			CHECKX(rv, at[0].ulValueLen == CK_UNAVAILABLE_INFORMATION &&
				at[1].ulValueLen == sizeof(CK_ULONG) && cls != ~0UL,
				CKR_ATTRIBUTE_TYPE_INVALID);
		}
		CASE("null_getattributevalue_template") CHECK(F->C_GetAttributeValue(
			s_keep, o, NULL, 1), CKR_ARGUMENTS_BAD);
		CASE("getobjectsize") {
			n = 0;
			rv = F->C_GetObjectSize(s_keep, o, &n);
			detail("size=%lu", n);
			CHECKX(rv, n > 0, CKR_OK);
		}
		CASE("null_getobjectsize_size") CHECK(F->C_GetObjectSize(s_keep, o,
			NULL), CKR_ARGUMENTS_BAD);
		CASE("invalid_object_getobjectsize") {
			n = 0;
			CHECK(F->C_GetObjectSize(s_keep, bad_obj, &n),
				CKR_OBJECT_HANDLE_INVALID);
		}
		CASE("invalid_object_getattributevalue") {
			a.type = CKA_CLASS;
			a.pValue = &cls;
			a.ulValueLen = sizeof(cls);
			CHECK(F->C_GetAttributeValue(s_keep, bad_obj, &a, 1),
				CKR_OBJECT_HANDLE_INVALID);
		}
		CASE("invalid_object0_getattributevalue") {
			a.type = CKA_CLASS;
			a.pValue = &cls;
			a.ulValueLen = sizeof(cls);
			CHECK(F->C_GetAttributeValue(s_keep, CK_INVALID_HANDLE, &a, 1),
				CKR_OBJECT_HANDLE_INVALID);
		}
		CASE("invalid_session_getattributevalue") {
			a.type = CKA_CLASS;
			a.pValue = &cls;
			a.ulValueLen = sizeof(cls);
			CHECK(F->C_GetAttributeValue(bad_session, o, &a, 1),
				CKR_SESSION_HANDLE_INVALID);
		}
	} else {
		skip("getattr_*", "no objects visible");
	}

	if (!any) {
		skip("key cases", opt.pin ? "no private key with CKA_SIGN"
			: "no private key with CKA_SIGN visible; pass --pin");
		goto unsupported;
	}

	/* Secret parts of a private key cannot be read: an EC private key's
	 * CKA_VALUE, an RSA private key's CKA_PRIVATE_EXPONENT. */
	if (ec) {
		CASE("getattr_sensitive_value") {
			unsigned char buf[512];
			a.type = CKA_VALUE;
			a.pValue = buf;
			a.ulValueLen = sizeof(buf);
			rv = F->C_GetAttributeValue(s_keep, ec->priv, &a, 1);
			CHECKX(rv, a.ulValueLen == CK_UNAVAILABLE_INFORMATION,
				CKR_ATTRIBUTE_SENSITIVE);
		}
	}
	/* An RSA private key has no CKA_VALUE at all: not secret, absent. */
	if (rsa) {
		CASE("getattr_rsa_private_value") {
			unsigned char buf[512];
			a.type = CKA_VALUE;
			a.pValue = buf;
			a.ulValueLen = sizeof(buf);
			rv = F->C_GetAttributeValue(s_keep, rsa->priv, &a, 1);
			CHECKX(rv, a.ulValueLen == CK_UNAVAILABLE_INFORMATION,
				CKR_ATTRIBUTE_TYPE_INVALID);
		}
	}
	if (rsa) {
		CASE("getattr_sensitive_private_exponent") {
			unsigned char buf[1024];
			a.type = CKA_PRIVATE_EXPONENT;
			a.pValue = buf;
			a.ulValueLen = sizeof(buf);
			rv = F->C_GetAttributeValue(s_keep, rsa->priv, &a, 1);
			CHECKX(rv, a.ulValueLen == CK_UNAVAILABLE_INFORMATION,
				CKR_ATTRIBUTE_SENSITIVE);
		}
	}
	/* A key made in a TPM is sensitive and never extractable. */
	CASE("privkey_sensitive_not_extractable") {
		CK_BBOOL sens = 0xff, extr = 0xff;
		at[0].type = CKA_SENSITIVE;
		at[0].pValue = &sens;
		at[0].ulValueLen = 1;
		at[1].type = CKA_EXTRACTABLE;
		at[1].pValue = &extr;
		at[1].ulValueLen = 1;
		rv = F->C_GetAttributeValue(s_keep, any->priv, at, 2);
		detail("CKA_SENSITIVE=%d CKA_EXTRACTABLE=%d", sens, extr);
		CHECKX(rv, sens == CK_TRUE && extr == CK_FALSE, CKR_OK);
	}
	CASE("public_key_available") {
		if (!any->pkey)
			detail("%s", any->why);
		CHECKX(CKR_OK, any->pkey != NULL, CKR_OK);
	}

	/* ---- Signing: operation state ------------------------------------ */
	m.mechanism = any->type == CKK_EC ? CKM_ECDSA : CKM_RSA_PKCS;
	m.pParameter = NULL;
	m.ulParameterLen = 0;
	{
		/* DigestInfo || hash for RSA, the hash for ECDSA. */
		CK_MECHANISM mm;
		CK_ULONG dlen = sign_input(mech_for(any, MK_AUTO), NULL, 0, hash,
			&mm, data);

		CASE("null_signinit_mechanism") {
			s = open_ro(slot);
			CHECK(F->C_SignInit(s, NULL, any->priv), CKR_ARGUMENTS_BAD);
			F->C_CloseSession(s);
		}
		CASE("invalid_key_signinit") {
			s = open_ro(slot);
			CHECK(F->C_SignInit(s, &m, unused_handle(objs, nobjs,
				0x7fff0badUL)), CKR_KEY_HANDLE_INVALID);
			F->C_CloseSession(s);
		}
		CASE("unknown_mechanism") {
			CK_MECHANISM um = { unknown_mech, NULL, 0 };
			s = open_ro(slot);
			CHECK(F->C_SignInit(s, &um, any->priv), CKR_MECHANISM_INVALID);
			F->C_CloseSession(s);
		}
		if (any->pub) {
			/* A public key has no CKA_SIGN: a valid handle whose
			 * key may not sign. */
			CASE("signinit_public_key") {
				s = open_ro(slot);
				CHECK(F->C_SignInit(s, &m, any->pub),
					CKR_KEY_FUNCTION_NOT_PERMITTED);
				F->C_CloseSession(s);
			}
		}
		s = open_ro(slot);
		CASE("sign_without_init") {
			siglen = sizeof(sig);
			CHECK(F->C_Sign(s, data, dlen, sig, &siglen),
				CKR_OPERATION_NOT_INITIALIZED);
		}
		CASE("signupdate_without_init") CHECK(F->C_SignUpdate(s, data, dlen),
			CKR_OPERATION_NOT_INITIALIZED);
		CASE("signfinal_without_init") {
			siglen = sizeof(sig);
			CHECK(F->C_SignFinal(s, sig, &siglen),
				CKR_OPERATION_NOT_INITIALIZED);
		}
		rv = F->C_SignInit(s, &m, any->priv);
		CASE("signinit") CHECK(rv, CKR_OK);
		if (rv == CKR_OK) {
			/* A second C_SignInit fails and leaves the first operation
			 * running: signing must still work afterwards. */
			CASE("signinit_twice") CHECK(F->C_SignInit(s, &m, any->priv),
				CKR_OPERATION_ACTIVE);
			CASE("sign_after_signinit_twice") {
				siglen = sizeof(sig);
				rv = F->C_Sign(s, data, dlen, sig, &siglen);
				verified = rv == CKR_OK &&
					verify(any, mech_for(any, MK_AUTO), hash, sig, siglen);
				if (rv == CKR_OK && !verified)
					detail("signature does not verify");
				CHECKX(rv, verified, CKR_OK);
			}
		}
		F->C_CloseSession(s);

		/* The two-call rule (section 5.2): NULL buffer gives the length;
		 * a short buffer gives BUFFER_TOO_SMALL and the length, and the
		 * operation stays active; the right buffer gives the signature,
		 * and ends the operation. */
		s = open_ro(slot);
		rv = F->C_SignInit(s, &m, any->priv);
		if (rv == CKR_OK) {
			CK_ULONG need = 0;
			CASE("sign_length_query") {
				rv = F->C_Sign(s, data, dlen, NULL, &need);
				detail("length=%lu expected=%zu", need, any->siglen);
				CHECKX(rv, need > 0 && need <= sizeof(sig) &&
					(!any->siglen || need == any->siglen), CKR_OK);
			}
			if (need == 0 || need > sizeof(sig))
				need = any->siglen ? any->siglen : 64;
			CASE("sign_buffer_too_small") {
				siglen = need - 1;
				rv = F->C_Sign(s, data, dlen, sig, &siglen);
				detail("length=%lu want %lu", siglen, need);
				CHECKX(rv, siglen == need, CKR_BUFFER_TOO_SMALL);
			}
			CASE("sign_after_short_buffer") {
				siglen = need;
				rv = F->C_Sign(s, data, dlen, sig, &siglen);
				verified = rv == CKR_OK &&
					verify(any, mech_for(any, MK_AUTO), hash, sig, siglen);
				if (rv == CKR_OK && !verified)
					detail("signature does not verify");
				CHECKX(rv, verified, CKR_OK);
			}
			CASE("sign_after_completion") {
				siglen = sizeof(sig);
				CHECK(F->C_Sign(s, data, dlen, sig, &siglen),
					CKR_OPERATION_NOT_INITIALIZED);
			}
		} else {
			skip("sign_length_query", "C_SignInit failed");
		}
		F->C_CloseSession(s);

		CASE("null_sign_data") {
			s = open_ro(slot);
			siglen = sizeof(sig);
			if (signinit_ok(s, &m, any->priv))
				CHECK(F->C_Sign(s, NULL, dlen, sig, &siglen),
					CKR_ARGUMENTS_BAD);
			F->C_CloseSession(s);
		}
		CASE("null_sign_siglen") {
			s = open_ro(slot);
			if (signinit_ok(s, &m, any->priv))
				CHECK(F->C_Sign(s, data, dlen, sig, NULL), CKR_ARGUMENTS_BAD);
			F->C_CloseSession(s);
		}

		/* Multi-part signing: C_SignUpdate feeds the input, C_SignFinal
		 * signs it; C_Sign cannot end a multi-part operation. */
		CASE("null_signupdate_data") {
			s = open_ro(slot);
			if (signinit_ok(s, &m, any->priv))
				CHECK(F->C_SignUpdate(s, NULL, dlen), CKR_ARGUMENTS_BAD);
			F->C_CloseSession(s);
		}
		CASE("null_signfinal_siglen") {
			s = open_ro(slot);
			rv = F->C_SignInit(s, &m, any->priv);
			if (rv == CKR_OK)
				rv = F->C_SignUpdate(s, data, dlen);
			if (rv == CKR_OK)
				rv = F->C_SignFinal(s, sig, NULL);
			CHECK(rv, CKR_ARGUMENTS_BAD);
			F->C_CloseSession(s);
		}
		CASE("sign_after_signupdate") {
			s = open_ro(slot);
			siglen = sizeof(sig);
			rv = F->C_SignInit(s, &m, any->priv);
			if (rv == CKR_OK)
				rv = F->C_SignUpdate(s, data, dlen);
			if (rv == CKR_OK)
				rv = F->C_Sign(s, data, dlen, sig, &siglen);
			CHECK(rv, CKR_OPERATION_ACTIVE);
			F->C_CloseSession(s);
		}
		CASE("signupdate_signfinal") {
			s = open_ro(slot);
			siglen = sizeof(sig);
			rv = F->C_SignInit(s, &m, any->priv);
			if (rv == CKR_OK)
				rv = F->C_SignUpdate(s, data, 7);
			if (rv == CKR_OK)
				rv = F->C_SignUpdate(s, data + 7, dlen - 7);
			if (rv == CKR_OK)
				rv = F->C_SignFinal(s, sig, &siglen);
			verified = rv == CKR_OK &&
				verify(any, mech_for(any, MK_AUTO), hash, sig, siglen);
			if (rv == CKR_OK && !verified)
				detail("signature does not verify");
			CHECKX(rv, verified, CKR_OK);
			F->C_CloseSession(s);
		}
		/* C_Sign cannot end a multi-part operation, not even to ask for
		 * the length: the same code as the call with a buffer. */
		CASE("sign_length_query_after_signupdate") {
			CK_ULONG need = 0;
			s = open_ro(slot);
			rv = F->C_SignInit(s, &m, any->priv);
			if (rv == CKR_OK)
				rv = F->C_SignUpdate(s, data, dlen);
			if (rv == CKR_OK)
				rv = F->C_Sign(s, data, dlen, NULL, &need);
			CHECK(rv, CKR_OPERATION_ACTIVE);
			F->C_CloseSession(s);
		}
		/* The two-call rule for C_SignFinal: the length, then a short
		 * buffer, leave the operation active; the right buffer gets a
		 * signature of everything C_SignUpdate was given. */
		s = open_ro(slot);
		rv = F->C_SignInit(s, &m, any->priv);
		if (rv == CKR_OK)
			rv = F->C_SignUpdate(s, data, dlen);
		if (rv == CKR_OK) {
			CK_ULONG need = 0;
			CASE("signfinal_length_query") {
				rv = F->C_SignFinal(s, NULL, &need);
				detail("length=%lu expected=%zu", need, any->siglen);
				CHECKX(rv, need > 0 && need <= sizeof(sig) &&
					(!any->siglen || need == any->siglen), CKR_OK);
			}
			if (need == 0 || need > sizeof(sig))
				need = any->siglen ? any->siglen : 64;
			CASE("signfinal_buffer_too_small") {
				siglen = need - 1;
				rv = F->C_SignFinal(s, sig, &siglen);
				detail("length=%lu want %lu", siglen, need);
				CHECKX(rv, siglen == need, CKR_BUFFER_TOO_SMALL);
			}
			CASE("signfinal_after_short_buffer") {
				siglen = need;
				rv = F->C_SignFinal(s, sig, &siglen);
				verified = rv == CKR_OK &&
					verify(any, mech_for(any, MK_AUTO), hash, sig, siglen);
				if (rv == CKR_OK && !verified)
					detail("signature does not verify");
				CHECKX(rv, verified, CKR_OK);
			}
		} else {
			skip("signfinal_length_query", "C_SignInit or C_SignUpdate failed");
			skip("signfinal_buffer_too_small", "C_SignInit or C_SignUpdate failed");
			skip("signfinal_after_short_buffer", "C_SignInit or C_SignUpdate failed");
		}
		F->C_CloseSession(s);

		/* ---- Verifying ------------------------------------------------
		 * In software with the public key; good is a valid signature of
		 * data[0..dlen) made here first. */
		if (any->pub) {
			unsigned char good[1024];
			CK_ULONG glen = 0;
			const char *stage;
			CK_MECHANISM vm = m;

			s = open_ro(slot);
			if (sign_once(s, any, &vm, data, dlen, good, sizeof(good), &glen,
			    &stage) != CKR_OK)
				glen = 0;
			F->C_CloseSession(s);
			s = open_ro(slot);
			CASE("verify_without_init") CHECK(F->C_Verify(s, data, dlen, good,
				glen), CKR_OPERATION_NOT_INITIALIZED);
			CASE("verifyupdate_without_init") CHECK(F->C_VerifyUpdate(s, data,
				dlen), CKR_OPERATION_NOT_INITIALIZED);
			CASE("verifyfinal_without_init") CHECK(F->C_VerifyFinal(s, good,
				glen), CKR_OPERATION_NOT_INITIALIZED);
			CASE("null_verifyinit_mechanism") CHECK(F->C_VerifyInit(s, NULL,
				any->pub), CKR_ARGUMENTS_BAD);
			CASE("invalid_key_verifyinit") CHECK(F->C_VerifyInit(s, &m,
				unused_handle(objs, nobjs, 0x7fff0badUL)), CKR_KEY_HANDLE_INVALID);
			CASE("unknown_mechanism_verifyinit") {
				CK_MECHANISM um = { unknown_mech, NULL, 0 };
				CHECK(F->C_VerifyInit(s, &um, any->pub), CKR_MECHANISM_INVALID);
			}
			/* A private key has no CKA_VERIFY. */
			CASE_FRESH("verifyinit_private_key", s, slot) {
				rv = F->C_VerifyInit(s, &m, any->priv);
				CHECK(rv, CKR_KEY_FUNCTION_NOT_PERMITTED);
			}
			CASE_FRESH("verifyinit", s, slot) CHECK(F->C_VerifyInit(s, &m,
				any->pub), CKR_OK);
			CASE("verifyinit_twice") CHECK(F->C_VerifyInit(s, &m, any->pub),
				CKR_OPERATION_ACTIVE);
			CASE("verify") {
				if (glen == 0)
					detail("could not make a signature to verify");
				CHECKX(F->C_Verify(s, data, dlen, good, glen), glen > 0,
					CKR_OK);
			}
			CASE("verify_after_completion") CHECK(F->C_Verify(s, data, dlen,
				good, glen), CKR_OPERATION_NOT_INITIALIZED);
			CASE_FRESH("verify_wrong_signature", s, slot) {
				unsigned char bad[1024];
				memcpy(bad, good, glen);
				bad[glen / 2] ^= 0x01;
				rv = F->C_VerifyInit(s, &m, any->pub);
				if (rv == CKR_OK)
					rv = F->C_Verify(s, data, dlen, bad, glen);
				CHECKX(rv, glen > 0, CKR_SIGNATURE_INVALID);
			}
			CASE_FRESH("verify_short_signature", s, slot) {
				rv = F->C_VerifyInit(s, &m, any->pub);
				if (rv == CKR_OK && glen > 0)
					rv = F->C_Verify(s, data, dlen, good, glen - 1);
				CHECKX(rv, glen > 0, CKR_SIGNATURE_LEN_RANGE);
			}
			CASE_FRESH("null_verify_data", s, slot) {
				rv = F->C_VerifyInit(s, &m, any->pub);
				if (rv == CKR_OK)
					rv = F->C_Verify(s, NULL, dlen, good, glen);
				CHECK(rv, CKR_ARGUMENTS_BAD);
			}
			CASE_FRESH("null_verify_signature", s, slot) {
				rv = F->C_VerifyInit(s, &m, any->pub);
				if (rv == CKR_OK)
					rv = F->C_Verify(s, data, dlen, NULL, glen);
				CHECK(rv, CKR_ARGUMENTS_BAD);
			}
			/* A failed C_Verify ends the operation (2.40, 5.13). */
			CASE("verify_after_failure") CHECK(F->C_Verify(s, data, dlen, good,
				glen), CKR_OPERATION_NOT_INITIALIZED);
			CASE_FRESH("null_verifyupdate_data", s, slot) {
				rv = F->C_VerifyInit(s, &m, any->pub);
				if (rv == CKR_OK)
					rv = F->C_VerifyUpdate(s, NULL, dlen);
				CHECK(rv, CKR_ARGUMENTS_BAD);
			}
			CASE_FRESH("null_verifyfinal_signature", s, slot) {
				rv = F->C_VerifyInit(s, &m, any->pub);
				if (rv == CKR_OK)
					rv = F->C_VerifyUpdate(s, data, dlen);
				if (rv == CKR_OK)
					rv = F->C_VerifyFinal(s, NULL, glen);
				CHECK(rv, CKR_ARGUMENTS_BAD);
			}
			CASE_FRESH("verify_after_verifyupdate", s, slot) {
				rv = F->C_VerifyInit(s, &m, any->pub);
				if (rv == CKR_OK)
					rv = F->C_VerifyUpdate(s, data, dlen);
				if (rv == CKR_OK)
					rv = F->C_Verify(s, data, dlen, good, glen);
				CHECK(rv, CKR_OPERATION_ACTIVE);
			}
			CASE_FRESH("verifyupdate_verifyfinal", s, slot) {
				rv = F->C_VerifyInit(s, &m, any->pub);
				if (rv == CKR_OK)
					rv = F->C_VerifyUpdate(s, data, 7);
				if (rv == CKR_OK)
					rv = F->C_VerifyUpdate(s, data + 7, dlen - 7);
				if (rv == CKR_OK)
					rv = F->C_VerifyFinal(s, good, glen);
				CHECKX(rv, glen > 0, CKR_OK);
			}
			F->C_CloseSession(s);
		} else {
			skip("verify cases", "no public key object");
		}
	}

	/* ---- Signing: mechanisms and key types --------------------------- */
	if (rsa) {
		int pss = has_mech(mechs, nmechs, CKM_RSA_PKCS_PSS);
		CK_RSA_PKCS_PSS_PARAMS pp = { CKM_SHA256, CKG_MGF1_SHA256, 32 };
		unsigned char big[sizeof(pp) + 8];
		CK_MECHANISM pm = { CKM_RSA_PKCS_PSS, NULL, 0 };

		CASE("ecdsa_on_rsa_key") {
			CK_MECHANISM em = { CKM_ECDSA, NULL, 0 };
			s = open_ro(slot);
			CHECK(F->C_SignInit(s, &em, rsa->priv), CKR_KEY_TYPE_INCONSISTENT);
			F->C_CloseSession(s);
		}
		/* Broken PSS parameters (swtpm has RSA-PSS). */
#define PSS_CASE(name, param, len) \
		if (!pss) \
			skip(name, "no CKM_RSA_PKCS_PSS"); \
		else CASE(name) { \
			pm.pParameter = (param); \
			pm.ulParameterLen = (len); \
			s = open_ro(slot); \
			CHECK(F->C_SignInit(s, &pm, rsa->priv), \
				CKR_MECHANISM_PARAM_INVALID); \
			F->C_CloseSession(s); \
		}
		PSS_CASE("pss_null_params", NULL, 0)
		PSS_CASE("pss_null_params_with_length", NULL, sizeof(pp))
		PSS_CASE("pss_short_params", &pp, sizeof(pp) - 1)
		memcpy(big, &pp, sizeof(pp));
		memset(big + sizeof(pp), 0, 8);
		PSS_CASE("pss_long_params", big, sizeof(big))
		{
			CK_RSA_PKCS_PSS_PARAMS bad = { unknown_mech, CKG_MGF1_SHA256, 32 };
			PSS_CASE("pss_unknown_hash", &bad, sizeof(bad))
		}
#undef PSS_CASE
		/* CKM_RSA_PKCS input that is not a DigestInfo: a TPM can only
		 * sign a DigestInfo (TPM2_Sign with RSASSA), so DATA_INVALID.
		 * (A software token may sign it: that is legal PKCS#11, and this
		 * case fails on such a token.) */
		CASE("rsa_pkcs_not_digestinfo") {
			CK_MECHANISM rm = { CKM_RSA_PKCS, NULL, 0 };
			unsigned char junk[17];
			for (i = 0; i < sizeof(junk); i++)
				junk[i] = (unsigned char)(0x11 * i + 3);
			s = open_ro(slot);
			siglen = sizeof(sig);
			if (signinit_ok(s, &rm, rsa->priv))
				CHECK(F->C_Sign(s, junk, sizeof(junk), sig, &siglen),
					CKR_DATA_INVALID);
			F->C_CloseSession(s);
		}
		/* Longer than k - 11 bytes: no room for the padding. */
		if (rsa->siglen >= 64 && rsa->siglen - 10 <= sizeof(data)) {
			CASE("rsa_pkcs_too_long") {
				CK_MECHANISM rm = { CKM_RSA_PKCS, NULL, 0 };
				s = open_ro(slot);
				siglen = sizeof(sig);
				if (signinit_ok(s, &rm, rsa->priv))
					CHECK(F->C_Sign(s, data, rsa->siglen - 10, sig, &siglen),
						CKR_DATA_LEN_RANGE);
				F->C_CloseSession(s);
			}
		}
		CASE("rsa_pkcs_sign_verify") {
			rv = sign_check(slot, rsa, &verified);
			CHECKX(rv, verified, CKR_OK);
		}
	} else {
		skip("rsa cases", "no RSA key");
	}
	if (ec) {
		CASE("rsa_pkcs_on_ec_key") {
			CK_MECHANISM rm = { CKM_RSA_PKCS, NULL, 0 };
			s = open_ro(slot);
			CHECK(F->C_SignInit(s, &rm, ec->priv), CKR_KEY_TYPE_INCONSISTENT);
			F->C_CloseSession(s);
		}
		CASE("ecdsa_sign_verify") {
			rv = sign_check(slot, ec, &verified);
			CHECKX(rv, verified, CKR_OK);
		}
	} else {
		skip("ec cases", "no EC key");
	}

unsupported:
	/* ---- Functions a TPM signing token does not provide --------------
	 * FUNCTION_NOT_SUPPORTED for each, whatever the arguments: keys are
	 * made with stpm-keygen, the token only signs and verifies.
	 * Every call is harmless if a module does implement it: new objects
	 * are session objects (CKA_TOKEN = FALSE) and are destroyed, labels
	 * are set to their current value, PINs to the same PIN, and
	 * C_DestroyObject gets a handle that does not exist. C_InitToken is
	 * never called. */
	{
		CK_OBJECT_CLASS dcls = CKO_DATA;
		CK_BBOOL no = CK_FALSE;
		CK_ATTRIBUTE dt[3] = {
			{ CKA_CLASS, &dcls, sizeof(dcls) },
			{ CKA_TOKEN, &no, sizeof(no) },
			{ CKA_LABEL, "p11host", 7 },
		};
		CK_OBJECT_HANDLE h = CK_INVALID_HANDLE, h2 = CK_INVALID_HANDLE;
		CK_MECHANISM rm = { CKM_RSA_PKCS, NULL, 0 };
		CK_MECHANISM dm = { CKM_SHA256, NULL, 0 };
		CK_OBJECT_HANDLE kh = any ? any->priv : (nobjs ? objs[0] : 1);
		CK_ULONG ol;

#define NOT_SUPPORTED CKR_FUNCTION_NOT_SUPPORTED
		s = open_ro(slot);
		CASE_FRESH("createobject", s, slot) {
			rv = F->C_CreateObject(s, dt, 3, &h);
			CHECK(rv, NOT_SUPPORTED);
			if (rv == CKR_OK)
				F->C_DestroyObject(s, h);
		}
		CASE_FRESH("copyobject", s, slot) {
			rv = F->C_CopyObject(s, kh, dt + 1, 1, &h);
			CHECK(rv, NOT_SUPPORTED);
			if (rv == CKR_OK)
				F->C_DestroyObject(s, h);
		}
		CASE_FRESH("destroyobject", s, slot) CHECK(F->C_DestroyObject(s,
			unused_handle(objs, nobjs, 0x7fff0badUL)), NOT_SUPPORTED);
		CASE_FRESH("setattributevalue_same_label", s, slot) {
			unsigned char *lab = NULL;
			CK_ULONG ll = 0;
			get_attr(s, kh, CKA_LABEL, &lab, &ll);
			a.type = CKA_LABEL;
			a.pValue = lab;
			a.ulValueLen = ll;
			CHECK(F->C_SetAttributeValue(s, kh, &a, 1), NOT_SUPPORTED);
			free(lab);
		}
		CASE_FRESH("generatekey", s, slot) {
			CK_MECHANISM gm = { CKM_AES_KEY_GEN, NULL, 0 };
			CK_ULONG vl = 16;
			CK_ATTRIBUTE gt[2] = {
				{ CKA_TOKEN, &no, sizeof(no) },
				{ CKA_VALUE_LEN, &vl, sizeof(vl) },
			};
			rv = F->C_GenerateKey(s, &gm, gt, 2, &h);
			CHECK(rv, NOT_SUPPORTED);
			if (rv == CKR_OK)
				F->C_DestroyObject(s, h);
		}
		CASE_FRESH("generatekeypair", s, slot) {
			/* P-256: OID 1.2.840.10045.3.1.7 in DER. */
			static unsigned char p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48,
				0xce, 0x3d, 0x03, 0x01, 0x07 };
			CK_MECHANISM gm = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
			CK_ATTRIBUTE pubt[2] = {
				{ CKA_TOKEN, &no, sizeof(no) },
				{ CKA_EC_PARAMS, p256, sizeof(p256) },
			};
			CK_ATTRIBUTE privt[1] = { { CKA_TOKEN, &no, sizeof(no) } };
			rv = F->C_GenerateKeyPair(s, &gm, pubt, 2, privt, 1, &h, &h2);
			CHECK(rv, NOT_SUPPORTED);
			if (rv == CKR_OK) {
				F->C_DestroyObject(s, h);
				F->C_DestroyObject(s, h2);
			}
		}
		CASE_FRESH("wrapkey", s, slot) {
			ol = sizeof(sig);
			CHECK(F->C_WrapKey(s, &rm, kh, kh, sig, &ol), NOT_SUPPORTED);
		}
		CASE_FRESH("unwrapkey", s, slot) {
			rv = F->C_UnwrapKey(s, &rm, kh, data, 64, dt + 1, 1, &h);
			CHECK(rv, NOT_SUPPORTED);
			if (rv == CKR_OK)
				F->C_DestroyObject(s, h);
		}
		CASE_FRESH("derivekey", s, slot) {
			CK_MECHANISM xm = { CKM_ECDH1_DERIVE, NULL, 0 };
			rv = F->C_DeriveKey(s, &xm, kh, dt + 1, 1, &h);
			CHECK(rv, NOT_SUPPORTED);
			if (rv == CKR_OK)
				F->C_DestroyObject(s, h);
		}
		CASE_FRESH("encryptinit", s, slot) CHECK(F->C_EncryptInit(s, &rm, kh), NOT_SUPPORTED);
		CASE_FRESH("decryptinit", s, slot) CHECK(F->C_DecryptInit(s, &rm, kh), NOT_SUPPORTED);
		CASE_FRESH("digestinit", s, slot) CHECK(F->C_DigestInit(s, &dm), NOT_SUPPORTED);
		CASE_FRESH("verifyrecoverinit", s, slot) CHECK(F->C_VerifyRecoverInit(s, &rm, kh),
			NOT_SUPPORTED);
		CASE_FRESH("signrecoverinit", s, slot) CHECK(F->C_SignRecoverInit(s, &rm, kh),
			NOT_SUPPORTED);
		CASE_FRESH("digestkey", s, slot) CHECK(F->C_DigestKey(s, kh), NOT_SUPPORTED);
		CASE_FRESH("digestencryptupdate", s, slot) {
			ol = sizeof(sig);
			CHECK(F->C_DigestEncryptUpdate(s, data, 16, sig, &ol),
				NOT_SUPPORTED);
		}
		CASE_FRESH("decryptdigestupdate", s, slot) {
			ol = sizeof(sig);
			CHECK(F->C_DecryptDigestUpdate(s, data, 16, sig, &ol),
				NOT_SUPPORTED);
		}
		CASE_FRESH("signencryptupdate", s, slot) {
			ol = sizeof(sig);
			CHECK(F->C_SignEncryptUpdate(s, data, 16, sig, &ol),
				NOT_SUPPORTED);
		}
		CASE_FRESH("decryptverifyupdate", s, slot) {
			ol = sizeof(sig);
			CHECK(F->C_DecryptVerifyUpdate(s, data, 16, sig, &ol),
				NOT_SUPPORTED);
		}
		CASE_FRESH("getoperationstate", s, slot) {
			ol = sizeof(sig);
			CHECK(F->C_GetOperationState(s, sig, &ol), NOT_SUPPORTED);
		}
		CASE_FRESH("setoperationstate", s, slot) CHECK(F->C_SetOperationState(s, data, 16,
			0, 0), NOT_SUPPORTED);
		if (opt.pin) {
			/* Same PIN in and out: harmless even if it went through. */
			CASE_FRESH("setpin_same", s, slot) CHECK(F->C_SetPIN(s, (CK_UTF8CHAR_PTR)pin,
				pinlen, (CK_UTF8CHAR_PTR)pin, pinlen), NOT_SUPPORTED);
			CASE_FRESH("initpin_same", s, slot) CHECK(F->C_InitPIN(s, (CK_UTF8CHAR_PTR)pin,
				pinlen), NOT_SUPPORTED);
		}
		/* Legacy parallel-function calls. */
		CASE_FRESH("getfunctionstatus", s, slot) CHECK(F->C_GetFunctionStatus(s),
			CKR_FUNCTION_NOT_PARALLEL);
		CASE_FRESH("cancelfunction", s, slot) CHECK(F->C_CancelFunction(s),
			CKR_FUNCTION_NOT_PARALLEL);
		/* The TPM's generator gives random bytes and takes no seed. */
		CASE_FRESH("generaterandom", s, slot) CHECK(F->C_GenerateRandom(s, sig, 16), CKR_OK);
		CASE_FRESH("seedrandom", s, slot) CHECK(F->C_SeedRandom(s, data, 16),
			CKR_RANDOM_SEED_NOT_SUPPORTED);
		CASE_FRESH("null_generaterandom", s, slot) CHECK(F->C_GenerateRandom(s,
			NULL, 16), CKR_ARGUMENTS_BAD);
		/* No seed is taken, so the pointer is never looked at. */
		CASE_FRESH("null_seedrandom", s, slot) CHECK(F->C_SeedRandom(s, NULL,
			16), CKR_RANDOM_SEED_NOT_SUPPORTED);
		F->C_CloseSession(s);
#undef NOT_SUPPORTED
	}

	/* ---- Logout and C_CloseAllSessions ------------------------------- */
	if (logged_in) {
		CASE("logout") CHECK(F->C_Logout(s_keep), CKR_OK);
		CASE("session_state_after_logout") {
			CK_STATE st = session_state(s_keep, &rv);
			detail("state=%s", statename(st));
			CHECKX(rv, st == CKS_RO_PUBLIC_SESSION, CKR_OK);
		}
		CASE("logout_twice") CHECK(F->C_Logout(s_keep), CKR_USER_NOT_LOGGED_IN);
		rv = F->C_Login(s_keep, CKU_USER, (CK_UTF8CHAR_PTR)pin, pinlen);
		CASE("login_again") CHECK(rv, CKR_OK);
	}
	s = open_ro(slot);
	CASE("closeallsessions") CHECK(F->C_CloseAllSessions(slot), CKR_OK);
	CASE("closeall_old_session") CHECK(F->C_GetSessionInfo(s_keep, &sinfo),
		CKR_SESSION_HANDLE_INVALID);
	CASE("closeall_old_session2") CHECK(F->C_GetSessionInfo(s, &sinfo),
		CKR_SESSION_HANDLE_INVALID);
	/* Closing the last session logs the user out. */
	CASE("session_state_after_closeall") {
		CK_STATE st;
		s = open_ro(slot);
		st = session_state(s, &rv);
		detail("state=%s", statename(st));
		CHECKX(rv, st == CKS_RO_PUBLIC_SESSION, CKR_OK);
		F->C_CloseSession(s);
	}
	s_keep = s_rw = CK_INVALID_HANDLE;

	/* ---- C_Finalize with sessions open, then re-initialize ------------ */
	s = open_ro(slot);
	s2 = open_ro(slot);
	if (opt.pin)
		F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, pinlen);
	if (any)
		F->C_SignInit(s2, &m, any->priv);   /* an operation in flight */
	CASE("finalize_with_sessions_open") CHECK(F->C_Finalize(NULL), CKR_OK);
	CASE("after_finalize_getinfo") CHECK(F->C_GetInfo(&info),
		CKR_CRYPTOKI_NOT_INITIALIZED);
	CASE("after_finalize_getsessioninfo") CHECK(F->C_GetSessionInfo(s,
		&sinfo), CKR_CRYPTOKI_NOT_INITIALIZED);
	CASE("after_finalize_sign") {
		siglen = sizeof(sig);
		CHECK(F->C_Sign(s2, data, 32, sig, &siglen),
			CKR_CRYPTOKI_NOT_INITIALIZED);
	}
	CASE("after_finalize_getslotlist") {
		n = 0;
		CHECK(F->C_GetSlotList(CK_TRUE, NULL, &n),
			CKR_CRYPTOKI_NOT_INITIALIZED);
	}
	CASE("after_finalize_opensession") CHECK(F->C_OpenSession(slot,
		CKF_SERIAL_SESSION, NULL, NULL, &h1), CKR_CRYPTOKI_NOT_INITIALIZED);
	CASE("after_finalize_closesession") CHECK(F->C_CloseSession(s),
		CKR_CRYPTOKI_NOT_INITIALIZED);
	CASE("after_finalize_login") CHECK(F->C_Login(s, CKU_USER,
		(CK_UTF8CHAR_PTR)pin, pinlen), CKR_CRYPTOKI_NOT_INITIALIZED);
	CASE("after_finalize_findobjectsinit") CHECK(F->C_FindObjectsInit(s,
		NULL, 0), CKR_CRYPTOKI_NOT_INITIALIZED);
	CASE("after_finalize_getattributevalue") {
		CK_OBJECT_CLASS c2 = 0;
		a.type = CKA_CLASS;
		a.pValue = &c2;
		a.ulValueLen = sizeof(c2);
		CHECK(F->C_GetAttributeValue(s, any ? any->priv : 1, &a, 1),
			CKR_CRYPTOKI_NOT_INITIALIZED);
	}
	CASE("after_finalize_signinit") CHECK(F->C_SignInit(s, &m,
		any ? any->priv : 1), CKR_CRYPTOKI_NOT_INITIALIZED);
	CASE("after_finalize_verify") CHECK(F->C_Verify(s, data, 32, sig, 64),
		CKR_CRYPTOKI_NOT_INITIALIZED);
	CASE("after_finalize_generaterandom") CHECK(F->C_GenerateRandom(s, sig,
		16), CKR_CRYPTOKI_NOT_INITIALIZED);
	CASE("after_finalize_encryptinit") CHECK(F->C_EncryptInit(s, &m,
		any ? any->priv : 1), CKR_CRYPTOKI_NOT_INITIALIZED);
	CASE("after_finalize_waitforslotevent") {
		CK_SLOT_ID es = 0;
		CHECK(F->C_WaitForSlotEvent(CKF_DONT_BLOCK, &es, NULL),
			CKR_CRYPTOKI_NOT_INITIALIZED);
	}
	CASE("after_finalize_finalize") CHECK(F->C_Finalize(NULL),
		CKR_CRYPTOKI_NOT_INITIALIZED);
	rv = init_os_locking();
	CASE("reinitialize") CHECK(rv, CKR_OK);
	if (rv != CKR_OK)
		goto out;
	/* Handles from before C_Finalize are gone. */
	CASE("reinit_old_session") CHECK(F->C_GetSessionInfo(s, &sinfo),
		CKR_SESSION_HANDLE_INVALID);
	CASE("reinit_getslotlist") {
		n = 0;
		rv = F->C_GetSlotList(CK_TRUE, NULL, &n);
		CHECKX(rv, n == nslots, CKR_OK);
	}
	/* Past the maximum PIN length: refused before the PIN is read
	 * (the PIN buffer is 4 bytes long and ends at a PROT_NONE page). */
	s = open_ro(slot);
	CASE("huge_login_pinlen") {
		unsigned char *gp = guarded(4);
		memcpy(gp, "0000", 4);
		CHECK(F->C_Login(s, CKU_USER, gp, HUGE_LEN), CKR_PIN_LEN_RANGE);
	}
	if (opt.pin)
		F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, pinlen);
	/* Object handles from before C_Finalize mean nothing now. */
	free_keys(keys, nkeys);
	nkeys = find_keys(s, keys, MAX_KEYS);
	rsa = ec = NULL;
	for (i = 0; i < (CK_ULONG)nkeys; i++) {
		if (keys[i].type == CKK_RSA && !rsa)
			rsa = &keys[i];
		if (keys[i].type == CKK_EC && !ec)
			ec = &keys[i];
	}
	any = rsa ? rsa : ec;
	free(objs);
	if (find_every(s, NULL, 0, &objs, &nobjs) != CKR_OK)
		nobjs = 0;
	if (any) {
		CASE("reinit_sign_verify") {
			rv = sign_check(slot, any, &verified);
			CHECKX(rv, verified, CKR_OK);
		}
	}

	/* ---- Huge lengths -------------------------------------------------
	 * Each length is far past anything valid, with a real buffer much
	 * smaller than the length claims, ending at a PROT_NONE page. */
	/* C_FindObjects only writes as many handles as exist: the buffer
	 * has room for all of them (counted above), so OK is fine. */
	CASE("huge_findobjects_max") {
		CK_OBJECT_HANDLE *hb = guarded(sizeof(CK_OBJECT_HANDLE) * (nobjs + 1));
		rv = F->C_FindObjectsInit(s, NULL, 0);
		n = 0;
		if (rv == CKR_OK) {
			rv = F->C_FindObjects(s, hb, HUGE_LEN, &n);
			F->C_FindObjectsFinal(s);
		}
		if (n > nobjs + 1)
			detail("returned %lu handles, %lu objects exist", n, nobjs);
		CHECKX(rv, n <= nobjs + 1, CKR_OK);
	}
	if (ec) {
		/* CKM_ECDSA signs a hash: at most 64 bytes make sense. */
		CASE("huge_sign_len_ecdsa") {
			CK_MECHANISM em = { CKM_ECDSA, NULL, 0 };
			unsigned char *gd = guarded(32);
			memcpy(gd, hash, 32);
			siglen = sizeof(sig);
			if (signinit_ok(s, &em, ec->priv))
				CHECK(F->C_Sign(s, gd, HUGE_LEN, sig, &siglen),
					CKR_DATA_LEN_RANGE);
			F->C_CloseSession(s);
			s = open_ro(slot);
		}
	}
	if (rsa) {
		/* CKM_RSA_PKCS takes at most k - 11 bytes. */
		CASE("huge_sign_len_rsa_pkcs") {
			CK_MECHANISM rm = { CKM_RSA_PKCS, NULL, 0 };
			unsigned char *gd = guarded(51);
			sign_input(MK_RSA_PKCS, NULL, 0, hash, &rm, gd);
			siglen = sizeof(sig);
			if (signinit_ok(s, &rm, rsa->priv))
				CHECK(F->C_Sign(s, gd, HUGE_LEN, sig, &siglen),
					CKR_DATA_LEN_RANGE);
			F->C_CloseSession(s);
			s = open_ro(slot);
		}
	}
	/* Template counts: the specification sets no limit, but no real
	 * template has 2^40 entries; a module must not walk that far. The
	 * template holds one real entry and ends at a PROT_NONE page. */
	if (nobjs > 0) {
		CASE("huge_getattributevalue_count") {
			CK_OBJECT_CLASS c2 = 0;
			CK_ATTRIBUTE *gt = guarded(sizeof(CK_ATTRIBUTE));
			gt[0].type = CKA_CLASS;
			gt[0].pValue = &c2;
			gt[0].ulValueLen = sizeof(c2);
			CHECK(F->C_GetAttributeValue(s, any ? any->priv : objs[0], gt,
				HUGE_LEN), CKR_ARGUMENTS_BAD);
		}
	}
	CASE("huge_findobjectsinit_count") {
		CK_OBJECT_CLASS c2 = CKO_PRIVATE_KEY;
		CK_ATTRIBUTE *gt = guarded(sizeof(CK_ATTRIBUTE));
		gt[0].type = CKA_CLASS;
		gt[0].pValue = &c2;
		gt[0].ulValueLen = sizeof(c2);
		rv = F->C_FindObjectsInit(s, gt, HUGE_LEN);
		CHECK(rv, CKR_ARGUMENTS_BAD);
		if (rv == CKR_OK)
			F->C_FindObjectsFinal(s);
	}
	/* The module takes at most 64 MiB of data per call. */
	if (any) {
		CASE("huge_signupdate_len") {
			unsigned char *gd = guarded(32);
			memcpy(gd, hash, 32);
			rv = F->C_SignInit(s, &m, any->priv);
			if (rv == CKR_OK)
				rv = F->C_SignUpdate(s, gd, HUGE_LEN);
			CHECK(rv, CKR_DATA_LEN_RANGE);
			F->C_CloseSession(s);
			s = open_ro(slot);
		}
	}
	if (any && any->pub) {
		CK_ULONG vlen = any->siglen ? any->siglen : 64;
		/* The real signature buffer holds vlen bytes. */
		CASE("huge_verify_data_len") {
			unsigned char *gd = guarded(32);
			memcpy(gd, hash, 32);
			rv = F->C_VerifyInit(s, &m, any->pub);
			if (rv == CKR_OK)
				rv = F->C_Verify(s, gd, HUGE_LEN, sig, vlen);
			CHECK(rv, CKR_DATA_LEN_RANGE);
			F->C_CloseSession(s);
			s = open_ro(slot);
		}
		/* A signature wrong by its length alone is
		 * SIGNATURE_LEN_RANGE, however absurd the length. */
		CASE("huge_verify_signature_len") {
			unsigned char *gs = guarded(vlen);
			memset(gs, 0, vlen);
			rv = F->C_VerifyInit(s, &m, any->pub);
			if (rv == CKR_OK)
				rv = F->C_Verify(s, data, 32, gs, HUGE_LEN);
			CHECK(rv, CKR_SIGNATURE_LEN_RANGE);
			F->C_CloseSession(s);
			s = open_ro(slot);
		}
		CASE("huge_verifyupdate_len") {
			unsigned char *gd = guarded(32);
			memcpy(gd, hash, 32);
			rv = F->C_VerifyInit(s, &m, any->pub);
			if (rv == CKR_OK)
				rv = F->C_VerifyUpdate(s, gd, HUGE_LEN);
			CHECK(rv, CKR_DATA_LEN_RANGE);
			F->C_CloseSession(s);
			s = open_ro(slot);
		}
		CASE("huge_verifyfinal_signature_len") {
			unsigned char *gs = guarded(vlen);
			memset(gs, 0, vlen);
			rv = F->C_VerifyInit(s, &m, any->pub);
			if (rv == CKR_OK)
				rv = F->C_VerifyUpdate(s, data, 32);
			if (rv == CKR_OK)
				rv = F->C_VerifyFinal(s, gs, HUGE_LEN);
			CHECK(rv, CKR_SIGNATURE_LEN_RANGE);
			F->C_CloseSession(s);
			s = open_ro(slot);
		}
	}
	/* C_GenerateRandom writes where it is told: the 16-byte buffer ends
	 * at a PROT_NONE page, so a module that wrote on would crash. */
	CASE("huge_generaterandom_len") {
		unsigned char *gr = guarded(16);
		CHECK(F->C_GenerateRandom(s, gr, HUGE_LEN), CKR_ARGUMENTS_BAD);
	}
	F->C_CloseSession(s);

finalize:
	CASE("finalize") CHECK(F->C_Finalize(NULL), CKR_OK);
out:
	alarm(0);
	free_keys(keys, nkeys);
	free(objs);
	printf("misuse ok=%d fail=%d skip=%d\n", n_ok, n_fail, n_skip);
	return n_fail > 0;
}

/* ------------------------------------------------------------------ */
/* Mode: fork                                                          */
/* ------------------------------------------------------------------ */

static const char *volatile child_step = "start";

static void child_alarm(int sig)
{
	char buf[128];
	int n = snprintf(buf, sizeof(buf), "child hung step=%s\n", child_step);
	(void)sig;
	if (n > 0)
		(void)!write(1, buf, (size_t)n);
	_exit(4);
}

static volatile sig_atomic_t parent_timed_out;
static void parent_alarm(int sig)
{
	(void)sig;
	parent_timed_out = 1;
}

static int fork_sign(CK_SLOT_ID slot, const struct key *k, const char *when)
{
	int verified = 0;
	uint64_t t0 = now_ns();
	CK_RV rv = sign_check(slot, k, &verified);
	printf("parent sign=%s rv=0x%08lx verified=%d ms=%llu\n", when, rv,
		verified, (unsigned long long)((now_ns() - t0) / 1000000));
	return rv == CKR_OK && verified;
}

static int mode_steps(void)
{
	CK_SESSION_HANDLE s;
	CK_SLOT_ID slot;
	struct key keys[MAX_KEYS];
	int nkeys;
	char line[64];
	unsigned char msg[] = "steps", hash[32], data[64], sig[1024];
	CK_MECHANISM m;
	CK_ULONG dlen, siglen = 0;
	const char *stage;
	CK_RV rv;

	must(init_os_locking(), "C_Initialize");
	must(pick_slot(&slot), "choosing a slot");
	must(F->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s), "C_OpenSession");
	must(login_user(s), "C_Login");
	nkeys = find_keys(s, keys, MAX_KEYS);
	if (nkeys == 0)
		die("no key to sign with");
	enum mech_kind mk = mech_for(&keys[0], MK_AUTO);
	sha256(msg, sizeof(msg) - 1, hash);
	printf("steps ready\n");
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		if (strncmp(line, "quit", 4) == 0)
			break;
		if (strncmp(line, "sign", 4) != 0)
			die("unknown step \"%s\"", line);
		dlen = sign_input(mk, msg, sizeof(msg) - 1, hash, &m, data);
		rv = sign_once(s, &keys[0], &m, data, dlen, sig, sizeof(sig), &siglen, &stage);
		printf("step sign rv=0x%08lx name=%s stage=%s verified=%d\n", rv, rvname(rv), stage,
			rv == CKR_OK && verify(&keys[0], mk, hash, sig, siglen));
		fflush(stdout);
	}
	free_keys(keys, nkeys);
	rv = F->C_Finalize(NULL);
	printf("finalize rv=0x%08lx name=%s\n", rv, rvname(rv));
	return rv == CKR_OK ? 0 : 1;
}

/* warm_openssl makes this program's own first use of OpenSSL (reading
 * its config, loading the default provider) before "first" starts its
 * clock, so that cost is not counted against a module that does not link
 * OpenSSL. */
static void warm_openssl(void)
{
	unsigned char h[32];
	EVP_PKEY_CTX *c;
	OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL);
	sha256((const unsigned char *)"warm", 4, h);
	c = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	EVP_PKEY_CTX_free(c);
	c = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	EVP_PKEY_CTX_free(c);
}

static int mode_first(uint64_t t0, uint64_t t1)
{
	CK_SESSION_HANDLE s;
	unsigned char msg[] = "first", hash[32], data[64], sig[1024];
	CK_MECHANISM m;
	CK_ULONG dlen, siglen = 0;
	const char *stage = "C_SignInit";
	uint64_t t2, t3, t4, t5, t6;
	enum mech_kind mk;
	int ok;
	CK_RV rv;

	must(init_os_locking(), "C_Initialize");
	t2 = now_ns();
	must(pick_slot(&opt.slot), "choosing a slot");
	must(F->C_OpenSession(opt.slot, CKF_SERIAL_SESSION, NULL, NULL, &s), "C_OpenSession");
	must(login_user(s), "C_Login");
	t3 = now_ns();
	g_nkeys = find_keys(s, g_keys, MAX_KEYS);
	select_keys(opt.mech);
	if (g_nkeys == 0)
		die("no private key with CKA_SIGN for this mechanism");
	mk = mech_for(&g_keys[0], opt.mech);
	sha256(msg, sizeof(msg) - 1, hash);
	dlen = sign_input(mk, msg, sizeof(msg) - 1, hash, &m, data);
	t4 = now_ns();
	rv = sign_once(s, &g_keys[0], &m, data, dlen, sig, sizeof(sig), &siglen, &stage);
	t5 = now_ns();
	must(rv, stage);
	ok = verify(&g_keys[0], mk, hash, sig, siglen);
	t6 = now_ns();
	rv = sign_once(s, &g_keys[0], &m, data, dlen, sig, sizeof(sig), &siglen, &stage);
	must(rv, stage);
	ok = ok && verify(&g_keys[0], mk, hash, sig, siglen);
	printf("first load_us=%llu init_us=%llu open_us=%llu find_us=%llu sign1_us=%llu sign2_us=%llu total_us=%llu verified=%d\n",
		(unsigned long long)((t1 - t0) / 1000), (unsigned long long)((t2 - t1) / 1000),
		(unsigned long long)((t3 - t2) / 1000), (unsigned long long)((t4 - t3) / 1000),
		(unsigned long long)((t5 - t4) / 1000), (unsigned long long)((now_ns() - t6) / 1000),
		(unsigned long long)((t5 - t0) / 1000), ok);
	F->C_CloseSession(s);
	free_keys(g_keys, g_nkeys);
	rv = F->C_Finalize(NULL);
	return ok && rv == CKR_OK ? 0 : 1;
}

static int mode_fork(void)
{
	CK_SESSION_HANDLE s;
	CK_SLOT_ID slot;
	struct key keys[MAX_KEYS];
	int nkeys, ok = 1, status = 0;
	pid_t pid, w;
	struct sigaction sa;

	must(init_os_locking(), "C_Initialize");
	must(pick_slot(&slot), "choosing a slot");
	must(F->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s),
		"C_OpenSession");
	must(login_user(s), "C_Login");
	nkeys = find_keys(s, keys, MAX_KEYS);
	if (nkeys == 0) {
		/* The fork checks still run; the result is a failure. */
		printf("parent sign=before-fork skipped=no-key\n");
		ok = 0;
	} else if (!fork_sign(slot, &keys[0], "before-fork")) {
		ok = 0;
	}
	fflush(stdout);

	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		/* The child has one thread and a copy of the module's memory.
		 * It must not hang (a Go runtime's threads are gone). */
		CK_SLOT_ID cs[16];
		CK_ULONG cn = 16;
		CK_RV rv;
		uint64_t t0;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = child_alarm;
		sigaction(SIGALRM, &sa, NULL);

		child_step = "C_Finalize";
		alarm(5);
		t0 = now_ns();
		rv = F->C_Finalize(NULL);
		printf("child finalize rv=0x%08lx name=%s ms=%llu\n", rv, rvname(rv),
			(unsigned long long)((now_ns() - t0) / 1000000));
		fflush(stdout);

		child_step = "C_Initialize";
		alarm(5);
		t0 = now_ns();
		rv = init_os_locking();
		printf("child initialize rv=0x%08lx name=%s ms=%llu\n", rv,
			rvname(rv), (unsigned long long)((now_ns() - t0) / 1000000));
		fflush(stdout);
		child_step = "C_GetSlotList";
		t0 = now_ns();
		rv = F->C_GetSlotList(CK_TRUE, cs, &cn);
		printf("child getslotlist rv=0x%08lx name=%s count=%lu ms=%llu\n", rv,
			rvname(rv), rv == CKR_OK ? cn : 0,
			(unsigned long long)((now_ns() - t0) / 1000000));
		alarm(0);
		fflush(stdout);
		_exit(0);
	}

	/* Parent: wait at most 10 s (SIGALRM interrupts waitpid). */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = parent_alarm;
	sigaction(SIGALRM, &sa, NULL);
	alarm(10);
	w = waitpid(pid, &status, 0);
	alarm(0);
	if (w != pid) {
		printf("parent child=%d hung=1 timeout_s=10\n", (int)pid);
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		ok = 0;
	} else if (WIFEXITED(status)) {
		printf("parent child=%d exit=%d\n", (int)pid, WEXITSTATUS(status));
		if (WEXITSTATUS(status) != 0)
			ok = 0;
	} else {
		printf("parent child=%d signal=%d\n", (int)pid,
			WIFSIGNALED(status) ? WTERMSIG(status) : -1);
		ok = 0;
	}

	alarm(10);
	if (nkeys > 0 && !fork_sign(slot, &keys[0], "after-fork"))
		ok = 0;
	alarm(0);
	if (parent_timed_out) {
		printf("parent hung=1\n");
		ok = 0;
	}
	F->C_CloseSession(s);
	printf("parent finalize rv=0x%08lx\n", F->C_Finalize(NULL));
	free_keys(keys, nkeys);
	printf("fork result=%s\n", ok ? "ok" : "FAIL");
	return !ok;
}

/* ------------------------------------------------------------------ */
/* Command line                                                        */
/* ------------------------------------------------------------------ */

static void usage(void)
{
	fprintf(stderr,
		"usage: p11host MODULE info   [--pin PIN] [--slot ID]\n"
		"       p11host MODULE sign   [--threads N] [--count M] [--pin PIN]\n"
		"                             [--slot ID] [--login-each]\n"
		"                             [--mech auto|rsa-pkcs|sha256-rsa-pkcs|rsa-pss|\n"
		"                                     sha256-rsa-pss|ecdsa|ecdsa-sha256]\n"
		"       p11host MODULE misuse [--pin PIN] [--slot ID] [--skip LIST] [-v]\n"
		"       p11host MODULE fork   [--pin PIN] [--slot ID]\n"
		"       p11host MODULE first  [--pin PIN] [--slot ID] [--mech M]\n"
		"       p11host MODULE loadtime\n"
		"The PIN may also be given in $P11HOST_PIN.\n");
	exit(2);
}

static long parse_num(const char *s, long lo, long hi, const char *what)
{
	char *end;
	long v;
	errno = 0;
	v = strtol(s, &end, 0);
	if (errno || *end || v < lo || v > hi)
		die("bad %s \"%s\" (want %ld..%ld)", what, s, lo, hi);
	return v;
}

int main(int argc, char **argv)
{
	int i;
	if (argc < 3)
		usage();
	opt.module = argv[1];
	opt.mode = argv[2];
	opt.pin = getenv("P11HOST_PIN");
	for (i = 3; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "-v") == 0) {
			opt.verbose = 1;
			continue;
		}
		if (strcmp(a, "--login-each") == 0) {
			opt.login_each = 1;
			continue;
		}
		if (strcmp(a, "--session-each") == 0) {
			opt.session_each = 1;
			continue;
		}
		if (!v)
			usage();
		i++;
		if (strcmp(a, "--pin") == 0)
			opt.pin = v;
		else if (strcmp(a, "--slot") == 0) {
			opt.slot = (CK_SLOT_ID)parse_num(v, 0, 0x7fffffffL, "slot");
			opt.have_slot = 1;
		} else if (strcmp(a, "--threads") == 0)
			opt.threads = parse_num(v, 1, 1024, "thread count");
		else if (strcmp(a, "--count") == 0)
			opt.count = parse_num(v, 1, 10000000, "count");
		else if (strcmp(a, "--skip") == 0)
			opt.skip = v;
		else if (strcmp(a, "--mech") == 0) {
			if (strcmp(v, "auto") == 0) opt.mech = MK_AUTO;
			else if (strcmp(v, "rsa-pkcs") == 0) opt.mech = MK_RSA_PKCS;
			else if (strcmp(v, "sha256-rsa-pkcs") == 0) opt.mech = MK_SHA256_RSA_PKCS;
			else if (strcmp(v, "rsa-pss") == 0) opt.mech = MK_RSA_PSS;
			else if (strcmp(v, "sha256-rsa-pss") == 0) opt.mech = MK_SHA256_RSA_PSS;
			else if (strcmp(v, "ecdsa") == 0) opt.mech = MK_ECDSA;
			else if (strcmp(v, "ecdsa-sha256") == 0) opt.mech = MK_ECDSA_SHA256;
			else die("unknown --mech \"%s\"", v);
		} else
			usage();
	}
	if (opt.pin && *opt.pin == '\0')
		opt.pin = NULL;
	if (opt.threads * opt.count > 100000000L)
		die("--threads times --count is too large");

	if (strcmp(opt.mode, "loadtime") == 0) {
		long rss0 = proc_status("VmRSS:");
		uint64_t t0 = now_ns(), t1, t2;
		CK_RV rv;
		load_module();
		t1 = now_ns();
		rv = init_os_locking();
		t2 = now_ns();
		printf("loadtime load_us=%llu init_us=%llu rss_kb_before=%ld rss_kb_after=%ld rv=0x%08lx\n",
			(unsigned long long)((t1 - t0) / 1000), (unsigned long long)((t2 - t1) / 1000),
			rss0, proc_status("VmRSS:"), rv);
		return rv == CKR_OK ? 0 : 1;
	}
	if (strcmp(opt.mode, "first") == 0) {
		uint64_t t0, t1;
		warm_openssl();
		t0 = now_ns();
		load_module();
		t1 = now_ns();
		return mode_first(t0, t1);
	}
	if (strcmp(opt.mode, "probe") == 0) { int mode_probe(void); return mode_probe(); }
	if (strcmp(opt.mode, "signloop") == 0) { int mode_signloop(void); load_module(); return mode_signloop(); }
	if (strcmp(opt.mode, "soak") == 0) { int mode_soak(void); load_module(); return mode_soak(); }
	if (strcmp(opt.mode, "misuse") == 0)
		install_crash_handlers();  /* before the module's own handlers */
	else if (strcmp(opt.mode, "info") && strcmp(opt.mode, "sign") &&
		 strcmp(opt.mode, "fork") && strcmp(opt.mode, "steps") &&
		 strcmp(opt.mode, "loadtime"))
		usage();
	load_module();
	if (strcmp(opt.mode, "info") == 0)
		return mode_info();
	if (strcmp(opt.mode, "sign") == 0)
		return mode_sign();
	if (strcmp(opt.mode, "misuse") == 0)
		return mode_misuse();
	if (strcmp(opt.mode, "steps") == 0)
		return mode_steps();
	return mode_fork();
}

/* ------------------------------------------------------------------ */
/* Mode: probe                                                         */
/* ------------------------------------------------------------------ */

/*
 * "probe" shows what a program meets when the TPM or the files are bad.
 * First what loading costs, timed from before dlopen (none of these
 * calls may need the TPM):
 *   probe load_us= init_rv= slots_rv= slots= info_rv= cheap_us=
 * (cheap_us covers dlopen, C_GetFunctionList, C_Initialize,
 * C_GetSlotList and C_GetInfo). Then one line per call that may need
 * the TPM, in the order a program makes them:
 *   probe call=NAME rv=0x... name=CKR_... ms=N [keys=N]
 * for C_GetTokenInfo, C_OpenSession, C_Login (with a PIN), C_FindObjects
 * (private keys that can sign), then for every key
 *   probe call=C_Sign label="..." rv=0x... name=... stage=... verified=0|1 ms=N
 * and "probe call=C_Finalize rv=...". The slot is --slot or 1 (the token
 * may be absent). The exit status is 0 whatever the module answered:
 * the caller judges the answers.
 */
static void probe_line(const char *call, CK_RV rv, uint64_t t0)
{
	printf("probe call=%s rv=0x%08lx name=%s ms=%llu\n", call, rv, rvname(rv),
		(unsigned long long)((now_ns() - t0) / 1000000));
	fflush(stdout);
}

int mode_probe(void)
{
	CK_SLOT_ID ids[8];
	CK_ULONG nids = 8;
	CK_INFO info;
	CK_TOKEN_INFO ti;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	CK_RV rv, irv, srv, nrv;
	struct key keys[MAX_KEYS];
	int nkeys = 0, i;
	uint64_t t0 = now_ns(), t1;

	load_module();
	t1 = now_ns();
	irv = init_os_locking();
	srv = F->C_GetSlotList(CK_FALSE, ids, &nids);
	nrv = F->C_GetInfo(&info);
	printf("probe load_us=%llu init_rv=0x%08lx slots_rv=0x%08lx slots=%lu info_rv=0x%08lx cheap_us=%llu\n",
		(unsigned long long)((t1 - t0) / 1000), irv, srv, srv == CKR_OK ? nids : 0, nrv,
		(unsigned long long)((now_ns() - t0) / 1000));
	fflush(stdout);
	if (irv != CKR_OK)
		return 0;
	if (!opt.have_slot)
		opt.slot = 1;

	t0 = now_ns();
	rv = F->C_GetTokenInfo(opt.slot, &ti);
	probe_line("C_GetTokenInfo", rv, t0);

	t0 = now_ns();
	rv = F->C_OpenSession(opt.slot, CKF_SERIAL_SESSION, NULL, NULL, &s);
	probe_line("C_OpenSession", rv, t0);
	if (rv == CKR_OK) {
		if (opt.pin) {
			t0 = now_ns();
			rv = F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)opt.pin, strlen(opt.pin));
			probe_line("C_Login", rv, t0);
		}
		t0 = now_ns();
		nkeys = find_keys(s, keys, MAX_KEYS);
		printf("probe call=C_FindObjects keys=%d ms=%llu\n", nkeys,
			(unsigned long long)((now_ns() - t0) / 1000000));
		for (i = 0; i < nkeys; i++) {
			unsigned char msg[] = "probe", hash[32], data[64], sig[1024];
			enum mech_kind mk = mech_for(&keys[i], MK_AUTO);
			CK_MECHANISM m;
			CK_ULONG dlen, siglen = 0;
			const char *stage;
			sha256(msg, sizeof(msg) - 1, hash);
			dlen = sign_input(mk, msg, sizeof(msg) - 1, hash, &m, data);
			t0 = now_ns();
			rv = sign_once(s, &keys[i], &m, data, dlen, sig, sizeof(sig), &siglen, &stage);
			printf("probe call=C_Sign");
			put_text("label", keys[i].label, keys[i].labellen);
			printf(" rv=0x%08lx name=%s stage=%s verified=%d ms=%llu\n", rv, rvname(rv), stage,
				rv == CKR_OK && verify(&keys[i], mk, hash, sig, siglen),
				(unsigned long long)((now_ns() - t0) / 1000000));
		}
		fflush(stdout);
		F->C_CloseSession(s);
	}
	free_keys(keys, nkeys);
	rv = F->C_Finalize(NULL);
	printf("probe call=C_Finalize rv=0x%08lx name=%s\n", rv, rvname(rv));
	return 0;
}

/* ------------------------------------------------------------------ */
/* Mode: signloop                                                      */
/* ------------------------------------------------------------------ */

/*
 * "signloop" signs with the first key over and over on one session, on a
 * thread of its own, until a line "quit" (or the end of input) arrives
 * on standard input, so a test can kill and restart the TPM in between.
 * It prints a line each time the answer changes:
 *   loop n=N rv=0x... name=... stage=... verified=0|1 ms=DURATION
 * and at the end
 *   loop done signs=N ok=N device_error=N other=N max_ms=N
 * where max_ms is the longest single C_SignInit + C_Sign. After a failure
 * it waits 5 ms before the next try, so a dead TPM does not flood the log.
 */
static volatile int loop_quit;
static unsigned long loop_n, loop_ok, loop_dev, loop_other;
static uint64_t loop_max_ns;
static struct key loop_keys[MAX_KEYS];
static CK_SESSION_HANDLE loop_s;

static void *loop_worker(void *arg)
{
	unsigned char msg[] = "signloop", hash[32], data[64], sig[1024];
	enum mech_kind mk = mech_for(&loop_keys[0], MK_AUTO);
	CK_RV last = (CK_RV)-1;
	(void)arg;
	sha256(msg, sizeof(msg) - 1, hash);
	while (!__atomic_load_n(&loop_quit, __ATOMIC_SEQ_CST)) {
		CK_MECHANISM m;
		CK_ULONG dlen, siglen = 0;
		const char *stage;
		uint64_t t0 = now_ns(), d;
		int ok;
		CK_RV rv;
		dlen = sign_input(mk, msg, sizeof(msg) - 1, hash, &m, data);
		rv = sign_once(loop_s, &loop_keys[0], &m, data, dlen, sig, sizeof(sig), &siglen, &stage);
		d = now_ns() - t0;
		ok = rv == CKR_OK && verify(&loop_keys[0], mk, hash, sig, siglen);
		loop_n++;
		if (d > loop_max_ns)
			loop_max_ns = d;
		if (ok)
			loop_ok++;
		else if (rv == CKR_DEVICE_ERROR)
			loop_dev++;
		else
			loop_other++;
		if (rv != last || (rv == CKR_OK && !ok)) {
			printf("loop n=%lu rv=0x%08lx name=%s stage=%s verified=%d ms=%llu\n", loop_n, rv,
				rvname(rv), stage, ok, (unsigned long long)(d / 1000000));
			fflush(stdout);
			last = rv;
		}
		if (rv != CKR_OK)
			usleep(5000);
	}
	return NULL;
}

int mode_signloop(void)
{
	char line[64];
	pthread_t th;
	CK_RV rv;
	int nkeys;

	must(init_os_locking(), "C_Initialize");
	must(pick_slot(&opt.slot), "choosing a slot");
	must(F->C_OpenSession(opt.slot, CKF_SERIAL_SESSION, NULL, NULL, &loop_s), "C_OpenSession");
	must(login_user(loop_s), "C_Login");
	nkeys = find_keys(loop_s, loop_keys, MAX_KEYS);
	if (nkeys == 0)
		die("no key to sign with");
	printf("loop ready\n");
	fflush(stdout);
	if (pthread_create(&th, NULL, loop_worker, NULL) != 0)
		die("pthread_create failed");
	while (fgets(line, sizeof(line), stdin))
		if (strncmp(line, "quit", 4) == 0)
			break;
	__atomic_store_n(&loop_quit, 1, __ATOMIC_SEQ_CST);
	pthread_join(th, NULL);
	printf("loop done signs=%lu ok=%lu device_error=%lu other=%lu max_ms=%llu\n", loop_n, loop_ok,
		loop_dev, loop_other, (unsigned long long)(loop_max_ns / 1000000));
	F->C_CloseSession(loop_s);
	free_keys(loop_keys, nkeys);
	rv = F->C_Finalize(NULL);
	printf("finalize rv=0x%08lx name=%s\n", rv, rvname(rv));
	return rv == CKR_OK ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* Mode: soak                                                          */
/* ------------------------------------------------------------------ */

/*
 * "soak" signs --count times (default 100000) in one thread with the
 * first ECDSA P-256 key, a new C_SignInit + C_Sign each time on one
 * session, every signature verified, and samples the process every
 * --every signatures (default 10000):
 *   soak signs=N rss_kb=N threads=N elapsed_ms=N
 * Goroutines are counted by the module at C_Finalize when
 * SIMPLE_TPM_PK11_DEBUG is set ("finalize: N goroutines" on its log): so
 * soak first signs once and finalizes ("soak phase=warm finalized"),
 * initializes again, runs the count and finalizes ("soak phase=end
 * finalized"). The last line is
 *   soak done signs=N verified=N failed=N
 */
static long soak_every = 10000;

static int soak_session(CK_SESSION_HANDLE *s, struct key *keys, int *nkeys, int *which)
{
	int i;
	must(init_os_locking(), "C_Initialize");
	must(pick_slot(&opt.slot), "choosing a slot");
	must(F->C_OpenSession(opt.slot, CKF_SERIAL_SESSION, NULL, NULL, s), "C_OpenSession");
	must(login_user(*s), "C_Login");
	*nkeys = find_keys(*s, keys, MAX_KEYS);
	for (i = 0; i < *nkeys; i++)
		if (keys[i].type == CKK_EC && keys[i].bits == 256 && keys[i].pkey) {
			*which = i;
			return 1;
		}
	return 0;
}

static int soak_sign(CK_SESSION_HANDLE s, const struct key *k, long i)
{
	unsigned char hash[32], data[64], sig[256];
	char msg[64];
	CK_MECHANISM m;
	CK_ULONG dlen, siglen = 0;
	const char *stage;
	CK_RV rv;
	int n = snprintf(msg, sizeof(msg), "soak %ld", i);
	sha256(msg, (size_t)n, hash);
	dlen = sign_input(MK_ECDSA, (unsigned char *)msg, (size_t)n, hash, &m, data);
	rv = sign_once(s, k, &m, data, dlen, sig, sizeof(sig), &siglen, &stage);
	if (rv != CKR_OK) {
		fprintf(stderr, "p11host: soak: signature %ld: %s: %s\n", i, stage, rvname(rv));
		return 0;
	}
	return verify(k, MK_ECDSA, hash, sig, siglen);
}

int mode_soak(void)
{
	struct key keys[MAX_KEYS];
	CK_SESSION_HANDLE s;
	unsigned long verified = 0, failed = 0;
	long i, count = opt.count > 1 ? opt.count : 100000;
	int nkeys, k = 0;
	uint64_t t0;
	const char *e = getenv("P11HOST_SOAK_EVERY");

	if (e)
		soak_every = parse_num(e, 1, 100000000L, "P11HOST_SOAK_EVERY");
	if (!soak_session(&s, keys, &nkeys, &k))
		die("no ECDSA P-256 key to sign with");
	if (!soak_sign(s, &keys[k], -1))
		die("the first signature failed");
	F->C_CloseSession(s);
	free_keys(keys, nkeys);
	must(F->C_Finalize(NULL), "C_Finalize");
	printf("soak phase=warm finalized\n");
	fflush(stdout);

	if (!soak_session(&s, keys, &nkeys, &k))
		die("no ECDSA P-256 key to sign with");
	printf("soak signs=0 rss_kb=%ld threads=%ld elapsed_ms=0\n", proc_status("VmRSS:"),
		proc_status("Threads:"));
	fflush(stdout);
	t0 = now_ns();
	for (i = 0; i < count; i++) {
		if (soak_sign(s, &keys[k], i))
			verified++;
		else
			failed++;
		if ((i + 1) % soak_every == 0 || i + 1 == count) {
			printf("soak signs=%ld rss_kb=%ld threads=%ld elapsed_ms=%llu\n", i + 1,
				proc_status("VmRSS:"), proc_status("Threads:"),
				(unsigned long long)((now_ns() - t0) / 1000000));
			fflush(stdout);
		}
	}
	F->C_CloseSession(s);
	free_keys(keys, nkeys);
	must(F->C_Finalize(NULL), "C_Finalize");
	printf("soak phase=end finalized\n");
	printf("soak done signs=%ld verified=%lu failed=%lu\n", count, verified, failed);
	return failed != 0;
}
