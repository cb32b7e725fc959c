"""The tools' policy, pure: URLs as it reads them, domain patterns, every rule of
``check_request``, the private-address rule against the stdlib's ``ipaddress``, content
types. Hypothesis properties where a rule is a property."""

from __future__ import annotations

import ipaddress
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra.config import PolicyConfig
from orchestra.config.checks import domain_pattern, normal_host
from orchestra.errors import ErrorCode, Refusal
from orchestra.tools.addresses import canonical, classify, embedded_ipv4, in_networks
from orchestra.tools.policy import (
    Policy,
    check_addresses,
    check_content_type,
    check_request,
    content_type_allowed,
    domain_matches,
    parse_url,
)

# -- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "normal", "host", "port", "target"),
    [
        (
            "https://Example.COM/a?b=1#frag",
            "https://example.com/a?b=1",
            "example.com",
            443,
            "/a?b=1",
        ),
        ("http://example.com.", "http://example.com/", "example.com", 80, "/"),
        ("http://example.com:80/x", "http://example.com/x", "example.com", 80, "/x"),
        ("http://example.com:8080", "http://example.com:8080/", "example.com", 8080, "/"),
        (
            "https://Bücher.example/ü",
            "https://xn--bcher-kva.example/ü",
            "xn--bcher-kva.example",
            443,
            "/ü",
        ),
        ("http://[::FFFF:127.0.0.1]:81/", "http://[::ffff:7f00:1]:81/", "::ffff:7f00:1", 81, "/"),
        ("http://10.0.0.1?q", "http://10.0.0.1/?q", "10.0.0.1", 80, "/?q"),
        ("ftp://example.com/f", "ftp://example.com/f", "example.com", 0, "/f"),
        ("ftp://example.com:21/f", "ftp://example.com:21/f", "example.com", 21, "/f"),
        ("http://my_host.lan:8000/", "http://my_host.lan:8000/", "my_host.lan", 8000, "/"),
    ],
)
def test_a_url_is_read_normalised(url: str, normal: str, host: str, port: int, target: str) -> None:
    parsed = parse_url(url)
    assert (parsed.url, parsed.host, parsed.port, parsed.target) == (normal, host, port, target)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("example.com/page", "must be an absolute URL"),
        ("/relative", "must be an absolute URL"),
        ("http://", "must be an absolute URL"),
        ("http://:80/", "has no host"),
        ("http://user:pw@example.com/", "must not hold credentials"),
        ("http://example.com:99999/", "is not a URL"),
        ("http://example.com:0/", "has port 0"),
        ("http://exa mple.com/", "must not hold spaces"),
        ("http://example.com/\x00", "must not hold spaces or control characters"),
        ("http://-bad-.com/", "is not a valid domain name"),
        ("http://[::1/", "is not a URL"),
        ("http://a..b/", "is not a valid domain name"),
    ],
)
def test_what_is_not_a_url_says_why(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_url(url)


# -- domains ---------------------------------------------------------------------------------

labels = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=12)
domains = (
    st.lists(labels, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda name: not name.replace(".", "").isdigit())  # "0.0.0" would make an address
)


@given(sub=domains, domain=domains)
def test_a_wildcard_matches_subdomains_only(sub: str, domain: str) -> None:
    pattern = domain_pattern(f"*.{domain}")
    assert domain_matches(pattern, f"{sub}.{domain}")
    assert not domain_matches(pattern, domain)
    assert not domain_matches(pattern, f"{sub}{domain}")  # no label boundary: not below it


@given(domain=domains, upper=st.booleans(), dot=st.booleans())
def test_case_and_a_trailing_dot_do_not_matter(domain: str, upper: bool, dot: bool) -> None:
    written = (domain.upper() if upper else domain) + ("." if dot else "")
    assert domain_matches(domain_pattern(written), normal_host(domain))
    assert domain_matches(domain_pattern(domain), normal_host(written))


@given(host=st.one_of(domains, st.ip_addresses().map(str)))
def test_star_matches_every_host(host: str) -> None:
    assert domain_matches("*", normal_host(host))


@given(address=st.ip_addresses())
def test_a_wildcard_never_matches_an_address(address: ipaddress.IPv4Address) -> None:
    assert not domain_matches("*.0.0.1", str(address))


def test_idna_names_match_in_either_form() -> None:
    pattern = domain_pattern("*.Bücher.example")
    assert pattern == "*.xn--bcher-kva.example"
    assert domain_matches(pattern, parse_url("https://www.BÜCHER.example/").host)
    assert domain_matches(domain_pattern("xn--bcher-kva.example"), normal_host("bücher.example"))


@pytest.mark.parametrize("bad", ["a*b", "*.", "*.*.x", "exa mple.com", "*.10.0.0.1", ""])
def test_a_bad_domain_pattern_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        domain_pattern(bad)


# -- check_request: every rule ----------------------------------------------------------------


def _policy(**rules: object) -> Policy:
    return Policy.from_config(PolicyConfig(**rules))  # type: ignore[arg-type]


def _refused(policy: Policy, url: str, method: str = "GET", headers: tuple[str, ...] = ()) -> str:
    with pytest.raises(Refusal) as refused:
        check_request(policy, method, parse_url(url), headers)
    assert refused.value.code is ErrorCode.FORBIDDEN
    assert refused.value.policy_label is not None
    return refused.value.policy_label


def _allowed(policy: Policy, url: str, method: str = "GET", headers: tuple[str, ...] = ()) -> None:
    check_request(policy, method, parse_url(url), headers)


def test_the_default_policy_allows_any_public_web_page() -> None:
    policy = _policy()
    _allowed(policy, "https://example.com/")
    _allowed(policy, "http://example.com/", "HEAD")


@pytest.mark.parametrize(
    ("rules", "url", "method", "headers", "label"),
    [
        ({}, "ftp://example.com/", "GET", (), "tools.policy.schemes"),
        ({"schemes": ("https",)}, "http://example.com/", "GET", (), "tools.policy.schemes"),
        ({"methods": ("GET",)}, "https://example.com/", "HEAD", (), "tools.policy.methods"),
        ({}, "https://example.com/", "POST", (), "tools.policy.methods"),
        (
            {"allowed_domains": ("example.org",)},
            "https://example.com/",
            "GET",
            (),
            "tools.policy.allowed_domains",
        ),
        (
            {"allowed_domains": ("*.example.com",)},
            "https://example.com/",
            "GET",
            (),
            "tools.policy.allowed_domains",
        ),
        (
            {"allowed_domains": ()},
            "https://example.com/",
            "GET",
            (),
            "tools.policy.allowed_domains",
        ),
        (
            {"denied_domains": ("example.com",)},
            "https://EXAMPLE.com./",
            "GET",
            (),
            "tools.policy.denied_domains",
        ),
        (
            {"denied_domains": ("*.example.com",)},
            "https://a.b.example.com/",
            "GET",
            (),
            "tools.policy.denied_domains",
        ),
        ({}, "https://example.com:8443/", "GET", (), "tools.policy.ports"),
        ({"ports": (443,)}, "http://example.com/", "GET", (), "tools.policy.ports"),
        ({}, "https://example.com/", "GET", ("Host",), "tools.policy.headers"),
        ({}, "https://example.com/", "GET", ("transfer-encoding",), "tools.policy.headers"),
    ],
)
def test_each_rule_refuses_with_its_label(
    rules: dict[str, object], url: str, method: str, headers: tuple[str, ...], label: str
) -> None:
    assert _refused(_policy(**rules), url, method, headers) == label


@pytest.mark.parametrize(
    ("rules", "url", "method"),
    [
        ({"schemes": ("https",)}, "https://example.com/", "GET"),
        ({"methods": ("HEAD",)}, "https://example.com/", "HEAD"),
        ({"allowed_domains": ("*.example.com",)}, "https://www.example.com/", "GET"),
        ({"allowed_domains": ("example.com",)}, "https://Example.Com./", "GET"),
        ({"denied_domains": ("*.example.com",)}, "https://example.com/", "GET"),
        ({"ports": (8443,)}, "https://example.com:8443/", "GET"),
        ({"ports": (80,)}, "http://example.com:80/", "GET"),
        ({"allowed_domains": ("10.0.0.1", "::1")}, "http://[::1]/", "GET"),
    ],
)
def test_each_rule_allows_what_it_lists(rules: dict[str, object], url: str, method: str) -> None:
    _allowed(_policy(**rules), url, method)


def test_denied_domains_are_checked_before_allowed_ones() -> None:
    policy = _policy(allowed_domains=("wiki.example.com",), denied_domains=("*.example.com",))
    assert _refused(policy, "https://wiki.example.com/") == "tools.policy.denied_domains"


def test_a_refusal_names_the_rule_and_the_value() -> None:
    with pytest.raises(Refusal) as refused:
        check_request(_policy(), "GET", parse_url("https://example.com:8443/"), ())
    assert "port 8443" in refused.value.message and "tools.policy.ports" in refused.value.message


# -- addresses -------------------------------------------------------------------------------


@given(address=st.ip_addresses(v=4))
def test_an_ipv4_address_is_public_exactly_when_the_stdlib_says_global(
    address: ipaddress.IPv4Address,
) -> None:
    public = address.is_global and not address.is_multicast and not address.is_reserved
    assert (classify(address) is None) == public


@given(address=st.ip_addresses(v=4))
def test_an_ipv4_mapped_address_is_judged_as_its_ipv4_address(
    address: ipaddress.IPv4Address,
) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    assert canonical(mapped) == address
    assert (classify(mapped) is None) == (classify(address) is None)


@given(address=st.ip_addresses(v=4))
def test_6to4_and_nat64_addresses_carry_their_ipv4_address(
    address: ipaddress.IPv4Address,
) -> None:
    sixtofour = ipaddress.IPv6Address((0x2002 << 112) | (int(address) << 80))
    nat64 = ipaddress.IPv6Address((0x64FF9B << 96) | int(address))
    assert embedded_ipv4(sixtofour) == address and embedded_ipv4(nat64) == address
    if classify(address) is not None:
        assert classify(sixtofour) is not None and classify(nat64) is not None


@given(address=st.ip_addresses(v=6))
def test_an_ipv6_address_without_ipv4_inside_is_public_when_the_stdlib_says_so(
    address: ipaddress.IPv6Address,
) -> None:
    if embedded_ipv4(address) is None:
        public = address.is_global and not address.is_multicast and not address.is_reserved
        assert (classify(address) is None) == public


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not globally routable"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "a cloud metadata address"),
        ("2002:7f00:1::", "loopback"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_classes(address: str, reason: str | None) -> None:
    found = classify(ipaddress.ip_address(address))
    assert (found if found is None else found.split(" (")[0]) == reason


def _addresses(policy: Policy, host: str, *addresses: str) -> str | None:
    target = parse_url(f"http://{host}/")
    try:
        check_addresses(policy, target, [ipaddress.ip_address(a) for a in addresses])
    except Refusal as refusal:
        assert refusal.policy_label == "tools.policy.allow_private"
        return refusal.message
    return None


def test_every_resolved_address_must_be_public() -> None:
    policy = _policy()
    assert _addresses(policy, "example.com", "93.184.216.34") is None
    message = _addresses(policy, "example.com", "93.184.216.34", "10.0.0.7")
    assert message is not None and "example.com (10.0.0.7) is private" in message


def test_allow_private_lets_private_addresses_through_but_not_the_metadata_one() -> None:
    policy = _policy(allow_private=True)
    assert _addresses(policy, "wiki.lan", "192.168.1.20") is None
    assert _addresses(policy, "127.0.0.1", "127.0.0.1") is None
    message = _addresses(policy, "169.254.169.254", "169.254.169.254")
    assert message is not None and "metadata" in message
    message = _addresses(policy, "evil.example", "::ffff:169.254.169.254")
    assert message is not None and "metadata" in message


def test_allowed_networks_let_chosen_private_addresses_through() -> None:
    policy = _policy(allowed_networks=("127.0.0.1/32", "192.168.1.0/24", "169.254.169.254/32"))
    assert _addresses(policy, "127.0.0.1", "127.0.0.1") is None
    assert _addresses(policy, "wiki.lan", "192.168.1.20") is None
    assert _addresses(policy, "x.lan", "::ffff:127.0.0.1") is None  # the same address
    assert _addresses(policy, "169.254.169.254", "169.254.169.254") is None
    assert _addresses(policy, "127.0.0.2", "127.0.0.2") is not None
    assert _addresses(policy, "wiki.lan", "192.168.1.20", "192.168.2.1") is not None


@given(address=st.ip_addresses(v=4), prefix=st.integers(0, 32))
def test_network_membership_is_the_stdlibs(address: ipaddress.IPv4Address, prefix: int) -> None:
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    assert in_networks(address, (network,))
    assert in_networks(ipaddress.IPv6Address(f"::ffff:{address}"), (network,))


# -- content types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "allowed"),
    [
        ("text/html; charset=utf-8", True),
        ("TEXT/Plain", True),
        ("application/json", True),
        ("application/ld+json", True),
        ("application/atom+xml", True),
        ("image/png", False),
        ("application/octet-stream", False),
        ("application/pdf", False),
        (None, False),
        ("", False),
    ],
)
def test_the_default_content_types_are_text(content_type: str | None, allowed: bool) -> None:
    assert content_type_allowed(_policy(), content_type) is allowed


def test_star_slash_star_allows_everything_even_no_type() -> None:
    policy = _policy(content_types=("*/*",))
    assert content_type_allowed(policy, None) and content_type_allowed(policy, "image/png")


def test_a_refused_content_type_names_the_rule() -> None:
    with pytest.raises(Refusal) as refused:
        check_content_type(_policy(content_types=("text/*",)), "image/png")
    assert refused.value.policy_label == "tools.policy.content_types"
    assert "image/png" in refused.value.message
