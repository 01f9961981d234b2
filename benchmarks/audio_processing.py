"""Audio processing: Timbre against the lower bound and the ffmpeg CLI (issue 3).

Generates a 60 s 48 kHz stereo speech-like recording (espeak-ng speech when the CLI is on
the machine, else noise under a syllable-rate envelope) as a 16-bit WAV and as an MP3,
then, in interleaved rounds, takes the median time of:

(a) the lower bound: read as int16, sum the channels, soxr HQ to 24 kHz, write a WAV;
(b) Timbre in process: `shared.audio.process.process_audio` (decode, convert, quality
    report, verdict), or the streamed decode + to_canonical + wav_bytes while that module
    is missing;
(c) the ffmpeg CLI converting to PCM16 mono 24 kHz and measuring EBU R128 loudness in one
    invocation (only if `ffmpeg` is on the PATH).

Then the peak RSS a fresh interpreter adds while Timbre processes a 10-minute file.
Prints the figures and whether each target of the issue is met. The targets are on wall
time; CPU time is printed beside it, because Timbre runs some GIL-free work (SHA-256,
an MP3's decoder, the loudness FFTs) in a second thread while the ffmpeg CLI runs this
filter graph in one.

    .venv/bin/python benchmarks/audio_processing.py [--rounds 7] [--skip-rss]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf  # type: ignore[import-untyped]
import soxr  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RATE = 48_000
SECONDS = 60
LONG_MINUTES = 10
TARGETS = {
    "realtime_wav": 500.0,  # full processing at least 500x real time on the WAV
    "ffmpeg_over_timbre_wav": 2.0,
    "ffmpeg_over_timbre_mp3": 1.2,
    "timbre_over_bound": 4.0,
    "added_rss_mb": 250.0,
}
SENTENCES = (
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
    "It is easy to tell the depth of a well. These days a chicken leg is a rare dish. "
    "Rice is often served in round bowls. The juice of lemons makes fine punch. "
    "The box was thrown beside the parked truck. The hogs were fed chopped corn and garbage. "
    "Four hours of steady work faced us. A large size in stockings is hard to sell."
)

Signal = np.ndarray[Any, Any]


# --- the recording --------------------------------------------------------------------------


def espeak_speech() -> Signal | None:
    """Speech from espeak-ng at 48 kHz mono float, or None when the CLI is not there."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return None
    clips = []
    for voice in ("en-us", "en-gb", "en-us+f3"):
        out = subprocess.run(
            [espeak, "-v", voice, "-s", "165", "--stdout", SENTENCES],
            capture_output=True,
            check=True,
            timeout=120,
        )
        speech, rate = sf.read(io.BytesIO(out.stdout), dtype="float32")
        clips.append(soxr.resample(speech, rate, RATE, quality="HQ"))
        clips.append(np.zeros(RATE // 2, dtype=np.float32))  # a pause between takes
    return np.concatenate(clips)


def synthetic_speech(seconds: float) -> Signal:
    """Noise shaped like speech: a spoken spectrum tilt under syllables and pauses."""
    rng = np.random.default_rng(2024)
    frames = int(seconds * RATE)
    spectrum = np.fft.rfft(rng.standard_normal(frames))
    freqs = np.fft.rfftfreq(frames, 1 / RATE)
    shape = 1 / (1 + (freqs / 500) ** 2) ** 0.5 * (freqs > 80) * (freqs < 8000)
    voice = np.fft.irfft(spectrum * shape, frames)
    t = np.arange(frames) / RATE
    syllables = np.clip(np.sin(2 * np.pi * 4.3 * t), 0, None) ** 2
    phrases = (np.sin(2 * np.pi * 0.25 * t) > -0.6).astype(float)  # a pause every 4 s
    shaped: Signal = (voice * syllables * phrases).astype(np.float32)
    return shaped


def recording(seconds: float) -> tuple[Signal, str]:
    """`seconds` of 48 kHz stereo speech-like audio, peak -3 dBFS, with a -60 dBFS floor."""
    speech = espeak_speech()
    origin = "espeak-ng speech"
    if speech is None:
        speech, origin = synthetic_speech(seconds), "synthetic speech-like noise"
    frames = int(seconds * RATE)
    mono = np.resize(speech, frames)  # repeats the takes up to the length
    mono *= 10 ** (-3 / 20) / np.abs(mono).max()
    rng = np.random.default_rng(1)
    left = mono + 0.001 * rng.standard_normal(frames)
    right = 0.8 * np.roll(mono, 48) + 0.001 * rng.standard_normal(frames)  # 1 ms apart
    return np.stack([left, right], axis=1).astype(np.float32), origin


def encoded(signal: Signal, container: str) -> bytes:
    buffer = io.BytesIO()
    subtype = "PCM_16" if container == "WAV" else None
    sf.write(buffer, signal, RATE, format=container, subtype=subtype)
    return buffer.getvalue()


# --- the three contenders -------------------------------------------------------------------


def bound(data: bytes) -> bytes:
    """(a) Read as int16, sum the channels, soxr HQ to 24 kHz, write a WAV."""
    samples, rate = sf.read(io.BytesIO(data), dtype="int16")
    mono = samples[:, 0].astype(np.int32)
    mono += samples[:, 1]
    halved = mono.astype(np.float32)
    halved *= np.float32(0.5)
    resampled = soxr.resample(halved, rate, 24_000, quality="HQ")
    out = io.BytesIO()
    sf.write(out, np.clip(np.rint(resampled), -32768, 32767).astype(np.int16), 24_000, format="WAV")
    return out.getvalue()


def timbre(full: bool = True) -> tuple[Callable[[bytes], object], str]:
    """(b) Timbre's full processing, or its conversion alone (imports done)."""
    from shared.audio.convert import to_canonical, wav_bytes
    from shared.audio.decode import decode_stream

    def convert_only(data: bytes) -> object:
        stream = decode_stream(data, max_duration_s=3600, read_ahead=True)
        return wav_bytes(to_canonical(stream).samples)

    steps = "decode_stream + to_canonical + wav_bytes"
    if not full:
        return convert_only, steps
    try:
        from shared.audio.criteria import AudioThresholds
        from shared.audio.process import process_audio
    except ImportError as missing:
        return convert_only, f"{steps} (process_audio not importable: {missing})"

    thresholds = AudioThresholds(max_duration_s=3600)  # the 30 s default rejects at once

    def process(data: bytes) -> object:
        result = process_audio(data, thresholds)
        if result.canonical_wav is None:
            raise SystemExit(f"process_audio rejected the benchmark file: {result.reasons}")
        return result

    return process, "process_audio (decode, convert, quality report, verdict)"


def stage_times(files: dict[str, bytes], rounds: int) -> dict[str, dict[str, float]]:
    """Median seconds of each of Timbre's stages, run one after another, per file."""
    import hashlib

    from shared.audio.convert import to_canonical, wav_bytes
    from shared.audio.decode import decode, decode_stream
    from shared.audio.quality import measure

    stages: dict[str, dict[str, list[float]]] = {}
    for _ in range(rounds):
        for name, data in files.items():
            times = stages.setdefault(name, {})
            start = time.perf_counter()
            hashlib.sha256(data).hexdigest()
            hashed = time.perf_counter()
            decode(data, max_duration_s=3600)
            decoded = time.perf_counter()
            conversion = to_canonical(decode_stream(data, max_duration_s=3600, read_ahead=True))
            converted = time.perf_counter()
            wav_bytes(conversion.samples)
            written = time.perf_counter()
            measure(conversion.samples, clipping=conversion.clipping_ratio)
            measured = time.perf_counter()
            times.setdefault("sha256", []).append(hashed - start)
            times.setdefault("decode alone", []).append(decoded - hashed)
            times.setdefault("decode + convert (streamed)", []).append(converted - decoded)
            times.setdefault("wav_bytes", []).append(written - converted)
            times.setdefault("quality report", []).append(measured - written)
    return {
        name: {stage: statistics.median(values) for stage, values in times.items()}
        for name, times in stages.items()
    }


def ffmpeg_command(ffmpeg: str, source: Path, target: Path) -> list[str]:
    """(c) Conversion to PCM16 mono 24 kHz plus EBU R128 loudness, one invocation."""
    return [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-y",
        "-i",
        str(source),
        "-af",
        # Downmix and resample (libswresample), then loudness on the result, as Timbre
        # measures the canonical audio; per-frame loudness lines at verbose (not shown).
        "aformat=channel_layouts=mono,aresample=24000,ebur128=framelog=verbose",
        "-c:a",
        "pcm_s16le",
        str(target),
    ]


def timed(action: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `action`: this process's threads and its children's."""
    start = time.perf_counter()
    cpu = time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    action()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    return wall, time.process_time() - cpu + child_cpu


# --- memory ---------------------------------------------------------------------------------

RSS_CHILD = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})

def status_mb(field):
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit("needs /proc (Linux)")

import numpy, soundfile, soxr
sys.path.insert(0, {bench!r})
from audio_processing import timbre
process, what = timbre(full={full!r})
after_imports = status_mb("VmRSS")
data = Path({path!r}).read_bytes()
after_input = status_mb("VmRSS")
start = time.perf_counter()
process(data)
elapsed = time.perf_counter() - start
peak = status_mb("VmHWM")
print(json.dumps({{"after_imports": after_imports, "after_input": after_input, "peak": peak,
                  "seconds": elapsed, "input_mb": len(data) / 2**20}}))
"""


def added_rss(path: Path, *, full: bool = True) -> dict[str, float]:
    """Peak RSS of a fresh interpreter processing `path`, against its RSS after imports."""
    bench = str(Path(__file__).parent)
    code = RSS_CHILD.format(root=str(ROOT), bench=bench, path=str(path), full=full)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


# --- the run ------------------------------------------------------------------------------------


def run_rounds(
    files: dict[str, bytes], process: Callable[[bytes], object], rounds: int, scratch: Path
) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]]:
    """Median wall and CPU seconds per (file, contender); contenders interleaved in rounds."""
    ffmpeg = shutil.which("ffmpeg")
    paths = {}
    for name, data in files.items():
        paths[name] = scratch / f"in.{name.lower()}"
        paths[name].write_bytes(data)
    target = scratch / "out.wav"
    for name, data in files.items():  # warm-up: imports, caches, lazy initialisation
        process(data)
        bound(data)
        if ffmpeg:
            command = ffmpeg_command(ffmpeg, paths[name], target)
            subprocess.run(command, capture_output=True, check=True, timeout=120)
    times: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for name, data in files.items():
            actions: dict[str, Callable[[], object]] = {
                "bound": partial(bound, data),
                "timbre": partial(process, data),
            }
            if ffmpeg:
                command = ffmpeg_command(ffmpeg, paths[name], target)
                actions["ffmpeg"] = partial(
                    subprocess.run, command, capture_output=True, check=True, timeout=120
                )
            for contender, action in actions.items():
                wall, used = timed(action)
                times.setdefault((name, contender), []).append(wall)
                cpu.setdefault((name, contender), []).append(used)

    def medians(values: dict[tuple[str, str], list[float]]) -> dict[tuple[str, str], float]:
        return {key: statistics.median(series) for key, series in values.items()}

    return medians(times), medians(cpu)


def print_table(
    median: dict[tuple[str, str], float],
    cpu: dict[tuple[str, str], float],
    names: list[str],
    rounds: int,
) -> None:
    print(f"\nMedian of {rounds} interleaved rounds ({SECONDS} s of audio), wall time:")
    print(f"{'':6}{'bound':>20}{'Timbre':>20}{'ffmpeg':>20}")
    for name in names:
        cells = []
        for contender in ("bound", "timbre", "ffmpeg"):
            seconds = median.get((name, contender))
            cells.append(
                "-" if seconds is None else f"{seconds * 1000:7.1f} ms {SECONDS / seconds:5.0f}x"
            )
        print(f"{name:6}" + "".join(f"{cell:>20}" for cell in cells))
    print("CPU time (all threads; ffmpeg: the child process), median:")
    for name in names:
        cells = []
        for contender in ("bound", "timbre", "ffmpeg"):
            seconds = cpu.get((name, contender))
            cells.append("-" if seconds is None else f"{seconds * 1000:7.1f} ms")
        print(f"{name:6}" + "".join(f"{cell:>20}" for cell in cells))


def speed_checks(median: dict[tuple[str, str], float]) -> list[tuple[str, float, str, bool]]:
    checks = []
    realtime = SECONDS / median["WAV", "timbre"]
    checks.append(("Timbre real-time factor, WAV", realtime, ">= 500", realtime >= 500))
    ratio = median["WAV", "timbre"] / median["WAV", "bound"]
    checks.append(("Timbre / bound, WAV", ratio, "<= 4", ratio <= TARGETS["timbre_over_bound"]))
    realtime_mp3 = SECONDS / median["MP3", "timbre"]
    checks.append(("Timbre real-time factor, MP3", realtime_mp3, "-", True))
    for name, key in (("WAV", "ffmpeg_over_timbre_wav"), ("MP3", "ffmpeg_over_timbre_mp3")):
        if (name, "ffmpeg") in median:
            value = median[name, "ffmpeg"] / median[name, "timbre"]
            target = TARGETS[key]
            checks.append((f"ffmpeg / Timbre, {name}", value, f">= {target:g}", value >= target))
    return checks


def memory_checks(signal: Signal, scratch: Path) -> list[tuple[str, float, str, bool]]:
    checks = []
    long_signal = np.tile(signal, (LONG_MINUTES, 1))
    for name in ("WAV", "MP3"):
        path = scratch / f"long.{name.lower()}"
        path.write_bytes(encoded(long_signal, name))
        for full in (True, False):
            rss = added_rss(path, full=full)
            total = rss["peak"] - rss["after_imports"]
            beyond_input = rss["peak"] - rss["after_input"]
            what = "full processing" if full else "decode + convert + wav_bytes, no report"
            print(
                f"\n{LONG_MINUTES}-minute {name} ({rss['input_mb']:.0f} MB), {what}: "
                f"{rss['seconds'] * 1000:.0f} ms; RSS after imports {rss['after_imports']:.0f} MB, "
                f"peak {rss['peak']:.0f} MB:\n  +{total:.0f} MB counting the input bytes, "
                f"+{beyond_input:.0f} MB beyond them"
            )
            if full:
                limit = TARGETS["added_rss_mb"]
                label = f"Peak added RSS, 10-minute {name} (MB)"
                checks.append((label, total, "<= 250", total <= limit))
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--skip-rss", action="store_true", help="skip the 10-minute RSS run")
    args = parser.parse_args()

    signal, origin = recording(SECONDS)
    files = {"WAV": encoded(signal, "WAV"), "MP3": encoded(signal, "MP3")}
    process, what = timbre()
    print(f"Recording: {SECONDS} s, {RATE} Hz stereo, {origin}")
    print(f"Timbre (b): {what}")
    print(f"ffmpeg (c): {shutil.which('ffmpeg') or 'not on this machine: skipped'}")
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        median, cpu = run_rounds(files, process, args.rounds, scratch)
        print_table(median, cpu, list(files), args.rounds)
        print("\nTimbre's stages one after another, single-threaded but for the read-ahead")
        print("decoder and the loudness thread (median; 'decode alone' is the whole-array")
        print("decode, for reference: the pipeline decodes while it converts):")
        for name, stages in stage_times(files, args.rounds).items():
            cells = ", ".join(
                f"{stage} {seconds * 1000:.1f} ms" for stage, seconds in stages.items()
            )
            print(f"  {name}: {cells}")
        checks = speed_checks(median)
        if not args.skip_rss:
            checks += memory_checks(signal, scratch)
    print("\nTargets:")
    for label, value, target, met in checks:
        verdict = "" if target == "-" else ("met" if met else "NOT MET")
        print(f"  {label:40} {value:9.2f}  {target:>7}  {verdict}")
    print(json.dumps({f"{n}/{c}_ms": round(v * 1000, 2) for (n, c), v in median.items()}))


if __name__ == "__main__":
    main()
