#!/usr/bin/env bash
# Issue 33's measurements in one GPU session, ended before a deadline, one short table printed last.
#
#   bench/gpu_session.sh [--dry-run] [--minutes 12] [--data DIR] [--gguf FILE | --gguf-parts 'part00 part01']
#                        [--gguf-wheels DIR] [--peak-tflops 989] [--logs DIR]
#
# Steps, each with its own timeout and log under --logs (default $OUT/gpu-session where $OUT is set, else
# runs/gpu-session):
#   env     python3, torch, CUDA, transformers, peft, the GPU
#   model   the converted SmolLM2-135M in weights/ (built from --gguf or --gguf-parts when missing; gguf comes from
#           --gguf-wheels when not installed; docs/performance.md#one-gpu-session)
#   bench   `python3 -m bench.gpu`: ours against HF + PEFT, Llama-3.2-1B and SmolLM2-135M shapes, 2k/8k/32k tokens
#           per step; its syncs/step column is the sync check (`torch.cuda.set_sync_debug_mode`)
#   train   `python3 -m train` with the default recipe on CoNLL-2003, timed (conversion excluded)
#   eval    `python3 -m bench.eval_batches` on the trained run: tagging speed at 2k to 32k padded tokens a pass, to
#           check the GPU's tagging budget (predictor.device.TAGGING_TOKENS)
#   compiled  `python3 -m bench.gpu --systems ours,ours-compiled` at 8k tokens per step: what compiling the blocks
#           (train/build.compile_blocks) buys on the GPU, and its launches per step against eager's
# --dry-run runs the same steps on this machine's CPU at tiny sizes (the tiny shape, 256-token steps, a few training
# steps on the first sentences of --data) to catch plumbing mistakes before a GPU's time is spent.
set -u -o pipefail
cd "$(dirname "$0")/.."

DRY=0 MINUTES=12 DATA=${CONLL_DIR:-../shared/data/conll2003} GGUF= PARTS= WHEELS= PEAK= LOGS=
while (($#)); do
    case $1 in
        --dry-run) DRY=1 ;;
        --minutes) MINUTES=$2; shift ;;
        --data) DATA=$2; shift ;;
        --gguf) GGUF=$2; shift ;;
        --gguf-parts) PARTS=$2; shift ;;
        --gguf-wheels) WHEELS=$2; shift ;;
        --peak-tflops) PEAK=$2; shift ;;
        --logs) LOGS=$2; shift ;;
        *) echo "gpu_session.sh: unknown argument $1 (see the comment at the top)" >&2; exit 2 ;;
    esac
    shift
done
LOGS=${LOGS:-${OUT:+$OUT/gpu-session}}
LOGS=${LOGS:-runs/gpu-session}
mkdir -p "$LOGS"
[[ -f $DATA/train.txt && -f $DATA/valid.txt ]] || { echo "--data $DATA: no train.txt and valid.txt there" >&2; exit 2; }
DEADLINE=$(($(date +%s) + MINUTES * 60))
SUMMARY=()

# run NAME LIMIT_S COMMAND...: the command (or a function of this script) under `timeout`, never past the
# deadline, output in $LOGS/NAME.log; then a row of the summary: RESULT (an expression over the log) when it
# succeeded, else its exit code and the log's last line.
run() {
    local name=$1 limit=$2 result=$3 left start rc
    shift 3
    left=$((DEADLINE - $(date +%s) - 10))
    ((left < limit)) && limit=$left
    if ((limit < 20)); then
        SUMMARY+=("| $name | skipped: the deadline was near | - |")
        return
    fi
    start=$(date +%s)
    timeout --kill-after=10 "$limit" bash -c '"$@"' _ "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    if ((rc == 0)); then
        SUMMARY+=("| $name | $(eval "$result") | $(($(date +%s) - start)) s |")
    else
        local why="exit $rc"
        ((rc == 124)) && why="timed out after $limit s"
        SUMMARY+=("| $name | $why: $(tail -n1 "$LOGS/$name.log") | $(($(date +%s) - start)) s |")
    fi
    echo "$name: exit $rc (log $LOGS/$name.log)" >&2
}

env_check() {
    python3 -c "import torch, transformers, peft
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
print('transformers', transformers.__version__, 'peft', peft.__version__)
print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
    command -v nvidia-smi >/dev/null && nvidia-smi
    return 0
}

model() {
    [[ -f weights/smollm2-135m-instruct/model.safetensors ]] && { echo "already converted"; return 0; }
    local gguf=$GGUF
    if [[ -z $gguf && -n $PARTS ]]; then
        gguf=$LOGS/smollm2.gguf
        cat $PARTS >"$gguf" || return 1
    fi
    [[ -n $gguf ]] || { echo "no converted model, and neither --gguf nor --gguf-parts"; return 1; }
    sha256sum "$gguf"
    if ! python3 -c "import gguf" 2>/dev/null; then
        [[ -n $WHEELS ]] || { echo "gguf is not installed and no --gguf-wheels"; return 1; }
        python3 -m pip install --no-index --no-deps --target "$LOGS/site" "$WHEELS"/*.whl || return 1
        export PYTHONPATH=$PWD/$LOGS/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    python3 -m weights.convert_gguf --gguf "$gguf"
}

# The first sentences of train.txt and valid.txt (whole documents' worth of lines, cut at a blank line): the dry
# run's data, in the logs folder this script made.
head_of_data() {
    mkdir -p "$LOGS/data"
    for split in train valid; do
        awk -v n="$1" 'NR > n && /^$/ { exit } { print }' "$DATA/$split.txt" >"$LOGS/data/$split.txt"
    done
}

if ((DRY)); then
    BENCH=(python3 -m bench.gpu --device cpu --budgets 256 --steps 2 --warmup 1)
    EVAL=(python3 -m bench.eval_batches --run "$LOGS/train-run" --data "$LOGS/data/valid.txt" --budgets 2048 512)
    COMPILED=(python3 -m bench.gpu --device cpu --budgets 256 --steps 2 --warmup 2 --systems ours,ours-compiled)
    head_of_data 200
    TRAIN=(python3 -m train --data "$LOGS/data" --out "$LOGS/train-run" --device cpu --max-steps 2
           --subset-eval-every 0 --train-eval-sentences 20)
else
    BENCH=(python3 -m bench.gpu ${PEAK:+--peak-tflops "$PEAK"} --cell-timeout 150)
    EVAL=(python3 -m bench.eval_batches --run "$LOGS/train-run" --data "$DATA/valid.txt"
          --budgets 16384 2048 8192 32768)
    COMPILED=(python3 -m bench.gpu ${PEAK:+--peak-tflops "$PEAK"} --cell-timeout 150 --budgets 8192 --warmup 3
              --systems ours,ours-compiled)
    TRAIN=(python3 -m train --data "$DATA" --out "$LOGS/train-run")
fi

export DATA GGUF PARTS WHEELS LOGS
export -f env_check model
run env 60 'grep -m1 "^torch" "$LOGS/env.log"' env_check
run model 180 'tail -n1 "$LOGS/model.log"' model
run bench 420 'echo "the table above; $LOGS/bench.json"' "${BENCH[@]}" --json "$LOGS/bench.json"
run train 300 'grep -m1 "^best validation F1" "$LOGS/train.log"' "${TRAIN[@]}"
run eval 120 'tail -n1 "$LOGS/eval.log"' "${EVAL[@]}"
run compiled 300 'echo "the table above; $LOGS/compiled.json"' "${COMPILED[@]}" --json "$LOGS/compiled.json"

echo
for table in bench compiled; do
    [[ -f $LOGS/$table.log ]] && sed -n '/^| shape |/,$p' "$LOGS/$table.log" && echo
done
[[ -f $LOGS/eval.log ]] && cat "$LOGS/eval.log" && echo
echo "| step | result | wall |"
echo "|---|---|---|"
printf '%s\n' "${SUMMARY[@]}"
