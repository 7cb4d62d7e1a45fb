#!/usr/bin/env bash
# Runs one line of a sweep's commands.txt per SLURM array task.
#
#   tljax sweep --config=configs/flowers.py:bit-m-r50x1 \
#       --schedules=full,linear_probe,lp_ft:lp_steps=100 --seeds=3 --workdir=$SWEEP --emit=commands
#   sbatch --array=1-$(wc -l < $SWEEP/commands.txt) launch/slurm_array.sh $SWEEP/commands.txt
#   python -m tljax.cli.report $SWEEP        # when the array is done
#
# A benchmark suite emits one file per stage (docs/suites.md): commands_select.txt, then,
# once those runs are done and --emit=commands is run again, commands_final.txt.
# Re-submitting the array is safe: a run resumes from its checkpoints.
#SBATCH --job-name=tljax-sweep
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=08:00:00
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail
commands="${1:?usage: sbatch --array=1-N launch/slurm_array.sh COMMANDS_TXT}"
line=$(sed -n "${SLURM_ARRAY_TASK_ID}p" "$commands")
echo "task ${SLURM_ARRAY_TASK_ID}: $line"
eval "$line"
