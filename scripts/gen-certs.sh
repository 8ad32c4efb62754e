#!/usr/bin/env bash
# Makes DEV-ONLY certificates for the demo's TLS/mTLS listener, with the
# openssl command line, into certs/ (or $1):
#   ca.crt/ca.key          a dev CA that signs everything below
#   server.crt/server.key  the listener's certificate (localhost, 127.0.0.1)
#   client.crt/client.key  a client with SAN URI spiffe://demo.portcullis.local/ns/demo/sa/cli
#   client-ca.crt          the trust anchors for client certificates (= ca.crt)
# Never use these outside a demo: the CA key sits next to them.
set -euo pipefail
out="${1:-$(dirname "$0")/../certs}"
mkdir -p "$out"
cd "$out"
days=825
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
  -subj "/CN=Portcullis dev CA" -keyout ca.key -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
issue() { # name subject extensions
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
issue client "/CN=demo-cli" "subjectAltName=URI:spiffe://demo.portcullis.local/ns/demo/sa/cli
extendedKeyUsage=clientAuth"
cp ca.crt client-ca.crt
rm -f ca.srl
chmod 600 ./*.key
echo "dev certificates written to $(pwd)"
