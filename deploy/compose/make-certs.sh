#!/usr/bin/env bash
# Makes a throwaway CA and a broker certificate for deploy/compose.tls.yaml, in the layout
# cert-manager writes into a Kubernetes Secret (tls.crt, tls.key, ca.crt), plus one client
# certificate for mutual TLS:
#
#   deploy/compose/make-certs.sh [NAME...]     # names the broker answers to; default localhost
#
# Into deploy/compose/tls/ (git-ignored): ca.crt ca.key tls.crt tls.key client.crt client.key.
# For local use only: the keys are made readable by the broker's uid 10001 in the container
# (mode 0644), and the CA key sits next to them. Run it again to rotate: the broker serves the
# new pair to new connections without a restart.
set -euo pipefail

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tls"
mkdir -p "$dir"
cd "$dir"
names=("${@:-localhost}")
san="IP:127.0.0.1"
for n in "${names[@]}"; do san="DNS:$n,$san"; done

if [ ! -s ca.key ] || [ ! -s ca.crt ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=tandem-compose-ca" -keyout ca.key -out ca.crt \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
fi

issue() { # NAME SUBJECT EXTENSIONS...
    local name="$1" subject="$2"
    shift 2
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$subject" \
        -keyout "$name.key.new" -out "$name.csr"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -days 90 -out "$name.crt.new" \
        -extfile <(printf '%s\n' "$@")
    rm "$name.csr"
    chmod 0644 "$name.key.new" "$name.crt.new"
    # Key first, then certificate: the broker reads them after changes settle, and refuses
    # (keeping the pair in force) a key that is not the certificate's.
    mv "$name.key.new" "$name.key"
    mv "$name.crt.new" "$name.crt"
}
issue tls "/CN=${names[0]}" "subjectAltName=$san" "extendedKeyUsage=serverAuth" \
    "basicConstraints=CA:FALSE"
issue client "/CN=device-1" "extendedKeyUsage=clientAuth" "basicConstraints=CA:FALSE"
chmod 0644 ca.crt
echo "made $dir/{ca.crt,tls.crt,tls.key,client.crt,client.key} for ${names[*]} and 127.0.0.1"
