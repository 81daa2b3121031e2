package realmilter

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Postfix configures a private Postfix instance that receives mail by SMTP on
// 127.0.0.1 and relays all of it to one SMTP server.
type Postfix struct {
	// Listeners are its smtpd services: each gets its own port on 127.0.0.1 and
	// its own smtpd_milters (a master.cf -o override), in this order.
	Listeners []PostfixListener
	// RelayTo is where every message goes: "127.0.0.1:PORT" (relayhost).
	RelayTo string
	// DefaultAction is milter_default_action; "" is Postfix's, tempfail.
	DefaultAction string
	// Hostname is myhostname (the milters' macro j); "" is "postfix.test".
	Hostname string
	// Main are more main.cf settings.
	Main map[string]string
}

// PostfixListener is one smtpd service of a Postfix instance.
type PostfixListener struct {
	// Milters is its smtpd_milters: milter addresses separated by commas or
	// spaces ("inet:127.0.0.1:PORT").
	Milters string
	// Options are more main.cf settings for this listener only (master.cf -o):
	// milter_default_action, milter_command_timeout ...
	Options map[string]string
}

// PostfixInstance is a running Postfix.
type PostfixInstance struct {
	// Addrs are its listeners' SMTP addresses, "127.0.0.1:PORT", in the order of
	// Postfix.Listeners.
	Addrs []string
	Proc  *Proc
	dir   string
}

// Maillog returns the instance's log (maillog_file).
func (p *PostfixInstance) Maillog() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	return string(b)
}

// postfixMasterCf are the instance's internal services, none chrooted; the smtpd
// listeners come first.
const postfixMasterCf = `pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// postfixNeed finds Postfix's master daemon and postfix command, and checks what
// a private instance needs: root (the master runs as root) and the postfix user.
func postfixNeed(t T) (postfix, master string) {
	t.Helper()
	postfix = Need(t, "postfix", "postfix")
	daemons := "/usr/lib/postfix/sbin"
	if out, err := exec.Command(filepath.Join(filepath.Dir(postfix), "postconf"), "-dh", "daemon_directory").Output(); err == nil {
		daemons = strings.TrimSpace(string(out))
	}
	master = filepath.Join(daemons, "master")
	if _, err := os.Stat(master); err != nil {
		Missing(t, "Postfix's master daemon not found: "+err.Error())
	}
	if os.Geteuid() != 0 {
		Missing(t, "a private Postfix instance needs root (its master runs as root)")
	}
	if _, err := user.Lookup("postfix"); err != nil {
		Missing(t, "no postfix user: "+err.Error())
	}
	return postfix, master
}

// PostfixVersion returns what Postfix gives milters as macro v: "Postfix 3.7.11"
// ($mail_name $mail_version).
func PostfixVersion(t T) string {
	t.Helper()
	postfix, _ := postfixNeed(t)
	out, err := exec.Command(filepath.Join(filepath.Dir(postfix), "postconf"), "-dh", "mail_name", "mail_version").Output()
	if err != nil {
		t.Fatalf("realmilter: postconf: %v", err)
	}
	return strings.Join(strings.Fields(string(out)), " ")
}

// StartPostfix starts a private Postfix (Debian: postfix, 3.7 in Debian 12):
// configuration, queue and log in its instance directory, its master in the
// foreground (master -d) as the test's process, only its smtpd listeners on TCP
// (127.0.0.1). Mail from 127.0.0.0/8 is relayed to c.RelayTo; bounces and notices
// are discarded.
func StartPostfix(t T, c Postfix) *PostfixInstance {
	t.Helper()
	_, master := postfixNeed(t)
	dir := instanceDir(t, "postfix")
	conf, queue, data := filepath.Join(dir, "conf"), filepath.Join(dir, "queue"), filepath.Join(dir, "data")
	for _, d := range []string{conf, queue, data} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("realmilter: %v", err)
		}
	}
	pf, _ := user.Lookup("postfix")
	uid, _ := strconv.Atoi(pf.Uid)
	if err := os.Chown(data, uid, -1); err != nil { // data_directory belongs to mail_owner
		t.Fatalf("realmilter: %v", err)
	}
	if c.Hostname == "" {
		c.Hostname = "postfix.test"
	}
	writeFile(t, filepath.Join(conf, "main.cf"), postfixMainCf(c, dir))
	postfixQueue(t, queue, uid)
	argv := []string{master, "-c", conf, "-d"}
	// A listener's port may be taken between freePort and the master's bind (a
	// client's ephemeral port): the master then exits, and starts again on
	// other ports, at most three times, as start does.
	var lastErr error
	for range 3 {
		inst := &PostfixInstance{dir: dir}
		for range c.Listeners {
			inst.Addrs = append(inst.Addrs, "127.0.0.1:"+strconv.Itoa(freePort(t)))
		}
		writeFile(t, filepath.Join(conf, "master.cf"), postfixListeners(c, inst.Addrs)+postfixMasterCf)
		p, err := spawn("postfix", dir, []string{"MAIL_CONFIG=" + conf}, []string{filepath.Join(dir, "maillog")}, argv...)
		if err != nil {
			t.Fatalf("realmilter: starting Postfix: %v", err)
		}
		inst.Proc = p
		t.Cleanup(func() { p.stopChecked(t, argv) })
		if lastErr = p.waitPostfixReady(inst.Addrs); lastErr == nil {
			return inst
		}
		lastErr = fmt.Errorf("%w\n%s", lastErr, p.Output())
		p.Stop()
		if !errors.Is(lastErr, errExited) {
			break
		}
	}
	t.Fatalf("realmilter: Postfix did not start: %v", lastErr)
	return nil
}

// postfixListeners writes master.cf's smtpd services: listener i of c on
// addrs[i].
func postfixListeners(c Postfix, addrs []string) string {
	var b strings.Builder
	for i, l := range c.Listeners {
		fmt.Fprintf(&b, "%s inet n - n - - smtpd\n  -o smtpd_milters=%s\n", addrs[i], strings.ReplaceAll(l.Milters, " ", ","))
		keys := make([]string, 0, len(l.Options))
		for k := range l.Options {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "  -o %s=%s\n", k, l.Options[k])
		}
	}
	return b.String()
}

// waitPostfixReady waits until the master logged that it started, which it
// does once it has bound every listener (it exits when a bind fails), and every
// addr takes connections. It returns an error wrapping errExited when the
// master exited first. The log line, not a connection alone, tells: another
// process may hold the port the master could not bind.
func (p *Proc) waitPostfixReady(addrs []string) error {
	if err := p.waitLog(filepath.Join(p.Dir, "maillog"), "master["+strconv.Itoa(p.PID())+"]: daemon started"); err != nil {
		return err
	}
	for _, a := range addrs {
		if err := p.waitListening(a); err != nil {
			return err
		}
	}
	return nil
}

// postfixQueue makes the queue's directories, owned and protected as "postfix
// check" (post-install create-missing) makes them, which takes seconds more.
func postfixQueue(t T, queue string, uid int) {
	t.Helper()
	gid := -1
	if g, err := user.LookupGroup("postdrop"); err == nil {
		gid, _ = strconv.Atoi(g.Gid)
	}
	for _, d := range []struct {
		name     string
		uid, gid int
		mode     os.FileMode
	}{
		{"active", uid, 0, 0o700}, {"bounce", uid, 0, 0o700}, {"corrupt", uid, 0, 0o700},
		{"defer", uid, 0, 0o700}, {"deferred", uid, 0, 0o700}, {"flush", uid, 0, 0o700},
		{"hold", uid, 0, 0o700}, {"incoming", uid, 0, 0o700}, {"private", uid, 0, 0o700},
		{"saved", uid, 0, 0o700}, {"trace", uid, 0, 0o700}, {"pid", 0, 0, 0o755},
		{"maildrop", uid, gid, 0o730}, {"public", uid, gid, 0o710},
	} {
		p := filepath.Join(queue, d.name)
		if err := os.Mkdir(p, d.mode); err != nil {
			t.Fatalf("realmilter: %v", err)
		}
		if err := os.Chown(p, d.uid, d.gid); err != nil {
			t.Fatalf("realmilter: %v", err)
		}
		if err := os.Chmod(p, d.mode); err != nil { // not the umask's
			t.Fatalf("realmilter: %v", err)
		}
	}
}

// postfixMainCf writes main.cf.
func postfixMainCf(c Postfix, dir string) string {
	set := map[string]string{
		"compatibility_level": "3.6",
		"config_directory":    filepath.Join(dir, "conf"),
		"queue_directory":     filepath.Join(dir, "queue"),
		"data_directory":      filepath.Join(dir, "data"),
		"mail_owner":          "postfix",
		"inet_interfaces":     "127.0.0.1",
		"inet_protocols":      "ipv4",
		"myhostname":          c.Hostname,
		"mydomain":            c.Hostname,
		"myorigin":            "$myhostname",
		"mydestination":       "",
		"mynetworks":          "127.0.0.0/8",
		"relayhost":           "[" + strings.Replace(c.RelayTo, ":", "]:", 1),
		"default_transport":   "smtp",
		// Bounces and notices go nowhere, never to the relay under test.
		"transport_maps":                  "inline:{postfix.test=discard:}",
		"notify_classes":                  "",
		"alias_maps":                      "",
		"alias_database":                  "",
		"biff":                            "no",
		"smtp_tls_security_level":         "none",
		"smtpd_tls_security_level":        "none",
		"smtp_connection_cache_on_demand": "no",
		"smtp_connect_timeout":            "5s",
		"maillog_file":                    filepath.Join(dir, "maillog"),
		"maillog_file_prefixes":           dir,
		"syslog_name":                     "postfix-realmilter",
		"queue_run_delay":                 "1s",
		"minimal_backoff_time":            "1s",
		"maximal_backoff_time":            "2s",
		"maximal_queue_lifetime":          "0",
		"bounce_queue_lifetime":           "0",
		"smtpd_relay_restrictions":        "permit_mynetworks, reject",
		"milter_default_action":           "tempfail",
	}
	if c.DefaultAction != "" {
		set["milter_default_action"] = c.DefaultAction
	}
	for k, v := range c.Main {
		set[k] = v
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, set[k])
	}
	return b.String()
}
