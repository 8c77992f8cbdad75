#!/usr/bin/env bash
# Drives the lamina binary from the outside: help, version, usage errors, and the honest answer
# of commands that are reserved but not built yet.
set -u
lamina=$1
source "$(dirname "${BASH_SOURCE[0]}")/../lib/check.sh"

check "--help lists the commands" 0 'run.*disk.*vm|run' -- "$lamina" --help
check "--help names run" 0 '^  run ' -- "$lamina" --help
check "--help names disk" 0 '^  disk ' -- "$lamina" --help
check "--help names vm" 0 '^  vm ' -- "$lamina" --help
check "no arguments shows help" 0 'Usage' -- "$lamina"
check "--version" 0 '^lamina [0-9]+\.[0-9]+\.[0-9]+$' -- "$lamina" --version
check "unknown command is a usage error" 2 'unknown-thing' -- "$lamina" unknown-thing
check "run --help explains" 0 'serial port' -- "$lamina" run --help
check "vm without laminad says how to start it" 1 'cannot reach laminad at /nonexistent/l.sock.*start it' -- \
  "$lamina" vm --connect unix:/nonexistent/l.sock list
check "vm --connect with a bad scheme is refused" 1 'use unix:PATH' -- "$lamina" vm --connect ftp://x list
check "vm console without laminad says so" 1 'cannot reach laminad' -- \
  "$lamina" vm --connect unix:/nonexistent/l.sock console x
check "vm console --send without laminad says so" 1 'cannot reach laminad' -- \
  "$lamina" vm --connect unix:/nonexistent/l.sock console x --send hello
check "vm console --send with --read-only is a usage error" 2 'excludes|Excludes' -- \
  "$lamina" vm console x --send hello --read-only
check "vm import of a missing file" 1 'cannot read it' -- \
  "$lamina" vm --connect unix:/nonexistent/l.sock import /nonexistent/x.vmx
check "vm without a verb is a usage error" 2 'subcommand' -- "$lamina" vm

# lamina run: every bad option is reported before anything starts, naming the option.
check "run --cpus 0" 2 '^lamina run: --cpus: 0 is outside 1-64$' -- "$lamina" run --cpus 0
check "run --cpus 65" 2 '--cpus: 65' -- "$lamina" run --cpus 65
check "run --memory bad" 2 '--memory: invalid size' -- "$lamina" run --memory 12Q
check "run --memory tiny" 2 '--memory: 1M is outside' -- "$lamina" run --memory 1M
check "run --memory not MiB" 2 'not a whole number of MiB' -- "$lamina" run --memory 20000000
check "run --kernel missing" 2 "--kernel: '/nonexistent/vmlinuz' is not a file" -- \
  "$lamina" run --kernel /nonexistent/vmlinuz
check "run --initrd without --kernel" 2 '--initrd needs --kernel' -- "$lamina" run --initrd "$0"
check "run --serial bad" 2 "--serial: 'tty' is not one of" -- "$lamina" run --serial tty
check "run --accel bad" 2 "--accel: 'xen' is not one of emu, kvm, auto" -- "$lamina" run --accel xen
check "run --on-reboot bad" 2 "--on-reboot: 'maybe'" -- "$lamina" run --on-reboot maybe
check "run with a file that is no kernel says why" 1 '^lamina run: .*no "HdrS" setup header' -- \
  "$lamina" run --kernel "$0" --cpus 4 --memory 1G
check "run --accel kvm without KVM is not available" 3 '^lamina run: --accel kvm: .*does not exist' -- \
  env LAMINA_KVM_DEVICE=/nonexistent/kvm "$lamina" run --kernel "$0" --accel kvm
check "run --accel auto without KVM falls back to emu" 1 'no "HdrS" setup header' -- \
  env LAMINA_KVM_DEVICE=/nonexistent/kvm "$lamina" run --kernel "$0" --accel auto
check "run without a default guest says how to make it" 2 'scripts/make-guest' -- \
  env LAMINA_CACHE=/nonexistent "$lamina" run

exit $((failures > 0))
