/*
 * abi_p11kit.c - the reference half of abi_check: the rows of abi_list.h
 * measured on p11-kit's pkcs11.h (package libp11-kit-dev, found with
 * -I/usr/include/p11-kit-1). Compiling this file also asserts that
 * p11-kit's declarations match the neutral signatures in abi_list.h.
 * p11consts.h is included for its list of names only: the values come
 * from p11-kit, to be compared with the ones p11host.c uses.
 */
#include <p11-kit/pkcs11.h>

#define P11CONSTS_NAMES_ONLY
#include "p11consts.h"
#include "abi_list.h"

ABI_DEFINE_TABLE(abi_p11kit_table)
