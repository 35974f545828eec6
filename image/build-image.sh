#!/usr/bin/env bash
# Builds the phone's arm64 SD card image from Debian's archive alone (Raspberry Pi 3, 4, Zero 2 W):
#
#   sudo image/build-image.sh [OUTPUT.img]          (default image/out/firmware-app-arm64.img)
#
# 1. PJSUA2 (pjproject 2.17, ALSA, OpenSSL 3) cross-compiled for arm64, cached per version
#    (image/pjsua2/build-arm64.sh).
# 2. The root file system by mmdebstrap: Debian's linux-image-arm64 and raspi-firmware, systemd, the app in
#    a venv at /opt/firmware-app, the units of systemd/ and the provisioning of image/provision/
#    (image/rootfs/customize.sh). Maintainer scripts run under qemu-user (binfmt_misc).
# 3. The partitioned image without loop devices or mounts: mkfs.vfat + mtools for the boot partition,
#    mke2fs -d for the root partition, sfdisk for the MBR the Pi's boot ROM reads.
#
# The image carries no secrets, no machine id and no SSH host keys: each device gets its settings from the
# boot partition on its first boot (image/README.md).
#
# Environment: SUITE (bookworm), MIRROR (http://deb.debian.org/debian), SECURITY_MIRROR
# (http://deb.debian.org/debian-security), CACHE (/var/cache/firmware-app), FIRMWARE_APP_EXTRAS (the app's
# extras, gpio,ble,headset-keys,audio,hfp,telemetry), FIRMWARE_APP_PIP_EXTRA (more PyPI packages for the venv, lgpio),
# IMAGE_FREE_MIB (free space left in the root file system before it grows on first boot, 256),
# COMPRESS (1: also write OUTPUT.xz). Needs root, about 4 GB of disk, and the packages listed in
# image/README.md.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out=${1:-$here/out/firmware-app-arm64.img}
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
security_mirror=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
cache=${CACHE:-/var/cache/firmware-app}
extras=${FIRMWARE_APP_EXTRAS-gpio,ble,headset-keys,audio,hfp,telemetry}
pip_extra=${FIRMWARE_APP_PIP_EXTRA-lgpio}
free_mib=${IMAGE_FREE_MIB:-256}
boot_mib=256

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (mmdebstrap's root mode keeps file owners without fakeroot)"
for tool in mmdebstrap mke2fs mkfs.vfat mcopy sfdisk arch-test; do
    command -v "$tool" >/dev/null || die "$tool is missing: apt-get install mmdebstrap e2fsprogs dosfstools mtools fdisk arch-test qemu-user-static binfmt-support"
done

# Maintainer scripts of arm64 packages run under qemu-user: make sure the kernel knows the interpreter.
if ! arch-test arm64 >/dev/null 2>&1; then
    binfmt=/proc/sys/fs/binfmt_misc
    [[ -e $binfmt/register ]] || mount -t binfmt_misc binfmt_misc "$binfmt"
    conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [[ -f $conf ]] || die "arm64 binaries cannot run here: apt-get install qemu-user-static binfmt-support"
    [[ -e $binfmt/qemu-aarch64 ]] || cat "$conf" > "$binfmt/register"
    arch-test arm64 >/dev/null || die "arm64 binaries still cannot run (binfmt_misc)"
fi

start=$SECONDS
mkdir -p "$(dirname "$out")" "$cache"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/firmware-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

log "PJSUA2 for arm64"
pjsua2=$(PJSUA2_SUITE=$suite PJSUA2_DEBIAN_MIRROR=$mirror "$here/pjsua2/build-arm64.sh" "$cache/pjsua2" | tail -n 1)
compgen -G "$pjsua2/_pjsua2*aarch64*.so" >/dev/null || die "no arm64 PJSUA2 in $pjsua2"

# The app's source as git would ship it (no venv, no caches).
mkdir -p "$work/src"
sources=(pyproject.toml firmware_app plugins)
[[ -e $repo/README.md ]] && sources+=(README.md)
(cd "$repo" && tar --exclude='__pycache__' --exclude='*.egg-info' -cf - "${sources[@]}") | tar -xf - -C "$work/src"

packages=(
    # boot and kernel: Debian's own, no Raspberry Pi OS packages
    linux-image-arm64 raspi-firmware firmware-brcm80211 wireless-regdb initramfs-tools zstd
    # system
    systemd-sysv udev dbus kmod iproute2 netbase systemd-resolved systemd-timesyncd openssh-server
    ca-certificates tzdata fdisk dosfstools e2fsprogs less nano iputils-ping wpasupplicant
    # the phone: Python, and the libraries the PJSUA2 build links against
    python3 python3-venv libasound2 alsa-utils bluez libssl3 libopus0 libgsm1 libspeex1 libspeexdsp1
    libsrtp2-1 libsamplerate0 libuuid1
    # Bluetooth headsets' calls: bluealsa (HFP/HSP audio gateway) and its ALSA plugin for the SCO audio
    bluez-alsa-utils libasound2-plugin-bluez
)
include=$(IFS=,; echo "${packages[*]}")

log "root file system ($suite arm64) by mmdebstrap"
rootfs="$work/rootfs"
FW_SRC="$work/src" FW_PJSUA2="$pjsua2" FW_REPO="$repo" FW_EXTRAS="$extras" FW_PIP_EXTRA="$pip_extra" \
mmdebstrap --quiet --architectures=arm64 --variant=apt --components=main,non-free-firmware \
    --include="$include" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --essential-hook="\"$here/rootfs/essential.sh\" \"\$1\"" \
    --customize-hook="\"$here/rootfs/customize.sh\" \"\$1\"" \
    "$suite" "$rootfs" \
    "deb $mirror $suite main non-free-firmware" \
    "deb $mirror $suite-updates main non-free-firmware" \
    "deb $security_mirror $suite-security main non-free-firmware"
log "root file system done after $((SECONDS - start)) s"

# Boot partition (FAT32, label RASPIFIRM): the firmware, kernel, initramfs and device trees that
# raspi-firmware put in /boot/firmware, plus the examples a person copies and edits.
boot_img="$work/boot.img"
rm -f "$boot_img"
mkfs.vfat -F 32 -n RASPIFIRM -C "$boot_img" $((boot_mib * 1024)) >/dev/null
cp "$here/boot/firmware-app.toml.example" "$here/boot/firmware-app-secrets.toml.example" "$rootfs/boot/firmware/"
mcopy -s -i "$boot_img" "$rootfs"/boot/firmware/* ::/
find "$rootfs/boot/firmware" -mindepth 1 -delete  # it is a mount point in the root file system

# Root partition (ext4, label RASPIROOT), straight from the directory: mke2fs -d keeps owners and modes.
used_kib=$(du -sk --apparent-size "$rootfs" | cut -f1)
root_mib=$(( (used_kib * 12 / 10) / 1024 + free_mib ))
root_img="$work/root.img"
rm -f "$root_img"
truncate -s "${root_mib}M" "$root_img"
mke2fs -q -t ext4 -L RASPIROOT -m 2 -d "$rootfs" "$root_img"

# The disk: MBR (the Pi 3 boot ROM reads no GPT), the boot partition at 8 MiB, the root partition after it.
# The root partition and its file system grow to the card's size on the first boot (firmware-growroot).
boot_start=16384
root_start=$((boot_start + boot_mib * 2048))
total=$((root_start + root_mib * 2048))
rm -f "$out"
truncate -s $((total * 512)) "$out"
sfdisk --quiet "$out" <<EOF
label: dos
unit: sectors
start=$boot_start, size=$((boot_mib * 2048)), type=c, bootable
start=$root_start, size=$((root_mib * 2048)), type=83
EOF
dd if="$boot_img" of="$out" bs=1M seek=$((boot_start / 2048)) conv=notrunc,sparse status=none
dd if="$root_img" of="$out" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none
sha256sum "$out" | sed "s| .*/| |" > "$out.sha256"
if [[ ${COMPRESS:-0} == 1 ]]; then
    xz -T0 -k -f "$out"
fi
log "$out: $((total / 2048)) MiB (root file system ${root_mib} MiB, $((used_kib / 1024)) MiB used) in $((SECONDS - start)) s"
