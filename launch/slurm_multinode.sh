#!/usr/bin/env bash
# One tljax run over several GPU nodes: one process per GPU, JAX finds the cluster from
# SLURM's environment (jax.distributed.initialize auto-detection), so no flags are needed.
#
#   sbatch --nodes=2 launch/slurm_multinode.sh --config=configs/cifar100.py:vit-b16 --workdir=/shared/run
#
# The workdir must be on a filesystem every node sees (checkpoints are written jointly).
#SBATCH --job-name=tljax
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=12
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%j.out
set -euo pipefail
srun python -m tljax.main "$@"
