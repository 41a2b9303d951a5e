/*
 * abi_check.c - checks that module/pkcs11.h is ABI-identical to the
 * PKCS#11 2.40 header applications are built with.
 *
 * This unit includes our header; abi_p11kit.c includes p11-kit's. Both
 * build the same table from abi_list.h (sizes, signedness, alignments,
 * field offsets, the offset of every CK_FUNCTION_LIST member, the
 * constants of our header and of tests/c/p11consts.h)
 * and main() compares the two row by row. At compile time each unit also
 * asserts that every function pointer, prototype and callback type of its
 * header matches one neutral spelling in plain C, so a parameter that
 * differs in type between the two headers fails to compile.
 *
 * Build and run (tests/c_abi_test.go does this):
 *   gcc -std=gnu11 -Wall -Wextra -Werror -I module -I /usr/include/p11-kit-1 \
 *       -o abi_check tests/c/abi_check.c tests/c/abi_p11kit.c && ./abi_check
 * Exit status 0 when everything matches; "-v" prints every row.
 */
#include <stdio.h>
#include <string.h>

#include "pkcs11.h"
#include "p11consts.h"

#include "abi_list.h"

ABI_DEFINE_TABLE(abi_ours_table)

/* Checks only our header can take: p11-kit 0.24 has neither the 3.0
 * interface functions nor some of the pointer typedefs. */

#define OURS_ASSERT_TYPEDEF(fn, params) \
	_Static_assert(__builtin_types_compatible_p(CK_##fn, UL (*) params), \
		"CK_" #fn " has the wrong signature");
ABI_FUNCTIONS(OURS_ASSERT_TYPEDEF)

ABI_ASSERT_PTR(CK_BBOOL_PTR, unsigned char *)
ABI_ASSERT_PTR(CK_LONG_PTR, long *)
ABI_ASSERT_PTR(CK_FLAGS_PTR, unsigned long *)
ABI_ASSERT_PTR(CK_KEY_TYPE_PTR, unsigned long *)
ABI_ASSERT_PTR(CK_ATTRIBUTE_TYPE_PTR, unsigned long *)
ABI_ASSERT_PTR(CK_INTERFACE_PTR, CK_INTERFACE *)
ABI_ASSERT_PTR(CK_INTERFACE_PTR_PTR, CK_INTERFACE **)

/* Version 3.0 CK_INTERFACE: { CK_CHAR_PTR, CK_VOID_PTR, CK_FLAGS }. */
_Static_assert(__builtin_types_compatible_p(
	__typeof__(((CK_INTERFACE *)0)->pInterfaceName), unsigned char *),
	"CK_INTERFACE.pInterfaceName");
_Static_assert(__builtin_types_compatible_p(
	__typeof__(((CK_INTERFACE *)0)->pFunctionList), void *),
	"CK_INTERFACE.pFunctionList");
_Static_assert(__builtin_types_compatible_p(
	__typeof__(((CK_INTERFACE *)0)->flags), unsigned long),
	"CK_INTERFACE.flags");
_Static_assert(__builtin_offsetof(CK_INTERFACE, pInterfaceName) == 0,
	"CK_INTERFACE layout");
_Static_assert(__builtin_offsetof(CK_INTERFACE, pFunctionList) ==
	sizeof(void *), "CK_INTERFACE layout");
_Static_assert(__builtin_offsetof(CK_INTERFACE, flags) ==
	2 * sizeof(void *), "CK_INTERFACE layout");
_Static_assert(sizeof(CK_INTERFACE) == 2 * sizeof(void *) +
	sizeof(unsigned long), "CK_INTERFACE size");

_Static_assert(__builtin_types_compatible_p(__typeof__(&C_GetInterfaceList),
	UL (*)(CK_INTERFACE *, ULP)), "C_GetInterfaceList");
_Static_assert(__builtin_types_compatible_p(CK_C_GetInterfaceList,
	UL (*)(CK_INTERFACE *, ULP)), "CK_C_GetInterfaceList");
_Static_assert(__builtin_types_compatible_p(__typeof__(&C_GetInterface),
	UL (*)(UBP, CK_VERSION *, CK_INTERFACE **, UL)), "C_GetInterface");
_Static_assert(__builtin_types_compatible_p(CK_C_GetInterface,
	UL (*)(UBP, CK_VERSION *, CK_INTERFACE **, UL)), "CK_C_GetInterface");

/* The table must be exactly version + 68 pointers, nothing after. */
_Static_assert(sizeof(CK_FUNCTION_LIST) ==
	__builtin_offsetof(CK_FUNCTION_LIST, C_Initialize) +
	68 * sizeof(CK_C_Initialize), "CK_FUNCTION_LIST size");

static const char *const order[] = {
#define NAME_FN(fn, params) #fn,
	ABI_FUNCTIONS(NAME_FN)
#undef NAME_FN
};

static const unsigned long order_offset[] = {
#define OFF_FN(fn, params) __builtin_offsetof(CK_FUNCTION_LIST, fn),
	ABI_FUNCTIONS(OFF_FN)
#undef OFF_FN
};

int main(int argc, char **argv)
{
	int verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
	unsigned long n_ours, n_ref, i, bad = 0;
	const struct abi_entry *ours = abi_ours_table(&n_ours);
	const struct abi_entry *ref = abi_p11kit_table(&n_ref);

	if (n_ours != n_ref) {
		printf("FAIL row count: ours=%lu p11-kit=%lu\n", n_ours, n_ref);
		return 1;
	}
	for (i = 0; i < n_ours; i++) {
		int same = strcmp(ours[i].name, ref[i].name) == 0 &&
			ours[i].value == ref[i].value;
		if (!same)
			bad++;
		if (!same || verbose)
			printf("%-4s %-52s ours=%-5lu p11-kit=%lu\n",
				same ? "ok" : "FAIL", ours[i].name,
				ours[i].value, ref[i].value);
	}

	/* Position of each function: consecutive pointer slots after the
	 * version, in the order of the specification. */
	for (i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		unsigned long want = __builtin_offsetof(CK_FUNCTION_LIST,
			C_Initialize) + i * sizeof(void *);
		if (order_offset[i] != want) {
			printf("FAIL %s is at offset %lu, want %lu (slot %lu)\n",
				order[i], order_offset[i], want, i);
			bad++;
		}
	}

	printf("abi_check: %lu rows, %lu functions, %lu mismatches\n",
		n_ours, (unsigned long)(sizeof(order) / sizeof(order[0])), bad);
	return bad ? 1 : 0;
}
