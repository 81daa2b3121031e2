package mailauth

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzHeader: the header parser and the scanner that finds the header's end never
// panic, agree whatever the pieces, and keep every field's text.
func FuzzHeader(f *testing.F) {
	for _, s := range []string{
		"From: a\r\nTo: b\r\n\tc\r\n\r\nbody", "\r\n", "\n\n", " lead\r\nX: y\r\n", "no colon\r\n\r\n",
		"A: b\rc\r\n\r\n", "X: y\r\r\n\r\n", "",
	} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, msg []byte, step uint8) {
		var whole headerScanner
		n, end := whole.scan(msg)
		var pieces headerScanner
		k, pend := 0, false
		for i := 0; i < len(msg) && !pend; {
			j := min(len(msg), i+int(step)+1)
			m, e := pieces.scan(msg[i:j])
			k, pend, i = i+m, e, j
		}
		if end != pend || end && k != n {
			t.Fatalf("whole: %d %v, in pieces of %d: %d %v", n, end, int(step)+1, k, pend)
		}
		fields := parseHeader(msg[:n])
		var total int
		for _, fl := range fields {
			if !strings.HasSuffix(fl.raw, "\r\n") || strings.Count(fl.raw, "\n") != strings.Count(fl.raw, "\r\n") {
				t.Fatalf("field %q", fl.raw)
			}
			total += len(strings.ReplaceAll(fl.raw, "\r", ""))
		}
		if plain := len(bytes.ReplaceAll(msg[:n], []byte("\r"), nil)); total > plain+1 {
			t.Fatalf("fields hold %d octets, the header %d", total, plain)
		}
	})
}
