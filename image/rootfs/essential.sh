#!/usr/bin/env bash
# mmdebstrap --essential-hook: runs after the essential packages, before the kernel is installed, so the
# kernel's only initramfs is built small the first time (no second run under emulation).
#
#   essential.sh ROOTFS
set -euo pipefail
root=${1:?usage: essential.sh ROOTFS}

# MODULES=list: only the modules named below (and their dependencies) go into the initramfs: ~6 MB
# instead of ~30 MB with MODULES=most, which the Pi's firmware loads from the card on every boot.
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/usr/share/initramfs-tools/modules.d"
cat > "$root/etc/initramfs-tools/conf.d/firmware-app" <<'CONF'
MODULES=list
CONF
cat > "$root/usr/share/initramfs-tools/modules.d/firmware-app" <<'LIST'
# What mounting the root file system takes, and no more (firmware-app image).
# SD card: Pi 3 and Zero 2 W (sdhost, Arasan), Pi 4 (emmc2 and its 1.8 V supply on the GPIO expander).
mmc_block
sdhci_pltfm
sdhci_iproc
bcm2835
bcm2835_dma
gpio_raspberrypi_exp
clk_raspberrypi
reset_raspberrypi
# The root file system.
ext4
crc32c_generic
# QEMU's "virt" machine, which the image's boot test uses.
virtio_mmio
virtio_pci
virtio_blk
LIST
