package realmilter

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// Rspamd configures rspamd in milter mode.
type Rspamd struct {
	// DNS is rspamd's only DNS server: names it does not serve get REFUSED,
	// and no name outside the test resolves, so nothing (map download, update,
	// RBL ...) can reach beyond loopback.
	DNS *NSD
}

// rspamdOffline are the modules that fetch maps over HTTP or ask outside
// services (rbl also runs the surbl and emails rules), and the mail
// authentication ones (the receiver's own job): disabled (local.d/<module>.conf:
// enabled = false). With DNS pointed at the test's NSD they could not reach
// anything anyway; off, they do not try.
var rspamdOffline = []string{
	"rbl", "surbl", "emails", "fuzzy_check", "dcc", "asn", "phishing", "multimap",
	"mime_types", "mid", "whitelist", "rspamd_update", "url_redirector",
	"spf", "dkim", "dmarc", "arc", "mx_check", "hfilter",
}

// rspamdMilterHeaders is local.d/milter_headers.conf: the headers added to every
// message, local senders (127.0.0.1) included, which the module skips by default.
const rspamdMilterHeaders = `use = ["x-spamd-result", "x-rspamd-server", "x-spam-status"];
skip_local = false;
skip_authenticated = false;
routines {
  x-rspamd-server {
    hostname = "rspamd.test";
  }
}
`

// rspamdCache is where rspamd keeps its compiled Hyperscan databases (its TLD
// list and regular expressions): the user's cache directory
// ($XDG_CACHE_HOME/smtpd-realmilter/rspamd-hs, as Go's build cache), so that
// only the first start on a machine compiles them (15 s and more), else the
// instance's own db directory. rspamd checks each cached database and
// recompiles one that does not fit its version or rules.
func rspamdCache(instance string) string {
	base, err := os.UserCacheDir()
	if err != nil {
		return instance
	}
	dir := filepath.Join(base, "smtpd-realmilter", "rspamd-hs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return instance
	}
	return dir
}

// StartRspamd starts rspamd (Debian: rspamd) with Debian's configuration
// (/etc/rspamd/rspamd.conf) and local.d/override.d files of the test's
// (--var LOCAL_CONFDIR): its normal, controller and proxy workers on 127.0.0.1,
// the proxy in milter mode (Debian's worker-proxy.inc) scanning with the normal
// worker; its state and logs in its instance directory, its compiled-regexp
// cache in rspamdCache. The returned Milter is the proxy.
func StartRspamd(t T, c Rspamd) *Milter {
	t.Helper()
	bin := Need(t, "rspamd", "rspamd")
	if _, err := os.Stat("/etc/rspamd/rspamd.conf"); err != nil {
		Missing(t, "/etc/rspamd/rspamd.conf not found (apt-get install rspamd)")
	}
	dir := instanceDir(t, "rspamd")
	local := filepath.Join(dir, "local")
	var dirs []string
	for _, d := range []string{"local", "local/local.d", "local/override.d", "db", "run", "log"} {
		dirs = append(dirs, filepath.Join(dir, d))
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("realmilter: %v", err)
		}
	}
	for _, m := range rspamdOffline {
		writeFile(t, filepath.Join(local, "local.d", m+".conf"), "enabled = false;\n")
	}
	writeFile(t, filepath.Join(local, "local.d", "milter_headers.conf"), rspamdMilterHeaders)
	writeFile(t, filepath.Join(local, "local.d", "options.inc"), fmt.Sprintf(`dns {
  nameserver = ["%s"];
  timeout = 1s;
  retransmits = 1;
}
hs_cache_dir = "%s";
`, c.DNS.Addr, rspamdCache(filepath.Join(dir, "db"))))
	log := filepath.Join(dir, "log", "rspamd.log")
	args := []string{bin, "-f", "-c", "/etc/rspamd/rspamd.conf",
		"--var", "LOCAL_CONFDIR=" + local,
		"--var", "DBDIR=" + filepath.Join(dir, "db"),
		"--var", "RUNDIR=" + filepath.Join(dir, "run"),
		"--var", "LOGDIR=" + filepath.Join(dir, "log")}
	if os.Geteuid() == 0 {
		// As root, rspamd wants a user for its workers: root's own, allowed by -i.
		u, err := user.Current()
		if err != nil {
			t.Fatalf("realmilter: %v", err)
		}
		g, err := user.LookupGroupId(u.Gid)
		if err != nil {
			t.Fatalf("realmilter: %v", err)
		}
		args = append(args, "-u", u.Username, "-g", g.Name, "-i")
	}
	var normal, controller int
	p, port := start(t, startSpec{
		name: "rspamd", dir: dir, logs: []string{log},
		// The proxy scans with the normal worker: both must be up.
		ready: func(p *Proc, _ int) error {
			return p.waitListening("127.0.0.1:" + strconv.Itoa(normal))
		},
		setup: func(port int) []string {
			normal, controller = freePort(t), freePort(t)
			writeFile(t, filepath.Join(local, "override.d", "worker-normal.inc"),
				fmt.Sprintf("bind_socket = \"127.0.0.1:%d\";\ncount = 1;\n", normal))
			writeFile(t, filepath.Join(local, "override.d", "worker-controller.inc"),
				fmt.Sprintf("bind_socket = \"127.0.0.1:%d\";\ncount = 1;\n", controller))
			writeFile(t, filepath.Join(local, "override.d", "worker-proxy.inc"), fmt.Sprintf(`bind_socket = "127.0.0.1:%d";
milter = yes;
timeout = 120s;
count = 1;
upstream "local" {
  default = yes;
  hosts = "127.0.0.1:%d";
}
discard_on_reject = false;
quarantine_on_reject = false;
reject_message = "Spam message rejected";
`, port, normal))
			return args
		},
	})
	return newMilter(p, port)
}
