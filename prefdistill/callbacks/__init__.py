"""Lightning callbacks: throughput accounting (tokens/s, step time, TFLOP/s, MFU), stages' progress bar."""

from prefdistill.callbacks.progress import stage_progress
from prefdistill.callbacks.throughput import ThroughputMonitor, fit_totals, measured_peak_flops, step_flops

__all__ = ["ThroughputMonitor", "fit_totals", "measured_peak_flops", "stage_progress", "step_flops"]
