#!/usr/bin/env bash
# The A/B side of the root file system (run by build-image.sh after mmdebstrap, on the finished tree):
# U-Boot on the Pi, each slot's kernel at /boot/vmlinuz, RAUC's configuration and keyring, the image's
# version, the data partition's mounts, the units that mark a slot good, the watchdog.
#
#   FW_REPO=... FW_KEYRING=CA.pem FW_IMAGE_VERSION=V ab-boot.sh ROOTFS
set -euo pipefail
root=${1:?usage: ab-boot.sh ROOTFS}
: "${FW_REPO:?the repository}" "${FW_KEYRING:?the CA certificate bundles are signed under}"
: "${FW_IMAGE_VERSION:?the image version}"
here=$(cd "$(dirname "$0")" && pwd)
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
log() { printf 'ab-boot: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

for f in usr/bin/rauc usr/bin/fw_setenv usr/lib/u-boot/rpi_arm64/u-boot.bin usr/share/dbus-1/system-services/de.pengutronix.rauc.service; do
    [[ -e $root/$f ]] || die "$root has no /$f (packages rauc, rauc-service, libubootenv-tool, u-boot-rpi)"
done

# 1. Each slot boots its own kernel and initramfs: U-Boot loads /boot/vmlinuz and /boot/initrd.img from the
#    slot (links in /boot, which Debian's kernel packages keep up to date with link_in_boot).
mapfile -t kernels < <(cd "$root/boot" && ls vmlinuz-* 2>/dev/null)
[[ ${#kernels[@]} -eq 1 ]] || die "expected one kernel in $root/boot, found: ${kernels[*]:-none}"
kver=${kernels[0]#vmlinuz-}
[[ -f $root/boot/initrd.img-$kver ]] || die "no initramfs for $kver"
ln -sfn "vmlinuz-$kver" "$root/boot/vmlinuz"
ln -sfn "initrd.img-$kver" "$root/boot/initrd.img"
rm -f "$root/vmlinuz" "$root/vmlinuz.old" "$root/initrd.img" "$root/initrd.img.old"
printf 'do_symlinks = yes\nlink_in_boot = yes\n' > "$root/etc/kernel-img.conf"

# 2. The Pi's firmware starts U-Boot (config.txt kernel=u-boot.bin), which runs boot.scr. raspi-firmware's
#    hook writes config.txt and cmdline.txt; the root is the boot script's choice, so cmdline.txt has none.
#    The hook copies device trees only for KERNEL=auto: copied here, with U-Boot.
sed -i -e 's|^#\?KERNEL=.*|KERNEL="u-boot.bin"|' -e 's|^#\?INITRAMFS=.*|INITRAMFS="no"|' \
    -e 's|^#\?CONSOLES=.*|CONSOLES="tty0 ttyS1,115200"|' -e 's|^#\?ROOTPART=.*|ROOTPART=none|' \
    "$root/etc/default/raspi-firmware"
grep -q '^KERNEL="u-boot.bin"' "$root/etc/default/raspi-firmware" || echo 'KERNEL="u-boot.bin"' >> "$root/etc/default/raspi-firmware"
grep -q '^INITRAMFS="no"' "$root/etc/default/raspi-firmware" || echo 'INITRAMFS="no"' >> "$root/etc/default/raspi-firmware"
find "$root/boot/firmware" -maxdepth 1 -type f \( -name 'vmlinuz-*' -o -name 'initrd.img-*' -o -name '*.dtb' \) -delete
cp "$root"/usr/lib/raspi-firmware/* "$root/boot/firmware/"  # as the package's postinst does
# The hook checks that /boot/firmware is a mount point unless it sees a chroot (ischroot reads /proc).
mount -t proc proc "$root/proc"
trap 'umount "$root/proc"' EXIT
in_root env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware
umount "$root/proc"
trap - EXIT
sed -i -e 's| root=[^ ]*||' -e 's| rw | |' -e 's| rootwait||' -e 's|  *| |g' -e 's|^ ||' -e 's| $||' "$root/boot/firmware/cmdline.txt"
grep -q '^kernel=u-boot.bin' "$root/boot/firmware/config.txt" || die "config.txt does not start U-Boot"
! grep -q 'root=' "$root/boot/firmware/cmdline.txt" || die "cmdline.txt names a root: $(cat "$root/boot/firmware/cmdline.txt")"
cp "$root/usr/lib/linux-image-$kver/broadcom/"bcm*.dtb "$root/usr/lib/u-boot/rpi_arm64/u-boot.bin" "$root/boot/firmware/"

# 3. RAUC: the device's configuration and the operator's CA (image/rauc/), the image's version.
"$FW_REPO/image/rauc/system.conf.sh" "$FW_KEYRING" "$root"
install -D -m 0644 /dev/null "$root/usr/lib/firmware-app/image-version"
echo "$FW_IMAGE_VERSION" > "$root/usr/lib/firmware-app/image-version"

# 4. File systems by PARTUUID (MBR disk identifier 0x5e1f0001): vda under QEMU, mmcblk0 on the Pi. The
#    root is the boot script's (root=PARTUUID=... rw). What must survive an update lives on the data
#    partition, bind-mounted where the programs look for it; firmware-data.service seeds it first.
cat > "$root/etc/fstab" <<'FSTAB'
# The root file system is slot A or B, chosen by U-Boot (root=PARTUUID=5e1f0001-02|03 on the command line).
# umask=0077: only root reads the boot partition, which holds the settings (and, briefly, the secrets).
PARTUUID=5e1f0001-01  /boot/firmware  vfat  rw,noatime,umask=0077  0 2
# The data partition: settings, secrets, state, RAUC's status. It survives updates and grows on first boot.
PARTUUID=5e1f0001-04  /data  ext4  rw,noatime,errors=remount-ro  0 2
FSTAB
for dir in /etc/firmware-app /var/lib/firmware-app /var/lib/firmware-provision /var/lib/firmware-update /root/.ssh; do
    mkdir -p "$root$dir"
    printf '/data%s  %s  none  bind,x-systemd.requires=firmware-data.service  0 0\n' "$dir" "$dir" >> "$root/etc/fstab"
done
mkdir -p "$root/data"
install -D -m 0755 "$here/firmware-data.sh" "$root/usr/lib/firmware-app/firmware-data"
install -D -m 0755 "$here/firmware-slot.sh" "$root/usr/lib/firmware-app/firmware-slot"
install -D -m 0755 "$here/rauc-post-install.sh" "$root/usr/lib/firmware-app/rauc-post-install"

# 5. A slot is good when the phone works (firmware-app-health.service before boot-complete.target, then
#    rauc-mark-good.service). A hung system is reset by the hardware watchdog (bcm2835_wdt on the Pi,
#    i6300esb under QEMU): 15 s, the most the Pi's watchdog can count.
install -m 0644 "$FW_REPO"/systemd/*.service "$root/usr/lib/systemd/system/"
mkdir -p "$root/etc/systemd/system.conf.d"
printf '[Manager]\nRuntimeWatchdogSec=15s\nRebootWatchdogSec=2min\n' > "$root/etc/systemd/system.conf.d/firmware-watchdog.conf"
in_root systemctl enable firmware-app-health.service rauc-mark-good.service
log "slots A/B with kernel $kver, image version $FW_IMAGE_VERSION"
