package mailauth_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/smtp"
	"strings"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/mailauth"
)

// bufferedReceiver checks each whole message in OnMessage.
type bufferedReceiver struct {
	smtpd.BaseHandler
	v *mailauth.Verifier
}

func (h bufferedReceiver) OnMessage(s *smtpd.Session) error {
	verdict := h.v.Verify(s.Context(), mailauth.ConnectionOf(s), s.Message.Data)
	fmt.Println(summary(verdict))
	if err := verdict.Reject(); err != nil {
		return err // 550 5.7.1: DMARC failed and the From domain asks for reject
	}
	msg := verdict.Rewrite(s.Message.Data) // our field first, forged ones removed
	fmt.Printf("stored %q...\n", msg[:strings.IndexByte(string(msg), ';')+1])
	return nil
}

// streamingReceiver reads each message while it arrives; the Check sees every byte.
type streamingReceiver struct {
	smtpd.BaseHandler
	v *mailauth.Verifier
}

func (h streamingReceiver) OnMessageStream(s *smtpd.Session, r io.Reader) error {
	ar := h.v.NewReader(s.Context(), mailauth.ConnectionOf(s), r)
	var file bytes.Buffer // a program writes to a file
	if _, err := io.Copy(&file, ar); err != nil {
		return err
	}
	verdict := ar.Verdict() // ready at io.EOF, before the reply
	fmt.Println(summary(verdict))
	if err := verdict.Reject(); err != nil {
		return err
	}
	field := verdict.Field() // to prepend to the stored message
	fmt.Printf("stored %d bytes, to prepend %q...\n", file.Len(), field[:strings.IndexByte(field, ';')+1])
	return nil
}

// send sends one message to addr with net/smtp and prints the reply to the data.
func send(addr, from, msg string) {
	c, err := smtp.Dial(addr)
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer c.Quit()
	c.Hello("mx.example.org")
	c.Mail(from)
	c.Rcpt("bob@example.net")
	w, err := c.Data()
	if err != nil {
		fmt.Println("DATA:", err)
		return
	}
	io.WriteString(w, msg)
	fmt.Println("end of data:", w.Close())
}

// sendBoth runs a server with h on a free loopback port and sends it a message
// signed by example.org, then a spoofed one.
func sendBoth(h smtpd.Handler) {
	srv := &smtpd.Server{Handler: h, Hosts: "127.0.0.1", Ports: "0", EnhancedStatusCodes: true, Logger: slog.New(slog.DiscardHandler)}
	if err := srv.Start(); err != nil {
		fmt.Println("start:", err)
		return
	}
	defer srv.Close()
	addr := srv.Addrs()[0].String()
	send(addr, "alice@example.org", signed(goodMessage, "example.org"))
	send(addr, "mallory@bounces.example.com", forgedAR+spoofMessage)
}

const (
	goodMessage  = "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hello\r\n\r\nHi Bob.\r\n"
	forgedAR     = "Authentication-Results: mx.example.net; dkim=pass; dmarc=pass\r\n"
	spoofMessage = "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: urgent\r\n\r\nPay now.\r\n"
)

// A receiver on the buffered path checks the whole message in OnMessage, refuses
// it when DMARC says reject, and stores it with the verdict on top. The first
// message is signed by example.org; the second claims example.org in From but
// comes from another envelope domain, unsigned, with a forged field.
// (The Resolver here answers from memory; a program uses NewResolver or nil.)
func ExampleVerifier_Verify() {
	v := &mailauth.Verifier{Resolver: exampleDNS(), AuthServID: "mx.example.net"}
	sendBoth(bufferedReceiver{v: v})
	// Output:
	// spf=pass dkim=pass dmarc=pass arc=none iprev=pass
	// stored "Authentication-Results: mx.example.net;"...
	// end of data: <nil>
	// spf=neutral dkim=none dmarc=fail arc=none iprev=pass
	// end of data: 550 "5.7.1 Rejected by the DMARC policy of example.org"
}

// A receiver on the streaming path (smtpd.MessageStreamer) reads the message
// through a Reader while it arrives; the verdict is ready when the Reader returns
// io.EOF, so the reply can still refuse the message.
func ExampleVerifier_NewReader() {
	v := &mailauth.Verifier{Resolver: exampleDNS(), AuthServID: "mx.example.net"}
	sendBoth(streamingReceiver{v: v})
	// Output:
	// spf=pass dkim=pass dmarc=pass arc=none iprev=pass
	// stored 357 bytes, to prepend "Authentication-Results: mx.example.net;"...
	// end of data: <nil>
	// spf=neutral dkim=none dmarc=fail arc=none iprev=pass
	// end of data: 550 "5.7.1 Rejected by the DMARC policy of example.org"
}

// Field writes the verdict as the Authentication-Results field to prepend.
func ExampleVerdict_Field() {
	v := &mailauth.Verdict{
		AuthServID: "mx.example.net",
		SPF:        mailauth.SPFResult{Result: mailauth.Pass, Identity: "mailfrom", Domain: "example.org"},
		DKIM:       []mailauth.DKIMResult{{Result: mailauth.Pass, Domain: "example.org", Selector: "ed", Algorithm: "ed25519-sha256"}},
		DMARC:      mailauth.DMARCResult{Result: mailauth.Pass, FromDomain: "example.org", Policy: "reject", Applied: "none"},
		ARC:        mailauth.ARCResult{Result: mailauth.None},
		IPRev:      mailauth.IPRevResult{Result: mailauth.Pass, IP: "192.0.2.1", Name: "mx.example.org"},
	}
	fmt.Print(strings.ReplaceAll(v.Field(), "\r\n", "\n"))
	// Output:
	// Authentication-Results: mx.example.net;
	// 	spf=pass smtp.mailfrom=example.org;
	// 	dkim=pass header.d=example.org header.s=ed header.a=ed25519-sha256;
	// 	dmarc=pass (p=reject dis=none) header.from=example.org;
	// 	arc=none;
	// 	iprev=pass policy.iprev=192.0.2.1 (mx.example.org)
}

// StripForged removes the fields that claim our authserv-id, whatever their case
// and comments, and keeps those of other servers.
func ExampleStripForged() {
	msg := "Authentication-Results: (trust me) MX.Example.NET; dmarc=pass\r\n" +
		"Authentication-Results: mx.example.org; spf=pass\r\n" +
		"Subject: hi\r\n\r\nbody\r\n"
	fmt.Print(strings.ReplaceAll(string(mailauth.StripForged([]byte(msg), "mx.example.net")), "\r\n", "\n"))
	// Output:
	// Authentication-Results: mx.example.org; spf=pass
	// Subject: hi
	//
	// body
}
