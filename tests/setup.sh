#!/usr/bin/env bash
# Installs everything the phone's tests, demo and benchmarks need on a Debian 12 machine, as root:
# Debian packages (the real SIP peers, the pjproject build deps, PulseAudio for audio tests), a venv in
# .venv with the project and its plugin extras, and PJSUA2 2.17 built from Debian's source archive
# (cached in /var/cache/firmware-app/pjsua2: about 4 minutes the first time, seconds after).
# FIRMWARE_APP_PJSUA2=wheel installs the PyPI wheel (2.15.1, no sound) instead: development only.
# --image also installs what the opt-in image build and boot test need (pytest -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
    # real SIP peers for the tests
    kamailio kamailio-sqlite-modules kamailio-extra-modules kamailio-presence-modules baresip-core sip-tester linphone-cli mosquitto mosquitto-clients
    # building pjproject 2.17 with ALSA and OpenSSL 3
    build-essential swig python3-dev python3-venv libasound2-dev libssl-dev libopus-dev uuid-dev
    libgsm1-dev libspeex-dev libspeexdsp-dev libsrtp2-dev libsamplerate0-dev xz-utils dpkg-dev
    # audio tests (a clocked ALSA device through PulseAudio), BLE tests (a private D-Bus), units, scripts
    pulseaudio libasound2-plugins alsa-utils dbus systemd shellcheck openssl rauc squashfs-tools e2fsprogs
    # Bluetooth headsets: the real bluealsa daemon (HFP/HSP audio gateway) and its ALSA plugin
    bluez-alsa-utils libasound2-plugin-bluez
)
if [[ ${1:-} == --image ]]; then
    # the image build and its boot under QEMU (ipxe-qemu: virtio-net's efi-virtio.rom); the A/B side: U-Boot
    # for QEMU, mkimage and mkenvimage, fw_printenv, and ssh for the update test
    packages+=(mmdebstrap qemu-user-static binfmt-support arch-test dosfstools mtools fdisk e2fsprogs qemu-system-arm ipxe-qemu
               u-boot-qemu u-boot-tools libubootenv-tool openssh-client)
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,gpio,ble,headset-keys,audio,hfp,telemetry,bench]'

if [[ ${FIRMWARE_APP_PJSUA2:-build} == wheel ]]; then
    .venv/bin/python -m pip install -q '.[wheel-pjsua2]'
    .venv/bin/python -m compileall -q "$(.venv/bin/python -c 'import pjsua2, os; print(pjsua2.__file__)')"
else
    # Cached by the source's and the recipe's hashes: seconds when nothing changed, a rebuild when a patch did.
    image/pjsua2/build.sh "$PWD/.venv/bin/python"
fi
echo "setup: ready ($(.venv/bin/python -c 'import pjsua2; print("PJSUA2", pjsua2.Endpoint().libVersion().full)'))" >&2
