#!/bin/sh
# Which boots must prove that the phone works (firmware-app-health.service, rauc-mark-good.service):
#
#   firmware-slot on-trial    exit 0 when the running slot has not yet been marked good with the software it
#                             holds now (the first boot after an update: the phone must register, or the
#                             device reboots and U-Boot falls back), 1 when it has (a phone that cannot
#                             reach its registrar then is a network matter, not a reason to change slots)
#   firmware-slot confirmed   records the running slot and its software as good on this device
#
# The record, /data/firmware-boot/good, is "SLOT VERSION ROOT-UUID" (the slot from rauc.slot= on the kernel
# command line, /usr/lib/firmware-app/image-version, the root file system's UUID).
set -eu
record=/data/firmware-boot/good
running() {
    slot=$(sed -n 's/.*rauc\.slot=\([^ ]*\).*/\1/p' /proc/cmdline)
    version=$(cat /usr/lib/firmware-app/image-version 2>/dev/null || echo unknown)
    uuid=$(findmnt -n -o UUID /)
    echo "${slot:-none} $version $uuid"
}
case ${1:-} in
    on-trial)
        now=$(running)
        if [ -f "$record" ] && [ "$(cat "$record")" = "$now" ]; then
            echo "firmware-slot: $now was marked good before: no trial"
            exit 1
        fi
        echo "firmware-slot: $now is on trial: the phone must work or the device falls back"
        exit 0 ;;
    confirmed)
        mkdir -p "$(dirname "$record")"
        running > "$record.new"
        sync -f "$record.new"
        mv "$record.new" "$record"
        echo "firmware-slot: marked good: $(cat "$record")" ;;
    *)
        echo "usage: firmware-slot on-trial|confirmed" >&2
        exit 2 ;;
esac
