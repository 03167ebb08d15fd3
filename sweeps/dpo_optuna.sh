#!/usr/bin/env bash
# Hypothesis: the best DPO learning rate for LoRA on SmolLM2-135M lies in 1e-5..1e-3 and interacts with beta.
# Optuna TPE over (beta, lr), maximising val/reward/accuracy (returned by train.py's main()).
# Study settings: configs/hparams_search/dpo_optuna.yaml. Results: <sweep folder>/optimization_results.yaml
# (the best trial) and <sweep folder>/summary.md (every trial: beta, lr, held-out metrics before -> after, cost,
# run folder and W&B run); job folders are named by their values (0_method.beta=...,module.optimizer.lr=...).
set -euo pipefail
cd "$(dirname "$0")/.."
python train.py -m hparams_search=dpo_optuna "$@"
