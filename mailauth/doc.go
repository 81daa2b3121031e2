// Package mailauth checks the authentication of inbound mail for an smtpd server
// and writes the verdict as one Authentication-Results header field.
//
// It covers:
//   - SPF, RFC 7208, through blitiri.com.ar/go/spf: the MAIL FROM identity, or
//     the HELO identity when MAIL FROM is <> (RFC 7208 2.3, 2.4);
//   - DKIM, RFC 6376, through github.com/emersion/go-msgauth, with RFC 8301
//     (rsa-sha1 and RSA keys under 1024 bits are refused: result policy) and RFC
//     8463 (ed25519-sha256); every signature up to MaxDKIMSignatures, verified
//     while the message streams;
//   - DMARC, RFC 7489, evaluated here: the organizational domain from the public
//     suffix list (golang.org/x/net/publicsuffix), relaxed and strict alignment,
//     p=, sp= and pct=;
//   - ARC, RFC 8617: chain validation (cv=none, pass or fail) over at most 50
//     sets, with the canonicalization of RFC 6376 3.4 written in this package,
//     and sealing (Sealer) for a server that forwards;
//   - iprev, RFC 8601 section 3;
//   - the Authentication-Results field of RFC 8601, and the removal of incoming
//     fields that claim our authserv-id (RFC 8601 section 5).
//
// Every lookup goes through one Resolver (NewResolver asks one DNS server, RFC
// 1035 and RFC 7766), under a per-message Timeout: DNS that does not answer in time
// gives temperror, never a hang.
//
// A buffered receiver checks a whole message in OnMessage:
//
//	verdict := v.Verify(s.Context(), mailauth.ConnectionOf(s), s.Message.Data)
//	if err := verdict.Reject(); err != nil {
//		return err // 550 5.7.1: DMARC failed under p=reject
//	}
//	store(verdict.Rewrite(s.Message.Data)) // our field first, forged ones removed
//
// A streaming receiver (smtpd.MessageStreamer) reads through a Reader, which feeds
// a Check as the bytes arrive; the verdict is ready when the Reader returns io.EOF:
//
//	r := v.NewReader(s.Context(), mailauth.ConnectionOf(s), body)
//	io.Copy(file, r)
//	verdict := r.Verdict()
//
// Decisions where the RFCs leave a choice:
//   - DKIM signatures past MaxDKIMSignatures get result policy ("not verified"), and
//     the Authentication-Results field lists them as one line.
//   - A signature with l= gets policy: go-msgauth refuses body length limits, which
//     leave appended content unsigned.
//   - DMARC is permerror for a message without exactly one From field holding exactly
//     one address (RFC 7489 6.6.1 leaves it to local policy); temperror when no
//     aligned identifier passed and an aligned one had a temporary DNS error (RFC 7489
//     6.6.2 would say fail; a DNS glitch should not turn into a 550).
//   - A header section over Verifier.MaxHeaderBytes is not verified: DKIM permerror,
//     ARC fail when it has ARC fields, DMARC permerror.
package mailauth
