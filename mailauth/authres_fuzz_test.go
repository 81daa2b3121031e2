package mailauth

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

// FuzzField: whatever HELO, MAIL FROM, DNS names and reasons hold, the field is one
// well-formed field naming our authserv-id first.
func FuzzField(f *testing.F) {
	for _, s := range hostileTexts {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		v := hostileVerdict(a)
		v.DMARC.FromDomain, v.ARC.Reason, v.ARC.Result = b, b, Fail
		v.DKIM[1].Reason, v.DKIM[1].Signature = b, a
		checkFieldShape(t, v.Field())
	})
}

// FuzzStrip: the []byte and streaming removals agree whatever the pieces; no field
// claiming our authserv-id is left in the header; other servers' fields stay.
func FuzzStrip(f *testing.F) {
	for _, s := range []string{
		"Authentication-Results: mx.rcpt.test; spf=pass\r\nFrom: a\r\n\r\nbody",
		"Authentication-Results: (c) \"mx.rcpt.test\"; none\r\nAuthentication-Results: o.test; x\r\n\r\n",
		"authentication-results:mx.rcpt.test\n\n", "Authentication-Results: (\r\n\r\n",
	} {
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, msg []byte, step uint8) {
		const id = "mx.rcpt.test"
		out := StripForged(msg, id)
		streamed, err := io.ReadAll(NewStripReader(&stepReader{msg, int(step) + 1}, id))
		if err != nil || !bytes.Equal(streamed, out) {
			t.Fatalf("stream %q, %v; bytes %q", streamed, err, out)
		}
		if _, err := io.ReadAll(NewStripReader(iotest.DataErrReader(bytes.NewReader(msg)), id)); err != nil {
			t.Fatal(err)
		}
		oursLeft, othersOut := countAR(out, id)
		_, othersIn := countAR(msg, id)
		if oursLeft != 0 || othersOut != othersIn && len(msg) < maxHeldField {
			t.Fatalf("%d fields of ours left, %d of others of %d kept:\n%q\n%q", oursLeft, othersOut, othersIn, msg, out)
		}
	})
}

// countAR counts the Authentication-Results fields of msg's header section that
// claim id and those that do not.
func countAR(msg []byte, id string) (ours, others int) {
	var s headerScanner
	n, _ := s.scan(msg)
	for _, fl := range parseHeader(msg[:n]) {
		if !fl.is("Authentication-Results") {
			continue
		}
		if o, _ := claimsID(fl.value(), id, true); o {
			ours++
		} else {
			others++
		}
	}
	return ours, others
}

// stepReader returns n bytes a Read.
type stepReader struct {
	b []byte
	n int
}

func (r *stepReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[k:]
	return k, nil
}
