"""Teacher-table formats: stored bytes per token and the bias of each KD estimator against full-vocabulary KL.

    python benchmarks/teacher_formats.py            # SmolLM2-135M teacher, 10-layer pruned student, demo held-out
    python benchmarks/teacher_formats.py --quick    # tiny models (seconds; tests/benchmarks runs it)

Held-out data: the demo SFT records' validation split (chat template), ``--rows`` rows. Teacher
``teacher=smollm2_135m`` (LoRA off) and student ``model=smollm2_135m_l10`` (the study's pair). At every
response position the full-vocabulary forward KL(p_T ‖ q_S) is the reference; each format's table is built
from the same teacher log-probs (``prefdistill/modules/teacher_formats.py``) and read by ``kd_fkl`` exactly
as in training (``prefdistill/losses/sparse_teacher.py``):

* ``topk``       k tokens, both distributions renormalised on them (the original cache: biased);
* ``topk_tail``  k tokens + the teacher's mass outside them (a lower bound, penalises outside mass);
* ``sampled``    ``--draws`` tokens drawn from the teacher, importance-weighted (RS-KD: unbiased); its
  expectation is taken over ``--repeats`` independent tables (seeds), with the standard error.

Printed per format: bytes per token (the stored fields, float16 values, int32 ids, as the cache writes them),
the mean per-token estimate and its bias against the full KL (absolute and relative), and the relative error
of the (expected) gradient in the student's logits, ``‖E[ĝ] − g‖ / ‖g‖`` with ``g = q_S − p_T`` summed over
positions. The last line: ``teacher_formats <format>_bytes=<B> <format>_bias=<relative bias> ...``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _spec(name: str, teacher: bool):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    node = OmegaConf.load(ROOT / "configs" / "model" / f"{name}.yaml")
    node.lora = None
    if teacher and node.get("random_init") is not None:
        node.seed = int(node.get("seed") or 0) + 1  # as the teacher group draws it
    return instantiate(node)


def positions(quick: bool, rows: int):
    """(teacher log-probs (N, V), student logits (N, V), response tokens (N,)) at the held-out response positions."""
    from prefdistill.data import PreferenceDataModule
    from prefdistill.models import load_model, load_tokenizer

    student_name, teacher_name = ("tiny", "tiny") if quick else ("smollm2_135m_l10", "smollm2_135m")
    student_spec, teacher_spec = _spec(student_name, False), _spec(teacher_name, True)
    dm = PreferenceDataModule(source="shipped", record_type="sft", max_samples=rows, batch_size=4, max_length=256,
                              max_prompt_length=192, val_fraction=0.0)  # fmt: skip
    dm.connect(load_tokenizer(student_spec))
    dm.setup("validate")
    teacher, student = load_model(teacher_spec, trainable=False), load_model(student_spec, trainable=False)
    lp, sz, targets = [], [], []
    with torch.no_grad():
        for batch in dm.loader("validation"):
            labels = batch["chosen_labels"][:, 1:]
            mask = labels != -100
            kw = {"input_ids": batch["chosen_input_ids"], "attention_mask": batch["chosen_attention_mask"]}
            lp.append(torch.log_softmax(teacher(**kw).logits[:, :-1][mask].float(), -1))
            sz.append(student(**kw).logits[:, :-1][mask].float())
            targets.append(labels[mask])
    return torch.cat(lp), torch.cat(sz), torch.cat(targets)


def estimate(student: torch.Tensor, teacher: dict) -> tuple[float, torch.Tensor]:
    """(sum over positions of kd_fkl's per-token value, its gradient in the student logits (N, V))."""
    from prefdistill.losses import get_loss

    z = student.clone().requires_grad_(True)
    n = z.shape[0]
    out = get_loss("kd_fkl")(student_logits=z[None], mask=torch.ones(1, n, dtype=torch.bool),
                             **{k: v[None] for k, v in teacher.items()})  # fmt: skip
    total = out.loss.sum() * n  # token mean of one example -> sum
    (grad,) = torch.autograd.grad(total, z)
    return float(total.detach()), grad


def _inputs(fields: dict) -> dict:
    names = {"logps": "teacher_topk_logps", "ids": "teacher_topk_ids", "tail_logps": "teacher_tail_logps",
             "weights": "teacher_sample_weights"}  # fmt: skip
    return {names[k]: (v.long() if k == "ids" else v.float()) for k, v in fields.items() if k in names}


def measure(lp, sz, targets, fmt, repeats: int, chunk: int = 128) -> dict:
    """Bytes per token, mean estimate and gradient error of one format over all positions."""
    import dataclasses

    from prefdistill.modules.teacher_formats import bytes_per_token

    n = len(targets)
    total, grad_err, grad_norm, stored, per_table = 0.0, 0.0, 0.0, 0, []
    examples = torch.arange(n)  # one stream per position
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        full_grad = torch.softmax(sz[rows], -1) - lp[rows].exp()
        mean_grad, sums = torch.zeros_like(full_grad), []
        for r in range(repeats if fmt.name == "sampled" else 1):
            fields = dataclasses.replace(fmt, seed=r).rows(lp[rows], targets[rows], examples[rows])
            fields = fmt.finish(
                {"index": examples[rows], "offsets": torch.arange(len(examples[rows]) + 1), **fields}
            )
            stored += bytes_per_token(fields) * len(examples[rows]) if r == 0 else 0
            value, grad = estimate(sz[rows], _inputs(fields))
            sums.append(value)
            mean_grad += grad / (repeats if fmt.name == "sampled" else 1)
        per_table.append(sums)
        total += sum(sums) / len(sums)
        grad_err += float((mean_grad - full_grad).pow(2).sum())
        grad_norm += float(full_grad.pow(2).sum())
    by_seed = torch.tensor(per_table).sum(0) / n  # each table's mean estimate
    se = float(by_seed.std() / math.sqrt(len(by_seed))) if len(by_seed) > 1 else 0.0
    return {"bytes": stored / n, "mean": total / n, "se": se, "grad_rel_err": math.sqrt(grad_err / grad_norm)}


def main(argv=None) -> None:
    from prefdistill.modules.teacher_formats import TeacherFormat

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny models, 8 rows, 4 repeats")
    ap.add_argument("--rows", type=int, default=None, help="held-out rows (default 64; --quick 8)")
    ap.add_argument("--topk", default="12,64", help="k of the top-k formats (comma list)")
    ap.add_argument("--draws", default="12,64", help="draws of the sampled format (comma list)")
    ap.add_argument(
        "--repeats", type=int, default=None, help="independent sampled tables (default 20; --quick 4)"
    )
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()
    lp, sz, targets = positions(args.quick, args.rows or (8 if args.quick else 64))
    full = float((lp.exp() * (lp - torch.log_softmax(sz, -1))).sum(-1).mean())
    print(f"{len(targets)} held-out response positions, vocabulary {lp.shape[-1]}; full-vocabulary KL(p_T||q_S) "
          f"= {full:.4f} nats/token; full float32 logits = {4 * lp.shape[-1]} bytes/token")  # fmt: skip
    repeats = args.repeats or (4 if args.quick else 20)
    formats = [TeacherFormat(name, int(k)) for k in args.topk.split(",") for name in ("topk", "topk_tail")]
    formats += [TeacherFormat("sampled", int(k)) for k in args.draws.split(",")]
    print(
        f"{'format':>16} {'bytes/token':>11} {'estimate':>9} {'bias':>9} {'rel. bias':>9} {'grad rel. err':>13}"
    )
    line = {}
    for fmt in formats:
        m = measure(lp, sz, targets, fmt, repeats)
        bias = m["mean"] - full
        name = f"{fmt.name}_{fmt.k}"
        se = f" ± {m['se']:.4f}" if fmt.name == "sampled" else ""
        print(f"{name:>16} {m['bytes']:11.1f} {m['mean']:9.4f} {bias:+9.4f} {bias / full:+9.2%} "
              f"{m['grad_rel_err']:13.3f}{se}", flush=True)  # fmt: skip
        line[f"{name}_bytes"] = f"{m['bytes']:.0f}"
        line[f"{name}_bias"] = f"{bias / full:+.3f}"
    print(f"total {time.time() - started:.0f} s")
    print("teacher_formats " + " ".join(f"{k}={v}" for k, v in line.items()))


if __name__ == "__main__":
    main()
