"""Partner callback URLs: the service's SSRF boundary.

A callback URL makes this service send requests on a partner's behalf, so it must never reach the
platform's own network: loopback, private, link-local (cloud metadata), multicast or reserved
addresses, in IPv4 and IPv6 (IPv4-mapped and the other IPv4-embedding forms included). The host is
resolved when the subscription is made and again before every delivery (a name may be re-pointed
after the check), and the request then goes to the address that was checked.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


class CallbackRefused(ValueError):
    """The URL may not be used as a callback; the message says why, for the partner to act on."""


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """A checked callback: where to connect (``address``) and what to call it (``url``, ``host``)."""

    url: str
    scheme: str
    host: str  # the name as written, IDNA-encoded: the TLS server name and the Host header
    port: int
    address: str  # the checked address the request goes to

    def pinned_url(self) -> str:
        """The URL with the checked address in place of the name, so no second lookup happens."""
        parts = urlsplit(self.url)
        literal = f"[{self.address}]" if ":" in self.address else self.address
        return urlunsplit((parts.scheme, f"{literal}:{self.port}", parts.path or "/", parts.query, ""))

    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise CallbackRefused(f"the host {host!r} cannot be resolved") from exc
    return list(dict.fromkeys(info[4][0] for info in infos))


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or ip in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    # IPv4-compatible (deprecated) ::a.b.c.d
    if int(ip) >> 32 == 0 and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip))
    return None


def non_public_reason(ip: IPAddress) -> str | None:
    """Why an address is off limits for callbacks, or None when it is a public unicast address."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        reason = non_public_reason(inner)
        return f"{reason} (embedded in {ip})" if reason else None
    for flag, reason in (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
    ):
        if getattr(ip, flag):
            return reason
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "shared (carrier-grade NAT)"
    if not ip.is_global:
        return "not globally routable"
    return None


def _check_addresses(host: str, addresses: Sequence[str], allow_private: bool) -> str:
    if not addresses:
        raise CallbackRefused(f"the host {host!r} cannot be resolved")
    checked: list[str] = []
    for text in addresses:
        ip = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone index
        if ip.is_unspecified or ip.is_multicast:
            raise CallbackRefused(f"the host {host!r} resolves to {ip}, which is not a unicast address")
        reason = non_public_reason(ip)
        # Every address must pass: a name that resolves to one public and one private address is refused.
        if reason and not allow_private:
            raise CallbackRefused(f"the host {host!r} resolves to {ip}, a {reason} address")
        checked.append(str(ip))
    return checked[0]


def _parse(url: str, allow_private: bool) -> tuple[SplitResult, str, int]:
    if not isinstance(url, str) or not url:
        raise CallbackRefused("the callback URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise CallbackRefused(f"the callback URL is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or c == "\\" for c in url):
        raise CallbackRefused("the callback URL contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise CallbackRefused(f"the callback URL cannot be parsed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise CallbackRefused(f"the callback URL must use https, not {parts.scheme or 'no scheme'!r}")
    if scheme == "http" and not allow_private:
        raise CallbackRefused("the callback URL must use https")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise CallbackRefused("the callback URL must not carry credentials (user:password@)")
    if parts.fragment:
        raise CallbackRefused("the callback URL must not have a fragment")
    host = parts.hostname
    if not host:
        raise CallbackRefused("the callback URL has no host")
    try:
        explicit = parts.port
    except ValueError:
        raise CallbackRefused("the callback URL's port is not a number between 1 and 65535") from None
    if explicit == 0:
        raise CallbackRefused("the callback URL's port must not be 0")
    port = explicit or (443 if scheme == "https" else 80)
    try:
        ascii_host = host.encode("idna").decode("ascii") if not _is_ip_literal(host) else host
    except UnicodeError:
        raise CallbackRefused(f"the host {host!r} is not a valid domain name") from None
    return parts, ascii_host.rstrip(".").lower() or host, port


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def check_callback(url: str, *, allow_private: bool, resolve: Resolver = system_resolver) -> CallbackTarget:
    """Validate a callback URL and resolve its host; raises ``CallbackRefused`` saying why not."""
    parts, host, port = _parse(url, allow_private)
    if _is_ip_literal(host):
        addresses: Sequence[str] = [host]
    else:
        addresses = resolve(host, port)
    address = _check_addresses(host, addresses, allow_private)
    scheme = parts.scheme.lower()
    normalised = urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))
    return CallbackTarget(url=normalised, scheme=scheme, host=host, port=port, address=address)
