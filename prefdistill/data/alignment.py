"""Which student tokens and which teacher tokens cover the same text: alignment across tokenizers.

Token-level distillation from a teacher with another tokenizer (``uld``, ``gold``) compares the two
models where their tokenizations of the *same response text* cover the same characters. This module
works that out once per example, in the data path (the teacher top-k cache stores the result, see
:mod:`prefdistill.modules.teacher_cache`), so training only gathers padded tensors:

1. :func:`response_spans` -- the character span, within the response text, of every token of a
   tokenized response (fast-tokenizer offset mappings of the text the template rendered; tokens the
   template adds around the text, and the appended eos, are zero-width at the text's end).
2. :func:`align_spans` -- walk both span lists in order, closing a group wherever the two
   tokenizations put a token boundary at the same character (TRL ``GOLDTrainer``'s
   ``_align_by_byte_offsets``, on characters rather than UTF-8 bytes: both sides index the same
   Python string). A group of one token on each side is *matched*: the two tokenizers agree on that
   span. The end-of-sequence tokens of two complete responses form a final matched group; tokens
   after the last common boundary (a response truncated on one side) stay unaligned.
3. :func:`vocabulary_map` -- teacher id -> student id of the token with the same *surface text*
   (what the token decodes to: SentencePiece's ``▁The`` and byte-level BPE's ``ĠThe`` are both
   `` The``), injective, eos -> eos. TRL's GOLD matches raw vocabulary strings instead, which
   leaves 14.8k of SmolLM2's 49k tokens matched in Gemma-3's vocabulary against 46.0k by surface.
4. :func:`shared_vocabulary` -- for the same-family case: the number of leading ids on which two
   tokenizers agree token by token (padded embedding sizes, e.g. Qwen2.5-7B 152064 vs 0.5B 151936).

Worked example (tested): the response ``"Paris is"`` tokenized ``["Par", "is", " is"]`` by the student
(spans (0,3) (3,5) (5,8)) and ``["Paris", " is"]`` by the teacher ((0,5) (5,8)) gives the groups
student [0, 1] ~ teacher [0] (unmatched: a split token) and student [2] ~ teacher [1] (matched).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prefdistill.data.records import Prompt
from prefdistill.data.templates import as_messages, render_raw_prompt

Span = tuple[int, int]


@dataclass(frozen=True)
class Group:
    """Student tokens ``[s0, s1)`` and teacher tokens ``[t0, t1)`` that cover the same characters."""

    s0: int
    s1: int
    t0: int
    t1: int

    @property
    def matched(self) -> bool:
        """One token on each side: both tokenizers cut the text at the same two places."""
        return self.s1 - self.s0 == 1 and self.t1 - self.t0 == 1


# ------------------------------------------------------------------ 1. spans of a tokenized response
def _renderings(tokenizer, template: str, prompt: Prompt, response: str) -> list[tuple[str, int, int]]:
    """Candidate ``(text, response_char_start, prompt_token_count)`` renderings, in the order
    :class:`~prefdistill.data.templates.PromptEncoder` tries them (chat, raw, the response alone)."""
    out = []
    if template == "chat":
        messages = as_messages(prompt)
        head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": response}],
            tokenize=False,
            add_generation_prompt=False,
        )
        start = full.find(response, len(head)) if full.startswith(head) else -1
        if start >= 0:
            n_head = len(tokenizer(head, add_special_tokens=False)["input_ids"])
            out.append((full, start, n_head))
    else:
        text = render_raw_prompt(prompt)
        sep = "" if not text or text[-1].isspace() else " "
        out.append((sep + response, len(sep), 0))
    out.append((response, 0, 0))  # the encoder's fallback: the response on its own, plus eos
    return out


def response_spans(
    tokenizer, template: str, prompt: Prompt, response: str, response_ids: Sequence[int]
) -> list[Span] | None:
    """(start, end) character span within ``response`` of every id of ``response_ids``.

    ``response_ids`` are the (possibly truncated) response tokens the data path produced with
    ``template`` (``chat`` or ``raw``, resolved). Spans are clipped to ``[0, len(response)]``: template
    tokens after the text and the appended eos are ``(len, len)``. Returns None when no rendering
    reproduces ``response_ids`` (the caller names the row).
    """
    n = len(response)
    for text, start, n_head in _renderings(tokenizer, template, prompt, response):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"][n_head:]), list(enc["offset_mapping"][n_head:])
        k = min(len(ids), len(response_ids))
        if list(response_ids[:k]) != ids[:k]:
            continue
        extra = len(response_ids) - k  # tokens past the rendered text: the appended eos
        if extra > 1 or (extra == 1 and response_ids[-1] != tokenizer.eos_token_id):
            continue
        spans = [(min(max(a - start, 0), n), min(max(b - start, 0), n)) for a, b in offsets[:k]]
        return spans + [(n, n)] * extra
    return None


# ------------------------------------------------------------------ 2. groups of tokens with one span
def align_spans(
    student: Sequence[Span], teacher: Sequence[Span], *, student_eos: bool = False, teacher_eos: bool = False
) -> list[Group]:
    """Groups of consecutive student and teacher tokens ending at the same character.

    Only tokens that cover text (``end > start``) take part in the walk; a zero-width token (template
    token, eos) is left out, except that when both responses end in their eos (``*_eos``) and the walk
    consumed all text on both sides, the two eos form a last matched group. Text after the last
    common boundary (one side truncated) belongs to no group.
    """
    s_text = [i for i, (a, b) in enumerate(student) if b > a]
    t_text = [j for j, (a, b) in enumerate(teacher) if b > a]
    groups: list[Group] = []
    si = ti = 0
    s_start = t_start = 0
    while si < len(s_text) and ti < len(t_text):
        s_end, t_end = student[s_text[si]][1], teacher[t_text[ti]][1]
        if s_end <= t_end:
            si += 1
        if t_end <= s_end:
            ti += 1
        if s_end == t_end:
            groups.append(Group(s_text[s_start], s_text[si - 1] + 1, t_text[t_start], t_text[ti - 1] + 1))
            s_start, t_start = si, ti
    done = si == len(s_text) and ti == len(t_text) and s_start == si and t_start == ti
    if done and student_eos and teacher_eos and len(student) and len(teacher):
        groups.append(Group(len(student) - 1, len(student), len(teacher) - 1, len(teacher)))
    return groups


# ------------------------------------------------------------------ 3./4. vocabularies
def surface_strings(tokenizer) -> list[str | None]:
    """The text each id decodes to on its own (None: special tokens, partial UTF-8 bytes, empty)."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    special = set(getattr(tokenizer, "added_tokens_decoder", {}) or {}) | set(tokenizer.all_special_ids)
    out: list[str | None] = []
    for i, token in enumerate(tokens):
        if i in special or token is None:
            out.append(None)
            continue
        text = decoder.decode([token]) if decoder is not None else tokenizer.convert_tokens_to_string([token])
        out.append(text if text and "\ufffd" not in text else None)
    return out


def vocabulary_map(student_tokenizer, teacher_tokenizer, teacher_vocab_size: int | None = None) -> list[int]:
    """``map[teacher_id]`` = the student id with the same surface text, or -1; one-to-one, eos -> eos.

    When several ids of one tokenizer decode to the same text, the lowest id takes part (the others
    map to -1), so no student token receives two teacher tokens' mass. ``teacher_vocab_size`` (the
    teacher model's output size, >= its tokenizer's) sets the length: padding rows map to -1.
    """
    student_ids: dict[str, int] = {}
    for i, text in enumerate(surface_strings(student_tokenizer)):
        if text is not None:
            student_ids.setdefault(text, i)
    size = max(len(teacher_tokenizer), teacher_vocab_size or 0)
    mapping = [-1] * size
    taken: set[str] = set()
    for j, text in enumerate(surface_strings(teacher_tokenizer)):
        if text is not None and text in student_ids and text not in taken:
            taken.add(text)
            mapping[j] = student_ids[text]
    t_eos, s_eos = teacher_tokenizer.eos_token_id, student_tokenizer.eos_token_id
    if t_eos is not None and s_eos is not None:
        mapping = [-1 if m == s_eos else m for m in mapping]
        mapping[t_eos] = s_eos
    return mapping


def shared_vocabulary(tokenizer_a, tokenizer_b, size_a: int, size_b: int) -> int | None:
    """``n = min(size_a, size_b)`` (model output sizes) when the two tokenizers differ only in padding,
    else None: they agree token string by token string on every id below ``n`` (an id past a
    tokenizer's length counting as an empty row), and every id at or past ``n`` is an empty row or an
    added special token (which plain text never produces), so no text tokenizes differently."""
    n = min(size_a, size_b)

    def tokens(tok) -> list[str | None]:
        known = tok.convert_ids_to_tokens(list(range(min(n, len(tok)))))
        return list(known) + [None] * (n - len(known))

    def only_padding_past_n(tok) -> bool:
        special = {i for i, t in (getattr(tok, "added_tokens_decoder", {}) or {}).items() if t.special}
        return all(i in special for i in range(n, len(tok)))

    same = tokens(tokenizer_a) == tokens(tokenizer_b)
    return n if same and only_padding_past_n(tokenizer_a) and only_padding_past_n(tokenizer_b) else None


def one_vocabulary(
    student_tokenizer, teacher_tokenizer, student_rows: int, teacher_rows: int, what: str
) -> int | None:
    """For token-level KD on one vocabulary: None when both models have the same output size, the shared
    size when the vocabularies differ only in padding (:func:`shared_vocabulary`), else a ``ValueError``
    naming both tokenizers and pointing to the cross-tokenizer losses. ``what`` names the loss."""
    shared = shared_vocabulary(student_tokenizer, teacher_tokenizer, student_rows, teacher_rows)
    if shared is None:
        raise ValueError(
            f"{what} needs one vocabulary, but the student's tokenizer {tokenizer_name(student_tokenizer)}, output "
            f"size {student_rows}, and the teacher's {tokenizer_name(teacher_tokenizer)}, output size {teacher_rows}, "
            "differ in more than padding; use a cross-tokenizer loss (method=uld or method=gold) or a "
            "sequence-level method (seqkd, plad, pad) for a teacher with another tokenizer"
        )
    return None if shared == student_rows == teacher_rows else shared


def tokenizer_name(tokenizer) -> str:
    """How error messages name a tokenizer: its source and size."""
    return f"{getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__} ({len(tokenizer)} tokens)"
