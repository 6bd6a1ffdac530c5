#!/bin/bash
# Multi-GPU training without SLURM: one node, all local GPUs, DDP launched by torchrun.
#
#   experiments/slurm/torchrun.sh experiments/tmt/gta5_to_cityscapes.yaml [extra CLI overrides...]
#   NPROC=2 RUN_DIR=runs/my-run experiments/slurm/torchrun.sh experiments/promptcam/cub.yaml
#
# Lightning detects the torchrun environment (TorchElasticEnvironment); devices must equal NPROC.
# To resume, run it again with the same RUN_DIR and `--ckpt_path last`. Nothing resumes by itself: a
# stage-2 run of the same config would otherwise silently continue stage 1 (the run dir is named
# after the config); a run dir that already holds a run is refused instead, with this advice.
# W&B: a new run gets a new W&B run; `--ckpt_path last` continues the W&B run whose checkpoint it
# resumes (the id is read from the checkpoint's folder), so deleting runs/ and starting again never
# appends to an old run of the same name.
set -euo pipefail
CONFIG=${1:?usage: torchrun.sh CONFIG.yaml [overrides...]}
shift
NPROC=${NPROC:-$(nvidia-smi -L 2>/dev/null | wc -l || true)}  # one process per GPU unless NPROC is set
if [ "${NPROC:-0}" -lt 1 ]; then
  echo "torchrun.sh: no GPU found (nvidia-smi -L lists none); set NPROC=<processes> (on CPU also pass --trainer.accelerator cpu)" >&2
  exit 2
fi
RUN_DIR=${RUN_DIR:-runs/$(basename "$(dirname "$CONFIG")")-$(basename "$CONFIG" .yaml)}  # runs/tmt-synthetic
export NO_ALBUMENTATIONS_UPDATE=1

.venv/bin/torchrun --standalone --nproc_per_node "$NPROC" -m tmtcam fit --config "$CONFIG" \
  --trainer.devices "$NPROC" --trainer.strategy ddp --trainer.default_root_dir "$RUN_DIR" "$@"
