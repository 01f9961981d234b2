"""Alerting: rules over the rollups, the alert lifecycle, and notifications to the on-call
channels."""
