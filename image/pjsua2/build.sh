#!/usr/bin/env bash
# Builds PJSUA2 (pjproject 2.17, ALSA, system OpenSSL 3) from Debian's source archive and installs the
# Python binding into a virtualenv. The same recipe serves CI (x86_64) and the device image (arm64).
#
#   image/pjsua2/build.sh VENV_PYTHON [CACHE_DIR]
#
# The build is cached in CACHE_DIR (default /var/cache/firmware-app/pjsua2) keyed by the source tarball's
# hash and the Python version, so a second run only copies the binding (seconds).
set -euo pipefail

python=${1:?usage: build.sh VENV_PYTHON [CACHE_DIR]}
cache=${2:-/var/cache/firmware-app/pjsua2}
jobs=${PJSUA2_JOBS:-$(nproc)}

log() { printf 'pjsua2-build: %s\n' "$*" >&2; }
# shellcheck source-path=SCRIPTDIR source=recipe
. "$(dirname "$0")/recipe"

pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
arch=$(uname -m)
mkdir -p "$cache"

# 1. The pjproject source from Debian's archive (fetched once, kept in the cache).
tarball=$("$(dirname "$0")/fetch-source.sh" "$cache")
sha=$(sha256sum "$tarball" | cut -d' ' -f1)
log "source $(basename "$tarball") sha256 $sha"

key="$arch-py$pyver-${sha:0:16}-$(pjsua2_recipe_hash)"
out="$cache/out/$key"
if [[ ! -f "$out/pjsua2.py" ]]; then
    work="$cache/build/$key"
    rm -rf "$work" && mkdir -p "$work"
    tar -xJf "$tarball" -C "$work"
    top=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n 1)
    version=$(sed -n 's/^export PJ_VERSION_MAJOR *:= *//p; s/^export PJ_VERSION_MINOR *:= *//p' "$top/version.mak" | paste -sd.)
    log "pjproject $version in $top"
    pjsua2_prepare_source "$top"
    (
        cd "$top"
        ./configure "${PJSUA2_CONFIGURE_FLAGS[@]}" >"$work/configure.log" 2>&1
        make dep >"$work/make-dep.log" 2>&1
        make -j"$jobs" >"$work/make.log" 2>&1
        # SWIG picks "python3" from PATH: make it the venv's.
        bindir=$(dirname "$python")
        PATH="$bindir:$PATH" make -C pjsip-apps/src/swig/python >"$work/swig.log" 2>&1
    ) || { log "build failed; logs in $work"; exit 1; }
    mkdir -p "$out"
    find "$top/pjsip-apps/src/swig/python/build" -name '_pjsua2*.so' -exec cp {} "$out/" \;
    cp "$top/pjsip-apps/src/swig/python/pjsua2.py" "$out/"
    echo "$version $sha" > "$out/VERSION"
    rm -rf "$work"
fi

# Replace, never overwrite in place: a running phone has the old library mapped and would crash.
for f in "$out"/_pjsua2*.so "$out/pjsua2.py"; do
    cmp -s "$f" "$site/$(basename "$f")" && continue
    cp "$f" "$site/.$(basename "$f").new" && mv -f "$site/.$(basename "$f").new" "$site/$(basename "$f")"
done
# pjsua2.py is a 600 KB generated module: without its .pyc every start recompiles it and RSS grows ~20 MB.
"$python" -m compileall -q "$site/pjsua2.py"
"$python" -c 'import pjsua2; print("pjsua2-build: installed pjsua2", open("'"$out/VERSION"'").read().split()[0])' >&2
