/*
 * abi_p11kit.c - the reference half of abi_check: the rows of abi_list.h
 * measured on p11-kit's pkcs11.h (package libp11-kit-dev, found with
 * -I/usr/include/p11-kit-1). Compiling this file also asserts that
 * p11-kit's declarations match the neutral signatures in abi_list.h.
 */
#include <p11-kit/pkcs11.h>

#include "abi_list.h"

ABI_DEFINE_TABLE(abi_p11kit_table)
