package smtpd_test

import (
	"strings"
	"testing"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// protoDomain returns a domain of exactly n octets (labels of at most 63 octets).
func protoDomain(n int) string {
	var labels []string
	for n > 0 {
		l := min(n, 63)
		if n-l == 1 { // avoid a last label of length 0 after the dot
			l--
		}
		labels = append(labels, strings.Repeat("d", l))
		n -= l
		if n > 0 {
			n-- // the dot
		}
	}
	d := strings.Join(labels, ".")
	return d
}

func TestProtocolDomainHelper(t *testing.T) {
	for _, n := range []int{1, 63, 64, 65, 127, 189, 190, 253, 255, 256} {
		d := protoDomain(n)
		require.Len(t, d, n)
		for _, l := range strings.Split(d, ".") {
			require.NotEmpty(t, l)
			require.LessOrEqual(t, len(l), 63)
		}
	}
}

func TestProtocolMailAddresses(t *testing.T) {
	local64 := strings.Repeat("l", 64)
	tests := []struct {
		name string
		i18n bool
		arg  string // after "MAIL FROM:"
		code int
		from string // what OnMailFrom receives (code 250)
		body string
		utf8 string
	}{
		{"bracketed", false, "<a@b.example>", 250, "a@b.example", "", ""},
		{"null path", false, "<>", 250, "", "", ""},
		{"bracketless", false, "a@b.example", 250, "a@b.example", "", ""},
		{"space before path", false, " <a@b.example>", 250, "a@b.example", "", ""},
		{"case kept", false, "<Some.One@Example.COM>", 250, "Some.One@Example.COM", "", ""},
		{"quoted local part with space", false, `<"a b"@b.example>`, 250, `"a b"@b.example`, "", ""},
		{"address literal", false, "<a@[127.0.0.1]>", 250, "a@[127.0.0.1]", "", ""},
		{"source route stripped", false, "<@relay.example:a@b.example>", 250, "a@b.example", "", ""},
		{"trailing spaces", false, "<a@b.example>  ", 250, "a@b.example", "", ""},
		{"from case-insensitive", false, "<a@b.example>", 250, "a@b.example", "", ""},
		{"local part 64", false, "<" + local64 + "@b.example>", 250, local64 + "@b.example", "", ""},
		{"mailbox 254 (path 256)", false, "<" + local64 + "@" + protoDomain(189) + ">", 250, local64 + "@" + protoDomain(189), "", ""},

		{"unbalanced open", false, "<a@b.example", 501, "", "", ""},
		{"unbalanced close", false, "a@b.example>", 501, "", "", ""},
		{"doubled brackets", false, "<<a@b.example>>", 501, "", "", ""},
		{"space outside quotes", false, "<a b@c.example>", 501, "", "", ""},
		{"two addresses", false, "<a@b.example> <c@d.example>", 501, "", "", ""},
		{"two addresses comma", false, "<a@b.example>,<c@d.example>", 501, "", "", ""},
		{"no domain", false, "<a>", 501, "", "", ""},
		{"empty", false, "", 501, "", "", ""},
		{"local part 65", false, "<" + local64 + "l@b.example>", 501, "", "", ""},
		{"domain 256", false, "<a@" + protoDomain(256) + ">", 501, "", "", ""},
		{"mailbox 255 (path 257)", false, "<" + local64 + "@" + protoDomain(190) + ">", 501, "", "", ""},
		{"malformed UTF-8", true, "<a\xff@b.example> SMTPUTF8", 501, "", "", ""},
		{"tab in path", false, "<a\t@b.example>", 501, "", "", ""},

		{"non-ASCII without SMTPUTF8, i18n off", false, "<jörg@b.example>", 553, "", "", ""},
		{"non-ASCII without SMTPUTF8, i18n on", true, "<jörg@b.example>", 553, "", "", ""},
		{"non-ASCII domain without SMTPUTF8", true, "<a@bücher.example>", 553, "", "", ""},
		{"non-ASCII with SMTPUTF8", true, "<jörg@bücher.example> SMTPUTF8", 250, "jörg@bücher.example", "", "utf8"},
		{"ASCII with SMTPUTF8", true, "<a@b.example> smtputf8", 250, "a@b.example", "", "utf8"},
		{"BODY=8BITMIME", true, "<a@b.example> BODY=8BITMIME", 250, "a@b.example", "8bitmime", ""},
		{"BODY=7BIT", true, "<a@b.example> BODY=7BIT", 250, "a@b.example", "7bit", ""},
		{"body=8bitmime lower case", true, "<a@b.example> body=8bitmime", 250, "a@b.example", "8bitmime", ""},
		{"BODY and SMTPUTF8", true, "<a@b.example> BODY=8BITMIME SMTPUTF8", 250, "a@b.example", "8bitmime", "utf8"},
		{"null path with BODY", true, "<> BODY=7BIT", 250, "", "7bit", ""},
		{"bracketless with params", true, "a@b.example BODY=7BIT", 250, "a@b.example", "7bit", ""},

		{"BODY when i18n off", false, "<a@b.example> BODY=8BITMIME", 501, "", "", ""},
		{"SMTPUTF8 when i18n off", false, "<a@b.example> SMTPUTF8", 501, "", "", ""},
		{"BODY= empty", true, "<a@b.example> BODY=", 501, "", "", ""},
		{"BODY unknown value", true, "<a@b.example> BODY=BINARYMIME", 501, "", "", ""},
		{"BODY twice", true, "<a@b.example> BODY=7BIT BODY=8BITMIME", 501, "", "", ""},
		{"SMTPUTF8 with value", true, "<a@b.example> SMTPUTF8=yes", 501, "", "", ""},
		{"unknown parameter", false, "<a@b.example> PARAMS", 555, "", "", ""},
		{"unknown parameter with value", true, "<a@b.example> XSIZE=1000", 555, "", "", ""},
		{"unknown parameter after known", true, "<a@b.example> BODY=7BIT FOO=bar", 555, "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan string, 1)
			enc := make(chan [2]string, 1)
			h := &hookHandler{mail: func(s *smtpd.Session, from string) (string, error) {
				got <- from
				enc <- [2]string{s.Envelope.EncodingBody, s.Envelope.EncodingUTF8}
				return "", nil
			}, unknown: func(s *smtpd.Session, line string) error {
				enc <- [2]string{s.Envelope.EncodingBody, s.Envelope.EncodingUTF8}
				return nil
			}}
			ts := smtptest.NewServer(t, h, func(s *smtpd.Server) { s.Internationalization = tc.i18n })
			c := greeted(t, ts)
			verb := "MAIL FROM:"
			if tc.name == "from case-insensitive" {
				verb = "mail From:"
			}
			c.Send(verb + tc.arg + "\r\n")
			code, text := c.Reply()
			require.Equal(t, tc.code, code, "reply text %q", text)
			switch tc.code {
			case 250:
				require.Equal(t, smtpd.ProtoTextOK, text)
				require.Equal(t, tc.from, <-got)
				require.Equal(t, [2]string{tc.body, tc.utf8}, <-enc, "encodings seen by OnMailFrom")
				c.Cmd("XSTATE", 250)
				require.Equal(t, [2]string{tc.body, tc.utf8}, <-enc, "encodings kept in the envelope")
				c.Cmd("RCPT TO:<r@d.example>", 250)
			case 501:
				require.Equal(t, smtpd.ProtoText501, text)
			case 553:
				require.Equal(t, smtpd.ProtoText553, text)
			case 555:
				require.Equal(t, smtpd.ProtoText555, text)
			}
			if tc.code != 250 {
				require.Len(t, got, 0, "OnMailFrom must not run for a refused path")
				// No transaction started.
				c.Cmd("RCPT TO:<r@d.example>", 503)
				c.Cmd("MAIL FROM:<a@b.example>", 250)
			}
		})
	}
}

func TestProtocolMailAddressCRandNUL(t *testing.T) {
	// A CR or NUL inside the path: refused before any parsing (5xx: 500 for the
	// command line, see the brief), the hook not called, no transaction started.
	for _, arg := range []string{"<a\r@b.example>", "<a@b.exa\x00mple>", "<a@b.example>\x00"} {
		t.Run(strings.NewReplacer("\r", `\r`, "\x00", `\0`).Replace(arg), func(t *testing.T) {
			called := make(chan string, 1)
			ts := smtptest.NewServer(t, &hookHandler{mail: func(s *smtpd.Session, from string) (string, error) {
				called <- from
				return "", nil
			}})
			c := greeted(t, ts)
			c.Send("MAIL FROM:" + arg + "\r\n")
			code, _ := c.Reply()
			require.Contains(t, []int{500, 501}, code)
			require.Len(t, called, 0)
			c.Cmd("RCPT TO:<r@d.example>", 503)
		})
	}
}

func TestProtocolRcptAddresses(t *testing.T) {
	tests := []struct {
		name string
		mail string // MAIL FROM argument
		arg  string // after "RCPT TO:"
		code int
		to   string
	}{
		{"bracketed", "<a@b.example>", "<c@d.example>", 250, "c@d.example"},
		{"bracketless", "<a@b.example>", "c@d.example", 250, "c@d.example"},
		{"postmaster", "<a@b.example>", "<Postmaster>", 250, "Postmaster"},
		{"source route stripped", "<a@b.example>", "<@r.example,@s.example:c@d.example>", 250, "c@d.example"},
		{"null path", "<a@b.example>", "<>", 501, ""},
		{"unbalanced", "<a@b.example>", "<c@d.example", 501, ""},
		{"doubled brackets", "<a@b.example>", "<<c@d.example>>", 501, ""},
		{"space", "<a@b.example>", "<c @d.example>", 501, ""},
		{"two addresses", "<a@b.example>", "<c@d.example> <e@f.example>", 501, ""},
		{"missing TO:", "<a@b.example>", "", 501, ""},
		{"with params", "<a@b.example>", "<c@d.example> NOTIFY=NEVER", 555, ""},
		{"with bare param", "<a@b.example>", "<c@d.example> FOO", 555, ""},
		{"non-ASCII without SMTPUTF8", "<a@b.example>", "<jörg@d.example>", 553, ""},
		{"non-ASCII with SMTPUTF8", "<a@b.example> SMTPUTF8", "<jörg@d.example>", 250, "jörg@d.example"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan string, 1)
			ts := smtptest.NewServer(t, &hookHandler{rcpt: func(s *smtpd.Session, to string) (string, error) {
				got <- to
				return "", nil
			}}, func(s *smtpd.Server) { s.Internationalization = true })
			c := greeted(t, ts)
			c.Cmd("MAIL FROM:"+tc.mail, 250)
			line := "RCPT TO:" + tc.arg
			if tc.name == "missing TO:" {
				line = "RCPT <c@d.example>"
			}
			c.Cmd(line, tc.code)
			if tc.code == 250 {
				require.Equal(t, tc.to, <-got)
				c.Cmd("DATA", 354)
			} else {
				require.Len(t, got, 0, "OnRcptTo must not run for a refused path")
				c.Cmd("DATA", 503)
			}
		})
	}
}

func TestProtocolHookReplacements(t *testing.T) {
	h := &smtptest.Recorder{}
	seen := make(chan string, 4)
	hh := &hookHandler{
		mail: func(s *smtpd.Session, from string) (string, error) {
			seen <- "from:" + from
			if from == "" {
				return "", nil // empty return keeps the original
			}
			return "replaced-" + from, nil
		},
		rcpt: func(s *smtpd.Session, to string) (string, error) {
			seen <- "to:" + to
			if to == "keep@d.example" {
				return "", nil
			}
			return "alias@d.example", nil
		},
		message: h.OnMessage,
	}
	ts := smtptest.NewServer(t, hh)
	c := greeted(t, ts)
	c.Cmd("MAIL FROM:<a@b.example>", 250)
	c.Cmd("RCPT TO:<c@d.example>", 250)
	c.Cmd("RCPT TO:keep@d.example", 250)
	c.Cmd("DATA", 354)
	c.Send("x\r\n.\r\n")
	c.Expect(250)
	m := h.Wait(t, 1)[0]
	require.Equal(t, "replaced-a@b.example", m.From)
	require.Equal(t, []string{"alias@d.example", "keep@d.example"}, m.To)
	require.Equal(t, "from:a@b.example", <-seen)
	require.Equal(t, "to:c@d.example", <-seen)
	require.Equal(t, "to:keep@d.example", <-seen)

	c.Cmd("MAIL FROM:<>", 250)
	require.Equal(t, "from:", <-seen)
	c.Cmd("RCPT TO:<keep@d.example>", 250)
	<-seen
	c.Cmd("DATA", 354)
	c.Send("y\r\n.\r\n")
	c.Expect(250)
	m = h.Wait(t, 2)[1]
	require.Equal(t, "", m.From)
}
