"""The progress bar of the trainers that pipeline stages start (SFT, reward model).

Lightning picks a rich progress bar when ``rich`` is installed; it draws only on a terminal, so a stage
running under a scheduler or with its output sent to a log file (the usual case for a study) printed
nothing for minutes. A plain tqdm bar writes a line a log file keeps, every ``refresh_rate`` steps.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar


def stage_progress(refresh_rate: int = 10) -> TQDMProgressBar:
    """A tqdm bar that also shows in log files, refreshed every ``refresh_rate`` steps."""
    return TQDMProgressBar(refresh_rate=refresh_rate)
