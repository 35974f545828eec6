#!/usr/bin/env bash
# Builds a signed RAUC bundle (verity format) of a root file system image (image/rauc/README.md):
#
#   image/rauc/build-bundle.sh --rootfs ROOT.ext4 --version V --cert CERT.pem --key KEY.pem
#                              [--compatible C] [--keyring CA.pem] [--intermediate CA.pem] OUT.raucb
#
# --rootfs      the ext4 image of one root slot (installed as slot class "rootfs": A or B, whichever is
#               not running)
# --version     the manifest's [update] version: the same string as the image's
#               /usr/lib/firmware-app/image-version
# --cert/--key  the signer's certificate and private key (PEM files, or pkcs11: URLs with
#               RAUC_PKCS11_MODULE and RAUC_PKCS11_PIN set for a token)
# --compatible  the manifest's [update] compatible (firmware-app-arm64): a device installs only its own
# --keyring     when given, the finished bundle is checked as a device checks it (`rauc info` with the
#               device's system.conf and this CA): the build fails if the signature does not verify
# --intermediate  an intermediate CA certificate to put into the signature
#
# A fresh manifest is written for every bundle (rauc rewrites the one it is given). OUT.raucb is replaced
# only when the bundle was built (and verified) completely.
# Environment: RAUC_MKSQUASHFS_ARGS (extra arguments for mksquashfs, e.g. "-comp zstd").
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { printf 'build-bundle: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
usage="usage: build-bundle.sh --rootfs ROOT.ext4 --version V --cert CERT.pem --key KEY.pem [--compatible C] [--keyring CA.pem] [--intermediate CA.pem] OUT.raucb"

rootfs='' version='' cert='' key='' keyring='' intermediate='' out=''
compatible=firmware-app-arm64
while [[ $# -gt 0 ]]; do
    case $1 in
        --rootfs|--version|--cert|--key|--compatible|--keyring|--intermediate)
            [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value; $usage"
            declare "${1#--}=$2"
            shift 2 ;;
        -h|--help) echo "$usage"; exit 0 ;;
        -*) die "unknown option $1; $usage" ;;
        *) [[ -z $out ]] || die "more than one output file ($out, $1); $usage"
           out=$1; shift ;;
    esac
done
[[ -n $out ]] || die "no output file; $usage"
[[ $out == *.raucb ]] || die "$out: the bundle's name must end in .raucb (the USB stick's update takes *.raucb)"
for option in rootfs version cert key; do
    [[ -n ${!option} ]] || die "--$option is missing; $usage"
done

# Inputs, each with what is wrong with it.
[[ -f $rootfs ]] || die "--rootfs $rootfs: no such file"
# rauc (mksquashfs) cannot make a bundle whose payload is under 4 KiB; a root file system never is.
(( $(stat -c %s "$rootfs") > 4096 )) || die "--rootfs $rootfs: too small for a root file system image"
[[ $version =~ ^[A-Za-z0-9][A-Za-z0-9.+~_-]*$ ]] \
    || die "--version '$version': letters, digits and . + ~ _ - only (e.g. 0.9.0+20261201.1942)"
[[ $compatible =~ ^[A-Za-z0-9._-]+$ ]] || die "--compatible '$compatible': letters, digits, . _ - only"
for option in cert key keyring intermediate; do
    value=${!option}
    [[ -z $value || ( $value == pkcs11:* && ( $option == cert || $option == key ) ) ]] && continue
    [[ -f $value ]] || die "--$option $value: no such file"
    [[ -r $value ]] || die "--$option $value: not readable"
done
if [[ $key != pkcs11:* ]] && ! grep -q -- 'PRIVATE KEY-----' "$key"; then
    die "--key $key holds no PEM private key"
fi
for option in cert keyring intermediate; do
    value=${!option}
    [[ -z $value || ( $value == pkcs11:* && $option == cert ) ]] && continue
    grep -q -- '-----BEGIN CERTIFICATE-----' "$value" || die "--$option $value holds no PEM certificate"
done
command -v rauc >/dev/null || die "rauc is missing: apt-get install rauc"
command -v mksquashfs >/dev/null || die "mksquashfs is missing (rauc needs it): apt-get install squashfs-tools"

[[ -d $(dirname "$out") ]] || die "$(dirname "$out"): no such directory for the bundle"
out_dir=$(cd "$(dirname "$out")" && pwd)
work=$(mktemp -d "$out_dir/.build-bundle.XXXXXX")
trap 'rm -rf "$work"' EXIT

# With a keyring, rauc reads the device's own configuration (system.conf.sh: check-purpose=codesign,
# plain refused) with its data directory in the work folder, and checks the signature right after signing.
conf_args=()
if [[ -n $keyring ]]; then
    mkdir "$work/root"
    if ! "$here/system.conf.sh" --compatible "$compatible" --data-directory "$work/data" "$keyring" "$work/root" \
            2> "$work/conf.log"; then
        cat "$work/conf.log" >&2
        die "could not write the configuration to check the bundle with"
    fi
    conf_args=(--conf "$work/root/etc/rauc/system.conf" --keyring "$keyring")
fi

mkdir "$work/content"
# A hard link when the image is on the same file system, otherwise a (sparse) copy.
ln "$rootfs" "$work/content/rootfs.ext4" 2>/dev/null \
    || cp --reflink=auto --sparse=always "$rootfs" "$work/content/rootfs.ext4"
cat > "$work/content/manifest.raucm" <<MANIFEST
[update]
compatible=$compatible
version=$version

[bundle]
format=verity

[image.rootfs]
filename=rootfs.ext4
MANIFEST

sign_args=(--cert "$cert" --key "$key")
[[ -z $intermediate ]] || sign_args+=(--intermediate "$intermediate")
[[ -z ${RAUC_MKSQUASHFS_ARGS:-} ]] || sign_args+=(--mksquashfs-args "$RAUC_MKSQUASHFS_ARGS")
log "bundling $rootfs as $compatible $version (verity)"
if ! rauc "${conf_args[@]}" bundle "${sign_args[@]}" "$work/content" "$work/bundle.raucb" > "$work/rauc.log" 2>&1; then
    cat "$work/rauc.log" >&2
    if grep -q 'signature verification failed' "$work/rauc.log"; then
        die "the signature does not verify against the keyring $keyring (is the certificate issued by that CA, with extendedKeyUsage=codeSigning?)"
    fi
    die "rauc could not build or sign the bundle"
fi

if [[ -n $keyring ]]; then
    if ! rauc "${conf_args[@]}" info --output-format=json "$work/bundle.raucb" \
            > "$work/info.json" 2> "$work/rauc.log"; then
        cat "$work/rauc.log" >&2
        die "the bundle does not verify against the keyring $keyring (is the certificate issued by that CA, with extendedKeyUsage=codeSigning?)"
    fi
    if ! grep -qF "\"compatible\":\"$compatible\"" "$work/info.json" \
            || ! grep -qF "\"version\":\"$version\"" "$work/info.json"; then
        die "the signed manifest does not say compatible $compatible, version $version: $(cat "$work/info.json")"
    fi
    log "verified against $keyring"
fi

mv -f "$work/bundle.raucb" "$out"
log "$out: $(( $(stat -c %s "$out") / 1024 )) KiB, $compatible $version"
