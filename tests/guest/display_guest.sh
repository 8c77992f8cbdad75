#!/usr/bin/env bash
# The screen (issue 15): the standard VGA adapter with SeaBIOS's VGA BIOS, screenshots, the text
# dump and the VNC server.
#   display_guest.sh --lamina PATH --scenario S
#   banner: SeaBIOS alone (no disk) draws its banner in VGA text mode; at the reset that ends the
#           run, --screen-text-on-exit has it as text and --screenshot-on-exit is a valid PNG of
#           the 720x400 text screen with more than one colour;
#   vnc:    a GRUB 2 disk (make_bios_disk.sh menu) shows its menu on the screen; clients without
#           the password or with a wrong one are refused; a VNC client (vnc_probe, on
#           libvncclient, over a Unix socket, with the password) sees it, presses Down (the
#           highlight moves)
#           and Return on the reboot entry; its last frame equals the exit screenshot, and the
#           text dump holds GRUB's last words.
#   vbe:    the same menu in GRUB's gfxterm, 800x600 in 32 bits through the VGA BIOS's VBE (the
#           DISPI registers and the linear framebuffer): the client waits for that mode, the key
#           moves the menu, and its last frame equals the 800x600 exit screenshot.
#   bochs_drm: the default guest (--guest DIR, direct kernel boot) with --vga std loads Linux's
#           bochs-drm (display-modules.cpio.gz from scripts/make-guest, appended to its
#           initramfs): it finds the adapter, sets 1024x768 in 32 bits through DISPI and its
#           framebuffer console comes up; the guest clears it and writes ten cells with a red
#           background at its top left, which the exit screenshot holds there (and black below).
#           (A write() to /dev/fb0 at 1024x768 without EDID does not reach the screen on QEMU
#           either, so the test draws through the console.)
#   tablet: the same guest with a VNC display, so it has Lamina's virtio tablet: virtio_input
#           binds it as "Lamina tablet"; once the guest reads its event device, vnc_probe
#           moves the pointer to (300, 200) on the 1024x768 screen and clicks: the guest
#           reads ABS_X/ABS_Y scaled to 0..32767 and BTN_LEFT down and up, each report ended
#           by SYN_REPORT.
set -euo pipefail
lamina="" scenario="" probe="" guest=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --lamina) lamina=$2; shift 2 ;;
    --scenario) scenario=$2; shift 2 ;;
    --vnc-probe) probe=$2; shift 2 ;;
    --guest) guest=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x $lamina ]] || { echo "--lamina PATH is needed"; exit 2; }
[[ $scenario == banner || $scenario == bochs_drm || -x $probe ]] || { echo "--vnc-probe PATH is needed"; exit 2; }
here=$(dirname "$0")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log=$work/console.log
fail() { echo "FAIL: $*"; echo "---- screen ----"; cat "$work/screen.txt" 2>/dev/null || true
         echo "---- log ----"; tail -c 2000 "$log" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g'; exit 1; }

# The default guest's initramfs with the display modules appended (the kernel unpacks
# concatenated archives).
display_initrd() {
  [[ -f $guest/vmlinuz && -f $guest/initrd.img ]] || { echo "no default guest in '$guest'"; exit 1; }
  [[ -f $guest/display-modules.cpio.gz ]] ||
    { echo "SKIP: the default guest has no display modules (rebuild it: scripts/make-guest)"; exit 77; }
  cat "$guest/initrd.img" "$guest/display-modules.cpio.gz" >"$work/initrd.img"
}

case $scenario in
  banner)
    status=0
    timeout 120 "$lamina" run --firmware bios --memory 64M --rng none \
      --screenshot-on-exit "$work/screen.png" --screen-text-on-exit "$work/screen.txt" \
      </dev/null >"$log" 2>&1 || status=$?
    [[ $status -eq 1 ]] || fail "the run did not end at the reset (status $status)"
    grep -q "^SeaBIOS (version" "$work/screen.txt" || fail "no SeaBIOS banner on the VGA text screen"
    grep -q "No bootable device" "$work/screen.txt" || fail "SeaBIOS's last words are not on the screen"
    read -r width height colours < <(python3 "$here/png_check.py" "$work/screen.png") ||
      fail "the screenshot is not a valid PNG"
    [[ $width -eq 720 && $height -eq 400 ]] || fail "screenshot is ${width}x${height}, not 720x400"
    ((colours > 1)) || fail "the screenshot is one colour"
    ;;
  vnc|vbe)
    if [[ $scenario == vnc ]]; then
      disk_kind=menu size=720x400
    else
      disk_kind=gfxmenu size=800x600
    fi
    bash "$here/make_bios_disk.sh" $disk_kind "$work/disk.raw" >/dev/null
    # The text-mode run asks for a password (VNC Authentication); the VBE one for none.
    display="vnc:unix:$work/vnc.sock" password_option=()
    if [[ $scenario == vnc ]]; then
      echo "pw$RANDOM" >"$work/vnc.pass"
      display+=",password-file=$work/vnc.pass"
      password_option=(--password "$(cat "$work/vnc.pass")")
    fi
    status=0
    timeout 120 "$lamina" run --memory 64M --rng none --disk "$work/disk.raw" \
      --display "$display" --screenshot-on-exit "$work/screen.png" \
      --screen-text-on-exit "$work/screen.txt" </dev/null >"$log" 2>&1 &
    vm=$!
    if [[ $scenario == vnc ]]; then
      # The socket appears once the VM has set its screen up.
      for _ in $(seq 100); do [[ -S $work/vnc.sock ]] && break; sleep 0.1; done
      "$probe" "$work/vnc.sock" --expect-refusal ||
        fail "a client without the password was let in"
      "$probe" "$work/vnc.sock" --expect-refusal --password wrong ||
        fail "a client with a wrong password was let in"
    fi
    if [[ $scenario == vnc ]]; then
      # SeaBIOS mirrors GRUB's text menu to the serial port: once it is there, keys reach the menu.
      for _ in $(seq 120); do grep -aq "Lamina menu: reboot" "$log" && break; sleep 0.5; done
    fi
    client=0
    timeout 100 "$probe" "$work/vnc.sock" "$work/last.rgb" --keys Down \
      --size $size --last-keys Return --wait-close "${password_option[@]}" || client=$?
    wait $vm || status=$?
    ((client == 0)) || fail "the VNC client failed (status $client)"
    [[ $status -eq 1 ]] && grep -aq "the guest rebooted" "$log" ||
      fail "the reboot entry did not end the run (status $status)"
    if [[ $scenario == vnc ]]; then
      grep -q "GRUB: rebooting now" "$work/screen.txt" || fail "GRUB's last line is not on the screen"
    fi
    read -r width height colours < <(python3 "$here/png_check.py" "$work/screen.png" \
      --same-as "$work/last.rgb") || fail "the VNC client's last frame is not the exit screenshot"
    [[ ${width}x$height == "$size" ]] || fail "the exit screenshot is ${width}x$height, not $size"
    ((colours > 1)) || fail "the exit screenshot is one colour"
    ;;
  bochs_drm)
    display_initrd
    # Ten character cells with a red background at the top left of the framebuffer console.
    command="for m in \$(cat /etc/modules.display); do insmod /lib/modules/\$m.ko || exit 10; done
i=0; while [ ! -e /dev/fb0 ]; do sleep 1; i=\$((i+1)); [ \$i -lt 60 ] || exit 11; done
echo fb: \$(cat /proc/fb) \$(cat /sys/class/graphics/fb0/virtual_size) \$(cat /sys/class/graphics/fb0/stride)
printf '\\033[H\\033[2J\\033[41m          \\033[0m' >/dev/tty1 || exit 12
sleep 1
echo block-written"
    status=0
    timeout 240 "$lamina" run --memory 256M --rng none --vga std --kernel "$guest/vmlinuz" \
      --initrd "$work/initrd.img" --screenshot-on-exit "$work/screen.png" \
      --cmdline "console=ttyS0 quiet no_timer_check panic=-1 lamina_run=\"$command\"" \
      </dev/null >"$log" 2>&1 || status=$?
    [[ $status -eq 0 ]] || fail "the guest did not power off cleanly (status $status)"
    grep -aq "LAMINA-EXIT-STATUS: 0" "$log" || fail "the guest's command failed"
    grep -aq "fb: 0 bochs-drmdrmfb 1024,768 4096" "$log" ||
      fail "bochs-drm did not bring up a 1024x768x32 framebuffer"
    ! grep -aq "unknown DISPI" "$log" || fail "bochs-drm used a DISPI register the adapter lacks"
    read -r width height _ block < <(python3 "$here/png_check.py" "$work/screen.png" --pixel 40,8) ||
      fail "the screenshot is not a valid PNG"
    [[ ${width}x$height == 1024x768 ]] || fail "the exit screenshot is ${width}x$height, not 1024x768"
    # fbcon's red is the VGA palette's (0xaa0000); the 8x16 cells span x 0-79, y 0-15.
    [[ $block == aa0000 ]] || fail "the red cells the guest wrote are not on the screen (pixel $block)"
    read -r _ _ _ below < <(python3 "$here/png_check.py" "$work/screen.png" --pixel 40,200)
    [[ $below == 000000 ]] || fail "the screen below the cells is not black (pixel $below)"
    ;;
  tablet)
    display_initrd
    zcat "$guest/display-modules.cpio.gz" | cpio -t 2>/dev/null | grep -q virtio_input.ko ||
      { echo "SKIP: the default guest has no virtio_input (rebuild it: scripts/make-guest)"; exit 77; }
    # Seven events of 24 bytes (struct input_event on x86-64: time, type, code, value) as
    # unsigned 16-bit words: type is word 9, code word 10, the value words 11 and 12. (No
    # double quotes in the command: the kernel's command line quotes it with them.)
    command="for m in \$(cat /etc/modules.display); do insmod /lib/modules/\$m.ko || exit 10; done
i=0; while [ ! -e /dev/fb0 ]; do sleep 1; i=\$((i+1)); [ \$i -lt 60 ] || exit 11; done
event=\$(awk '/^N: Name=.Lamina tablet./ {found=1} found && /^H: Handlers=/ {for (f = 1; f <= NF; f++) if (\$f ~ /^event/) print \$f; exit}' /proc/bus/input/devices)
case \$event in event*) ;; *) cat /proc/bus/input/devices; exit 12 ;; esac
dd if=/dev/input/\$event bs=24 count=7 of=/tmp/events 2>/dev/null &
sleep 1
echo tablet-ready \$event
wait
od -An -v -tu2 -w24 /tmp/events | while read -r _ _ _ _ _ _ _ _ type code low high; do echo ev \$type \$code \$((low + high * 65536)); done"
    "$lamina" run --memory 256M --rng none --kernel "$guest/vmlinuz" --initrd "$work/initrd.img" \
      --display "vnc:unix:$work/vnc.sock" \
      --cmdline "console=ttyS0 quiet no_timer_check panic=-1 lamina_run=\"$command\"" \
      </dev/null >"$log" 2>&1 &
    vm=$!
    for _ in $(seq 240); do grep -aqs "tablet-ready" "$log" && break; kill -0 $vm 2>/dev/null || break; sleep 0.5; done
    grep -aq "tablet-ready" "$log" || { kill $vm 2>/dev/null || true; fail "the guest found no tablet"; }
    probe_status=0
    timeout 90 "$probe" "$work/vnc.sock" --pointer 300,200 --size 1024x768 >"$work/probe.out" 2>&1 || probe_status=$?
    ((probe_status == 0)) ||
      { kill $vm 2>/dev/null || true; fail "the VNC client could not send the pointer ($probe_status: $(cat "$work/probe.out"))"; }
    status=0
    timeout 60 tail --pid=$vm -f /dev/null || { kill $vm 2>/dev/null || true; status=124; }
    wait $vm || status=$?
    [[ $status -eq 0 ]] && grep -aq "LAMINA-EXIT-STATUS: 0" "$log" ||
      fail "the guest did not read its events (status $status)"
    # (300, 200) on 1024x768 is 300 * 32767 / 1023 and 200 * 32767 / 767 on the tablet's axes.
    events=$(grep -a "^ev " "$log" | tr -d '\r' | tr '\n' ';')
    expected="ev 3 0 9609;ev 3 1 8544;ev 0 0 0;ev 1 272 1;ev 0 0 0;ev 1 272 0;ev 0 0 0;"
    [[ $events == "$expected" ]] || fail "the guest read '$events', not '$expected'"
    ;;
  *) echo "unknown scenario '$scenario'" >&2; exit 2 ;;
esac
echo PASS
