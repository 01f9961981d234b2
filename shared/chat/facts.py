"""Facts about the user, drawn from the turns with structured outputs, and their rules.

The model answers against a strict JSON schema (`ExtractedFacts`); what it returns is
checked again here (lengths, confidence, turn numbers within the turns it was shown),
because a schema says nothing about sense. A fact is identified by user, subject and
predicate, so a newer value for the same subject and predicate replaces the older one
(`supersede`), never the other way round.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from shared.chat.records import FactRecord, TurnRecord

MAX_SUBJECT_CHARS = 80
MAX_PREDICATE_CHARS = 60
MAX_VALUE_CHARS = 300
MIN_CONFIDENCE = 0.5
#: Facts kept per user; the least confident, oldest ones go first beyond it.
MAX_FACTS_PER_USER = 300
#: Facts one extraction may add (more is a model gone wrong).
MAX_FACTS_PER_EXTRACTION = 20

EXTRACTION_INSTRUCTIONS = (
    "You read a conversation between a user and an assistant and list durable facts the"
    " USER stated about themselves, their work, their organisation, their project or their"
    " preferences: things worth remembering in a later conversation. Do not list facts the"
    " assistant said, questions, guesses, small talk or anything transient. Each fact is a"
    " subject (who or what it is about, e.g. 'user', 'user's company', 'CRM migration'), a"
    " short predicate (e.g. 'works as', 'deadline', 'budget', 'prefers'), a value, your"
    " confidence from 0 to 1, and the numbers of the turns it comes from. Use the same"
    " subject and predicate as a known fact when the user changes or corrects it. Return an"
    " empty list when there is nothing worth keeping."
)


class FactCandidate(BaseModel):
    """One fact as the model returns it (strict JSON schema: every field required)."""

    model_config = ConfigDict(extra="forbid")

    subject: str
    predicate: str
    value: str
    confidence: float
    turns: list[int]


class ExtractedFacts(BaseModel):
    """The structured answer of one extraction."""

    model_config = ConfigDict(extra="forbid")

    facts: list[FactCandidate]


_SPACE = re.compile(r"\s+")


def _clean(text: str, limit: int) -> str | None:
    cleaned = _SPACE.sub(" ", text).strip()
    return cleaned if 0 < len(cleaned) <= limit else None


def fact_id(user_id: str, subject: str, predicate: str) -> str:
    """The id of a user's fact: the same for the same subject and predicate, any case."""
    key = "\n".join((user_id, subject.casefold(), predicate.casefold()))
    return "f" + hashlib.sha256(key.encode()).hexdigest()[:32]


def transcript(
    turns: Sequence[TurnRecord], names: dict[str, str], *, clip: int | None = None
) -> str:
    """Turns as the extraction and the summary read them, numbered; with `clip`, each text
    longer than that many characters is cut and marked as cut."""

    def shown(text: str) -> str:
        if clip is None or len(text) <= clip:
            return text
        return text[:clip] + " [... cut: too long to summarise whole]"

    lines: list[str] = []
    for turn in turns:
        speaker = names.get(turn.agent_id, "Assistant")
        lines.append(f"Turn {turn.number}. User: {shown(turn.message)}")
        lines.append(f"Turn {turn.number}. {speaker}: {shown(turn.reply)}")
    return "\n".join(lines)


def accepted(
    extracted: ExtractedFacts,
    *,
    user_id: str,
    session_id: str,
    turns: Sequence[TurnRecord],
    region: str,
) -> list[FactRecord]:
    """The candidates that make sense, as records dated by the latest turn they came from.

    A candidate is dropped when a part is empty or too long, its confidence is below
    `MIN_CONFIDENCE` or not a number in [0, 1], or it names no turn it was shown.
    """
    shown = {turn.number: turn for turn in turns}
    records: dict[str, FactRecord] = {}
    for candidate in extracted.facts[:MAX_FACTS_PER_EXTRACTION]:
        subject = _clean(candidate.subject, MAX_SUBJECT_CHARS)
        predicate = _clean(candidate.predicate, MAX_PREDICATE_CHARS)
        value = _clean(candidate.value, MAX_VALUE_CHARS)
        sources = sorted({n for n in candidate.turns if n in shown})
        confidence = candidate.confidence
        if not (subject and predicate and value and sources):
            continue
        if not MIN_CONFIDENCE <= confidence <= 1.0:
            continue
        at = shown[sources[-1]].at
        record = FactRecord(
            id=fact_id(user_id, subject, predicate),
            user_id=user_id,
            session_id=session_id,
            subject=subject,
            predicate=predicate,
            value=value,
            confidence=round(confidence, 3),
            turns=sources,
            created_at=at,
            updated_at=at,
            data_region=region,
        )
        records[record.id] = record  # a later candidate for the same fact wins
    return list(records.values())


def supersede(existing: FactRecord | None, newer: FactRecord) -> FactRecord | None:
    """What to store for `newer` given the stored fact of the same id; None to keep the
    stored one (it comes from a later turn, or says the same)."""
    if existing is None:
        return newer
    if newer.updated_at < existing.updated_at:
        return None
    if (newer.value, newer.session_id) == (existing.value, existing.session_id):
        turns = sorted({*existing.turns, *newer.turns})
        if turns == existing.turns and newer.confidence <= existing.confidence:
            return None
        return existing.model_copy(
            update={
                "turns": turns,
                "confidence": max(existing.confidence, newer.confidence),
                "updated_at": newer.updated_at,
            }
        )
    return newer.model_copy(
        update={
            # Same fact, any case: keep the spelling the user first saw.
            "subject": existing.subject,
            "predicate": existing.predicate,
            "created_at": existing.created_at,
            "superseded": existing.superseded + 1,
        }
    )


def known_facts_text(facts: Sequence[FactRecord]) -> str:
    """Known facts as the extraction reads them (so a correction reuses subject and
    predicate)."""
    if not facts:
        return "Known facts: none."
    return "Known facts:\n" + "\n".join(
        f"- subject: {f.subject} | predicate: {f.predicate} | value: {f.value}" for f in facts
    )
