"""``PreferenceDataModule``: a source, a template and a truncation policy -> dataloaders.

Constructor arguments are the ``configs/data/*.yaml`` keys. The tokenizer is a runtime
setting that comes from the model, so it is handed over with :meth:`connect` before
``setup`` (as in litgpt)::

    dm = PreferenceDataModule(source="shipped", max_length=128, max_prompt_length=64)
    dm.connect(tokenizer)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))   # keys: see prefdistill.data.collate

``splits`` maps our split names (train/validation/test) to the source's, optionally with a row range
(``train: "train[500:]"``, the ``datasets`` syntax; :func:`~prefdistill.data.loading.split_slice`); a ``null``
validation split is carved from train (``val_fraction``, seeded), a ``null`` test split
falls back to validation (logged). A ``path`` that is a single file is the train split
(whatever the source's split names); give a folder of ``<split>.jsonl`` files for more. After ``setup``, ``self.stats[split]`` holds the
counters of :func:`prefdistill.data.examples.new_stats` and a one-line summary per
split is logged. Scored pairs (``chosen_score``/``rejected_score``) must be scored in every
split or in none (``DataError`` at setup otherwise); their batches carry ``chosen_scores``
/``rejected_scores``.

Unpaired data (KTO, BCO): files of ``{prompt, completion, label}`` rows are read as unpaired rows
(``record_type`` pairwise or unpaired), or ``unpair=True`` cuts every pair into a desirable and an
undesirable row *after* the splits are formed (validation carved from train included), so the two
halves of a pair never straddle train and validation. Each unpaired row gets a mismatched
completion for KTO's KL estimate (``collate.add_kl_completions``, seeded with ``seed``); batches are
``collate.collate_unpaired``'s.
"""

from __future__ import annotations

import logging
import math
import random
from functools import partial
from pathlib import Path

from lightning import LightningDataModule
from torch.utils.data import DataLoader

from prefdistill.data.collate import (
    add_kl_completions,
    collate_lists,
    collate_pairs,
    collate_unpaired,
    unpair_examples,
)
from prefdistill.data.examples import build_examples, new_stats, summary
from prefdistill.data.loading import BAD_ROW_POLICIES, get_source, load_records, shipped_dir
from prefdistill.data.records import RECORD_TYPES, DataError
from prefdistill.data.sampler import ResumableLoader, ResumableRandomSampler, Rows, ShardBatches
from prefdistill.data.templates import PromptEncoder
from prefdistill.data.truncation import TruncationPolicy
from prefdistill.utils.distributed import part

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")
_STAGE_SPLITS = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",)}


class PreferenceDataModule(LightningDataModule):
    def __init__(
        self,
        source: str = "shipped",
        path: str | None = None,
        name: str | None = None,
        splits: dict | None = None,
        record_type: str = "pairwise",
        fields: dict | None = None,
        template: str = "auto",
        max_length: int = 512,
        max_prompt_length: int = 256,
        truncation_mode: str = "keep_end",
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        max_samples: int | None = None,
        on_bad_row: str = "error",
        val_fraction: float = 0.05,
        seed: int = 42,
        unpair: bool = False,
    ):
        super().__init__()
        spec = get_source(source)  # unknown source -> DataError listing the known ones
        if source == "shipped" and path is None:
            shipped_dir(name)  # unknown shipped dataset -> DataError listing the shipped ones
        if record_type not in RECORD_TYPES:
            raise ValueError(f"record_type must be one of {RECORD_TYPES}, got {record_type!r}")
        if on_bad_row not in BAD_ROW_POLICIES:
            raise ValueError(f"on_bad_row must be one of {BAD_ROW_POLICIES}, got {on_bad_row!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if unpair and record_type not in ("pairwise", "unpaired"):
            raise ValueError(
                f"unpair=true cuts pairs into unpaired rows; it needs record_type pairwise, not {record_type!r}"
            )
        self.save_hyperparameters(logger=False)
        self.source, self.path, self.name, self.record_type = source, path, name, record_type
        self.unpair = unpair
        self.read_type = "pairwise" if unpair else record_type  # what the rows are read as
        self.splits = {**spec.splits, **dict(splits or {})}
        if path is not None and Path(path).expanduser().is_file():
            # one file is the train split; validation is carved from it, test falls back to validation
            self.splits = {"train": "train", "validation": None, "test": None}
        self.fields = dict(fields) if fields else None
        self.template, self.on_bad_row, self.seed = template, on_bad_row, seed
        self.policy = TruncationPolicy(max_length, max_prompt_length, truncation_mode)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.max_samples, self.val_fraction = num_workers, max_samples, val_fraction
        self.tokenizer = None
        self._resume_state: dict | None = None
        self._train_sampler: ResumableRandomSampler | None = None  # the latest shuffled loader's
        self.datasets: dict[str, list[dict]] = {}
        self.records: dict[str, dict] = {}  # split -> {row index: record}: the texts, for re-tokenizing them
        self.stats: dict[str, dict] = {}

    def connect(self, tokenizer) -> None:
        """Hand over the (model's) tokenizer; must happen before :meth:`setup`."""
        self.tokenizer = tokenizer

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def _load(self, split: str) -> list:
        stats = self.stats.setdefault(split, new_stats())
        source_split = self.splits.get(split)
        if source_split is None and split == "validation" and self.val_fraction > 0:
            return self._carve_validation()
        if source_split is None:
            return []
        limit = None if self.max_samples is None else self.max_samples
        kw = dict(path=self.path, name=self.name, record_type=self.read_type, fields=self.fields)
        return load_records(
            self.source, source_split, on_bad_row=self.on_bad_row, limit=limit, stats=stats, **kw
        )

    def _carve_validation(self) -> list:
        """Move a seeded ``val_fraction`` of the train rows to validation (the source has none)."""
        train_stats = self.stats.setdefault("train", new_stats())
        limit = None if self.max_samples is None else 2 * self.max_samples
        kw = dict(path=self.path, name=self.name, record_type=self.read_type, fields=self.fields)
        rows = load_records(
            self.source,
            self.splits["train"],
            on_bad_row=self.on_bad_row,
            limit=limit,
            stats=train_stats,
            **kw,
        )
        order = list(range(len(rows)))
        random.Random(self.seed).shuffle(order)
        n_val = max(1, math.ceil(len(rows) * self.val_fraction)) if rows else 0
        val_ids = set(order[:n_val])
        train = [r for k, r in enumerate(rows) if k not in val_ids]
        val = [r for k, r in enumerate(rows) if k in val_ids]
        if self.max_samples is not None:
            # rows past max_samples count as not read, as with load_records' limit, so that
            # rows_read == rows_kept + rows_skipped + rows_to_validation still holds
            dropped = max(0, len(train) - self.max_samples) + max(0, len(val) - self.max_samples)
            train, val = train[: self.max_samples], val[: self.max_samples]
            train_stats["rows_read"] -= dropped
        self._carved_train = train
        train_stats["rows_to_validation"] = len(val)
        self.stats["validation"]["rows_read"] = len(val)
        return val

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            raise RuntimeError("PreferenceDataModule.connect(tokenizer) must be called before setup()")
        encoder = PromptEncoder(self.tokenizer, self.template)
        wanted = _STAGE_SPLITS.get(stage, SPLITS)
        # validation first: carving it from train also fixes the train rows
        for split in sorted(wanted, key=lambda s: s != "validation"):
            if split in self.datasets:
                continue
            rows = (
                self._carved_train
                if split == "train" and hasattr(self, "_carved_train")
                else self._load(split)
            )
            if self.max_samples is not None:
                rows = rows[: self.max_samples]
            label = f"{self.source}[{split}]" + (f" {self.path}" if self.path else "")  # errors name the file
            stats = self.stats.setdefault(split, new_stats())
            self.datasets[split] = build_examples(
                rows, encoder, self.policy, stats, on_bad_row=self.on_bad_row, label=label
            )
            self.records[split] = dict(rows)  # a teacher with another tokenizer re-tokenizes the texts
            log.info("%s (source=%s, template=%s)", summary(split, stats), self.source, encoder.template)
            if stats["rows_read"] > 0 and not self.datasets[split]:  # every row skipped or moved away
                raise DataError(f"{label}: split {split!r} has no usable row: {summary(split, stats)}")
            self.datasets[split] = self._unpaired_rows(self.datasets[split], stats, label)
        self._check_scored_splits()
        self._check_unpaired_splits()

    def _unpaired_rows(self, examples: list[dict], stats: dict, label: str) -> list[dict]:
        """Unpaired rows as training reads them: pairs cut in two (``unpair``), each row with a KL completion."""
        if self.unpair:
            examples = unpair_examples(examples)
            stats["unpaired_rows"] = len(examples)
        if not examples or "completion_ids" not in examples[0]:
            return examples
        if self.record_type in ("sft", "listwise"):
            raise DataError(
                f"{label}: unpaired rows {{prompt, completion, label}} cannot be read as {self.record_type}"
            )
        return add_kl_completions(examples, self.seed)

    def _check_unpaired_splits(self) -> None:
        """Every split holds unpaired rows, or none does (one training module reads them all)."""
        unpaired = {s: "completion_ids" in ds[0] for s, ds in self.datasets.items() if ds}
        if len(set(unpaired.values())) > 1:
            has = sorted(s for s, v in unpaired.items() if v)
            raise DataError(
                f"{self.source}: splits {has} hold unpaired rows {{prompt, completion, label}} but "
                f"{sorted(set(unpaired) - set(has))} do not; use one shape in every split (or data.unpair=true)"
            )

    @property
    def unpaired(self) -> bool:
        """Whether the set-up splits hold unpaired rows (read as such, or cut from pairs by ``unpair``)."""
        return any(ds and "completion_ids" in ds[0] for ds in self.datasets.values())

    def _check_scored_splits(self) -> None:
        """Every split has scored pairs, or none does (a loss needing scores needs them in all)."""
        scored = {
            s: "chosen_score" in ds[0] for s, ds in self.datasets.items() if ds and "rejected_ids" in ds[0]
        }
        if len(set(scored.values())) > 1:
            has = sorted(s for s, v in scored.items() if v)
            lacks = sorted(s for s, v in scored.items() if not v)
            raise DataError(
                f"{self.source}: splits {has} have 'chosen_score'/'rejected_score' but {lacks} do not; "
                "score every split or none"
            )

    def _collate(self):
        fn = collate_lists if self.record_type == "listwise" else collate_pairs
        fn = collate_unpaired if self.unpaired else fn
        return partial(fn, pad_token_id=self.pad_token_id)

    def _loader(self, split: str, shuffle: bool, batch_size: int | None = None) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"split {split!r} is not set up; call setup() first")
        if batch_size is None:
            batch_size = self.batch_size if split == "train" else self.eval_batch_size
        world, rank = self._ranks()
        examples = self.datasets[split]
        if not shuffle:  # this rank's rows, as many batches as every other rank (see ShardBatches)
            sampler = ShardBatches(len(examples), batch_size, world, rank)
            return DataLoader(
                Rows(examples), batch_size=None, sampler=sampler, collate_fn=self._collate(),
                num_workers=self.num_workers,
            )  # fmt: skip
        sampler = self._train_sampler = ResumableRandomSampler(len(examples), self.seed, world, rank)
        if self._resume_state is not None:
            sampler.resume(self._resume_state["epoch"], self._resume_state["batches_done"] * self.batch_size)
            self._resume_state = None
        return ResumableLoader(
            examples,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=self._collate(),
            num_workers=self.num_workers,
            position=self.state_dict,
        )

    def _ranks(self) -> tuple[int, int]:
        """(world size, rank) of the trainer this datamodule serves; (1, 0) outside one."""
        return (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)

    def loader(self, split: str) -> DataLoader:
        """An unshuffled loader over this rank's rows of ``split`` at the eval batch size (no-grad reference and
        teacher passes: each rank computes its rows, ``TensorCache.load_or_compute`` merges them)."""
        return self._loader(split, shuffle=False, batch_size=self.eval_batch_size)

    def shard(self, split: str) -> list[dict]:
        """This rank's examples of ``split``: the rows :meth:`loader` reads, for passes that batch them themselves."""
        world, rank = self._ranks()
        rows = part(len(self.datasets[split]), rank, world)
        return self.datasets[split][rows.start : rows.stop]

    # -- resume mid-epoch: Lightning stores this in every checkpoint --------------------
    def state_dict(self) -> dict:
        if self.trainer is None:
            return {}
        ready = self.trainer.fit_loop.epoch_loop.batch_progress.current.ready
        return {"epoch": self.trainer.current_epoch, "batches_done": ready}

    def load_state_dict(self, state: dict) -> None:
        self._resume_state = dict(state) if state else None
        if self._resume_state is not None and self._train_sampler is not None:
            # DeepSpeed restores the checkpoint after its setup, which already built the train loader
            # (the schedule asks for estimated_stepping_batches): resume that loader's sampler in place
            epoch, batches = self._resume_state["epoch"], self._resume_state["batches_done"]
            self._train_sampler.resume(epoch, batches * self.batch_size)
            self._resume_state = None

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if not self.datasets.get("test") and self.splits.get("test") is None:
            log.warning("source %r has no test split; testing on the validation split", self.source)
            if "validation" not in self.datasets:
                self.setup("validate")
            return self._loader("validation", shuffle=False)
        return self._loader("test", shuffle=False)
