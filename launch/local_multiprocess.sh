#!/usr/bin/env bash
# Runs one tljax job as N processes on this machine (CPU, gloo collectives) — the
# multi-host code path without a cluster, e.g. to test a change before a pod run.
#
#   launch/local_multiprocess.sh 2 --config=configs/digits.py --workdir=/tmp/mp
#
# Each process gets DEVICES_PER_PROCESS forced CPU devices (default 2).
set -euo pipefail
n="${1:?usage: launch/local_multiprocess.sh NUM_PROCESSES [tljax.main flags...]}"
shift
port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-2}"
pids=()
for ((i = 0; i < n; i++)); do
  python -m tljax.main "$@" --coordinator_address="127.0.0.1:${port}" --num_processes="$n" \
      --process_id="$i" --cpu_collectives=gloo &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit "$status"
