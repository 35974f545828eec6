# U-Boot script of the A/B image (boot.scr, made by image/build-image.sh with mkimage): RAUC's boot-count
# scheme (RAUC's documentation, "Integration", U-Boot), one script for the Raspberry Pi and QEMU's virt.
#
# The three counters live in a file of their own on the FAT partition, firmware-boot.env (libubootenv
# format, 0x4000 bytes), which RAUC changes from Linux through fw_setenv (/etc/fw_env.config). Only these
# three are imported, so a damaged or foreign file cannot set anything else; a file that fails its CRC
# means the defaults ("A B", 3 tries each). Never saveenv: on the Pi that would write uboot.env.
#
# Partitions on ${devtype} ${devnum} (distro_bootcmd found this script there): 1 FAT, 2 root A, 3 root B.
# Each root carries its kernel and initramfs as /boot/vmlinuz and /boot/initrd.img.

setenv fw_disk "${devtype} ${devnum}"
if test "${board}" = "rpi"; then
    # The firmware loaded the device tree for this board (config.txt, upstream_kernel=1) and put
    # cmdline.txt into its /chosen/bootargs. Debian's 33 MB kernel does not fit below U-Boot's default
    # script and initramfs addresses on the Pi: higher ones.
    setenv fw_fdt ${fdt_addr}
    setenv fw_env_addr 0x00100000
    setenv fw_kernel_addr 0x00200000
    setenv fw_initrd_addr 0x04400000
    fdt addr ${fdt_addr}
    fdt get value fw_bootargs /chosen bootargs
else
    # QEMU's virt machine: U-Boot's own device tree is the one QEMU made for this machine.
    setenv fw_fdt ${fdtcontroladdr}
    setenv fw_env_addr ${scriptaddr}
    setenv fw_kernel_addr ${kernel_addr_r}
    setenv fw_initrd_addr ${ramdisk_addr_r}
    setenv fw_bootargs "console=ttyAMA0,115200"
fi

# The boot counters: only these three, only from the file.
setenv BOOT_ORDER
setenv BOOT_A_LEFT
setenv BOOT_B_LEFT
if load ${fw_disk}:1 ${fw_env_addr} firmware-boot.env; then
    env import -c ${fw_env_addr} 0x4000 BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
fi
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3

# The first slot in BOOT_ORDER with tries left takes one of them.
setenv fw_slot
for slot in ${BOOT_ORDER}; do
    if test -z "${fw_slot}"; then
        if test "${slot}" = "A" && test ${BOOT_A_LEFT} -gt 0; then
            setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
            setenv fw_slot A
            setenv fw_part 2
        elif test "${slot}" = "B" && test ${BOOT_B_LEFT} -gt 0; then
            setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
            setenv fw_slot B
            setenv fw_part 3
        fi
    fi
done

if test -z "${fw_slot}"; then
    # Every slot used its tries: start over rather than leave a phone that never boots.
    echo "firmware-boot: no slot has tries left (order ${BOOT_ORDER}): 3 tries each again, reset"
    setenv BOOT_A_LEFT 3
    setenv BOOT_B_LEFT 3
fi
env export -c -s 0x4000 ${fw_env_addr} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
save ${fw_disk}:1 ${fw_env_addr} firmware-boot.env 0x4000
if test -z "${fw_slot}"; then
    reset
fi

echo "firmware-boot: slot ${fw_slot} (order ${BOOT_ORDER}, tries left A ${BOOT_A_LEFT} B ${BOOT_B_LEFT})"
part uuid ${fw_disk}:${fw_part} fw_root
# bootargs_extra: an optional line "bootargs_extra=..." in firmware-bootargs.txt on the FAT partition
# (for debugging, e.g. systemd.journald.forward_to_console=1); on the Pi, cmdline.txt serves as well.
setenv bootargs_extra
if load ${fw_disk}:1 ${fw_env_addr} firmware-bootargs.txt; then
    env import -t ${fw_env_addr} ${filesize} bootargs_extra
fi
setenv bootargs "${fw_bootargs} root=PARTUUID=${fw_root} rootwait rw rauc.slot=${fw_slot} panic=10 ${bootargs_extra}"
if load ${fw_disk}:${fw_part} ${fw_kernel_addr} /boot/vmlinuz; then
    if load ${fw_disk}:${fw_part} ${fw_initrd_addr} /boot/initrd.img; then
        booti ${fw_kernel_addr} ${fw_initrd_addr}:${filesize} ${fw_fdt}
    fi
fi
# The slot's kernel is missing or did not start: the next try, or the other slot, after a reset.
echo "firmware-boot: slot ${fw_slot} did not boot: reset"
reset
