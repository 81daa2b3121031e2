package realmilter

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Zone is a DNS zone NSD serves: its name and its records in zone-file syntax,
// names relative to the zone ("sel._domainkey IN TXT ...").
type Zone struct {
	Name    string
	Records []string
}

// TXT returns a TXT record for name with value split into the 255-byte strings
// a TXT record is made of (RFC 1035 §3.3.14; a DKIM key is longer).
func TXT(name, value string) string {
	var parts []string
	for len(value) > 255 {
		parts = append(parts, value[:255])
		value = value[255:]
	}
	parts = append(parts, value)
	for i, p := range parts {
		parts[i] = `"` + strings.ReplaceAll(strings.ReplaceAll(p, `\`, `\\`), `"`, `\"`) + `"`
	}
	return name + " IN TXT ( " + strings.Join(parts, " ") + " )"
}

// NSD is a running authoritative DNS server, the only DNS server of every
// program this package starts.
type NSD struct {
	// Addr is where it answers, UDP and TCP: "127.0.0.1:PORT".
	Addr string
	Proc *Proc
}

// Port is the port Addr names.
func (n *NSD) Port() int {
	_, p, _ := net.SplitHostPort(n.Addr)
	port, _ := strconv.Atoi(p)
	return port
}

// StartNSD starts NSD (Debian: nsd) serving zones on 127.0.0.1. It runs as the
// current user (username ""), without chroot, database or remote control: its
// state files are in its instance directory. Names outside its zones get
// REFUSED, so a program pointed at it asks nothing of the outside world.
func StartNSD(t T, zones ...Zone) *NSD {
	t.Helper()
	bin := Need(t, "nsd", "nsd")
	dir := instanceDir(t, "nsd")
	var zoneConf strings.Builder
	for _, z := range zones {
		file := strings.TrimSuffix(z.Name, ".") + ".zone"
		writeFile(t, filepath.Join(dir, file), zoneFile(z))
		fmt.Fprintf(&zoneConf, "zone:\n  name: %q\n  zonefile: %q\n", z.Name, file)
	}
	log := filepath.Join(dir, "nsd.log")
	p, port := start(t, startSpec{
		name: "nsd", dir: dir, logs: []string{log},
		setup: func(port int) []string {
			conf := filepath.Join(dir, "nsd.conf")
			writeFile(t, conf, fmt.Sprintf(`server:
  ip-address: 127.0.0.1@%d
  do-ip4: yes
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: %q
  database: ""
  zonelistfile: %q
  xfrdfile: %q
  xfrdir: %q
  pidfile: %q
  logfile: %q
  server-count: 1
  verbosity: 1
  hide-version: yes
remote-control:
  control-enable: no
%s`, port, dir, filepath.Join(dir, "zone.list"), filepath.Join(dir, "xfrd.state"), dir,
				filepath.Join(dir, "nsd.pid"), log, zoneConf.String()))
			return []string{bin, "-d", "-c", conf}
		},
		// NSD listens before it has read its zones: wait until it answers for them.
		ready: func(p *Proc, port int) error {
			return waitZones(p, port, zones)
		},
	})
	return &NSD{Addr: "127.0.0.1:" + strconv.Itoa(port), Proc: p}
}

// zoneFile writes a zone with an SOA, an NS and records.
func zoneFile(z Zone) string {
	origin := strings.TrimSuffix(z.Name, ".") + "."
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s\n$TTL 60\n", origin)
	fmt.Fprintf(&b, "@ IN SOA ns.%s hostmaster.%s 1 3600 600 86400 60\n", origin, origin)
	fmt.Fprintf(&b, "@ IN NS ns.%s\nns IN A 127.0.0.1\n", origin)
	for _, r := range z.Records {
		b.WriteString(r + "\n")
	}
	return b.String()
}

// waitZones waits until NSD answers an SOA query for each zone with NOERROR.
func waitZones(p *Proc, port int, zones []Zone) error {
	deadline := time.Now().Add(StartTimeout)
	for _, z := range zones {
		for {
			rcode, err := querySOA(port, z.Name)
			if err == nil && rcode == 0 {
				break
			}
			if p.Exited() {
				return fmt.Errorf("%w before serving %s", errExited, z.Name)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("zone %s not served: rcode %d, %v", z.Name, rcode, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// querySOA sends one SOA query over UDP and returns the reply's RCODE.
func querySOA(port int, zone string) (int, error) {
	c, err := net.Dial("udp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return -1, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	q := []byte{0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0} // ID, no flags, one question
	for _, label := range strings.Split(strings.TrimSuffix(zone, "."), ".") {
		q = append(q, byte(len(label)))
		q = append(q, label...)
	}
	q = append(q, 0, 0, 6, 0, 1) // root, type SOA, class IN
	if _, err := c.Write(q); err != nil {
		return -1, err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return -1, err
	}
	if n < 12 || buf[0] != 0x12 || buf[1] != 0x34 {
		return -1, fmt.Errorf("bad DNS reply")
	}
	return int(buf[3] & 0x0f), nil
}
