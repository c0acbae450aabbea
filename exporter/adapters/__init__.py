"""Adapters, one module per integration_type, and ADAPTERS: the one place they are registered."""

from exporter.adapters.base import AdapterContext, AdapterFactory, HealthCheck
from exporter.adapters.http import HttpCheck

ADAPTERS: dict[str, AdapterFactory] = {
    "http": HttpCheck,
}

__all__ = ["ADAPTERS", "AdapterContext", "AdapterFactory", "HealthCheck"]
