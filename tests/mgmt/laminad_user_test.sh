#!/usr/bin/env bash
# laminad run by an ordinary user (nobody, through setpriv when the test runs as root): its
# workers start in a user namespace that maps their uid 0 to that user, and are sandboxed the
# same way (seccomp, no_new_privs, no capabilities, their own user namespace); a VM (an idle
# Multiboot kernel the test builds) starts, is listed and stops; a VM with on_crash=restart
# whose worker is killed is started again. Exits 77 (skipped) where unprivileged user
# namespaces are off.
#   laminad_user_test.sh BUILD_DIR KERNELS_SOURCE_DIR
set -euo pipefail
build=$1 kernels=$2
work=$(mktemp -d)
chmod 0755 "$work"
cleanup() { pkill -u nobody -f "$work/laminad" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; cat "$work/home/laminad.log" 2>/dev/null || true; exit 1; }

as_user() {
  if [[ $(id -u) -eq 0 ]]; then
    setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME="$work/home" "$@"
  else
    "$@"
  fi
}
if ! as_user unshare --user --map-root-user true 2>/dev/null; then
  echo "SKIP: unprivileged user namespaces are off here"
  exit 77
fi

# The user's own copies: the build folder may be where nobody cannot reach.
for program in laminad lamina-vm lamina; do install -m 0755 "$build/$program" "$work/"; done
printf '        .include "multiboot_header.inc"\n        .globl _start\n_start: cli\n1:      hlt\n        jmp 1b\n' >"$work/idle.S"
as --32 -I "$kernels" -o "$work/idle.o" "$work/idle.S"
ld -m elf_i386 -T "$kernels/link.ld" -o "$work/idle.elf" "$work/idle.o" 2>/dev/null
chmod 0644 "$work/idle.elf"
mkdir -m 0700 "$work/home"
[[ $(id -u) -eq 0 ]] && chown nobody:nogroup "$work/home"
export XDG_RUNTIME_DIR=$work/home/run XDG_STATE_HOME=$work/home/state
export LAMINA_CONNECT=unix:$work/home/run/lamina/laminad.sock
as_user mkdir -m 0700 "$XDG_RUNTIME_DIR"

as_user "$work/laminad" 2>"$work/home/laminad.log" &
for _ in $(seq 100); do [[ -S $work/home/run/lamina/laminad.sock ]] && break; sleep 0.1; done
grep -q "state in $work/home/state/lamina" "$work/home/laminad.log" || fail "default folders"
as_user "$work/lamina" vm create idle --memory 64M --rng none --kernel "$work/idle.elf" >/dev/null ||
  fail "create"
as_user "$work/lamina" vm start idle >/dev/null || fail "start"
pid=$(as_user "$work/lamina" vm --json show idle | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
status=/proc/$pid/status
user_uid=$(as_user id -u)
[[ $(awk '/^Uid:/ {print $2}' "$status") == "$user_uid" ]] || fail "the worker is not the user's"
grep -q "^Seccomp:[[:space:]]*2" "$status" || fail "no seccomp filter"
grep -q "^NoNewPrivs:[[:space:]]*1" "$status" || fail "no no_new_privs"
grep -q "^CapEff:[[:space:]]*0000000000000000" "$status" || fail "capabilities left"
for ns in user mnt net pid; do
  [[ $(readlink "/proc/$pid/ns/$ns") != $(readlink /proc/self/ns/$ns) ]] || fail "shares the $ns namespace"
done
as_user "$work/lamina" vm list | grep -q "^idle .*running" || fail "not listed as running"
as_user "$work/lamina" vm stop idle --force | grep -q "stopped idle" || fail "stop"

# on_crash=restart: a worker that dies is replaced, and the log says both.
as_user "$work/lamina" vm create phoenix --on-crash restart --memory 64M --rng none \
  --kernel "$work/idle.elf" >/dev/null || fail "create phoenix"
as_user "$work/lamina" vm start phoenix >/dev/null || fail "start phoenix"
first=$(as_user "$work/lamina" vm --json show phoenix | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
kill -9 "$first"
second=0
for _ in $(seq 50); do
  second=$(as_user "$work/lamina" vm --json show phoenix | python3 -c 'import json,sys; print(json.load(sys.stdin).get("pid", 0))')
  [[ $second != 0 && $second != "$first" ]] && break
  sleep 0.2
done
[[ $second != 0 && $second != "$first" ]] || fail "phoenix was not restarted"
as_user "$work/lamina" vm events phoenix | awk '{print $3}' | tr '\n' ' ' | grep -q "started crashed started" ||
  fail "events: $(as_user "$work/lamina" vm events phoenix)"
as_user "$work/lamina" vm stop phoenix --force >/dev/null || fail "stop phoenix"
echo PASS
