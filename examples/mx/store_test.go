package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// sinkFields are the names of examples/sink's .json fields (sink's store.go),
// which mx keeps; mx adds auth_results and quarantine.
var sinkFields = []string{"id", "session_id", "from", "to", "helo", "remote_ip", "remote_port", "proxy_ip",
	"encoding_body", "encoding_utf8", "authorization_id", "authentication_id", "auth_mechanism", "encrypted",
	"require_tls", "tls_required_no", "bytesize", "received_at", "subject", "date", "message_id", "size"}

var (
	idRe         = regexp.MustCompile(`^[0-9a-z]+-[0-9a-z]+-[1-9][0-9]*$`)
	receivedAtRe = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$`)
)

// TestStoreFormat: one message over STARTTLS with SIZE and DSN parameters; its
// .eml begins with our field, its .json has the sink's fields and mx's.
func TestStoreFormat(t *testing.T) {
	mx := startMX(t)
	c := mx.dial(t)
	c.Cmd("EHLO client.test", 250)
	c.StartTLS(&tls.Config{InsecureSkipVerify: true}) // the self-signed certificate of no -cert
	if cn := c.NetConn().(*tls.Conn).ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "mx.test" {
		t.Errorf("the self-signed certificate names %q, not the -authserv-id", cn)
	}
	c.Cmd("EHLO client.test", 250)
	msg := crlf("From: alice@example.test\nSubject: =?UTF-8?Q?gr=C3=BC=C3=9Fe?=\nDate: Mon, 7 Dec 2026 10:00:00 +0000\nMessage-ID: <3@example.test>\n\nhi\n")
	c.Cmd(fmt.Sprintf("MAIL FROM:<alice@example.test> SIZE=%d RET=HDRS ENVID=env1", len(msg)), 250)
	c.Cmd("RCPT TO:<bob@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@dest.test", 250)
	c.Cmd("RCPT TO:<carol@dest.test>", 250)
	c.Cmd("DATA", 354)
	c.Send(msg + ".\r\n")
	c.Expect(250)

	ms := messages(t, mx.Out)
	if len(ms) != 1 {
		t.Fatalf("%d messages", len(ms))
	}
	for id, m := range ms {
		if !bytes.HasPrefix(m.EML, []byte("Authentication-Results: mx.test;")) {
			t.Errorf(".eml begins %q", m.EML[:min(60, len(m.EML))])
		}
		for _, name := range append(sinkFields, "auth_results", "quarantine", "dsn_ret", "dsn_envid", "dsn_recipients") {
			if _, ok := m.JSON[name]; !ok {
				t.Errorf(".json lacks %q", name)
			}
		}
		r := m.Rec
		checks := []struct {
			name string
			ok   bool
		}{
			{"id", r.ID == id && idRe.MatchString(id) && strings.HasPrefix(id, r.SessionID+"-")},
			{"envelope", r.From == "alice@example.test" && slices.Equal(r.To, []string{"bob@dest.test", "carol@dest.test"})},
			{"session", r.Helo == "client.test" && r.RemoteIP == "127.0.0.1" && r.RemotePort > 0 && r.ProxyIP == "" && r.Encrypted},
			{"bytesize", r.Bytesize == len(m.EML)},
			{"received_at", receivedAtRe.MatchString(r.ReceivedAt)},
			{"header fields", r.Subject == "grüße" && r.Date == "Mon, 7 Dec 2026 10:00:00 +0000" && r.MessageID == "<3@example.test>"},
			{"size", r.Size == len(msg)},
			{"dsn", r.DSNRet == "HDRS" && r.DSNEnvID == "env1" && len(r.DSNRecipients) == 2 &&
				slices.Equal(r.DSNRecipients[0].Notify, []string{"SUCCESS", "FAILURE"}) && r.DSNRecipients[0].ORcpt == "rfc822;bob@dest.test"},
			{"auth_results", strings.HasPrefix(r.AuthResults, "mx.test; spf=") && !strings.Contains(r.AuthResults, "\r\n")},
			{"quarantine", !r.Quarantine && r.QuarantineReason == ""},
		}
		for _, ch := range checks {
			if !ch.ok {
				t.Errorf("%s: %+v", ch.name, r)
			}
		}
		if _, rest := ourField(t, m.EML); string(rest) != msg {
			t.Errorf("message after our field:\n%q\nwant\n%q", rest, msg)
		}
	}
}

// TestStoreCertificate: -cert and -key are the certificate STARTTLS presents.
func TestStoreCertificate(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM, pool := testCertificate(t, "mx.test")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)
	mx := startMX(t, "-cert", certFile, "-key", keyFile)
	c := mx.dial(t)
	c.Cmd("EHLO client.test", 250)
	c.StartTLS(&tls.Config{RootCAs: pool, ServerName: "mx.test"}) // verifies: the handshake fails otherwise
	c.Cmd("EHLO client.test", 250)
	if code, text := send(t, c, "alice@example.test", []string{"bob@dest.test"}, plainMessage); code != 250 {
		t.Fatalf("%d %s", code, text)
	}
	if !only(t, mx.Out).Rec.Encrypted {
		t.Error("encrypted: false")
	}
}

// TestStoreLargeMessages: a message of several MiB is stored byte for byte on
// both paths (the mailbox's spool and copy, milter.Wrap's spool), over DATA and
// over BDAT.
func TestStoreLargeMessages(t *testing.T) {
	var b strings.Builder
	b.WriteString(plainMessage)
	for i := 0; b.Len() < 6<<20; i++ {
		fmt.Fprintf(&b, "line %d of a long message, with some text to make it longer .........................\r\n", i)
	}
	msg := b.String()
	for _, withMilter := range []bool{false, true} {
		for _, bdat := range []bool{false, true} {
			t.Run(fmt.Sprintf("milter=%v,bdat=%v", withMilter, bdat), func(t *testing.T) {
				c, mx := startWithMilter(t, withMilter)
				c.Cmd("MAIL FROM:<alice@example.test>", 250)
				c.Cmd("RCPT TO:<bob@dest.test>", 250)
				if bdat {
					half := len(msg) / 2
					c.Send(fmt.Sprintf("BDAT %d\r\n", half) + msg[:half])
					c.Expect(250)
					c.Send(fmt.Sprintf("BDAT %d LAST\r\n", len(msg)-half) + msg[half:])
				} else {
					c.Cmd("DATA", 354)
					c.Send(dotStuff(msg) + ".\r\n")
				}
				c.Expect(250)
				if _, rest := ourField(t, only(t, mx.Out).EML); string(rest) != msg {
					t.Errorf("stored %d bytes after our field, want the %d sent", len(rest), len(msg))
				}
			})
		}
	}
}

// startWithMilter starts mx, with a test milter that takes the content or none,
// and returns a greeted connection with a minute for each reply.
func startWithMilter(t *testing.T, withMilter bool) (*mxConn, *mxRun) {
	t.Helper()
	var args []string
	if withMilter {
		args = []string{"-milter", startTestMilter(t, 0, nil).Addr}
	}
	mx := startMX(t, args...)
	c := mx.dial(t)
	c.Timeout = time.Minute
	c.Cmd("EHLO client.test", 250)
	return c, mx
}

// TestStoreNothingOnFailure: a message over the size limit (552) and a client
// that leaves in the middle of DATA leave no file, on both paths.
func TestStoreNothingOnFailure(t *testing.T) {
	big := plainMessage + strings.Repeat(strings.Repeat("x", 998)+"\r\n", maxMessageSize/1000+1)
	for _, withMilter := range []bool{false, true} {
		t.Run(fmt.Sprintf("milter=%v", withMilter), func(t *testing.T) {
			c, mx := startWithMilter(t, withMilter)
			if code, text := send(t, c, "alice@example.test", []string{"bob@dest.test"}, big); code != 552 {
				t.Errorf("too big: %d %s", code, text)
			}
			c.Cmd("MAIL FROM:<alice@example.test>", 250)
			c.Cmd("RCPT TO:<bob@dest.test>", 250)
			c.Cmd("DATA", 354)
			c.Send(plainMessage) // and leave
			c.Close()
			waitFor(t, "two messages not stored", func() bool {
				return strings.Count(mx.stderr.String(), `msg="message not stored"`) == 2
			})
			if entries, _ := os.ReadDir(mx.Out); len(entries) != 0 {
				t.Errorf("left in the folder: %v", entries)
			}
		})
	}
}

// TestStoreRefusesTakenID: an id whose .eml or .json exists is refused, never
// overwritten.
func TestStoreRefusesTakenID(t *testing.T) {
	st, err := newStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a-1-1.eml", "b-1-1.json"} {
		os.WriteFile(filepath.Join(st.dir, name), []byte("x"), 0o600)
		if err := st.checkFree(strings.SplitN(name, ".", 2)[0]); err == nil {
			t.Errorf("%s exists: checkFree passed", name)
		}
	}
	if err := st.checkFree("c-1-1"); err != nil {
		t.Error(err)
	}
}

// TestStoreOutFolder: -out is created when missing; one that cannot be written
// ends run with an error before anything is bound.
func TestStoreOutFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	mx := startMX(t, "-out", dir)
	deliver(t, mx, plainMessage)
	only(t, dir)

	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	var stdout syncBuffer
	if err := runNow(t, []string{"-out", filepath.Join(file, "sub"), "-ports", "0"}, &stdout); err == nil || stdout.String() != "" {
		t.Errorf("-out under a file: err %v, stdout %q", err, stdout.String())
	}
}

// TestFieldValue: auth_results is the field's value on one line.
func TestFieldValue(t *testing.T) {
	for in, want := range map[string]string{
		"Authentication-Results: mx.test;\r\n\tspf=pass\r\n\tsmtp.mailfrom=a.test;\r\n\tdkim=none\r\n": "mx.test; spf=pass smtp.mailfrom=a.test; dkim=none",
		"Authentication-Results: mx.test; none\r\n":                                                    "mx.test; none",
		"Authentication-Results: mx.test;\r\n spf=pass\r\n":                                            "mx.test; spf=pass",
	} {
		if got := fieldValue(in); got != want {
			t.Errorf("fieldValue(%q) = %q, want %q", in, got, want)
		}
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("waited 10s for %s", what)
}

// runNow runs mx with args, which must fail before listening, and returns its error.
func runNow(t testing.TB, args []string, stdout *syncBuffer) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return run(ctx, append(args, "-resolver", "127.0.0.1:1"), stdout, io.Discard)
}

// testCertificate makes a self-signed certificate for name and 127.0.0.1, and a
// pool that trusts it.
func testCertificate(t testing.TB, name string) (certPEM, keyPEM []byte, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), pool
}
