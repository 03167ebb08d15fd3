#!/usr/bin/env bash
# Hypothesis: on the demo pairs, held-out reward accuracy is flat in beta while the margin grows with it
# (DPO's beta scales the implicit reward). One Hydra multirun, one W&B group, a run folder per job:
#   logs/train/multiruns/<time>/<job>/   then:  python evaluate.py compare=[logs/train/multiruns/<time>]
# On SLURM add: hydra/launcher=submitit_slurm hardware=gpu   (pip install 'prefdistill[sweeps]')
set -euo pipefail
cd "$(dirname "$0")/.."
python train.py -m experiment=demo_dpo method.beta=0.05,0.1,0.5 "$@"
