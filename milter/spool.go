package milter

import (
	"io"
	"os"
	"runtime"
)

// spoolMemory is how much of a streamed message the spool keeps in memory before
// it moves to a file.
const spoolMemory = 64 << 10

// spool keeps a streamed message while its milters decide, as Postfix's queue
// file does: in memory up to spoolMemory, then in a temporary file. The file is
// unlinked as soon as it is made (where the system allows it, else at Close), so
// no outcome — a crash included — leaves one behind. The server's MaxMessageSize
// bounds what is written (its reader fails past it).
type spool struct {
	dir  string
	mem  []byte
	f    *os.File
	name string // the file's name while it still has one (not unlinked)
	size int64
}

// Write appends p.
func (sp *spool) Write(p []byte) (int, error) {
	if sp.f == nil && len(sp.mem)+len(p) <= spoolMemory {
		sp.mem = append(sp.mem, p...)
		sp.size += int64(len(p))
		return len(p), nil
	}
	if sp.f == nil {
		if err := sp.toFile(); err != nil {
			return 0, err
		}
	}
	n, err := sp.f.Write(p)
	sp.size += int64(n)
	return n, err
}

// toFile moves what is in memory to a new temporary file.
func (sp *spool) toFile() error {
	f, err := os.CreateTemp(sp.dir, "smtpd-milter-*")
	if err != nil {
		return err
	}
	sp.f = f
	if runtime.GOOS == "windows" || os.Remove(f.Name()) != nil {
		sp.name = f.Name()
	}
	if _, err := f.Write(sp.mem); err != nil {
		return err
	}
	sp.mem = nil
	return nil
}

// ReadAt reads what was written, from off.
func (sp *spool) ReadAt(p []byte, off int64) (int, error) {
	if sp.f != nil {
		return sp.f.ReadAt(p, off)
	}
	if off >= int64(len(sp.mem)) {
		return 0, io.EOF
	}
	n := copy(p, sp.mem[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Close drops the spool: the file closed (and removed if it still had a name).
func (sp *spool) Close() error {
	sp.mem = nil
	if sp.f == nil {
		return nil
	}
	err := sp.f.Close()
	if sp.name != "" {
		if rerr := os.Remove(sp.name); err == nil {
			err = rerr
		}
	}
	sp.f, sp.name = nil, ""
	return err
}
