"""The egress trust boundary: which destinations a tenant's configuration may make the exporter reach.

Tenant admins write `integration_config` (URLs), so every destination is untrusted. Pure decisions, no I/O:
`adapters.client.HttpClient` asks `check_host`/`check_addresses` on every connection (after DNS, on the
addresses it then connects to) and `fetch` asks `check_request` before every request. Only the operator
widens it, with EXPORTER_EGRESS_ALLOW; nothing widens it to the exporter's own port.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SETTING = "EXPORTER_EGRESS_ALLOW"


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Never reached unless allowed, by the word a refusal uses. Anything else not globally routable is "reserved".
FORBIDDEN: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("unspecified", _nets("0.0.0.0/8", "::/128")),  # connecting to 0.0.0.0 reaches this host
    ("loopback", _nets("127.0.0.0/8", "::1/128")),
    ("link-local", _nets("169.254.0.0/16", "fe80::/10")),  # 169.254.169.254: the cloud metadata service
    ("private", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10")),
    ("shared", _nets("100.64.0.0/10")),  # carrier-grade NAT, often a cloud's internal range
    ("multicast", _nets("224.0.0.0/4", "ff00::/8")),
)
OWN = "this exporter itself"
# The IPv4 address is the last 32 bits: NAT64's prefixes and SIIT's IPv4-translated ::ffff:0:a.b.c.d (RFC 2765).
NAT64 = _nets("64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96")
_LITERAL_CHARS = frozenset("0123456789abcdefx.:")  # a host with any other character is a name (or has a %zone)
CACHE_SIZE = 4096  # decisions per distinct address, so a check costs a lookup, not a walk over the ranges


class Blocked(Exception):
    """A destination the egress policy refuses, raised before anything is sent to it."""


def _blocked(destination: str, why: str, *, fixable: bool = True) -> Blocked:
    hint = f"; an operator can allow it with {SETTING}" if fixable else ""
    return Blocked(f"destination {destination} is not allowed ({why}){hint}")


def host_name(host: str) -> str:
    """A URL host as compared here: lower case, no brackets, no trailing dot."""
    return host.strip("[]").rstrip(".").lower()


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """IPv4 in the legacy spellings the C resolver accepts: 127.1, 0x7f.0.0.1, 0177.0.0.1, 2130706433."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        base = 16 if part[:2].lower() == "0x" else 8 if part[:1] == "0" and len(part) > 1 else 10
        digits = part[2:] if base == 16 else part
        try:
            values.append(int(digits, base) if digits and digits.isascii() and digits.isalnum() else -1)
        except ValueError:
            return None
    *head, last = values
    if min(values) < 0 or any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        return None
    number = last
    for i, v in enumerate(head):
        number |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


@functools.lru_cache(maxsize=CACHE_SIZE)
def literal_address(host: str) -> IPAddress | None:
    """`host` as an IP address when it is one, in any spelling a resolver would accept; None for a name."""
    bare = host_name(host)
    if "%" not in bare and not _LITERAL_CHARS.issuperset(bare):
        return None
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return _inet_aton(bare)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, bool] | None:
    """The IPv4 address inside an IPv6 one, and whether the IPv6 form is just a translation of it."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, True
    if ip.sixtofour is not None:
        return ip.sixtofour, True
    if any(ip in net for net in NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), True
    if ip.teredo is not None:
        return ip.teredo[1], False
    if int(ip) >> 32 == 0:  # IPv4-compatible ::a.b.c.d, deprecated
        return ipaddress.IPv4Address(int(ip)), False
    return None


@functools.lru_cache(maxsize=CACHE_SIZE)
def forbidden(ip: IPAddress) -> str | None:
    """The forbidden range `ip` is in ("loopback", "private", …), or None for a public unicast address."""
    for name, nets in FORBIDDEN:
        if any(ip in net for net in nets):
            return name
    if isinstance(ip, ipaddress.IPv6Address) and (embedded := _embedded_ipv4(ip)) is not None:
        inner, translated = embedded
        if (why := forbidden(inner)) or translated:
            return why
        return "reserved"
    return None if ip.is_global else "reserved"


def is_localhost_name(name: str) -> bool:
    """`localhost` and its subdomains always mean this host (RFC 6761), whatever DNS says."""
    return name == "localhost" or name.endswith(".localhost")


@dataclass(frozen=True)
class VendorHosts:
    """Where a vendor type may send requests: https on port 443 to these hosts ("*." matches subdomains).

    `clouds` are further host sets an operator opts into by name (EXPORTER_SOVEREIGN_CLOUDS).
    """

    hosts: tuple[str, ...]
    clouds: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def patterns(self, clouds: Iterable[str] = ()) -> tuple[str, ...]:
        return self.hosts + tuple(h for c in sorted(clouds) for h in self.clouds.get(c, ()))

    def permits(self, name: str, clouds: Iterable[str] = ()) -> bool:
        """Is the host `name` (as host_name gives it) one of this vendor's hosts?"""
        return any(name.endswith(p[1:]) if p.startswith("*.") else name == p for p in self.patterns(clouds))


@dataclass(frozen=True)
class EgressPolicy:
    """Public addresses only, plus what the operator allowed; never this exporter's own port on this host."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()
    own_port: int | None = None
    own_addresses: frozenset[IPAddress] = frozenset()
    clouds: frozenset[str] = frozenset()

    @classmethod
    def from_allow(cls, entries: Iterable[str], **options: object) -> EgressPolicy:
        """Build from EXPORTER_EGRESS_ALLOW's entries: CIDRs (or single addresses) and host names."""
        parsed = [parse_allow_entry(e) for e in entries]
        return cls(networks=tuple(p for p in parsed if not isinstance(p, str)),
                   hosts=frozenset(p for p in parsed if isinstance(p, str)), **options)  # type: ignore[arg-type]

    def refusal(self, address: str | IPAddress, port: int | None = None) -> str | None:
        """Why connecting to `address` (on `port`) is refused, in a word or two, or None when it is allowed."""
        ip = address if not isinstance(address, str) else literal_address(address)
        if ip is None:
            raise ValueError(f"not an IP address: {address!r}")
        if port is not None and port == self.own_port and self._is_own(ip):
            return OWN
        if any(candidate in net for candidate in _candidates(ip) for net in self.networks):
            return None
        return forbidden(ip)

    def allowed(self, address: str | IPAddress, port: int | None = None) -> bool:
        """May a connection go to `address` (on `port`)? The decision the check client enforces."""
        return self.refusal(address, port) is None

    def allows_name(self, host: str) -> bool:
        """Is this URL host on the operator's list, by name or (an IP literal) by network?"""
        name = host_name(host)
        if name in self.hosts:
            return True
        ip = literal_address(name)
        return ip is not None and any(c in net for c in _candidates(ip) for net in self.networks)

    def check_host(self, host: str, port: int) -> None:
        """Before DNS: refuse an IP literal in any spelling, or a localhost name, that is not allowed."""
        name = host_name(host)
        if (ip := literal_address(name)) is not None:
            self.check_addresses(host, port, [ip])
        elif is_localhost_name(name) and name not in self.hosts:
            if port == self.own_port:
                raise _blocked(f"{name}:{port}", OWN, fixable=False)
            if not (self.allowed("127.0.0.1") or self.allowed("::1")):
                raise _blocked(name, "loopback")

    def check_addresses(self, host: str, port: int, addresses: Iterable[str | IPAddress]) -> None:
        """After DNS: refuse when any address `host` resolved to is not allowed (the addresses connected to)."""
        by_name = host_name(host) in self.hosts
        for address in addresses:
            why = self.refusal(address, port)
            if why == OWN:
                raise _blocked(f"{host_name(host)}:{port}", why, fixable=False)
            if why and not by_name:
                raise _blocked(host_name(host), why)

    def check_request(self, scheme: str, host: str, port: int | None, vendor: VendorHosts | None) -> None:
        """Before a request: a vendor type goes only to its own hosts, over https on 443, unless allowed."""
        if vendor is None or self.allows_name(host):
            return
        name = host_name(host)
        if not vendor.permits(name, self.clouds):
            raise _blocked(name, "only " + ", ".join(vendor.patterns(self.clouds)))
        if scheme != "https":
            raise _blocked(f"{scheme}://{name}", "https only")
        if port not in (None, 443):
            raise _blocked(f"{name}:{port}", "port 443 only")

    def _is_own(self, ip: IPAddress) -> bool:
        return any(forbidden(c) in ("loopback", "unspecified") or c in self.own_addresses for c in _candidates(ip))


def _candidates(ip: IPAddress) -> tuple[IPAddress, ...]:
    """The address and, for an IPv4-mapped IPv6 address, the IPv4 address it is."""
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (ip, mapped) if mapped else (ip,)


def parse_allow_entry(entry: str) -> IPNetwork | str:
    """One EXPORTER_EGRESS_ALLOW entry: a network (`10.1.0.0/16`, `::1`) or a host name (`simulator`)."""
    entry = entry.strip()
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        pass
    name = host_name(entry)
    labels = name.split(".")
    if not name or len(name) > 253 or not all(
            0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii() for label in labels):
        raise ValueError(f"{entry!r} is neither a CIDR nor a host name")
    return name
