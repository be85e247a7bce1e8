#!/usr/bin/env bash
# The GPU paths of `dtn-bench train` and `dtn-bench robustness` that CI (CPU only) cannot run (issue 24): bf16 and
# fp16 autocast, channels_last, --set compile=true, the CUDA training step of 2-D DTN, a GPU robustness study, and
# DDP over NCCL where the machine has two GPUs. One short script for a lent GPU machine; a few minutes on one H100.
#
#   bash scripts/gpu_check.sh [OUT_DIR]          # the package installed (pip install -e .), from the repository root
#   DEVICE=cpu bash scripts/gpu_check.sh /tmp/x  # the same commands on the CPU, GPU-only settings left out (a dry run)
#
# Each check prints "ok NAME (seconds)" or "FAILED NAME" with the end of its log (OUT_DIR/NAME.log); the run folders
# are under OUT_DIR/runs. Exit status: the number of failed checks.
set -uo pipefail

out=${1:-${OUT:-gpu-check}}
device=${DEVICE:-cuda}
mkdir -p "$out"
failed=0

check() {  # check NAME COMMAND...
    local name=$1 start rc
    shift
    echo "== $name: $*"
    start=$(date +%s)
    "$@" >"$out/$name.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        echo "ok $name ($(($(date +%s) - start)) s)"
    else
        echo "FAILED $name (exit $rc); end of $out/$name.log:"
        tail -n 8 "$out/$name.log"
        failed=$((failed + 1))
    fi
}

if [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpus.txt"
    bf16="precision=bf16 channels_last=true"
    fp16="precision=fp16"
    compiled="precision=bf16 compile=true"
else
    bf16="precision=fp32"
    fp16="precision=fp32"
    compiled="precision=fp32"
fi
python -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.version.cuda)" \
    | tee "$out/versions.txt"

train=(dtn-bench train --recipe quick --device "$device" --out "$out/runs")
# shellcheck disable=SC2086  # the settings are words on purpose
check train-bf16-channels-last "${train[@]}" --model vit_cifar_t_dtn --run-id bf16 --set epochs=2 $bf16
# shellcheck disable=SC2086
check train-fp16-scaler "${train[@]}" --model vit_cifar_t_dtn --run-id fp16 --set epochs=2 $fp16
# shellcheck disable=SC2086
check train-compile "${train[@]}" --model vit_cifar_t_ln --norm dyt --run-id compiled --set epochs=2 $compiled
check resume-after-finish dtn-bench train --device "$device" --out "$out/runs" --resume bf16  # nothing left: a no-op
# shellcheck disable=SC2086
check robustness-study dtn-bench robustness --preset quick --device "$device" --norms layernorm,dtn,dyt,derf \
    --seeds 0,1 --out "$out/runs" --run-id study --set epochs=3 $bf16

gpus=$( [ "$device" = cuda ] && nvidia-smi -L | wc -l || echo 0)
if [ "$gpus" -ge 2 ]; then
    check ddp-nccl-2 torchrun --standalone --nproc_per_node 2 -m dtn_bench train --recipe quick --device cuda \
        --model vit_cifar_t_dtn --out "$out/runs" --run-id ddp --set epochs=2
else
    echo "skipped ddp-nccl-2: DDP over NCCL needs two GPUs, this machine has $gpus"
fi

echo "$failed check(s) failed"
exit "$failed"
