"""SSML safety: escaping plain text, and refusing hostile or out-of-tenant SSML."""

from __future__ import annotations

import re
from xml.etree import ElementTree

import pytest
from defusedxml import ElementTree as DefusedET
from defusedxml import EntitiesForbidden, ExternalReferenceForbidden

from shared.synthesis.ssml import (
    MAX_SILENCE_MS,
    MAX_VOICE_NAME_CHARS,
    MSTTS_NS,
    SSML_NS,
    SsmlRejected,
    is_stock_voice_name,
    is_valid_voice_name,
    text_to_ssml,
    validate_ssml,
)

TENANT_VOICES = {"en-US-JennyNeural", "en-US-GuyNeural", "de-DE-KatjaNeural"}
HEAD = f'<speak version="1.0" xmlns="{SSML_NS}" xmlns:mstts="{MSTTS_NS}" xml:lang="en-US">'


def tenant_may_use(name: str) -> bool:
    return name in TENANT_VOICES


def rejected(ssml: str, **kwargs: int) -> str:
    with pytest.raises(SsmlRejected) as caught:
        validate_ssml(ssml, allowed_voices=tenant_may_use, **kwargs)
    return caught.value.reason


def spoken(ssml: str) -> str:
    return "".join(ElementTree.fromstring(ssml).itertext())


# --- plain text into SSML ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Fish & chips < 5 € \"today\" and 'tomorrow'",
        "Close the section ]]> then <voice name='x'>",
        "</voice></speak><speak>injected",
        "<!DOCTYPE x [<!ENTITY a 'b'>]>&a;",
        "multi\nline\ttext",
    ],
)
def test_plain_text_is_escaped_and_parses_back_to_the_same_text(text: str) -> None:
    document = text_to_ssml(text, voice="en-US-JennyNeural", language="en-US")

    root = ElementTree.fromstring(document)
    assert root.tag == f"{{{SSML_NS}}}speak"
    assert [element.tag for element in root.iter()] == [
        f"{{{SSML_NS}}}speak",
        f"{{{SSML_NS}}}voice",
    ]
    assert spoken(document) == text
    validated = validate_ssml(document, allowed_voices=tenant_may_use)
    assert spoken(validated.ssml) == text


def test_style_rate_and_pitch_wrap_the_text() -> None:
    document = text_to_ssml(
        "Good news!",
        voice="en-US-JennyNeural",
        language="en-US",
        style="cheerful",
        rate="+10%",
        pitch="-2st",
    )

    voice = ElementTree.fromstring(document)[0]
    express = voice[0]
    assert voice.attrib == {"name": "en-US-JennyNeural"}
    assert express.tag == f"{{{MSTTS_NS}}}express-as"
    assert express.attrib == {"style": "cheerful"}
    prosody = express[0]
    assert prosody.tag == f"{{{SSML_NS}}}prosody"
    assert prosody.attrib == {"rate": "+10%", "pitch": "-2st"}
    assert prosody.text == "Good news!"
    assert validate_ssml(document, allowed_voices=tenant_may_use).voices == ("en-US-JennyNeural",)


@pytest.mark.parametrize("rate", ["x-slow", "slow", "medium", "fast", "x-fast", "-20%", "1.5"])
@pytest.mark.parametrize("pitch", ["x-low", "high", "+2st", "-10%", "600Hz", "+80Hz"])
def test_documented_rate_and_pitch_forms_are_accepted(rate: str, pitch: str) -> None:
    document = text_to_ssml("Hi", voice="en-US-GuyNeural", language="en-US", rate=rate, pitch=pitch)

    prosody = ElementTree.fromstring(document)[0][0]
    assert prosody.attrib == {"rate": rate, "pitch": pitch}


@pytest.mark.parametrize(
    "voice",
    [
        "en-US-JennyNeural",
        "en-US-AvaMultilingualNeural",
        "zh-CN-henan-YundengNeural",
        "en-US-Ava:DragonHDLatestNeural",
        "ContosoNarratorNeural",
    ],
)
def test_stock_hd_dialect_and_custom_voice_names_are_accepted(voice: str) -> None:
    document = text_to_ssml("Hi", voice=voice, language="en-US")

    assert ElementTree.fromstring(document)[0].attrib == {"name": voice}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"voice": 'en-US-Jenny"Neural'}, "invalid_voice"),
        ({"voice": "en-US-Jenny Neural"}, "invalid_voice"),
        ({"voice": ""}, "invalid_voice"),
        ({"language": "english"}, "invalid_value"),
        ({"language": 'en-US" evil="1'}, "invalid_value"),
        ({"style": 'cheerful"><audio src="x'}, "invalid_value"),
        ({"rate": "twice"}, "invalid_value"),
        ({"rate": "+10%; drop"}, "invalid_value"),
        ({"pitch": "10 Hz"}, "invalid_value"),
        ({"pitch": "very-high"}, "invalid_value"),
        ({"text": "   \n"}, "empty_text"),
        ({"text": "bell\x07"}, "invalid_value"),
    ],
)
def test_invalid_plain_text_requests_are_rejected(overrides: dict[str, str], reason: str) -> None:
    arguments = {"text": "Hello", "voice": "en-US-JennyNeural", "language": "en-US"} | overrides
    text = arguments.pop("text")

    with pytest.raises(SsmlRejected) as caught:
        text_to_ssml(text, **arguments)

    assert caught.value.reason == reason
    assert caught.value.detail
    assert isinstance(caught.value, ValueError)


# --- caller SSML --------------------------------------------------------------------------

REALISTIC = f"""<?xml version="1.0" encoding="utf-8"?>
{HEAD}
  <!-- a dialogue -->
  <voice name="en-US-JennyNeural">
    <mstts:express-as style="cheerful" styledegree="1.5">
      Welcome to <emphasis level="strong">Contoso</emphasis>!
    </mstts:express-as>
    <break time="500ms"/>
    <prosody rate="-10%" pitch="+5%">Your order <say-as interpret-as="digits">4711</say-as>
      has shipped.</prosody>
  </voice>
  <voice name="de-DE-KatjaNeural">
    <lang xml:lang="de-DE"><s>Vielen Dank &amp; auf Wiedersehen.</s></lang>
    <break strength="medium"/>
    <sub alias="World Wide Web Consortium">W3C</sub>
  </voice>
</speak>"""


def test_realistic_document_with_two_voices_passes() -> None:
    result = validate_ssml(REALISTIC, allowed_voices=tenant_may_use)

    assert result.voices == ("en-US-JennyNeural", "de-DE-KatjaNeural")
    assert result.language == "en-US"
    root = ElementTree.fromstring(result.ssml)
    assert [voice.attrib["name"] for voice in root] == list(result.voices)
    assert "Contoso" in spoken(result.ssml)
    assert "Vielen Dank & auf Wiedersehen." in spoken(result.ssml)
    assert root.find(f".//{{{SSML_NS}}}break").attrib == {"time": "500ms"}  # type: ignore[union-attr]
    assert "<!--" not in result.ssml
    # Billable: the markup and text inside each <voice>, without the speak and voice tags.
    inside_voices = re.findall(r'<voice name="[^"]+">(.*?)</voice>', result.ssml, re.DOTALL)
    assert len(inside_voices) == 2
    assert result.characters == sum(len(inside) for inside in inside_voices)
    assert 200 < result.characters < len(REALISTIC)


def test_normalized_document_validates_to_itself() -> None:
    first = validate_ssml(REALISTIC, allowed_voices=tenant_may_use)

    second = validate_ssml(first.ssml, allowed_voices=tenant_may_use)

    assert second == first


XXE = f"""<?xml version="1.0"?>
<!DOCTYPE speak [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
{HEAD}<voice name="en-US-JennyNeural">&xxe;</voice></speak>"""

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{n} "{("&lol" + str(n - 1) + ";") * 10 if n > 1 else "&lol;" * 10}">\n'
        for n in range(1, 10)
    )
    + f']>\n{HEAD}<voice name="en-US-JennyNeural">&lol9;</voice></speak>'
)

PLAIN_DOCTYPE = f'<!DOCTYPE speak>\n{HEAD}<voice name="en-US-JennyNeural">Hi</voice></speak>'

EXTERNAL_DTD = (
    '<!DOCTYPE speak SYSTEM "http://attacker.example/ssml.dtd">\n'
    f'{HEAD}<voice name="en-US-JennyNeural">Hi</voice></speak>'
)


@pytest.mark.parametrize("document", [XXE, BILLION_LAUGHS, PLAIN_DOCTYPE, EXTERNAL_DTD])
def test_any_dtd_is_refused(document: str) -> None:
    assert rejected(document, max_chars=100_000) == "dtd_forbidden"


@pytest.mark.parametrize(
    ("raised", "reason"),
    [
        (EntitiesForbidden("x", None, None, None, None, None), "entities_forbidden"),
        (ExternalReferenceForbidden("ctx", None, "file:///etc/passwd", None), "external_reference"),
    ],
)
def test_defusedxml_refusals_map_to_their_reasons(
    monkeypatch: pytest.MonkeyPatch, raised: Exception, reason: str
) -> None:
    # Unreachable with forbid_dtd=True (entities need a DTD), kept mapped in case it changes.
    def refuse(*_: object, **__: object) -> None:
        raise raised

    monkeypatch.setattr(DefusedET, "fromstring", refuse)

    assert rejected(f'{HEAD}<voice name="en-US-JennyNeural">Hi</voice></speak>') == reason


def test_oversized_input_is_refused_without_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(DefusedET, "fromstring", lambda text, **_: calls.append(text))
    body = "a" * 50_000_000

    reason = rejected(f'{HEAD}<voice name="en-US-JennyNeural">{body}</voice></speak>')

    assert reason == "too_large"
    assert calls == []


def test_input_at_the_limit_is_parsed() -> None:
    document = f'{HEAD}<voice name="en-US-JennyNeural">Hi</voice></speak>'

    result = validate_ssml(document, allowed_voices=tenant_may_use, max_chars=len(document))

    assert result.voices == ("en-US-JennyNeural",)
    assert rejected(document, max_chars=len(document) - 1) == "too_large"


def voiced(body: str, voice: str = "en-US-JennyNeural") -> str:
    return f'{HEAD}<voice name="{voice}">{body}</voice></speak>'


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ("hello", "not_xml"),
        (voiced("<s>unclosed</voice></speak>"), "not_xml"),
        (
            voiced(
                '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd"/>'
            ),
            "foreign_namespace",
        ),
        (voiced('<m:math xmlns:m="http://www.w3.org/1998/Math/MathML"/>'), "foreign_namespace"),
        (voiced('<s xmlns:x="urn:evil" x:onload="1">Hi</s>'), "foreign_namespace"),
        (
            '<speak version="1.0" xml:lang="en-US"><voice name="en-US-JennyNeural">Hi</voice>'
            "</speak>",
            "foreign_namespace",
        ),
        (
            f'<speak version="1.0" xmlns="{SSML_NS}" xmlns:mstts="http://www.w3.org/2001/mstts"'
            ' xml:lang="en-US"><voice name="en-US-JennyNeural">'
            '<mstts:express-as style="cheerful">Hi</mstts:express-as></voice></speak>',
            "foreign_namespace",
        ),
        (voiced('Hi <audio src="https://attacker.example/a.wav">x</audio>'), "unknown_element"),
        (voiced('<lexicon uri="https://attacker.example/lex.xml"/>Hi'), "unknown_element"),
        (
            f'{HEAD}<mstts:backgroundaudio src="https://attacker.example/bg.wav"/>'
            '<voice name="en-US-JennyNeural">Hi</voice></speak>',
            "unknown_element",
        ),
        (
            voiced('<mstts:ttsembedding speakerProfileId="abc">Hi</mstts:ttsembedding>'),
            "unknown_element",
        ),
        (voiced("<script>Hi</script>"), "unknown_element"),
        (f'<voice xmlns="{SSML_NS}" name="en-US-JennyNeural">Hi</voice>', "unknown_element"),
        (voiced('<prosody rate="fast" onclick="x">Hi</prosody>'), "unknown_attribute"),
        (voiced('<s xml:base="https://attacker.example/">Hi</s>'), "unknown_attribute"),
        (voiced("Hi", voice="en-US-DavisNeural"), "voice_not_allowed"),
        (voiced("Hi", voice="not a voice"), "invalid_voice"),
        (voiced('<prosody rate="ludicrous">Hi</prosody>'), "invalid_value"),
        (voiced('<prosody pitch="+2 st">Hi</prosody>'), "invalid_value"),
        (voiced('<break time="99s"/>Hi'), "invalid_value"),
        (
            voiced('<mstts:express-as style="sad" styledegree="5">Hi</mstts:express-as>'),
            "invalid_value",
        ),
        (voiced('<phoneme alphabet="ipa">Hi</phoneme>'), "invalid_value"),
        (
            HEAD.replace('version="1.0"', 'version="1.1"') + voiced("Hi")[len(HEAD) :],
            "invalid_value",
        ),
        (HEAD.replace(' xml:lang="en-US"', "") + voiced("Hi")[len(HEAD) :], "invalid_value"),
        (f'{HEAD}Hi<voice name="en-US-JennyNeural">there</voice></speak>', "invalid_value"),
        (f"{HEAD}<p>Hi</p></speak>", "invalid_value"),
        (f"{HEAD}</speak>", "invalid_value"),
        (voiced('<voice name="en-US-GuyNeural">nested</voice>'), "invalid_value"),
        (voiced('<break time="1s"/>  '), "empty_text"),
    ],
)
def test_hostile_or_invalid_ssml_is_refused(document: str, reason: str) -> None:
    assert rejected(document) == reason


def test_every_voice_is_checked_against_the_tenant() -> None:
    asked: list[str] = []

    def record(name: str) -> bool:
        asked.append(name)
        return name != "en-US-DavisNeural"

    document = (
        f'{HEAD}<voice name="en-US-JennyNeural">Hi</voice>'
        '<voice name="en-US-DavisNeural">there</voice></speak>'
    )
    with pytest.raises(SsmlRejected) as caught:
        validate_ssml(document, allowed_voices=record)

    assert caught.value.reason == "voice_not_allowed"
    assert "en-US-DavisNeural" in caught.value.detail
    assert asked == ["en-US-JennyNeural", "en-US-DavisNeural"]


def test_deep_nesting_is_refused() -> None:
    depth = 5_000
    document = voiced("<s>" * depth + "deep" + "</s>" * depth)

    assert rejected(document, max_chars=100_000) == "too_deep"


def test_nesting_up_to_the_limit_passes() -> None:
    # speak > voice > 10 x prosody = 12 levels, the default limit.
    document = voiced('<prosody rate="fast">' * 10 + "ok" + "</prosody>" * 10)

    assert validate_ssml(document, allowed_voices=tenant_may_use).voices == ("en-US-JennyNeural",)
    assert rejected(document, max_depth=11) == "too_deep"


def test_parser_is_the_defused_one_with_everything_forbidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, object] = {}
    real = DefusedET.fromstring

    def spy(text: str, **kwargs: object) -> object:
        seen.update(kwargs)
        return real(text, **kwargs)

    monkeypatch.setattr(DefusedET, "fromstring", spy)

    validate_ssml(voiced("Hi"), allowed_voices=tenant_may_use)

    assert seen == {"forbid_dtd": True, "forbid_entities": True, "forbid_external": True}


def test_a_refused_attribute_value_is_not_echoed() -> None:
    spoken = "my-secret-word " * 20  # a sub alias is spoken text, and this one is too long
    document = (
        f'<speak version="1.0" xmlns="{SSML_NS}" xml:lang="en-US">'
        f'<voice name="en-US-JennyNeural"><sub alias="{spoken}">x</sub></voice></speak>'
    )

    with pytest.raises(SsmlRejected) as refused:
        validate_ssml(document, allowed_voices=lambda _: True)

    assert refused.value.reason == "invalid_value"
    assert "secret" not in str(refused.value)


# --- bounds a caller could otherwise slip past --------------------------------------------


def test_voice_names_are_bounded_in_length() -> None:
    longest = "en-US-" + "A" * (MAX_VOICE_NAME_CHARS - len("en-US-Neural")) + "Neural"
    assert len(longest) == MAX_VOICE_NAME_CHARS == 64
    assert is_stock_voice_name(longest)
    assert not is_stock_voice_name("en-US-A" + longest[6:])
    assert not is_valid_voice_name("Contoso" + "A" * 60 + "Neural")
    assert rejected(voiced("Hi", voice="en-US-" + "A" * 200 + "Neural")) == "invalid_voice"
    with pytest.raises(SsmlRejected) as caught:
        text_to_ssml("Hi", voice="en-US-" + "A" * 5_000 + "Neural", language="en-US")
    assert caught.value.reason == "invalid_voice"
    assert "AAAA" not in str(caught.value)


@pytest.mark.parametrize("field", ["style", "rate", "pitch"])
def test_a_refused_style_rate_or_pitch_is_named_never_echoed(field: str) -> None:
    value = "<b>my-secret-word</b>" * 50

    with pytest.raises(SsmlRejected) as caught:
        text_to_ssml("Hi", voice="en-US-JennyNeural", language="en-US", **{field: value})

    assert caught.value.reason == "invalid_value"
    assert caught.value.field == field
    assert field in caught.value.detail
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("body", "silence_ms"),
    [
        ("Hello there.", 0),
        ('One <break time="2s"/> two <break time="250ms"/> three.', 2_250),
        # Strengths count as the Speech service's documented pauses; bare <break/> is medium.
        ('A <break strength="x-weak"/> b <break strength="x-strong"/> c <break/> d.', 2_250),
        ('A <break strength="medium" time="3s"/> b.', 3_000),  # time wins over strength
        ('<mstts:silence type="Leading-exact" value="1s"/>One. Two. Three.', 1_000),
        # A boundary silence is inserted at every boundary of its kind in the voice's text.
        ('<mstts:silence type="Sentenceboundary" value="2s"/>One. Two! Three? Four', 6_000),
        ('<mstts:silence type="Comma-exact" value="500ms"/>a, b, c, d.', 1_500),
    ],
)
def test_the_silence_a_document_asks_for_is_counted(body: str, silence_ms: int) -> None:
    assert validate_ssml(voiced(body), allowed_voices=tenant_may_use).silence_ms == silence_ms


def test_more_silence_than_the_bound_is_refused() -> None:
    per_break = 20_000
    allowed = MAX_SILENCE_MS // per_break
    at_limit = voiced("One." + '<break time="20s"/>' * allowed + "Two.")
    over = voiced("One." + '<break time="20s"/>' * (allowed + 1) + "Two.")
    many_sentences = voiced(
        '<mstts:silence type="Sentenceboundary-exact" value="20s"/>'
        + " ".join(f"Sentence {n}." for n in range(10))
    )

    assert validate_ssml(at_limit, allowed_voices=tenant_may_use).silence_ms == MAX_SILENCE_MS
    assert rejected(over) == "too_much_silence"
    assert rejected(many_sentences) == "too_much_silence"
    assert rejected(over.replace("20s", "1s"), max_silence_ms=2_000) == "too_much_silence"
