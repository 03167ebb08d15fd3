#!/usr/bin/env bash
# Hypothesis: on the demo pairs, held-out reward accuracy is flat in beta while the margin grows with it
# (DPO's beta scales the implicit reward). One Hydra multirun, one W&B group, a run folder per job named by
# its value: logs/train/multiruns/<time>/0_method.beta=0.05/, 1_method.beta=0.1/, 2_method.beta=0.5/.
# It ends by printing <time>/summary.md: a row per job (beta; held-out accuracy, margin, loss before -> after;
# cost; run folder and W&B run). Again later: python evaluate.py compare=[logs/train/multiruns/<time>]
# Generation metrics (exact match, ROUGE, win rates): add eval=demo. Headless figures: docs/usage.md.
# On SLURM add: hydra/launcher=submitit_slurm hardware=gpu   (pip install 'prefdistill[sweeps]')
set -euo pipefail
cd "$(dirname "$0")/.."
python train.py -m experiment=demo_dpo method.beta=0.05,0.1,0.5 "$@"
