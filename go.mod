module github.com/simple-tpm-pk11/simple-tpm-pk11

go 1.26.0

require (
	github.com/ThalesGroup/crypto11 v1.6.2
	github.com/google/go-tpm v0.9.8
	github.com/miekg/pkcs11 v1.1.2
	github.com/rogpeppe/go-internal v1.16.0
	golang.org/x/crypto v0.59.0
	golang.org/x/sys v0.50.0
	golang.org/x/term v0.48.0
)

require (
	github.com/google/go-tpm-tools v0.4.11 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	github.com/thales-e-security/pool v0.0.2 // indirect
	golang.org/x/tools v0.26.0 // indirect
)
