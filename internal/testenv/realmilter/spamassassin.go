package realmilter

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// GTUBE is the Generic Test for Unsolicited Bulk Email: SpamAssassin's rule GTUBE
// (score 1000, /usr/share/spamassassin/20_body_tests.cf) and rspamd's reject
// pattern (https://rspamd.com/doc/gtube_patterns.html) match it.
const GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

// Spamd is a running SpamAssassin daemon.
type Spamd struct {
	// Addr is where it listens: "127.0.0.1:PORT".
	Addr string
	Proc *Proc
}

// spamdLocalCf keeps SpamAssassin to local tests (with spamd -L) and writes
// nothing outside its instance: no Bayes, no auto-learning.
const spamdLocalCf = `dns_available no
skip_rbl_checks 1
use_bayes 0
bayes_auto_learn 0
`

// StartSpamd starts spamd (Debian: spamd, spamassassin) on 127.0.0.1: local
// tests only (-L), no user configuration (-x), one child, the rules Debian ships
// in /usr/share/spamassassin (no sa-update) and a site configuration of its own:
// Debian's plugin list (/etc/spamassassin/*.pre) and spamdLocalCf. Run as root,
// spamd's child runs as nobody.
func StartSpamd(t T) *Spamd {
	t.Helper()
	bin := Need(t, "spamd", "spamd")
	rules := "/usr/share/spamassassin"
	if _, err := os.Stat(filepath.Join(rules, "20_body_tests.cf")); err != nil {
		Missing(t, "SpamAssassin's rules not found in "+rules+" (apt-get install spamassassin)")
	}
	dir := instanceDir(t, "spamd")
	site := filepath.Join(dir, "site")
	if err := os.Mkdir(site, 0o755); err != nil {
		t.Fatalf("realmilter: %v", err)
	}
	pres, _ := filepath.Glob("/etc/spamassassin/*.pre")
	for _, pre := range pres {
		if data, err := os.ReadFile(pre); err == nil {
			writeFile(t, filepath.Join(site, filepath.Base(pre)), string(data))
		}
	}
	writeFile(t, filepath.Join(site, "local.cf"), spamdLocalCf)
	p, port := start(t, startSpec{
		name: "spamd", dir: dir,
		setup: func(port int) []string {
			return []string{bin, "-L", "-x",
				"-i", "127.0.0.1:" + strconv.Itoa(port), "-A", "127.0.0.1",
				"-C", rules, "--siteconfigpath", site,
				"--max-children", "1", "--min-children", "1",
				"-H", dir, "-r", filepath.Join(dir, "spamd.pid"), "-s", "stderr"}
		},
	})
	return &Spamd{Addr: "127.0.0.1:" + strconv.Itoa(port), Proc: p}
}

// SpamassMilter configures spamass-milter (spamass-milter(8)).
type SpamassMilter struct {
	Spamd *Spamd
	// RejectScore, when not 0, rejects mail that scores at least this (-r).
	RejectScore int
	// NoModify leaves Subject, Content-Type and the body alone (-m): only the
	// X-Spam headers are added.
	NoModify bool
}

// StartSpamassMilter starts spamass-milter (Debian: spamass-milter) on
// 127.0.0.1, in the foreground, passing each message to c.Spamd through spamc.
func StartSpamassMilter(t T, c SpamassMilter) *Milter {
	t.Helper()
	bin := Need(t, "spamass-milter", "spamass-milter")
	Need(t, "spamc", "spamc")
	dir := instanceDir(t, "spamass-milter")
	host, port, _ := strings.Cut(c.Spamd.Addr, ":")
	p, mport := start(t, startSpec{
		name: "spamass-milter", dir: dir, libmilter: true,
		setup: func(mport int) []string {
			argv := []string{bin, "-p", "inet:" + strconv.Itoa(mport) + "@127.0.0.1",
				"-P", filepath.Join(dir, "spamass-milter.pid"), "-d", "misc"}
			if c.RejectScore != 0 {
				argv = append(argv, "-r", strconv.Itoa(c.RejectScore))
			}
			if c.NoModify {
				argv = append(argv, "-m")
			}
			return append(argv, "--", "-d", host, "-p", port)
		},
	})
	return newMilter(p, mport)
}
