#!/usr/bin/env bash
# Stop the daemons started by slurm-start.sh (by pid file only). Idempotent.
# SLURM_LOCAL_HOME as in slurm-start.sh. STOP_MUNGE=0 keeps munged running.
# WIPE=1 also deletes the state dir (job ids restart at 1, queue emptied).
set -uo pipefail
S=${SLURM_LOCAL_HOME:-/tmp/shardflow-slurm}
log() { echo "[stop-slurm $(date +%T)] $*" >&2; }
stop() { # pidfile comm
  local f=$1 c=$2 p
  [[ -f $f ]] || { log "$c: no pid file"; return 0; }
  p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null && grep -q "$c" "/proc/$p/comm" 2>/dev/null; then
    kill "$p"
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && { log "$c: SIGKILL $p"; kill -9 "$p"; }
    log "$c ($p) stopped"
  else
    log "$c: not running"
  fi
  rm -f "$f"
}
# Cancel all jobs first (KEEP_JOBS=1 skips): slurmstepd/job processes outlive a stopped slurmd.
if [[ ${KEEP_JOBS:-0} != 1 && -f $S/run/slurmctld.pid ]] && kill -0 "$(cat "$S/run/slurmctld.pid")" 2>/dev/null; then
  export SLURM_CONF=$S/etc/slurm.conf
  if [[ -n $(squeue -h 2>/dev/null) ]]; then
    scancel --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 100); do [[ -z $(squeue -h -t R,CG 2>/dev/null) ]] && break; sleep 0.1; done
    log "cancelled jobs"
  fi
fi
stop "$S/run/slurmd.pid" slurmd
stop "$S/run/slurmctld.pid" slurmctld
stop "$S/run/slurmdbd.pid" slurmdbd
stop "$S/run/mysqld.pid" mariadbd
[[ ${STOP_MUNGE:-1} == 1 ]] && stop /run/munge/munged.pid munged
if [[ ${WIPE:-0} == 1 ]]; then rm -rf "$S"; log "wiped $S"; fi
exit 0
