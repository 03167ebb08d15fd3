"""Generate the shipped demo datasets (``prefdistill/assets/data/{demo,demo_scored,demo_lists,demo_correctness}/``).

Seven templated task families -- arithmetic, capitals, opposites, unit conversions,
spelling/counting, everyday facts and one-sentence summaries -- each with varied
prompt phrasings. Every ``demo`` row carries its ``family`` (the id's third part: ``arith``,
``capital``, ``opposite``, ``convert``, ``letters``, ``first``, ``reverse``, ``fact``, ``summary``) and
the ``answer`` an exact-match check compares with (:mod:`prefdistill.eval.exact_match`): the number
(``"18"``, ``"2400"`` for 24 meters in centimeters, ``"6"`` letters), the word (``"Paris"``, ``"cold"``,
``"elppa"``) or the letter (``"a"``); ``null`` for facts and summaries, whose answers are free text. ``chosen`` is always the correct answer in one concise, polite
style; ``rejected`` is a plausible wrong answer (about 60%) or a rude, unhelpful or
off-topic reply (about 40%). The signal is clear and consistent, so a few dozen DPO
steps on a small instruct model raise held-out reward accuracy and margin. Prompts
are unique and the train/validation/test split is by prompt, so held-out prompts
never appear in train.

Two derived sets are built from the same rows (see :mod:`prefdistill.data.demo_graded`):

* ``demo_scored`` -- the ``demo`` pairs plus ``chosen_score``/``rejected_score`` = ROUGE-L F1
  against the task's reference answer (for PLaD's margin loss);
* ``demo_correctness`` -- the rows with an exact-match answer, rejected = the plausible wrong answer in
  the chosen answer's own sentence (for a reward model of correctness);
* ``demo_lists`` -- 200/40/40 of the same prompts, each with n=4 responses of graded quality
  and synthetic teacher ``scores`` (for listwise losses).

Only the standard library, a fixed seed and (for ``demo_scored``) ``rouge_score`` are used, so
the files are byte-reproducible (a test regenerates them). Regenerate all three with::

    python -m prefdistill.data.demo [ROOT]     # default: prefdistill/assets/data
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from prefdistill.data import demo_facts as F
from prefdistill.data import demo_graded as graded

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "data"
OUT_DIR = ASSETS_DIR / "demo"
SPLIT_SIZES = {"train": 800, "validation": 100, "test": 100}
SEED = 1234

WORDS = (
    "apple garden window pencil rabbit orange yellow river bridge candle doctor forest guitar "
    "island jacket kitten ladder mirror number planet rocket silver ticket violin winter basket "
    "button castle dragon engine flower hammer jungle lemon monkey needle pocket puzzle school "
    "spider tomato turtle wallet zebra cookie pillow blanket carrot desert mountain ocean camera "
    "teacher kitchen library shadow thunder coffee"
).split()
UNITS = [  # (unit, smaller unit, factor)
    ("meters", "centimeters", 100),
    ("kilometers", "meters", 1000),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("kilograms", "grams", 1000),
    ("liters", "milliliters", 1000),
    ("days", "hours", 24),
    ("weeks", "days", 7),
    ("feet", "inches", 12),
    ("dollars", "cents", 100),
]
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
OP_WORDS = {"+": "plus", "-": "minus", "*": "times"}


def _bad(rng: random.Random, wrong: str) -> str:
    """The rejected answer: a plausible wrong one, or a rude / off-topic reply."""
    r = rng.random()
    if r < 0.6:
        return wrong
    return rng.choice(F.RUDE) if r < 0.85 else rng.choice(F.OFF_TOPIC)


def _off_by(rng: random.Random, value: int) -> int:
    return value + rng.choice([-10, -2, -1, 1, 2, 10])


def arithmetic(rng: random.Random):
    for _ in range(320):
        op = rng.choice("++--*")
        a, b = (
            (rng.randint(2, 12), rng.randint(2, 12))
            if op == "*"
            else (rng.randint(10, 99), rng.randint(2, 60))
        )
        if op == "-" and b > a:
            a, b = b, a
        res = OPS[op](a, b)
        prompt = rng.choice(["What is {a} {o} {b}?", "Calculate {a} {o} {b}.", "What is {a} {w} {b}?"])
        prompt = prompt.format(a=a, b=b, o=op, w=OP_WORDS[op])
        right, wrong = f"{a} {op} {b} = {res}.", f"{a} {op} {b} = {_off_by(rng, res)}."
        yield "arith", prompt, right, wrong, str(res), str(res)


def capitals(rng: random.Random):
    names = list(F.CAPITALS)
    for country in names:
        wrong = F.CAPITALS[rng.choice([c for c in names if c != country])]
        prompt = rng.choice(
            [
                "What is the capital of {c}?",
                "Name the capital city of {c}.",
                "Which city is the capital of {c}?",
            ]
        )
        capital = F.CAPITALS[country]
        yield (
            "capital",
            prompt.format(c=country),
            f"The capital of {country} is {capital}.",
            (f"The capital of {country} is {wrong}."),
            capital,
            capital,
        )


def opposites(rng: random.Random):
    words = list(F.OPPOSITES)
    for word in words:
        wrong = F.OPPOSITES[rng.choice([w for w in words if w != word])]
        prompt = rng.choice(
            [
                "What is the opposite of '{w}'?",
                "Give the antonym of '{w}'.",
                "What word means the opposite of '{w}'?",
            ]
        )
        yield (
            "opposite",
            prompt.format(w=word),
            f"The opposite of '{word}' is '{F.OPPOSITES[word]}'.",
            (f"The opposite of '{word}' is '{wrong}'."),
            F.OPPOSITES[word],
            F.OPPOSITES[word],
        )


def conversions(rng: random.Random):
    for _ in range(220):
        big, small, factor = rng.choice(UNITS)
        n = rng.randint(2, 30)
        prompt = rng.choice(["How many {s} are in {n} {b}?", "Convert {n} {b} to {s}."]).format(
            s=small, n=n, b=big
        )
        wrong = n * factor // rng.choice([10, 2]) if rng.random() < 0.5 else n * factor + factor
        right = f"{n * factor} {small}"
        chosen, rejected = f"{n} {big} is {right}.", f"{n} {big} is {wrong} {small}."
        yield "convert", prompt, chosen, rejected, right, str(n * factor)


def spelling(rng: random.Random):
    for word in WORDS:
        yield (
            "letters",
            rng.choice(["How many letters are in the word '{w}'?", "Count the letters in '{w}'."]).format(
                w=word
            ),
            f"The word '{word}' has {len(word)} letters.",
            f"The word '{word}' has {len(word) + rng.choice([-2, -1, 1, 2])} letters.",
            str(len(word)),
            str(len(word)),
        )
        first_wrong = rng.choice([c for c in "bcdfghklmnprstw" if c != word[0]])
        yield (
            "first",
            f"What is the first letter of '{word}'?",
            f"The first letter of '{word}' is '{word[0]}'.",
            (f"The first letter of '{word}' is '{first_wrong}'."),
            f"'{word[0]}'",
            word[0],
        )
        yield (
            "reverse",
            f"Spell '{word}' backwards.",
            f"'{word}' backwards is '{word[::-1]}'.",
            (f"'{word}' backwards is '{word[::-1][1:] + word[-1]}'."),
            word[::-1],
            word[::-1],
        )


def facts(rng: random.Random):
    for question, right, wrong in F.FACTS:
        yield "fact", question, right, wrong, None, None  # free text: not in demo_lists nor exact match


def summaries(rng: random.Random):
    for _ in range(260):
        name, (place, act), day, filler = (
            rng.choice(F.SUMMARY_NAMES),
            rng.choice(F.SUMMARY_SCENES),
            rng.choice(F.SUMMARY_DAYS),
            rng.choice(F.SUMMARY_FILLERS),
        )
        other_place, other_act = rng.choice([s for s in F.SUMMARY_SCENES if s[0] != place])
        sentence = f"{day[0].upper() + day[1:]}, {name} went to the {place} to {act} {filler}."
        prompt = rng.choice(["Summarise this sentence: {s}", "Give a short summary: {s}"]).format(s=sentence)
        yield (
            "summary",
            prompt,
            f"{name} went to the {place} to {act}.",
            f"{name} went to the {other_place} to {other_act}.",
            f"{name} went to the {place}.",
            None,  # free text: no exact-match answer
        )


FAMILIES = [arithmetic, capitals, opposites, conversions, spelling, facts, summaries]


def task_splits(seed: int = SEED) -> dict[str, list[dict]]:
    """The demo rows with what the derived sets need: ``kind``, ``wrong`` (the plausible wrong
    answer, also when ``rejected`` is rude), ``terse`` (bare correct answer, or ``None``) and
    ``answer`` (the exact-match ground truth, or ``None``)."""
    rng = random.Random(seed)
    rows, seen = [], set()
    for family in FAMILIES:
        for kind, prompt, chosen, wrong, terse, answer in family(rng):
            if prompt in seen:
                continue
            seen.add(prompt)
            rows.append({"kind": kind, "prompt": prompt, "chosen": chosen, "rejected": _bad(rng, wrong)})
            rows[-1].update(wrong=wrong, terse=terse, answer=answer)
    rng.shuffle(rows)
    total = sum(SPLIT_SIZES.values())
    if len(rows) < total:
        raise RuntimeError(f"demo generator produced {len(rows)} unique prompts, need {total}")
    splits, start = {}, 0
    for split in ("test", "validation", "train"):
        chunk = rows[start : start + SPLIT_SIZES[split]]
        start += SPLIT_SIZES[split]
        splits[split] = [{"id": f"{split}-{i:04d}-{r['kind']}", **r} for i, r in enumerate(chunk)]
    return splits


def generate(seed: int = SEED) -> dict[str, list[dict]]:
    """The ``demo`` splits: unique prompts, shuffled, then cut into train/validation/test; each row also
    carries its task ``family`` and the exact-match ``answer`` (``None`` for facts and summaries)."""
    keys = ("id", "prompt", "chosen", "rejected")
    return {
        split: [{**{k: r[k] for k in keys}, "family": r["kind"], "answer": r["answer"]} for r in rows]
        for split, rows in task_splits(seed).items()
    }


DATASETS = {  # shipped folder -> generator of its splits
    "demo": generate,
    "demo_scored": lambda seed: graded.scored_splits(generate(seed)),
    "demo_lists": lambda seed: graded.list_splits(task_splits(seed), seed),
    "demo_correctness": lambda seed: graded.correctness_splits(task_splits(seed)),
}


def write(root: Path = ASSETS_DIR, seed: int = SEED, names=tuple(DATASETS)) -> list[Path]:
    """Write ``root/<name>/<split>.jsonl`` for each shipped demo dataset."""
    paths = []
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        for split, rows in DATASETS[name](seed).items():
            path = root / name / f"{split}.jsonl"
            text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            path.write_bytes(text.encode("utf-8"))
            paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write(Path(sys.argv[1]) if len(sys.argv) > 1 else ASSETS_DIR):
        print(p)
