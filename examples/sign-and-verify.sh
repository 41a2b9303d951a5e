#!/bin/sh
# Sign a file with a TPM key and check the signature with openssl.
# Usage: sign-and-verify.sh KEY FILE
set -eu
key=$1 file=$2
stpm-sign -k "$key" -f "$file" -r -o "$file.sig"
ssh-keygen -e -m PKCS8 -f "$key.pub" > "$file.pem"
openssl dgst -sha256 -verify "$file.pem" -signature "$file.sig" "$file"
