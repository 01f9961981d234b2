"""SSML safety: plain text escaped into SSML, and caller SSML validated before synthesis.

Caller SSML is parsed with defusedxml (no DTD, no entities, no external references) after
a size check, then checked against an allowlist of the elements and attributes the Azure
Speech service documents, minus everything that makes the service fetch a URL:
https://learn.microsoft.com/azure/ai-services/speech-service/speech-synthesis-markup-structure

Allowed, in the SSML namespace: speak, voice, break, bookmark, emphasis, lang, p, s,
phoneme, prosody, say-as, sub. In the mstts namespace: express-as, silence, viseme,
audioduration. Refused: audio, lexicon, mstts:backgroundaudio, mstts:voiceconversion (they
fetch URLs), math (a foreign namespace) and mstts:ttsembedding (a speaker profile would
bypass the tenant's voice allowlist).

Documents are re-serialized from the parsed tree (attributes sorted, comments and
processing instructions dropped), so what reaches the service is exactly what was checked.

Bounds a caller could otherwise slip past: voice names are at most `MAX_VOICE_NAME_CHARS`
(64; the longest published Azure neural voice names are about 40, the names Timbre deploys
custom voices under 26), so nothing longer is ever echoed into a header or an error; a
document may ask for at most `MAX_SILENCE_MS` (60 s) of breaks and silences in total,
counted as the service would insert them (`silence_ms`); and `characters` counts what
Azure bills, so the service holds SSML to the same character limit as text. A refused
value is never echoed: errors name the field and the form it takes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape, quoteattr

from defusedxml import (  # type: ignore[import-untyped,unused-ignore]
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)
from defusedxml import ElementTree as DefusedET  # type: ignore[import-untyped,unused-ignore]

SSML_NS: Final = "http://www.w3.org/2001/10/synthesis"
MSTTS_NS: Final = "https://www.w3.org/2001/mstts"
XML_NS: Final = "http://www.w3.org/XML/1998/namespace"
XML_LANG: Final = f"{{{XML_NS}}}lang"

DEFAULT_MAX_CHARS: Final = 20_000
DEFAULT_MAX_DEPTH: Final = 12
MAX_BREAK_MS: Final = 20_000
MAX_ATTRIBUTE_CHARS: Final = 256
MAX_VOICE_NAME_CHARS: Final = 64
# Breaks and silences of one request, in total. A request is bounded in characters, but
# one 20 s break costs 19 of them: without this, 5,000 characters could ask for over an
# hour of silence, which the service spends until the provider timeout runs out (and that
# timeout counts against a breaker every tenant shares).
MAX_SILENCE_MS: Final = 60_000
# The pause of each break strength, as the Speech service documents it; a <break/> with
# neither strength nor time is medium.
BREAK_STRENGTH_MS: Final = {
    "x-weak": 250,
    "weak": 500,
    "medium": 750,
    "strong": 1_000,
    "x-strong": 1_250,
}

_PREFIXES: Final = {SSML_NS: "", MSTTS_NS: "mstts:"}

# Stock voices (en-US-JennyNeural, zh-CN-henan-YundengNeural, en-US-Ava:DragonHDLatestNeural)
# and custom neural voice deployments (ContosoNarratorNeural).
_STOCK_VOICE = re.compile(r"[a-z]{2,3}-[A-Z]{2}(?:-[a-z]+)?-[A-Za-z0-9]+(?::[A-Za-z0-9]+)?")
_CUSTOM_VOICE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,95}Neural")
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[A-Z][a-z]{3})?(?:-(?:[A-Z]{2}|[0-9]{3}))?")
_STYLE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_NUMBER = r"[0-9]{1,4}(?:\.[0-9]{1,4})?"
_RATE = re.compile(rf"x-slow|slow|medium|fast|x-fast|default|[+-]?{_NUMBER}%|{_NUMBER}")
_PITCH_CHANGE = rf"[+-]?{_NUMBER}(?:Hz|st|%)"
_PITCH = re.compile(rf"x-low|low|medium|high|x-high|default|{_PITCH_CHANGE}")
_CONTOUR = re.compile(rf"(?:\(\s*{_NUMBER}%\s*,\s*(?:{_PITCH_CHANGE})\s*\)\s*)+")
_VOLUME = re.compile(rf"silent|x-soft|soft|medium|loud|x-loud|default|[+-]?{_NUMBER}%?")
_TIME = re.compile(r"([0-9]{1,6})(ms|s)")
# Where mstts:silence of each boundary type is inserted: every run of sentence-ending,
# comma, semicolon or enumeration-comma punctuation in the voice's text (an upper bound).
_BOUNDARIES: Final = {
    "Sentenceboundary": re.compile(r"[.!?\u3002\uff01\uff1f\u0964\u061f]+"),
    "Comma": re.compile(r"[,\uff0c\u060c]+"),
    "Semicolon": re.compile(r"[;\uff1b\u061b]+"),
    "Enumerationcomma": re.compile(r"\u3001+"),
}
_STYLE_DEGREE = re.compile(r"[0-9](?:\.[0-9]{1,2})?")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,32}")
_ANY_TEXT = re.compile(r"[^\x00-\x1f]{1,256}")
# Characters XML 1.0 cannot carry, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class SsmlRejected(ValueError):
    """Text or SSML that may not be sent to the speech service; `reason` is machine-readable,
    `field` the request field at fault when it is one (style, rate, pitch, voice)."""

    def __init__(self, reason: str, detail: str, *, field: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.field = field


@dataclass(frozen=True, slots=True)
class ValidatedSsml:
    """A checked SSML document, re-serialized, with what it will cost and who speaks it.

    `characters` is what Azure bills for it (everything inside `<voice>`, markup included);
    `silence_ms` the breaks and silences it asks for, in total.
    """

    ssml: str
    voices: tuple[str, ...]
    language: str
    characters: int
    silence_ms: int = 0


def _enum(*values: str) -> Callable[[str], bool]:
    allowed = frozenset(values)
    return allowed.__contains__


def _matches(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda value: pattern.fullmatch(value) is not None


def _milliseconds(value: str) -> int | None:
    match = _TIME.fullmatch(value)
    if match is None:
        return None
    return int(match.group(1)) * (1 if match.group(2) == "ms" else 1000)


def _time_at_most(limit_ms: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        amount = _milliseconds(value)
        return amount is not None and amount <= limit_ms

    return check


def _style_degree(value: str) -> bool:
    return _STYLE_DEGREE.fullmatch(value) is not None and 0.01 <= float(value) <= 2


def is_stock_voice_name(name: str) -> bool:
    """Whether `name` is shaped like a stock neural voice name (en-US-AvaNeural), at most
    `MAX_VOICE_NAME_CHARS` long."""
    return len(name) <= MAX_VOICE_NAME_CHARS and _STOCK_VOICE.fullmatch(name) is not None


def is_valid_voice_name(name: str) -> bool:
    """Whether `name` is shaped like a stock or custom neural voice name, at most
    `MAX_VOICE_NAME_CHARS` long."""
    if len(name) > MAX_VOICE_NAME_CHARS:
        return False
    return bool(_STOCK_VOICE.fullmatch(name) or _CUSTOM_VOICE.fullmatch(name))


# What `canonical_language` accepts, in any letter case, as the OpenAPI document states it.
LANGUAGE_PATTERN: Final = r"^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?$"


def canonical_language(tag: str) -> str:
    """A language tag in its canonical case (en-us -> en-US, zh-hant-tw -> zh-Hant-TW);
    ValueError when it is not a tag of the form the service takes."""
    parts = tag.split("-")
    fixed = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 4 and part.isalpha():
            fixed.append(part.title())
        else:
            fixed.append(part.upper())
    canonical = "-".join(fixed)
    if not is_valid_language(canonical):
        raise ValueError("not a language tag like en-US or zh-Hans")
    return canonical


# Chinese scripts stand for regions when one side of a comparison names a script only.
_SCRIPT_REGIONS: Final = {
    ("zh", "Hans"): frozenset({"CN", "SG"}),
    ("zh", "Hant"): frozenset({"TW", "HK", "MO"}),
}


def same_language(a: str, b: str) -> bool:
    """Whether two tags can name the same speech: same language; same region when both
    name one; same script when both name one; a Chinese script matches its regions."""
    first, second = _subtags(a), _subtags(b)
    if first[0] != second[0]:
        return False
    (language, script_a, region_a), (_, script_b, region_b) = first, second
    if region_a and region_b and region_a != region_b:
        return False
    if script_a and script_b and script_a != script_b:
        return False
    for script, region in ((script_a, region_b), (script_b, region_a)):
        regions = _SCRIPT_REGIONS.get((language, script or ""))
        if regions is not None and region and region not in regions:
            return False
    return True


def _subtags(tag: str) -> tuple[str, str | None, str | None]:
    parts = canonical_language(tag).split("-")
    script = next((p for p in parts[1:] if len(p) == 4), None)
    region = next((p for p in parts[1:] if len(p) in (2, 3)), None)
    return parts[0], script, region


def speakable(text: str) -> str:
    """The text, if XML can carry it; SsmlRejected naming the problem otherwise."""
    if not text.strip():
        raise SsmlRejected("empty_text", "the text is empty")
    if _NOT_XML.search(text):
        raise SsmlRejected("invalid_value", "the text contains control characters")
    return text


def is_valid_language(language: str) -> bool:
    """Whether `language` is a BCP-47 tag of the form the service takes (en-US, zh-Hans-CN)."""
    return _LANGUAGE.fullmatch(language) is not None


_Checks = dict[str, Callable[[str], bool]]

_SILENCE_TYPES = (
    "Leading",
    "Leading-exact",
    "Tailing",
    "Tailing-exact",
    "Sentenceboundary",
    "Sentenceboundary-exact",
    "Comma-exact",
    "Semicolon-exact",
    "Enumerationcomma-exact",
)
_ROLES = (
    "Girl",
    "Boy",
    "YoungAdultFemale",
    "YoungAdultMale",
    "OlderAdultFemale",
    "OlderAdultMale",
    "SeniorFemale",
    "SeniorMale",
)

# Element -> attribute -> value check. Attribute names use ElementTree's {ns}name form.
_ALLOWED: Final[dict[str, _Checks]] = {
    f"{{{SSML_NS}}}speak": {"version": _enum("1.0"), XML_LANG: is_valid_language},
    f"{{{SSML_NS}}}voice": {
        "name": is_valid_voice_name,
        "effect": _enum("eq_car", "eq_telecomhp8k", "eq_telecomhp3k"),
    },
    f"{{{SSML_NS}}}break": {
        "strength": _enum("x-weak", "weak", "medium", "strong", "x-strong"),
        "time": _time_at_most(MAX_BREAK_MS),
    },
    f"{{{SSML_NS}}}bookmark": {"mark": _matches(_ANY_TEXT)},
    f"{{{SSML_NS}}}emphasis": {"level": _enum("reduced", "none", "moderate", "strong")},
    f"{{{SSML_NS}}}lang": {XML_LANG: is_valid_language},
    f"{{{SSML_NS}}}p": {},
    f"{{{SSML_NS}}}s": {},
    f"{{{SSML_NS}}}phoneme": {
        "alphabet": _enum("ipa", "sapi", "ups", "x-sampa"),
        "ph": _matches(_ANY_TEXT),
    },
    f"{{{SSML_NS}}}prosody": {
        "pitch": _matches(_PITCH),
        "contour": _matches(_CONTOUR),
        "range": _matches(_PITCH),
        "rate": _matches(_RATE),
        "volume": _matches(_VOLUME),
    },
    f"{{{SSML_NS}}}say-as": {
        "interpret-as": _matches(_TOKEN),
        "format": _matches(_TOKEN),
        "detail": _matches(_TOKEN),
    },
    f"{{{SSML_NS}}}sub": {"alias": _matches(_ANY_TEXT)},
    f"{{{MSTTS_NS}}}express-as": {
        "style": _matches(_STYLE),
        "styledegree": _style_degree,
        "role": _enum(*_ROLES),
    },
    f"{{{MSTTS_NS}}}silence": {
        "type": _enum(*_SILENCE_TYPES),
        "value": _time_at_most(MAX_BREAK_MS),
    },
    f"{{{MSTTS_NS}}}viseme": {"type": _enum("redlips_front", "FacialExpression")},
    f"{{{MSTTS_NS}}}audioduration": {"value": _matches(_TIME)},
}
_REQUIRED: Final = {
    f"{{{SSML_NS}}}speak": ("version", XML_LANG),
    f"{{{SSML_NS}}}voice": ("name",),
    f"{{{SSML_NS}}}lang": (XML_LANG,),
    f"{{{SSML_NS}}}phoneme": ("ph",),
    f"{{{SSML_NS}}}say-as": ("interpret-as",),
    f"{{{SSML_NS}}}sub": ("alias",),
    f"{{{MSTTS_NS}}}silence": ("type", "value"),
    f"{{{MSTTS_NS}}}audioduration": ("value",),
}
_SPEAK = f"{{{SSML_NS}}}speak"
_VOICE = f"{{{SSML_NS}}}voice"
_BREAK = f"{{{SSML_NS}}}break"
_SILENCE = f"{{{MSTTS_NS}}}silence"
_VOICE_NAME = f"neural voice name like en-US-AvaNeural (at most {MAX_VOICE_NAME_CHARS} characters)"
_VOICE_FORM = f"voice is a {_VOICE_NAME}"


def check_prosody(
    *, style: str | None = None, rate: str | None = None, pitch: str | None = None
) -> None:
    """Refuse a style, rate or pitch the service would not take, naming the field and the
    form it takes, never the value."""
    if style is not None and not _STYLE.fullmatch(style):
        raise SsmlRejected(
            "invalid_value",
            "style is a style name: a letter, then letters, digits, - or _ (at most 64)",
            field="style",
        )
    if rate is not None and not _RATE.fullmatch(rate):
        raise SsmlRejected(
            "invalid_value",
            "rate is x-slow, slow, medium, fast, x-fast, default, +N% or -N%, or a multiplier "
            "like 0.8",
            field="rate",
        )
    if pitch is not None and not _PITCH.fullmatch(pitch):
        raise SsmlRejected(
            "invalid_value",
            "pitch is x-low, low, medium, high, x-high, default, or a change like +2st, "
            "-5% or +50Hz",
            field="pitch",
        )


def text_to_ssml(
    text: str,
    *,
    voice: str,
    language: str,
    style: str | None = None,
    rate: str | None = None,
    pitch: str | None = None,
) -> str:
    """Wrap plain text in an SSML document for one voice; the text is escaped, never parsed."""
    speakable(text)
    # Values are never echoed: the caller knows what they sent; say what is accepted.
    if not is_valid_voice_name(voice):
        raise SsmlRejected("invalid_voice", _VOICE_FORM, field="voice")
    if not is_valid_language(language):
        raise SsmlRejected("invalid_value", "language is a BCP-47 tag like en-US", field="language")
    check_prosody(style=style, rate=rate, pitch=pitch)

    speak = Element(_SPEAK, {"version": "1.0", XML_LANG: language})
    inner = Element(_VOICE, {"name": voice})
    speak.append(inner)
    if style is not None:
        inner.append(outer := Element(f"{{{MSTTS_NS}}}express-as", {"style": style}))
        inner = outer
    prosody = {name: value for name, value in (("rate", rate), ("pitch", pitch)) if value}
    if prosody:
        inner.append(outer := Element(f"{{{SSML_NS}}}prosody", prosody))
        inner = outer
    inner.text = text
    return _serialize(speak)


def validate_ssml(
    ssml: str,
    *,
    allowed_voices: Callable[[str], bool],
    max_chars: int = DEFAULT_MAX_CHARS,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_silence_ms: int = MAX_SILENCE_MS,
) -> ValidatedSsml:
    """Check caller SSML against the allowlist, the tenant's voices and the silence bound;
    return it normalized, with its billable characters."""
    if len(ssml) > max_chars:
        raise SsmlRejected("too_large", f"the SSML is over {max_chars} characters")
    root = _parse(ssml)
    if root.tag != _SPEAK:
        if root.tag.endswith("}speak") or root.tag == "speak":
            raise SsmlRejected("foreign_namespace", f"<speak> must be in the {SSML_NS} namespace")
        raise SsmlRejected("unknown_element", "the root element must be <speak>")

    voices: list[str] = []
    for element, depth, parent in _walk(root):
        if depth > max_depth:
            raise SsmlRejected("too_deep", f"elements nest deeper than {max_depth} levels")
        _check_element(element)
        if element.tag == _VOICE:
            if parent is not root:
                raise SsmlRejected("invalid_value", "<voice> must be a child of <speak>")
            name = element.attrib["name"]
            if not allowed_voices(name):
                raise SsmlRejected("voice_not_allowed", f"voice {name!r} is not available")
            voices.append(name)
        elif parent is root:
            raise SsmlRejected("invalid_value", "only <voice> elements may appear in <speak>")

    if (root.text or "").strip() or any((child.tail or "").strip() for child in root):
        raise SsmlRejected("invalid_value", "text must be inside a <voice> element")
    if not voices:
        raise SsmlRejected("invalid_value", "the document has no <voice> element")
    if not "".join(root.itertext()).strip():
        raise SsmlRejected("empty_text", "the document has no text to speak")

    silence_ms = _checked_silence(root, max_silence_ms)
    # Billable: everything inside <voice>, markup included, except the speak and voice tags.
    # https://learn.microsoft.com/azure/ai-services/speech-service/text-to-speech#billable-characters
    characters = sum(len(_serialize_content(voice)) for voice in root)
    return ValidatedSsml(
        ssml=_serialize(root),
        voices=tuple(dict.fromkeys(voices)),
        language=root.attrib[XML_LANG],
        characters=characters,
        silence_ms=silence_ms,
    )


def _checked_silence(root: Element, max_silence_ms: int) -> int:
    """The breaks and silences of the whole document; refused over `max_silence_ms`."""
    silence_ms = sum(_silence_ms(voice) for voice in root)
    if silence_ms > max_silence_ms:
        raise SsmlRejected(
            "too_much_silence",
            f"the breaks and silences add up to {silence_ms / 1000:g} s; at most "
            f"{max_silence_ms / 1000:g} s per request",
        )
    return silence_ms


def _silence_ms(voice: Element) -> int:
    """The pauses one `<voice>` asks for: each break, and each mstts:silence as often as the
    service inserts it (once for leading and tailing, at every boundary of its kind)."""
    total = 0
    text: str | None = None
    for element in voice.iter():
        if element.tag == _BREAK:
            time = element.attrib.get("time")
            if time is not None:
                total += _milliseconds(time) or 0
            else:
                total += BREAK_STRENGTH_MS.get(element.attrib.get("strength", "medium"), 0)
        elif element.tag == _SILENCE:
            value = _milliseconds(element.attrib["value"]) or 0
            kind = element.attrib["type"].removesuffix("-exact")
            boundary = _BOUNDARIES.get(kind)
            if boundary is None:  # Leading, Tailing
                total += value
                continue
            if text is None:
                text = "".join(voice.itertext())
            total += value * len(boundary.findall(text))
    return total


def with_voice(ssml: str, voice: str, *, language: str | None = None) -> str:
    """Validated SSML with every `<voice name>` replaced by `voice` (a fallback speaker).

    `language`, if given, replaces the document's `xml:lang` (a stock voice of another
    locale). The input must be SSML that `validate_ssml` returned; nothing else changes.
    """
    if not is_valid_voice_name(voice):
        raise SsmlRejected("invalid_voice", _VOICE_FORM, field="voice")
    if language is not None and not is_valid_language(language):
        raise SsmlRejected("invalid_value", "language is a BCP-47 tag like en-US", field="language")
    root = _parse(ssml)
    for element in root:
        if element.tag == _VOICE:
            element.set("name", voice)
    if language is not None:
        root.set(XML_LANG, language)
    return _serialize(root)


def _parse(ssml: str) -> Element:
    try:
        root: Element = DefusedET.fromstring(
            ssml, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DTDForbidden as error:
        raise SsmlRejected("dtd_forbidden", "a DOCTYPE is not allowed") from error
    except EntitiesForbidden as error:
        raise SsmlRejected("entities_forbidden", "entity declarations are not allowed") from error
    except ExternalReferenceForbidden as error:
        raise SsmlRejected("external_reference", "external references are not allowed") from error
    except ParseError as error:
        raise SsmlRejected("not_xml", f"not well-formed XML ({error})") from error
    return root


def _walk(root: Element) -> Iterator[tuple[Element, int, Element | None]]:
    # Iterative, so a deeply nested document cannot exhaust the interpreter stack.
    stack: list[tuple[Element, int, Element | None]] = [(root, 1, None)]
    while stack:
        element, depth, parent = stack.pop()
        yield element, depth, parent
        stack.extend((child, depth + 1, element) for child in reversed(element))


def _check_element(element: Element) -> None:
    tag = element.tag
    if not isinstance(tag, str) or not tag.startswith("{"):
        raise SsmlRejected("foreign_namespace", f"element <{tag}> has no SSML namespace")
    namespace, _, local = tag[1:].partition("}")
    if namespace not in _PREFIXES:
        raise SsmlRejected("foreign_namespace", f"namespace {namespace!r} is not allowed")
    checks = _ALLOWED.get(tag)
    if checks is None:
        raise SsmlRejected("unknown_element", f"element <{_PREFIXES[namespace]}{local}>")
    for name, value in element.attrib.items():
        if name.startswith("{") and not name.startswith(f"{{{XML_NS}}}"):
            foreign = name[1:].partition("}")[0]
            raise SsmlRejected("foreign_namespace", f"attribute namespace {foreign!r}")
        check = checks.get(name)
        shown = _attribute_name(name)
        if check is None:
            raise SsmlRejected("unknown_attribute", f"<{local}> has no attribute {shown!r}")
        if len(value) > MAX_ATTRIBUTE_CHARS or not check(value):
            if name == "name" and tag == _VOICE:
                raise SsmlRejected("invalid_voice", f"<voice name> must be a {_VOICE_NAME}")
            # The value is not echoed: sub alias, phoneme ph and bookmark mark are spoken text.
            raise SsmlRejected("invalid_value", f"<{local} {shown}> has a value it cannot take")
    for name in _REQUIRED.get(tag, ()):
        if name not in element.attrib:
            shown = _attribute_name(name)
            raise SsmlRejected("invalid_value", f"<{local}> needs the {shown!r} attribute")


def _attribute_name(name: str) -> str:
    return "xml:lang" if name == XML_LANG else name


def _qualified(tag: str) -> str:
    namespace, _, local = tag[1:].partition("}")
    return _PREFIXES[namespace] + local


def _serialize(root: Element) -> str:
    attributes = _attributes(root)
    declarations = f' xmlns="{SSML_NS}" xmlns:mstts="{MSTTS_NS}"'
    return f"<speak{declarations}{attributes}>{_serialize_content(root)}</speak>"


def _serialize_content(element: Element) -> str:
    parts = [escape(element.text or "")]
    for child in element:
        name, content = _qualified(child.tag), _serialize_content(child)
        if content:
            parts.append(f"<{name}{_attributes(child)}>{content}</{name}>")
        else:
            parts.append(f"<{name}{_attributes(child)}/>")
        parts.append(escape(child.tail or ""))
    return "".join(parts)


def _attributes(element: Element) -> str:
    return "".join(
        f" {_attribute_name(name)}={quoteattr(value)}"
        for name, value in sorted(element.attrib.items())
    )
