"""Python's smtplib against the newer smtpd AUTH mechanisms and REQUIRETLS.

Usage: smtplib_auth.py MODE HOST PORT CAFILE USER SECRET FROM TO MESSAGE_FILE

MODE:
  xoauth2      STARTTLS, then SMTP.auth("XOAUTH2", callable) with the bearer token SECRET
  oauthbearer  STARTTLS, then SMTP.auth("OAUTHBEARER", callable) (RFC 7628)
  requiretls   STARTTLS, then sendmail with the REQUIRETLS MAIL parameter (RFC 8689)
  requiretls-plain  no STARTTLS: sendmail with REQUIRETLS must be refused
Prints "sent", or for requiretls-plain "refused CODE TEXT". The protocol goes to
stderr (set_debuglevel(1)).
"""
import smtplib
import ssl
import sys


def main():
    mode, host, port, cafile, user, secret, sender, rcpt, msgfile = sys.argv[1:10]
    with open(msgfile, "rb") as f:
        msg = f.read()
    with smtplib.SMTP(host, int(port), local_hostname="python.example", timeout=20) as s:
        s.set_debuglevel(1)
        s.ehlo()
        if mode != "requiretls-plain":
            s.starttls(context=ssl.create_default_context(cafile=cafile))
            s.ehlo()
        options = []
        if mode == "xoauth2":
            # smtplib base64-encodes what the callable returns (RFC 4954 4).
            code, resp = s.auth("XOAUTH2", lambda challenge=None: "user=%s\x01auth=Bearer %s\x01\x01" % (user, secret))
            if code != 235:
                raise SystemExit("AUTH XOAUTH2: %d %r" % (code, resp))
        elif mode == "oauthbearer":
            code, resp = s.auth(
                "OAUTHBEARER",
                lambda challenge=None: "n,a=%s,\x01host=%s\x01port=%s\x01auth=Bearer %s\x01\x01" % (user, host, port, secret),
            )
            if code != 235:
                raise SystemExit("AUTH OAUTHBEARER: %d %r" % (code, resp))
        elif mode in ("requiretls", "requiretls-plain"):
            options = ["REQUIRETLS"]
        else:
            raise SystemExit("unknown mode " + mode)
        try:
            refused = s.sendmail(sender, [rcpt], msg, mail_options=options)
        except smtplib.SMTPSenderRefused as e:
            if mode == "requiretls-plain":
                print("refused %d %s" % (e.smtp_code, e.smtp_error.decode()))
                return
            raise
        if refused:
            raise SystemExit("refused: %r" % (refused,))
    print("sent")


if __name__ == "__main__":
    main()
