"""network.mode = "allowlist": the entries of allow/deny, validated when the profile loads."""

import pytest

import isolate
from isolate.errors import ProfileError, UnsupportedError
from isolate.profile.hosts import parse_host_entry


def load(**net):
    return isolate.load_profile({"network": net})


@pytest.mark.parametrize("entry,kind,host,port", [
    ("pypi.org", "name", "pypi.org", None),
    ("PyPI.org:443", "name", "pypi.org", 443),
    ("*.githubusercontent.com:443", "wildcard", "githubusercontent.com", 443),
    ("10.1.2.3:5432", "ip", "10.1.2.3", 5432),
    ("::1", "ip", "::1", None),
    ("[2001:db8::1]:443", "ip", "2001:db8::1", 443),
    ("web_1.test", "name", "web_1.test", None),
])
def test_entries_parse(entry, kind, host, port):
    r = parse_host_entry(entry)
    assert (r.kind, r.host, r.port) == (kind, host, port)


def test_matching():
    w = parse_host_entry("*.example.com:443")
    assert w.matches_name("a.b.example.com", 443)
    assert not w.matches_name("example.com", 443)
    assert not w.matches_name("a.example.com", 80)
    assert not w.matches_name("badexample.com", 443)
    assert parse_host_entry("10.0.0.1").matches_ip("10.0.0.1", 9)
    assert not parse_host_entry("10.0.0.1").matches_name("10.0.0.1", 9)


@pytest.mark.parametrize("entry,words", [
    ("pypi.org:0", "port must be a number"),
    ("pypi.org:99999", "port must be a number"),
    ("pypi.org:http", "port must be a number"),
    ("*.com", "wildcard"),
    ("a*.example.com", "'*' is allowed only"),
    ("999.1.1.1", "not an IPv4"),
    ("[::1", "closing"),
    ("[zz::1]:80", "not an IPv6"),
    ("2001:db8::zz", "not an IPv6"),
    ("10.0.0.0/8", "CIDR"),
    ("-bad.example", "not a host name"),
    ("", "expected a host name"),
])
def test_bad_entries_name_key_and_entry(entry, words):
    with pytest.raises(ProfileError) as e:
        load(mode="allowlist", allow=["ok.example", entry])
    msg = str(e.value)
    assert "network.allow[1]" in msg and words in msg, msg


def test_deny_validated_too():
    with pytest.raises(ProfileError) as e:
        load(mode="allowlist", deny=["x:0"])
    assert "network.deny[0]" in str(e.value)


def test_allow_needs_allowlist_mode():
    with pytest.raises(ProfileError) as e:
        load(mode="none", allow=["pypi.org"])
    assert "network.allow" in str(e.value) and "allowlist" in str(e.value)


def test_bad_dns_and_limits():
    with pytest.raises(ProfileError) as e:
        load(mode="allowlist", dns="host")
    assert "network.dns" in str(e.value)
    with pytest.raises(ProfileError) as e:
        load(mode="allowlist", max_connections=0)
    assert "network.max_connections" in str(e.value)


def test_plain_run_fails_closed():
    """An allowlist profile launched without the proxy is refused, never run with more network."""
    with pytest.raises(UnsupportedError) as e:
        isolate.run(["/bin/true"], profile={"network": {"mode": "allowlist", "allow": ["pypi.org"]}})
    assert "network.mode" in str(e.value)
