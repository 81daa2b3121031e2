package realmilter

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"time"
)

// Message builds a test message with CRLF line ends: the header lines given
// (none: a plain message from alice@example.test to bob@dest.test with a
// Message-ID and a Date), an empty line, then body (LF line ends become CRLF).
func Message(body string, header ...string) []byte {
	if header == nil {
		header = []string{
			"From: Alice <alice@example.test>",
			"To: Bob <bob@dest.test>",
			"Subject: a test",
			"Date: " + Date(), // now: SpamAssassin scores a date in the past
			"Message-ID: <realmilter@example.test>",
			"MIME-Version: 1.0",
			"Content-Type: text/plain; charset=us-ascii",
		}
	}
	return []byte(strings.Join(header, "\r\n") + "\r\n\r\n" + strings.ReplaceAll(body, "\n", "\r\n"))
}

// Date is the time now as a Date field's value (RFC 5322 3.3): test messages carry
// it, because SpamAssassin scores dates in the past (DATE_IN_PAST_*), which would
// make results depend on the day a test runs.
func Date() string { return time.Now().UTC().Format(time.RFC1123Z) }

// LeadingSpaceMessage returns a message whose header fields simple header
// canonicalization (RFC 6376 §3.4.1) signs byte for byte: no space after the
// colon, two spaces, a tab, folding. A milter client that drops or adds the
// space before a value (OpenDKIM asks for it with SMFIP_HDR_LEADSPC) makes
// OpenDKIM sign other bytes than those delivered.
func LeadingSpaceMessage() []byte {
	return Message("Body.\n",
		"From: Alice <alice@example.test>",
		"To:Bob <bob@dest.test>",
		"Subject:  two spaces,",
		"\tthen a folded line",
		"Date:\tMon, 07 Dec 2026 20:00:00 +0000",
		"Message-ID: <leading-space@example.test>",
	)
}

// Field is a header field as stored: its name and its value as written after
// the colon, folding kept.
type Field struct{ Name, Value string }

// Split splits a message (CRLF line ends) into its header fields and its body.
func Split(msg []byte) ([]Field, []byte, error) {
	head, body, ok := bytes.Cut(msg, []byte("\r\n\r\n"))
	if !ok {
		return nil, nil, fmt.Errorf("no end of header in %.200q", msg)
	}
	var fs []Field
	for _, line := range strings.Split(string(head), "\r\n") {
		if line != "" && (line[0] == ' ' || line[0] == '\t') {
			if len(fs) == 0 {
				return nil, nil, fmt.Errorf("continuation line first in %.200q", head)
			}
			fs[len(fs)-1].Value += "\r\n" + line
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, nil, fmt.Errorf("not a header field: %q", line)
		}
		fs = append(fs, Field{name, value})
	}
	return fs, body, nil
}

// Join is the inverse of Split.
func Join(fs []Field, body []byte) []byte {
	var b bytes.Buffer
	for _, f := range fs {
		b.WriteString(f.Name + ":" + f.Value + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// Values returns the values of the fields named name (any case), in order.
func Values(fs []Field, name string) []string {
	var vs []string
	for _, f := range fs {
		if strings.EqualFold(f.Name, name) {
			vs = append(vs, f.Value)
		}
	}
	return vs
}

// Deliver sends msg over SMTP (net/smtp) to addr, as client.test, from
// alice@example.test to bob@dest.test, within two minutes. It returns nil when
// the server accepted the message, else the server's refusal
// (*textproto.Error) or what ended the session.
func Deliver(addr string, msg []byte) error {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if err := c.Mail("alice@example.test"); err != nil {
		return err
	}
	if err := c.Rcpt("bob@dest.test"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	c.Quit()
	return nil
}

// Outcome is how an SMTP transaction ended: at which step, with which reply.
type Outcome struct {
	Step string // "greeting", "EHLO", "MAIL", "RCPT", "DATA" or "end of data"
	Code int
	Text string // the reply's text, lines joined by "\n"
}

// Try runs one transaction with net/textproto, as Deliver does, and returns
// the first reply that refused it, or the reply to the message (250 when taken).
// Errors are those of the connection, not refusals.
func Try(addr string, msg []byte) (Outcome, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return Outcome{}, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	c := textproto.NewConn(conn)
	steps := []struct {
		step, cmd string
		want      int
	}{
		{"greeting", "", 220},
		{"EHLO", "EHLO client.test", 250},
		{"MAIL", "MAIL FROM:<alice@example.test>", 250},
		{"RCPT", "RCPT TO:<bob@dest.test>", 250},
		{"DATA", "DATA", 354},
		{"end of data", string(msg) + ".", 250},
	}
	for _, s := range steps {
		if s.cmd != "" {
			if err := c.PrintfLine("%s", s.cmd); err != nil {
				return Outcome{}, err
			}
		}
		code, text, err := c.ReadResponse(0)
		var te *textproto.Error
		if errors.As(err, &te) {
			err = nil
		}
		if err != nil {
			return Outcome{}, fmt.Errorf("%s: %w", s.step, err)
		}
		if code != s.want || s.step == "end of data" {
			c.PrintfLine("QUIT")
			return Outcome{Step: s.step, Code: code, Text: text}, nil
		}
	}
	panic("unreachable")
}

// DKIMTags returns a DKIM-Signature value as its tags without t= and b=
// (which change with the second), white space removed (RFC 6376 §3.2), for
// comparing two signatures made of the same message.
func DKIMTags(v string) string {
	var tags []string
	for _, tag := range strings.Split(v, ";") {
		tag = strings.Join(strings.Fields(tag), "")
		if tag != "" && !strings.HasPrefix(tag, "t=") && !strings.HasPrefix(tag, "b=") {
			tags = append(tags, tag)
		}
	}
	return " " + strings.Join(tags, "; ") + " (t= and b= left out)"
}
