#!/usr/bin/env bash
# Builds the phone's arm64 SD card image from Debian's archive alone (Raspberry Pi 3, 4, Zero 2 W), with two
# root slots for A/B updates (RAUC, U-Boot), and a signed RAUC bundle of the same root file system:
#
#   sudo image/build-image.sh [OUTPUT.img]      (default image/out/firmware-app-arm64.img; the bundle is
#                                                 OUTPUT with .raucb for .img)
#
# 1. PJSUA2 (pjproject 2.17, ALSA, OpenSSL 3) cross-compiled for arm64, cached per version
#    (image/pjsua2/build-arm64.sh).
# 2. The root file system by mmdebstrap: Debian's linux-image-arm64 and raspi-firmware, systemd, RAUC, the
#    app in a venv at /opt/firmware-app, the units of systemd/ and the provisioning of image/provision/
#    (image/rootfs/customize.sh); then its A/B side (image/rootfs/ab-boot.sh): U-Boot for the Pi, RAUC's
#    configuration and keyring, the image version, the data partition's mounts. Maintainer scripts run
#    under qemu-user (binfmt_misc).
# 3. The partitioned image without loop devices or mounts: an MBR with disk identifier 0x5e1f0001 (the Pi's
#    boot ROM reads no GPT): p1 FAT32 RASPIFIRM (firmware, u-boot.bin, boot.scr from image/boot/boot.cmd,
#    the boot counters in firmware-boot.env), p2 and p3 the same ext4 root file system (slots A and B), p4
#    ext4 data (grows to the card's size on the first boot). mkfs.vfat + mtools, mke2fs -d, sfdisk.
# 4. The bundle of the same root file system, signed (image/rauc/build-bundle.sh).
#
# The image carries no secrets, no machine id and no SSH host keys: each device gets its settings from the
# boot partition on its first boot (image/README.md).
#
# Environment: SUITE (bookworm), MIRROR (http://deb.debian.org/debian), SECURITY_MIRROR
# (http://deb.debian.org/debian-security), CACHE (/var/cache/firmware-app), FIRMWARE_APP_EXTRAS (the app's
# extras, gpio,ble,headset-keys,audio,hfp,telemetry), FIRMWARE_APP_PIP_EXTRA (more PyPI packages for the venv, lgpio),
# IMAGE_VERSION (the image's and the bundle's version; default the app's version + the UTC date and time),
# RAUC_CERT, RAUC_KEY and RAUC_KEYRING (the signer's certificate and key, and the CA certificate devices
# trust; default: throw-away development keys in CACHE/rauc-dev-keys, made by image/rauc/make-keys.sh),
# IMAGE_FREE_MIB (free space in the root file system's image, 128), ROOT_SLOT_MIB (each root slot, 1600),
# DATA_MIB (the data partition before it grows, 64), COMPRESS (1: also write OUTPUT.xz). For developers
# working on the boot side: KEEP_ROOTFS=DIR keeps a copy of mmdebstrap's root file system, FROM_ROOTFS=DIR
# starts from it instead of mmdebstrap (only the A/B step runs again: 2 minutes instead of 10).
# Needs root, about 8 GB of disk, and the packages listed in image/README.md.
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
free_mib=${IMAGE_FREE_MIB:-128}
slot_mib=${ROOT_SLOT_MIB:-1600}
data_mib=${DATA_MIB:-64}
boot_mib=256
bundle=${out%.img}.raucb
app_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/pyproject.toml" | head -n 1)
version=${IMAGE_VERSION:-$app_version+$(date -u +%Y%m%d.%H%M)}

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (mmdebstrap's root mode keeps file owners without fakeroot)"
[[ $out == *.img ]] || die "$out: the image's name ends in .img"
for tool in mmdebstrap mke2fs resize2fs tune2fs mkfs.vfat mcopy sfdisk arch-test mkimage mkenvimage rauc mksquashfs openssl; do
    command -v "$tool" >/dev/null || die "$tool is missing: apt-get install mmdebstrap e2fsprogs dosfstools mtools fdisk arch-test qemu-user-static binfmt-support u-boot-tools rauc squashfs-tools openssl"
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

# The bundle's signer, and the CA certificate devices trust: the operator's, or throw-away development keys.
if [[ -n ${RAUC_CERT:-}${RAUC_KEY:-}${RAUC_KEYRING:-} ]]; then
    [[ -n ${RAUC_CERT:-} && -n ${RAUC_KEY:-} && -n ${RAUC_KEYRING:-} ]] \
        || die "RAUC_CERT, RAUC_KEY and RAUC_KEYRING go together (image/rauc/README.md)"
    cert=$RAUC_CERT key=$RAUC_KEY keyring=$RAUC_KEYRING
else
    keys=$cache/rauc-dev-keys
    [[ -f $keys/signer.key.pem ]] || "$here/rauc/make-keys.sh" "$keys" "firmware-app development" >&2
    cert=$keys/signer.cert.pem key=$keys/signer.key.pem keyring=$keys/ca.cert.pem
    log "signing with the development keys in $keys: not for a fleet (set RAUC_CERT, RAUC_KEY, RAUC_KEYRING)"
fi

rootfs="$work/rootfs"
if [[ -n ${FROM_ROOTFS:-} ]]; then
    [[ -x $FROM_ROOTFS/opt/firmware-app/bin/firmware-app ]] || die "FROM_ROOTFS=$FROM_ROOTFS: not a root file system this script built"
    log "root file system copied from $FROM_ROOTFS (no mmdebstrap)"
    cp -a "$FROM_ROOTFS" "$rootfs"
else
    log "PJSUA2 for arm64"
    pjsua2=$(PJSUA2_SUITE=$suite PJSUA2_DEBIAN_MIRROR=$mirror "$here/pjsua2/build-arm64.sh" "$cache/pjsua2" | tail -n 1)
    compgen -G "$pjsua2/_pjsua2*aarch64*.so" >/dev/null || die "no arm64 PJSUA2 in $pjsua2"

    # The app's source as git would ship it (no venv, no caches).
    mkdir -p "$work/src"
    sources=(pyproject.toml firmware_app plugins)
    [[ -e $repo/README.md ]] && sources+=(README.md)
    (cd "$repo" && tar --exclude='__pycache__' --exclude='*.egg-info' -cf - "${sources[@]}") | tar -xf - -C "$work/src"

    packages=(
        # boot and kernel: Debian's own, no Raspberry Pi OS packages; U-Boot for the Pi (its u-boot.bin goes
        # to the boot partition); RAUC, its D-Bus service, and fw_printenv/fw_setenv for its U-Boot backend
        linux-image-arm64 raspi-firmware firmware-brcm80211 wireless-regdb initramfs-tools zstd
        u-boot-rpi rauc rauc-service libubootenv-tool
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
    if [[ -n ${KEEP_ROOTFS:-} ]]; then
        log "keeping a copy of the root file system in $KEEP_ROOTFS (for FROM_ROOTFS)"
        rm -rf "$KEEP_ROOTFS"
        cp -a "$rootfs" "$KEEP_ROOTFS"
    fi
fi
FW_REPO="$repo" FW_KEYRING="$keyring" FW_IMAGE_VERSION="$version" "$here/rootfs/ab-boot.sh" "$rootfs"
log "root file system done after $((SECONDS - start)) s"

# Boot partition (FAT32, label RASPIFIRM): the Pi's firmware, device trees, config.txt, cmdline.txt and
# u-boot.bin that ab-boot.sh put in /boot/firmware; the boot script; the boot counters (RAUC's U-Boot
# variables, read and written by boot.scr and by fw_setenv); the examples a person copies and edits.
boot_img="$work/boot.img"
rm -f "$boot_img"
mkfs.vfat -F 32 -n RASPIFIRM -C "$boot_img" $((boot_mib * 1024)) >/dev/null
cp "$here/boot/firmware-app.toml.example" "$here/boot/firmware-app-secrets.toml.example" "$rootfs/boot/firmware/"
mkimage -A arm64 -O linux -T script -C none -n "firmware-app A/B boot" -d "$here/boot/boot.cmd" \
    "$rootfs/boot/firmware/boot.scr" >/dev/null
printf 'BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n' \
    | mkenvimage -s 0x4000 -o "$rootfs/boot/firmware/firmware-boot.env" -
mcopy -s -i "$boot_img" "$rootfs"/boot/firmware/* ::/
find "$rootfs/boot/firmware" -mindepth 1 -delete  # it is a mount point in the root file system

# The root file system (ext4), straight from the directory: mke2fs -d keeps owners and modes. This is the
# bundle's image; each slot's copy in the disk image is grown to the slot, as RAUC grows what it installs.
used_kib=$(du -sk --apparent-size "$rootfs" | cut -f1)
root_mib=$(( (used_kib * 12 / 10) / 1024 + free_mib ))
((root_mib <= slot_mib)) || die "the root file system needs ${root_mib} MiB, a slot has ${slot_mib} (ROOT_SLOT_MIB)"
root_img="$work/root.img"
truncate -s "${root_mib}M" "$root_img"
mke2fs -q -t ext4 -L ROOT_A -m 2 -d "$rootfs" "$root_img"
rm -rf "$rootfs"
for slot in A B; do
    cp --sparse=always "$root_img" "$work/root-$slot.img"
    truncate -s "${slot_mib}M" "$work/root-$slot.img"
    resize2fs -f "$work/root-$slot.img" >/dev/null 2>&1
    tune2fs -L "ROOT_$slot" "$work/root-$slot.img" >/dev/null
done

# The data partition (ext4, label FWDATA), empty: firmware-data.service seeds its folders on the first boot.
data_img="$work/data.img"
truncate -s "${data_mib}M" "$data_img"
mke2fs -q -t ext4 -L FWDATA -m 0 "$data_img"

# The disk: an MBR with a fixed identifier (the PARTUUIDs 5e1f0001-0N that boot.scr, fstab and RAUC name),
# the boot partition at 8 MiB, the slots, the data partition last: it grows to the card's size on the first
# boot (firmware-growroot.service).
boot_start=16384
a_start=$((boot_start + boot_mib * 2048))
b_start=$((a_start + slot_mib * 2048))
data_start=$((b_start + slot_mib * 2048))
total=$((data_start + data_mib * 2048))
rm -f "$out"
truncate -s $((total * 512)) "$out"
sfdisk --quiet "$out" <<TABLE
label: dos
label-id: 0x5e1f0001
unit: sectors
start=$boot_start, size=$((boot_mib * 2048)), type=c, bootable
start=$a_start, size=$((slot_mib * 2048)), type=83
start=$b_start, size=$((slot_mib * 2048)), type=83
start=$data_start, size=$((data_mib * 2048)), type=83
TABLE
for part in "$boot_img:$boot_start" "$work/root-A.img:$a_start" "$work/root-B.img:$b_start" "$data_img:$data_start"; do
    dd if="${part%:*}" of="$out" bs=1M seek=$((${part##*:} / 2048)) conv=notrunc,sparse status=none
done
rm -f "$work/root-A.img" "$work/root-B.img"
sha256sum "$out" | sed "s| .*/| |" > "$out.sha256"
if [[ ${COMPRESS:-0} == 1 ]]; then
    xz -T0 -k -f "$out"
fi
log "$out: $((total / 2048)) MiB (slots ${slot_mib} MiB, root file system ${root_mib} MiB with $((used_kib / 1024)) MiB used), version $version"

# The bundle of the same root file system, checked against the keyring the image trusts.
"$here/rauc/build-bundle.sh" --rootfs "$root_img" --version "$version" --cert "$cert" --key "$key" \
    --keyring "$keyring" "$bundle"
sha256sum "$bundle" | sed "s| .*/| |" > "$bundle.sha256"
log "$bundle: $(( $(stat -c %s "$bundle") >> 20 )) MiB; all done in $((SECONDS - start)) s"
