package interop

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/midismtp/smtpd"
	"github.com/midismtp/smtpd/smtptest"
	"github.com/stretchr/testify/require"
)

// More real SMTP clients we did not write (msmtp, curl, gnutls-cli, nodemailer),
// each run as a command over loopback against the server; the message stored by
// OnMessage is compared byte for byte. The helpers clientsNeed, cliRun ... are in
// helpers_test.go, clientsServe, clientsCheck ... in clients_handler_test.go.

// --- msmtp ---------------------------------------------------------------------

// cliMsmtpArgs are the msmtp options every run shares: no configuration file, the
// server, an EHLO name and no headers added to the message (it already has From;
// without Date and Message-ID msmtp would add them).
func cliMsmtpArgs(addr string) []string {
	host, port, _ := net.SplitHostPort(addr)
	return []string{"-C", "/dev/null", "--host=" + host, "--port=" + port, "--domain=msmtp.example",
		"--timeout=20", "--set-from-header=off", "--set-date-header=off", "--set-msgid-header=off"}
}

// cliPasswordEval returns an msmtp --passwordeval command printing authPass (it
// holds shell metacharacters, so it goes through a file).
func cliPasswordEval(t *testing.T) string {
	t.Helper()
	return "cat '" + clientsFile(t, "password", authPass) + "'"
}

func TestMsmtp(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		msmtp := clientsNeed(t, "msmtp")
		_, h, addr := clientsServe(t, smtpd.TLSForbidden, smtpd.AuthForbidden)
		args := append(cliMsmtpArgs(addr), "--auth=off", "--tls=off", "--from=a@example.com", "--", "b@example.com")
		cliRun(t, clientsMessage, nil, msmtp, args...)
		clientsCheck(t, h, false, "")
		require.Equal(t, []secHelo{{"msmtp.example", false}}, h.heloCalls())
		require.Empty(t, h.authCalls())
	})
	t.Run("STARTTLS AUTH PLAIN", func(t *testing.T) {
		msmtp := clientsNeed(t, "msmtp")
		srv, h, addr := clientsServe(t, smtpd.TLSRequired, smtpd.AuthRequired)
		args := append(cliMsmtpArgs(addr), "--tls=on", "--tls-starttls=on", "--tls-trust-file="+clientsCertPEM(t, srv),
			"--auth=plain", "--user="+authUser, "--passwordeval="+cliPasswordEval(t),
			"--read-envelope-from", "--", "b@example.com")
		cliRun(t, clientsMessage, nil, msmtp, args...)
		clientsCheck(t, h, true, authUser)
		require.Equal(t, []secCall{{"", authUser, authPass}}, h.authCalls())
		require.Equal(t, []secHelo{{"msmtp.example", false}, {"msmtp.example", true}}, h.heloCalls())
	})
	t.Run("implicit TLS AUTH PLAIN", func(t *testing.T) {
		msmtp := clientsNeed(t, "msmtp")
		srv, h, addr := cliImplicitServe(t, smtpd.AuthRequired)
		args := append(cliMsmtpArgs(addr), "--tls=on", "--tls-starttls=off", "--tls-trust-file="+clientsCertPEM(t, srv),
			"--auth=plain", "--user="+authUser, "--passwordeval="+cliPasswordEval(t),
			"--from=a@example.com", "--", "b@example.com")
		cliRun(t, clientsMessage, nil, msmtp, args...)
		clientsCheck(t, h, true, authUser)
		require.Equal(t, []secCall{{"", authUser, authPass}}, h.authCalls())
		require.Equal(t, []secHelo{{"msmtp.example", true}}, h.heloCalls())
	})
	t.Run("STARTTLS another CA", func(t *testing.T) {
		msmtp := clientsNeed(t, "msmtp")
		_, h, addr := clientsServe(t, smtpd.TLSRequired, smtpd.AuthRequired)
		args := append(cliMsmtpArgs(addr), "--tls=on", "--tls-starttls=on",
			"--tls-trust-file="+filepath.Join(repoRoot, "testdata", "certs", "selfsigned.crt"),
			"--auth=plain", "--user="+authUser, "--passwordeval="+cliPasswordEval(t),
			"--from=a@example.com", "--", "b@example.com")
		out := cliRunFail(t, clientsMessage, nil, msmtp, args...)
		require.Contains(t, out, "TLS certificate verification failed")
		require.Empty(t, h.authCalls(), "no credentials sent over an unverified connection")
		require.Empty(t, h.Messages())
	})
}

// --- curl ----------------------------------------------------------------------

// cliCurlArgs are the curl options every run shares: no .curlrc (-q), verbose (the
// protocol is on stderr), the message on stdin. The URL's path is the EHLO argument.
func cliCurlArgs(url, from, to string) []string {
	return []string{"-q", "--silent", "--show-error", "--verbose", "--max-time", "20",
		"--url", url, "--mail-from", from, "--mail-rcpt", to, "--upload-file", "-"}
}

// cliUTF8Message is a message with UTF-8 in its headers and body (RFC 6532), two
// internationalized addresses and a line that needs dot-stuffing.
const cliUTF8Message = "From: Jörg <jörg@bücher.example>\r\n" +
	"To: zoë@exämple.org\r\n" +
	"Subject: grüße\r\n" +
	"\r\n" +
	"körper\r\n" +
	".punkt\r\n"

func TestCurl(t *testing.T) {
	for _, tc := range []struct {
		name, scheme string
		implicit     bool
		login        string // --login-options, "" for curl's choice
		mech         string // the AUTH command curl must send
	}{
		{"STARTTLS AUTH", "smtp", false, "", "PLAIN"},
		{"STARTTLS AUTH LOGIN", "smtp", false, "AUTH=LOGIN", "LOGIN"},
		{"implicit TLS AUTH", "smtps", true, "", "PLAIN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			curl := clientsNeed(t, "curl")
			var srv *smtpd.Server
			var h *secHandler
			var addr string
			if tc.implicit {
				srv, h, addr = cliImplicitServe(t, smtpd.AuthRequired)
			} else {
				srv, h, addr = clientsServe(t, smtpd.TLSRequired, smtpd.AuthRequired)
			}
			// --ssl-reqd: STARTTLS or fail (smtp://); --cacert: the only trusted certificate.
			args := append(cliCurlArgs(tc.scheme+"://"+addr+"/curl.example", "a@example.com", "b@example.com"),
				"--ssl-reqd", "--cacert", clientsCertPEM(t, srv), "--user", authUser+":"+authPass)
			if tc.login != "" {
				args = append(args, "--login-options", tc.login)
			}
			_, stderr := cliRun(t, clientsMessage, nil, curl, args...)
			require.Contains(t, stderr, "SSL certificate verify ok")
			require.Contains(t, stderr, "> AUTH "+tc.mech+"\r\n")
			clientsCheck(t, h, true, authUser)
			require.Equal(t, []secCall{{"", authUser, authPass}}, h.authCalls())
			if tc.implicit {
				require.NotContains(t, stderr, "STARTTLS")
				require.Equal(t, []secHelo{{"curl.example", true}}, h.heloCalls())
			} else {
				require.Contains(t, stderr, "> STARTTLS\r\n< 220 Ready to start TLS\r\n")
				require.Equal(t, []secHelo{{"curl.example", false}, {"curl.example", true}}, h.heloCalls())
			}
		})
	}
	t.Run("SMTPUTF8", func(t *testing.T) {
		// curl 7.88 adds SMTPUTF8 to MAIL FROM when the server offers it and an address
		// is not ASCII; it turns the domains into A-labels (IDNA, libidn2) and keeps
		// the local parts in UTF-8. The message goes as it is. LC_ALL: under the C
		// locale curl skips the IDNA conversion and sends the UTF-8 domains unchanged.
		curl := clientsNeed(t, "curl")
		_, h, addr := clientsServe(t, smtpd.TLSForbidden, smtpd.AuthForbidden, cliI18n)
		_, stderr := cliRun(t, cliUTF8Message, []string{"LC_ALL=C.UTF-8"}, curl,
			cliCurlArgs("smtp://"+addr+"/curl.example", "jörg@bücher.example", "zoë@exämple.org")...)
		require.Contains(t, stderr, "> MAIL FROM:<jörg@xn--bcher-kva.example> SMTPUTF8\r\n")
		m := h.Wait(t, 1)[0]
		require.Equal(t, cliUTF8Message, string(m.Data))
		require.Equal(t, "jörg@xn--bcher-kva.example", m.From)
		require.Equal(t, []string{"zoë@xn--exmple-cua.org"}, m.To)
		require.Equal(t, "utf8", m.EncodingUTF8)
		require.Equal(t, "", m.EncodingBody)
		require.Equal(t, "curl.example", m.Helo)
	})
	t.Run("UTF-8 address without SMTPUTF8 offered", func(t *testing.T) {
		// Without Internationalization the server offers no SMTPUTF8, curl sends the
		// UTF-8 local part without it and the server refuses the address.
		curl := clientsNeed(t, "curl")
		_, h, addr := clientsServe(t, smtpd.TLSForbidden, smtpd.AuthForbidden)
		out := cliRunFail(t, cliUTF8Message, []string{"LC_ALL=C.UTF-8"}, curl,
			cliCurlArgs("smtp://"+addr+"/curl.example", "jörg@bücher.example", "b@example.com")...)
		require.Contains(t, out, "> MAIL FROM:<jörg@xn--bcher-kva.example>\r\n< 553 ")
		require.Empty(t, h.Messages())
	})
}

// --- gnutls-cli ----------------------------------------------------------------

// cliStartInteractive starts a line-oriented tool (as clientsStartOpenSSL does
// openssl) whose stdin and stdout carry the SMTP session. Its stdout lines are also
// kept in the error buffer, for the failure messages.
func cliStartInteractive(t *testing.T, tool string, args ...string) *clientsOpenSSL {
	t.Helper()
	path := clientsNeed(t, tool)
	ctx, cancel := context.WithTimeout(context.Background(), clientsTimeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, path, args...)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	o := &clientsOpenSSL{t: t, stdin: stdin, lines: make(chan string, 100), cmd: cmd, err: &lockedBuffer{}}
	cmd.Stderr = o.err
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	go func() {
		defer close(o.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			o.err.Write([]byte("stdout: " + sc.Text() + "\n"))
			o.lines <- sc.Text()
		}
	}()
	return o
}

func TestGnutlsCli(t *testing.T) {
	t.Run("STARTTLS", func(t *testing.T) {
		clientsNeed(t, "gnutls-cli")
		srv, h, addr := clientsServe(t, smtpd.TLSRequired, smtpd.AuthRequired)
		host, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		// gnutls-cli reads the banner, sends "EHLO <host>" and STARTTLS itself and does
		// the handshake (verifying the certificate and the IP); stdin then goes over TLS
		// as it is (no --crlf: the lines already end in CRLF).
		o := cliStartInteractive(t, "gnutls-cli", "--starttls-proto=smtp", "--x509cafile="+clientsCertPEM(t, srv),
			"--port="+port, host)
		err = o.transactionStuffedAs("gnutls.example")
		clientsCheck(t, h, true, authUser)
		require.Equal(t, []secHelo{{host, false}, {"gnutls.example", true}}, h.heloCalls())
		require.Contains(t, o.err.String(), "stdout: - Status: The certificate is trusted.")
		require.NoError(t, err, "gnutls-cli exit; output:\n%s", o.err.String())
	})
	t.Run("STARTTLS another CA", func(t *testing.T) {
		gnutls := clientsNeed(t, "gnutls-cli")
		_, h, addr := clientsServe(t, smtpd.TLSRequired, smtpd.AuthRequired)
		host, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		out := cliRunFail(t, "EHLO gnutls.example\r\n", nil, gnutls, "--starttls-proto=smtp",
			"--x509cafile="+filepath.Join(repoRoot, "testdata", "certs", "selfsigned.crt"), "--port="+port, host)
		require.Contains(t, out, "The certificate is NOT trusted")
		require.Equal(t, []secHelo{{host, false}}, h.heloCalls(), "nothing after the failed handshake")
		require.Empty(t, h.Messages())
	})
}

// transactionStuffedAs sends EHLO domain, AUTH PLAIN, one message (dot-stuffed, as
// a raw client must) and QUIT, each after the reply to the previous one (the server
// refuses pipelining), and waits for the tool to exit; it returns the exit error.
func (o *clientsOpenSSL) transactionStuffedAs(domain string) error {
	o.t.Helper()
	for _, st := range []struct{ send, code string }{
		{"EHLO " + domain + "\r\n", "250"},
		{"AUTH PLAIN " + plainResp("", authUser, authPass) + "\r\n", "235"},
		{"MAIL FROM:<a@example.com>\r\n", "250"},
		{"RCPT TO:<b@example.com>\r\n", "250"},
		{"DATA\r\n", "354"},
		{clientsStuffed() + ".\r\n", "250"},
		{"QUIT\r\n", "221"},
	} {
		o.send(st.send)
		o.expect(st.code)
	}
	o.stdin.Close()
	return o.cmd.Wait()
}

// --- nodemailer ----------------------------------------------------------------

// cliNodeDir holds nodemailer's package.json and package-lock.json (install with
// "npm ci" there; .ci/run does) and the script the tests run.
var cliNodeDir = filepath.Join("testdata", "clients", "node")

// cliNodemailer returns node's path; a missing node or nodemailer fails the test
// when CI is set and skips it otherwise.
func cliNodemailer(t *testing.T) string {
	t.Helper()
	node := clientsNeed(t, "node")
	if _, err := os.Stat(filepath.Join(cliNodeDir, "node_modules", "nodemailer", "package.json")); err != nil {
		clientsMissing(t, "nodemailer is not installed (run: cd "+cliNodeDir+" && npm ci): "+err.Error())
	}
	return node
}

// cliMailSpec is what nodemailer_client.js reads on stdin.
type cliMailSpec struct {
	Host       string   `json:"host"`
	Port       int      `json:"port"`
	Secure     bool     `json:"secure"`
	RequireTLS bool     `json:"requireTLS"`
	CA         string   `json:"ca,omitempty"`
	User       string   `json:"user,omitempty"`
	Pass       string   `json:"pass,omitempty"`
	Name       string   `json:"name"`
	From       string   `json:"from"`
	To         []string `json:"to"`
	Subject    string   `json:"subject"`
	Text       string   `json:"text"`
	MessageID  string   `json:"messageId"`
	Date       string   `json:"date"`
}

// cliNodeInfo is what nodemailer_client.js prints: sendMail's info.
type cliNodeInfo struct {
	Envelope struct {
		From string   `json:"from"`
		To   []string `json:"to"`
	} `json:"envelope"`
	Accepted []string `json:"accepted"`
	Rejected []string `json:"rejected"`
	Response string   `json:"response"`
}

// cliRunNodemailer sends one message with nodemailer to addr and returns its info
// and its protocol log (stderr, "C:"/"S:" lines, credentials masked).
func cliRunNodemailer(t *testing.T, addr string, spec cliMailSpec) (cliNodeInfo, string) {
	t.Helper()
	node := cliNodemailer(t)
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	spec.Host = host
	spec.Port, err = strconv.Atoi(port)
	require.NoError(t, err)
	b, err := json.Marshal(spec)
	require.NoError(t, err)
	stdout, stderr := cliRun(t, string(b), nil, node, filepath.Join(cliNodeDir, "nodemailer_client.js"))
	var info cliNodeInfo
	require.NoError(t, json.Unmarshal([]byte(stdout), &info), "stdout %q", stdout)
	return info, stderr
}

// cliNodeSpec is the message the nodemailer tests send; Message-ID and Date are
// fixed so that nodemailer's header block is reproducible.
func cliNodeSpec() cliMailSpec {
	return cliMailSpec{Name: "nodemailer.example", From: "a@example.com", To: []string{"b@example.com"},
		Subject: "real client", Text: "first line\n.leading dot\n..two dots\n.\tdot and tab\n\nlast line\n",
		MessageID: "<1@nodemailer.example>", Date: "2024-01-02T03:04:05Z"}
}

// cliSplitMessage splits a message into its header lines and its body.
func cliSplitMessage(t *testing.T, data string) ([]string, string) {
	t.Helper()
	head, body, ok := strings.Cut(data, "\r\n\r\n")
	require.True(t, ok, "no empty line after the header in %q", data)
	return strings.Split(head, "\r\n"), body
}

// cliCheckNodeMessage checks the nodemailer message built from cliNodeSpec: the
// header fields it was given, its 7bit text body as given (LF turned into CRLF)
// and every line CRLF-ended.
func cliCheckNodeMessage(t *testing.T, m smtptest.Message) {
	t.Helper()
	data := string(m.Data)
	require.Equal(t, "a@example.com", m.From)
	require.Equal(t, []string{"b@example.com"}, m.To)
	require.Equal(t, "nodemailer.example", m.Helo)
	require.Equal(t, "", m.EncodingUTF8)
	require.Equal(t, "", m.EncodingBody)
	require.NotContains(t, strings.ReplaceAll(data, "\r\n", ""), "\n", "bare LF in %q", data)
	require.NotContains(t, strings.ReplaceAll(data, "\r\n", ""), "\r", "bare CR in %q", data)
	head, body := cliSplitMessage(t, data)
	require.Subset(t, head, []string{
		"From: a@example.com",
		"To: b@example.com",
		"Subject: real client",
		"Message-ID: <1@nodemailer.example>",
		"Date: Tue, 02 Jan 2024 03:04:05 +0000",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
		"Content-Transfer-Encoding: 7bit",
	})
	require.Equal(t, "first line\r\n.leading dot\r\n..two dots\r\n.\tdot and tab\r\n\r\nlast line\r\n", body)
}

func TestNodemailer(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		_, h, addr := clientsServe(t, smtpd.TLSForbidden, smtpd.AuthForbidden)
		info, log := cliRunNodemailer(t, addr, cliNodeSpec())
		require.Equal(t, []string{"b@example.com"}, info.Accepted)
		require.Empty(t, info.Rejected)
		require.Equal(t, "250 Requested mail action okay, completed", info.Response)
		require.NotContains(t, log, "STARTTLS")
		cliCheckNodeMessage(t, h.Wait(t, 1)[0])
		snap := h.snapshots(t, 1)[0]
		require.False(t, snap.Encrypted)
		require.Empty(t, h.authCalls())
		require.Len(t, h.Messages(), 1)
	})
	t.Run("STARTTLS AUTH", func(t *testing.T) {
		srv, h, addr := clientsServe(t, smtpd.TLSRequired, smtpd.AuthRequired)
		spec := cliNodeSpec()
		spec.RequireTLS, spec.CA, spec.User, spec.Pass = true, clientsCertPEM(t, srv), authUser, authPass
		info, log := cliRunNodemailer(t, addr, spec)
		require.Equal(t, []string{"b@example.com"}, info.Accepted)
		require.Contains(t, log, "C: STARTTLS\nS: 220 Ready to start TLS\n")
		require.Contains(t, log, "C: AUTH PLAIN ") // nodemailer's choice of LOGIN PLAIN
		cliCheckNodeMessage(t, h.Wait(t, 1)[0])
		snap := h.snapshots(t, 1)[0]
		require.True(t, snap.Encrypted)
		require.Equal(t, authUser, h.Wait(t, 1)[0].AuthenticationID)
		require.Equal(t, []secCall{{"", authUser, authPass}}, h.authCalls())
		require.Equal(t, []secHelo{{"nodemailer.example", false}, {"nodemailer.example", true}}, h.heloCalls())
	})
	t.Run("implicit TLS AUTH", func(t *testing.T) {
		srv, h, addr := cliImplicitServe(t, smtpd.AuthRequired)
		spec := cliNodeSpec()
		spec.Secure, spec.CA, spec.User, spec.Pass = true, clientsCertPEM(t, srv), authUser, authPass
		info, log := cliRunNodemailer(t, addr, spec)
		require.Equal(t, []string{"b@example.com"}, info.Accepted)
		require.NotContains(t, log, "STARTTLS")
		cliCheckNodeMessage(t, h.Wait(t, 1)[0])
		snap := h.snapshots(t, 1)[0]
		require.True(t, snap.Encrypted)
		require.Equal(t, authUser, h.Wait(t, 1)[0].AuthenticationID)
		require.Equal(t, []secHelo{{"nodemailer.example", true}}, h.heloCalls())
	})
	t.Run("SMTPUTF8", func(t *testing.T) {
		_, h, addr := clientsServe(t, smtpd.TLSForbidden, smtpd.AuthForbidden, cliI18n)
		spec := cliNodeSpec()
		spec.From, spec.To = "jörg@bücher.example", []string{"zoë@exämple.org", "b@example.com"}
		spec.Subject, spec.Text = "grüße", "körper\n.punkt\n"
		// nodemailer adds SMTPUTF8 to MAIL FROM when the server offers it and an
		// address is not ASCII; with a non-ASCII local part it keeps the domain in
		// UTF-8 too. The header fields carry the addresses in UTF-8 (RFC 6532), the
		// subject as an encoded word, the body quoted-printable (no BODY=8BITMIME).
		info, log := cliRunNodemailer(t, addr, spec)
		require.Equal(t, "jörg@bücher.example", info.Envelope.From)
		require.Equal(t, []string{"zoë@exämple.org", "b@example.com"}, info.Accepted)
		require.Contains(t, log, "C: MAIL FROM:<jörg@bücher.example> SMTPUTF8\n")
		m := h.Wait(t, 1)[0]
		require.Equal(t, "jörg@bücher.example", m.From)
		require.Equal(t, []string{"zoë@exämple.org", "b@example.com"}, m.To)
		require.Equal(t, "utf8", m.EncodingUTF8)
		require.Equal(t, "", m.EncodingBody)
		head, body := cliSplitMessage(t, string(m.Data))
		require.Subset(t, head, []string{
			"From: jörg@bücher.example",
			"To: zoë@exämple.org, b@example.com",
			"Subject: =?UTF-8?Q?gr=C3=BC=C3=9Fe?=",
			"Message-ID: <1@nodemailer.example>",
			"Content-Type: text/plain; charset=utf-8",
			"Content-Transfer-Encoding: quoted-printable",
		})
		require.Equal(t, "k=C3=B6rper\r\n.punkt\r\n", body)
	})
}
