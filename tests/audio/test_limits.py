"""Headers cannot make processing allocate without bound (issue 10, item 4).

Every size a header declares (channels, sample rate, frames) is checked before anything
is allocated from it: a hostile header ends as a rejected report with a reason, a report
small enough for Cosmos DB, and never as a MemoryError, also under a memory cap.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.audio.decode import MAX_CHANNELS, MAX_SAMPLE_RATE_HZ, decode, probe
from shared.audio.model import AudioRejected
from shared.audio.process import ProcessedAudio, process_audio
from tests.kit.audio import encode, speech, wav

ROOT = Path(__file__).resolve().parents[2]
MEMORY_CAP_MB = 512  # normal uploads process well inside it (peak ~320 MB of address space)
REPORT_LIMIT_BYTES = 16_384  # what one report may take; Cosmos DB refuses items over 2 MB


def wav_header(channels: int, rate: int, bits: int, data_bytes: int, tag: int = 1) -> bytes:
    """A canonical 44-byte WAV header declaring exactly what it is told."""
    align = channels * bits // 8
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        *(b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, tag, channels, rate),
        *((rate * align) & 0xFFFFFFFF, align, bits, b"data", data_bytes),
    )


def many_channels_wav(channels: int = 32_767, size: int = 10_000_000) -> bytes:
    """The evaluation's file: 10 MB of PCM16 declaring 32,767 channels, speech in the first."""
    frames = size // (2 * channels)
    samples = np.zeros((frames, channels), dtype="<i2")
    samples[:, 0] = (np.random.default_rng(1).standard_normal(frames) * 3000).astype("<i2")
    return wav_header(channels, 48_000, 16, samples.nbytes) + samples.tobytes()


def hostile_files() -> dict[str, tuple[bytes, str]]:
    """name -> (file, the reason it must be rejected with)."""
    noise = (np.random.default_rng(2).standard_normal(1_000_000) * 3000).astype("<i2").tobytes()
    tone = np.random.default_rng(3).standard_normal((2_000, 200)).astype(np.float32) * 0.1
    return {
        "wav, 32767 channels": (many_channels_wav(), "too_many_channels"),
        "8-bit wav, 65535 channels": (
            wav_header(65_535, 8_000, 8, 65_535 * 40) + b"\x80" * (65_535 * 40),
            "too_many_channels",
        ),
        "float wav, 1000 channels": (
            wav_header(1000, 48_000, 32, 1000 * 4 * 2500, tag=3) + bytes(1000 * 4 * 2500),
            "too_many_channels",
        ),
        "wav, 4.29 GHz": (
            wav_header(1, 0xFFFFFFFF, 16, len(noise)) + noise,
            "sample_rate_too_high",
        ),
        "aiff, 200 channels": (encode(tone, 48_000, "AIFF", "PCM_16"), "too_many_channels"),
        "caf, 200 channels": (encode(tone, 48_000, "CAF", "PCM_16"), "too_many_channels"),
    }


def report_bytes(result: ProcessedAudio) -> int:
    """The size of what the ingestion service stores for this result (reasons, source, metrics)."""
    return len(
        json.dumps(
            {
                "reasons": [reason.model_dump() for reason in result.reasons],
                "source": result.source.model_dump() if result.source else None,
                "metrics": result.metrics.model_dump() if result.metrics else None,
            }
        )
    )


def test_a_10_mb_wav_declaring_32767_channels_is_rejected_with_a_small_report() -> None:
    result = process_audio(many_channels_wav())
    assert result.verdict == "rejected"
    assert [reason.code for reason in result.reasons] == ["too_many_channels"]
    assert result.source is not None and result.source.channels == 32_767
    assert report_bytes(result) < REPORT_LIMIT_BYTES


@pytest.mark.parametrize("case", list(hostile_files()))
def test_a_hostile_header_is_rejected_from_the_header(case: str) -> None:
    data, reason = hostile_files()[case]
    for read in (probe, lambda d: decode(d, max_duration_s=30.0)):
        with pytest.raises(AudioRejected) as caught:
            read(data)
        assert caught.value.reason == reason


def test_the_limits_leave_every_ordinary_recording_alone() -> None:
    """5.1 and 16-channel recordings, and 192 kHz, are still processed."""
    voice = speech(4.0)
    for channels, rate in ((6, 48_000), (MAX_CHANNELS, 48_000), (2, 192_000)):
        signal = np.zeros((voice.size, channels), dtype=np.float32)
        signal[:, 0] = voice
        result = process_audio(wav(signal, rate=rate))
        assert result.verdict != "rejected", (channels, rate, result.reasons)
    assert MAX_SAMPLE_RATE_HZ >= 384_000


_CHILD = """
import json, resource, sys
cap = int(sys.argv[1]) << 20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from shared.audio.process import process_audio
out = {}
for path in sorted(Path(sys.argv[3]).iterdir()):
    try:
        result = process_audio(path.read_bytes())
        out[path.name] = {
            "verdict": result.verdict,
            "codes": [r.code for r in result.reasons],
            "reasons_bytes": len(json.dumps([r.model_dump() for r in result.reasons])),
        }
    except BaseException as error:
        out[path.name] = {"escaped": f"{type(error).__name__}: {str(error)[:200]}"}
print(json.dumps(out))
"""


def test_hostile_headers_are_rejections_under_a_memory_cap(tmp_path: Path) -> None:
    """In a process whose address space is capped, every hostile file ends as a rejected
    report (no MemoryError, nothing else escapes), and an ordinary file next to them is
    still processed: the cap is not what rejects them."""
    files: dict[str, tuple[bytes, str]] = {
        **hostile_files(),
        "ordinary": (wav(np.stack([speech(10.0)] * 2, axis=1), rate=48_000), ""),
    }
    for index, (name, (data, _)) in enumerate(files.items()):
        (tmp_path / f"{index:02d}").write_bytes(data)
        files[name] = (b"", files[name][1])  # the parent keeps no copy
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(MEMORY_CAP_MB), str(ROOT), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    by_name = dict(zip(files, (outcomes[f"{i:02d}"] for i in range(len(files))), strict=True))
    for name, (_, reason) in files.items():
        outcome = by_name[name]
        assert "escaped" not in outcome, (name, outcome)
        assert outcome["reasons_bytes"] < REPORT_LIMIT_BYTES, name
        if reason:
            assert outcome == {**outcome, "verdict": "rejected", "codes": [reason]}, name
        else:
            assert outcome["verdict"] != "rejected", outcome
