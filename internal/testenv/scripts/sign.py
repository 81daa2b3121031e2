# sign.py: builds the test messages with signers we did not write.
#
# Reads JSON on stdin: {"dns": "host:port", "jobs": [{"id", "message" (base64), "steps": [...]}]}
# and writes {"results": {id: {"message" (base64)} or {"error": text}}} on stdout.
# Each step is done in order to the message:
#   dkim    sign with dkimpy's API (via "api"), the dkimsign command ("dkimsign") or
#           OpenDKIM's opendkim-testmsg ("opendkim"); tags alg, selector, domain, key,
#           canon, headers, identity, length (-1: l= of the whole body), time (t=),
#           expire (x=)
#   arc     one ARC hop: the forwarder's Authentication-Results (dkimpy's DKIM verdicts and
#           dkimpy's chain validation status, arc=) is added, then the hop is sealed by
#           dkimpy's arc_sign ("api") or the arcsign command ("arcsign")
#   prepend add raw header lines on top; append: add text to the body;
#   replace replace the first occurrence of old by new (count: how many, -1 all);
#   repeat  copy the topmost field named text count more times, on top
# Signatures are dkimpy's and OpenDKIM's own; this script only orders the steps.
import base64
import json
import subprocess
import sys
import time

import dkim
import dkim.dnsplug
import dns.resolver


def b(s):
    return s.encode() if isinstance(s, str) else s


def dkim_api(msg, st):
    d = dkim.DKIM(msg, signature_algorithm=b(st.get("alg") or "rsa-sha256"))
    extra = []
    if st.get("time"):
        extra.append((b"t", str(st["time"]).encode()))
    if st.get("expire"):
        extra.append((b"x", str(st["expire"]).encode()))
    if extra:
        # dkimpy has no x= and always writes t= now: give its own header writer the
        # tags before it hashes and signs.
        orig = d.gen_header

        def gen_header(fields, *a, **kw):
            keep = [f for f in fields if f[0] not in dict(extra)]
            i = [k for k, _ in keep].index(b"h")
            return orig(keep[:i] + extra + keep[i:], *a, **kw)

        d.gen_header = gen_header
    headers = [b(h) for h in st["headers"]] if st.get("headers") else None
    sig = d.sign(b(st["selector"]), b(st["domain"]), open(st["key"], "rb").read(),
                 identity=b(st["identity"]) if st.get("identity") else None,
                 canonicalize=tuple(b(st.get("canon") or "relaxed/simple").split(b"/")),
                 include_headers=headers, length=st.get("length") == -1)
    return sig + msg


def run(argv, msg):
    p = subprocess.run(argv, input=msg, capture_output=True, timeout=60)
    if p.returncode != 0 or not p.stdout.startswith((b"DKIM-Signature", b"ARC-Seal")):
        raise RuntimeError("%s: exit %d: %s" % (argv[0], p.returncode, p.stderr[-2000:]))
    return p.stdout


def dkim_cli(msg, st):
    h, bd = (st.get("canon") or "relaxed/simple").split("/")
    argv = ["dkimsign", st["selector"], st["domain"], st["key"], "--hcanon", h, "--bcanon", bd,
            "--signalg", st.get("alg") or "rsa-sha256"]
    if st.get("identity"):
        argv += ["--identity", st["identity"]]
    return run(argv, msg)


def dkim_opendkim(msg, st):
    p = subprocess.run(["opendkim-testmsg", "-C", "-d", st["domain"], "-s", st["selector"],
                        "-k", st["key"]], input=msg, capture_output=True, timeout=60)
    if p.returncode != 0 or b"DKIM-Signature" not in p.stdout:
        raise RuntimeError("opendkim-testmsg: exit %d: %s" % (p.returncode, p.stderr[-2000:]))
    return p.stdout


def forwarder_results(msg, srv):
    """The Authentication-Results a forwarder writes: dkimpy's verdict per DKIM signature and
    dkimpy's ARC chain validation status when the message has a chain."""
    parts = []
    d = dkim.DKIM(msg)
    n = len([1 for k, _ in d.headers if k.lower() == b"dkim-signature"])
    for i in range(n):
        try:
            ok = d.verify(i, dnsfunc=dkim.dnsplug.get_txt)
        except dkim.DKIMException:
            ok = False
        parts.append("dkim=%s header.d=%s" % ("pass" if ok else "fail",
                                               (d.domain or b"invalid").decode()))
    if any(k.lower() == b"arc-seal" for k, _ in d.headers):
        cv, _, _ = dkim.arc_verify(msg, dnsfunc=dkim.dnsplug.get_txt)
        parts.append("arc=%s" % (cv or b"fail").decode())
    return ("Authentication-Results: %s; %s\r\n" % (srv, "; ".join(parts) or "none")).encode()


def arc_hop(msg, st):
    msg = forwarder_results(msg, st["srv_id"]) + msg
    if st.get("via") == "arcsign":
        return run(["arcsign", st["selector"], st["domain"], st["key"], st["srv_id"]], msg)
    headers = dkim.arc_sign(msg, b(st["selector"]), b(st["domain"]), open(st["key"], "rb").read(),
                            b(st["srv_id"]))
    if not headers:
        raise RuntimeError("arc_sign made no ARC set")
    return b"".join(headers) + msg


def repeat(msg, name, count):
    d = dkim.DKIM(msg)
    for k, v in d.headers:
        if k.lower() == b(name).lower():
            return (k + b":" + v) * count + msg
    raise RuntimeError("no field %s to repeat" % name)


def step(msg, st):
    op = st["op"]
    if op == "dkim":
        via = st.get("via") or "api"
        return {"api": dkim_api, "dkimsign": dkim_cli, "opendkim": dkim_opendkim}[via](msg, st)
    if op == "arc":
        return arc_hop(msg, st)
    if op == "prepend":
        return b(st["text"]) + msg
    if op == "append":
        return msg + b(st["text"])
    if op == "replace":
        old, new = b(st["old"]), b(st["new"])
        if old not in msg:
            raise RuntimeError("replace: %r not in the message" % old)
        count = st.get("count") or 1
        return msg.replace(old, new) if count < 0 else msg.replace(old, new, count)
    if op == "repeat":
        return repeat(msg, st["text"], st["count"])
    raise RuntimeError("unknown step %s" % op)


def main():
    req = json.load(sys.stdin)
    use_dns(req["dns"], 5.0)
    out = {}
    for job in req["jobs"]:
        msg = base64.b64decode(job["message"])
        start = time.monotonic()
        try:
            for st in job.get("steps") or []:
                msg = step(msg, st)
            out[job["id"]] = {"message": base64.b64encode(msg).decode()}
        except Exception as e:  # reported per job: the Go side fails that case
            out[job["id"]] = {"error": "%s: %s" % (type(e).__name__, e)}
        out[job["id"]]["ms"] = int((time.monotonic() - start) * 1000)
    json.dump({"results": out}, sys.stdout)


main()
