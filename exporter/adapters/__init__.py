"""ADAPTERS: the one list of integration types. Each module owns its config model and its check.

Adding a type: write `adapters/<type>.py` with a config model (fields beyond IntegrationConfigBase), a
check class and `SPEC = AdapterSpec(Config, Check, hosts=VendorHosts(...))` (the vendor's own hosts: https only
there; leave it out for a type that may reach any public host), add one line here, and a fake in
demo/simulator.py.
"""

from exporter.adapters import dynamics365, fiken, http, tripletex, xledger
from exporter.adapters.base import AdapterSpec

ADAPTERS: dict[str, AdapterSpec] = {
    "http": http.SPEC,
    "xledger": xledger.SPEC,
    "dynamics365": dynamics365.SPEC,
    "tripletex": tripletex.SPEC,
    "fiken": fiken.SPEC,
}

__all__ = ["ADAPTERS"]
