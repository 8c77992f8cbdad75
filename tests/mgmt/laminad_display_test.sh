#!/usr/bin/env bash
# A managed VM's screen (issue 15): laminad opens the VNC socket a definition names and grants
# it to the sandboxed worker, whose VNC server serves it from inside the sandbox; GRUB's menu
# from a BIOS disk shows there (to a client with the password file's password), a key moves
# it, and `lamina vm screenshot` (GET
# /v1/vms/{name}/screenshot) returns a PNG equal to the frame the VNC client holds; the same
# screen comes through laminad's VNC relay (`lamina vm vnc`, GET /v1/vms/{name}/vnc).
#   laminad_display_test.sh LAMINA LAMINAD VNC_PROBE
set -euo pipefail
lamina=$1 laminad=$2 probe=$3
here=$(dirname "${BASH_SOURCE[0]}")
source "$here/laminad_lib.sh"
laminad_setup
start_laminad

bash "$here/../guest/make_bios_disk.sh" menu "$work/menu.raw" >/dev/null
# The VNC password file is granted to the worker like the socket.
echo "pw-$((RANDOM % 1000))" >"$work/vnc.pass"
"$lamina" vm create screen --memory 64M --rng none --disk "$work/menu.raw" \
  --display "vnc:unix:$work/vnc.sock,password-file=$work/vnc.pass" >/dev/null || fail "create"
"$lamina" vm start screen >/dev/null || fail "start"
for _ in $(seq 100); do [[ -S $work/vnc.sock ]] && break; sleep 0.1; done
"$probe" "$work/vnc.sock" --expect-refusal --password wrong || fail "a client with a wrong password was let in"
timeout 60 "$probe" "$work/vnc.sock" "$work/frame.rgb" --keys Down \
  --password "$(cat "$work/vnc.pass")" ||
  fail "the VNC client under laminad failed: $(tail -5 "$work/state/vms/screen/worker.log" 2>/dev/null)"
"$lamina" vm screenshot screen "$work/screen.png" || fail "screenshot"
python3 "$here/../guest/png_check.py" "$work/screen.png" --same-as "$work/frame.rgb" ||
  fail "the API's screenshot differs from the VNC client's frame"
# The same screen through laminad's relay (GET /v1/vms/screen/vnc as a WebSocket), which
# `lamina vm vnc` offers viewers on a socket of its own; the VNC password still applies.
"$lamina" vm vnc screen --listen "unix:$work/relay.sock" --once 2>"$work/relay.err" &
relay=$!
for _ in $(seq 100); do [[ -S $work/relay.sock ]] && break; sleep 0.1; done
[[ -S $work/relay.sock ]] || fail "lamina vm vnc did not listen: $(cat "$work/relay.err")"
timeout 60 "$probe" "$work/relay.sock" "$work/relayed.rgb" --password "$(cat "$work/vnc.pass")" ||
  fail "the VNC client through laminad's relay failed: $(cat "$work/relay.err")"
timeout 20 tail --pid=$relay -f /dev/null || fail "lamina vm vnc --once did not end with its session"
wait $relay || fail "lamina vm vnc failed: $(cat "$work/relay.err")"
python3 "$here/../guest/png_check.py" "$work/screen.png" --same-as "$work/relayed.rgb" ||
  fail "the relayed frame differs from the screenshot"
"$lamina" vm vnc nosuch --listen "unix:$work/none.sock" 2>"$work/out" && fail "a relay for no VM"
grep -q "nosuch" "$work/out" || fail "the refusal did not name the VM: $(cat "$work/out")"
"$lamina" vm stop screen --force >/dev/null 2>&1 || true
# A stopped VM has no screen to take.
"$lamina" vm screenshot screen "$work/none.png" 2>"$work/out" && fail "a stopped VM gave a screenshot"
grep -q "not running" "$work/out" || fail "the refusal did not say why: $(cat "$work/out")"
"$lamina" vm vnc screen --listen "unix:$work/none.sock" 2>"$work/out" && fail "a relay for a stopped VM"
grep -q "not running" "$work/out" || fail "the relay's refusal did not say why: $(cat "$work/out")"
echo PASS
