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
umount /proc /sys /dev
exec switch_root /newroot /bin/bash /mnt/kmod/harness/guest/init.sh
