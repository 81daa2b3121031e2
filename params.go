package smtpd

import (
	"strconv"
	"strings"
)

// This file parses the arguments of the ESMTP extensions: SIZE (RFC 1870), DSN
// (RFC 3461), BDAT (RFC 3030), and RFC 3461's xtext (DSN's and XCLIENT's values).
// Each parser is pure, so fuzz targets hold them to their invariants.

// maxDecimal is the most digits a SIZE= or BDAT size may have: below 2^63.
const maxDecimal = 18

// parseDecimal parses a size: 1 to maxDecimal ASCII digits, nothing else.
func parseDecimal(v string) (int64, bool) {
	if len(v) == 0 || len(v) > maxDecimal {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseSize parses SIZE=: 1 to 20 digits (RFC 1870 "size-value ::= 1*20DIGIT"),
// saturating at the largest int32, far beyond any MaxMessageSize.
func parseSize(v string) (int, bool) {
	if len(v) == 0 || len(v) > 20 {
		return 0, false
	}
	const most = 1<<31 - 1
	n := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n < most {
			n = min(n*10+int(c-'0'), most)
		}
	}
	return n, true
}

// parseBdat parses BDAT's argument: "<size>" or "<size> LAST" (RFC 3030 2,
// one space between, LAST in any ASCII case).
func parseBdat(args string) (size int64, last, ok bool) {
	num, rest, hasRest := strings.Cut(args, " ")
	size, ok = parseDecimal(num)
	if !ok {
		return 0, false, false
	}
	if !hasRest {
		return size, false, true
	}
	if keywordASCII(rest, "LAST") == "" { // not EqualFold: its Unicode folding takes "LAſT" for LAST
		return 0, false, false
	}
	return size, true, true
}

// parseRet parses DSN's RET=: FULL or HDRS, any ASCII case (RFC 3461 4.3).
func parseRet(v string) (string, bool) {
	u := keywordASCII(v, "FULL", "HDRS")
	return u, u != ""
}

// maxEnvID is ENVID's longest value, in characters before decoding (RFC 3461 4.4).
const maxEnvID = 100

// parseEnvID parses DSN's ENVID=: xtext of at most 100 characters, printable
// ASCII once decoded.
func parseEnvID(v string) (string, bool) {
	if len(v) == 0 || len(v) > maxEnvID {
		return "", false
	}
	d, err := decodeXtext(v)
	return d, err == nil && printableASCII(d)
}

// parseNotify parses DSN's NOTIFY=: NEVER alone, or a comma list of SUCCESS,
// FAILURE and DELAY, each at most once (RFC 3461 4.1).
func parseNotify(v string) ([]string, bool) {
	var out []string
	for item := range strings.SplitSeq(v, ",") {
		u := keywordASCII(item, "NEVER", "SUCCESS", "FAILURE", "DELAY")
		if u == "" {
			return nil, false
		}
		for _, seen := range out {
			if seen == u || seen == "NEVER" || u == "NEVER" {
				return nil, false
			}
		}
		out = append(out, u)
	}
	return out, len(out) > 0
}

// maxORcpt is ORCPT's longest value: an address type, ";" and an RFC 5321 path
// of up to 256 octets, each octet of which may take 3 xtext characters.
const maxORcpt = 500

// parseORcpt parses DSN's ORCPT=: addr-type ";" xtext (RFC 3461 4.2); the address
// type is an atom such as "rfc822" or "utf-8". It returns the decoded value, which
// may hold no control character (RFC 3461 4.2: printable characters only), so that
// no "+0D+0A" can put a line break into a DSN built from it.
func parseORcpt(v string) (string, bool) {
	typ, addr, ok := strings.Cut(v, ";")
	if !ok || len(v) > maxORcpt || typ == "" || addr == "" {
		return "", false
	}
	for i := 0; i < len(typ); i++ {
		if c := typ[i]; !(c == '-' || '0' <= c && c <= '9' || 'a' <= c|0x20 && c|0x20 <= 'z') {
			return "", false
		}
	}
	d, err := decodeXtext(addr)
	if err != nil || d == "" || hasControl(d) {
		return "", false
	}
	return typ + ";" + d, true
}

// sizeKeyword is the SIZE line of EHLO: the limit, or SIZE alone when unlimited.
func sizeKeyword(max int) string {
	if max <= 0 {
		return "SIZE"
	}
	return "SIZE " + strconv.Itoa(max)
}

// decodeXtext decodes RFC 3461 xtext: "+" and two upper-case hex digits stand for
// a byte; other bytes are printable ASCII except "+" and "=".
func decodeXtext(s string) (string, error) {
	if !strings.Contains(s, "+") {
		for i := 0; i < len(s); i++ {
			if s[i] < '!' || s[i] > '~' || s[i] == '=' {
				return "", SMTPError501
			}
		}
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			if i+2 >= len(s) || !isUpperHex(s[i+1]) || !isUpperHex(s[i+2]) {
				return "", SMTPError501
			}
			n, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
			b.WriteByte(byte(n))
			i += 2
		case c < '!' || c > '~' || c == '=':
			return "", SMTPError501
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}
