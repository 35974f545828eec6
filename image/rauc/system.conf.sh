#!/usr/bin/env bash
# Writes the device's RAUC configuration into a root file system (image/rauc/README.md):
#
#   image/rauc/system.conf.sh [--compatible C] [--data-directory DIR] [--boot-env FILE] KEYRING.pem ROOT
#
# ROOT/etc/rauc/system.conf   compatible, bootloader=uboot, verity/crypt bundles only (bundle-formats=-plain),
#                             the keyring with check-purpose=codesign, RAUC's data directory on the data
#                             partition, and the two root slots A and B by PARTUUID (disk id 0x5e1f0001)
# ROOT/etc/rauc/keyring.pem   a copy of KEYRING.pem: the CA certificate(s) bundles must be signed under
#                             (two CAs concatenated while a key is rotated)
# ROOT/etc/fw_env.config      where RAUC's U-Boot backend (fw_printenv/fw_setenv) finds the boot counters:
#                             a 0x4000-byte libubootenv file of their own on the FAT partition
#
# Defaults: --compatible firmware-app-arm64, --data-directory /data/rauc,
# --boot-env /boot/firmware/firmware-boot.env. Existing files are replaced.
set -euo pipefail

log() { printf 'system.conf: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
usage="usage: system.conf.sh [--compatible C] [--data-directory DIR] [--boot-env FILE] KEYRING.pem ROOT"

compatible=firmware-app-arm64
data_directory=/data/rauc
boot_env=/boot/firmware/firmware-boot.env
args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --compatible) [[ $# -ge 2 ]] || die "$1 needs a value"; compatible=$2; shift 2 ;;
        --data-directory) [[ $# -ge 2 ]] || die "$1 needs a value"; data_directory=$2; shift 2 ;;
        --boot-env) [[ $# -ge 2 ]] || die "$1 needs a value"; boot_env=$2; shift 2 ;;
        -h|--help) echo "$usage"; exit 0 ;;
        -*) die "unknown option $1; $usage" ;;
        *) args+=("$1"); shift ;;
    esac
done
[[ ${#args[@]} -eq 2 ]] || die "$usage"
keyring=${args[0]}
root=${args[1]}

[[ -f $keyring ]] || die "keyring $keyring: no such file (the operator's CA certificate, PEM)"
grep -q -- '-----BEGIN CERTIFICATE-----' "$keyring" || die "keyring $keyring holds no PEM certificate"
if grep -q -- 'PRIVATE KEY-----' "$keyring"; then
    die "keyring $keyring holds a private key: give the CA's certificate only"
fi
[[ -d $root ]] || die "root file system $root: no such directory"
[[ $compatible =~ ^[A-Za-z0-9._-]+$ ]] || die "compatible '$compatible': letters, digits, . _ - only"
[[ $data_directory == /* && $boot_env == /* ]] || die "--data-directory and --boot-env are absolute paths"

install -d -m 0755 "$root/etc/rauc"
install -m 0644 "$keyring" "$root/etc/rauc/keyring.pem"

cat > "$root/etc/rauc/system.conf" <<CONF
# RAUC's system configuration (written by image/rauc/system.conf.sh; see image/rauc/README.md).
[system]
compatible=$compatible
bootloader=uboot
# signed verity (or crypt) bundles only: a plain bundle is refused
bundle-formats=-plain
# on the data partition: the slots' status survives an update
data-directory=$data_directory

[keyring]
path=/etc/rauc/keyring.pem
# the signer's certificate must carry extendedKeyUsage=codeSigning
check-purpose=codesign

[handlers]
# the device's identity (machine id, SSH host keys) into the root slot just written (image/rootfs/)
post-install=/usr/lib/firmware-app/rauc-post-install

# The root slots, by PARTUUID (MBR disk identifier 0x5e1f0001), so vda under QEMU and mmcblk0 on the Pi
# both work. resize=true: after writing the bundle's image, resize2fs grows it to the whole partition.

# root A: partition 2
[slot.rootfs.0]
device=/dev/disk/by-partuuid/5e1f0001-02
type=ext4
bootname=A
resize=true

# root B: partition 3
[slot.rootfs.1]
device=/dev/disk/by-partuuid/5e1f0001-03
type=ext4
bootname=B
resize=true
CONF
chmod 0644 "$root/etc/rauc/system.conf"

# fw_env.config: device, offset, size (no redundant copy: the boot script and RAUC rewrite the whole file)
printf '%s 0x0000 0x4000\n' "$boot_env" > "$root/etc/fw_env.config"
chmod 0644 "$root/etc/fw_env.config"
log "$root: /etc/rauc/system.conf ($compatible), /etc/rauc/keyring.pem, /etc/fw_env.config ($boot_env)"
