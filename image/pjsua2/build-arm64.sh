#!/usr/bin/env bash
# Cross-compiles PJSUA2 (pjproject 2.17, ALSA, OpenSSL 3) for arm64 devices: the same recipe as build.sh,
# run in a throw-away amd64 build root with Debian's aarch64 cross toolchain and the arm64 -dev packages
# (multiarch), made by mmdebstrap. Nothing on the build machine is changed, nothing runs under emulation.
#
#   image/pjsua2/build-arm64.sh [CACHE_DIR]
#
# Prints the folder that holds _pjsua2.cpython-*-aarch64-linux-gnu.so, pjsua2.py and VERSION. The result is
# cached in CACHE_DIR/out/aarch64-SUITE-SHA (the source tarball's hash): built once per pjproject version
# and Debian suite, a second run prints the folder at once. The suite must be the image's (its Python and
# OpenSSL are what the binding links against). Needs root (mmdebstrap's root mode) and about 5 minutes.
#
# Environment: PJSUA2_SUITE (default bookworm), PJSUA2_DEBIAN_MIRROR (default http://deb.debian.org/debian),
# PJSUA2_JOBS (default nproc).
set -euo pipefail

cache=${1:-/var/cache/firmware-app/pjsua2}
suite=${PJSUA2_SUITE:-bookworm}
mirror=${PJSUA2_DEBIAN_MIRROR:-http://deb.debian.org/debian}
jobs=${PJSUA2_JOBS:-$(nproc)}
here=$(cd "$(dirname "$0")" && pwd)

log() { printf 'pjsua2-arm64: %s\n' "$*" >&2; }

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# 1. The pjproject source from Debian's archive (fetched once, kept in the cache).
tarball=$("$(dirname "$0")/fetch-source.sh" "$cache")
sha=$(sha256sum "$tarball" | cut -d' ' -f1)
log "source $(basename "$tarball") sha256 $sha"

# shellcheck source-path=SCRIPTDIR source=recipe
. "$here/recipe"
out="$cache/out/aarch64-$suite-${sha:0:16}-$(pjsua2_recipe_hash)"
if compgen -G "$out/_pjsua2*.so" >/dev/null && [[ -f "$out/pjsua2.py" && -f "$out/VERSION" ]]; then
    log "cached: $out ($(cat "$out/VERSION"))"
    echo "$out"
    exit 0
fi

command -v mmdebstrap >/dev/null || { log "mmdebstrap is missing (apt-get install mmdebstrap)"; exit 1; }
native=$(dpkg --print-architecture)
work=$(mktemp -d "$cache/xbuild.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$tarball" "$work/src.tar.xz"
cp "$here/cross-inside.sh" "$work/build.sh"
cp -r "$here/recipe" "$here/patches" "$here/firmware_screen.c" "$work/"
mkdir -p "$work/out"

arm64_dev=(libasound2-dev libssl-dev libopus-dev uuid-dev libgsm1-dev libspeex-dev libspeexdsp-dev
           libsrtp2-dev libsamplerate0-dev libpython3-dev)
include="build-essential,crossbuild-essential-arm64,swig,python3,python3-setuptools,pkg-config,xz-utils"
for p in "${arm64_dev[@]}"; do include+=",$p:arm64"; done

log "building in a $suite $native+arm64 build root (mmdebstrap; logs in the output on failure)"
start=$SECONDS
# The build runs as a customize hook, so the build root is thrown away with everything but the result.
mmdebstrap --quiet --variant=apt --architectures="$native,arm64" --include="$include" \
    --customize-hook="copy-in $work/src.tar.xz $work/build.sh $work/recipe $work/patches $work/firmware_screen.c /root" \
    --customize-hook="chroot \"\$1\" env PJSUA2_JOBS=$jobs bash /root/build.sh /root/out" \
    --customize-hook="sync-out /root/out $work/out" \
    "$suite" /dev/null "$mirror" >&2 || { log "build failed"; exit 1; }

mkdir -p "$out"
cp "$work"/out/_pjsua2*.so "$work/out/pjsua2.py" "$out/"
echo "$(cat "$work/out/VERSION") $sha $suite" > "$out/VERSION"
log "built $(cat "$out/VERSION") in $((SECONDS - start)) s: $out"
echo "$out"
