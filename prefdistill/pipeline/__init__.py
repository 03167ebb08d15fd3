"""Dataset construction before training: one cached chain from SFT and sampling to training-ready jsonl.

* :mod:`~prefdistill.pipeline.chain`   ``Chain``: [SFT teacher] -> [SFT student] -> samples -> the method's
  step, its plan (``stages()``) and its result (``Prepared``)
* :mod:`~prefdistill.pipeline.steps`   the pieces: SFT and sampling stages, the ``Step`` a method adds
* :mod:`~prefdistill.pipeline.stages`  ``Stage``: output keyed by an inputs hash, marker last, reuse
* :mod:`~prefdistill.pipeline.plad`    ``PladPairs``: teacher > student pairs (PLaD, DistiLLM-2's data)
* :mod:`~prefdistill.pipeline.pad`     ``PadLists``: diverse student samples scored by the teacher (PAD)
* :mod:`~prefdistill.pipeline.seqkd`   ``SeqKDRecords``: the teacher's samples as SFT records (SeqKD)
* :mod:`~prefdistill.pipeline.pairs` / :mod:`~prefdistill.pipeline.lists` / :mod:`~prefdistill.pipeline.mcq`
  the pure builders: PLaD pairs (+ scorer re-ordering), PAD diversity selection and alpha mix, MCQ score
* :mod:`~prefdistill.pipeline.scoring`  a model's log-likelihood of responses; scorers
* :mod:`~prefdistill.pipeline.sft` / :mod:`~prefdistill.pipeline.reward_model`  stages that train a model
"""

from prefdistill.pipeline.chain import Chain, Prepared
from prefdistill.pipeline.pad import PadLists
from prefdistill.pipeline.plad import PladPairs
from prefdistill.pipeline.seqkd import SeqKDRecords
from prefdistill.pipeline.stages import Stage, StageResult
from prefdistill.pipeline.steps import PlannedStage, Sampler, SFTStep, Step

__all__ = [
    "Chain",
    "PadLists",
    "PladPairs",
    "PlannedStage",
    "Prepared",
    "SFTStep",
    "Sampler",
    "SeqKDRecords",
    "Stage",
    "StageResult",
    "Step",
]
