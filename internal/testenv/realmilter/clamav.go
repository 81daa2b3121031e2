package realmilter

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// eicarB64 is the EICAR anti-virus test file, base64-encoded so that this
// source file is not itself "infected" in the eyes of a scanner. It is the
// 68-byte string published by EICAR
// (https://www.eicar.org/download-anti-malware-testfile/), MD5
// 44d88612fea8a8f36de82e1278abb02f.
const eicarB64 = "WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNULUZJTEUhJEgrSCo="

// EICAR returns the EICAR test file.
func EICAR() []byte {
	b, err := base64.StdEncoding.DecodeString(eicarB64)
	if err != nil {
		panic(err)
	}
	return b
}

// EICARSignature is the name clamd reports for the EICAR file: the one
// signature of the database StartClamd writes (clamd adds ".UNOFFICIAL" to
// names from databases not signed by Cisco-Talos).
const EICARSignature = "Local.Test.EICAR"

// eicarNDB is a ClamAV body-based signature database (signatures.md, "Extended
// signature format": Name:TargetType:Offset:HexSignature) holding one signature,
// the EICAR file's bytes in hex, matched anywhere (*) in any file (target 0).
// No downloaded database (freshclam) is used: the tests make no outside
// connections, and this one signature is all they need.
func eicarNDB() string {
	return fmt.Sprintf("%s:0:*:%s\n", EICARSignature, hex.EncodeToString(EICAR()))
}

// Clamd is a running ClamAV daemon.
type Clamd struct {
	// Addr is where it listens: "127.0.0.1:PORT".
	Addr string
	Proc *Proc
}

// StartClamd starts clamd (Debian: clamav-daemon) on 127.0.0.1 with a signature
// database of one signature, EICAR's (see eicarNDB), as the current user.
func StartClamd(t T) *Clamd {
	t.Helper()
	bin := Need(t, "clamd", "clamav-daemon")
	dir := instanceDir(t, "clamd")
	db := filepath.Join(dir, "db")
	if err := os.Mkdir(db, 0o755); err != nil {
		t.Fatalf("realmilter: %v", err)
	}
	writeFile(t, filepath.Join(db, "eicar.ndb"), eicarNDB())
	conf := filepath.Join(dir, "clamd.conf")
	log := filepath.Join(dir, "clamd.log")
	p, port := start(t, startSpec{
		name: "clamd", dir: dir, logs: []string{log},
		setup: func(port int) []string {
			writeFile(t, conf, strings.Join([]string{
				"Foreground yes",
				"DatabaseDirectory " + db,
				"TCPAddr 127.0.0.1",
				"TCPSocket " + strconv.Itoa(port),
				"PidFile " + filepath.Join(dir, "clamd.pid"),
				"TemporaryDirectory " + dir,
				"LogFile " + log,
				"LogTime yes",
			}, "\n")+"\n")
			return []string{bin, "-c", conf}
		},
	})
	return &Clamd{Addr: "127.0.0.1:" + strconv.Itoa(port), Proc: p}
}

// ClamavMilter configures clamav-milter (clamav-milter.conf(5)).
type ClamavMilter struct {
	Clamd *Clamd
	// OnInfected is "Reject", "Quarantine", "Blackhole", "Defer" or "Accept".
	OnInfected string
	// AddHeader is "Replace", "Add" or "" (no X-Virus headers).
	AddHeader string
}

// StartClamavMilter starts clamav-milter (Debian: clamav-milter) on 127.0.0.1 in
// the foreground, scanning with c.Clamd. Its X-Virus-Scanned header names
// "clamav.test" as the host.
func StartClamavMilter(t T, c ClamavMilter) *Milter {
	t.Helper()
	bin := Need(t, "clamav-milter", "clamav-milter")
	dir := instanceDir(t, "clamav-milter")
	conf := filepath.Join(dir, "clamav-milter.conf")
	log := filepath.Join(dir, "clamav-milter.log")
	lines := []string{
		"Foreground yes",
		"PidFile " + filepath.Join(dir, "clamav-milter.pid"),
		"TemporaryDirectory " + dir,
		"ClamdSocket tcp:" + c.Clamd.Addr,
		"OnClean Accept",
		"OnInfected " + c.OnInfected,
		"OnFail Defer",
		"ReportHostname clamav.test",
		"LogFile " + log,
		"LogInfected Basic",
		"LogClean Basic",
		"LogVerbose yes", // for the probe line ready waits for
	}
	if c.AddHeader != "" {
		lines = append(lines, "AddHeader "+c.AddHeader)
	}
	p, port := start(t, startSpec{
		name: "clamav-milter", dir: dir, logs: []string{log}, libmilter: true,
		// clamav-milter accepts milter connections before it has probed clamd;
		// until then every message fails (OnFail).
		ready: func(p *Proc, _ int) error {
			return p.waitLog(log, "Probe for slot 1 returned: success")
		},
		setup: func(port int) []string {
			writeFile(t, conf, strings.Join(append(lines, fmt.Sprintf("MilterSocket inet:%d@127.0.0.1", port)), "\n")+"\n")
			return []string{bin, "-c", conf}
		},
	})
	return newMilter(p, port)
}
