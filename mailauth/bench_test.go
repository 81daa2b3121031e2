package mailauth_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/smtp"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/mailauth"
)

// The benchmarks measure our CPU and allocations per message: the DNS is in memory
// (memResolver), so lookups cost a map access. Two sizes, 10 KiB and 1 MiB, each
// signed with RSA-2048 (relaxed/relaxed), the common case.
//
//	BenchmarkVerify: Verifier.Verify over the message, next to a plain copy of it.
//	BenchmarkSMTP:   the message sent over loopback to an smtpd server (one
//	                 connection, one transaction per op) that accepts it as it is,
//	                 verifies it in OnMessage, or verifies it while streaming.

var (
	benchOnce sync.Once
	benchKey  *rsa.PrivateKey
	benchMsgs map[string][]byte
)

var benchSizes = []struct {
	name string
	size int
}{{"10KiB", 10 << 10}, {"1MiB", 1 << 20}}

// benchSetup makes the key and the signed messages once.
func benchSetup(b *testing.B) (*mailauth.Verifier, map[string][]byte) {
	benchOnce.Do(func() {
		var err error
		if benchKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		benchMsgs = map[string][]byte{}
		for _, s := range benchSizes {
			benchMsgs[s.name] = benchMessage(s.size)
		}
	})
	der, _ := x509.MarshalPKIXPublicKey(&benchKey.PublicKey)
	dns := exampleDNS()
	dns.txt["rsa._domainkey.example.org"] = []string{"v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)}
	return &mailauth.Verifier{Resolver: dns, AuthServID: "mx.example.net"}, benchMsgs
}

// benchMessage is a message of about size bytes, signed by example.org.
func benchMessage(size int) []byte {
	var body strings.Builder
	line := "The quick brown fox jumps over the lazy dog, again and again.  \r\n"
	for body.Len() < size {
		body.WriteString(line)
	}
	msg := "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: benchmark\r\n" +
		"Date: Mon, 07 Dec 2026 12:00:00 +0000\r\nMessage-ID: <bench@example.org>\r\n\r\n" + body.String()
	var out bytes.Buffer
	err := dkim.Sign(&out, strings.NewReader(msg), &dkim.SignOptions{
		Domain: "example.org", Selector: "rsa", Signer: benchKey,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
	})
	if err != nil {
		panic(err)
	}
	return out.Bytes()
}

var benchConn = mailauth.Connection{IP: net.ParseIP("127.0.0.1"), Helo: "mx.example.org", MailFrom: "alice@example.org"}

func BenchmarkVerify(b *testing.B) {
	v, msgs := benchSetup(b)
	for _, s := range benchSizes {
		msg := msgs[s.name]
		b.Run(s.name+"/copy", func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				var buf bytes.Buffer
				buf.Write(msg)
			}
		})
		b.Run(s.name+"/verify", func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				vd := v.Verify(context.Background(), benchConn, msg)
				if vd.DKIM[0].Result != mailauth.Pass || vd.DMARC.Result != mailauth.Pass {
					b.Fatal(vd.Field())
				}
			}
		})
		b.Run(s.name+"/stream", func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				r := v.NewReader(context.Background(), benchConn, bytes.NewReader(msg))
				io.Copy(io.Discard, r)
				if vd := r.Verdict(); vd.DKIM[0].Result != mailauth.Pass {
					b.Fatal(vd.Field())
				}
			}
		})
	}
}

// benchBuffered accepts after verifying in OnMessage.
type benchBuffered struct {
	smtpd.BaseHandler
	v *mailauth.Verifier
}

func (h benchBuffered) OnMessage(s *smtpd.Session) error {
	vd := h.v.Verify(s.Context(), mailauth.ConnectionOf(s), s.Message.Data)
	if vd.DKIM[0].Result != mailauth.Pass {
		return fmt.Errorf("dkim %s", vd.DKIM[0].Reason)
	}
	return nil
}

// benchStreamed verifies while the message streams.
type benchStreamed struct {
	smtpd.BaseHandler
	v *mailauth.Verifier
}

func (h benchStreamed) OnMessageStream(s *smtpd.Session, r io.Reader) error {
	ar := h.v.NewReader(s.Context(), mailauth.ConnectionOf(s), r)
	if _, err := io.Copy(io.Discard, ar); err != nil {
		return err
	}
	if vd := ar.Verdict(); vd.DKIM[0].Result != mailauth.Pass {
		return fmt.Errorf("dkim %s", vd.DKIM[0].Reason)
	}
	return nil
}

// plainStreamed reads the stream and accepts: the streaming baseline.
type plainStreamed struct{ smtpd.BaseHandler }

func (plainStreamed) OnMessageStream(s *smtpd.Session, r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

func BenchmarkSMTP(b *testing.B) {
	v, msgs := benchSetup(b)
	handlers := []struct {
		name string
		h    smtpd.Handler
	}{
		{"plain", smtpd.BaseHandler{}},
		{"verify", benchBuffered{v: v}},
		{"plain-stream", plainStreamed{}},
		{"verify-stream", benchStreamed{v: v}},
	}
	for _, s := range benchSizes {
		for _, h := range handlers {
			b.Run(s.name+"/"+h.name, func(b *testing.B) { benchSend(b, h.h, msgs[s.name]) })
		}
	}
}

// benchSend sends msg once per op over one connection to a server running h.
func benchSend(b *testing.B, h smtpd.Handler, msg []byte) {
	srv := &smtpd.Server{Handler: h, Hosts: "127.0.0.1", Ports: "0", MaxMessageSize: 4 << 20,
		Logger: slog.New(slog.DiscardHandler)}
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	c, err := smtp.Dial(srv.Addrs()[0].String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("mx.example.org"); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Mail("alice@example.org"); err != nil {
			b.Fatal(err)
		}
		if err := c.Rcpt("bob@example.net"); err != nil {
			b.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			b.Fatal(err)
		}
		w.Write(msg)
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
