#!/bin/busybox sh
# Stage 1 (initramfs, busybox): load virtio, 9p and overlay, mount the guest rootfs
# and the shares, and hand over to the guest's PID 1 from the repository.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# (none on the debug kernel, which has them built in: kmod/debugkernel.sh)
for m in /m/*.ko; do [ -e "$m" ] || continue; insmod "$m" || echo "stage1: insmod $m failed"; done
o=trans=virtio,version=9p2000.L,msize=512000
# The root is the host's cached tree of the target (kmod/rootfs.sh), read-only over
# 9p under an overlay whose upper layer is in memory: the guest writes where it
# likes (dpkg, DKMS, /var/lib, ...) as on a real machine, and the cache is never
# written, so runs may share it.
mkdir -p /lower /upper
mount -t 9p -o "$o,ro,cache=loose" root /lower || { echo "stage1: no root"; poweroff -f; }
mount -t tmpfs -o mode=0755 tmpfs /upper
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot ||
	{ echo "stage1: no overlay root"; poweroff -f; }
mkdir -p /newroot/mnt/kmod /newroot/mnt/results /newroot/mnt/src
mount -t 9p -o "$o,ro" kmod /newroot/mnt/kmod
mount -t 9p -o "$o" results /newroot/mnt/results
# The pristine WireGuard source of the booted kernel (its linux-source package).
mount -t 9p -o "$o,ro" src /newroot/mnt/src || echo "stage1: no src share"
# This run's modules and files (kmod/harness/run.sh), copied over the tree's own
# (the headers' build symlink stays): /lib/modules is writable, as DKMS needs.
mkdir -p /run-share /newroot/lib/modules /newroot/opt/wghybrid
mount -t 9p -o "$o,ro" run /run-share
cp -a /run-share/lib/modules/. /newroot/lib/modules/
cp -a /run-share/opt/. /newroot/opt/wghybrid/
umount /run-share
# The repository, mounted here and bound at the host's path (wgh.repo=) by init.sh
# once its tmpfs mounts are in place: a checkout under /tmp or /root would otherwise
# be hidden by them.
if grep -q 'wgh\.repo=' /proc/cmdline; then
	mkdir -p /newroot/mnt/repo
	mount -t 9p -o "$o,ro,cache=loose" repo /newroot/mnt/repo || echo "stage1: no repo share"
fi
umount /proc /sys /dev
exec switch_root /newroot /bin/bash /mnt/kmod/harness/guest/init.sh
