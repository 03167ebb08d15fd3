"""What a training module holds: each model it loads, how, and for how long (``PolicyModule.held_models``).

A module reports this from the same decisions that load the models (``reference_source``,
``teacher_source``), so the preflight plan and the run cannot disagree. ``how``:

* ``trained``: the policy, in memory at every step with its gradients and optimizer states;
* ``frozen``: a frozen copy in memory at every step (a reference without a cache, an online teacher);
* ``pass``: loaded for one no-grad pass that fills ``cache`` (reference log-probs, teacher top-k), then
  freed: training never holds it (``cache`` None: the pass's table is kept in memory, not on disk);
* ``shared``: no weights of its own -- the policy with its LoRA adapters disabled, or the untrained
  policy itself at step 0 (a cache's pass).

Every rank holds the same list (ZeRO-3 partitions each model across them: ``prefdistill.memory``). The
weights' dtype is the spec's (``ModelSpec.dtype``), unless the run's precision casts them.
"""

from __future__ import annotations

from dataclasses import dataclass

HOW = ("trained", "frozen", "pass", "shared")


@dataclass(frozen=True)
class HeldModel:
    role: str  # policy | reference | teacher
    spec: object  # the ModelSpec it loads (or shares)
    how: str  # one of HOW
    cache: str | None = None  # the folder a pass fills and training reads
    note: str = ""

    def __post_init__(self) -> None:
        if self.how not in HOW:
            raise ValueError(f"HeldModel.how must be one of {HOW}, got {self.how!r}")

    @property
    def loads(self) -> bool:
        """Whether this entry loads weights of its own (at some point of the run)."""
        return self.how != "shared"

    @property
    def in_training(self) -> bool:
        """Whether its weights are in memory at every training step."""
        return self.how in ("trained", "frozen")

    def describe(self) -> str:
        where = {"trained": "trained", "frozen": "held frozen in training", "shared": "no copy",
                 "pass": f"one pass into {self.cache or 'memory'}, not held in training"}[self.how]  # fmt: skip
        dtype = getattr(self.spec, "dtype", "?")
        return f"{self.role} {getattr(self.spec, 'name_or_path', self.spec)} ({dtype}): {where}" + (
            f"; {self.note}" if self.note else ""
        )


def held_reference(module) -> list[HeldModel]:
    """The reference entry of ``module`` (none, a frozen copy, the adapter-disabled policy, or a cache pass), from
    the same ``reference_source()`` that ``load_reference`` acts on."""
    source, spec = module.reference_source(), module.reference_spec or module.policy_spec
    if source is None:
        return []
    if source == "copy":
        return [HeldModel("reference", spec, "frozen")]
    if source == "adapters":
        return [HeldModel("reference", spec, "shared", note="the policy with its LoRA adapters disabled")]
    folder = str(module.reference_cache.root)  # a cache pass: reference_model() decides what runs it
    if module.uses_lora:
        return [HeldModel("reference", spec, "shared", folder, "computed by the policy, adapters disabled")]
    if (
        module.reference_spec is None
    ):  # a split first read after step 0 (or on resume) needs the initial weights
        note = (
            "a split first read at step 0 is computed by the untrained policy itself, later by a fresh copy"
        )
        return [HeldModel("reference", spec, "pass", folder, note)]
    return [HeldModel("reference", spec, "pass", folder)]
