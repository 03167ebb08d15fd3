"""The logger that writes a run's step history (``<run>/csv/metrics.csv``) across launches.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when a new process opens its folder
(lightning 2.6: ``_ExperimentWriter._check_log_dir_exists``). A run resumed after a kill or a
preemption reopens the same folder, so the steps of its earlier launches would be lost.
:class:`AppendingCSVLogger` keeps the file and continues it under its existing header (a new column
still rewrites the header, as Lightning does within one launch). Kept apart from the readers so that
``from prefdistill import analysis`` does not import Lightning.

    logger:
      csv:
        _target_: prefdistill.utils.csv_logger.AppendingCSVLogger
        save_dir: ${paths.output_dir}
        name: csv
        version: ""
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class AppendingWriter(ExperimentWriter):
    """Lightning's CSV experiment writer, continuing an existing ``metrics.csv`` instead of deleting it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resumed run: each launch appends its rows.

    A launch that resumes from the checkpoint of step ``N`` first drops the rows of steps ``>= N``
    (:meth:`keep_steps_before`): the earlier launch logged them after that checkpoint and this one logs them
    again, so the file holds every step once (``N = 0``: a run restarted without a checkpoint starts anew).
    """

    def keep_steps_before(self, step: int) -> int:
        """Drop the rows of ``metrics.csv`` whose step is ``>= step`` (before this launch logs anything; rank
        0); returns how many were dropped."""
        from prefdistill.utils.atomic import atomic_write_text

        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        if not path.is_file():
            return 0
        with open(path, newline="") as file:
            reader = csv.DictReader(file)
            header, rows = reader.fieldnames or [], list(reader)
        kept = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
        if len(kept) < len(rows):
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=header)
            writer.writeheader()
            writer.writerows(kept)
            atomic_write_text(path, out.getvalue())
        return len(rows) - len(kept)

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingWriter(log_dir=self.log_dir)
        return self._experiment
