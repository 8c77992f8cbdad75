#!/usr/bin/env bash
# Drives the lamina binary from the outside: help, version, and the honest answer of commands
# that are reserved but not built yet.
set -u
lamina=$1
failures=0

check() {  # check DESCRIPTION EXPECTED_STATUS PATTERN -- COMMAND...
  local what=$1 want_status=$2 pattern=$3
  shift 4
  local output status
  output=$("$@" 2>&1)
  status=$?
  if [[ $status -ne $want_status ]]; then
    echo "FAIL: $what: exit $status, expected $want_status"; echo "$output"; failures=$((failures + 1))
  elif ! grep -qE -- "$pattern" <<<"$output"; then
    echo "FAIL: $what: output lacks /$pattern/"; echo "$output"; failures=$((failures + 1))
  else
    echo "ok: $what"
  fi
}

check "--help lists the commands" 0 'run.*disk.*vm|run' -- "$lamina" --help
check "--help names run" 0 '^  run ' -- "$lamina" --help
check "--help names disk" 0 '^  disk ' -- "$lamina" --help
check "--help names vm" 0 '^  vm ' -- "$lamina" --help
check "no arguments shows help" 0 'Usage' -- "$lamina"
check "--version" 0 '^lamina [0-9]+\.[0-9]+\.[0-9]+$' -- "$lamina" --version
check "unknown command is a usage error" 109 'unknown-thing' -- "$lamina" unknown-thing
check "run --help explains" 0 'serial port' -- "$lamina" run --help
check "vm is not built yet" 3 'not built yet' -- "$lamina" vm list

exit $((failures > 0))
