"""Network ACLs: parsing their entries and matching peer addresses (spec §6.4).

An ACL is a default ``policy`` (``"allow"`` or ``"deny"``) and a list of
``exclude`` entries, the exceptions to it. An entry is an IPv4 or IPv6
address or CIDR network:

- ``"a.b.c.d/nn"``, ``"2001:db8::/32"``: a network (host bits are masked off,
  so ``"192.168.1.7/24"`` is ``192.168.1.0/24``);
- ``"a.b.c.d"``: one host, unless its host part under the classful default
  mask is zero or its last octet is 0: then it is the classful network, /8
  for class A (0-127), /16 for B (128-191), /24 for C (192-223), as in LAppS
  (``"10.0.0.0"`` is ``10.0.0.0/8``, and so is ``"10.1.2.0"``). Class D and
  E addresses have no classful mask and are always hosts;
- an IPv6 address without prefix is one host;
- an IPv4-mapped IPv6 entry (``"::ffff:10.0.0.1"``, ``"::ffff:10.0.0.0/104"``)
  is its IPv4 counterpart.

A peer is matched by proper containment in any entry (LAppS checked one
candidate network only). IPv4-mapped IPv6 peers (``::ffff:a.b.c.d``, what a
dual-stack ``"::"`` listener reports for IPv4 clients) are matched as their
IPv4 address; other IPv6 peers against the IPv6 entries.
"""

import ipaddress

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _classful_prefix(address: ipaddress.IPv4Address):
    """/8, /16 or /24 for class A, B or C; None for D and E."""
    first = address.packed[0]
    if first < 128:
        return 8
    if first < 192:
        return 16
    if first < 224:
        return 24
    return None


def parse_entry(text: str):
    """The network an ACL entry stands for (an ``ipaddress`` network).
    Raises ``ValueError`` when the text is not an address or CIDR network."""
    if not isinstance(text, str) or text != text.strip() or "%" in text:
        raise ValueError(f"not an IP address or CIDR network: {text!r}")
    if "/" in text:
        network = ipaddress.ip_network(text, strict=False)
    else:
        address = ipaddress.ip_address(text)
        network = ipaddress.ip_network(address)
        if address.version == 4:
            prefix = _classful_prefix(address)
            if prefix is not None:
                host_bits = int(address) & ((1 << (32 - prefix)) - 1)
                if host_bits == 0 or address.packed[3] == 0:
                    network = ipaddress.IPv4Network((address, prefix), strict=False)
    if network.version == 6 and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        network = ipaddress.IPv4Network((network.network_address.ipv4_mapped,
                                         network.prefixlen - 96))
    return network


def peer_address(host: str):
    """A peer's host string (as Twisted reports it) as an address to match:
    IPv4-mapped IPv6 becomes IPv4, an IPv6 zone (``%eth0``) is dropped.
    None when the text is not an IP address."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


#: Peers whose verdict an :class:`Acl` keeps (all are forgotten when full).
MEMO = 4096


class Acl:
    """A compiled ACL. ``allows(host)`` decides for one peer.

    Matching costs one set look-up per distinct prefix length among the
    entries (of the peer's IP version), whatever the number of entries; the
    verdicts for the last peers seen (host strings, up to :data:`MEMO`) are
    kept, as parsing the address cost more than the rest of the match, and a
    peer usually comes back.
    """

    def __init__(self, policy="allow", exclude=()):
        if policy not in ("allow", "deny"):
            raise ValueError(f"policy must be \"allow\" or \"deny\", not {policy!r}")
        self.policy = policy
        self.networks = tuple(parse_entry(entry) for entry in exclude)
        by_version = {4: {}, 6: {}}
        for network in self.networks:
            bits = network.max_prefixlen
            by_version[network.version].setdefault(network.prefixlen, set()).add(
                int(network.network_address) >> (bits - network.prefixlen))
        # per version: (bits to drop, network keys) per prefix length, widest first
        self._index = {version: tuple(((32 if version == 4 else 128) - prefix, frozenset(keys))
                                      for prefix, keys in sorted(prefixes.items()))
                       for version, prefixes in by_version.items()}
        self._verdicts = {}  # host string -> matches(host)

    @classmethod
    def from_config(cls, section):
        """From a validated ``acl`` config object (``policy``, ``exclude``)."""
        return cls(section["policy"], section["exclude"])

    @property
    def allows_everyone(self) -> bool:
        return self.policy == "allow" and not self.networks

    def matches(self, host) -> bool:
        """Whether the peer (a host string or an ``ipaddress`` address) is in
        one of the ``exclude`` entries."""
        if not isinstance(host, str):
            return self._matches(host)
        verdict = self._verdicts.get(host)
        if verdict is None:
            if len(self._verdicts) >= MEMO:
                self._verdicts.clear()
            verdict = self._verdicts[host] = self._matches(peer_address(host))
        return verdict

    def _matches(self, address):
        if address is None:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        value = int(address)
        for shift, keys in self._index[address.version]:
            if value >> shift in keys:
                return True
        return False

    def allows(self, host) -> bool:
        """The decision for one peer: the policy, unless an entry matches.
        A peer that is not an IP address gets the policy."""
        if self.policy == "allow":
            return not self.networks or not self.matches(host)
        return self.matches(host)

    def __repr__(self):
        return f"Acl({self.policy!r}, {[str(n) for n in self.networks]!r})"
