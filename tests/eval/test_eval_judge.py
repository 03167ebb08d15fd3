"""LLM judge against a fake OpenAI-compatible server on 127.0.0.1: verdict parsing, A/B randomisation,
retries on 429/5xx, parse failures, the disk cache (a re-run sends nothing) and key hygiene."""

from __future__ import annotations

import json
import logging
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from prefdistill.eval.judge import TEMPLATES, Judge, parse_verdict, render

KEY_ENV, KEY = "PD_TEST_JUDGE_KEY", "sk-test-SECRET-0123456789"
MAX_REQUESTS = 60  # the server refuses (and the test fails) beyond this


class FakeJudgeServer:
    """Prefers the summary containing GOOD; malformed answers for posts containing MALFORMED;
    the first ``n_429`` requests get 429 and the next ``n_503`` get 503; model "deny" gets a 401
    whose body echoes the Authorization header."""

    def __init__(self, n_429: int = 0, n_503: int = 0):
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.n_429, self.n_503 = n_429, n_503
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, answer = server.respond(self.path, body, self.headers.get("Authorization"))
                payload = (
                    {"choices": [{"message": {"role": "assistant", "content": answer}}]}
                    if status == 200
                    else {"error": answer}
                )
                data = json.dumps(payload).encode()
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def respond(self, path: str, body: dict, auth: str | None) -> tuple[int, str]:
        with self.lock:
            self.requests.append({"path": path, "body": body, "auth": auth})
            n = len(self.requests)
            if n > MAX_REQUESTS:
                status = 500
            elif body["model"] == "deny":
                status = 401
            elif n <= self.n_429:
                status = 429
            elif n <= self.n_429 + self.n_503:
                status = 503
            else:
                status = 200
            self.statuses.append(status)
        if status == 401:
            return status, f"invalid key {auth}"
        if status != 200:
            return status, "try later"
        prompt = body["messages"][-1]["content"]
        if "MALFORMED" in prompt:
            return 200, random.Random(prompt).choice(
                ["I like A better.", "Preferred: A or B", "**Preferred:** A", ""]
            )
        a = re.search(r"Summary A:\n(.*?)\n\nSummary B:", prompt, re.S).group(1)
        return 200, f"Comparison: one is better.\nPreferred: {'A' if 'GOOD' in a else 'B'}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _judge(url: str, cache_dir, **kw) -> Judge:
    settings = dict(
        model="fake-judge", concurrency=4, max_retries=5, backoff_s=0.01, max_backoff_s=0.05, timeout_s=5
    )
    return Judge(
        template="tldr", base_url=url, api_key_env=KEY_ENV, cache_dir=str(cache_dir), **{**settings, **kw}
    )


def test_parse_verdict_is_strict():
    assert parse_verdict("Comparison: A is concise.\nPreferred: A", "Preferred") == "A"
    assert parse_verdict('Comparison: x\nPreferred: "B".\n\n', "Preferred") == "B"
    assert parse_verdict("Comparison: x\nMore helpful: B", "More helpful") == "B"
    for bad in ["Preferred: A\nThanks!", "preferred: a", "Preferred: A or B", "**Preferred:** A", "", "A"]:
        assert parse_verdict(bad, "Preferred") is None, bad
    assert parse_verdict("More helpful: A", "Preferred") is None


def test_templates_are_the_dpo_paper_prompts():
    tldr = render("tldr", "POST {a} text", "sum {b} one", "sum two")
    assert tldr.startswith(
        "Which of the following summaries does a better job of summarizing the most important"
    )
    assert (
        "A good summary is both precise and concise.\n\nPost:\nPOST {a} text\n\nSummary A:\nsum {b} one\n\n"
        in tldr
    )
    assert tldr.endswith('Comparison: <one-sentence comparison and explanation>\nPreferred: <"A" or "B">')
    hh = render("hh", "How do I bake bread?", "x", "y")
    assert hh.startswith(
        "For the following query to a chatbot, which response is more helpful?\n\nQuery: How do I bake"
    )
    assert 'state only "A" or "B" to indicate which response is more helpful' in hh
    assert hh.endswith('More helpful: <"A" or "B">')
    assert "A good summary" not in render("tldr_simple", "p", "a", "b")
    assert {k: v[1] for k, v in TEMPLATES.items()} == {
        "tldr": "Preferred",
        "tldr_simple": "Preferred",
        "hh": "More helpful",
    }


def test_judge_win_rate_retries_randomises_counts_failures_and_caches(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, KEY)
    caplog.set_level(logging.DEBUG)
    n = 12
    posts = [f"post {i}" + (" MALFORMED" if i in (3, 7) else "") for i in range(n)]
    candidates = [f"GOOD summary {i}" if i < 8 else f"BAD summary {i}" for i in range(n)]
    comparators = [f"BAD ref {i}" if i < 8 else f"GOOD ref {i}" for i in range(n)]
    with FakeJudgeServer(n_429=3, n_503=1) as server:
        judge = _judge(server.url, tmp_path / "cache")
        first = judge.win_rate(posts, candidates, comparators, seed=7)
        assert server.statuses.count(429) == 3 and server.statuses.count(503) == 1  # retried, then fine
        assert server.statuses.count(200) == n and len(server.requests) == n + 4 <= MAX_REQUESTS
        assert all(
            r["auth"] == f"Bearer {KEY}" and r["path"] == "/v1/chat/completions" for r in server.requests
        )
        assert all(
            r["body"]["model"] == "fake-judge" and r["body"]["temperature"] == 0.0 for r in server.requests
        )

        # Valid verdicts: i in {0,1,2,4,5,6} are wins, {8..11} losses; 3 and 7 are unparseable.
        assert first["parse_failures"] == 2 and first["request_errors"] == 0
        assert first["n"] == 10 and first["win_rate"] == pytest.approx(60.0)
        # A/B order: drawn per example from random.Random(seed), and both orders occur.
        rng = random.Random(7)
        expected = ["A" if rng.random() < 0.5 else "B" for _ in range(n)]
        assert [d["candidate"] for d in first["details"]] == expected
        assert 0 < first["candidate_first"] < n
        seen = {}
        for r in server.requests:
            prompt = r["body"]["messages"][-1]["content"]
            seen[re.search(r"Post:\npost (\d+)", prompt).group(1)] = prompt
        for i, pos in enumerate(expected):
            assert re.search(rf"Summary {pos}:\n{candidates[i]}\n", seen[str(i)])

        before = len(server.requests)
        second = _judge(server.url, tmp_path / "cache").win_rate(posts, candidates, comparators, seed=7)
        assert len(server.requests) == before  # everything came from the disk cache
        assert second["cached"] == n and second["win_rate"] == first["win_rate"]

        third = _judge(server.url, tmp_path / "cache").win_rate(posts, candidates, comparators, seed=8)
        assert len(server.requests) > before  # another order for some examples = other prompts

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and not any(KEY in p.read_text() for p in files)
    assert KEY not in json.dumps([first, second, third]) and KEY not in caplog.text


def test_non_retryable_error_is_counted_and_redacted(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, KEY)
    with FakeJudgeServer() as server:
        summary = _judge(server.url, tmp_path / "cache", model="deny").win_rate(
            ["p1", "p2"], ["a", "b"], ["c", "d"]
        )
        assert len(server.requests) == 2  # a 401 is not retried
    assert summary["request_errors"] == 2 and summary["n"] == 0
    assert "HTTP 401" in summary["details"][0]["error"] and "***" in summary["details"][0]["error"]
    assert KEY not in json.dumps(summary) and KEY not in caplog.text
    assert not list((tmp_path / "cache").rglob("*.json"))  # failures are not cached


def test_unreachable_server_exhausts_retries(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with FakeJudgeServer() as server:
        url = server.url
    summary = _judge(url, tmp_path / "cache", concurrency=1).win_rate(
        ["p"], ["a"], ["b"]
    )  # server is down now
    assert summary["request_errors"] == 1 and "after 6 attempts" in summary["details"][0]["error"]
