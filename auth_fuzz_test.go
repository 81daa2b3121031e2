package smtpd

import (
	"strings"
	"testing"
)

// FuzzXOAuth2 holds parseXOAuth2 to its contract: a user and a token, neither
// empty nor with control characters, taken only from "user=" and "auth=Bearer ".
func FuzzXOAuth2(f *testing.F) {
	f.Add([]byte("user=bob@example.org\x01auth=Bearer tok\x01\x01"))
	f.Add([]byte("user=\x01auth=Bearer \x01\x01"))
	f.Add([]byte("auth=bearer t\x01user=u\x01\x01"))
	f.Add([]byte("user=a=b\x01auth=Bearer c=d\x01\x01"))
	f.Fuzz(func(t *testing.T, resp []byte) {
		user, token, ok := parseXOAuth2(resp)
		if !ok {
			return
		}
		if user == "" || token == "" || hasControl(user) || hasControl(token) {
			t.Fatalf("accepted user %q token %q", user, token)
		}
		if !strings.Contains(string(resp), "user="+user) || !strings.Contains(string(resp), token) {
			t.Fatalf("user %q token %q not taken from %q", user, token, resp)
		}
	})
}

// FuzzLoginServer: the LOGIN exchange asks for the user, then the password, and
// hands exactly those to its check, once, whatever the responses.
func FuzzLoginServer(f *testing.F) {
	f.Add(true, []byte("alice"), []byte("secret"), []byte("more"))
	f.Add(false, []byte(""), []byte(""), []byte(""))
	f.Fuzz(func(t *testing.T, initial bool, user, pass, extra []byte) {
		var got []string
		l := &loginServer{check: func(u, p string) error { got = append(got, u, p); return nil }}
		var first []byte
		if initial {
			first = user
		}
		ch, done, err := l.Next(first)
		if !initial {
			if string(ch) != "Username:" || done || err != nil {
				t.Fatalf("first prompt %q %v %v", ch, done, err)
			}
			ch, done, err = l.Next(user)
		}
		if string(ch) != "Password:" || done || err != nil {
			t.Fatalf("second prompt %q %v %v", ch, done, err)
		}
		if _, done, err = l.Next(pass); !done || err != nil {
			t.Fatalf("end %v %v", done, err)
		}
		if len(got) != 2 || got[0] != string(user) || got[1] != string(pass) {
			t.Fatalf("check got %q", got)
		}
		if _, _, err = l.Next(extra); err == nil {
			t.Fatal("a response after the end was taken")
		}
	})
}
