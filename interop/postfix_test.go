package interop

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/midismtp/smtpd"
	"github.com/stretchr/testify/require"
)

// Postfix's own delivery agents against the server: "real clients are the test".
// Each test starts a private Postfix instance in a temporary directory — its own
// main.cf and master.cf, queue, data directory and log file — with no listening
// service at all (master.cf has no inet service and master_service_disable = inet).
// Mail is injected with Postfix's sendmail command; Postfix's smtp(8) or lmtp(8)
// client then delivers it to the server on 127.0.0.1, and the test reads the
// delivery status from the instance's maillog_file. Postfix's master must run as
// root: without root, or without Postfix, the tests skip (or fail when CI is set).
//
// Postfix (3.7, as every release so far) implements CHUNKING in its SMTP server
// only: its smtp and lmtp clients never send BDAT, CHUNKING offered or not. BDAT
// from a client we did not write is in gosmtp_client_test.go.

// TestPostfixRelay: Postfix's smtp client relays a message to the server with the
// extensions on: it declares SIZE= (the size its queue manager logged), passes
// RET/ENVID/NOTIFY/ORCPT when DSN is offered and BODY=8BITMIME/SMTPUTF8 when the
// message needs them, sends DATA — with CHUNKING offered too: Postfix's client has no
// BDAT — and the message is stored byte for byte after Postfix's Received header.
func TestPostfixRelay(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		chunking, pipelining bool
		utf8                 bool // a UTF-8 header and body: BODY=8BITMIME and SMTPUTF8
	}{
		{"all extensions", true, true, true},
		{"CHUNKING off", false, true, false},
		{"PIPELINING off", true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tools := postfixNeed(t)
			h, tr, port := postfixServe(t, func(s *smtpd.Server) {
				s.Chunking, s.Pipelining, s.DSN = tc.chunking, tc.pipelining, true
				s.EnhancedStatusCodes, s.Internationalization = true, true
			})
			pf := postfixStart(t, tools, map[string]string{"relayhost": fmt.Sprintf("[127.0.0.1]:%d", port)})
			msg := postfixBody("relay", 200<<10)
			if tc.utf8 {
				msg = strings.Replace(msg, "\n\n", "\nX-Greeting: Grüße aus Köln\n\nnaïve café, 日本語\n", 1)
			}
			require.NotContains(t, msg, "\r")
			opts := []string{"-N", "success,failure", "-R", "hdrs", "-V", "envid123"}
			if tc.utf8 {
				opts = append(opts, "-B", "8BITMIME") // Postfix detects UTF-8 (SMTPUTF8) but not 8-bit without MIME headers
			}
			pf.sendmail(t, "sender@sender.test", []string{"rcpt@x.test"}, opts, msg)

			d := pf.waitDelivery(t, "rcpt@x.test")
			require.Equal(t, "smtp", d.Agent, d.Line)
			require.Equal(t, "sent", d.Status, d.Line)
			require.Equal(t, "2.0.0", d.DSN, d.Line)
			require.Equal(t, fmt.Sprintf("127.0.0.1[127.0.0.1]:%d", port), d.Relay, d.Line)
			require.True(t, strings.HasPrefix(d.Text, "250 2.0.0 "), d.Line)
			m := postfixOnlyMessage(t, h)
			require.Equal(t, 1, h.starts())

			ehlo := tr.replyTo(t, "EHLO ")
			t.Logf("EHLO reply to Postfix:\n%s", ehlo)
			wantKeywords := []string{"SIZE 33554432", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN"}
			if tc.pipelining {
				wantKeywords = append(wantKeywords, "PIPELINING")
			}
			if tc.chunking {
				wantKeywords = append(wantKeywords, "CHUNKING", "BINARYMIME")
			}
			wantKeywords = append(wantKeywords, "OK") // the last line, as MidiSmtpServer
			var gotKeywords []string
			for _, l := range strings.Split(ehlo, "\r\n")[1:] {
				gotKeywords = append(gotKeywords, l[4:])
			}
			require.ElementsMatch(t, wantKeywords, gotKeywords, ehlo)

			// (a) SIZE=: what Postfix declares, the size its queue manager logged.
			mails := tr.received("MAIL")
			require.Len(t, mails, 1)
			size, ok := postfixParam(mails[0], "SIZE")
			require.True(t, ok, "no SIZE= in %q", mails[0])
			declared, err := strconv.Atoi(size)
			require.NoError(t, err)
			require.Positive(t, m.Envelope.Size)
			require.Equal(t, declared, m.Envelope.Size)
			require.Equal(t, pf.queuedSize(t, d.QueueID), m.Envelope.Size)

			// BODY=8BITMIME (sendmail -B) and SMTPUTF8 (Postfix detects UTF-8 headers).
			body, _ := postfixParam(mails[0], "BODY")
			smtputf8 := slices.Contains(strings.Fields(strings.ToUpper(mails[0])), "SMTPUTF8")
			if tc.utf8 {
				require.Equal(t, "8BITMIME", body, mails[0])
				require.True(t, smtputf8, mails[0])
				require.Equal(t, "8bitmime", m.Envelope.EncodingBody)
				require.Equal(t, "utf8", m.Envelope.EncodingUTF8)
			} else {
				require.Empty(t, body, mails[0])
				require.False(t, smtputf8, mails[0])
				require.Empty(t, m.Envelope.EncodingBody)
				require.Empty(t, m.Envelope.EncodingUTF8)
			}

			// (b) BDAT or DATA, never both. Postfix's smtp client has no BDAT at all
			// (Postfix implements RFC 3030 in its SMTP server only): it sends DATA
			// whether CHUNKING is offered or not. Should a later Postfix send BDAT, the
			// chunks must add up to the stored bytes and end with LAST.
			bdats, datas := tr.received("BDAT"), tr.received("DATA")
			if len(bdats) > 0 {
				require.True(t, tc.chunking, "BDAT sent although CHUNKING was not offered: %q", bdats)
				require.Empty(t, datas)
				total := 0
				for i, b := range bdats {
					f := strings.Fields(b)
					require.Len(t, f, map[bool]int{false: 2, true: 3}[i == len(bdats)-1], "BDAT line %q", b)
					n, err := strconv.Atoi(f[1])
					require.NoError(t, err, b)
					total += n
				}
				require.True(t, strings.EqualFold(strings.Fields(bdats[len(bdats)-1])[2], "LAST"))
				require.Equal(t, len(m.Data), total, "BDAT octets and stored bytes differ")
				t.Logf("Postfix sent %d BDAT chunk(s): %q", len(bdats), bdats)
			} else {
				require.Len(t, datas, 1)
				if tc.chunking {
					t.Logf("Postfix's smtp client sent DATA although CHUNKING was offered (it has no BDAT)")
				}
			}

			// (c) DSN parameters passed on.
			require.Equal(t, "sender@sender.test", m.Envelope.From)
			require.Equal(t, []string{"rcpt@x.test"}, m.Envelope.To)
			require.Equal(t, "HDRS", m.Envelope.DSNRet)
			require.Equal(t, "envid123", m.Envelope.DSNEnvID)
			require.Equal(t, []smtpd.RecipientDSN{{Notify: []string{"SUCCESS", "FAILURE"}, ORcpt: "rfc822;rcpt@x.test"}}, m.Envelope.DSNRecipients)
			// NOTIFY=SUCCESS handed to a DSN server: Postfix sends no "relayed" notice itself.
			pf.waitRemoved(t, d.QueueID)
			require.NotContains(t, pf.log(), d.QueueID+": sender delivery status notification")

			// (d) byte-exact after Postfix's Received header.
			received, rest := postfixStripReceived(t, m.Data)
			require.Contains(t, received, "by postfix.test (Postfix")
			require.Equal(t, postfixCRLF(msg), rest)
		})
	}
}

// TestPostfixSizeLimit: a 10 KB message to a server with MaxMessageSize 2000.
// Postfix's smtp client reads the limit from EHLO's SIZE and bounces the message
// itself, before MAIL: the server never sees a transaction. (So Postfix cannot show
// the 552 a MAIL with a larger SIZE= gets; go-smtp's client does, in
// TestGoSMTPSizeAtMail.) With SIZE hidden from Postfix (smtp_discard_ehlo_keywords)
// Postfix sends the data and the server answers its end with 552 5.3.4.
func TestPostfixSizeLimit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		hideSize bool
		chunking bool
	}{
		{"SIZE advertised", false, true},
		{"SIZE hidden, 552 after DATA", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tools := postfixNeed(t)
			h, tr, port := postfixServe(t, func(s *smtpd.Server) {
				s.MaxMessageSize, s.Chunking, s.Pipelining, s.DSN = 2000, tc.chunking, true, true
				s.EnhancedStatusCodes, s.Internationalization = true, true
			})
			settings := map[string]string{"relayhost": fmt.Sprintf("[127.0.0.1]:%d", port)}
			if tc.hideSize {
				settings["smtp_discard_ehlo_keywords"] = "size"
			}
			pf := postfixStart(t, tools, settings)
			msg := postfixBody("big", 10<<10)
			pf.sendmail(t, "sender@sender.test", []string{"rcpt@x.test"}, nil, msg)
			d := pf.waitDelivery(t, "rcpt@x.test")
			require.Equal(t, "bounced", d.Status, d.Line)
			require.Equal(t, "5.3.4", d.DSN, d.Line)
			require.Contains(t, tr.replyTo(t, "EHLO "), "\r\n250-SIZE 2000\r\n")
			require.Empty(t, h.messages())
			if !tc.hideSize {
				require.Contains(t, d.Text, "exceeds size limit 2000 of server 127.0.0.1[127.0.0.1]", d.Line)
				require.Empty(t, tr.received("MAIL", "RCPT", "DATA", "BDAT"), "Postfix opened a transaction")
				require.Zero(t, h.starts())
				return
			}
			mails := tr.received("MAIL")
			require.Len(t, mails, 1)
			_, sized := postfixParam(mails[0], "SIZE")
			require.False(t, sized, "Postfix sent SIZE= with SIZE discarded: %q", mails[0])
			require.Len(t, tr.received("DATA"), 1)
			require.Contains(t, d.Text, "said: 552 5.3.4 "+smtpd.SMTPError552.Message+" (in reply to end of DATA command)", d.Line)
			require.Equal(t, 1, h.starts()) // the data began; the limit was passed later
		})
	}
}

// TestPostfixLMTP: Postfix's lmtp client delivers one message to two recipients; the
// handler's RecipientHandler refuses bad@x.test with 550 5.1.1: Postfix delivers
// good@x.test and bounces exactly bad@x.test with that reply, and the handler got
// the message once, with both recipients.
func TestPostfixLMTP(t *testing.T) {
	for _, chunking := range []bool{false, true} {
		t.Run("CHUNKING "+map[bool]string{false: "off", true: "on"}[chunking], func(t *testing.T) {
			tools := postfixNeed(t)
			h, tr, port := postfixServe(t, func(s *smtpd.Server) {
				s.LMTP, s.Chunking, s.Pipelining, s.DSN = true, chunking, true, true
				s.EnhancedStatusCodes, s.Internationalization = true, true
			})
			pf := postfixStart(t, tools, map[string]string{"default_transport": fmt.Sprintf("lmtp:inet:127.0.0.1:%d", port)})
			msg := strings.Replace(postfixBody("lmtp", 20<<10), "To: rcpt@x.test\n", "To: good@x.test, bad@x.test\n", 1)
			pf.sendmail(t, "sender@sender.test", []string{"good@x.test", "bad@x.test"}, nil, msg)

			good, bad := pf.waitDelivery(t, "good@x.test"), pf.waitDelivery(t, "bad@x.test")
			relay := fmt.Sprintf("127.0.0.1[127.0.0.1]:%d", port)
			require.Equal(t, "lmtp", good.Agent, good.Line)
			require.Equal(t, relay, good.Relay, good.Line)
			require.Equal(t, "sent", good.Status, good.Line)
			require.Equal(t, "2.0.0", good.DSN, good.Line)
			require.Equal(t, "250 2.0.0 OK <good@x.test> delivered", good.Text, good.Line)
			require.Equal(t, "lmtp", bad.Agent, bad.Line)
			require.Equal(t, "bounced", bad.Status, bad.Line)
			require.Equal(t, "5.1.1", bad.DSN, bad.Line)
			require.Equal(t, "host "+relay[:strings.LastIndex(relay, ":")]+" said: 550 5.1.1 no such user (in reply to end of DATA command)", bad.Text, bad.Line)
			require.Equal(t, good.QueueID, bad.QueueID, "one queue file, one delivery")
			pf.waitRemoved(t, good.QueueID)
			for rcpt, d := range pf.deliveries() {
				if d.Agent == "lmtp" {
					require.Contains(t, []string{"good@x.test", "bad@x.test"}, rcpt, d.Line)
				}
			}
			require.Equal(t, 1, strings.Count(pf.log(), ": "+good.QueueID+": sender non-delivery notification: "),
				"one bounce, for bad@x.test")

			m := postfixOnlyMessage(t, h)
			require.Equal(t, 1, h.starts())
			require.ElementsMatch(t, []string{"good@x.test", "bad@x.test"}, m.Envelope.To)
			require.Len(t, tr.received("MAIL"), 1)
			require.Len(t, tr.received("RCPT"), 2)
			require.Len(t, tr.received("DATA"), 1, "Postfix's lmtp client sends DATA (it has no BDAT)")
			require.Empty(t, tr.received("EHLO", "HELO"))
			lhlo := tr.replyTo(t, "LHLO ")
			t.Logf("LHLO reply to Postfix:\n%s", lhlo)
			_, rest := postfixStripReceived(t, m.Data)
			require.Equal(t, postfixCRLF(msg), rest)
		})
	}
}
