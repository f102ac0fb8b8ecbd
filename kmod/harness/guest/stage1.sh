#!/bin/busybox sh
# Stage 1 (initramfs, busybox): load virtio + 9p, mount the guest rootfs and the
# shares over 9p, and hand over to the guest's PID 1 from the repository.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in /m/*.ko; do insmod "$m" || echo "stage1: insmod $m failed"; done
o=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$o,cache=loose" root /newroot || { echo "stage1: no root"; poweroff -f; }
mkdir -p /newroot/mnt/kmod /newroot/mnt/results
mount -t 9p -o "$o,ro" kmod /newroot/mnt/kmod
mount -t 9p -o "$o" results /newroot/mnt/results
# This run's modules and files (kmod/harness/run.sh), over the rootfs' own.
mkdir -p /run-share /newroot/lib/modules /newroot/opt/wghybrid
mount -t 9p -o "$o,ro" run /run-share
mount -o bind /run-share/lib/modules /newroot/lib/modules
mount -o bind /run-share/opt /newroot/opt/wghybrid
# The repository (and its .venv), mounted here and bound at the host's path
# (wgh.repo=) by init.sh once its tmpfs mounts are in place: a checkout under /tmp,
# /root or /var/lib would otherwise be hidden by them.
if grep -q 'wgh\.repo=' /proc/cmdline; then
	mkdir -p /newroot/mnt/repo
	mount -t 9p -o "$o,ro,cache=loose" repo /newroot/mnt/repo || echo "stage1: no repo share"
fi
umount /proc /sys /dev
exec switch_root /newroot /bin/bash /mnt/kmod/harness/guest/init.sh
