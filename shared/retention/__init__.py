"""Retention: how long Timbre keeps each class of data per data region (the versioned
policy), and the storage lifecycle rules generated from it as a backstop in Azure."""

from shared.retention.policy import (
    DATA_CLASSES,
    UNKNOWN_REGION,
    Horizon,
    RetentionPolicy,
    load_policy,
)

__all__ = ["DATA_CLASSES", "UNKNOWN_REGION", "Horizon", "RetentionPolicy", "load_policy"]
