package realmilter

import (
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// offLoopback returns the sockets of the daemon's processes (those of its
// process group) that reach beyond loopback: a TCP listener on another address,
// or any TCP or UDP socket connected to a peer that is not on loopback. A
// daemon of this package should have none; the check sees the sockets open at
// the moment it runs (before the daemon is stopped).
func (p *Proc) offLoopback() []string {
	inodes := map[string]int{} // socket inode: PID
	for _, pid := range p.group() {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if inode, ok := strings.CutPrefix(target, "socket:["); err == nil && ok {
				inodes[strings.TrimSuffix(inode, "]")] = pid
			}
		}
	}
	var bad []string
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		data, err := os.ReadFile("/proc/net/" + proto)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 {
				continue
			}
			pid, ours := inodes[f[9]]
			if !ours {
				continue
			}
			local, remote := procNetAddr(f[1]), procNetAddr(f[2])
			listening := strings.HasPrefix(proto, "tcp") && f[3] == "0A"
			switch {
			case listening && !local.IsLoopback():
				bad = append(bad, fmt.Sprintf("pid %d listens on %s %s", pid, proto, local))
			case !remote.IsUnspecified() && !remote.IsLoopback():
				bad = append(bad, fmt.Sprintf("pid %d has a %s socket to %s", pid, proto, remote))
			}
		}
	}
	return bad
}

// procNetAddr reads the IP of an address of /proc/net/{tcp,udp}[6]: hex, in
// the kernel's byte order (32-bit words in host order, little-endian here).
func procNetAddr(s string) net.IP {
	h, _, _ := strings.Cut(s, ":")
	b, err := hex.DecodeString(h)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return net.IPv4zero
	}
	for i := 0; i+4 <= len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	return net.IP(b)
}

// group lists the PIDs of the daemon's process group.
func (p *Proc) group() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 2 && f[2] == strconv.Itoa(p.PID()) {
			pids = append(pids, pid)
		}
	}
	return pids
}
