"""A small scoring server with the part of vLLM's OpenAI-compatible API a served teacher uses.

``GET /v1/models`` and ``POST /v1/completions`` with token-id prompts and ``prompt_logprobs`` (see
:mod:`prefdistill.models.served`): the model's real log-probs of every prompt position, from one batched
forward in float32, nothing generated (``max_tokens`` <= 1 is accepted and ``text`` is empty). For tests,
benchmarks and CPU runs where vLLM cannot be installed; standard library ``http.server``, one request at a
time. The teacher of a run is a ``configs/model`` file (LoRA off, as ``teacher=<name>`` loads it)::

    python -m prefdistill.models.logprob_server --model smollm2_135m --port 8000
    python train.py method=kd_fkl model=smollm2_135m_l10 teacher=served teacher.url=http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

log = logging.getLogger(__name__)


class LogprobServer:
    """Serves ``model`` (a frozen causal LM) as ``name`` on ``host:port`` (0 = a free port); see the docstring."""

    def __init__(self, model, tokenizer, name: str, *, host: str = "127.0.0.1", port: int = 0,
                 max_logprobs: int = 64, batch_size: int = 8):  # fmt: skip
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.max_logprobs, self.batch_size = max_logprobs, batch_size
        self._lock = threading.Lock()
        self._texts: dict[int, str] = {}  # token id -> its text decoded alone (vLLM's decoded_token)
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self.path.rstrip("/") != "/v1/models":
                    return self._send(404, {"error": f"no route {self.path}"})
                self._send(200, {"object": "list", "data": [{"id": server.name, "object": "model"}]})

            def do_POST(self):  # noqa: N802
                if self.path.rstrip("/") != "/v1/completions":
                    return self._send(404, {"error": f"no route {self.path}"})
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                status, body = server.respond(payload)
                self._send(status, body)

            def _send(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet: the training log is the place for progress
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> LogprobServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> LogprobServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the API -------------------------------------------------------------------------------------
    def respond(self, payload: dict) -> tuple[int, dict]:
        """(HTTP status, JSON body) of one completions request."""
        self.requests += 1
        prompts, k = payload.get("prompt"), payload.get("prompt_logprobs")
        if payload.get("model") not in (None, self.name):
            return 404, {"error": {"message": f"model {payload.get('model')!r} does not exist"}}
        if not prompts or not isinstance(prompts[0], list):
            return 400, {"error": {"message": "prompt must be a list of token-id lists"}}
        if not isinstance(k, int) or not 0 <= k <= self.max_logprobs:
            return 400, {"error": {"message": f"prompt_logprobs must be 0..{self.max_logprobs}, got {k}"}}
        if (payload.get("max_tokens") or 0) > 1:
            return 400, {"error": {"message": "this server scores prompts only: max_tokens <= 1"}}
        choices = []
        for start in range(0, len(prompts), self.batch_size):
            for i, entries in enumerate(self.prompt_logprobs(prompts[start : start + self.batch_size], k)):
                choices.append({"index": start + i, "text": "", "finish_reason": "length",
                                "prompt_logprobs": entries, "prompt_token_ids": prompts[start + i]})  # fmt: skip
        tokens = sum(map(len, prompts))
        usage = {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}
        return 200, {"object": "text_completion", "model": self.name, "choices": choices, "usage": usage}

    @torch.no_grad()
    def prompt_logprobs(self, prompts: list[list[int]], k: int) -> list[list[dict | None]]:
        """vLLM's ``prompt_logprobs`` of each prompt: None, then per token j the top-k and token j itself."""
        length = max(map(len, prompts))
        ids = torch.zeros(len(prompts), length, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for row, prompt in enumerate(prompts):
            ids[row, : len(prompt)], attention[row, : len(prompt)] = torch.tensor(prompt), 1
        with self._lock:
            logps = torch.log_softmax(self.model(input_ids=ids, attention_mask=attention).logits.float(), -1)
        out = []
        for row, prompt in enumerate(prompts):
            entries: list[dict | None] = [None]
            for j in range(1, len(prompt)):
                dist = logps[row, j - 1]
                values, top = dist.topk(k) if k else (dist[:0], torch.zeros(0, dtype=torch.long))
                ranked = {int(t): (float(v), rank) for rank, (t, v) in enumerate(zip(top, values), start=1)}
                if prompt[j] not in ranked:  # the prompt token itself, with its rank in the vocabulary
                    own = dist[prompt[j]]
                    ranked[prompt[j]] = (float(own), int((dist > own).sum()) + 1)
                entries.append({
                    str(t): {"logprob": v, "rank": rank, "decoded_token": self._text(t)}
                    for t, (v, rank) in ranked.items()
                })  # fmt: skip
            out.append(entries)
        return out

    def _text(self, token: int) -> str:
        if token not in self._texts:
            self._texts[token] = self.tokenizer.decode([token])
        return self._texts[token]


def main(argv=None) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from prefdistill.models import load_model, load_tokenizer
    from prefdistill.utils.run import config_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", default="smollm2_135m", help="a configs/model/<name>.yaml (loaded as a teacher)"
    )
    ap.add_argument("--name", default=None, help="the served model name (default: the config's name_or_path)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--max-logprobs", type=int, default=64)
    args = ap.parse_args(argv)
    node = OmegaConf.load(f"{config_dir()}/model/{args.model}.yaml")
    node.lora = None
    spec = instantiate(node)
    server = LogprobServer(load_model(spec, trainable=False), load_tokenizer(spec), args.name or spec.name_or_path,
                           host=args.host, port=args.port, max_logprobs=args.max_logprobs)  # fmt: skip
    print(f"serving {server.name} at {server.url}", flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
