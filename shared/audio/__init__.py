"""Audio: decode uploads, convert them to the canonical format, measure their quality.

Canonical format: RIFF WAV, PCM16, mono, 24 kHz (what Custom Neural Voice trains on).
Nothing here touches storage; `shared.ingestion.service` feeds it bytes and stores the results.
"""
