#!/usr/bin/env bash
# One tljax run on a Cloud TPU VM pod slice: the same command on every worker; JAX finds
# the other workers itself. The repo must be at the same path on all workers and the
# workdir on shared storage (e.g. a gs:// bucket path works for orbax and TFDS).
#
#   launch/tpu_pod.sh my-tpu us-central2-b --config=configs/flowers.py:vit-b16 --workdir=gs://bucket/run
set -euo pipefail
tpu="${1:?usage: launch/tpu_pod.sh TPU_NAME ZONE [tljax.main flags...]}"
zone="${2:?usage: launch/tpu_pod.sh TPU_NAME ZONE [tljax.main flags...]}"
shift 2
args=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all \
    --command="cd ~/tljax && python -m tljax.main${args}"
