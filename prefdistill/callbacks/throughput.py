"""Throughput accounting: tokens/s, step time, achieved TFLOP/s and MFU of every optimizer step.

Logged per optimizer step (``on_step``), timed from the start of its first micro-batch to the end of
its last (forward, backward, optimizer; data loading excluded):

* ``train/perf/step_time_s``
* ``train/perf/tokens_per_s``: non-pad tokens the policy forward+backward processed, per second. With
  ``forward="shared_prompt"`` a pair is ``prompt + chosen + rejected`` (the prompt once, as computed);
  with ``"padded"`` the prompt is computed, and counted, twice.
* ``train/perf/tflops``: achieved model TFLOP/s (formula below), per device.
* ``train/perf/mfu``: ``tflops / peak``; the peak FLOP/s of one device comes from ``peak_flops``
  (``hardware.peak_flops_per_device``) or, when that is null on CPU, from a short fp32 matmul benchmark
  run once per process (:func:`measured_peak_flops`). Without a peak (null on GPU) no MFU is logged.

Run totals for the cost columns (:meth:`ThroughputMonitor.totals`, kept in checkpoints so a resumed run
continues them): ``tokens`` (non-pad tokens through the policy's forward+backward), ``forward_tokens``
(tokens through every model the step runs: the policy, plus a reference without a reference cache, plus
a teacher without a teacher cache -- each counts its tokens once) and ``fit_s`` (wall-clock seconds of
``fit``: training, in-fit validation and data loading; not model loading or the final save).

FLOPs of one step (model FLOPs: activation recomputation is not counted; litgpt/PaLM conventions)::

    F = sum_tokens  2 * (3 * N_trainable + 2 * N_frozen)                 # linear layers, fwd + bwd
      + sum_scored  2 * (3 if lm_head trainable else 2) * d * V          # lm_head on supervised positions only
      + sum_tokens  12 * n_layers * d_attn * ctx(token)                  # QK^T and AV, fwd + bwd
      [+ the forward-only third of the above, when a reference model runs a forward in the step]

``N_*`` counts non-embedding parameters (every ``nn.Embedding`` and the output head excluded), split
into trainable and frozen: a frozen weight costs its forward (2 per token) and the gradient with
respect to its input (2), a trainable one also its weight gradient (2 more) -- so full fine-tuning
gives the familiar ``6 N`` per token and LoRA ``4 N_base + 6 N_lora``. The lm_head is counted once per
*scored* (supervised) position, ``2 d V`` forward, since the chunked log-probs never compute it
elsewhere; its weight gradient only when it is trainable. ``d_attn`` = heads x head_dim, ``ctx`` = the
keys a token really attends to (causal: its position + 1; shared prompt: the prompt plus its own
response); sliding windows are ignored (an upper bound). The reference term is added when the module
needs a reference and has no reference cache (an extra no-grad forward of the same architecture).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import lightning as L
import torch

from prefdistill.data.collate import as_pair_batch

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
_PEAK_CACHE: dict[tuple[int, str], float] = {}


def measured_peak_flops(size: int = 1024, repeats: int = 5) -> float:
    """Best-of fp32 matmul FLOP/s on this CPU with the current thread count (cached per process)."""
    key = (torch.get_num_threads(), "cpu")
    if key not in _PEAK_CACHE:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        _PEAK_CACHE[key] = 2 * size**3 / best
        log.info("measured CPU peak: %.1f GFLOP/s fp32 (%d threads)", _PEAK_CACHE[key] / 1e9, key[0])
    return _PEAK_CACHE[key]


@dataclass
class ModelShape:
    """What the FLOP formula needs from a model (see the module docstring)."""

    n_trainable: int  # non-embedding trainable parameters
    n_frozen: int  # non-embedding frozen parameters
    d_model: int
    vocab: int
    n_layers: int
    d_attn: int
    head_trainable: bool

    @classmethod
    def of(cls, model: torch.nn.Module) -> ModelShape:
        hf = model
        while hasattr(hf, "module") and isinstance(hf.module, torch.nn.Module):
            hf = hf.module
        hf = hf.get_base_model() if hasattr(hf, "get_base_model") else hf
        config = hf.config
        head = hf.get_output_embeddings() or getattr(hf, "score", None)  # a reward model's scalar head
        excluded = {id(p) for m in hf.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
        excluded |= {id(p) for p in head.parameters()}
        trainable = frozen = 0
        for p in model.parameters():  # the wrapper's parameters: LoRA adapters included
            if id(p) in excluded:
                continue
            if p.requires_grad:
                trainable += p.numel()
            else:
                frozen += p.numel()
        get = lambda *names: next(getattr(config, n) for n in names if getattr(config, n, None))  # noqa: E731
        d_model = get("hidden_size", "n_embd", "d_model")
        heads = get("num_attention_heads", "n_head", "num_heads")
        head_dim = getattr(config, "head_dim", None) or d_model // heads
        return cls(
            n_trainable=trainable,
            n_frozen=frozen,
            d_model=d_model,
            vocab=head.weight.shape[0],
            n_layers=get("num_hidden_layers", "n_layer", "num_layers"),
            d_attn=heads * head_dim,
            head_trainable=any(p.requires_grad for p in head.parameters()),
        )


@dataclass
class BatchTokens:
    tokens: int  # non-pad tokens the forward processes
    scored: int  # supervised positions (lm_head rows)
    attended: int  # sum over tokens of the keys each attends to


def _causal(lengths: torch.Tensor) -> int:
    lengths = lengths.long()
    return int((lengths * (lengths + 1) // 2).sum())


def _scored(labels: torch.Tensor) -> int:
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def _prompt_lengths(labels: torch.Tensor) -> torch.Tensor:
    idx = torch.arange(labels.shape[1], device=labels.device).expand_as(labels)
    return torch.where(labels != IGNORE_INDEX, idx, labels.shape[1]).min(dim=1).values


def batch_tokens(batch: dict, shared_prompt: bool = False, kl_pairs: bool = False) -> BatchTokens:
    """Token counts of a batch (``prefdistill.data.collate`` layouts) for one policy forward. Unpaired
    batches count their matched rows, and with ``kl_pairs`` their mismatched rows too (packed as pairs)."""
    if "completion_input_ids" in batch:
        batch = as_pair_batch(batch, kl=kl_pairs and "kl_input_ids" in batch)
    if "input_ids" in batch:  # listwise: (B*n, T)
        lengths = batch["attention_mask"].sum(1)
        return BatchTokens(int(lengths.sum()), _scored(batch["labels"]), _causal(lengths))
    sides = [s for s in ("chosen", "rejected") if f"{s}_input_ids" in batch]
    scored = sum(_scored(batch[f"{s}_labels"]) for s in sides)
    lengths = [batch[f"{s}_attention_mask"].sum(1) for s in sides]
    if not (shared_prompt and len(sides) == 2):
        return BatchTokens(int(sum(x.sum() for x in lengths)), scored, sum(_causal(x) for x in lengths))
    p = _prompt_lengths(batch["chosen_labels"]).clamp(max=lengths[0])
    c, r = lengths[0] - p, lengths[1] - p
    attended = _causal(p) + int((c * p + r * p).sum()) + _causal(c) + _causal(r)
    return BatchTokens(int((p + c + r).sum()), scored, attended)


def step_flops(shape: ModelShape, tokens: BatchTokens, reference_forward: bool = False) -> float:
    """Model FLOPs of one forward+backward over ``tokens`` (formula in the module docstring)."""
    linear = 2 * (3 * shape.n_trainable + 2 * shape.n_frozen) * tokens.tokens
    head = 2 * (3 if shape.head_trainable else 2) * shape.d_model * shape.vocab * tokens.scored
    attention = 12 * shape.n_layers * shape.d_attn * tokens.attended
    total = linear + head + attention
    if reference_forward:  # no-grad forward of a same-shaped reference: 2 per weight, 4 per score
        n = shape.n_trainable + shape.n_frozen
        total += 2 * n * tokens.tokens + 2 * shape.d_model * shape.vocab * tokens.scored + attention / 3
    return float(total)


def models_forwarded(pl_module) -> dict[str, bool]:
    """Which models a training step runs on the batch's tokens: the policy; a reference when the loss
    needs one and no reference cache replaces it; a teacher when there is one and no teacher cache."""
    return {
        "policy": True,
        "reference": bool(getattr(pl_module, "needs_reference", False))
        and getattr(pl_module, "reference_cache", None) is None,
        "teacher": getattr(pl_module, "teacher_spec", None) is not None
        and getattr(pl_module, "teacher_cache", None) is None,
    }


class ThroughputMonitor(L.Callback):
    """Logs ``train/perf/*`` every optimizer step; see the module docstring for definitions."""

    def __init__(self, peak_flops: float | None = None, log_every_n_steps: int = 1):
        self.peak_flops = peak_flops
        self.log_every_n_steps = max(1, log_every_n_steps)
        self._shape: ModelShape | None = None
        self._start: float | None = None
        self._step_at_start = 0
        self._tokens = BatchTokens(0, 0, 0)
        self._flops = 0.0
        self.last: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self._totals = {"tokens": 0, "forward_tokens": 0, "fit_s": 0.0}
        self._fit_started: float | None = None

    # -- run totals (cost) -------------------------------------------------------------------
    def totals(self) -> dict:
        """``{tokens, forward_tokens, fit_s}`` so far (definitions in the module docstring)."""
        running = time.perf_counter() - self._fit_started if self._fit_started is not None else 0.0
        return {**self._totals, "fit_s": round(self._totals["fit_s"] + running, 3)}

    def state_dict(self) -> dict:
        return self.totals()

    def load_state_dict(self, state_dict: dict) -> None:
        self._totals = {k: state_dict.get(k, v) for k, v in self._totals.items()}

    def on_train_end(self, trainer, pl_module) -> None:
        self._totals = self.totals()
        self._fit_started = None


    def _peak(self, pl_module) -> float | None:
        if self.peak_flops is None and pl_module.device.type == "cpu":
            self.peak_flops = measured_peak_flops()
        return self.peak_flops

    def on_train_start(self, trainer, pl_module) -> None:
        self._peak(pl_module)
        self._shape = None
        self._fit_started = time.perf_counter()

    @staticmethod
    def _sync(pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._start is None:
            self._sync(pl_module)
            self._start = time.perf_counter()
            self._step_at_start = trainer.global_step
            self._tokens, self._flops = BatchTokens(0, 0, 0), 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._start is None:
            return
        policy = getattr(pl_module, "policy", None) or pl_module
        if self._shape is None:
            self._shape = ModelShape.of(policy)
        shared = getattr(pl_module, "forward_mode", "padded") == "shared_prompt"
        kl_pairs = "kl_pairs" in getattr(getattr(pl_module, "loss", None), "needs", ())
        tokens = batch_tokens(batch, shared_prompt=shared, kl_pairs=kl_pairs)
        self._totals["tokens"] += tokens.tokens
        self._totals["forward_tokens"] += tokens.tokens * sum(models_forwarded(pl_module).values())
        reference = models_forwarded(pl_module)["reference"]
        t = self._tokens
        self._tokens = BatchTokens(
            t.tokens + tokens.tokens, t.scored + tokens.scored, t.attended + tokens.attended
        )
        self._flops += step_flops(self._shape, tokens, reference_forward=reference)
        if trainer.global_step == self._step_at_start:
            return  # gradient accumulation: the optimizer step is not done yet
        self._sync(pl_module)
        elapsed = time.perf_counter() - self._start
        self._start = None
        metrics = {
            "train/perf/step_time_s": elapsed,
            "train/perf/tokens_per_s": self._tokens.tokens / elapsed,
            "train/perf/tflops": self._flops / elapsed / 1e12,
        }
        peak = self._peak(pl_module)
        if peak:
            metrics["train/perf/mfu"] = self._flops / elapsed / peak
        self.last = metrics
        self.history.append(metrics)
        if trainer.global_step % self.log_every_n_steps == 0:
            pl_module.log_dict(
                {k: torch.tensor(v, dtype=torch.float32) for k, v in metrics.items()},
                on_step=True,
                on_epoch=False,
                batch_size=1,
            )


def fit_totals(trainer) -> dict:
    """The run totals of ``trainer``'s :class:`ThroughputMonitor` (``{tokens, forward_tokens, fit_s}``), or
    ``{}`` when it has none (the cost record then says training's tokens are unknown)."""
    for callback in getattr(trainer, "callbacks", None) or []:
        if isinstance(callback, ThroughputMonitor):
            return callback.totals()
    return {}
