#!/bin/sh
# ovms-init: PID 1 of the OVMS initrd (spec §6). Runs under busybox sh.
# It loads the guest modules, mounts the root disk (with an overlay when the
# root is read-only), reads the config disk, sets hostname and network, then
# either switch_roots into the image's /sbin/init or runs the workload as its
# child and powers off when it exits, printing "OVMS-EXIT: <code>".
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /run /tmp /newroot
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

ROOT=/newroot
CFG=/run/ovms/config

log() { echo "ovms-init: $*"; }

# Ends the VM. Everything after this point is best effort: the exit line is
# what the host waits for.
finish() {
  code=$1
  sync
  echo "OVMS-EXIT: $code"
  umount -a -r >/dev/null 2>&1
  sync
  poweroff -f
  # poweroff -f does not return; if it somehow does, do not let PID 1 exit (a panic).
  while :; do sleep 3600; done
}

fail() {
  code=$1
  shift
  echo "ovms-init: error: $*"
  finish "$code"
}

# --- kernel command line -------------------------------------------------
P_ROOT=/dev/vda P_ROOTFS=ext4 P_ROOTMODE=rw P_OVERLAY= P_MODE=exec
P_CONFIG= P_HOSTNAME= P_NET=none P_STDIO=console P_STDIN=console
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    ovms.root=*) P_ROOT=${arg#*=} ;;
    ovms.rootfs=*) P_ROOTFS=${arg#*=} ;;
    ovms.rootmode=*) P_ROOTMODE=${arg#*=} ;;
    ovms.overlay=*) P_OVERLAY=${arg#*=} ;;
    ovms.mode=*) P_MODE=${arg#*=} ;;
    ovms.config=*) P_CONFIG=${arg#*=} ;;
    ovms.hostname=*) P_HOSTNAME=${arg#*=} ;;
    ovms.net=*) P_NET=${arg#*=} ;;
    ovms.stdio=*) P_STDIO=${arg#*=} ;;
    ovms.stdin=*) P_STDIN=${arg#*=} ;;
  esac
done
[ -n "$P_OVERLAY" ] || { [ "$P_ROOTMODE" = ro ] && P_OVERLAY=tmpfs || P_OVERLAY=none; }

# --- modules ---------------------------------------------------------------
KVER=$(cat /etc/ovms/kernel-version)
if [ "$(uname -r)" != "$KVER" ]; then
  log "warning: initrd modules are for kernel $KVER, running $(uname -r)"
fi
while read -r m; do
  [ -n "$m" ] || continue
  insmod "/lib/modules/$KVER/$m" 2>/tmp/insmod.err ||
    grep -q "File exists" /tmp/insmod.err || log "warning: insmod $m: $(cat /tmp/insmod.err)"
done </etc/ovms/modules
# The kernel asks for modules (crypto, fs helpers) through modprobe.
echo /sbin/modprobe >/proc/sys/kernel/modprobe 2>/dev/null
# Ctrl-Alt-Del from the host becomes SIGINT to PID 1: the graceful-stop request.
echo 0 >/proc/sys/kernel/ctrl-alt-del 2>/dev/null

wait_block() {
  i=0
  while [ ! -b "$1" ]; do
    i=$((i + 1))
    [ $i -gt 100 ] && return 1
    sleep 0.1
  done
}

# --- root ------------------------------------------------------------------
wait_block "$P_ROOT" || fail 125 "root disk $P_ROOT did not appear"
case "$P_ROOTFS" in ext4 | erofs) ;; *) fail 125 "unsupported root filesystem \"$P_ROOTFS\"" ;; esac
if [ "$P_ROOTMODE" = ro ] || [ "$P_ROOTFS" = erofs ]; then
  if [ "$P_OVERLAY" != none ]; then
    mkdir -p /run/ovms/lower /run/ovms/rw
    mount -t "$P_ROOTFS" -o ro "$P_ROOT" /run/ovms/lower || fail 125 "cannot mount $P_ROOT ($P_ROOTFS, ro)"
    if [ "$P_OVERLAY" = tmpfs ]; then
      mount -t tmpfs -o mode=0755 tmpfs /run/ovms/rw
    else
      # A writable disk for the upper layer; a blank one is formatted on first boot.
      wait_block "$P_OVERLAY" || fail 125 "overlay disk $P_OVERLAY did not appear"
      # Only an all-zero start counts as blank: never format a disk that holds anything.
      if [ "$(dd if="$P_OVERLAY" bs=65536 count=1 2>/dev/null | tr -d '\000' | wc -c)" = 0 ]; then
        mke2fs -L ovms-upper "$P_OVERLAY" >/dev/null 2>&1 || fail 125 "cannot format the overlay disk $P_OVERLAY"
      fi
      mount -t ext4 "$P_OVERLAY" /run/ovms/rw || fail 125 "cannot mount the overlay disk $P_OVERLAY"
    fi
    mkdir -p /run/ovms/rw/upper /run/ovms/rw/work
    mount -t overlay overlay \
      -o lowerdir=/run/ovms/lower,upperdir=/run/ovms/rw/upper,workdir=/run/ovms/rw/work "$ROOT" ||
      fail 125 "cannot mount the overlay over $P_ROOT"
  else
    mount -t "$P_ROOTFS" -o ro "$P_ROOT" "$ROOT" || fail 125 "cannot mount $P_ROOT ($P_ROOTFS, ro)"
  fi
else
  mount -t "$P_ROOTFS" -o rw "$P_ROOT" "$ROOT" || fail 125 "cannot mount $P_ROOT ($P_ROOTFS, rw)"
fi

# --- config disk -------------------------------------------------------------
mkdir -p "$CFG"
if [ -n "$P_CONFIG" ]; then
  wait_block "$P_CONFIG" || fail 125 "config disk $P_CONFIG did not appear"
  tar -xf "$P_CONFIG" -C "$CFG" || fail 125 "cannot read the config disk $P_CONFIG"
fi
cfg() { [ -f "$CFG/$1" ] && cat "$CFG/$1"; }

# --- hostname and network ------------------------------------------------------
HN=$P_HOSTNAME
[ -n "$HN" ] || HN=$(cfg hostname)
HN_DEFAULT=
[ -n "$HN" ] || { HN=ovms; HN_DEFAULT=1; }
hostname "$HN"
ip link set lo up 2>/dev/null
if [ "$P_NET" != none ]; then
  i=0
  while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do i=$((i + 1)); sleep 0.1; done
  ip link set eth0 up || log "warning: no eth0"
  if [ "$P_NET" = dhcp ]; then
    udhcpc -i eth0 -q -n -t 5 -s /etc/ovms/udhcpc.sh >/dev/null 2>&1 || log "warning: DHCP failed"
  else
    IFS=, read -r NADDR NGW NDNS <<EOF
$P_NET
EOF
    ip addr add "$NADDR" dev eth0 || log "warning: cannot set address $NADDR"
    [ -z "$NGW" ] || ip route add default via "$NGW" || log "warning: cannot set gateway $NGW"
    [ -z "$NDNS" ] || echo "nameserver $NDNS" >/run/ovms/resolv.conf
  fi
fi
if [ -f /run/ovms/resolv.conf ]; then
  cat /run/ovms/resolv.conf >"$ROOT/etc/resolv.conf" 2>/dev/null ||
    log "warning: cannot write /etc/resolv.conf (read-only root)"
fi
[ -w "$ROOT/etc" ] && echo "$HN" >"$ROOT/etc/hostname" 2>/dev/null

# --- identity (spec §7.6.6) --------------------------------------------------------
# QEMU hands the guest an identity document as fw_cfg file opt/ovms/identity:
# "key=value" lines, the generation first, padded to a fixed size. A restored
# clone gets a new one; ovms-init applies it (MAC, address, RNG seed, hostname,
# machine-id) and prints "OVMS-IDENTITY: <generation>" when done.
IDF=/sys/firmware/qemu_fw_cfg/by_name/opt/ovms/identity/raw
apply_identity() {
  I_GEN= I_HOST= I_NET0= I_SEED=
  while IFS='=' read -r k v; do
    case "$k" in
      generation) I_GEN=$v ;;
      hostname) I_HOST=$v ;;
      net0) I_NET0=$v ;;
      seed) I_SEED=$v ;;
    esac
  done <"$IDF"
  [ -n "$I_SEED" ] && echo "$I_SEED" >/dev/urandom
  if [ -n "$I_NET0" ] && [ -e /sys/class/net/eth0 ]; then
    # mac address/prefix gateway dns ("-" for none)
    set -- $I_NET0
    ip link set eth0 address "$1" || log "warning: cannot set MAC $1"
    ip addr flush dev eth0
    ip addr add "$2" dev eth0 || log "warning: cannot set address $2"
    [ "$3" = - ] || ip route replace default via "$3" || log "warning: cannot set gateway $3"
    [ "$4" = - ] || echo "nameserver $4" >"$ROOT/etc/resolv.conf" 2>/dev/null
    # Tell the segment the address moved to this MAC.
    arping -q -U -c 1 -I eth0 "${2%/*}" >/dev/null 2>&1 &
  fi
  if [ -n "$I_HOST" ] && [ -n "$HN_DEFAULT" ]; then
    hostname "$I_HOST"
    [ -w "$ROOT/etc" ] && echo "$I_HOST" >"$ROOT/etc/hostname" 2>/dev/null
  fi
  [ -w "$ROOT/etc" ] && [ -n "$I_GEN" ] && echo "$I_GEN" | tr -d - >"$ROOT/etc/machine-id" 2>/dev/null
  echo "OVMS-IDENTITY: $I_GEN"
}
IDLAST=
if [ -r "$IDF" ]; then
  read -r IDLAST <"$IDF"
  I_SEED=$(grep '^seed=' "$IDF" 2>/dev/null)
  [ -n "$I_SEED" ] && echo "${I_SEED#seed=}" >/dev/urandom
fi
# Polls the generation (one read of the first line, no fork) while the workload runs.
identity_watch() {
  while :; do
    usleep 100000
    read -r cur <"$IDF" 2>/dev/null || continue
    [ "$cur" = "$IDLAST" ] && continue
    IDLAST=$cur
    apply_identity
  done
}

# --- switch_root: the image boots itself ----------------------------------------
if [ "$P_MODE" = switch_root ]; then
  [ -x "$ROOT/sbin/init" ] || [ -L "$ROOT/sbin/init" ] || fail 127 "the image has no /sbin/init"
  for d in proc sys dev; do
    mkdir -p "$ROOT/$d" 2>/dev/null
    mount --move "/$d" "$ROOT/$d" 2>/dev/null
  done
  exec switch_root "$ROOT" /sbin/init
  fail 127 "switch_root into $ROOT failed"
fi
[ "$P_MODE" = exec ] || fail 125 "unknown ovms.mode \"$P_MODE\""

# --- exec: run the workload as our child -----------------------------------------
for d in proc sys dev; do [ -d "$ROOT/$d" ] || mkdir -p "$ROOT/$d" 2>/dev/null; done
mount -t proc proc "$ROOT/proc" || log "warning: cannot mount /proc in the root"
mount -t sysfs sysfs "$ROOT/sys" 2>/dev/null
mount -t devtmpfs devtmpfs "$ROOT/dev" 2>/dev/null
mkdir -p "$ROOT/dev/pts" "$ROOT/dev/shm" 2>/dev/null
mount -t devpts devpts "$ROOT/dev/pts" 2>/dev/null
mount -t tmpfs -o mode=1777 shm "$ROOT/dev/shm" 2>/dev/null

# Resolves a path inside $ROOT the way the workload will see it: symlinks
# (absolute ones too) are followed relative to $ROOT, never to the initrd.
resolve_in_root() {
  rest=$1 cur= n=0
  while [ -n "$rest" ]; do
    rest=${rest#/}
    comp=${rest%%/*}
    if [ "$comp" = "$rest" ]; then rest=; else rest=${rest#*/}; fi
    case "$comp" in
      '' | .) continue ;;
      ..) cur=${cur%/*}; continue ;;
    esac
    if [ -L "$ROOT$cur/$comp" ]; then
      n=$((n + 1))
      [ $n -gt 40 ] && return 1
      t=$(readlink "$ROOT$cur/$comp")
      case "$t" in /*) cur= ;; esac
      rest="$t/$rest"
    else
      cur="$cur/$comp"
    fi
  done
  echo "$ROOT$cur"
}

eval "set -- $(cfg argv)"
[ $# -gt 0 ] || fail 127 "the bootstrap config has no entrypoint or cmd"
PROG=$1
case "$PROG" in
  */*) FOUND=$(resolve_in_root "$PROG") ;;
  *)
    FOUND=
    WPATH=$(cfg path)
    IFS=:
    for dir in $WPATH; do
      c=$(resolve_in_root "$dir/$PROG")
      if [ -f "$c" ] && [ -x "$c" ]; then FOUND=$c; break; fi
    done
    unset IFS
    ;;
esac
if [ -z "$FOUND" ] || [ ! -f "$FOUND" ] || [ ! -x "$FOUND" ]; then
  fail 127 "entrypoint \"$PROG\" not found or not executable in the root filesystem"
fi

# user: name[:group] or uid[:gid], resolved against the image's /etc/passwd and
# /etc/group as runc and crun resolve it for podman and docker: a name's uid,
# primary gid and home come from its /etc/passwd line; a uid that has no line
# runs with gid 0 and HOME=/. Without an explicit group, a user that has a
# passwd line also gets the supplementary groups whose /etc/group member list
# names it. Sets UID_, GID_, HOMEDIR and SUPP_USER (the passwd name whose
# groups apply, empty when there are none); returns 1 with RU_ERR set when a
# name cannot be resolved.
resolve_user() {
  U=${1%%:*}
  G=
  case "$1" in *:*) G=${1#*:} ;; esac
  HOMEDIR=/
  SUPP_USER=
  case "$U" in
    *[!0-9]*)
      line=$(awk -F: -v u="$U" '$1 == u { print $3 ":" $4 ":" $6 ":" $1; exit }' "$ROOT/etc/passwd" 2>/dev/null)
      [ -n "$line" ] || { RU_ERR="user \"$U\" not found in the image's /etc/passwd"; return 1; }
      ;;
    *)
      line=$(awk -F: -v u="$U" '$3 == u { print $3 ":" $4 ":" $6 ":" $1; exit }' "$ROOT/etc/passwd" 2>/dev/null)
      ;;
  esac
  if [ -n "$line" ]; then
    UID_=${line%%:*}
    rest=${line#*:}
    PGID=${rest%%:*}
    rest=${rest#*:}
    HOMEDIR=${rest%:*}
    PWNAME=${rest##*:}
  else
    UID_=$U PGID=0 PWNAME=
  fi
  if [ -z "$G" ] && [ -n "$PWNAME" ] &&
    awk -F: -v u="$PWNAME" '{ n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) f = 1 }
      END { exit !f }' "$ROOT/etc/group" 2>/dev/null; then
    SUPP_USER=$PWNAME
  fi
  case "$G" in
    '') GID_=$PGID ;;
    *[!0-9]*)
      GID_=$(awk -F: -v g="$G" '$1 == g { print $3; exit }' "$ROOT/etc/group" 2>/dev/null)
      [ -n "$GID_" ] || { RU_ERR="group \"$G\" not found in the image's /etc/group"; return 1; }
      ;;
    *) GID_=$G ;;
  esac
  [ -n "$HOMEDIR" ] || HOMEDIR=/
  return 0
}
USPEC=$(cfg user)
[ -n "$USPEC" ] || USPEC=0:0
resolve_user "$USPEC" || fail 126 "$RU_ERR"

WD=$(cfg workdir)
[ -n "$WD" ] || WD=/
WDH=$(resolve_in_root "$WD")
if [ ! -d "$WDH" ]; then
  mkdir -p "$WDH" 2>/dev/null || fail 126 "working directory \"$WD\" does not exist"
fi

STOPSIG=$(cfg stopsignal)
[ -n "$STOPSIG" ] || STOPSIG=TERM

# Supplementary groups: busybox nsenter clears them, so a user that has some
# enters the root as root and runs the initrd's busybox start-stop-daemon
# (through /proc/1/root), which takes them from the root's /etc/group with
# initgroups, sets gid and uid, and execs the workload in place.
eval "set -- $(cfg argv)"
if [ -n "$SUPP_USER" ] && [ -x "$ROOT/proc/1/root/bin/busybox" ]; then
  prog=$1
  shift
  set -- nsenter -r"$ROOT" -w"$WDH" -F -- /proc/1/root/bin/busybox start-stop-daemon -S -q \
    -p /proc/ovms-no-such-pidfile -c "$SUPP_USER:$GID_" -x "$prog" -- "$@"
else
  set -- nsenter -r"$ROOT" -w"$WDH" -S "$UID_" -G "$GID_" -F -- "$@"
fi
# env -i clears the initrd's environment; HOME comes first so the config's own HOME wins.
eval "set -- env -i HOME=\"\$HOMEDIR\" HOSTNAME=\"\$HN\" $(cfg env) \"\$@\""

# Clones restored from a snapshot of this guest take their new identity here.
[ -r "$IDF" ] && identity_watch </dev/null >/dev/console 2>&1 &
child=
forward() {
  [ -n "$child" ] && kill "-$STOPSIG" "$child" 2>/dev/null
}
trap forward TERM INT
# ovms.stdin=port: the workload's stdin is the virtio-serial port "ovms.stdin",
# which the host feeds (the containerd shim: containerd's stdin FIFO); the
# host closing it is the workload's end of file. No such port: /dev/null.
WIN=
if [ "$P_STDIN" = port ]; then
  i=0
  while [ -z "$WIN" ] && [ $i -lt 30 ]; do
    for n in /sys/class/virtio-ports/*/name; do
      [ -r "$n" ] && [ "$(cat "$n")" = ovms.stdin ] && { d=${n%/name}; WIN=/dev/${d##*/}; }
    done
    [ -n "$WIN" ] && [ -c "$WIN" ] && break
    WIN=
    i=$((i + 1))
    sleep 0.1
  done
  [ -n "$WIN" ] || { log "warning: no ovms.stdin port; stdin is /dev/null"; WIN=/dev/null; }
fi
# ovms.stdio=tagged: every line the workload writes reaches the console as
# "@o|line" (stdout) or "@e|line" (stderr), so a host (the containerd shim)
# tells them apart from each other and from kernel and init messages.
tag_out= tag_err=
if [ "$P_STDIO" = tagged ]; then
  mkfifo /run/ovms/stdout /run/ovms/stderr || fail 125 "cannot create the stdio fifos"
  awk '{ printf "@o|%s\n", $0; fflush() }' </run/ovms/stdout &
  tag_out=$!
  awk '{ printf "@e|%s\n", $0; fflush() }' </run/ovms/stderr &
  tag_err=$!
  if [ -n "$WIN" ]; then
    "$@" <"$WIN" >/run/ovms/stdout 2>/run/ovms/stderr &
  else
    "$@" >/run/ovms/stdout 2>/run/ovms/stderr &
  fi
  child=$!
elif [ -n "$WIN" ]; then
  "$@" <"$WIN" &
  child=$!
else
  "$@" &
  child=$!
fi
# wait returns early when a trapped signal arrives; loop until the child is gone.
# Orphans re-parented to us are reaped by the shell's waitpid while it waits.
while :; do
  wait "$child"
  rc=$?
  kill -0 "$child" 2>/dev/null || break
done
trap - TERM INT
# Let the taggers drain what the workload wrote (a daemon it left holding the
# fifos must not keep the VM up: give up after 5 s).
if [ -n "$tag_out" ]; then
  i=0
  while [ $i -lt 50 ]; do
    s1=$(cut -d' ' -f3 "/proc/$tag_out/stat" 2>/dev/null)
    s2=$(cut -d' ' -f3 "/proc/$tag_err/stat" 2>/dev/null)
    [ "${s1:-Z}" = Z ] && [ "${s2:-Z}" = Z ] && break
    i=$((i + 1))
    sleep 0.1
  done
fi
finish "$rc"
