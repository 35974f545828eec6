#!/bin/bash -e
# NOT TESTED HERE. Runs on the build machine: copy the sources in, install inside the image (on_chroot).
: "${FIRMWARE_APP_SRC:?set FIRMWARE_APP_SRC in pi-gen config}" "${FIRMWARE_APP_PJSUA2:?set FIRMWARE_APP_PJSUA2}"
rm -rf "${ROOTFS_DIR}/tmp/firmware-app"
mkdir -p "${ROOTFS_DIR}/tmp/firmware-app"
cp -a "${FIRMWARE_APP_SRC}" "${ROOTFS_DIR}/tmp/firmware-app/src"
cp -a "${FIRMWARE_APP_PJSUA2}" "${ROOTFS_DIR}/tmp/firmware-app/pjsua2"
on_chroot <<'CHROOT'
bash /tmp/firmware-app/src/image/raspios/install.sh /tmp/firmware-app/src /tmp/firmware-app/pjsua2
rm -rf /tmp/firmware-app
CHROOT
