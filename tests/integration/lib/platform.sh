# tests/integration/lib/platform.sh — helpers for tests that run a whole
# platform (`strata up`) in a temp state directory.
#
#   platform_pids DIR    every process whose command line or working directory
#                        names DIR (replicas run in STATE/pods/<replica>, the
#                        servers keep their data in STATE/data, the proxies
#                        name their cert dir): what `strata down` must end
#   platform_alive PID   running, and not a zombie (PID 1 here may not reap
#                        the control plane's orphans)

platform_pids() {
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = $$ ] && continue
    if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -q -- "$1" ||
       [[ $(readlink "$p/cwd" 2>/dev/null) == "$1"* ]]; then
      echo "${p#/proc/}"
    fi
  done
  return 0
}

platform_alive() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}
