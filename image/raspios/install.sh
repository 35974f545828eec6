#!/usr/bin/env bash
# NOT TESTED HERE. Installs the phone (the app in a venv, PJSUA2 2.17, the units, the system user, the gpio
# rule and the boot-partition provisioning) onto Raspberry Pi OS bookworm arm64: on a running Pi, or inside
# an image's root file system (a pi-gen stage runs it through on_chroot, see pi-gen-stage/).
#
#   install.sh SOURCE_DIR PJSUA2_DIR
#
# SOURCE_DIR: a copy of this repository (pyproject.toml, firmware_app/, plugins/, systemd/, image/).
# PJSUA2_DIR: the output of image/pjsua2/build-arm64.sh (built for bookworm: Raspberry Pi OS bookworm has
#             the same Python 3.11 and OpenSSL 3). Never build PJSUA2 on a Pi 3 or Zero: the SWIG wrapper's
#             compile runs out of memory there.
# The Pi 5 needs Raspberry Pi OS (Debian's kernel and firmware do not boot it): this is its route.
set -euo pipefail

src=${1:?usage: install.sh SOURCE_DIR PJSUA2_DIR}
pjsua2=${2:?usage: install.sh SOURCE_DIR PJSUA2_DIR}
extras=${FIRMWARE_APP_EXTRAS-gpio,ble,headset-keys,audio,hfp,telemetry}
log() { printf 'firmware-app install: %s\n' "$*" >&2; }

[[ $(id -u) -eq 0 ]] || { log "run as root"; exit 1; }
[[ $(dpkg --print-architecture) == arm64 ]] || { log "this is for arm64 Raspberry Pi OS"; exit 1; }
compgen -G "$pjsua2/_pjsua2*aarch64*.so" >/dev/null || { log "no arm64 PJSUA2 in $pjsua2"; exit 1; }

# Raspberry Pi OS ships gpiozero's pin factory for /dev/gpiochip* as python3-lgpio (Debian does not): the
# venv sees it through --system-site-packages. Build tools are for evdev and pyalsaaudio (no arm64 wheels).
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3-venv python3-lgpio libasound2 alsa-utils bluez \
    bluez-alsa-utils libasound2-plugin-bluez \
    libssl3 libopus0 libgsm1 libspeex1 libspeexdsp1 libsrtp2-1 libsamplerate0 ca-certificates \
    gcc libc6-dev python3-dev libasound2-dev >/dev/null

python3 -m venv --system-site-packages /opt/firmware-app
spec=$src
[[ -n $extras ]] && spec+="[$extras]"
/opt/firmware-app/bin/pip install --quiet --no-cache-dir --disable-pip-version-check "$spec"
site=$(/opt/firmware-app/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
cp "$pjsua2"/_pjsua2*.so "$pjsua2/pjsua2.py" "$site/"
/opt/firmware-app/bin/python3 -m compileall -q "$site" >/dev/null
/opt/firmware-app/bin/python3 -c 'import pjsua2; print("PJSUA2", pjsua2.Endpoint().libVersion().full)'

install -m 0644 "$src"/systemd/*.service "$src"/systemd/*.timer "$src"/systemd/*.path /usr/lib/systemd/system/
install -D -m 0644 "$src/systemd/sysusers.d/firmware-app.conf" /usr/lib/sysusers.d/firmware-app.conf
install -D -m 0644 -t /usr/lib/udev/rules.d "$src"/systemd/udev/60-firmware-app-gpio.rules "$src"/systemd/udev/60-firmware-app-hid-telephony.rules
install -D -m 0644 "$src/image/provision/firmware_provision.py" /usr/lib/firmware-app/firmware_provision.py
install -D -m 0644 -t /usr/lib/systemd/system/bluealsa.service.d "$src/systemd/bluealsa.service.d/firmware-app.conf"
install -D -m 0644 -t /etc/alsa/conf.d "$src/plugins/softphone_hfp/60-firmware-app-bluetooth.conf"
/opt/firmware-app/bin/python3 -m compileall -q /usr/lib/firmware-app >/dev/null
systemd-sysusers
# Raspberry Pi OS grows its root file system itself: firmware-growroot is for the Debian image only.
systemctl daemon-reload
systemctl enable firmware-app.service bluealsa.service firmware-provision.service firmware-provision-network.timer \
    firmware-provision-request.path
log "installed; put firmware-app.toml and firmware-app-secrets.toml on the boot partition and reboot"
