"""Partner callback URLs are an SSRF boundary: what is refused, what is allowed, where requests go."""

from __future__ import annotations

import ipaddress

import pytest

from services.disclosure.callbacks import CallbackRefused, check_callback, non_public_reason, system_resolver

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def fake_resolver(table: dict[str, list[str]]):
    """Names under example.com and .invalid come from the table; the rest (localhost, numeric forms
    such as 2130706433) go to the system resolver, which answers them without any network."""
    def resolve(host: str, port: int) -> list[str]:
        if host in table:
            return table[host]
        if host.endswith((".example.com", ".invalid")):
            raise CallbackRefused(f"the host {host!r} cannot be resolved")
        return system_resolver(host, port)
    return resolve


RESOLVE = fake_resolver({
    "partner.example.com": [PUBLIC_V4],
    "v6.partner.example.com": [PUBLIC_V6],
    "rebind.example.com": ["127.0.0.1"],
    "mixed.example.com": [PUBLIC_V4, "10.1.2.3"],
    "metadata.example.com": ["169.254.169.254"],
    "internal.example.com": ["192.168.10.5"],
    "mapped.example.com": ["::ffff:10.0.0.1"],
})


@pytest.mark.parametrize("url, why", [
    ("https://127.0.0.1/hook", "loopback"),
    ("https://127.8.9.10/hook", "loopback"),
    ("https://localhost/hook", "loopback"),
    ("https://10.0.0.8/hook", "private"),
    ("https://10.255.255.255/hook", "private"),
    ("https://172.16.0.1/hook", "private"),
    ("https://172.31.255.254/hook", "private"),
    ("https://192.168.1.1/hook", "private"),
    ("https://169.254.169.254/latest/meta-data/", "link-local"),
    ("https://100.64.0.1/hook", "shared"),
    ("https://0.0.0.0/hook", "unicast"),
    ("https://224.0.0.1/hook", "unicast"),
    ("https://240.0.0.1/hook", "reserved"),
    ("https://255.255.255.255/hook", "reserved"),
    ("https://198.18.0.1/hook", "private"),
    ("https://[::1]/hook", "loopback"),
    ("https://[::]/hook", "unicast"),
    ("https://[fc00::1]/hook", "private"),
    ("https://[fd12:3456::1]/hook", "private"),
    ("https://[fe80::1]/hook", "link-local"),
    ("https://[ff02::1]/hook", "unicast"),
    ("https://[::ffff:127.0.0.1]/hook", "loopback"),
    ("https://[::ffff:169.254.169.254]/hook", "link-local"),
    ("https://[::ffff:10.0.0.1]/hook", "private"),
    ("https://[64:ff9b::a00:1]/hook", "private"),  # NAT64 of 10.0.0.1
    ("https://[2002:7f00:1::]/hook", "loopback"),  # 6to4 of 127.0.0.1
    ("https://[2001:db8::1]/hook", "private"),  # documentation range
    ("https://2130706433/hook", "loopback"),  # 127.0.0.1 as one decimal number
    ("https://0x7f000001/hook", "loopback"),
    ("https://127.1/hook", "loopback"),
    ("https://rebind.example.com/hook", "loopback"),
    ("https://mixed.example.com/hook", "private"),  # one bad address is enough
    ("https://metadata.example.com/hook", "link-local"),
    ("https://internal.example.com/hook", "private"),
    ("https://mapped.example.com/hook", "private"),
    ("https://user:secret@partner.example.com/hook", "credentials"),
    ("https://user@partner.example.com/hook", "credentials"),
    ("https://partner.example.com@127.0.0.1/hook", "credentials"),
    ("http://partner.example.com/hook", "https"),
    ("ftp://partner.example.com/hook", "https"),
    ("file:///etc/passwd", "https"),
    ("gopher://partner.example.com:70/", "https"),
    ("javascript:alert(1)", "https"),
    ("partner.example.com/hook", "https"),
    ("https:///hook", "no host"),
    ("https://partner.example.com:0/hook", "port"),
    ("https://partner.example.com:99999/hook", "port"),
    ("https://partner.example.com/hook#frag", "fragment"),
    ("https://partner.example.com/ho ok", "whitespace"),
    ("https://partner.example.com\\@127.0.0.1/", "backslash"),
    ("https://unknown.invalid/hook", "cannot be resolved"),
    ("https://partner.example.com/" + "a" * 2100, "longer"),
])
def test_refused(url: str, why: str) -> None:
    with pytest.raises(CallbackRefused) as refused:
        check_callback(url, allow_private=False, resolve=RESOLVE)
    assert why in str(refused.value)


@pytest.mark.parametrize("url, address", [
    ("https://partner.example.com/hook", PUBLIC_V4),
    ("https://partner.example.com:8443/hooks/carbon?x=1", PUBLIC_V4),
    ("https://v6.partner.example.com/hook", PUBLIC_V6),
    (f"https://{PUBLIC_V4}/hook", PUBLIC_V4),
    (f"https://[{PUBLIC_V6}]/hook", PUBLIC_V6),
])
def test_public_https_allowed(url: str, address: str) -> None:
    target = check_callback(url, allow_private=False, resolve=RESOLVE)
    assert target.address == address
    assert target.scheme == "https"


def test_request_goes_to_the_checked_address_under_the_partner_name() -> None:
    target = check_callback("https://partner.example.com:8443/hooks/carbon?x=1", allow_private=False, resolve=RESOLVE)
    assert target.pinned_url() == f"https://{PUBLIC_V4}:8443/hooks/carbon?x=1"
    assert target.host_header() == "partner.example.com:8443"
    assert target.host == "partner.example.com"
    v6 = check_callback("https://v6.partner.example.com/hook", allow_private=False, resolve=RESOLVE)
    assert v6.pinned_url() == f"https://[{PUBLIC_V6}]:443/hook"
    assert v6.host_header() == "v6.partner.example.com"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook",
    "https://localhost/hook",
    "http://[::1]:9000/hook",
    "http://192.168.1.20/hook",
    "http://rebind.example.com/hook",
])
def test_private_targets_allowed_with_the_flag(url: str) -> None:
    target = check_callback(url, allow_private=True, resolve=RESOLVE)
    assert non_public_reason(ipaddress.ip_address(target.address)) is not None


@pytest.mark.parametrize("url, why", [
    ("https://user:pw@127.0.0.1/hook", "credentials"),
    ("ftp://127.0.0.1/hook", "https"),
    ("http://0.0.0.0/hook", "unicast"),
    ("http://224.0.0.1/hook", "unicast"),
])
def test_the_flag_still_refuses_what_is_never_a_callback(url: str, why: str) -> None:
    with pytest.raises(CallbackRefused) as refused:
        check_callback(url, allow_private=True, resolve=RESOLVE)
    assert why in str(refused.value)


def test_resolution_is_repeated_each_time() -> None:
    """A name that re-points to a private address after the subscription was made (DNS rebinding)."""
    answers = {"partner.example.com": [PUBLIC_V4]}
    resolve = fake_resolver(answers)
    assert check_callback("https://partner.example.com/", allow_private=False, resolve=resolve).address == PUBLIC_V4
    answers["partner.example.com"] = ["127.0.0.1"]
    with pytest.raises(CallbackRefused, match="loopback"):
        check_callback("https://partner.example.com/", allow_private=False, resolve=resolve)
