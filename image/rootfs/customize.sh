#!/usr/bin/env bash
# mmdebstrap --customize-hook: the phone on top of Debian. Commands inside the root file system run under
# qemu-user. Paths come from build-image.sh's environment.
#
#   FW_SRC=... FW_PJSUA2=... FW_REPO=... [FW_EXTRAS=gpio,...] [FW_PIP_EXTRA='lgpio'] customize.sh ROOTFS
set -euo pipefail
root=${1:?usage: customize.sh ROOTFS}
: "${FW_SRC:?the app source folder}" "${FW_PJSUA2:?the arm64 PJSUA2 folder}" "${FW_REPO:?the repository}"
extras=${FW_EXTRAS-gpio}
pip_extra=${FW_PIP_EXTRA-}
here=$(cd "$(dirname "$0")" && pwd)
# A clean environment inside: the build machine's PIP_*, LC_* and the like are not the device's.
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
log() { printf 'customize: %s\n' "$*" >&2; }

# 1. The app in its own venv, and PJSUA2 2.17 beside it. Everything is byte-compiled now: the venv is
#    read-only at run time, and pjsua2.py without its .pyc costs ~20 MB and a recompile on every start.
log "the app (extras: ${extras:-none}) in /opt/firmware-app"
rm -rf "$root/tmp/firmware-app-src"
cp -a "$FW_SRC" "$root/tmp/firmware-app-src"
spec=/tmp/firmware-app-src
[[ -n $extras ]] && spec+="[$extras]"
in_root python3 -m venv /opt/firmware-app
# For the downloads, the root file system resolves names and trusts CAs as the build machine does (a
# company proxy's CA, say); systemd-resolved's /etc/resolv.conf link points into an empty /run here.
resolv=$root/etc/resolv.conf
resolv_link=$(readlink "$resolv" || true)
rm -f "$resolv"
cp -L /etc/resolv.conf "$resolv"
cp -L /etc/ssl/certs/ca-certificates.crt "$root/tmp/build-ca.crt"
pip=(env PIP_CERT=/tmp/build-ca.crt PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/firmware-app/bin/pip)
# evdev and pyalsaaudio have no arm64 wheels, lgpio (gpiozero's pin factory for /dev/gpiochip*) is not in
# Debian 12: those are compiled here, with build tools that leave the image again afterwards.
build_deps=(gcc libc6-dev python3-dev libasound2-dev linux-libc-dev swig)
needs_build=0
[[ ,$extras, == *,audio,* || ,$extras, == *,headset-keys,* || -n $pip_extra ]] && needs_build=1
if ((needs_build)); then
    in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${build_deps[@]}" >/dev/null
fi
read -ra pip_extra_list <<< "$pip_extra"
in_root "${pip[@]}" install --quiet "$spec" "${pip_extra_list[@]}"
if ((needs_build)); then
    in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq --autoremove "${build_deps[@]}" >/dev/null
fi
rm -rf "$root/tmp/firmware-app-src" "$root/tmp/build-ca.crt" "$resolv"
[[ -n $resolv_link ]] && ln -s "$resolv_link" "$resolv"
site=$(in_root /opt/firmware-app/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
cp "$FW_PJSUA2"/_pjsua2*.so "$FW_PJSUA2/pjsua2.py" "$root$site/"
in_root /opt/firmware-app/bin/python3 -m compileall -q "$site" >/dev/null
version=$(in_root /opt/firmware-app/bin/python3 -c 'import pjsua2; print(pjsua2.Endpoint().libVersion().full)')
[[ $version == 2.17* ]] || { log "PJSUA2 in the image is $version, not 2.17"; exit 1; }
log "PJSUA2 $version"

# 2. Units, system user and groups, udev rules (gpio group, USB headsets' telephony nodes, Wi-Fi), provisioning.
install -m 0644 "$FW_REPO"/systemd/*.service "$FW_REPO"/systemd/*.timer "$FW_REPO"/systemd/*.path "$root/usr/lib/systemd/system/"
install -D -m 0644 "$FW_REPO/systemd/sysusers.d/firmware-app.conf" "$root/usr/lib/sysusers.d/firmware-app.conf"
install -D -m 0644 -t "$root/usr/lib/udev/rules.d" "$FW_REPO"/systemd/udev/*.rules
install -D -m 0644 -t "$root/usr/lib/systemd/system/wpa_supplicant@.service.d" \
    "$FW_REPO/systemd/wpa_supplicant@.service.d/firmware-app.conf"
install -D -m 0644 -t "$root/usr/lib/systemd/system/bluealsa.service.d" "$FW_REPO/systemd/bluealsa.service.d/firmware-app.conf"
install -D -m 0644 -t "$root/etc/alsa/conf.d" "$FW_REPO/plugins/softphone_hfp/60-firmware-app-bluetooth.conf"
install -D -m 0644 "$FW_REPO/image/provision/firmware_provision.py" "$root/usr/lib/firmware-app/firmware_provision.py"
install -D -m 0755 "$here/growroot" "$root/usr/lib/firmware-app/growroot"
in_root /opt/firmware-app/bin/python3 -m compileall -q /usr/lib/firmware-app >/dev/null
in_root systemd-sysusers
in_root systemctl enable firmware-app.service bluealsa.service firmware-provision.service firmware-provision-network.timer \
    firmware-provision-request.path \
    firmware-ssh-hostkeys.service firmware-growroot.service systemd-networkd.service systemd-resolved.service \
    systemd-timesyncd.service

# 3. Network: DHCP on every wired and wireless interface, announcing the provisioned hostname.
mkdir -p "$root/etc/systemd/network"
for kind in wired:'eth* en*' wireless:'wlan* wl*'; do
    cat > "$root/etc/systemd/network/20-${kind%%:*}.network" <<NET
[Match]
Name=${kind#*:}

[Network]
DHCP=yes

[DHCPv4]
SendHostname=yes
# The MAC address, not a DUID from the machine id: a DHCP reservation holds across re-imaging too.
ClientIdentifier=mac
NET
done

# 4. A generic hostname until provisioning sets one. File systems, boot loader and slots: ab-boot.sh.
echo firmware-phone > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tfirmware-phone\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
    > "$root/etc/hosts"

# 5. Nothing device-specific in the image: machine id and SSH host keys are made on each device's first
#    boot (systemd; firmware-ssh-hostkeys.service). Root has no password: SSH keys come with the settings.
rm -f "$root"/etc/ssh/ssh_host_*
echo uninitialized > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
in_root passwd --lock root >/dev/null
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log
log "done"
