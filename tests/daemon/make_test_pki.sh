#!/usr/bin/env bash
# A throw-away PKI for the auditor endpoint test: a CA, the node's server certificate (127.0.0.1),
# an allow-listed auditor and an intruder (same CA, not on the list).
set -euo pipefail
dir=$1
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
key ca
openssl req -x509 -new -key ca.key -out ca.pem -days 2 -subj /CN=sovguard-test-auditor-ca 2>/dev/null
issue() {  # name, subject, extensions
  key "$1"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
  printf '%s\n' "$3" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" -days 2 \
    -extfile "$1.ext" 2>/dev/null
}
issue server /CN=localhost "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
issue auditor /CN=auditor "extendedKeyUsage=clientAuth"
issue intruder /CN=intruder "extendedKeyUsage=clientAuth"
openssl x509 -in auditor.pem -outform DER | sha256sum | cut -d' ' -f1 >auditors.allow
