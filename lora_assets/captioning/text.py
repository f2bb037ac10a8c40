"""Caption text: cleaning generated text, word limits, repeated n-grams, final assembly."""

from __future__ import annotations

import re
from collections.abc import Sequence

# BLIP-large's well-known hallucinated words ("arafed man sitting ...").
JUNK_WORDS = frozenset({"arafed", "araffe", "arafe", "arafly", "arafy"})
_SPACE = re.compile(r"\s+")


def words(text: str) -> list[str]:
    return [w for w in _SPACE.split(text.strip()) if w]


def word_count(text: str) -> int:
    """Words as a person counts them (commas do not split words)."""
    return len(words(text.replace(",", " ")))


def clean_generated(text: str, prompt: str, ngram: int, max_words: int) -> str:
    """Strip the prompt BLIP echoes and junk words, cut repetition loops (every repeated run of
    `ngram` or more words is removed where it repeats), then cut to `max_words` (at a comma or
    full stop when one is near the end)."""
    text = _SPACE.sub(" ", text).strip()
    if prompt and text.lower().startswith(prompt.lower()):
        text = text[len(prompt) :].strip()
    kept = [w for w in words(text) if _norm(w) not in JUNK_WORDS]
    if ngram >= 2:
        kept = remove_repeats(kept, ngram)
    if len(kept) > max_words:
        kept = kept[:max_words]
        for end in range(len(kept) - 1, max(0, len(kept) - 8), -1):
            if kept[end].endswith((",", ".", ";")):
                kept = kept[: end + 1]
                break
    return " ".join(kept).strip(" ,;")


def remove_repeats(tokens: list[str], ngram: int) -> list[str]:
    """Remove, from its second occurrence on, every run of >= `ngram` words seen earlier."""
    tokens = list(tokens)
    while True:
        normal = [_norm(t) for t in tokens]
        first: dict[tuple[str, ...], int] = {}
        for j in range(len(normal) - ngram + 1):
            gram = tuple(normal[j : j + ngram])
            k = first.setdefault(gram, j)
            if k != j:
                length = ngram
                while (
                    j + length < len(normal) and k + length < j and normal[k + length] == normal[j + length]
                ):
                    length += 1
                del tokens[j : j + length]
                break
        else:
            return tokens


def _norm(word: str) -> str:
    return word.lower().strip(".,;:!?")


def has_repeated_ngram(text: str, ngram: int) -> bool:
    grams = [tuple(g) for g in _ngrams([_norm(w) for w in words(text)], ngram)]
    return len(grams) != len(set(grams))


def _ngrams(tokens: Sequence[str], n: int) -> list[Sequence[str]]:
    return [tokens[i : i + n] for i in range(len(tokens) - n + 1)]


def assemble(trigger: str, class_token: str, body: str, tags: Sequence[str]) -> str:
    """`"{trigger} {class_token}, {body}, {tag}, ..."`: the trigger first, so `keep_tokens = 1`
    keeps it in place when captions are shuffled during training."""
    head = f"{trigger} {class_token}"
    body = body.strip().strip(",").strip()
    if body.lower().startswith(head.lower()):
        body = body[len(head) :].strip(" ,")
    parts = [head, *([body] if body else []), *(tag for tag in tags if tag)]
    return ", ".join(parts)
