#!/usr/bin/env bash
# Prints the path of pjproject's source tarball, fetching it once into CACHE_DIR/src: the asterisk source
# package's orig-Xpjproject component from Debian sid, with a private apt state so the machine's own
# sources are never touched.
#
#   image/pjsua2/fetch-source.sh CACHE_DIR
set -euo pipefail

cache=${1:?usage: fetch-source.sh CACHE_DIR}
mirror=${PJSUA2_DEBIAN_MIRROR:-http://deb.debian.org/debian}
src_dir="$cache/src"
pattern='asterisk_*.orig-Xpjproject.tar.xz'

tarball=$(find "$src_dir" -maxdepth 1 -name "$pattern" 2>/dev/null | sort | tail -n 1 || true)
if [[ -z "$tarball" ]]; then
    apt_root="$cache/apt"
    mkdir -p "$apt_root/lists/partial" "$src_dir"
    echo "deb-src $mirror sid main" > "$apt_root/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$apt_root/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$apt_root/lists" -o APT::Sandbox::User=root)
    echo "pjsua2-build: fetching the pjproject source from Debian sid (asterisk source package)" >&2
    apt-get -qq "${apt_opts[@]}" update
    (cd "$src_dir" && apt-get -qq "${apt_opts[@]}" source --download-only asterisk >/dev/null)
    find "$src_dir" -maxdepth 1 -type f ! -name "$pattern" -delete
    tarball=$(find "$src_dir" -maxdepth 1 -name "$pattern" | sort | tail -n 1)
fi
[[ -n "$tarball" ]] || { echo "pjsua2-build: no pjproject source in $src_dir" >&2; exit 1; }
echo "$tarball"
