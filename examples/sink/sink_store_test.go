package main

import (
	"fmt"
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/midismtp/smtpd"
	"github.com/stretchr/testify/require"
)

func TestSinkStoresMessage(t *testing.T) {
	msg := "From: Alice <alice@example.com>\r\nSubject: stored\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n \r\nlast line\r\n"
	tests := []sinkStoreCase{
		{name: "plain", from: "alice@example.com", to: []string{"bob@example.net", "carol@example.org"}, msg: msg, wantSubject: "stored"},
		{name: "null sender", from: "", to: []string{"bob@example.net"}, msg: msg, wantSubject: "stored"},
		{name: "i18n", args: []string{"-i18n"}, from: "jörg@example.com", to: []string{"zoë@example.net"},
			msg: "Subject: Grüße\r\n\r\nÄÖÜ 8bit body\r\n", wantBody: "8bitmime", wantUTF8: "utf8", wantSubject: "Grüße"},
		{name: "crlf leave, pipelining", args: []string{"-crlf", "leave", "-pipelining"}, from: "a@example.com", to: []string{"b@example.com"}, msg: msg, wantSubject: "stored"},
		{name: "crlf strict", args: []string{"-crlf", "strict"}, from: "a@example.com", to: []string{"b@example.com"}, msg: msg, wantSubject: "stored"},
		{name: "header fields", from: "a@example.com", to: []string{"b@example.com"},
			msg: "Date: Mon, 2 Jan 2006 15:04:05 -0700\r\nMessage-ID: <1234.5678@client.example>\r\n" +
				"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= and\r\n =?ISO-8859-1?B?5g==?= folded\r\nFrom: a@example.com\r\n\r\nbody\r\n",
			wantSubject: "Grüße and æ folded", wantDate: "Mon, 2 Jan 2006 15:04:05 -0700", wantMessageID: "<1234.5678@client.example>"},
		{name: "unknown charset left as sent", from: "a@example.com", to: []string{"b@example.com"},
			msg: "Subject: =?x-unknown?Q?abc?=\r\n\r\nbody\r\n", wantSubject: "=?x-unknown?Q?abc?="},
		{name: "no header section", from: "a@example.com", to: []string{"b@example.com"},
			msg: "just a body line\r\nSubject: not a header\r\n"},
	}
	for _, stream := range []bool{false, true} {
		for _, tc := range tests {
			sinkStoresMessage(t, stream, tc)
		}
	}
}

// sinkStoreCase is one case of TestSinkStoresMessage.
type sinkStoreCase struct {
	name          string
	args          []string
	from          string
	to            []string
	msg           string
	wantBody      string
	wantUTF8      string
	wantSubject   string
	wantDate      string
	wantMessageID string
}

// sinkStoresMessage runs one case, buffered or with -stream.
func sinkStoresMessage(t *testing.T, stream bool, tc sinkStoreCase) {
	name := tc.name
	if stream {
		name += "/stream"
		tc.args = append(append([]string(nil), tc.args...), "-stream")
	}
	{
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "new-dir") // -out creates it
			r := startSink(t, 1, append([]string{"-ports", "0", "-out", dir}, tc.args...)...)
			conn, err := net.DialTimeout("tcp", r.addrs[0], 5*time.Second)
			require.NoError(t, err)
			localPort := conn.LocalAddr().(*net.TCPAddr).Port
			c, err := smtp.NewClient(conn, "127.0.0.1")
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.Mail(tc.from)) // says EHLO localhost first, as smtp.SendMail
			for _, a := range tc.to {
				require.NoError(t, c.Rcpt(a))
			}
			w, err := c.Data()
			require.NoError(t, err)
			_, err = w.Write([]byte(tc.msg))
			require.NoError(t, err)
			require.NoError(t, w.Close())
			require.NoError(t, c.Quit())

			id := sinkOnlyMessage(t, dir)
			m := sinkIDRe.FindStringSubmatch(id)
			require.NotNil(t, m, "id %q is not <Session.ID>-<n>", id)
			require.Equal(t, "1", m[2], "the first message of its session")
			eml, err := os.ReadFile(filepath.Join(dir, id+".eml"))
			require.NoError(t, err)
			require.Equal(t, tc.msg, string(eml), "the .eml file is the exact message")

			if tc.wantMessageID != "" {
				raw, err := os.ReadFile(filepath.Join(dir, id+".json"))
				require.NoError(t, err)
				require.Contains(t, string(raw), `"message_id":"`+tc.wantMessageID+`"`, "no \\u003c escapes")
			}
			rec := sinkRecord(t, dir, id)
			receivedAt, ok := rec["received_at"].(string)
			require.True(t, ok, "received_at: %v", rec["received_at"])
			require.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$`, receivedAt)
			at, err := time.Parse(time.RFC3339Nano, receivedAt)
			require.NoError(t, err)
			require.WithinDuration(t, time.Now(), at, time.Minute)
			delete(rec, "received_at")
			var to []any
			for _, a := range tc.to {
				to = append(to, a)
			}
			require.Equal(t, map[string]any{
				"id":                id,
				"session_id":        m[1],
				"from":              tc.from,
				"to":                to,
				"helo":              "localhost", // net/smtp's default
				"remote_ip":         "127.0.0.1",
				"remote_port":       float64(localPort),
				"proxy_ip":          "",
				"encoding_body":     tc.wantBody,
				"encoding_utf8":     tc.wantUTF8,
				"authorization_id":  "",
				"authentication_id": "",
				"auth_mechanism":    "",
				"encrypted":         false,
				"require_tls":       false,
				"tls_required_no":   false,
				"bytesize":          float64(len(tc.msg)),
				"subject":           tc.wantSubject,
				"date":              tc.wantDate,
				"message_id":        tc.wantMessageID,
				"size":              float64(0),
			}, rec)

			line := fmt.Sprintf("message %s from=<%s> to=<%s> bytes=%d\n", id, tc.from, strings.Join(tc.to, ">,<"), len(tc.msg))
			if stream {
				line = fmt.Sprintf("message %s from=<%s> to=<%s> streamed\n", id, tc.from, strings.Join(tc.to, ">,<"))
			}
			require.Contains(t, r.stdout.String(), line)
			require.Contains(t, r.stderr.String(), "session="+m[1], "session_id is the session attribute of the log")
		})
	}
}

func TestSinkMessagesOfOneSessionAreNumbered(t *testing.T) {
	dir := t.TempDir()
	r := startSink(t, 1, "-ports", "0", "-out", dir, "-quiet")
	c, err := smtp.Dial(r.addrs[0])
	require.NoError(t, err)
	defer c.Close()
	for _, i := range []int{1, 2, 4} {
		if i == 4 { // transaction 3 is abandoned: its number is not reused
			require.NoError(t, c.Mail("a@example.com"))
			require.NoError(t, c.Reset())
		}
		require.NoError(t, c.Mail("a@example.com"))
		require.NoError(t, c.Rcpt("b@example.com"))
		w, err := c.Data()
		require.NoError(t, err)
		_, err = fmt.Fprintf(w, "Subject: number %d\r\n\r\nbody\r\n", i)
		require.NoError(t, err)
		require.NoError(t, w.Close())
	}
	require.NoError(t, c.Quit())
	// A second connection is a new session.
	require.NoError(t, smtp.SendMail(r.addrs[0], nil, "a@example.com", []string{"b@example.com"}, []byte("Subject: other\r\n\r\nbody\r\n")))

	names := sinkFiles(t, dir)
	require.Len(t, names, 8, "files: %q", names)
	var ids []string
	for _, name := range names {
		if id, ok := strings.CutSuffix(name, ".json"); ok {
			ids = append(ids, id)
		}
	}
	bySubject := map[string]map[string]any{}
	for _, id := range ids {
		rec := sinkRecord(t, dir, id)
		bySubject[rec["subject"].(string)] = rec
	}
	first := bySubject["number 1"]["session_id"].(string)
	for _, i := range []int{1, 2, 4} {
		rec := bySubject[fmt.Sprintf("number %d", i)]
		require.NotNil(t, rec, "message %d: %q", i, ids)
		require.Equal(t, first, rec["session_id"])
		require.Equal(t, fmt.Sprintf("%s-%d", first, i), rec["id"])
	}
	other := bySubject["other"]
	require.NotNil(t, other)
	require.NotEqual(t, first, other["session_id"])
	require.Equal(t, other["session_id"].(string)+"-1", other["id"])
	require.Less(t, bySubject["number 4"]["received_at"].(string), other["received_at"].(string),
		"received_at sorts in arrival order")
}

func TestSinkNeverOverwritesAStoredMessage(t *testing.T) {
	dir := t.TempDir()
	st, err := newStore(dir, false)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "abc-1-1.eml"), []byte("earlier run\r\n"), 0o644))
	s := &smtpd.Session{ID: "abc-1"}
	s.Message.Data = []byte("Subject: x\r\n\r\nbody\r\n")
	require.ErrorContains(t, st.save("abc-1-1", s), "exists already")
	eml, err := os.ReadFile(filepath.Join(dir, "abc-1-1.eml"))
	require.NoError(t, err)
	require.Equal(t, "earlier run\r\n", string(eml))
	require.Equal(t, []string{"abc-1-1.eml"}, sinkFiles(t, dir))

	require.NoError(t, st.save("abc-1-2", s))
	require.Equal(t, []string{"abc-1-1.eml", "abc-1-2.eml", "abc-1-2.json"}, sinkFiles(t, dir))
}

func TestSinkProxiedMessage(t *testing.T) {
	dir := t.TempDir()
	r := startSink(t, 1, "-ports", "0", "-out", dir, "-proxy-trusted", "127.0.0.0/8")
	conn, err := net.DialTimeout("tcp", r.addrs[0], 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(20*time.Second)))
	_, err = conn.Write([]byte("PROXY TCP4 192.0.2.7 127.0.0.1 40123 25\r\n"))
	require.NoError(t, err)
	c, err := smtp.NewClient(conn, "127.0.0.1")
	require.NoError(t, err)
	sinkTransaction(t, c, "a@example.com", "b@example.com", "Subject: via proxy\r\n\r\nbody\r\n")

	rec := sinkRecord(t, dir, sinkOnlyMessage(t, dir))
	require.Equal(t, "192.0.2.7", rec["remote_ip"])
	require.Equal(t, float64(40123), rec["remote_port"])
	require.Equal(t, "127.0.0.1", rec["proxy_ip"])
	require.Equal(t, "via proxy", rec["subject"])
}

func TestSinkConcurrentMessagesGetUniqueIDs(t *testing.T) {
	dir := t.TempDir()
	r := startSink(t, 1, "-ports", "0", "-out", dir, "-quiet")
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			msg := fmt.Sprintf("Subject: %d\r\n\r\nbody of message %d\r\n", i, i)
			errs <- smtp.SendMail(r.addrs[0], nil, fmt.Sprintf("s%d@example.com", i), []string{"r@example.com"}, []byte(msg))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	names := sinkFiles(t, dir)
	require.Len(t, names, 2*n, "files: %q", names)
	seen := map[string]bool{}
	for _, name := range names {
		id, ok := strings.CutSuffix(name, ".json")
		if !ok {
			require.True(t, strings.HasSuffix(name, ".eml"), "unexpected file %q", name)
			continue
		}
		rec := sinkRecord(t, dir, id)
		i, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rec["from"].(string), "s"), "@example.com"))
		require.NoError(t, err)
		require.False(t, seen[rec["from"].(string)], "message %d stored twice", i)
		seen[rec["from"].(string)] = true
		eml, err := os.ReadFile(filepath.Join(dir, id+".eml"))
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("Subject: %d\r\n\r\nbody of message %d\r\n", i, i), string(eml))
	}
	require.Len(t, seen, n)
	require.Equal(t, []string{"listening on " + r.addrs[0]}, strings.Split(strings.TrimSpace(r.stdout.String()), "\n"),
		"-quiet prints the listening line only")
	require.NotContains(t, r.stderr.String(), "level=INFO", "-quiet logs at warn")
}

func TestSinkWithoutOutAcceptsAndPrints(t *testing.T) {
	r := startSink(t, 1, "-ports", "0")
	msg := "Subject: discarded\r\n\r\nbody\r\n"
	require.NoError(t, smtp.SendMail(r.addrs[0], nil, "a@example.com", []string{"b@example.com"}, []byte(msg)))
	require.Regexp(t, `(?m)^message [0-9a-z]+-[0-9a-z]+-1 from=<a@example.com> to=<b@example.com> bytes=`+strconv.Itoa(len(msg))+`$`,
		r.stdout.String())
	require.Contains(t, r.stderr.String(), "level=INFO", "the default log level is info")
}

func TestSinkWriteFailureIs451(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	r := startSink(t, 1, "-ports", "0", "-out", dir)
	require.NoError(t, os.RemoveAll(dir)) // every write now fails

	err := smtp.SendMail(r.addrs[0], nil, "a@example.com", []string{"b@example.com"}, []byte("Subject: x\r\n\r\nbody\r\n"))
	require.Error(t, err)
	require.Equal(t, 451, sinkCode(err), "err: %v", err)
	require.NotContains(t, r.stdout.String(), "message ", "a message not saved is not reported as accepted")
	require.Contains(t, r.stderr.String(), "saving message")
	require.NoDirExists(t, dir)
}
