#!/usr/bin/env bash
# The distillation study end to end (docs/study.md), every step a cached, resumable Hydra multirun:
#   1. the validation search of every row (experiment=distill_search hparams_search=distill_<row>): each job a
#      fixed folder logs/distill_search/<row>/<n>_<values>, reused when finished (reuse_finished), each search
#      ending in search.md / chosen.json;
#   2. the tuned rows: python -m prefdistill.eval.search writes configs/row/<row>_tuned.yaml from the searches;
#   3. the tuned table over three seeds (experiment=distill_study over the <row>_tuned rows, task_name
#      distill_study_tuned) and the paper-recipe table beside it (experiment=distill_study), each ending in
#      <sweep>/compare.md with the paired comparisons;
#   4. the collapse ablation (experiment=distill_collapse): collapse.md per grid.
# Hypothesis: with a student that can learn (initial EM >= 10 %) and every row tuned by the same protocol, the
# rows separate on exact match, and the preference-pair rows' collapse follows their step size and missing anchor.
# Cost on a 2-core CPU: docs/study.md. Extra arguments go to every command (e.g. hardware=gpu).
#   bash sweeps/distill_study.sh
#   SEEDS=1 STEPS="search tuned" bash sweeps/distill_study.sh      # a subset: search,tuned,paper,collapse
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${SEEDS:-1,2,3}"
STEPS="${STEPS:-search tuned paper collapse}"
ROWS="sft kd seqkd fdistill minillm gkd plad plad_margin pad dpo_ts distillm2"
has() { [[ " $STEPS " == *" $1 "* ]]; }
if has search; then
  for row in $ROWS; do
    python train.py -m experiment=distill_search "hparams_search=distill_${row}" "$@"
  done
  python -m prefdistill.eval.search $(for row in $ROWS; do echo "logs/distill_search/${row}"; done) \
    --write-rows configs/row
fi
if has tuned; then
  tuned=$(cd configs/row && ls ./*_tuned.yaml 2>/dev/null | sed 's|^\./||; s|\.yaml$||' | paste -sd, -)
  if [[ -z "$tuned" ]]; then
    echo "distill_study.sh: no configs/row/<row>_tuned.yaml: run the search step first (STEPS=search)" >&2
    exit 1
  fi
  python train.py -m experiment=distill_study "row=${tuned}" task_name=distill_study_tuned "seed=${SEEDS}" "$@"
fi
if has paper; then
  python train.py -m experiment=distill_study "seed=${SEEDS}" "$@"
fi
if has collapse; then
  for grid in collapse_plad_step collapse_plad_margin collapse_dpo; do
    python train.py -m experiment=distill_collapse "hparams_search=${grid}" "$@"
  done
fi
