# SPDX-License-Identifier: GPL-3.0-or-later
# shellcheck shell=bash
# Sourced by the GPU scripts that report a process's peak GPU memory.
# peak_of PID: the peak memory.used (MiB) of process PID while it runs, sampled with nvidia-smi every
# 0.1 s (its CUDA context included); prints it once the process has ended.
peak_of() {
  local pid=$1 peak=0 m
  while kill -0 "$pid" 2>/dev/null; do
    m=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null \
        | awk -F', ' -v p="$pid" '$1 == p {print $2}')
    [ -n "$m" ] && [ "$m" -gt "$peak" ] && peak=$m
    sleep 0.1
  done
  echo "$peak"
}
