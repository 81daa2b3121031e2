# oracle.py: the verdicts of implementations we did not write, for the same message and the
# same DNS server as the package under test.
#
# Reads JSON on stdin: {"dns": "host:port", "timeout": seconds, "psl": path, "jobs": [{"id",
# "message" (base64), "ip", "helo", "mailfrom", "rand"}]} and writes {"results": {id: {...}}}.
#
#   dkim   dkimpy, per signature in header order. dkimpy's DKIM.verify is verify_headerprep,
#          then load_pk_from_dns, then verify_sig_process; they are called one by one here
#          only to tell its outcomes apart in RFC 8601 words: a signature that verifies is
#          pass; a hash or signature that does not verify is fail; a malformed or expired
#          signature, or a key that is absent, revoked or unusable, is permerror (RFC 6376
#          §6.1 PERMFAIL); a DNS timeout is temperror (TEMPFAIL); a key under dkimpy's
#          minimum of 1024 bits is policy (RFC 8301).
#   arc    dkimpy's arc_verify; its None ("a seal reported cv=fail, the chain is terminated")
#          is fail (RFC 8617 §5.2).
#   spf    pyspf's check2 (RFC 7208), MAIL FROM, or HELO when MAIL FROM is empty.
#   dmarc  OpenDMARC's libopendmarc (ctypes), told the From domain, dkimpy's DKIM results and
#          pyspf's SPF result, asking its DNS queries of the same server; pct is applied as the
#          opendmarc milter does (a draw below pct applies the policy), with the draw pinned.
#   iprev  RFC 8601 §2.7.3 with dnspython: PTR, then A/AAAA of each name.
#   header python3-authres parses the Authentication-Results field the package under test
#          wrote (job "ar", when given): its authserv-id and each method's result and properties.
import base64
import binascii
import ctypes
import email
import email.policy
import email.utils
import ipaddress
import json
import os
import socket
import struct
import sys
import time

import authres
import dkim
import dkim.dnsplug
import dns.exception
import dns.resolver
import dns.reversename
import spf

TIMEOUT = 5.0


def sigfields(d):
    f = d.signature_fields or {}
    return {k: (f.get(t) or b"").decode("ascii", "replace") for k, t in
            (("d", b"d"), ("s", b"s"), ("a", b"a"), ("i", b"i"))}


def dkim_one(d, idx, dnsfunc):
    def res(word, reason):
        out = {"result": word, "reason": reason}
        out.update(sigfields(d))
        return out

    d.signature_fields = {}
    try:
        prep = d.verify_headerprep(idx)
    except dkim.DKIMException as e:
        return res("permerror", "signature: %s" % e)
    except Exception as e:
        return res("permerror", "signature: dkimpy raised %s: %s" % (type(e).__name__, e))
    sig, include_headers, sigheaders = prep
    name = sig[b"s"] + b"._domainkey." + sig[b"d"] + b"."
    try:
        d.pk, d.keysize, d.ktag, d.seqtlsrpt = dkim.load_pk_from_dns(name, dnsfunc, timeout=d.timeout)
    except dkim.DnsTimeoutError as e:
        return res("temperror", "key: %s" % e)
    except (dkim.KeyFormatError, binascii.Error) as e:
        return res("permerror", "key: %s" % e)
    except Exception as e:  # dkimpy lets dnspython's errors out, e.g. EmptyLabel for d=
        return res("permerror", "key: dkimpy raised %s: %s" % (type(e).__name__, e))
    try:
        ok = d.verify_sig_process(sig, include_headers, sigheaders[idx], dnsfunc)
    except dkim.KeyFormatError as e:
        if "too small" in str(e):
            return res("policy", "key: %s" % e)
        return res("permerror", "key: %s" % e)
    except dkim.ValidationError as e:
        return res("fail", str(e))
    except dkim.DKIMException as e:
        return res("permerror", str(e))
    except Exception as e:
        return res("permerror", "dkimpy raised %s: %s" % (type(e).__name__, e))
    return res("pass" if ok else "fail", "signature verified" if ok else "signature did not verify")


def dkim_all(msg):
    d = dkim.DKIM(msg, minkey=1024, timeout=TIMEOUT)
    n = len([1 for k, _ in d.headers if k.lower() == b"dkim-signature"])
    return [dkim_one(d, i, dkim.dnsplug.get_txt) for i in range(n)]


def arc(msg):
    cv, _, reason = dkim.arc_verify(msg, dnsfunc=dkim.dnsplug.get_txt, timeout=TIMEOUT)
    return {"result": (cv or b"fail").decode(), "reason": reason}


def spf_check(job):
    res, exp = spf.check2(i=job["ip"], s=job["mailfrom"], h=job["helo"], timeout=TIMEOUT,
                          querytime=0)
    ident = "mailfrom" if job["mailfrom"] else "helo"
    dom = job["mailfrom"].rpartition("@")[2] if job["mailfrom"] else job["helo"]
    return {"result": res, "reason": exp, "identity": ident, "domain": dom.lower()}


# --- OpenDMARC (libopendmarc 1.4, dmarc.h) -------------------------------------------------

class SockaddrIn(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_ubyte * 2),
                ("addr", ctypes.c_ubyte * 4), ("zero", ctypes.c_ubyte * 8)]


class LibT(ctypes.Structure):  # OPENDMARC_LIB_T, MAXPATHLEN 4096 and MAXNS 3 on Linux
    _fields_ = [("tld_type", ctypes.c_int), ("tld_source_file", ctypes.c_char * 4096),
                ("nscount", ctypes.c_int), ("nsaddr_list", SockaddrIn * 3)]


POLICY_ABSENT, POLICY_PASS, POLICY_REJECT, POLICY_QUARANTINE, POLICY_NONE = 14, 15, 16, 17, 18
USED_POLICY_IS_SP = 20
DNS_ERROR_TMPERR = 11
WORDS = {ord("n"): "none", ord("q"): "quarantine", ord("r"): "reject"}
DKIM_OUTCOME = {"pass": 1, "temperror": 3}  # else 2, fail
SPF_OUTCOME = {"pass": 1, "temperror": 3, "none": 0}  # else 2, fail


class OpenDMARC:
    def __init__(self, host, port, psl):
        self.lib = ctypes.CDLL("libopendmarc.so.2")
        self.lib.opendmarc_policy_connect_init.restype = ctypes.c_void_p
        self.init = LibT()
        self.init.tld_type = 1 if psl else 0
        self.init.tld_source_file = (psl or "").encode()
        self.init.nscount = 1
        sa = self.init.nsaddr_list[0]
        sa.family = socket.AF_INET
        sa.port[:] = list(struct.pack(">H", port))
        sa.addr[:] = list(socket.inet_aton(host))
        rc = self.lib.opendmarc_policy_library_init(ctypes.byref(self.init))
        if rc != 0:
            raise RuntimeError("opendmarc_policy_library_init: %d" % rc)

    def check(self, ip, from_domain, dkims, spfres, rand):
        L = self.lib
        v6 = 6 if ":" in ip else 4
        p = ctypes.c_void_p(L.opendmarc_policy_connect_init(ip.encode(), v6))
        try:
            return self._check(p, from_domain, dkims, spfres, rand)
        finally:
            L.opendmarc_policy_connect_shutdown(p)

    def _check(self, p, from_domain, dkims, spfres, rand):
        L = self.lib
        fd = from_domain.encode()
        out = {"from_domain": from_domain}
        rc = L.opendmarc_policy_store_from_domain(p, fd)
        if rc != 0:
            return dict(out, result="permerror", reason="store_from_domain: %d" % rc)
        q = L.opendmarc_policy_query_dmarc(p, fd)
        buf = ctypes.create_string_buffer(256)
        L.opendmarc_policy_fetch_utilized_domain(p, buf, 256)
        out["record_domain"] = buf.value.decode()
        if q == DNS_ERROR_TMPERR:
            return dict(out, result="temperror", reason="query_dmarc: DNS temporary error")
        for r in dkims:
            if r.get("d"):
                L.opendmarc_policy_store_dkim(p, r["d"].encode(), r.get("s", "").encode(),
                                              DKIM_OUTCOME.get(r["result"], 2), None)
        if spfres["domain"]:
            L.opendmarc_policy_store_spf(p, spfres["domain"].encode(),
                                         SPF_OUTCOME.get(spfres["result"], 2),
                                         1 if spfres["identity"] == "mailfrom" else 2, None)
        pol = L.opendmarc_get_policy_to_enforce(p)
        out["query"] = q
        if pol == POLICY_ABSENT:
            return dict(out, result="none", policy="none", applied="none", reason="no DMARC record (query_dmarc %d)" % q)
        pv, spv, pct = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        L.opendmarc_policy_fetch_p(p, ctypes.byref(pv))
        L.opendmarc_policy_fetch_sp(p, ctypes.byref(spv))
        L.opendmarc_policy_fetch_pct(p, ctypes.byref(pct))
        used_sp = L.opendmarc_get_policy_token_used(p) == USED_POLICY_IS_SP
        policy = WORDS.get(spv.value if used_sp else pv.value, "none")
        out.update(pct=pct.value, p=WORDS.get(pv.value, ""), sp=WORDS.get(spv.value, ""))
        if pol == POLICY_PASS:
            return dict(out, result="pass", policy=policy, applied="none", reason="aligned pass")
        policy = {POLICY_REJECT: "reject", POLICY_QUARANTINE: "quarantine"}.get(pol, "none")
        applied = policy if int(rand * 100) < pct.value else "none"
        return dict(out, result="fail", policy=policy, applied=applied,
                    reason="no aligned pass (get_policy_to_enforce %d)" % pol)


def from_domains(msg):
    m = email.message_from_bytes(msg, policy=email.policy.compat32)
    fields = m.get_all("From") or []
    return [a.rpartition("@")[2].lower() for _, a in email.utils.getaddresses(fields) if a]


def dmarc(od, job, msg, dkims, spfres):
    doms = from_domains(msg)
    if len(doms) != 1:
        return {"result": "n/a", "reason": "%d From domains: OpenDMARC's library takes one" % len(doms)}
    return od.check(job["ip"], doms[0], dkims, spfres, job.get("rand", 0.5))


# --- iprev (RFC 8601 §2.7.3) --------------------------------------------------------------

def iprev(ip):
    r = dns.resolver.get_default_resolver()
    try:
        ptrs = [x.target.to_text() for x in r.resolve(dns.reversename.from_address(ip), "PTR")]
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return {"result": "permerror", "reason": "no PTR"}
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as e:
        return {"result": "temperror", "reason": "PTR: %s" % type(e).__name__}
    want = ipaddress.ip_address(ip)
    temp = False
    for name in ptrs:
        try:
            addrs = r.resolve(name, "AAAA" if want.version == 6 else "A")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except (dns.exception.Timeout, dns.resolver.NoNameservers):
            temp = True
            continue
        if any(ipaddress.ip_address(a.address) == want for a in addrs):
            return {"result": "pass", "name": name.rstrip("."), "reason": "forward-confirmed"}
    if temp:
        return {"result": "temperror", "reason": "forward lookup failed"}
    return {"result": "fail", "reason": "no PTR name resolves back to %s" % ip}


# --- Authentication-Results syntax (RFC 8601), by python3-authres -------------------------

def header(field):
    unfolded = field.replace("\r\n", "").replace("\n", "").rstrip()
    try:
        h = authres.AuthenticationResultsHeader.parse(unfolded)
    except Exception as e:
        return {"error": "%s: %s" % (type(e).__name__, e)}
    methods = []
    for r in h.results:
        props = {"%s.%s" % (p.type, p.name): str(p.value) for p in r.properties}
        methods.append({"method": r.method, "result": r.result, "props": props})
    return {"authserv_id": h.authserv_id, "methods": methods}


def main():
    global TIMEOUT
    req = json.load(sys.stdin)
    TIMEOUT = float(req.get("timeout") or 5)
    host, port = use_dns(req["dns"], TIMEOUT)
    od = OpenDMARC(host, port, req.get("psl"))
    out = {}
    for job in req["jobs"]:
        msg = base64.b64decode(job["message"])
        start = time.monotonic()
        r = {}
        r["dkim"] = dkim_all(msg)
        r["spf"] = spf_check(job)
        r["arc"] = arc(msg)
        r["iprev"] = iprev(job["ip"])
        r["dmarc"] = dmarc(od, job, msg, r["dkim"], r["spf"])
        if job.get("ar"):
            r["header"] = header(job["ar"])
        r["ms"] = int((time.monotonic() - start) * 1000)
        out[job["id"]] = r
    json.dump({"results": out}, sys.stdout)


main()
