"""Send one message with Python's smtplib, for the smtpd real-client tests.

Usage: smtplib_client.py MODE HOST PORT CAFILE USER PASSWORD FROM TO MESSAGE_FILE

MODE is "plain" (no TLS, no AUTH), "starttls" (STARTTLS verifying the server
certificate against CAFILE and the host name HOST, then login()), or
"starttls-login" (the same, then AUTH LOGIN explicitly). The message file is
sent as bytes, unchanged (smtplib dot-stuffs it).
"""
import smtplib
import ssl
import sys


def main():
    mode, host, port, cafile, user, password, sender, rcpt, msgfile = sys.argv[1:10]
    with open(msgfile, "rb") as f:
        msg = f.read()
    with smtplib.SMTP(host, int(port), local_hostname="python.example", timeout=20) as s:
        s.ehlo()
        if mode in ("starttls", "starttls-login"):
            ctx = ssl.create_default_context(cafile=cafile)
            s.starttls(context=ctx)
            s.ehlo()
            if mode == "starttls":
                s.login(user, password)
            else:
                s.user, s.password = user, password
                code, resp = s.auth("LOGIN", s.auth_login)
                if code != 235:
                    raise SystemExit("AUTH LOGIN: %d %r" % (code, resp))
        elif mode != "plain":
            raise SystemExit("unknown mode " + mode)
        refused = s.sendmail(sender, [rcpt], msg)
        if refused:
            raise SystemExit("refused: %r" % (refused,))
    print("sent")


if __name__ == "__main__":
    main()
