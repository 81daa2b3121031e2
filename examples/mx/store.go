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
	"strings"
	"sync"
	"time"

	"github.com/midismtp/smtpd"
)

// store writes messages into a folder: <id>.eml, then <id>.json, each by way of
// a hidden temporary file in the folder and a rename, so that a reader never
// sees a partial file and a .json file means its .eml is complete (the design
// of examples/sink's store; no fsync: the files survive a crash of mx, not of the
// machine).
type store struct {
	dir string
}

// record is the content of <id>.json: examples/sink's fields, with the same
// names, and mx's own (auth_results, quarantine, quarantine_reason).
type record struct {
	ID               string   `json:"id"`         // the file name: smtpd's Message.ID, "<session_id>-<n>"
	SessionID        string   `json:"session_id"` // smtpd Session.ID, as in the log's session attribute
	From             string   `json:"from"`       // the envelope sender, as the milters left it
	To               []string `json:"to"`         // the recipients, as the milters left them
	Helo             string   `json:"helo"`
	RemoteIP         string   `json:"remote_ip"`   // the client (after PROXY/XCLIENT): the address checked
	RemotePort       int      `json:"remote_port"` // its port
	ProxyIP          string   `json:"proxy_ip"`    // the proxy that sent a PROXY header; "" when direct
	EncodingBody     string   `json:"encoding_body"`
	EncodingUTF8     string   `json:"encoding_utf8"`
	AuthorizationID  string   `json:"authorization_id"`
	AuthenticationID string   `json:"authentication_id"`
	AuthMechanism    string   `json:"auth_mechanism"`
	Encrypted        bool     `json:"encrypted"`
	RequireTLS       bool     `json:"require_tls"`
	TLSRequiredNo    bool     `json:"tls_required_no"`
	Bytesize         int      `json:"bytesize"`    // the size of the .eml: our field, the message, the milters' changes
	ReceivedAt       string   `json:"received_at"` // when the message was complete: RFC 3339, UTC, 9 decimals
	Subject          string   `json:"subject"`     // decoded (RFC 2047); "" when absent or the header does not parse
	Date             string   `json:"date"`
	MessageID        string   `json:"message_id"`

	Size          int            `json:"size"` // MAIL FROM SIZE=; 0 when not given
	DSNRet        string         `json:"dsn_ret,omitempty"`
	DSNEnvID      string         `json:"dsn_envid,omitempty"`
	DSNRecipients []dsnRecipient `json:"dsn_recipients,omitempty"`

	AuthResults      string `json:"auth_results"`                // our Authentication-Results field's value, unfolded
	Quarantine       bool   `json:"quarantine"`                  // DMARC or a milter asked for quarantine
	QuarantineReason string `json:"quarantine_reason,omitempty"` // who asked, and why ("; " between several)
}

// dsnRecipient is the DSN part of one recipient in the .json.
type dsnRecipient struct {
	Notify []string `json:"notify,omitempty"`
	ORcpt  string   `json:"orcpt,omitempty"`
}

// headBytes is how much of a stored message is read for its header fields.
const headBytes = 64 << 10

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

// checkFree refuses an id whose files exist already (an earlier run's), so
// that nothing is overwritten: the message is answered 451 and retried.
func (st *store) checkFree(id string) error {
	for _, name := range []string{id + ".eml", id + ".json"} {
		switch _, err := os.Lstat(filepath.Join(st.dir, name)); {
		case err == nil:
			return fmt.Errorf("mx: saving message: %s exists already in %s", name, st.dir)
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("mx: saving message: %w", err)
		}
	}
	return nil
}

// spoolMemory is how much of a message a spool keeps in memory before it
// spills into a file (as milter.Wrap's spool): most mail is smaller, and costs
// no file then.
const spoolMemory = 64 << 10

var spoolBuffers = sync.Pool{New: func() any { b := make([]byte, spoolMemory); return &b }}

// spooled is a message kept until its end gives the verdict: its first bytes in
// memory, the rest (if any) in a hidden temporary file of the folder.
type spooled struct {
	buf  *[]byte
	n    int      // bytes of buf used
	file *os.File // nil when it all fitted in buf
}

// spool keeps the message r gives until it ends. The caller must call release.
// A read error (too big, the client gone) leaves nothing behind: it is the
// stream's, and the server's reply.
func (st *store) spool(r io.Reader) (*spooled, error) {
	sp := &spooled{buf: spoolBuffers.Get().(*[]byte)}
	var err error
	for sp.n < len(*sp.buf) && err == nil {
		var m int
		m, err = r.Read((*sp.buf)[sp.n:])
		sp.n += m
	}
	switch {
	case errors.Is(err, io.EOF):
		return sp, nil // all in memory
	case err != nil:
		sp.release()
		return nil, err
	}
	if sp.file, err = os.CreateTemp(st.dir, ".spool-*"); err != nil {
		sp.release()
		return nil, fmt.Errorf("mx: spooling message: %w", err)
	}
	if _, err = io.Copy(sp.file, r); err == nil {
		_, err = sp.file.Seek(0, io.SeekStart)
	}
	if err != nil {
		sp.release()
		return nil, err
	}
	return sp, nil
}

// WriteTo writes the message to w: a file spool is copied in the kernel
// (copy_file_range) when w is a file.
func (sp *spooled) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write((*sp.buf)[:sp.n])
	if err != nil || sp.file == nil {
		return int64(n), err
	}
	m, err := io.Copy(w, sp.file)
	return int64(n) + m, err
}

// release gives the buffer back and removes the file.
func (sp *spooled) release() {
	if sp.file != nil {
		sp.file.Close()
		os.Remove(sp.file.Name())
	}
	spoolBuffers.Put(sp.buf)
}

// save stores a message under id: the .eml is field and then msg, the .json
// describes it with s's envelope and session.
func (st *store) save(id string, s *smtpd.Session, field string, msg io.WriterTo, reasons []string) error {
	size, head, err := st.writeEML(id+".eml", field, msg)
	if err != nil {
		return err
	}
	subject, date, messageID := headerFields(head)
	rec := recordOf(s)
	rec.ID, rec.Bytesize, rec.ReceivedAt = id, int(size), time.Now().UTC().Format("2006-01-02T15:04:05.000000000Z")
	rec.Subject, rec.Date, rec.MessageID = subject, date, messageID
	rec.AuthResults = fieldValue(field)
	rec.Quarantine, rec.QuarantineReason = len(reasons) > 0, strings.Join(reasons, "; ")
	var js bytes.Buffer
	enc := json.NewEncoder(&js)
	enc.SetEscapeHTML(false) // message_id "<a@b>" stays readable
	if err = enc.Encode(rec); err == nil {
		err = st.writeFile(id+".json", func(f *os.File) error { _, err := f.Write(js.Bytes()); return err })
	}
	if err != nil {
		os.Remove(filepath.Join(st.dir, id+".eml"))
		return fmt.Errorf("mx: saving message: %w", err)
	}
	return nil
}

// writeEML writes field then msg to name, and returns the file's size and its
// first headBytes bytes.
func (st *store) writeEML(name, field string, msg io.WriterTo) (size int64, head []byte, err error) {
	err = st.writeFile(name, func(f *os.File) error {
		if _, err := f.WriteString(field); err != nil {
			return err
		}
		n, err := msg.WriteTo(f)
		if err != nil {
			return err
		}
		size = int64(len(field)) + n
		head = make([]byte, min(size, headBytes))
		if _, err := f.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("mx: saving message: %w", err)
	}
	return size, head, nil
}

// writeFile makes dir/name with fill, by way of a temporary file and a rename;
// a failing fill leaves nothing behind.
func (st *store) writeFile(name string, fill func(*os.File) error) error {
	f, err := os.CreateTemp(st.dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	err = fill(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(st.dir, name))
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// recordOf fills the .json's session and envelope fields from s.
func recordOf(s *smtpd.Session) record {
	var dsn []dsnRecipient
	for _, d := range s.Envelope.DSNRecipients {
		dsn = append(dsn, dsnRecipient{Notify: d.Notify, ORcpt: d.ORcpt})
	}
	return record{
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
		Size:             s.Envelope.Size,
		DSNRet:           s.Envelope.DSNRet,
		DSNEnvID:         s.Envelope.DSNEnvID,
		DSNRecipients:    dsn,
	}
}

// headerFields returns the decoded Subject and the Date and Message-ID of the
// message whose start is head; "" for each when absent or when the header
// section does not parse.
func headerFields(head []byte) (subject, date, messageID string) {
	m, err := mail.ReadMessage(bytes.NewReader(head))
	if err != nil {
		return "", "", ""
	}
	subject = m.Header.Get("Subject")
	if dec, err := new(mime.WordDecoder).DecodeHeader(subject); err == nil {
		subject = dec
	}
	return subject, m.Header.Get("Date"), m.Header.Get("Message-Id")
}

// fieldValue returns a header field's value on one line, without the name and
// the final CRLF: each fold (CRLF and the white space after it) becomes one
// space.
func fieldValue(field string) string {
	_, v, _ := strings.Cut(field, ":")
	v = strings.TrimSuffix(v, "\r\n")
	for _, fold := range []string{"\r\n\t", "\r\n "} {
		v = strings.ReplaceAll(v, fold, " ")
	}
	return strings.TrimSpace(v)
}
