package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// message is one message a test sends.
type message struct {
	from string
	to   []string
	mail string // extra MAIL FROM parameters, e.g. " BODY=8BITMIME"
	bdat bool   // sent with BDAT in two chunks instead of DATA
	data []byte // the message as it must be stored
	// pause holds back DATA's final dot this long after the rest of the data: the
	// message's X-Smtp-Received-At must be after it.
	pause time.Duration
}

// bigMessage is a message of n bytes or a little more, of 78-character lines.
func bigMessage(subject string, n int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Subject: %s\r\n\r\n", subject)
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%08d %s\r\n", i, strings.Repeat("abcdefghij", 7)[:67])
	}
	return b.Bytes()
}

// sendOne sends m over c (EHLO done) and returns the reply to its end.
func sendOne(c *smtpConn, m message) (int, string, error) {
	if code, text, err := c.cmd("MAIL FROM:<" + m.from + ">" + m.mail); err != nil || code != 250 {
		return code, text, err
	}
	for _, r := range m.to {
		if code, text, err := c.cmd("RCPT TO:<" + r + ">"); err != nil || code != 250 {
			return code, text, err
		}
	}
	if m.bdat {
		half := len(m.data) / 2
		if err := c.send(fmt.Sprintf("BDAT %d\r\n%s", half, m.data[:half])); err != nil {
			return 0, "", err
		}
		if code, text, err := c.reply(); err != nil || code != 250 {
			return code, text, err
		}
		if err := c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(m.data)-half, m.data[half:])); err != nil {
			return 0, "", err
		}
		return c.reply()
	}
	if code, text, err := c.cmd("DATA"); err != nil || code != 354 {
		return code, text, err
	}
	stuffed := dotStuff(m.data)
	if m.pause > 0 {
		if err := c.send(strings.TrimSuffix(stuffed, ".\r\n")); err != nil {
			return 0, "", err
		}
		time.Sleep(m.pause)
		stuffed = ".\r\n"
	}
	if err := c.send(stuffed); err != nil {
		return 0, "", err
	}
	return c.reply()
}

// TestEmbeddedRoundTrip runs the receiver as `go run .` does (embedded nats-server
// with JetStream, storing in a data folder), sends messages of every kind over
// one session, and reads them back from the stream: byte-exact, with the
// envelope, the client's address and port, the HELO and the session in headers,
// and a Nats-Msg-Id of the nonce and smtpd's Message.ID (the session's ID and
// the transaction's number: an abandoned transaction leaves a gap). The same ID
// published again is stored once. Then -consume (to files, and printing) reads
// the stream back and acknowledges every message.
func TestEmbeddedRoundTrip(t *testing.T) {
	t.Parallel()
	p := startRun(t, true, "-ports", "0", "-data", t.TempDir(), "-nats-listen", "127.0.0.1:0", "-log-level", "debug")

	msgs := []message{
		{from: "alice@example.org", to: []string{"bob@example.net", "carol@example.net"},
			data: []byte("Subject: one\r\n\r\nHello\r\n.leading dot\r\n..two dots\r\n.\r\n"), pause: 200 * time.Millisecond},
		{from: "", to: []string{"postmaster@example.net"}, mail: " BODY=8BITMIME",
			data: []byte("Subject: bounce \xc3\xa9\r\n\r\n8-bit body: gr\xc3\xbc\xc3\x9fe\r\n")},
		{from: "big@example.org", to: []string{"x@example.net"}, data: bigMessage("three MiB", 3<<20)},
		{from: "chunks@example.org", to: []string{"y@example.net"}, bdat: true,
			data: []byte("Subject: BDAT\r\n\r\nnot the end:\r\n.\r\nQUIT\r\nstill the message\r\n")},
	}
	c := dialEHLO(t, p.smtp)
	dotAfter := make([]time.Time, len(msgs)) // no earlier than this the final dot was sent
	for i, m := range msgs {
		if i == 2 { // transaction 3 abandoned: message 3 is transaction 4
			if err := c.expect("MAIL FROM:<gone@example.org>", 250); err != nil {
				t.Fatal(err)
			}
			if err := c.expect("RSET", 250); err != nil {
				t.Fatal(err)
			}
		}
		dotAfter[i] = time.Now().Add(m.pause)
		if code, text, err := sendOne(c, m); err != nil || code != 250 {
			t.Fatalf("message %d: %d %s %v", i, code, text, err)
		}
	}
	port := c.localPort()
	if err := c.expect("QUIT", 221); err != nil {
		t.Fatal(err)
	}

	nc := natsConnect(t, p.nats)
	got := readStream(t, nc, "MAIL")
	if len(got) != len(msgs) {
		t.Fatalf("stream has %d messages, want %d", len(got), len(msgs))
	}
	session := got[0].header.Get(HeaderSession)
	idRe := regexp.MustCompile(`^[0-9a-f]{8}-` + regexp.QuoteMeta(session) + `-(\d+)$`)
	for i, m := range msgs {
		s := got[i]
		if !bytes.Equal(s.data, m.data) {
			t.Errorf("message %d: stored %d bytes %q..., sent %d bytes %q...", i, len(s.data), s.data[:min(len(s.data), 80)], len(m.data), m.data[:min(len(m.data), 80)])
		}
		h := s.header
		for _, c := range []struct{ key, want string }{
			{HeaderFrom, m.from},
			{HeaderRemoteIP, "127.0.0.1"},
			{HeaderRemotePort, strconv.Itoa(port)},
			{HeaderProxyIP, ""},
			{HeaderHelo, "client.test"},
			{HeaderSession, session},
		} {
			if got := h.Get(c.key); got != c.want {
				t.Errorf("message %d: %s = %q, want %q", i, c.key, got, c.want)
			}
		}
		if _, ok := h[HeaderFrom]; !ok {
			t.Errorf("message %d: no %s header", i, HeaderFrom)
		}
		if !slices.Equal(h.Values(HeaderTo), m.to) {
			t.Errorf("message %d: %s = %q, want %q", i, HeaderTo, h.Values(HeaderTo), m.to)
		}
		transaction := i + 1
		if i >= 2 {
			transaction++
		}
		if id := h.Get(jetstream.MsgIDHeader); !idRe.MatchString(id) || idRe.FindStringSubmatch(id)[1] != strconv.Itoa(transaction) {
			t.Errorf("message %d: Nats-Msg-Id %q, want <nonce>-%s-%d", i, id, session, transaction)
		}
		// Received-At is the end of the data: not before the final dot was sent
		// (wall clocks of this one process; 1 ms of slack).
		if at, err := time.Parse(time.RFC3339Nano, h.Get(HeaderReceivedAt)); err != nil {
			t.Errorf("message %d: %s: %v", i, HeaderReceivedAt, err)
		} else if at.Before(dotAfter[i].Round(0).Add(-time.Millisecond)) {
			t.Errorf("message %d: %s %s is before the final dot was sent (%s)", i, HeaderReceivedAt,
				at.Format(time.RFC3339Nano), dotAfter[i].UTC().Format(time.RFC3339Nano))
		}
	}
	if b := got[1].header.Get(HeaderBody); b != "8bitmime" {
		t.Errorf("BODY=8BITMIME: %s = %q", HeaderBody, b)
	}

	// A publish retried with the same Nats-Msg-Id is stored once.
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	again := &nats.Msg{Subject: "mail.incoming", Header: got[0].header, Data: got[0].data}
	ack, err := js.PublishMsg(ctx, again)
	if err != nil || !ack.Duplicate || ack.Sequence != got[0].seq {
		t.Errorf("re-publish of %s: %+v %v, want a duplicate of seq %d", got[0].header.Get(jetstream.MsgIDHeader), ack, err, got[0].seq)
	}
	if n := len(readStream(t, nc, "MAIL")); n != len(msgs) {
		t.Errorf("after the re-publish the stream has %d messages, want %d", n, len(msgs))
	}

	// -consume -out DIR writes every message and acknowledges it.
	out := t.TempDir()
	cons := runBackground(t, "-consume", "-nats", p.nats, "-out", out)
	deadline := time.Now().Add(15 * time.Second)
	for {
		files, _ := filepath.Glob(filepath.Join(out, "*.json"))
		if len(files) == len(msgs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("-consume wrote %d .json files, want %d; stderr:\n%s", len(files), len(msgs), cons.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i, s := range got {
		id := s.header.Get(jetstream.MsgIDHeader)
		eml, err := os.ReadFile(filepath.Join(out, id+".eml"))
		if err != nil || !bytes.Equal(eml, msgs[i].data) {
			t.Errorf("%s.eml: %d bytes, %v; want the message", id, len(eml), err)
		}
		raw, err := os.ReadFile(filepath.Join(out, id+".json"))
		var rec record
		if err == nil {
			err = json.Unmarshal(raw, &rec)
		}
		if err != nil || rec.ID != id || rec.StreamSeq != s.seq || rec.From != msgs[i].from || !slices.Equal(rec.To, msgs[i].to) ||
			rec.RemoteIP != "127.0.0.1" || rec.RemotePort != port || rec.Bytes != len(msgs[i].data) {
			t.Errorf("%s.json: %s %v", id, raw, err)
		}
	}
	ackDone := func(durable string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			ci, err := js.Consumer(ctx, "MAIL", durable)
			if err == nil {
				info, err := ci.Info(ctx)
				if err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream == got[len(got)-1].seq {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("consumer %s: %+v %v: not every message acknowledged", durable, info, err)
				}
			} else if time.Now().After(deadline) {
				t.Fatalf("consumer %s: %v", durable, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ackDone("queue-consume")
	cons.stop(t)

	// -consume without -out prints one line per message.
	printer := runBackground(t, "-consume", "-nats", p.nats, "-durable", "printer")
	ackDone("printer")
	printer.stop(t)
	lines := regexp.MustCompile(`(?m)^message \d+ \S+ from=<[^>]*> to=<.+> remote=127\.0\.0\.1 port=\d+ proxy= bytes=\d+$`).FindAllString(printer.stdout.String(), -1)
	if len(lines) != len(msgs) {
		t.Errorf("-consume printed %d message lines, want %d:\n%s", len(lines), len(msgs), printer.stdout)
	}
}

// The exact replies of TestTooLarge: MaxMessageSize is the library's limit (its
// reply), the room the headers leave is the queue's own.
const (
	replyLibraryTooBig = "552 5.3.4 Requested mail action aborted: exceeded storage allocation"
	replyQueueTooBig   = "552 5.3.4 Message too big for the queue"
)

// TestTooLarge checks the size limit with a small max_payload (128 KiB):
// -max-message is derived from it (128 KiB less 64 KiB for the headers), a SIZE=
// over it is refused at MAIL and a message over it after its data, both with the
// library's MaxMessageSize reply; a message whose envelope headers (400 long
// recipients) leave too little room for its body gets the queue's own reply.
// Each refusal after the data has a log line that says what to raise. A message
// that fits is stored; the refused ones are not.
func TestTooLarge(t *testing.T) {
	t.Parallel()
	p := startRun(t, true, "-ports", "0", "-data", t.TempDir(), "-nats-listen", "127.0.0.1:0",
		"-max-payload", "131072", "-max-recipients", "400")
	c := dialEHLO(t, p.smtp)

	reply := func(code int, text string) string { return fmt.Sprintf("%d %s", code, text) }
	if code, text, err := c.cmd("MAIL FROM:<a@example.org> SIZE=70000"); err != nil || reply(code, text) != replyLibraryTooBig {
		t.Errorf("SIZE over the limit: %q %v, want %q", reply(code, text), err, replyLibraryTooBig)
	}
	over := message{from: "a@example.org", to: []string{"b@example.net"}, data: bigMessage("over", 70000)}
	if code, text, err := sendOne(c, over); err != nil || reply(code, text) != replyLibraryTooBig {
		t.Errorf("a message over -max-message: %q %v, want %q", reply(code, text), err, replyLibraryTooBig)
	}
	var many []string
	for i := range 400 {
		many = append(many, fmt.Sprintf("%s%03d@%s.example", strings.Repeat("r", 60), i, strings.Repeat("d", 120)))
	}
	crowded := message{from: "a@example.org", to: many, data: bigMessage("crowded", 50000)}
	if code, text, err := sendOne(c, crowded); err != nil || reply(code, text) != replyQueueTooBig {
		t.Errorf("a message whose headers leave too little room: %q %v, want %q", reply(code, text), err, replyQueueTooBig)
	}
	fits := message{from: "a@example.org", to: []string{"b@example.net"}, data: bigMessage("fits", 60000)}
	if code, text, err := sendOne(c, fits); err != nil || code != 250 {
		t.Fatalf("a message that fits: %d %s %v", code, text, err)
	}

	logs := p.stderr.String()
	for _, want := range []string{"message over -max-message; refused with 552", "message over what max_payload leaves after its headers; refused with 552"} {
		if n := strings.Count(logs, want); n != 1 {
			t.Errorf("%d log lines say %q, want 1 (the SIZE= refusal is the library's):\n%s", n, want, logs)
		}
	}
	if n := strings.Count(logs, "raise max_payload"); n != 2 || !strings.Contains(logs, "max_message=65536") {
		t.Errorf("the 552 log lines do not say the limit and what to raise:\n%s", logs)
	}
	got := readStream(t, natsConnect(t, p.nats), "MAIL")
	if len(got) != 1 || !bytes.Equal(got[0].data, fits.data) {
		t.Errorf("stream has %d messages, want only the one that fits", len(got))
	}
}

// startNATS runs a nats-server with JetStream in this process, on port with its
// store in dir, until the test ends or it is shut down.
func startNATS(t *testing.T, port int, dir string) (*server.Server, error) {
	t.Helper()
	ns, err := server.NewServer(&server.Options{ServerName: "down-test", Host: "127.0.0.1", Port: port,
		JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
	if err != nil {
		return nil, err
	}
	ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("nats-server on port %d not ready", port)
	}
	return ns, nil
}

// TestNATSDown checks that no message is acknowledged that is not stored: with
// NATS stopped, a message whose data was under way gets 451 at its end, a new
// transaction 451 at MAIL, both logged; once NATS is back the client's retries
// succeed, and the stream holds every message once.
func TestNATSDown(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var ns *server.Server
	var port int
	for attempt := 1; ns == nil; attempt++ {
		var err error
		port = freePorts(t, 1)[0] // picked free; taken in between: another one
		if ns, err = startNATS(t, port, dir); err != nil && attempt == 3 {
			t.Fatal(err)
		}
	}
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	p := startRun(t, false, "-ports", "0", "-nats", url, "-publish-timeout", "1s")

	mk := func(n int) message {
		return message{from: "a@example.org", to: []string{"b@example.net"},
			data: []byte(fmt.Sprintf("Subject: down test %d\r\n\r\nmessage %d\r\n", n, n))}
	}
	c := dialEHLO(t, p.smtp)
	if code, text, err := sendOne(c, mk(1)); err != nil || code != 250 {
		t.Fatalf("with NATS up: %d %s %v", code, text, err)
	}

	// NATS stops while message 2's data is under way: 451 at its end.
	for _, cmd := range []string{"MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>"} {
		if err := c.expect(cmd, 250); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.expect("DATA", 354); err != nil {
		t.Fatal(err)
	}
	whole := dotStuff(mk(2).data)
	if err := c.send(whole[:10]); err != nil {
		t.Fatal(err)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	start := time.Now()
	if err := c.send(whole[10:]); err != nil {
		t.Fatal(err)
	}
	if code, text, err := c.reply(); err != nil || code != 451 {
		t.Errorf("message 2 with NATS stopped: %d %s %v, want 451", code, text, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the 451 took %s with -publish-timeout 1s", d)
	}
	// A new transaction: 451 at MAIL, no data sent for nothing.
	if err := c.expect("MAIL FROM:<a@example.org>", 451); err != nil {
		t.Errorf("MAIL with NATS stopped: %v", err)
	}
	logs := p.stderr.String()
	if !strings.Contains(logs, "message not stored by JetStream; answered 451") || !strings.Contains(logs, "MAIL answered 451") {
		t.Errorf("the 451s are not logged:\n%s", logs)
	}

	// NATS comes back (same port, same store); the client retries until 250. A
	// retry that got 451 after its data may have been stored all the same (its
	// acknowledgement late): only such retries may leave a second copy. The 451s
	// while NATS was stopped may not: nothing was sent.
	time.Sleep(300 * time.Millisecond)
	if _, err := startNATS(t, port, dir); err != nil {
		t.Fatalf("restarting NATS on the same port: %v", err)
	}
	ambiguous := map[int]int{}
	for _, n := range []int{2, 3} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			code, text, err := sendOne(c, mk(n))
			if err == nil && code == 250 {
				break
			}
			if err != nil || code != 451 || time.Now().After(deadline) {
				t.Fatalf("retry of message %d: %d %s %v", n, code, text, err)
			}
			if !strings.Contains(text, "Queue unavailable") { // not the 451 at MAIL
				ambiguous[n]++
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	got := readStream(t, natsConnect(t, url), "MAIL")
	copies := map[string]int{}
	for _, s := range got {
		copies[string(s.data)]++
	}
	for n := 1; n <= 3; n++ {
		if c := copies[string(mk(n).data)]; c < 1 || c > 1+ambiguous[n] {
			t.Errorf("message %d is stored %d times, want once (or up to %d)", n, c, 1+ambiguous[n])
		}
	}
	if len(copies) != 3 {
		t.Errorf("the stream holds %d distinct messages, want the 3 sent", len(copies))
	}
}

// TestFlags checks the refusals at start: flag combinations that cannot work are
// usage errors; a -max-message that the NATS server's max_payload cannot carry
// stops the receiver with what to raise; a -data folder in use by a running
// embedded server is not opened a second time.
func TestFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-replicas", "3"}, // the embedded server is one node
		{"-nats", "nats://127.0.0.1:1", "-data", "x"}, // -data is the embedded server's
		{"-out", "dir"}, // -out needs -consume
		{"-drain"},      // so does -drain
		{"-retention", "interest"},
		{"-max-payload", "1000"},
		{"-publish-timeout", "0s"},
		{"-publish-timeout", "5m"}, // longer than the duplicate window
		{"-subject", "mail.*"},
		{"-stream-name", "a.b"},
		{"-nats-listen", "127.0.0.1"},
		{"extra"},
	} {
		var stderr syncBuffer
		err := run(context.Background(), args, &syncBuffer{}, &stderr)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(stderr.String(), "Usage: queue") {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
	err := run(context.Background(), []string{"-ports", "0", "-data", t.TempDir(), "-nats-listen", "",
		"-max-message", "9000000"}, &syncBuffer{}, &syncBuffer{})
	if err == nil || !strings.Contains(err.Error(), "raise max_payload") {
		t.Errorf("-max-message over max_payload: %v, want an error saying to raise max_payload", err)
	}

	// Two embedded servers on one -data would corrupt it: the second one is refused.
	data := t.TempDir()
	startRun(t, false, "-ports", "0", "-data", data, "-nats-listen", "")
	err = run(context.Background(), []string{"-consume", "-data", data, "-nats-listen", ""}, &syncBuffer{}, &syncBuffer{})
	if err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Errorf("a second process on the same -data: %v, want it refused", err)
	}
}
