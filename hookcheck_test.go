package smtpd_test

import (
	"io"
	"strings"
	"testing"

	"github.com/midismtp/smtpd"
	"github.com/stretchr/testify/require"
)

type misspelled struct{ smtpd.BaseHandler }

func (misspelled) OnRcpt(*smtpd.Session, string) (string, error)               { return "", nil }
func (misspelled) OnData(*smtpd.Session) error                                 { return nil }
func (misspelled) OnMessageRecieved(*smtpd.Session) error                      { return nil }
func (misspelled) OnMailfrom(*smtpd.Session, string) (string, error)           { return "", nil }
func (misspelled) OnMessageStream(*smtpd.Session, io.Reader)                   {}
func (misspelled) OnlineCount() int                                            { return 0 } // not a hook's name
func (misspelled) OnSomethingElseEntirely()                                    {}
func (misspelled) OnMessageRecipient(*smtpd.Session, string) error             { return nil }
func (misspelled) OnAuthToken(*smtpd.Session, smtpd.AuthToken) (string, error) { return "", nil }

func TestCheckHandler(t *testing.T) {
	err := smtpd.CheckHandler(misspelled{})
	require.Error(t, err)
	msg := err.Error()
	for _, want := range []string{
		"OnRcpt is no hook and is never called; did you mean OnRcptTo?",
		"OnData is no hook and is never called; did you mean OnMessage?",
		"OnMessageRecieved is no hook and is never called; did you mean OnMessage?",
		"OnMailfrom is no hook and is never called; did you mean OnMailFrom?",
		"OnMessageStream is never called: its signature is not smtpd.MessageStreamer's OnMessageStream(*smtpd.Session, io.Reader) error",
		"OnSomethingElseEntirely is named like a hook but is none",
	} {
		require.Contains(t, msg, want)
	}
	require.NotContains(t, msg, "OnlineCount")
	require.NotContains(t, msg, "OnMessageRecipient")
	require.NotContains(t, msg, "OnAuthToken")
	require.Equal(t, 6, strings.Count(msg, "\n")+1, msg)

	require.NoError(t, smtpd.CheckHandler(smtpd.BaseHandler{}))
	require.NoError(t, smtpd.CheckHandler(&smtpd.BaseHandler{}))
}

type pointerHooks struct{ smtpd.BaseHandler }

func (*pointerHooks) OnMessageStream(*smtpd.Session, io.Reader) error { return nil }

// An optional hook with a pointer receiver on a Handler passed as a value is
// never called (the compiler catches it only for Handler's own methods).
func TestCheckHandlerPointerReceiver(t *testing.T) {
	err := smtpd.CheckHandler(pointerHooks{})
	require.ErrorContains(t, err, "smtpd_test.pointerHooks.OnMessageStream is never called: its receiver is a pointer")
	require.NoError(t, smtpd.CheckHandler(&pointerHooks{}))
}
