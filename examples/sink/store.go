package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net/mail"
	"os"
	"path/filepath"

	"github.com/midismtp/smtpd"
)

// store writes messages into a directory: <id>.eml, then <id>.json. Each file is
// written to a hidden temporary name in the same directory and renamed, so a reader
// never sees a partial file, and a .json file means its .eml is complete. (No fsync:
// the files survive a crash of the sink, not of the machine.)
type store struct {
	dir string
}

// record is the content of <id>.json. Header fields are read from the message
// with net/mail; each is "" when the header is absent or the header section does
// not parse.
type record struct {
	ID               string   `json:"id"`         // the file name: "<session_id>-<n>", see sink.newID
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
	Encrypted        bool     `json:"encrypted"`
	Bytesize         int      `json:"bytesize"`
	ReceivedAt       string   `json:"received_at"` // when the final dot arrived: RFC 3339, UTC, always 9 decimals, so it sorts as text
	Subject          string   `json:"subject"`     // decoded (RFC 2047 encoded words); undecodable charsets left as sent
	Date             string   `json:"date"`        // the Date header as sent (unfolded)
	MessageID        string   `json:"message_id"`  // the Message-ID header as sent, angle brackets included

	// Envelope extensions (declared SIZE, DSN, LMTP) go below this line.
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
func newStore(dir string) (*store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("-out: %w", err)
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("-out: %w", err)
	}
	f.Close()
	os.Remove(f.Name())
	return &store{dir: dir}, nil
}

// save writes the message of s under id. An id already in the folder (left by an
// earlier run whose random Session.ID prefix was the same) is never overwritten:
// save fails, so the message is answered 451 and its sender retries.
func (st *store) save(id string, s *smtpd.Session) error {
	for _, name := range []string{id + ".eml", id + ".json"} {
		switch _, err := os.Lstat(filepath.Join(st.dir, name)); {
		case err == nil:
			return fmt.Errorf("sink: saving message: %s exists already in %s", name, st.dir)
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("sink: saving message: %w", err)
		}
	}
	if err := st.writeFile(id+".eml", s.Message.Data); err != nil {
		return err
	}
	subject, date, messageID := headerFields(s.Message.Data)
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
		Encrypted:        s.IsEncrypted(),
		Bytesize:         s.Message.Bytesize,
		ReceivedAt:       s.Message.DeliveredAt.UTC().Format("2006-01-02T15:04:05.000000000Z"),
		Subject:          subject,
		Date:             date,
		MessageID:        messageID,
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

// writeFile writes data to dir/name by way of a temporary file and a rename.
func (st *store) writeFile(name string, data []byte) (err error) {
	f, err := os.CreateTemp(st.dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("sink: saving message: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
			err = fmt.Errorf("sink: saving message: %w", err)
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), filepath.Join(st.dir, name))
}
