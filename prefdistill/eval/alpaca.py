"""AlpacaEval 2 export: ``model_outputs.json`` for the 805 AlpacaEval instructions.

The file is a JSON list of ``{"instruction", "output", "generator", "dataset"}`` objects, with the
instruction strings exactly as in the eval set, ready for::

    alpaca_eval evaluate --model_outputs <run>/eval_alpacaeval/model_outputs.json \\
        --annotators_config weighted_alpaca_eval_gpt4_turbo --output_path <dir>

Instructions come from ``datasets.load_dataset("tatsu-lab/alpaca_eval", "alpaca_eval")["eval"]``;
if that fails (newer ``datasets`` no longer run the repo's loading script) the repo's
``alpaca_eval.json`` is fetched with ``huggingface_hub``. ``path`` reads a local JSON/JSONL copy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from prefdistill.utils.atomic import atomic_write_json

log = logging.getLogger(__name__)

REPO_ID = "tatsu-lab/alpaca_eval"
N_INSTRUCTIONS = 805


def _read_local(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def load_instructions(path: str | None = None) -> list[dict]:
    """AlpacaEval rows (``instruction`` and ``dataset`` kept), from ``path`` or the hub."""
    if path:
        rows = _read_local(Path(path).expanduser())
    else:
        try:
            import datasets

            rows = list(datasets.load_dataset(REPO_ID, "alpaca_eval")["eval"])
        except Exception as err:  # script-based dataset on datasets>=4, or offline
            log.info("datasets could not load %s (%s); trying alpaca_eval.json from the hub", REPO_ID, err)
            from huggingface_hub import hf_hub_download

            rows = _read_local(Path(hf_hub_download(REPO_ID, "alpaca_eval.json", repo_type="dataset")))
    out = [{"instruction": r["instruction"], "dataset": r.get("dataset", "")} for r in rows]
    if not path and len(out) != N_INSTRUCTIONS:
        log.warning("AlpacaEval has %d instructions, expected %d", len(out), N_INSTRUCTIONS)
    return out


def export_model_outputs(
    rows: Sequence[dict], outputs: Sequence[str], generator: str, path: str | Path
) -> Path:
    """Write ``model_outputs.json`` (one object per instruction, input order); returns the path."""
    if len(rows) != len(outputs):
        raise ValueError(f"{len(rows)} instructions but {len(outputs)} outputs")
    records = [
        {
            "instruction": r["instruction"],
            "output": o,
            "generator": generator,
            "dataset": r.get("dataset", ""),
        }
        for r, o in zip(rows, outputs)
    ]
    path = atomic_write_json(path, records)
    log.info(
        "AlpacaEval outputs (%d) -> %s; score with: alpaca_eval evaluate --model_outputs %s",
        len(records),
        path,
        path,
    )
    return path
