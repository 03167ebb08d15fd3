"""Exact-match accuracy of generated answers on the demo's verifiable task families.

The ground truth is stored in the data: each shipped ``demo`` row carries ``family`` and ``answer``
(:mod:`prefdistill.data.demo`; ``answer`` is null for facts and summaries, which are free text and
left out). A generation is judged by its family's rule, after normalising it (accents removed, curly
quotes straightened, thousands separators dropped, number words up to ninety-nine turned into digits):

* **numbers** (``arith``, ``convert``, ``letters``): a number is *asserted* when it follows ``=``, ``:``,
  *equals*, *equal to*, *is*, *are*, *was*, *has*, *have*, *makes* or *gives* and does not start an
  expression (``is 15 + 3``, ``is 12 times 11``: a restated question). The answer is the last asserted number before the
  first question mark that follows an asserted number (where a small model starts an invented new
  question): ``1 m = 100 cm, so 5 m = 500 cm`` -> 500; ``12 * 11 = 132.`` -> 132; ``The answer is 132``
  -> 132; ``12 * 2 = 24. What is 5 + 3? 5 + 3 = 8.`` -> 24. With none asserted: the first number the
  prompt does not contain (``500 centimeters``), else the last number. Right iff it equals the answer
  as a float and is not hedged (``132 or 121``: wrong).
* **words** (``capital``, ``opposite``, ``reverse``): the answer sentence is the first sentence that
  names the expected answer (whole words, case-insensitive) or a rival: another capital, anywhere; for
  opposites another word of the opposites table (the question's own word excepted) *asserted* -- quoted
  or right after *is*/*are*/*:* -- since words such as *answer*, *first* or *right* are also everyday
  words. Right iff it names the expected answer and no rival (``Paris or Lyon`` is right -- Lyon is no
  capital -- ``Paris, not Berlin`` is wrong). A reversed word may be spelled out (``e-l-p-p-a``).
* **letters** (``first``): the asserted letters are the quoted single letters (``'a'``), else a single
  letter after *is* / *letter*, else a reply that is one letter. Right iff exactly one distinct letter
  is asserted and it is the answer.

Accuracy is reported in % per family and over every verifiable row (``overall``), each with a
percentile-bootstrap 95 % interval (:func:`prefdistill.eval.metrics.bootstrap_ci`).
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from prefdistill.data import demo_facts as F
from prefdistill.eval.metrics import bootstrap_ci

NUMERIC = ("arith", "convert", "letters")
WORDS = ("capital", "opposite", "reverse")
LETTER = ("first",)
FAMILIES = NUMERIC + WORDS + LETTER

_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = {
    w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())
}
_WORD_NUMBER = re.compile(
    rf"\b(?:({'|'.join(_TENS)})(?:[\s-]({'|'.join(_UNITS[1:10])}))?|({'|'.join(_UNITS)}))\b", re.I
)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")
_MARKER = re.compile(r"(?:=|:|\bequals?(?:\s+to)?|\bis|\bare|\bwas|\bhas|\bhave|\bmakes|\bgives)\s*$", re.I)
_OPERATOR = re.compile(r"^\s*(?:[-+*/x×÷]|times|plus|minus|(?:divided|multiplied)\s+by)\s*\d", re.I)
_HEDGE = re.compile(r"^\s*(?:or|/)\s*\d", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def normalise(text: str) -> str:
    """Accents off, straight quotes, no thousands separators, number words as digits."""
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = text.translate(str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "`": "'"}))
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)

    def digits(m: re.Match) -> str:
        if m.group(3):
            return str(_UNITS.index(m.group(3).lower()))
        return str(_TENS[m.group(1).lower()] + (_UNITS.index(m.group(2).lower()) if m.group(2) else 0))

    return _WORD_NUMBER.sub(digits, text)


def asserted_number(output: str, prompt: str = "") -> tuple[float | None, bool]:
    """``(the number the output asserts, hedged?)`` under the rule in the module docstring."""
    text = normalise(output)
    found = list(_NUMBER.finditer(text))
    asserted = [
        m for m in found if _MARKER.search(text[: m.start()]) and not _OPERATOR.match(text[m.end() :])
    ]
    if asserted:
        new_question = text.find("?", asserted[0].end())
        pick = [m for m in asserted if new_question < 0 or m.start() < new_question][-1]
    else:
        in_prompt = {float(m.group()) for m in _NUMBER.finditer(normalise(prompt))}
        fresh = [m for m in found if float(m.group()) not in in_prompt]
        pick = fresh[0] if fresh else (found[-1] if found else None)
    if pick is None:
        return None, False
    return float(pick.group()), bool(_HEDGE.match(text[pick.end() :]))


@functools.lru_cache(maxsize=4096)
def _phrase(word: str, spelled_out: bool = False) -> re.Pattern:
    """Whole-word, case-insensitive pattern of ``word`` (its letters may be separated when spelled out)."""
    sep = r"[\s-]?" if spelled_out else r"\s+"
    body = sep.join(re.escape(c) for c in word) if spelled_out else sep.join(map(re.escape, word.split()))
    return re.compile(rf"(?<!\w){body}(?!\w)", re.I)


@functools.lru_cache(maxsize=4096)
def _asserted(word: str) -> re.Pattern:
    """``word`` quoted, or right after *is* / *are* / *:* (case-insensitive)."""
    w = r"\s+".join(map(re.escape, word.split()))
    return re.compile(rf"""['"]{w}['"]|(?:\bis|\bare|:)\s+{w}(?!\w)""", re.I)


def rivals(family: str, answer: str, prompt: str) -> list[re.Pattern]:
    """Patterns of the other answers an output of ``family`` might give instead (module docstring)."""
    if family == "capital":
        return [_phrase(c) for c in sorted(set(F.CAPITALS.values()) - {answer})]
    if family == "opposite":
        asked = set(re.findall(r"'([^']+)'", prompt))
        words = (set(F.OPPOSITES) | set(F.OPPOSITES.values())) - {answer} - asked
        return [_asserted(w) for w in sorted(words)]
    return []


def word_correct(output: str, answer: str, rival_patterns=(), spelled_out: bool = False) -> bool:
    """The first sentence naming the answer or a rival names the answer and no rival."""
    want, others = _phrase(normalise(answer), spelled_out), list(rival_patterns)
    for sentence in _SENTENCE_END.split(normalise(output)):
        hit, rival = bool(want.search(sentence)), any(p.search(sentence) for p in others)
        if hit or rival:
            return hit and not rival
    return False


def asserted_letters(output: str) -> set[str]:
    text = normalise(output)
    quoted = re.findall(r"""(?<!\w)['"]([a-z])['"](?!\w)""", text, re.I)
    if quoted:
        return {c.lower() for c in quoted}
    after = re.findall(r"\b(?:is|letter)\s*:?\s*([a-z])\b(?!')", text, re.I)
    if after:
        return {c.lower() for c in after}
    bare = re.sub(r"[\W_]", "", text)
    return {bare.lower()} if len(bare) == 1 else set()


_ANY_ASSERTED_WORD = re.compile(r"""['"]([a-z][a-z-]*)['"]|(?:\bis|\bare|:)\s+([a-z][a-z-]*)""", re.I)


def has_answer(family: str, output: str, answer: str, prompt: str = "") -> bool:
    """Whether ``output`` gives *an* answer of ``family``'s kind, right or wrong (the degeneracy check).

    Numbers: an asserted, unhedged number (the rule above). Capitals and opposites: a sentence naming the
    expected answer or a rival. Reversals: the expected answer, or any word quoted or after *is*/*are*/*:*.
    First letters: at least one asserted letter. ``"2 2122222 222102220."`` has a number but ``"9 = 9 = 9"``
    for ``Calculate 15 + 3.`` has one too: a parseable answer is necessary for a live output, not sufficient,
    which is why :mod:`prefdistill.eval.degeneracy` reports repetition and length beside it."""
    if family in NUMERIC:
        value, hedged = asserted_number(output, prompt)
        return value is not None and not hedged
    if family in WORDS:
        want = _phrase(normalise(answer), family == "reverse")
        patterns = [want, *rivals(family, answer, prompt)]
        if family == "reverse":
            patterns.append(_ANY_ASSERTED_WORD)
        return any(p.search(normalise(output)) for p in patterns)
    if family in LETTER:
        return bool(asserted_letters(output))
    raise ValueError(f"exact match: unknown family {family!r}; verifiable families: {FAMILIES}")


def is_correct(family: str, output: str, answer: str, prompt: str = "") -> bool:
    """Whether ``output`` gives ``answer`` for a prompt of ``family`` (rules in the module docstring)."""
    if family in NUMERIC:
        value, hedged = asserted_number(output, prompt)
        return value is not None and not hedged and value == float(answer)
    if family in WORDS:
        return word_correct(output, answer, rivals(family, answer, prompt), spelled_out=family == "reverse")
    if family in LETTER:
        return asserted_letters(output) == {answer.lower()}
    raise ValueError(f"exact match: unknown family {family!r}; verifiable families: {FAMILIES}")


def accuracy(correct: Sequence[bool], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """``{accuracy, ci, n, correct}``: accuracy % and its percentile-bootstrap 95 % interval."""
    x = [float(c) for c in correct]
    lo, hi = bootstrap_ci(x, n_boot=n_boot, seed=seed)
    acc = 100.0 * sum(x) / len(x) if x else float("nan")
    return {"accuracy": acc, "ci": [100.0 * lo, 100.0 * hi], "n": len(x), "correct": int(sum(x))}


def score(families, answers, outputs, prompts, *, n_boot: int = 1000, seed: int = 0):
    """``(metrics, summary, per_example)`` over the rows with an answer (others: ``None`` per example).

    ``metrics``: ``exact_match/overall`` and ``exact_match/<family>`` (%) and ``exact_match/n``;
    ``summary``: :func:`accuracy` per family and ``overall``."""
    per: list[bool | None] = [
        None if a is None else is_correct(f, o, a, p if isinstance(p, str) else p[-1]["content"])
        for f, a, o, p in zip(families, answers, outputs, prompts)
    ]
    by_family: dict[str, list[bool]] = {}
    for family, ok in zip(families, per):
        if ok is not None:
            by_family.setdefault(family, []).append(ok)
    summary = {f: accuracy(v, n_boot=n_boot, seed=seed) for f, v in sorted(by_family.items())}
    summary["overall"] = accuracy([ok for ok in per if ok is not None], n_boot=n_boot, seed=seed)
    metrics = {f"exact_match/{k}": v["accuracy"] for k, v in summary.items()}
    metrics["exact_match/n"] = summary["overall"]["n"]
    return metrics, summary, per


def _is_number(text: str) -> bool:
    return _NUMBER.fullmatch(text.strip()) is not None


def load_truths(file: str | Path) -> dict[str, tuple[str, str | None]]:
    """``{row id: (family, answer)}`` of a jsonl split whose rows carry ``family`` and ``answer``.

    A row without those fields, or with a non-string one, is an error naming the file, line and field."""
    file = Path(file)
    truths = {}
    with open(file, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise ValueError(f"{file}: line {line_no}: malformed JSON: {err}") from err
            for field, types in (("id", str), ("family", str), ("answer", (str, type(None)))):
                if not isinstance(row.get(field), types) or field not in row:
                    raise ValueError(
                        f"{file}: line {line_no}: exact match needs a string {field!r} field"
                        f"{' (null when not verifiable)' if field == 'answer' else ''}, got {row.get(field)!r}"
                    )
            if row["answer"] is not None and row["family"] not in FAMILIES:
                raise ValueError(f"{file}: line {line_no}: field 'family': {row['family']!r} has no "
                                 f"exact-match rule; verifiable families: {FAMILIES}")  # fmt: skip
            if row["family"] in NUMERIC and row["answer"] is not None and not _is_number(row["answer"]):
                raise ValueError(f"{file}: line {line_no}: field 'answer': {row['answer']!r} is not a number "
                                 f"(family {row['family']!r})")  # fmt: skip
            truths[row["id"]] = (row["family"], row["answer"])
    return truths
