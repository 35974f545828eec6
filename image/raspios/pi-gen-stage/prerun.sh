#!/bin/bash -e
# NOT TESTED HERE. pi-gen stage that adds the phone on top of stage2 (Raspberry Pi OS Lite). Copy this folder
# into pi-gen as stage-firmware-app, put it after stage2 in STAGE_LIST, and set FIRMWARE_APP_SRC (a copy of
# this repository) and FIRMWARE_APP_PJSUA2 (image/pjsua2/build-arm64.sh's output) in pi-gen's config.
if [ ! -d "${ROOTFS_DIR}" ]; then
    copy_previous
fi
