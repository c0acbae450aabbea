"""Adapters, one module per integration_type, and ADAPTERS: the one place they are registered."""

from exporter.adapters.base import AdapterContext, AdapterFactory, HealthCheck
from exporter.adapters.dynamics365 import Dynamics365Check
from exporter.adapters.fiken import FikenCheck
from exporter.adapters.http import HttpCheck
from exporter.adapters.tripletex import TripletexCheck
from exporter.adapters.xledger import XledgerCheck

ADAPTERS: dict[str, AdapterFactory] = {
    "http": HttpCheck,
    "xledger": XledgerCheck,
    "dynamics365": Dynamics365Check,
    "tripletex": TripletexCheck,
    "fiken": FikenCheck,
}

__all__ = ["ADAPTERS", "AdapterContext", "AdapterFactory", "HealthCheck"]
