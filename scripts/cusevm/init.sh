#!/bin/busybox sh
# /init of the cusevm initramfs. Mounts the host root (9p, read-only) under a tmpfs
# overlay, mounts the read-write share at /share and runs /share/.cusevm/cmd.sh as root
# in a chroot of that overlay. The script's output goes to /share/.cusevm/out.txt and its
# exit status to /share/.cusevm/rc, which is how run.sh learns the result: the VM's own
# exit status says nothing about the script.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

say() { echo "cusevm-init: $*"; }

# Load in list order; a few passes tolerate an order mistake in modules.list.
for pass in 1 2 3; do
  while read -r m; do
    grep -q "^$m " /proc/modules || insmod "/mods/$m.ko" 2>/dev/null
  done < /mods/order
done
say "modules: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"

# The guest's loopback starts down; tests use 127.0.0.1.
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up

mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /lower \
  || say "FAILED to mount the host root over 9p"
mount -t tmpfs -o size=75% tmpfs /upper
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot \
  || say "FAILED to mount the overlay"
mkdir -p /newroot/share
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 share /newroot/share \
  || say "FAILED to mount the share"
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
[ -c /newroot/dev/cuse ] || say "no /dev/cuse in the guest"

say "running the script"
chroot /newroot /bin/sh -c '
  export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  export HOME=/root LANG=C.UTF-8 CUSEVM=1 CUSEVM_SHARE=/share
  cd /share && /share/.cusevm/cmd.sh > /share/.cusevm/out.txt 2>&1
  echo $? > /share/.cusevm/rc'
sync
say "script done, powering off"
poweroff -f
