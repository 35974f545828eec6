#!/usr/bin/env bash
# Runs inside build-arm64.sh's build root: the build.sh recipe with --host=aarch64-linux-gnu.
#
#   bash cross-inside.sh OUT_DIR      (the source tarball is /root/src.tar.xz, the recipe /root/recipe)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=recipe
. /root/recipe

out=${1:?usage: cross-inside.sh OUT_DIR}
jobs=${PJSUA2_JOBS:-2}
host=aarch64-linux-gnu
log() { printf 'pjsua2-arm64: %s\n' "$*" >&2; }

work=/root/build
rm -rf "$work" && mkdir -p "$work" "$out"
tar -xJf /root/src.tar.xz -C "$work"
top=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n 1)
version=$(sed -n 's/^export PJ_VERSION_MAJOR *:= *//p; s/^export PJ_VERSION_MINOR *:= *//p' "$top/version.mak" | paste -sd.)
log "pjproject $version for $host"

pjsua2_prepare_source "$top"

# Only the arm64 .pc files are installed; never let configure see the build machine's.
export PKG_CONFIG_LIBDIR=/usr/lib/$host/pkgconfig:/usr/share/pkgconfig
export CC=$host-gcc CXX=$host-g++ AR=$host-ar RANLIB=$host-ranlib
cd "$top"
fail() { log "$1 failed:"; tail -n 40 "$2" >&2; exit 1; }
./configure --host="$host" "${PJSUA2_CONFIGURE_FLAGS[@]}" >"$work/configure.log" 2>&1 \
    || fail configure "$work/configure.log"
grep -q '^AC_PJMEDIA_SND=alsa' pjmedia/build/os-auto.mak \
    || { log "configure did not pick ALSA:"; grep -i 'sound\|alsa' "$work/configure.log" >&2; exit 1; }
make dep >"$work/make-dep.log" 2>&1 || fail "make dep" "$work/make-dep.log"
make -j"$jobs" >"$work/make.log" 2>&1 || fail make "$work/make.log"

# SWIG's output is architecture-independent; only its compile needs the cross compiler and the target
# Python's configuration (extension suffix, include path), which Debian ships per architecture.
sysconfigdata=$(find /usr/lib/python3* -maxdepth 1 -name "_sysconfigdata__*$host.py" | head -n 1)
[[ -n "$sysconfigdata" ]] || { log "no arm64 _sysconfigdata (libpython3-dev:arm64 missing?)"; exit 1; }
_PYTHON_HOST_PLATFORM=linux-aarch64 _PYTHON_SYSCONFIGDATA_NAME=$(basename "$sysconfigdata" .py) \
    LDSHARED="$host-gcc -shared" make -C pjsip-apps/src/swig/python >"$work/swig.log" 2>&1 \
    || fail "swig/python" "$work/swig.log"

so=$(find pjsip-apps/src/swig/python/build -name '_pjsua2*.so' | head -n 1)
[[ -n "$so" ]] || { log "no _pjsua2*.so was built"; exit 1; }
file_type=$(od -An -tx1 -j18 -N2 "$so" | tr -d ' ')
[[ "$file_type" == "b700" ]] || { log "$so is not an aarch64 ELF (e_machine $file_type)"; exit 1; }
# Debug information is 25 MB of the 35 MB: a device does not need it.
$host-strip --strip-unneeded -o "$out/$(basename "$so")" "$so"
cp pjsip-apps/src/swig/python/pjsua2.py "$out/"
echo "$version" > "$out/VERSION"
log "built $(basename "$so")"
