# Shared by the shell-driven CLI tests (source it): runs a command and checks its exit status
# and output, counting failures in $failures.
#   check DESCRIPTION EXPECTED_STATUS PATTERN -- COMMAND...
failures=0
check() {
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
