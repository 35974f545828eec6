#!/bin/sh
# Seeds the data partition (firmware-data.service, before its bind mounts): every folder that must survive
# an update gets its place on /data the first time, with what the root file system holds there (the image's
# defaults). Folders already on /data are left as they are: they hold this device's settings and state.
set -eu
mountpoint -q /data || { echo "firmware-data: /data is not mounted" >&2; exit 1; }
seed() {  # FOLDER MODE
    target=/data$1
    [ -d "$target" ] && return 0
    mkdir -p "$(dirname "$target")"
    rm -rf "$target.seeding"
    if [ -d "$1" ]; then cp -a "$1" "$target.seeding"; else mkdir "$target.seeding"; fi
    chmod "$2" "$target.seeding"
    sync -f "$target.seeding"
    mv "$target.seeding" "$target"
    echo "firmware-data: seeded $target"
}
seed /etc/firmware-app 0755
seed /var/lib/firmware-app 0750
seed /var/lib/firmware-provision 0700
seed /var/lib/firmware-update 0700
seed /root/.ssh 0700
# RAUC's data-directory (image/rauc/system.conf.sh): the slots' status.
seed /rauc 0755
seed /firmware-boot 0755
