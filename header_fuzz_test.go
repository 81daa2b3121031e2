package smtpd

import "testing"

// FuzzHeaderWatch: headerWatch finds the same "TLS-Required: No" and the same end
// of the header section whether the message comes as DATA lines or as BDAT pieces
// cut anywhere, in bounded memory.
func FuzzHeaderWatch(f *testing.F) {
	f.Add([]byte("TLS-Required: No\r\nSubject: x\r\n\r\nbody\r\n"), uint8(3))
	f.Add([]byte("TLS-Required:\r\n  no\r\n\r\n"), uint8(1))
	f.Add([]byte("Subject: x\r\n\r\nTLS-Required: No\r\n"), uint8(7))
	f.Fuzz(func(t *testing.T, msg []byte, cut uint8) {
		whole := watchLines(msg)
		pieces := watchPieces(t, msg, int(cut)%17+1)
		if whole != pieces {
			t.Fatalf("lines %+v, pieces of %d %+v", whole, int(cut)%17+1, pieces)
		}
	})
}

type headerSeen struct{ done, tlsNo bool }

// watchLines feeds msg as DATA does: whole lines.
func watchLines(msg []byte) headerSeen {
	var h headerWatch
	for len(msg) > 0 {
		i := 0
		for i < len(msg) && msg[i] != '\n' {
			i++
		}
		if i == len(msg) {
			break // no line end: DATA has no such line
		}
		h.line(parseDataLine(msg[:i+1], CRLFEnsure))
		msg = msg[i+1:]
	}
	return headerSeen{h.done, h.tlsRequiredNo}
}

// watchPieces feeds msg as BDAT does: pieces of at most n bytes, cut after an LF.
func watchPieces(t *testing.T, msg []byte, n int) headerSeen {
	var h headerWatch
	tr := &transfer{}
	end := len(msg)
	for end > 0 && msg[end-1] != '\n' {
		end-- // what follows the last LF: no complete line
	}
	msg = msg[:end]
	for len(msg) > 0 {
		p := msg[:min(n, len(msg))]
		for i, c := range p {
			if c == '\n' {
				p = p[:i+1]
				break
			}
		}
		h.line(tr.chunkPiece(p, CRLFEnsure))
		if len(h.head) > maxWatchedLine || cap(h.value) > 2*maxWatchedLine {
			t.Fatalf("unbounded: head %d value %d", len(h.head), cap(h.value))
		}
		msg = msg[len(p):]
	}
	if d, ok := tr.chunkEnd(); ok {
		h.line(d)
	}
	return headerSeen{h.done, h.tlsRequiredNo}
}
