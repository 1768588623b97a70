#!/bin/bash
# run.sh SCRIPT [SHARE_DIR] -- run SCRIPT as root inside a Debian kernel that has CUSE.
#
# Why: the kernels we develop on are built without CUSE (no /dev/cuse), Debian's stock
# kernel ships cuse.ko. This boots that kernel under QEMU software emulation (TCG; KVM
# guests hang on these machines) with this machine's root filesystem shared read-only
# over 9p and a tmpfs overlay on top, so the guest has the same Python, virtualenvs and
# tools. SCRIPT runs in a chroot of that overlay with cwd /share.
#
# SHARE_DIR (default: a temporary directory, removed afterwards) is mounted read-write at
# /share in the guest: it is the only way files come back. The script's stdout+stderr is
# printed when the VM ends, and run.sh exits with the script's exit status (125 when the
# guest never reported one: boot failure, crash or timeout; the console tail is printed).
#
# Environment:
#   CUSEVM_CACHE    kernel/initramfs cache (default /var/tmp/cusevm)
#   CUSEVM_TIMEOUT  seconds before the VM is killed (default 900)
#   CUSEVM_MEM      guest memory in MiB (default 2048); CUSEVM_SMP: vCPUs (default 2)
#   CUSEVM_KERNEL_PKG  kernel package to use instead of linux-image-amd64's dependency
#   CUSEVM_QUIET=1  do not print the script's output (it stays in SHARE_DIR/.cusevm/out.txt)
#   CUSEVM_QEMU_ARGS  extra QEMU arguments, split at whitespace (e.g. a TPM: -chardev
#                   socket,... -tpmdev emulator,... -device tpm-tis,... for the guest's firmware and kernel)
# Inside the guest: CUSEVM=1, CUSEVM_SHARE=/share.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${CUSEVM_CACHE:-/var/tmp/cusevm}
vm_timeout=${CUSEVM_TIMEOUT:-900}

die() { echo "cusevm: $*" >&2; exit 125; }
note() { echo "cusevm: $*" >&2; }

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 SCRIPT [SHARE_DIR]"
script=$1
[[ -f $script ]] || die "script '$script' does not exist"

as_root=()
[[ $(id -u) -eq 0 ]] || as_root=(sudo)

# --- host tools -------------------------------------------------------------------------
# busybox must be the static build: the initramfs has no shared libraries.
missing=()
for pkg in qemu-system-x86 busybox-static cpio; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  note "installing ${missing[*]}"
  "${as_root[@]}" apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q "${missing[@]}" >&2 \
    || die "could not install ${missing[*]}"
fi
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found after installing qemu-system-x86"

# --- kernel and initramfs (cached; setup is serialised between concurrent runs) --------
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

kdir=$cache/kernel
if [[ ! -f $kdir/vmlinuz || ! -f $kdir/ok ]]; then
  pkg=${CUSEVM_KERNEL_PKG:-}
  if [[ -z $pkg ]]; then
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    if [[ -z $pkg ]]; then
      "${as_root[@]}" apt-get update -q >&2
      pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    fi
  fi
  [[ -n $pkg ]] || die "cannot tell which kernel package linux-image-amd64 depends on"
  note "downloading $pkg into $cache (once)"
  rm -rf "$kdir" "$cache/dl" && mkdir -p "$cache/dl" "$kdir" && chmod 0777 "$cache/dl"  # _apt may write
  if ! (cd "$cache/dl" && apt-get download "$pkg" >&2); then
    # Stale package lists can name a kernel the mirror no longer has: refresh and ask again.
    "${as_root[@]}" apt-get update -q >&2
    [[ -n ${CUSEVM_KERNEL_PKG:-} ]] || pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    (cd "$cache/dl" && apt-get download "$pkg" >&2) || die "apt-get download $pkg failed"
  fi
  dpkg-deb -x "$cache"/dl/*.deb "$cache/dl/x"
  cp "$cache"/dl/x/boot/vmlinuz-* "$kdir/vmlinuz"
  mkdir -p "$kdir/mods"
  find "$cache/dl/x/lib/modules" -name '*.ko' -exec cp {} "$kdir/mods/" \;
  echo "$pkg" > "$kdir/ok"
  rm -rf "$cache/dl"
fi

# The initramfs is rebuilt whenever init.sh, the module list or busybox change.
key=$(cat "$here/init.sh" "$here/modules.list" /bin/busybox "$kdir/ok" | sha256sum | cut -c1-16)
initrd=$cache/initrd-$key.gz
if [[ ! -f $initrd ]]; then
  stage=$(mktemp -d "$cache/initrd.XXXXXX")
  mkdir -p "$stage"/{bin,mods,proc,sys,dev,newroot}
  cp /bin/busybox "$stage/bin/"
  grep -v '^\s*\(#\|$\)' "$here/modules.list" > "$stage/mods/order"
  while read -r m; do
    if [[ -f $kdir/mods/$m.ko ]]; then cp "$kdir/mods/$m.ko" "$stage/mods/"
    else note "module $m not in $(cat "$kdir/ok") (built in?)"; fi
  done < "$stage/mods/order"
  [[ -f $stage/mods/cuse.ko ]] || die "the kernel package has no cuse.ko"
  cp "$here/init.sh" "$stage/init" && chmod +x "$stage/init"
  (cd "$stage" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$initrd.tmp") && mv "$initrd.tmp" "$initrd"
  rm -rf "$stage"
  find "$cache" -maxdepth 1 -name 'initrd-*.gz' ! -name "initrd-$key.gz" -delete
fi
flock -u 9

# --- run --------------------------------------------------------------------------------
if [[ $# -ge 2 ]]; then
  share=$2; mkdir -p "$share"; share=$(cd "$share" && pwd); own_share=
else
  share=$(mktemp -d /tmp/cusevm-share.XXXXXX); own_share=1
fi
ctl=$share/.cusevm
rm -rf "$ctl" && mkdir -p "$ctl"
cp "$script" "$ctl/cmd.sh" && chmod +x "$ctl/cmd.sh"
console=$ctl/console.log
cleanup() { [[ -n $own_share ]] && rm -rf "$share"; return 0; }
trap cleanup EXIT

read -r -a extra_qemu_args <<< "${CUSEVM_QEMU_ARGS:-}"

start=$SECONDS
set +e
timeout -k 10 "$vm_timeout" qemu-system-x86_64 \
  -accel tcg,thread=multi -cpu max -m "${CUSEVM_MEM:-2048}" -smp "${CUSEVM_SMP:-2}" \
  -display none -monitor none -serial "file:$console" -no-reboot \
  -kernel "$kdir/vmlinuz" -initrd "$initrd" \
  -append "console=ttyS0 panic=-1 loglevel=3" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs "local,path=$share,mount_tag=share,security_model=none" "${extra_qemu_args[@]}" </dev/null
qemu_rc=$?
set -e
elapsed=$((SECONDS - start))

[[ -n ${CUSEVM_QUIET:-} || ! -f $ctl/out.txt ]] || cat "$ctl/out.txt"
if [[ ! -s $ctl/rc ]]; then
  if [[ $qemu_rc -eq 124 ]]; then note "VM timed out after ${vm_timeout}s"; else note "guest reported no status (qemu exit $qemu_rc)"; fi
  note "console log tail:"; tail -n 40 "$console" >&2 || true
  exit 125
fi
rc=$(cat "$ctl/rc")
if [[ $rc -ne 0 ]]; then
  note "script exited $rc after ${elapsed}s; console log tail:"; tail -n 20 "$console" >&2 || true
else
  note "script passed in ${elapsed}s (boot included)"
fi
exit "$rc"
