package main

import (
	"encoding/json"
	"fmt"
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

// record is the content of <id>.json.
type record struct {
	ID               string   `json:"id"`
	From             string   `json:"from"`
	To               []string `json:"to"`
	Helo             string   `json:"helo"`
	RemoteIP         string   `json:"remote_ip"`
	EncodingBody     string   `json:"encoding_body"`
	EncodingUTF8     string   `json:"encoding_utf8"`
	AuthorizationID  string   `json:"authorization_id"`
	AuthenticationID string   `json:"authentication_id"`
	Encrypted        bool     `json:"encrypted"`
	Bytesize         int      `json:"bytesize"`
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

// save writes the message of s under id.
func (st *store) save(id string, s *smtpd.Session) error {
	if err := st.writeFile(id+".eml", s.Message.Data); err != nil {
		return err
	}
	js, err := json.Marshal(record{
		ID:               id,
		From:             s.Envelope.From,
		To:               s.Envelope.To,
		Helo:             s.Helo,
		RemoteIP:         s.RemoteIP,
		EncodingBody:     s.Envelope.EncodingBody,
		EncodingUTF8:     s.Envelope.EncodingUTF8,
		AuthorizationID:  s.AuthorizationID,
		AuthenticationID: s.AuthenticationID,
		Encrypted:        s.IsEncrypted(),
		Bytesize:         s.Message.Bytesize,
	})
	if err == nil {
		err = st.writeFile(id+".json", append(js, '\n'))
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
