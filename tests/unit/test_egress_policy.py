"""The egress decision alone (exporter/core/egress.py): addresses, spellings, the allow list, vendor hosts.
No sockets: these ask the policy, they never connect."""

from __future__ import annotations

import ipaddress
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from exporter.adapters import ADAPTERS
from exporter.adapters.classify import describe_exception
from exporter.core.egress import OWN, Blocked, EgressPolicy, forbidden, literal_address, parse_allow_entry
from exporter.core.model import HealthStatus, Integration, InvalidConfig, Reason, parse_config
from exporter.settings import Settings, describe_settings_error

STRICT = EgressPolicy()
ORG = UUID("55555555-5555-4555-8555-555555555555")

REFUSED = [  # address, the word the refusal uses
    ("127.0.0.1", "loopback"), ("127.255.255.254", "loopback"), ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"), ("10.0.0.1", "private"), ("172.16.0.1", "private"), ("172.31.255.255", "private"),
    ("192.168.1.1", "private"), ("100.64.0.1", "shared"), ("100.127.255.255", "shared"),
    ("169.254.169.254", "link-local"), ("169.254.0.1", "link-local"), ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"), ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"),
    ("192.0.2.1", "reserved"), ("198.18.0.1", "reserved"),
    ("::1", "loopback"), ("::", "unspecified"), ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"),
    ("fd00::1", "private"), ("fc00::1", "private"), ("fec0::1", "private"), ("ff02::1", "multicast"),
    ("2001:db8::1", "reserved"),
    # IPv4 inside IPv6: mapped, compatible (deprecated), 6to4, NAT64 (well-known and local-use), Teredo
    ("::ffff:10.0.0.1", "private"), ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:100.64.0.1", "shared"), ("::127.0.0.1", "loopback"), ("::8.8.8.8", "reserved"),
    ("2002:7f00:1::", "loopback"), ("2002:a00:1::1", "private"), ("64:ff9b::7f00:1", "loopback"), ("::ffff:0:7f00:1", "loopback"),
    ("64:ff9b::a9fe:a9fe", "link-local"), ("64:ff9b:1::a00:1", "private"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "reserved"),
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "172.15.255.255", "172.32.0.0", "100.63.255.255", "100.128.0.0",
          "169.253.255.255", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_internal_addresses_are_refused_by_name_of_their_range(address: str, why: str) -> None:
    assert not STRICT.allowed(address)
    assert STRICT.refusal(address) == why


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert STRICT.allowed(address)


def test_the_allow_list_opens_its_networks_in_either_ip_version_spelling_and_nothing_else() -> None:
    policy = EgressPolicy.from_allow(["10.1.0.0/16", "fd00::/8"])
    assert policy.allowed("10.1.2.3") and policy.allowed("::ffff:10.1.2.3") and policy.allowed("fd00::1")
    assert policy.refusal("10.2.0.1") == "private"
    assert policy.refusal("169.254.169.254") == "link-local"


def test_the_exporters_own_port_on_this_host_is_refused_even_when_loopback_is_allowed() -> None:
    policy = EgressPolicy.from_allow(["127.0.0.0/8", "::1"], own_port=9464,
                                     own_addresses=frozenset({ipaddress.ip_address("203.0.113.7")}))
    for address in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1", "0.0.0.0", "203.0.113.7"):
        assert policy.refusal(address, 9464) == OWN, address
    assert policy.allowed("127.0.0.1", 9465)
    assert policy.allowed("8.8.8.8", 9464)  # another host's 9464 is not this exporter
    with pytest.raises(Blocked, match=r"^destination localhost:9464 is not allowed \(this exporter itself\)$"):
        policy.check_host("localhost", 9464)


SPELLINGS_OF_LOOPBACK = ["127.0.0.1", "2130706433", "0x7f000001", "0X7F000001", "017700000001", "0x7f.0.0.1",
                         "0177.0.0.1", "0177.0.0.01", "127.1", "127.0.1", "0x7f.1", "127.0.0.1.", "[::ffff:127.0.0.1]",
                         "::ffff:7f00:1", "[0:0:0:0:0:ffff:7f00:1]", "[::1]", "[0::1]", "[::127.0.0.1]"]


@pytest.mark.parametrize("host", SPELLINGS_OF_LOOPBACK)
def test_every_spelling_of_loopback_is_read_as_loopback_and_refused_before_dns(host: str) -> None:
    ip = literal_address(host)
    assert ip is not None and forbidden(ip) == "loopback"
    with pytest.raises(Blocked, match=r"\(loopback\); an operator can allow it with EXPORTER_EGRESS_ALLOW$"):
        STRICT.check_host(host, 80)


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "localhost.", "LocalHost.", "api.localhost"])
def test_localhost_names_are_loopback_whatever_dns_says(host: str) -> None:
    with pytest.raises(Blocked, match=r"^destination [a-z.]+ is not allowed \(loopback\)"):
        STRICT.check_host(host, 80)
    EgressPolicy.from_allow(["127.0.0.0/8"]).check_host(host, 80)  # allowed loopback: on to DNS


@pytest.mark.parametrize("host", ["example.com", "0x7f.example", "1.2.3.4.5", "256.0.0.1", "0x", "08.0.0.1", "a..b"])
def test_names_are_not_mistaken_for_addresses(host: str) -> None:
    assert literal_address(host) is None


octets = st.integers(0, 255)
FORBIDDEN_V4 = st.one_of(
    st.builds(lambda b, c, d: f"127.{b}.{c}.{d}", octets, octets, octets),
    st.builds(lambda b, c, d: f"10.{b}.{c}.{d}", octets, octets, octets),
    st.builds(lambda b, c, d: f"172.{b}.{c}.{d}", st.integers(16, 31), octets, octets),
    st.builds(lambda c, d: f"192.168.{c}.{d}", octets, octets),
    st.builds(lambda b, c, d: f"100.{b}.{c}.{d}", st.integers(64, 127), octets, octets),
    st.builds(lambda c, d: f"169.254.{c}.{d}", octets, octets),
    st.just("0.0.0.0"),
)


def spell_part(value: int, style: str, zeros: int) -> str:
    if style == "hex":
        return "0x" + "0" * zeros + format(value, "x")
    if style == "HEX":
        return "0X" + "0" * zeros + format(value, "X")
    if style == "oct":
        return "0" + "0" * zeros + format(value, "o")
    return str(value)


@st.composite
def spellings(draw: st.DrawFn, address: str) -> str:
    """`address` written as a resolver would still read it: 1-4 parts, each decimal, hex or octal, or IPv6."""
    ip = ipaddress.IPv4Address(address)
    form = draw(st.sampled_from(["parts", "mapped", "mapped-hex", "nat64", "6to4"]))
    if form == "mapped":
        return f"[::ffff:{ip}]"
    if form == "mapped-hex":
        return f"[::FFFF:{int(ip) >> 16:x}:{int(ip) & 0xFFFF:X}]"
    if form == "nat64":
        return f"[64:ff9b::{int(ip) >> 16:x}:{int(ip) & 0xFFFF:x}]"
    if form == "6to4":
        return f"[2002:{int(ip) >> 16:x}:{int(ip) & 0xFFFF:x}::1]"
    n = draw(st.integers(1, 4))
    octs = list(ip.packed)
    parts = octs[: n - 1] + [int.from_bytes(bytes(octs[n - 1:]), "big")]
    styles = st.sampled_from(["dec", "hex", "HEX", "oct"])
    text = ".".join(spell_part(p, draw(styles), draw(st.integers(0, 2))) for p in parts)
    return text + draw(st.sampled_from(["", "."]))


@given(data=st.data(), address=FORBIDDEN_V4)
def test_any_spelling_of_an_internal_ipv4_address_is_refused(data: st.DataObject, address: str) -> None:
    host = data.draw(spellings(address))
    ip = literal_address(host)
    assert ip is not None, host
    assert forbidden(ip) == forbidden(ipaddress.ip_address(address)) is not None
    with pytest.raises(Blocked):
        STRICT.check_host(host, 443)


def test_a_name_resolving_to_an_internal_address_is_refused_without_naming_the_address() -> None:
    with pytest.raises(Blocked) as refused:
        STRICT.check_addresses("db.Internal.", 5432, ["8.8.8.8", "10.3.4.5"])
    assert str(refused.value) == ("destination db.internal is not allowed (private); an operator can allow it with "
                                  "EXPORTER_EGRESS_ALLOW")
    STRICT.check_addresses("example.com", 443, ["93.184.216.34", "2606:2800::1"])
    EgressPolicy.from_allow(["db.internal"]).check_addresses("DB.internal", 5432, ["10.3.4.5"])  # allowed by name


XLEDGER = ADAPTERS["xledger"].hosts
DYNAMICS = ADAPTERS["dynamics365"].hosts


@pytest.mark.parametrize(("url", "message"), [
    ("https://evil.example/graphql",
     "destination evil.example is not allowed (only www.xledger.net, demo.xledger.net)"),
    ("https://www.xledger.net.evil.example/", "destination www.xledger.net.evil.example is not allowed (only "),
    ("http://www.xledger.net/graphql", "destination http://www.xledger.net is not allowed (https only)"),
    ("https://www.xledger.net:8443/graphql", "destination www.xledger.net:8443 is not allowed (port 443 only)"),
])
def test_a_vendor_type_reaches_only_its_own_hosts_over_https(url: str, message: str) -> None:
    from yarl import URL

    u = URL(url)
    with pytest.raises(Blocked, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        STRICT.check_request(u.scheme, u.raw_host or "", u.explicit_port, XLEDGER)


def test_every_vendor_declares_its_hosts_and_its_default_url_passes_them() -> None:
    from yarl import URL

    defaults = {"xledger": "url", "tripletex": "url", "fiken": "url"}
    assert {name for name, spec in ADAPTERS.items() if spec.hosts is None} == {"http"}
    for name, field in defaults.items():
        url = URL(str(ADAPTERS[name].config.model_fields[field].default))
        STRICT.check_request(url.scheme, url.raw_host or "", url.explicit_port, ADAPTERS[name].hosts)
    config = ADAPTERS["dynamics365"].config.model_validate(
        {"org_url": "https://contoso.crm4.dynamics.com", "tenant_id": "t", "client_id": "c"})
    for url in (URL(str(config.org_url)), URL(config.effective_token_url)):
        STRICT.check_request(url.scheme, url.raw_host or "", url.explicit_port, DYNAMICS)


def test_dynamics_sovereign_clouds_are_reached_only_when_the_operator_names_them() -> None:
    for host in ("contoso.crm.microsoftdynamics.us", "login.microsoftonline.us", "contoso.crm.dynamics.cn",
                 "login.chinacloudapi.cn"):
        with pytest.raises(Blocked):
            STRICT.check_request("https", host, None, DYNAMICS)
    EgressPolicy(clouds=frozenset({"us-gov"})).check_request("https", "login.microsoftonline.us", None, DYNAMICS)
    with pytest.raises(Blocked):
        EgressPolicy(clouds=frozenset({"us-gov"})).check_request("https", "login.chinacloudapi.cn", None, DYNAMICS)
    assert not DYNAMICS.permits("dynamics.com.evil.example") and not DYNAMICS.permits("evildynamics.com")


def test_an_allow_listed_destination_skips_the_vendor_rules() -> None:
    policy = EgressPolicy.from_allow(["simulator", "127.0.0.0/8"])
    policy.check_request("http", "simulator", 8081, XLEDGER)
    policy.check_request("http", "127.0.0.1", 8081, XLEDGER)
    with pytest.raises(Blocked):
        policy.check_request("http", "simulator.evil.example", 8081, XLEDGER)
    policy.check_request("http", "anything.example", 8080, None)  # the generic http type: any host, any scheme


@pytest.mark.parametrize(("entry", "parsed"), [
    ("10.0.0.0/8", ipaddress.ip_network("10.0.0.0/8")), (" 10.0.0.7 ", ipaddress.ip_network("10.0.0.7/32")),
    ("::1", ipaddress.ip_network("::1/128")), ("10.0.0.1/8", ipaddress.ip_network("10.0.0.0/8")),
    ("Simulator.", "simulator"), ("erp.corp.example", "erp.corp.example")])
def test_allow_entries_are_networks_or_host_names(entry: str, parsed: object) -> None:
    assert parse_allow_entry(entry) == parsed


@pytest.mark.parametrize("entry", ["", "a b", "http://x", "10.0.0.0/33", "under_score", "x" * 64 + ".example"])
def test_a_bad_allow_entry_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="is neither a CIDR nor a host name"):
        parse_allow_entry(entry)


def test_egress_allow_setting_is_comma_separated_and_a_bad_entry_names_the_variable() -> None:
    assert Settings(egress_allow="10.1.0.0/16, simulator,,::1").egress_allow == ("10.1.0.0/16", "simulator", "::1/128")
    assert Settings().egress_allow == ()
    with pytest.raises(ValidationError) as bad:
        Settings(egress_allow="simulator, not a host")
    assert describe_settings_error(bad.value) == "EXPORTER_EGRESS_ALLOW: 'not a host' is neither a CIDR nor a host name"


def test_a_refusal_is_unreachable_blocked_with_its_message() -> None:
    message = "destination 127.0.0.1 is not allowed (loopback); an operator can allow it with EXPORTER_EGRESS_ALLOW"
    assert describe_exception(Blocked(message)) == (HealthStatus.UNREACHABLE, Reason.BLOCKED, message)


@pytest.mark.parametrize(("kind", "config"), [
    ("http", {"url": "https://user:hunter2@example.com/health"}),
    ("xledger", {"url": "https://:hunter2@www.xledger.net/graphql"}),
    ("dynamics365", {"org_url": "https://c.crm.dynamics.com", "tenant_id": "t", "client_id": "c",
                     "token_url": "https://u:hunter2@login.microsoftonline.com/t/oauth2/v2.0/token"}),
])
def test_user_info_in_any_url_is_an_invalid_configuration_naming_the_field(kind: str, config: dict) -> None:
    with pytest.raises(InvalidConfig) as invalid:
        parse_config(Integration(ORG, kind, config), {k: s.config for k, s in ADAPTERS.items()})
    field = "token_url" if kind == "dynamics365" else "url"
    assert str(invalid.value) == (f"config.{field}: user-info (user:password@) is not allowed in a URL: put the "
                                  "secret in credential_ref")
    assert "hunter2" not in str(invalid.value)
