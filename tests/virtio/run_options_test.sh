#!/usr/bin/env bash
# `lamina run`'s virtio options: bad values are reported before anything starts, naming the
# option; host ends that cannot be opened stop the run with one line.
#   run_options_test.sh LAMINA
set -uo pipefail
lamina=$1
source "$(dirname "$0")/../lib/check.sh"
folder=$(mktemp -d)
trap 'rm -rf "$folder"' EXIT

check "run --help names --rng" 0 '--rng TEXT=host' -- "$lamina" run --help
check "run --help names --console-port" 0 '--console-port TEXT=none' -- "$lamina" run --help
check "run --rng bad" 2 "^lamina run: --rng: 'maybe' is not one of host, none$" -- \
  "$lamina" run --rng maybe
check "run --console-port bad" 2 "--console-port: 'tcp:80' is not one of" -- \
  "$lamina" run --console-port tcp:80
check "run --console-port socket: without a path" 2 "--console-port: 'socket:'" -- \
  "$lamina" run --console-port socket:
check "run --console-port stdio with --serial stdio" 2 'already belong to --serial stdio' -- \
  "$lamina" run --console-port stdio
check "run --console-port in a missing folder" 2 "--console-port: folder '/nonexistent' does not" -- \
  "$lamina" run --console-port file:/nonexistent/out.txt
touch "$folder/not-a-socket"
check "run --console-port socket over a regular file" 1 'exists and is not a socket' -- \
  "$lamina" run --kernel "$0" --serial none --console-port "socket:$folder/not-a-socket"
[[ -f $folder/not-a-socket ]] || { echo "FAIL: the regular file was removed"; failures=$((failures + 1)); }
echo keep >"$folder/precious"
ln -s "$folder/precious" "$folder/link.log"
check "run --console-port file: through a symlink" 1 "is a symbolic link; lamina does not follow" -- \
  "$lamina" run --kernel "$0" --serial none --console-port "file:$folder/link.log"
check "run --serial file: through a symlink" 1 "^lamina run: --serial: '$folder/link.log' is a symbolic link" -- \
  "$lamina" run --kernel "$0" --serial "file:$folder/link.log"
[[ $(cat "$folder/precious") == keep ]] || { echo "FAIL: the link's target was written"; failures=$((failures + 1)); }
check "run --disk with a comma written ,," 2 "^lamina run: --disk $folder/a,b.raw: no such file" -- \
  "$lamina" run --disk "$folder/a,,b.raw"
check "run --disk takes one image per occurrence" 2 'not expected: b' -- \
  "$lamina" run --disk a b
# --firmware (issue 15): values, combinations and images are checked before anything boots.
check "run --help names --firmware" 0 '--firmware' -- "$lamina" run --help
check "run --firmware bad" 2 "^lamina run: --firmware: 'uefi' is not none, bios or bios:FILE$" -- \
  "$lamina" run --firmware uefi
check "run --firmware bios with --kernel" 2 'belong to a direct kernel boot' -- \
  "$lamina" run --firmware bios --kernel "$0"
check "run --firmware bios on KVM" 2 'built-in CPU only' -- \
  "$lamina" run --firmware bios --accel kvm
check "run --firmware bios:FILE missing" 2 "^lamina run: --firmware: .*none.bin. is not a file" -- \
  "$lamina" run --firmware "bios:$folder/none.bin"
check "run --firmware bios:FILE that is no BIOS" 1 'is not a BIOS image' -- \
  "$lamina" run --serial none --firmware "bios:$0"
exit $((failures > 0))
