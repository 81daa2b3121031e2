package milter

import (
	"bytes"
	"io"
	"reflect"
	"strings"
	"testing"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
)

// parseAll runs a message through a feeder with no milter, in pieces cut at the
// given sizes, and returns its parsed header section.
func parseAll(msg []byte, cuts []byte) *feeder {
	f := newFeeder(&msession{}, bytes.NewReader(msg), 0)
	rest := msg
	for i := 0; len(rest) > 0; i++ {
		n := len(rest)
		if i < len(cuts) {
			n = min(n, int(cuts[i])+1)
		}
		f.feed(rest[:n])
		rest = rest[n:]
	}
	f.endHeaders()
	f.msg.size = f.off
	return f
}

// FuzzContentParse checks that the header section parses the same however the
// message arrives in pieces, and that its fields and body tile the message.
func FuzzContentParse(f *testing.F) {
	f.Add([]byte("Subject: a\r\n b\r\nX: y\r\n\r\nbody\r\n"), []byte{3, 0, 7})
	f.Add([]byte("not a header\r\nbody"), []byte{1})
	f.Add([]byte("A:\nB :c\n\n"), []byte{0, 0, 0})
	f.Add([]byte(" leading blank\r\n\r\n"), []byte{})
	f.Add([]byte("Subject: no end"), []byte{2})
	f.Fuzz(func(t *testing.T, msg, cuts []byte) {
		whole := parseAll(msg, nil)
		pieces := parseAll(msg, cuts)
		if !reflect.DeepEqual(whole.msg.fields, pieces.msg.fields) || whole.msg.bodyOff != pieces.msg.bodyOff ||
			whole.msg.sepStart != pieces.msg.sepStart {
			t.Fatalf("parsed differently in pieces:\n%+v %d %d\n%+v %d %d", whole.msg.fields, whole.msg.bodyOff,
				whole.msg.sepStart, pieces.msg.fields, pieces.msg.bodyOff, pieces.msg.sepStart)
		}
		m := whole.msg
		at := int64(0)
		for _, fl := range m.fields {
			if fl.start != at || fl.end <= fl.start || fl.name == "" {
				t.Fatalf("field %+v does not follow at %d", fl, at)
			}
			at = fl.end
		}
		if m.sepStart >= 0 && m.sepStart != at || m.sepStart < 0 && m.bodyOff != at || m.bodyOff > int64(len(msg)) {
			t.Fatalf("body at %d (separator %d) after fields ending at %d, message %d", m.bodyOff, m.sepStart, at, len(msg))
		}
		if !m.changed() {
			got, _ := io.ReadAll(m.reader())
			if !bytes.Equal(got, msg) {
				t.Fatalf("unchanged message reads %q, want %q", got, msg)
			}
		}
	})
}

// FuzzHeaderEdits applies header changes with any indexes and checks that the
// result parses back into the fields it has, with the body unchanged.
func FuzzHeaderEdits(f *testing.F) {
	f.Add([]byte("A: 1\r\nB: 2\r\nA: 3\r\n\r\nbody\r\n"), []byte{0, 1, 'a', 1, 2, 'b', 2, 0, 'a'}, false)
	f.Add([]byte("\r\n"), []byte{1, 200, 'x'}, true)
	f.Fuzz(func(t *testing.T, msg, ops []byte, lead bool) {
		fd := parseAll(msg, nil)
		m := &fd.msg
		body, _ := io.ReadAll(m.bodyReader())
		names := []string{"A", "b", "X-Long"}
		for i := 0; i+2 < len(ops); i += 3 {
			name, index := names[int(ops[i+1])%len(names)], int(ops[i+1])
			value := strings.Repeat("v", int(ops[i+2])%4)
			if ops[i+2]%5 == 0 {
				value = "one\ntwo"
			}
			switch ops[i] % 3 {
			case 0:
				m.addHeader(name, value, lead)
			case 1:
				m.insertHeader(index, name, value, lead)
			case 2:
				m.changeHeader(index, name, value, lead)
			}
		}
		out, _ := io.ReadAll(m.reader())
		again := parseAll(out, nil)
		if len(again.msg.fields) != len(m.fields) {
			t.Fatalf("%d fields parse back as %d: %q", len(m.fields), len(again.msg.fields), out)
		}
		rebody, _ := io.ReadAll(again.msg.bodyReader())
		if m.changed() && !bytes.Equal(rebody, body) && !(len(m.fields) == 0 && m.sepStart < 0) {
			t.Fatalf("body %q became %q", body, rebody)
		}
	})
}

// FuzzParseReply checks that any reply a milter may send maps to an error reply
// the server can send.
func FuzzParseReply(f *testing.F) {
	f.Add(550, "550-5.7.1 first\r\n550 5.7.1 second")
	f.Add(451, "451 4.7.1 100%% sure")
	f.Add(421, "421")
	f.Add(550, "garbage\n\n")
	f.Fuzz(func(t *testing.T, code int, text string) {
		code = 400 + (code%200+200)%200
		r := parseReply(code, text)
		if r.Code < 400 || r.Code > 599 {
			t.Fatalf("code %d from %q", r.Code, text)
		}
		if r.EnhancedCode != "" && (r.EnhancedCode[0]-'0' != byte(r.Code/100) || strings.Count(r.EnhancedCode, ".") != 2) {
			t.Fatalf("enhanced code %q with %d", r.EnhancedCode, r.Code)
		}
		if strings.Contains(r.Message, "\r") && !strings.Contains(text, "\r") {
			t.Fatalf("a CR appeared in %q", r.Message)
		}
	})
}

// FuzzParseMilters checks the address list parser.
func FuzzParseMilters(f *testing.F) {
	f.Add("inet:127.0.0.1:8891, unix:/run/milter.sock inet:[::1]:11332")
	f.Add("inet:localhost")
	f.Add("8891@127.0.0.1")
	f.Fuzz(func(t *testing.T, list string) {
		ms, err := ParseMilters(list)
		if err != nil {
			return
		}
		for _, m := range ms {
			network, address, err := ParseAddr(m.Addr)
			if err != nil || network == "" || address == "" {
				t.Fatalf("accepted %q does not parse: %v", m.Addr, err)
			}
		}
	})
}

// FuzzEnvelopeChanges applies any envelope changes and checks that the
// recipients keep their parameters in step and that restore undoes everything.
func FuzzEnvelopeChanges(f *testing.F) {
	f.Add([]byte{0, 1, 2, 1, 0}, "NOTIFY=NEVER ORCPT=rfc822;x+2By@z", true)
	f.Add([]byte{2, 2, 2}, "RET=HDRS ENVID=a+", false)
	f.Fuzz(func(t *testing.T, ops []byte, args string, dsn bool) {
		e := smtpd.Envelope{From: "a@x", To: []string{"b@x", "c@x"}, ToParams: [][]string{nil, {"NOTIFY=NEVER"}}}
		if dsn {
			e.DSNRecipients = make([]smtpd.RecipientDSN, 2)
		}
		before := e
		before.To = append([]string(nil), e.To...)
		var mods []gomilter.ModifyAction
		addrs := []string{"<b@x>", "c@x", "<new@y>"}
		for i, op := range ops {
			a := addrs[i%len(addrs)]
			switch op % 3 {
			case 0:
				mods = append(mods, gomilter.ModifyAction{Type: gomilter.ActionAddRcpt, Rcpt: a, RcptArgs: args})
			case 1:
				mods = append(mods, gomilter.ModifyAction{Type: gomilter.ActionDelRcpt, Rcpt: a})
			case 2:
				mods = append(mods, gomilter.ModifyAction{Type: gomilter.ActionChangeFrom, From: a, FromArgs: args})
			}
		}
		restore := applyEnvelope(&e, mods)
		if len(e.ToParams) != len(e.To) || dsn && len(e.DSNRecipients) != len(e.To) {
			t.Fatalf("To %q, ToParams %q, DSN %d out of step", e.To, e.ToParams, len(e.DSNRecipients))
		}
		restore()
		if !reflect.DeepEqual(e, before) {
			t.Fatalf("restore gave %+v, want %+v", e, before)
		}
	})
}
