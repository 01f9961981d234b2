"""Timbre's domain services, adapters, configuration, auth and errors.

Nothing in this package imports `azure.functions`: services run and test without the host.
"""

__version__ = "0.1.0"
