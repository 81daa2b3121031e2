package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/midismtp/smtpd/mailauth"
	"github.com/midismtp/smtpd/smtptest"
)

// FuzzStoredMessage: whatever the message, mx's chain (authStage, then the
// mailbox, no milter) stores our field and then exactly the message without the
// fields claiming our authserv-id, in both spool forms (memory and file), and
// leaves no temporary file.
func FuzzStoredMessage(f *testing.F) {
	for _, seed := range []string{plainMessage, forgedMessage, "", "\r\n", "\r\n\r\n", "no header at all",
		"Authentication-Results: mx.test\r\n", "Authentication-Results: mx.test; a=b\n\nbody\n",
		"Subject: x\r\n\r\n" + strings.Repeat("y", spoolMemory+10)} {
		f.Add([]byte(seed))
	}
	dns := deadDNS(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		st, err := newStore(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		v := &mailauth.Verifier{AuthServID: "mx.test", Resolver: mailauth.NewResolver(dns)}
		h := &authStage{Handler: &mailbox{name: "mx.test", store: st, enforce: true}, v: v}
		s := smtptest.NewSession(t)
		s.Message.ID = "fuzz-1-1"
		if err := h.OnMessageStream(s, bytes.NewReader(msg)); err != nil {
			t.Fatalf("refused: %v", err) // nothing can fail DMARC without DNS
		}
		eml, err := os.ReadFile(filepath.Join(st.dir, "fuzz-1-1.eml"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(eml, []byte("Authentication-Results: mx.test;")) {
			t.Fatalf(".eml begins %q", eml[:min(len(eml), 60)])
		}
		want := mailauth.StripForged(msg, "mx.test")
		if !bytes.HasSuffix(eml, want) || len(eml) <= len(want) {
			t.Fatalf(".eml does not end with the stripped message:\n%q\nwant suffix\n%q", eml, want)
		}
		if got := eml[:len(eml)-len(want)]; !bytes.HasSuffix(got, []byte("\r\n")) || bytes.Contains(got[:len(got)-2], []byte("\r\n\r\n")) {
			t.Fatalf("our field %q is not one header field", got)
		}
		if entries, _ := os.ReadDir(st.dir); len(entries) != 2 {
			t.Fatalf("folder holds %d entries, want the .eml and the .json", len(entries))
		}
	})
}
