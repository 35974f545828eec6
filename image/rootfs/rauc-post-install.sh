#!/bin/sh
# RAUC's post-install handler (/etc/rauc/system.conf [handlers] post-install): the device's own identity
# goes with it into the root slot just written, which would otherwise make new ones on its first boot:
# - /etc/machine-id: systemd-networkd derives its DHCP client's DUID from it, the journal files by it;
# - /etc/ssh/ssh_host_*: a technician's known_hosts would otherwise call the updated phone an impostor.
# RAUC runs it as root after writing the slots in RAUC_TARGET_SLOTS; a failure fails the install.
set -eu
for n in ${RAUC_TARGET_SLOTS:-}; do
    class=$(printenv "RAUC_SLOT_CLASS_$n" || true)
    device=$(printenv "RAUC_SLOT_DEVICE_$n" || true)
    if [ "$class" != rootfs ] || [ ! -b "$device" ]; then continue; fi
    target=$(mktemp -d /run/firmware-identity.XXXXXX)
    mount -t ext4 "$device" "$target"
    trap 'umount "$target"; rmdir "$target"' EXIT
    if [ -s /etc/machine-id ] && [ "$(cat /etc/machine-id)" != uninitialized ]; then
        cp -p /etc/machine-id "$target/etc/machine-id"
    fi
    for key in /etc/ssh/ssh_host_*; do
        [ -e "$key" ] && cp -p "$key" "$target/etc/ssh/"
    done
    umount "$target"
    rmdir "$target"
    trap - EXIT
    echo "firmware-app: this device's machine id and SSH host keys carried into $device"
done
