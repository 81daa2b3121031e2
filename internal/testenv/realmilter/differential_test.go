package realmilter

import (
	"strings"
	"testing"
)

// spamReport builds a message as spamass-milter leaves it for spam: the report
// with its boundary, and the original quoted with the Received line made up
// for SpamAssassin, by mx.test with MTA version v, at time when. head comes
// first.
func spamReport(head, boundary, v, when string) []byte {
	return []byte(head + "Subject: a test\r\nContent-Type: multipart/mixed; boundary=\"" + boundary + "\"\r\n\r\n" +
		"--" + boundary + "\r\n\r\nreport\r\n--" + boundary + "\r\n\r\n" +
		"Received: from client.test (unknown [127.0.0.1])\r\n\tby mx.test (" + v + "/8.13.0) with SMTP id unknown\r\n\t" +
		when + "\r\n\t(envelope-from <alice@example.test>);\r\n" +
		"Subject: a test\r\n\r\nBuy now. Postfix 3.7.11\r\n--" + boundary + "--\r\n")
}

// TestDifferentialNormalize: what Compare leaves out, and nothing more. Postfix's
// own Received field, SpamAssassin's boundary, the time spamass-milter wrote and
// macro v where it quotes it are equal after normalize; other bytes are not.
func TestDifferentialNormalize(t *testing.T) {
	const pfReceived = "Received: from client.test (unknown [127.0.0.1])\r\n\tby mx.test (Postfix) with SMTP id 4Q\r\n"
	const t1, t2 = "Mon, 7 Dec 2026 20:00:01 +0000", "Mon, 7 Dec 2026 20:00:02 +0000"
	const b1, b2 = "----------=_6750A1B2.0C0D0E0F", "----------=_6750A1B3.1A2B3C4D"
	d := Differential{Ours: "ours", PostfixHost: "mx.test", MTAVersions: [2]string{"Postfix 3.7.11", "midismtp smtpd"}}
	for _, c := range []struct {
		name     string
		pf, ours []byte
		same     bool
	}{
		{"equal but for what is left out",
			spamReport(pfReceived, b1, "Postfix 3.7.11", t1), spamReport("", b2, "midismtp smtpd", t2), true},
		{"another MTA version",
			spamReport(pfReceived, b1, "Postfix 3.7.11", t1), spamReport("", b1, "Postfix 3.7.10", t1), false},
		{"macro v masked only in spamass-milter's Received line",
			[]byte(pfReceived + "X-Note: Postfix 3.7.11\r\n\r\nbody\r\n"), []byte("X-Note: midismtp smtpd\r\n\r\nbody\r\n"), false},
		{"folded otherwise",
			[]byte(pfReceived + "Subject: a\r\n b\r\n\r\nbody\r\n"), []byte("Subject: a b\r\n\r\nbody\r\n"), false},
		{"other body bytes",
			[]byte(pfReceived + "Subject: a\r\n\r\nbody\r\n"), []byte("Subject: a\r\n\r\nbody \r\n"), false},
		{"fields in another order",
			[]byte(pfReceived + "A: 1\r\nB: 2\r\n\r\n"), []byte("B: 2\r\nA: 1\r\n\r\n"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			pf, err := d.normalize(t, 0, c.pf)
			if err != nil {
				t.Fatal(err)
			}
			ours, err := d.normalize(t, 1, c.ours)
			if err != nil {
				t.Fatal(err)
			}
			if same := pf == ours; same != c.same {
				t.Errorf("same: %v, want %v (%s)\n%s\n---\n%s", same, c.same, firstDifference(pf, ours), pf, ours)
			}
		})
	}
}

// TestDifferentialPostfixReceived: Postfix's message must have exactly one
// Received field of its own.
func TestDifferentialPostfixReceived(t *testing.T) {
	d := Differential{PostfixHost: "mx.test"}
	own := "Received: from c (unknown [127.0.0.1])\r\n\tby mx.test (Postfix) with SMTP id 4Q\r\n"
	for _, head := range []string{"", own + own} {
		if _, err := d.normalize(t, 0, []byte(head+"Subject: a\r\n\r\n")); err == nil || !strings.Contains(err.Error(), "Received") {
			t.Errorf("%d own Received fields: err %v", strings.Count(head, "Received:"), err)
		}
	}
}

// TestWithMessageID: the Message-ID's value is replaced, nothing else.
func TestWithMessageID(t *testing.T) {
	msg := Message("Hello.\n")
	got, err := WithMessageID(msg, "x@example.test")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(string(msg), "<realmilter@example.test>", "<x@example.test>", 1)
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
