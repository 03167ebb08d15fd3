"""DeepSpeed strategies for Lightning: ZeRO-3 fixes for transformers models, and DeepSpeed on CPU.

:class:`DeepSpeedStrategy` (``hardware=deepspeed_zero2|deepspeed_zero3``) is Lightning's, plus two
fixes that ZeRO-3 needs here:

- transformers must know ZeRO-3 is on while ``configure_model`` builds the policy inside
  DeepSpeed's ``zero.Init`` (Lightning's sharded context), else it initialises or loads weights
  into already-partitioned, empty parameters. A ``HfDeepSpeedConfig`` is registered for exactly
  that span (and removed after, so models built later, e.g. for the final save, are plain).
- every ``validate``/``fit`` wraps the same module in a new DeepSpeed engine; under ZeRO-3 each
  engine hooks every submodule, and a validation engine's hooks left in place break the training
  engine's parameter fetching ("pop from an empty deque"). The previous engine is destroyed first.

:class:`CPUDeepSpeedStrategy` (``hardware=deepspeed_cpu``) runs the same on CPU. Lightning's
strategy refuses any accelerator but CUDA in ``setup_environment`` ("only supported on CUDA
GPUs"), although DeepSpeed runs ZeRO on CPU (its CPU accelerator, gloo collectives); this one
skips that check (it runs ``DDPStrategy.setup_environment``, which is all the parent does after
it), runs ``trainer.devices`` CPU processes and uses gloo. So the whole DeepSpeed path of a run --
sharded optimizer, checkpoint folders, resume, conversion to a transformers folder, ZeRO over
several ranks -- runs and is tested on a machine without a GPU.

DeepSpeed is installed without building its compiled ops (``DS_BUILD_OPS=0``); on CPU the first
run JIT-compiles a small shared-memory collective op into ``$TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``), about half a minute, once.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies import DeepSpeedStrategy as _LightningDeepSpeedStrategy


class DeepSpeedStrategy(_LightningDeepSpeedStrategy):
    """Lightning's ``DeepSpeedStrategy`` (same arguments), safe for transformers models under ZeRO-3."""

    def __init__(self, *args: Any, zero_force_ds_cpu_optimizer: bool = False, **kwargs: Any) -> None:
        """``zero_force_ds_cpu_optimizer=False`` (DeepSpeed's default is True) lets ``offload_optimizer``
        run the configured torch optimizer on CPU instead of refusing anything but ``DeepSpeedCPUAdam``
        (faster, but a compiled op: with ``DS_BUILD_OPS=0`` it is JIT-built on first use)."""
        super().__init__(*args, **kwargs)
        if self.config is not None:
            self.config.setdefault("zero_force_ds_cpu_optimizer", zero_force_ds_cpu_optimizer)
        self._previous_engine = None

    @contextmanager
    def model_sharded_context(self) -> Generator[None, None, None]:
        self._init_config_if_needed()
        hf_config = None
        if self.zero_stage_3:
            from transformers.integrations import HfDeepSpeedConfig

            hf_config = HfDeepSpeedConfig(self.config)  # registers itself (a weak reference): keep it alive
        try:
            with super().model_sharded_context():
                yield
        finally:
            if hf_config is not None:
                from transformers.integrations.deepspeed import unset_hf_deepspeed_config

                unset_hf_deepspeed_config()

    def init_deepspeed(self) -> None:
        if self._previous_engine is not None:
            self._previous_engine.destroy()  # its ZeRO-3 hooks are still on the module
            self._previous_engine = None
        super().init_deepspeed()
        self._previous_engine = self.model


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """:class:`DeepSpeedStrategy` on CPU: ``trainer.devices`` CPU processes, gloo, no CUDA check (same arguments)."""

    def __init__(self, *args: Any, process_group_backend: str | None = "gloo", **kwargs: Any) -> None:
        super().__init__(*args, process_group_backend=process_group_backend, **kwargs)

    @property
    def parallel_devices(self) -> list[torch.device] | None:
        return self._cpu_devices

    @parallel_devices.setter
    def parallel_devices(self, devices: list[torch.device] | None) -> None:
        # Lightning hands over `trainer.devices` plain "cpu" devices; DeepSpeed's set-up wants device i at
        # local rank i (it checks the indices), so they are numbered.
        self._cpu_devices = None if devices is None else [torch.device("cpu", i) for i in range(len(devices))]

    def setup_environment(self) -> None:
        # Lightning's DeepSpeedStrategy.setup_environment raises unless the accelerator is CUDA;
        # what it does after that check is exactly DDPStrategy's.
        DDPStrategy.setup_environment(self)
