// Command module builds libsimple-tpm-pk11.so, the PKCS#11 module:
//
//	go build -buildmode=c-shared -o libsimple-tpm-pk11.so ./module
//
// shim.c holds the C function table; exports.go converts C arguments and
// calls package p11, where the PKCS#11 logic lives. Nothing else imports
// this package.
package main

// #cgo CFLAGS: -I${SRCDIR} -Wall
import "C"

func main() {}
