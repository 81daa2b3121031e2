# common.py: what sign.py and oracle.py share; runScript puts it before either.
import dns.resolver


def use_dns(addr, lifetime):
    """Points dnspython's default resolver, which pyspf and dkimpy's get_txt use, at addr
    ("host:port") and returns (host, port). Each try waits at most a second, so that a UDP
    packet lost on a loaded machine is asked again within the lookup's lifetime."""
    host, port = addr.rsplit(":", 1)
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [host]
    r.port = int(port)
    r.timeout = min(1.0, lifetime)
    r.lifetime = lifetime
    dns.resolver.default_resolver = r
    return host, int(port)
