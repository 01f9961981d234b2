"""Batch text segmentation: sentence-aligned, tiling the text, within max_chars, linear."""

# The scripts' own punctuation is what is being tested: look-alike characters are meant.
# ruff: noqa: RUF001

from __future__ import annotations

import random
import time
from itertools import pairwise

import pytest

from shared.synthesis.segments import DEFAULT_MAX_CHARS, Segment, segment_text


def check_tiling(text: str, segments: list[Segment], max_chars: int) -> None:
    """The invariants every segmentation keeps, whatever the text."""
    assert segments, "at least one segment"
    assert [s.index for s in segments] == list(range(len(segments)))
    assert segments[0].start == 0
    assert segments[-1].end == len(text)
    for before, after in pairwise(segments):
        assert before.end == after.start, "contiguous"
    assert "".join(text[s.start : s.end] for s in segments) == text
    for segment in segments:
        spoken = segment.spoken_text(text)
        assert spoken, f"segment {segment.index} is whitespace only"
        assert segment.characters == len(spoken)
        assert segment.characters <= max_chars
        if segment.index > 0:  # whitespace trails the segment before, it never leads
            assert not text[segment.start].isspace()


def pieces(text: str, max_chars: int) -> list[str]:
    segments = segment_text(text, max_chars=max_chars)
    check_tiling(text, segments, max_chars)
    return [text[s.start : s.end] for s in segments]


def ends_sentence(head: str, tail: str) -> bool:
    """Whether a segment can end between `head` and `tail`, i.e. a sentence ends there.

    The first segment may hold "Okay. " + `head` exactly. At a sentence boundary it does.
    Otherwise `head` + `tail` is one sentence longer than the limit, which starts a new
    segment of its own: the first segment is "Okay. " alone.
    """
    prefix = "Okay. " + head
    segments = segment_text(prefix + tail, max_chars=len(prefix.rstrip()))
    first = segments[0]
    return (prefix + tail)[first.start : first.end] == prefix


# Random texts: words of several scripts, clusters that must never be split, numbers,
# abbreviations, URLs, every kind of punctuation and whitespace.
WORDS = [
    "the", "voice", "Speech", "synthesis", "is", "long", "Timbre", "über", "naïve",
    "3.14", "1.000.000", "2.0.1", "https://example.com/a.b?c=d", "jo.doe@example.org",
    "Mr.", "Dr.", "St.", "e.g.", "i.e.", "etc.", "U.S.", "J.", "R.", "No.",
    "今天天气很好", "我们", "日本語", "यह", "वाक्य", "है", "هل", "أنت", "بخير", "Привет",
    "x" * 40,
]  # fmt: skip
CLUSTERS = [
    "e\u0301", "o\u0308\u0304", "👍🏽", "👩\u200d💻", "🇫🇷", "🇩🇪", "क्ष", "ने", "\u1100\u1161\u11a8",
]  # fmt: skip
PUNCTUATION = [
    ".", "!", "?", "…", "...", "?!", ".”", "!)", "。", "！", "？", "।", "॥", "؟", "۔",
    ",", ";", ":", " —", "—", "、", "，", "،",
]  # fmt: skip
SPACES = [" ", " ", " ", " ", "\n", "\n\n", "\t", "\u3000", "\xa0", "  \n \n  "]
LONGEST_CLUSTER = max(map(len, CLUSTERS))


def random_text(rng: random.Random) -> tuple[str, set[int]]:
    """A random text, and the offsets inside its clusters (where no cut may fall)."""
    text = rng.choice(["", "", " ", "\n\n  "])
    inside: set[int] = set()
    for _ in range(rng.randint(1, 400)):
        roll = rng.random()
        if roll < 0.5:
            text += rng.choice(WORDS)
        elif roll < 0.6:
            for _ in range(rng.randint(1, 3)):
                cluster = rng.choice(CLUSTERS)
                inside.update(range(len(text) + 1, len(text) + len(cluster)))
                text += cluster
        elif roll < 0.8:
            text += rng.choice(PUNCTUATION)
        else:
            text += rng.choice(SPACES)
        if rng.random() < 0.6:
            text += " "
    return text, inside


@pytest.mark.parametrize("seed", range(300))
def test_random_texts_are_tiled_within_max_chars(seed: int) -> None:
    rng = random.Random(seed)
    text, inside = random_text(rng)
    if not text.strip():
        text += "Word."
    max_chars = rng.choice([1, 2, 3, 5, 8, 17, 40, 80, 300, 3000])
    segments = segment_text(text, max_chars=max_chars)
    check_tiling(text, segments, max_chars)
    if max_chars >= LONGEST_CLUSTER:
        cuts = {s.start for s in segments[1:]}
        assert not cuts & inside, "a cut separated a combining mark, ZWJ or flag half"


def test_short_text_is_one_segment() -> None:
    text = "  Hello there. How are you?  \n"
    assert segment_text(text) == [Segment(0, 0, len(text), len(text.strip()))]
    assert segment_text(text)[0].spoken_text(text) == "Hello there. How are you?"


def test_sentences_are_packed_greedily_up_to_max_chars() -> None:
    sentence = "Every one of these sentences is alike. "
    size = len(sentence.strip())
    text = sentence * 10
    three = 3 * size + 2  # three sentences and the two spaces between them
    assert pieces(text, three) == [sentence * 3] * 3 + [sentence]
    assert pieces(text, three + size) == [sentence * 3] * 3 + [sentence]
    assert pieces(text, three - 1) == [sentence * 2] * 5


@pytest.mark.parametrize(
    ("head", "tail"),
    [
        ("It rained. ", "Then the sun came out."),
        ("Did it rain? ", "Yes."),
        ("It rained! ", "Yes."),
        ("It rained… ", "Then it stopped."),
        ("It rained... ", "Then it stopped."),
        ("Really?! ", "Yes."),
        ('He said "Stop." ', "Then he left."),
        ("He said “Stop!” ", "Then he left."),
        ("(See above.) ", "Then go on."),
        ("We bought pears, etc. ", "Then we left."),
        ("It cost 5. ", "Then we paid."),
        ("Visit example.com. ", "It is free."),
        ("It was Plan 9. ", "It failed."),
        ("今天天气很好。", "我们去公园吧！"),
        ("你去吗？", "好的。"),
        ("你好吗?", "我很好。"),
        ("यह एक वाक्य है। ", "यह दूसरा वाक्य है।"),
        ("यह एक वाक्य है॥", "यह दूसरा है।"),
        ("هل أنت بخير؟ ", "نعم أنا بخير."),
        ("یہ ایک جملہ ہے۔ ", "یہ دوسرا ہے۔"),
        ("Chapter One\n\n", "It was a dark night."),
        ("a heading without a full stop\n \n", "then the text."),
        ("Mr. Smith said\n\n", "nothing."),
        ("The list goes on, etc.\n\n", "and a new paragraph starts."),
        ("Signed by Dr.\n\n", "Jones."),
    ],
)
def test_sentence_ends(head: str, tail: str) -> None:
    assert ends_sentence(head, tail)


@pytest.mark.parametrize(
    ("head", "tail"),
    [
        ("Mr. ", "Smith came home."),
        ("Mrs. ", "Smith came home."),
        ("Then Dr. ", "Jones came."),
        ("We met at St. ", "Paul's Cathedral."),
        ("Use a tool, e.g. ", "Hammers."),
        ("Use a tool, i.e. ", "a hammer."),
        ("We bought pears, etc. ", "and apples."),
        ("The U.S. ", "Army came."),
        ("The book by J. ", "R. R. Tolkien sold."),
        ("The book by J. R. ", "R. Tolkien sold."),
        ("The book by J. R. R. ", "Tolkien sold."),
        ("She has a Ph.D. ", "In physics."),
        ("See No. ", "5 on the list."),
        ("See Fig. ", "3 above."),
        ("It opened on Jan. ", "12 last year."),
        ("Contents:\n1. ", "Introduction and methods."),
        ("Pi is 3.", "14 and more."),
        ("About 1.", "000.000 people came."),
        ("Version 2.", "0.1 is out."),
        ("Open https://example.", "com/a.b?c=d now."),
        ("Mail jo.", "doe@example.org now."),
        ("“Help!” ", "she cried."),
        ("Wait... ", "what happened?"),
        ("A line without a full stop\n", "And the next line."),
    ],
)
def test_not_sentence_ends(head: str, tail: str) -> None:
    assert not ends_sentence(head, tail)


def test_a_sentence_longer_than_max_chars_is_split_at_commas() -> None:
    clause = "and then the narrator paused, "
    sentence = "Once upon a time, " + clause * 200 + "and it ended."
    text = "A short opening sentence. " + sentence + " A closing sentence."
    segments = pieces(text, 500)
    assert segments[0] == "A short opening sentence. "  # the long sentence starts anew
    inner = segments[1:-1]
    assert all(piece.endswith(", ") for piece in inner)
    assert all(len(piece.strip()) > 500 - len(clause) for piece in inner)  # packed full
    assert segments[-1].endswith("and it ended. A closing sentence.")


def test_an_unpunctuated_10000_character_sentence_is_split_between_words() -> None:
    rng = random.Random(7)
    words: list[str] = []
    while sum(len(word) + 1 for word in words) < 10_000:
        words.append("".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(1, 12))))
    text = " ".join(words)
    segments = segment_text(text)
    check_tiling(text, segments, DEFAULT_MAX_CHARS)
    assert len(segments) == 4
    for segment in segments[1:]:
        assert text[segment.start - 1] == " ", "cut between words, never inside one"
    for segment, following in pairwise(segments):
        next_word = text[following.start :].split(" ", 1)[0]
        assert segment.characters + 1 + len(next_word) > DEFAULT_MAX_CHARS  # full


def test_words_longer_than_max_chars_are_cut_hard() -> None:
    text = "x" * 10_000
    segments = segment_text(text)
    check_tiling(text, segments, DEFAULT_MAX_CHARS)
    assert [s.characters for s in segments] == [3000, 3000, 3000, 1000]


def test_a_hard_cut_keeps_a_combining_mark_with_its_letter() -> None:
    text = "x" * 9 + "e\u0301" + "y" * 5  # the 10th and 11th characters are one letter
    assert pieces(text, 10) == ["x" * 9, "e\u0301" + "y" * 5]


def test_a_hard_cut_keeps_emoji_sequences_and_flags_whole() -> None:
    assert pieces("x" * 9 + "👍🏽y", 10) == ["x" * 9, "👍🏽y"]
    assert pieces("x" * 8 + "👩\u200d💻", 10) == ["x" * 8, "👩\u200d💻"]
    assert pieces("x" * 7 + "🇫🇷🇩🇪", 10) == ["x" * 7 + "🇫🇷", "🇩🇪"]


def test_a_cluster_longer_than_max_chars_still_respects_max_chars() -> None:
    text = "e" + "\u0301" * 20
    assert [len(piece) for piece in pieces(text, 8)] == [8, 8, 5]


def test_long_cjk_text_is_split_after_its_commas() -> None:
    text = "我们今天去公园，" * 100 + "然后回家。"
    segments = pieces(text, 100)
    assert all(piece.endswith("，") for piece in segments[:-1])
    assert segments[-1].endswith("然后回家。")


def test_line_breaks_come_before_spaces_in_a_long_sentence() -> None:
    text = "first item on the list\nsecond item on the list\nthird item"
    assert pieces(text, 30) == [
        "first item on the list\n",
        "second item on the list\n",
        "third item",
    ]


def test_lowercase_sentence_ends_come_before_commas_in_a_long_sentence() -> None:
    text = "hello there, how are you. fine, thanks. and you, my friend."
    assert pieces(text, 30) == [
        "hello there, how are you. ",
        "fine, thanks. ",
        "and you, my friend.",
    ]


def test_an_abbreviation_is_not_a_cut_even_in_a_long_sentence() -> None:
    text = "we met Mr. Smith there. and then we left."
    # One sentence (lowercase after each "."), longer than 20: it is cut after "there.",
    # then between words. Were "Mr." a cut too, the first segment would be "we met Mr. ".
    assert pieces(text, 20) == ["we met Mr. Smith ", "there. ", "and then we left."]


def test_paragraph_breaks_stay_with_the_paragraph_before() -> None:
    text = "\n\nTitle\n\nFirst paragraph.\n\n\nSecond paragraph.  \n"
    assert pieces(text, 20) == ["\n\nTitle\n\n", "First paragraph.\n\n\n", "Second paragraph.  \n"]
    assert pieces(text, 100) == [text]


def test_whitespace_only_text_is_refused() -> None:
    for text in ["", " ", "\n\n\t", "\u3000\xa0"]:
        with pytest.raises(ValueError, match="nothing to synthesize"):
            segment_text(text)


def test_max_chars_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        segment_text("Hello.", max_chars=0)


def english_prose(characters: int, seed: int = 11) -> str:
    rng = random.Random(seed)
    vocabulary = [
        "the", "voice", "of", "a", "narrator", "reads", "every", "chapter", "slowly", "while",
        "listeners", "follow", "along", "with", "the", "printed", "book", "and", "sometimes",
        "pause", "to", "think", "about", "what", "they", "heard",
    ]  # fmt: skip
    sentences: list[str] = []
    length = 0
    while length < characters:
        words = [rng.choice(vocabulary) for _ in range(rng.randint(4, 30))]
        if rng.random() < 0.1:
            words.insert(0, rng.choice(["Mr. Smith said", "Dr. Jones noted", "In the U.S."]))
        sentence = " ".join(words)
        sentence = sentence[0].upper() + sentence[1:] + rng.choice(".....?!")
        if rng.random() < 0.05:
            sentence += "\n\n"
        sentences.append(sentence)
        length += len(sentence) + 1
    return " ".join(sentences)[:characters]


def test_200000_characters_of_prose_are_segmented_quickly() -> None:
    text = english_prose(200_000)
    started = time.perf_counter()
    segments = segment_text(text)
    elapsed = time.perf_counter() - started
    check_tiling(text, segments, DEFAULT_MAX_CHARS)
    assert 67 <= len(segments) <= 80
    assert elapsed < 2.0  # 6 ms on a 2-core machine: the bound only catches a blow-up
    for segment in segments[:-1]:  # each ends at a sentence end
        assert segment.spoken_text(text)[-1] in ".?!"


@pytest.mark.parametrize(
    "text",
    [
        "." * 200_000,
        "!" * 200_000,
        "a" + "," * 200_000,
        "a" + " " * 200_000 + "b",
        "x" * 200_000,
        "e" + "\u0301" * 200_000,
        "🇫🇷" * 100_000,
        "a.\n\n" * 50_000,
        "a. " * 66_666,
        "etc. and " * 22_222,
        '"' * 100_000 + "." + '"' * 100_000,
    ],
    ids=lambda text: repr(text[:6]),
)
def test_pathological_texts_take_linear_time(text: str) -> None:
    started = time.perf_counter()
    segments = segment_text(text)
    elapsed = time.perf_counter() - started
    check_tiling(text, segments, DEFAULT_MAX_CHARS)
    assert elapsed < 2.0
