"""Dataset construction for distillation: cached stages from sampling to training-ready jsonl.

* :mod:`~prefdistill.pipeline.stages`  ``Stage``: output keyed by an inputs hash, marker last, reuse
* :mod:`~prefdistill.pipeline.steps`   shared stages: optional SFT, sampling a model over a split
* :mod:`~prefdistill.pipeline.pairs`   PLaD pseudo-preference pairs (+ scorer re-ordering)
* :mod:`~prefdistill.pipeline.lists`   PAD diversity selection, teacher log-likelihood, alpha mix
* :mod:`~prefdistill.pipeline.mcq`     PAD MCQ calibration score
* :mod:`~prefdistill.pipeline.plad` / :mod:`~prefdistill.pipeline.pad`  the two chains
* :mod:`~prefdistill.pipeline.seqkd`  SeqKD: the teacher's samples as SFT records
* :mod:`~prefdistill.pipeline.sft_first`  SFT the policy first, keep the configured data
"""

from prefdistill.pipeline.pad import prepare_pad_data
from prefdistill.pipeline.plad import Prepared, prepare_plad_data
from prefdistill.pipeline.seqkd import prepare_seqkd_data
from prefdistill.pipeline.sft_first import prepare_sft_first
from prefdistill.pipeline.stages import Stage, StageResult
from prefdistill.pipeline.steps import Sampler, SFTStep

__all__ = [
    "Prepared",
    "SFTStep",
    "Sampler",
    "Stage",
    "StageResult",
    "prepare_pad_data",
    "prepare_plad_data",
    "prepare_seqkd_data",
    "prepare_sft_first",
]
