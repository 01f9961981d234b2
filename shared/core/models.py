"""A pydantic base for records that are validated only when a flow runs, not at import.

Every function module is imported at cold start (the v2 model indexes them all), and
building a model's validator is most of what defining it costs. Records that no HTTP
route declares (Durable payloads, stored documents) defer that build to first use.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class LazyModel(BaseModel):
    """A model whose validator and serializer are built on first use."""

    model_config = ConfigDict(defer_build=True)
