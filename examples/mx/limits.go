package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/midismtp/smtpd"
)

// The abuse limits mx runs with: what an operator sets on port 25, Postfix's
// defaults wherever Postfix has one. They are not flags (DESIGN.md pins mx's
// flags); a program that needs others builds its own server from the library.
const (
	maxProcessings = 100              // sessions served at once: Postfix's default_process_limit
	maxConnections = 1000             // open connections, waiting ones included (Postfix: the listen backlog)
	maxPerIP       = 50               // smtpd_client_connection_count_limit (default_process_limit / 2)
	waitTimeout    = 30 * time.Second // a connection waiting for a slot gets 421 after this
	cmdTimeout     = 5 * time.Minute  // smtpd_timeout, RFC 5321 4.5.3.2.7's five minutes; 10 s in stress mode
	maxErrors      = 20               // smtpd_hard_error_limit (1 in stress mode)
	maxJunk        = 100              // smtpd_junk_command_limit (1 in stress mode)
	maxRecipients  = 1000             // smtpd_recipient_limit
	maxMessageSize = 10240000         // message_size_limit, announced as SIZE 10240000
	minDataRate    = 200              // bytes/s over a DATA or BDAT transfer (500 in stress mode)
	shutdownGrace  = 30 * time.Second // on SIGINT/SIGTERM, how long a message in DATA may take to finish
)

// applyLimits sets the abuse limits and the extensions of an Internet-facing
// receiver on s: those Postfix's smtpd offers on port 25, with enhanced status
// codes, and no AUTH (port 25 takes mail for its own domains, submission is
// another port).
func applyLimits(s *smtpd.Server) {
	s.MaxProcessings = maxProcessings
	s.MaxConnections = maxConnections
	s.MaxConnectionsPerIP = maxPerIP
	s.WaitTimeout = waitTimeout
	s.IOCmdTimeout = cmdTimeout
	s.MaxErrors = maxErrors
	s.MaxJunkCommands = maxJunk
	s.MaxRecipients = maxRecipients
	s.MaxMessageSize = maxMessageSize
	s.MinDataRate = minDataRate
	s.GreetDelay = 0 // Postfix's smtpd has none; postscreen's greet action is "ignore" by default
	s.AuthMode = smtpd.AuthForbidden
	s.TLSMode = smtpd.TLSOptional
	s.EnhancedStatusCodes = true
	s.Pipelining = true
	s.Internationalization = true // 8BITMIME, SMTPUTF8
	s.Chunking = true             // BDAT (Postfix 3.4+)
	s.DSN = true                  // RET, ENVID, NOTIFY, ORCPT, recorded in each .json
}

// limitsText describes applyLimits for -h.
func limitsText() string {
	rows := [][2]string{
		{"sessions at once", fmt.Sprintf("%d (default_process_limit); more connections wait, up to %d open in all, %s at most", maxProcessings, maxConnections, waitTimeout)},
		{"connections per client", fmt.Sprintf("%d (smtpd_client_connection_count_limit)", maxPerIP)},
		{"command timeout", fmt.Sprintf("%s per line (smtpd_timeout)", cmdTimeout)},
		{"error replies", fmt.Sprintf("%d, then 421 (smtpd_hard_error_limit)", maxErrors)},
		{"junk commands", fmt.Sprintf("%d NOOP/RSET/VRFY/EXPN/HELP/HELO, then 421 (smtpd_junk_command_limit)", maxJunk)},
		{"recipients", fmt.Sprintf("%d per message, then 452 (smtpd_recipient_limit)", maxRecipients)},
		{"message size", fmt.Sprintf("%d bytes, SIZE announced; larger: 552 (message_size_limit)", maxMessageSize)},
		{"data rate", fmt.Sprintf("at least %d bytes/s averaged over a transfer, else 421", minDataRate)},
		{"stress mode", "while connections wait: 10s per line, 1 error, 1 junk command, 500 bytes/s"},
		{"greet delay", "none (Postfix's smtpd has none)"},
	}
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "  %-24s %s\n", r[0], r[1])
	}
	return b.String()
}
