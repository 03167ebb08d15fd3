"""Data: sources -> canonical records -> chat/raw template + truncation -> padded batches.

* :mod:`~prefdistill.data.records`    canonical SFT / pairwise / listwise records, ``DataError``
* :mod:`~prefdistill.data.sources`    one row mapper per dataset schema (HH, Orca, UltraFeedback, TL;DR, local)
* :mod:`~prefdistill.data.loading`    ``load_records``: ``datasets.load_dataset`` + bad-row policy
* :mod:`~prefdistill.data.templates`  chat template / raw text, exactly one BOS
* :mod:`~prefdistill.data.truncation` explicit, counted truncation policy
* :mod:`~prefdistill.data.examples`   records -> token-id examples, per-split stats
* :mod:`~prefdistill.data.collate`    pure collate functions (the batch contract)
* :mod:`~prefdistill.data.datamodule` ``PreferenceDataModule``
* :mod:`~prefdistill.data.demo`       generator of the shipped demo datasets (demo, demo_scored, demo_lists)
* :mod:`~prefdistill.data.demo_graded` ROUGE-L-scored pairs and graded 4-response lists of the demo
"""

from prefdistill.data.collate import collate_lists, collate_pairs
from prefdistill.data.datamodule import PreferenceDataModule
from prefdistill.data.loading import SOURCES, load_records
from prefdistill.data.records import DataError, ListRecord, PairRecord, SFTRecord
from prefdistill.data.templates import PromptEncoder, encode_pair
from prefdistill.data.truncation import TruncationPolicy

__all__ = [
    "SOURCES",
    "DataError",
    "ListRecord",
    "PairRecord",
    "PreferenceDataModule",
    "PromptEncoder",
    "SFTRecord",
    "TruncationPolicy",
    "collate_lists",
    "collate_pairs",
    "encode_pair",
    "load_records",
]
