"""Split a long plain text into sentence-aligned segments for batch synthesis.

A batch job's text (up to 200 000 characters) is cut into segments of at most
`max_chars` spoken characters, each synthesized on its own. A `Segment` holds offsets into
the original text, not the text, so the orchestration history stays small; the activity
that speaks a segment takes `segment.spoken_text(text)`.

The segments tile the text: contiguous, in order, every character in exactly one of them
(`"".join(text[s.start:s.end] for s in segments) == text`). The whitespace between two
sentences ends the segment before it (the text's leading whitespace starts the first
one), so no segment is whitespace only. `max_chars` bounds `Segment.characters`, the
segment without its leading and trailing whitespace: what is spoken, and what a
provider's request limit counts.

Where a segment may end, from best to worst:

1. At a sentence end, packed greedily: as many whole sentences as fit. A sentence ends at
   ``. ! ? … ‼ ⁇ ⁈ ⁉`` followed by whitespace (or by a CJK character), at ``。 ！ ？ ｡``
   (CJK), ``। ॥`` (Devanagari), ``؟ ۔`` (Arabic, Urdu), ``։ ። ။`` (Armenian, Ethiopic,
   Myanmar) with or without whitespace, each with any closing quotes and brackets after
   it; and at every paragraph break (a blank line, U+2029, a form feed), punctuated or not.
   Not a sentence end: a Latin terminator followed by a lowercase word (``etc. and``,
   ``“Help!” she cried``); a ``.`` after a title or a term that always precedes what it
   names (``Mr. Dr. St. Prof. vs. cf.``...), after a reference word before a number
   (``No. 5``, ``Fig. 3``, ``Jan. 12``), after single letters with dots (initials
   ``J. R. R. Tolkien``, ``U.S.``, ``e.g.``, ``i.e.``, ``Ph.D.``), or after a list number
   at the start of a line (``1. Introduction``). A ``.`` not followed by whitespace never
   ends a sentence, so numbers (``3.14``, ``1.000.000``, ``2.0.1``), URLs and e-mail
   addresses stay whole. When unsure the rule keeps the sentence whole: a missed end only
   makes a longer sentence, while a false one can cut a phrase in two.
2. Inside a sentence longer than `max_chars`, which then starts a new segment, its pieces
   packed greedily in turn: at the sentence ends refused only for the lowercase word
   after them; else after clause punctuation (``, ; :`` followed by whitespace, a spaced
   hyphen or en dash, ``— ―``, CJK ``、 ， ； ：``, Arabic ``، ؛``); else at a line break;
   else at any whitespace; else (`max_chars` characters without any) a hard cut, moved
   back so that it does not separate a combining mark, a virama conjunct, a ZWJ sequence,
   an emoji modifier, a regional-indicator pair or a surrogate pair from what precedes it
   (unless one such cluster is longer than `max_chars`: the limit wins).

Hand-written rather than a library. Nothing in requirements.txt segments sentences, and
of the candidates on PyPI: pysbd is pure Python and took 9.9 s on 200 000 characters of
English here; sentencex (a Rust extension, ~300 languages, 1.3 ms) is fast and lossless
but wants the text's language, and a batch text may mix languages or have none declared;
blingfire, syntok and nupunkt are tokenizers tuned for English or Latin scripts. What
batch synthesis needs is narrower than general segmentation: one compiled `re` pass for
candidates, a constant-time look at the word around each, and a linear packing. On this
machine 200 000 characters of English prose take 6 ms, and a worst case of 7 800 short
mixed-script sentences 26 ms.
"""

# The punctuation of many scripts is the point of this module: its strings and docstrings
# hold the characters themselves, which RUF001/RUF002 would flag as look-alikes.
# ruff: noqa: RUF001, RUF002

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Final, NamedTuple

__all__ = ["DEFAULT_MAX_CHARS", "Segment", "segment_text"]

DEFAULT_MAX_CHARS: Final = 3000

_CLOSERS: Final = "\"'”’»›)\\]}」』）】〕〉》〗〙〛］｝＂＇"
_OPENERS: Final = "\"'“‘„«‹([{「『（【〔〈《〖〘〚［｛¿¡"
_LATIN_ENDS: Final = ".!?…‼⁇⁈⁉"
# Full stops and question/exclamation marks of scripts written without a space after them
# (CJK), or whose sentence punctuation cannot be mistaken for an abbreviation or a number.
_SCRIPT_ENDS: Final = "。！？｡।॥؟۔։።။"
# Scripts written without spaces between sentences: after a Latin terminator one of these
# starts the next sentence directly (Chinese and Japanese text often uses ASCII "?" "!").
_NO_SPACE_SCRIPTS: Final = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"

# The lookahead repeats every alternative's first character: `re` then skips to candidates
# with a set lookup instead of trying each alternative at every position (twice as fast).
# A run of terminators is matched from its first character only, and possessively, so a
# long run ("!!!!...") is scanned once, never once per character.
_SENTENCE_END: Final = re.compile(
    rf"(?=[{_LATIN_ENDS}{_SCRIPT_ENDS}\n\u2029\f])"
    rf"(?:(?<![{_LATIN_ENDS}])(?P<latin>[{_LATIN_ENDS}]++)[{_CLOSERS}]*+"
    rf"(?:(?P<space>\s+)|(?=[{_NO_SPACE_SCRIPTS}]))"
    rf"|[{_SCRIPT_ENDS}]++[{_CLOSERS}]*+\s*+"
    r"|(?:\n[^\S\n]*+\n|[\u2029\f])\s*+)"
)
_PARAGRAPH_BREAK: Final = re.compile(r"\n[^\S\n]*\n|[\u2029\f]")
# Cuts inside a sentence longer than max_chars (see `_FALLBACKS`).
_CLAUSE_END: Final = re.compile(
    rf"[,;:][{_CLOSERS}]*\s+|\s[-–]\s+|[—―]+\s*|[、，；：﹐﹑﹔﹕،؛]\s*"
)
_LINE_BREAK: Final = re.compile(r"[\n\u2028\u2029]\s*")
_WHITESPACE: Final = re.compile(r"\s+")
_NON_SPACE: Final = re.compile(r"\S")

# Single letters with dots, possibly two-letter parts: initials, U.S., e.g., i.e., Ph.D.
_DOTTED_LETTERS: Final = re.compile(r"(?:[^\W\d_]{1,2}\.)*[^\W\d_]\.")
# Followed by what they name, so never at the end of a sentence.
_TITLES: Final = frozenset({
    "mr", "mrs", "ms", "mx", "messrs", "mmes", "mme", "mlle", "dr", "drs", "prof", "profs",
    "st", "ste", "mt", "ft", "rev", "hon", "gen", "col", "lt", "capt", "cpt", "sgt", "cpl",
    "maj", "adm", "cmdr", "brig", "gov", "sen", "rep", "pres", "supt", "insp", "hr", "hrn",
    "vs", "cf", "viz", "approx", "ca", "al",
})  # fmt: skip
# Followed by a number: "No. 5", "Fig. 3", "Jan. 12".
_BEFORE_NUMBER: Final = frozenset({
    "no", "nos", "nr", "vol", "vols", "pp", "art", "arts", "ch", "chap", "sec", "secs",
    "fig", "figs", "eq", "eqs", "ref", "refs", "tab", "op", "ed",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
})  # fmt: skip
_WORD_LOOKBEHIND: Final = 32  # characters looked at before a "."; abbreviations are short
_LIST_NUMBER_DIGITS: Final = 3

_ZWJ: Final = "\u200d"
_VIRAMA: Final = 9  # canonical combining class of viramas (Devanagari "्" and others)


@dataclass(frozen=True)
class Segment:
    """One piece of a batch text: `text[start:end]`, `characters` of it spoken."""

    index: int
    start: int
    end: int
    characters: int

    def spoken_text(self, text: str) -> str:
        """What to synthesize for this segment of `text`: its slice, stripped of whitespace."""
        return text[self.start : self.end].strip()


class _Piece(NamedTuple):
    """A unit the packer cannot split: where it begins, and its spoken extent."""

    start: int
    spoken_start: int
    spoken_end: int
    fresh: bool  # the first piece of an over-long sentence or clause: starts a segment


def segment_text(text: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> list[Segment]:
    """Cut `text` into sentence-aligned segments of at most `max_chars` spoken characters.

    Raises ValueError when `text` has nothing to speak (empty or whitespace only) or
    `max_chars` is below 1.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, not {max_chars}")
    first = _NON_SPACE.search(text)
    if first is None:
        raise ValueError("the text is empty or whitespace only: nothing to synthesize")
    spoken_from = first.start()  # the text's leading whitespace is not spoken
    starts = [0, *(cut for cut in _sentence_starts(text) if cut > spoken_from)]
    ends = [*starts[1:], len(text)]
    pieces = (
        piece
        for start, end in zip(starts, ends, strict=True)
        for piece in _pieces(text, start, end, max(start, spoken_from), max_chars=max_chars)
    )
    return _pack(pieces, len(text), max_chars)


def _sentence_starts(text: str) -> Iterator[int]:
    """Where each sentence after the first begins: after its predecessor's whitespace."""
    for match in _SENTENCE_END.finditer(text):
        after = match.end()
        if after >= len(text):
            return
        terminator = match.group("latin")
        if terminator is None:
            yield after
            continue
        next_char = _next_word_start(text, after)
        sentence_end = not next_char.islower() and not _abbreviation(
            text, match.start(), terminator, next_char
        )
        if sentence_end or _PARAGRAPH_BREAK.search(match.group("space") or ""):
            yield after


def _lowercase_sentence_starts(text: str, start: int, end: int) -> Iterator[int]:
    """In `text[start:end]`, the sentence ends refused only for the lowercase word after."""
    for match in _SENTENCE_END.finditer(text, start, end):
        terminator = match.group("latin")
        if terminator is not None and match.end() < end:
            next_char = _next_word_start(text, match.end())
            if not _abbreviation(text, match.start(), terminator, next_char):
                yield match.end()


def _next_word_start(text: str, at: int) -> str:
    """The first character at or after `at` that is not an opening quote or bracket."""
    while at < len(text) and text[at] in _OPENERS:
        at += 1
    return text[at] if at < len(text) else ""


def _abbreviation(text: str, at: int, terminator: str, next_char: str) -> bool:
    """Whether the Latin `terminator` at `at` ends an abbreviation rather than a sentence."""
    if terminator != ".":
        return False
    window = text[max(0, at - _WORD_LOOKBEHIND) : at]
    token = window.split()[-1] if window and not window[-1].isspace() else ""
    word = token.lstrip(_OPENERS)
    if not word:
        return False
    if _DOTTED_LETTERS.fullmatch(word + "."):
        return True
    lower = word.lower()
    if lower in _TITLES or (lower in _BEFORE_NUMBER and next_char.isdigit()):
        return True
    token_start = at - len(token)
    at_line_start = token_start == 0 or text[token_start - 1] in "\n\u2028\u2029"
    return at_line_start and word.isdigit() and len(word) <= _LIST_NUMBER_DIGITS


def _regex_cuts(pattern: re.Pattern[str]) -> Callable[[str, int, int], Iterator[int]]:
    """Cuts after each match of `pattern` inside `text[start:end]`."""

    def cuts(text: str, start: int, end: int) -> Iterator[int]:
        for match in pattern.finditer(text, start, end):
            if match.end() < end:
                yield match.end()

    return cuts


# Cuts inside a sentence longer than max_chars, tried in this order.
_FALLBACKS: Final = (
    _lowercase_sentence_starts,
    _regex_cuts(_CLAUSE_END),
    _regex_cuts(_LINE_BREAK),
    _regex_cuts(_WHITESPACE),
)


def _pieces(
    text: str, start: int, end: int, spoken_start: int, *, max_chars: int, level: int = 0
) -> Iterator[_Piece]:
    """`text[start:end]` (spoken from `spoken_start`) as pieces of at most `max_chars`.

    A span that fits is one piece. A longer one is cut at the cuts of `_FALLBACKS[level]`
    (its pieces that still do not fit at the next level's), and past the last level by
    `_hard_cuts`; its first piece is marked `fresh`, so it starts a segment.
    """
    spoken_end = start + len(text[start:end].rstrip())
    if spoken_end - spoken_start <= max_chars:
        yield _Piece(start, spoken_start, spoken_end, fresh=False)
        return
    if level == len(_FALLBACKS):
        yield from _hard_cuts(text, start, spoken_start, spoken_end, max_chars)
        return
    bounds = [start, *_FALLBACKS[level](text, spoken_start, spoken_end), end]
    for number, (piece_start, piece_end) in enumerate(pairwise(bounds)):
        spoken = spoken_start if number == 0 else piece_start
        pieces = _pieces(text, piece_start, piece_end, spoken, max_chars=max_chars, level=level + 1)
        if number == 0:
            first = next(pieces)
            yield first._replace(fresh=True)
        yield from pieces


def _hard_cuts(
    text: str, start: int, spoken_start: int, spoken_end: int, max_chars: int
) -> Iterator[_Piece]:
    """A run without any whitespace, cut every `max_chars` characters at a cluster edge."""
    position = spoken_start
    fresh = True
    while spoken_end - position > max_chars:
        cut = _cluster_edge(text, position + max_chars, position)
        yield _Piece(start, position, cut, fresh)
        start = position = cut
        fresh = False
    yield _Piece(start, position, spoken_end, fresh)


def _cluster_edge(text: str, cut: int, lowest: int) -> int:
    """`cut`, moved back until it does not split a character cluster (not below `lowest`)."""
    edge = cut
    while edge > lowest and _inside_cluster(text, edge, lowest):
        edge -= 1
    return edge if edge > lowest else cut


def _inside_cluster(text: str, at: int, lowest: int) -> bool:
    """Whether a cut before `text[at]` would split what a reader sees as one character."""
    char, before = text[at], text[at - 1]
    code = ord(char)
    if _regional_indicator(char) and _regional_indicator(before):
        run = at
        while run > lowest and _regional_indicator(text[run - 1]):
            run -= 1
        return (at - run) % 2 == 1  # inside a flag: an odd number of indicators before
    return (
        unicodedata.category(char)[0] == "M"  # combining marks, variation selectors
        or _ZWJ in (char, before)
        or unicodedata.combining(before) == _VIRAMA
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin tones
        or 0xE0020 <= code <= 0xE007F  # tags of subdivision flags
        or 0x1160 <= code <= 0x11FF  # Hangul medial vowel and final consonant jamo
        or (0xDC00 <= code <= 0xDFFF and 0xD800 <= ord(before) <= 0xDBFF)  # surrogatepass
    )


def _regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _pack(pieces: Iterator[_Piece], length: int, max_chars: int) -> list[Segment]:
    """Greedy packing: each segment takes pieces while its spoken span fits `max_chars`."""
    segments: list[Segment] = []
    start = 0
    spoken_start = spoken_end = -1
    for piece in pieces:
        if spoken_start < 0:
            spoken_start = piece.spoken_start
        elif piece.fresh or piece.spoken_end - spoken_start > max_chars:
            segments.append(Segment(len(segments), start, piece.start, spoken_end - spoken_start))
            start, spoken_start = piece.start, piece.spoken_start
        spoken_end = piece.spoken_end
    segments.append(Segment(len(segments), start, length, spoken_end - spoken_start))
    return segments
