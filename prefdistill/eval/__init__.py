"""Evaluation: generate on a test split, then score (``python evaluate.py``, configs/eval/*.yaml).

* :mod:`~prefdistill.eval.metrics`  ROUGE-1/2/L, word count, GSM8K extraction, win rates + bootstrap CI
* :mod:`~prefdistill.eval.exact_match`  exact-match accuracy per task family (demo rows' ``answer``)
* :mod:`~prefdistill.eval.reward`   reward-model scorer (``logits[:, 0]`` of (prompt, response))
* :mod:`~prefdistill.eval.judge`    OpenAI-compatible LLM judge: DPO-paper prompts, cache, retries
* :mod:`~prefdistill.eval.offline`  offline stand-in scorers (embedding similarity, likelihood)
* :mod:`~prefdistill.eval.alpaca`   AlpacaEval ``model_outputs.json`` export
* :mod:`~prefdistill.eval.suites`   ``EvalSuite``: prompts, generation settings, scorers
* :mod:`~prefdistill.eval.report`   results JSON, console / W&B tables, cross-run comparison
"""
