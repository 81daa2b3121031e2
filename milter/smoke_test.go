package milter_test

import (
	"testing"

	"github.com/midismtp/smtpd/smtptest"
)

func TestSmoke(t *testing.T) {
	sc := startScripted(t, scriptedOpts{}, nil)
	rec := &smtptest.Recorder{}
	ts := milterServer(t, rec, milters(sc))
	msg := "Subject: hi\r\nFrom: a@example.org\r\n\r\nhello\r\n"
	if err := ts.SendMail(nil, "a@example.org", []string{"b@example.net"}, msg); err != nil {
		t.Fatal(err)
	}
	got := rec.Messages()
	if len(got) != 1 || string(got[0].Data) != msg {
		t.Fatalf("got %v", got)
	}
	sc.waitStage(t, "quit")
	t.Logf("%v", sc.Stages())
	for _, e := range sc.Events() {
		t.Logf("%s %q %v", e.Stage, e.Args, e.Macros)
	}
}
