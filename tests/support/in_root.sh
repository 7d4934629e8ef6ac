#!/bin/sh
# in_root.sh ROOT PATH... -- COMMAND [ARG]...
# Runs COMMAND with the root filesystem ROOT (another distribution's, made by scripts/debian13-root.sh) as its
# `/`, in a mount namespace of its own: nothing mounted here is seen outside, and ROOT itself is not written
# to (but for an empty top-level directory a PATH may need). Inside: /proc, the host's /dev, a fresh /tmp, and
# each PATH (a host file or directory) at the same path, so that COMMAND's arguments mean the same inside. The
# network is the host's (loopback). Needs root (mount). Used by tests/foreign_root.rs.
set -eu
[ "$#" -ge 3 ] || { echo "usage: $0 ROOT PATH... -- COMMAND [ARG]..." >&2; exit 2; }
exec unshare --mount --propagation private /bin/sh -eu -c '
root=$1; shift
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
# The top-level directories of the PATHs (but /tmp) get a tmpfs of their own, so that the mount points below
# them can be made without writing to ROOT; the directories ROOT runs on cannot be covered.
tops=" tmp "
for p in "$@"; do
	[ "$p" = -- ] && break
	top=${p#/}; top=${top%%/*}
	case " usr lib lib64 bin sbin etc proc dev " in *" $top "*)
		echo "in_root.sh: $p would cover /$top of the root" >&2; exit 2;;
	esac
	case "$tops" in *" $top "*) continue;; esac
	mkdir -p "$root/$top"
	mount -t tmpfs tmpfs "$root/$top"
	tops="$tops$top "
done
while [ "$1" != -- ]; do
	p=$1; shift
	if [ -d "$p" ]; then
		mkdir -p "$root$p"
	else
		mkdir -p "$root${p%/*}"
		: >"$root$p"
	fi
	mount --bind "$p" "$root$p"
done
shift
cd "$root"
pivot_root . mnt
cd /
umount -l /mnt
exec "$@"
' in_root "$@"
