"""What a recording is judged against, and how a judgement is written down.

Cheap to import (pydantic only): settings and the recordings API read it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["reject", "flag", "note"]
Verdict = Literal["accepted", "flagged", "rejected"]


class AudioThresholds(BaseModel):
    """The limits the verdict applies; defaults follow Microsoft's documented requirements."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_sample_rate_hz: int = Field(16_000, description="Below: rejected")
    recommended_sample_rate_hz: int = Field(
        24_000, description="Below (and above the minimum): flagged as upsampled"
    )
    min_bit_depth: int = Field(16, description="PCM sources below: flagged")
    min_duration_s: float = Field(0.5, description="Below: rejected")
    max_recommended_duration_s: float = Field(15.0, description="Above: flagged")
    max_duration_s: float = Field(30.0, description="Above: rejected (decided from metadata)")
    min_snr_db: float = Field(20.0, description="Below: flagged as noisy")
    recommended_snr_db: float = Field(35.0, description="Below: noted")
    snr_disagreement_db: float = Field(
        5.0, description="VAD and WADA estimates further apart: flagged"
    )
    peak_min_dbfs: float = Field(-6.0, description="Peak below: noted")
    peak_max_dbfs: float = Field(-3.0, description="Peak above: noted")
    max_clipping_ratio: float = Field(0.0001, description="Clipped-sample fraction above: flagged")
    max_dc_offset: float = Field(0.01, description="|mean| above (full scale = 1): flagged")
    min_edge_silence_ms: float = Field(100.0, description="Leading/trailing silence below: noted")
    max_edge_silence_ms: float = Field(200.0, description="Leading/trailing silence above: noted")
    min_speech_ratio: float = Field(
        0.05, description="Fraction of speech frames below: rejected as no speech"
    )


class Reason(BaseModel):
    """Why a recording got its verdict."""

    code: str
    severity: Severity
    detail: str
    value: float | None = None
    threshold: float | None = None


def no_transcript() -> Reason:
    """The reason added when an utterance has no transcript line."""
    return Reason(
        code="no_transcript", severity="flag", detail="no transcript line for this utterance"
    )


def verdict_of(reasons: list[Reason]) -> Verdict:
    """rejected if any reason rejects, flagged if any flags, else accepted."""
    severities = {reason.severity for reason in reasons}
    if "reject" in severities:
        return "rejected"
    if "flag" in severities:
        return "flagged"
    return "accepted"
