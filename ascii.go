package smtpd

// This file is the one home of the ASCII helpers. SMTP's words are
// case-insensitive in ASCII only (RFC 5321 2.4; RFC 5234 2.3): strings.EqualFold
// and strings.ToUpper would take "ſ" for "S" and "ı" for "I", making "QUıT" a QUIT.

// upperASCII upper-cases the ASCII letters of s only.
func upperASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'a' <= s[i] && s[i] <= 'z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'a' <= b[j] && b[j] <= 'z' {
					b[j] -= 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// equalFoldASCII reports whether the first len(s) bytes of b equal s, ignoring
// ASCII case only (b holds at least len(s) bytes).
func equalFoldASCII[T string | []byte](b T, s string) bool {
	for i := 0; i < len(s); i++ {
		c, d := b[i], s[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if 'a' <= d && d <= 'z' {
			d -= 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// keywordASCII returns the keyword of kws (upper case) that s is in any ASCII
// case, or "".
func keywordASCII(s string, kws ...string) string {
	for _, kw := range kws {
		if len(s) == len(kw) && equalFoldASCII(s, kw) {
			return kw
		}
	}
	return ""
}

// cutPrefixFold cuts prefix from s, ignoring ASCII case.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !equalFoldASCII(s, prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// printableASCII reports whether s has only printable ASCII (space to "~").
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// hasControl reports whether s has an ASCII control character (C0 or DEL).
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// isSpace reports whether c is ASCII white space.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r' || c == '\n'
}

// isDigits reports whether s is min to max ASCII digits.
func isDigits(s string, min, max int) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isUpperHex(c byte) bool { return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' }
