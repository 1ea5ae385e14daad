#!/bin/sh
# The training image's entry point: `wit-builder ARGS` in one process, or one process per GPU
# under torchrun when NPROC > 1 (train reads torchrun's RANK/WORLD_SIZE and runs DDP).
set -e
if [ "${NPROC:-1}" -gt 1 ]; then
  exec torchrun --standalone --nproc-per-node "${NPROC}" -m wit_builder.cli "$@"
fi
exec wit-builder "$@"
