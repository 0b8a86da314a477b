#!/usr/bin/env bash
# Throwaway mesh certificates for the two-service demo (compose, Kubernetes
# and examples/two-services/run.sh): a CA and one leaf per service, each
# with its SPIFFE ID as a URI SAN, the service's names as DNS SANs and
# 127.0.0.1, and both serverAuth and clientAuth (a sidecar is both).
#
#   docker/certs.sh [DIR] [SERVICE...]     default: docker/certs, order payment
#
# Writes DIR/ca.pem and DIR/SERVICE.{crt,key}. Needs openssl only. For
# development: 30 days, keys readable by the container's non-root user.
set -euo pipefail
dir=${1:-$(dirname "$0")/certs}
shift || true
services=("$@")
[ ${#services[@]} -gt 0 ] || services=(order payment)
trust_domain=${TRUST_DOMAIN:-shop.local}
mkdir -p "$dir"
cd "$dir"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -keyout ca.key -out ca.pem -subj "/CN=kawal demo mesh CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
for s in "${services[@]}"; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$s.key" -out "$s.csr" -subj "/CN=$s" 2>/dev/null
  printf '%s\n' \
    "subjectAltName=URI:spiffe://$trust_domain/ns/default/sa/$s,DNS:$s,DNS:$s-app,DNS:$s-service,DNS:localhost,IP:127.0.0.1" \
    "extendedKeyUsage=serverAuth,clientAuth" \
    "keyUsage=critical,digitalSignature" \
    "basicConstraints=critical,CA:FALSE" > "$s.ext"
  openssl x509 -req -in "$s.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -days 30 -extfile "$s.ext" -out "$s.crt" 2>/dev/null
  rm -f "$s.csr" "$s.ext"
done
rm -f ca.srl
# The CA key signs nothing more; a real mesh keeps it elsewhere.
rm -f ca.key
chmod 644 ./*.key
echo "certificates for ${services[*]} in $(pwd)"
