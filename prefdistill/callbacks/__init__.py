"""Lightning callbacks: throughput accounting (tokens/s, step time, TFLOP/s, MFU)."""

from prefdistill.callbacks.throughput import ThroughputMonitor, fit_totals, measured_peak_flops, step_flops

__all__ = ["ThroughputMonitor", "fit_totals", "measured_peak_flops", "step_flops"]
