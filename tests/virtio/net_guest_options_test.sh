#!/usr/bin/env bash
# `lamina run --net` option errors: reported before anything starts with exit status 2,
# naming the --net value (the guest side is net_guest_test.py).
#   net_guest_options_test.sh LAMINA
set -uo pipefail
lamina=$1
source "$(dirname "$0")/../lib/check.sh"

check "run --help names --net" 0 '--net TEXT' -- "$lamina" run --help
check "run --net unknown backend" 2 "^lamina run: --net ethernet:x: 'ethernet' is not a network backend" -- \
  "$lamina" run --net ethernet:x
check "run --net tap without a name" 2 "^lamina run: --net tap:: '' is not an interface name" -- \
  "$lamina" run --net tap:
check "run --net group MAC" 2 "mac=01:00:5e:00:00:01: a network card needs a unicast address" -- \
  "$lamina" run --net switch:lab,mac=01:00:5e:00:00:01
check "run --net unknown setting" 2 "'speed=10' is not a network setting" -- \
  "$lamina" run --net switch:lab,speed=10
check "run --net bad mac-spoofing" 2 "'mac-spoofing=maybe': mac-spoofing is on or off" -- \
  "$lamina" run --net switch:lab,mac-spoofing=maybe
check "run --net mac-spoofing on a tap" 2 'mac-spoofing= applies to switch: networks' -- \
  "$lamina" run --net tap:lam9,mac-spoofing=on
check "run --net one MAC twice" 2 'have the same MAC address 52:54:00:12:34:56' -- \
  "$lamina" run --net switch:a,mac=52:54:00:12:34:56 --net switch:b,mac=52:54:00:12:34:56
check "run --net one tap twice" 2 'tap:lam9 is given twice' -- \
  "$lamina" run --net tap:lam9 --net tap:lam9
exit $((failures > 0))
