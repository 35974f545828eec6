#!/usr/bin/env bash
# Makes a development key pair for signing RAUC bundles (image/rauc/README.md):
#
#   image/rauc/make-keys.sh DIR [COMMON_NAME]
#
# DIR/ca.cert.pem       the CA certificate: the keyring the device trusts (/etc/rauc/keyring.pem)
# DIR/ca.key.pem        the CA's private key (0600): signs further signer certificates, e.g. on rotation
# DIR/signer.cert.pem   the signer's certificate, issued by the CA, extendedKeyUsage=critical,codeSigning
#                       (the device checks it: [keyring] check-purpose=codesign)
# DIR/signer.key.pem    the signer's private key (0600)
#
# Existing files in DIR are never overwritten. The keys are for development and tests: an operator's fleet
# keys belong on a machine (or a token) the operator controls, never in this repository.
# Environment: RAUC_KEY_DAYS (validity in days, 3650), RAUC_KEY_BITS (RSA key size, 4096).
set -euo pipefail

log() { printf 'make-keys: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $# -ge 1 && $# -le 2 && $1 != -* ]] || die "usage: make-keys.sh DIR [COMMON_NAME]"
dir=$1
name=${2:-firmware-app development}
days=${RAUC_KEY_DAYS:-3650}
bits=${RAUC_KEY_BITS:-4096}
command -v openssl >/dev/null || die "openssl is missing: apt-get install openssl"

mkdir -p "$dir"
for f in ca.cert.pem ca.key.pem signer.cert.pem signer.key.pem; do
    [[ ! -e $dir/$f ]] || die "$dir/$f exists: refusing to overwrite keys"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/ext.cnf" <<CNF
[ca]
basicConstraints = critical,CA:true
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[signer]
basicConstraints = critical,CA:false
keyUsage = critical,digitalSignature
extendedKeyUsage = critical,codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
CNF

umask 077
openssl req -x509 -newkey "rsa:$bits" -nodes -days "$days" -sha256 \
    -subj "/O=firmware-app/CN=$name CA" -config "$work/ext.cnf" -extensions ca \
    -keyout "$work/ca.key.pem" -out "$work/ca.cert.pem" 2>/dev/null \
    || die "openssl could not make the CA"
openssl req -newkey "rsa:$bits" -nodes -sha256 -subj "/O=firmware-app/CN=$name signer" \
    -keyout "$work/signer.key.pem" -out "$work/signer.csr" 2>/dev/null \
    || die "openssl could not make the signer's key"
openssl x509 -req -in "$work/signer.csr" -CA "$work/ca.cert.pem" -CAkey "$work/ca.key.pem" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$days" -sha256 \
    -extfile "$work/ext.cnf" -extensions signer -out "$work/signer.cert.pem" 2>/dev/null \
    || die "openssl could not sign the signer's certificate"
openssl verify -x509_strict -CAfile "$work/ca.cert.pem" "$work/signer.cert.pem" >/dev/null \
    || die "the signer's certificate does not verify against the CA"

chmod 0600 "$work/ca.key.pem" "$work/signer.key.pem"
chmod 0644 "$work/ca.cert.pem" "$work/signer.cert.pem"
mv "$work/ca.key.pem" "$work/ca.cert.pem" "$work/signer.key.pem" "$work/signer.cert.pem" "$dir/"
log "$dir: ca.cert.pem (the device's keyring), signer.cert.pem, signer.key.pem; keep the .key.pem files private"
