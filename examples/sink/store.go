package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/mail"
	"os"
	"path/filepath"
	"time"

	"github.com/midismtp/smtpd"
)

// store writes messages into a directory: <id>.eml, then <id>.json. Each file is
// written to a hidden temporary name in the same directory and renamed, so a reader
// never sees a partial file, and a .json file means its .eml is complete. (No fsync:
// the files survive a crash of the sink, not of the machine.)
type store struct {
	dir  string
	lmtp bool // recorded in each .json
}

// record is the content of <id>.json. Header fields are read from the message
// with net/mail; each is "" when the header is absent or the header section does
// not parse.
type record struct {
	ID               string   `json:"id"`         // the file name: smtpd's Message.ID, "<session_id>-<n>"
	SessionID        string   `json:"session_id"` // smtpd Session.ID, as in the log's session attribute
	From             string   `json:"from"`
	To               []string `json:"to"`
	Helo             string   `json:"helo"`
	RemoteIP         string   `json:"remote_ip"`   // the client (after PROXY/XCLIENT)
	RemotePort       int      `json:"remote_port"` // its port
	ProxyIP          string   `json:"proxy_ip"`    // the proxy that sent a PROXY header; "" when direct
	EncodingBody     string   `json:"encoding_body"`
	EncodingUTF8     string   `json:"encoding_utf8"`
	AuthorizationID  string   `json:"authorization_id"`
	AuthenticationID string   `json:"authentication_id"`
	AuthMechanism    string   `json:"auth_mechanism"` // the SASL mechanism of the AUTH; "" without
	Encrypted        bool     `json:"encrypted"`
	RequireTLS       bool     `json:"require_tls"`     // MAIL FROM ... REQUIRETLS (-require-tls)
	TLSRequiredNo    bool     `json:"tls_required_no"` // the message has "TLS-Required: No" (RFC 8689)
	Bytesize         int      `json:"bytesize"`
	ReceivedAt       string   `json:"received_at"` // when the final dot arrived: RFC 3339, UTC, always 9 decimals, so it sorts as text
	Subject          string   `json:"subject"`     // decoded (RFC 2047 encoded words); undecodable charsets left as sent
	Date             string   `json:"date"`        // the Date header as sent (unfolded)
	MessageID        string   `json:"message_id"`  // the Message-ID header as sent, angle brackets included

	Size          int            `json:"size"`                     // the size declared with MAIL FROM SIZE=; 0 when not given
	LMTP          bool           `json:"lmtp,omitempty"`           // received over LMTP (-lmtp)
	DSNRet        string         `json:"dsn_ret,omitempty"`        // RET= (-dsn)
	DSNEnvID      string         `json:"dsn_envid,omitempty"`      // ENVID=, decoded
	DSNRecipients []dsnRecipient `json:"dsn_recipients,omitempty"` // NOTIFY= and ORCPT= of each recipient, in the order of "to"
}

// dsnRecipient is the DSN part of one recipient in the .json.
type dsnRecipient struct {
	Notify []string `json:"notify,omitempty"`
	ORcpt  string   `json:"orcpt,omitempty"`
}

// headerFields returns the decoded Subject and the Date and Message-ID headers of
// data; "" for each when absent or when the header section does not parse.
func headerFields(data []byte) (subject, date, messageID string) {
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return "", "", ""
	}
	subject = m.Header.Get("Subject")
	if dec, err := new(mime.WordDecoder).DecodeHeader(subject); err == nil {
		subject = dec
	}
	return subject, m.Header.Get("Date"), m.Header.Get("Message-Id")
}

// newStore creates dir if needed and checks that files can be made in it.
func newStore(dir string, lmtp bool) (*store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("-out: %w", err)
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("-out: %w", err)
	}
	f.Close()
	os.Remove(f.Name())
	return &store{dir: dir, lmtp: lmtp}, nil
}

// save writes the message of s under id. An id already in the folder (left by an
// earlier run whose random Session.ID prefix was the same) is never overwritten:
// save fails, so the message is answered 451 and its sender retries.
func (st *store) save(id string, s *smtpd.Session) error {
	if err := st.checkFree(id); err != nil {
		return err
	}
	if err := st.writeFile(id+".eml", s.Message.Data); err != nil {
		return err
	}
	return st.saveRecord(id, s, s.Message.Data, s.Message.Bytesize, s.Message.DeliveredAt)
}

// saveStream writes a streamed message of s under id: r straight into the .eml (by
// way of a temporary file), then the .json; the header fields come from the start
// of the message.
func (st *store) saveStream(id string, s *smtpd.Session, r io.Reader) error {
	if err := st.checkFree(id); err != nil {
		return err
	}
	head := &prefixBuffer{max: maxHeaderBytes}
	n, err := st.writeFileFrom(id+".eml", io.TeeReader(r, head))
	if err != nil {
		return err
	}
	return st.saveRecord(id, s, head.b, int(n), time.Now())
}

// maxHeaderBytes is how much of a streamed message is kept to read its header fields.
const maxHeaderBytes = 64 << 10

// prefixBuffer keeps the first max bytes written to it.
type prefixBuffer struct {
	b   []byte
	max int
}

func (p *prefixBuffer) Write(b []byte) (int, error) {
	if room := p.max - len(p.b); room > 0 {
		p.b = append(p.b, b[:min(room, len(b))]...)
	}
	return len(b), nil
}

// checkFree refuses an id whose files exist already.
func (st *store) checkFree(id string) error {
	for _, name := range []string{id + ".eml", id + ".json"} {
		switch _, err := os.Lstat(filepath.Join(st.dir, name)); {
		case err == nil:
			return fmt.Errorf("sink: saving message: %s exists already in %s", name, st.dir)
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("sink: saving message: %w", err)
		}
	}
	return nil
}

// saveRecord writes <id>.json for the message of s whose .eml is written; head is
// (the start of) its data, for the header fields.
func (st *store) saveRecord(id string, s *smtpd.Session, head []byte, size int, at time.Time) error {
	subject, date, messageID := headerFields(head)
	var js bytes.Buffer
	enc := json.NewEncoder(&js)
	enc.SetEscapeHTML(false) // message_id "<a@b>" stays readable, not "\u003ca@b\u003e"
	err := enc.Encode(record{
		ID:               id,
		SessionID:        s.ID,
		From:             s.Envelope.From,
		To:               s.Envelope.To,
		Helo:             s.Helo,
		RemoteIP:         s.RemoteIP,
		RemotePort:       s.RemotePort,
		ProxyIP:          s.ProxyIP,
		EncodingBody:     s.Envelope.EncodingBody,
		EncodingUTF8:     s.Envelope.EncodingUTF8,
		AuthorizationID:  s.AuthorizationID,
		AuthenticationID: s.AuthenticationID,
		AuthMechanism:    s.AuthMechanism,
		Encrypted:        s.IsEncrypted(),
		RequireTLS:       s.Envelope.RequireTLS,
		TLSRequiredNo:    s.Envelope.TLSRequiredNo,
		Bytesize:         size,
		ReceivedAt:       at.UTC().Format("2006-01-02T15:04:05.000000000Z"),
		Subject:          subject,
		Date:             date,
		MessageID:        messageID,
		Size:             s.Envelope.Size,
		LMTP:             st.lmtp,
		DSNRet:           s.Envelope.DSNRet,
		DSNEnvID:         s.Envelope.DSNEnvID,
		DSNRecipients:    dsnRecipients(s.Envelope.DSNRecipients),
	})
	if err == nil {
		err = st.writeFile(id+".json", js.Bytes()) // Encode ended it with a newline
	}
	if err != nil {
		os.Remove(filepath.Join(st.dir, id+".eml"))
		return err
	}
	return nil
}

// dsnRecipients converts the Envelope's DSN parameters for the .json.
func dsnRecipients(in []smtpd.RecipientDSN) []dsnRecipient {
	var out []dsnRecipient
	for _, d := range in {
		out = append(out, dsnRecipient{Notify: d.Notify, ORcpt: d.ORcpt})
	}
	return out
}

// writeFile writes data to dir/name by way of a temporary file and a rename.
func (st *store) writeFile(name string, data []byte) error {
	_, err := st.writeFileFrom(name, bytes.NewReader(data))
	return err
}

// writeFileFrom copies r to dir/name by way of a temporary file and a rename; a
// read error (the message refused mid-way) leaves nothing behind.
func (st *store) writeFileFrom(name string, r io.Reader) (n int64, err error) {
	f, err := os.CreateTemp(st.dir, "."+name+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("sink: saving message: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
			err = fmt.Errorf("sink: saving message: %w", err)
		}
	}()
	if n, err = io.Copy(f, r); err != nil {
		f.Close()
		return n, err
	}
	if err := f.Close(); err != nil {
		return n, err
	}
	return n, os.Rename(f.Name(), filepath.Join(st.dir, name))
}
