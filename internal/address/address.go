// Package address parses the arguments of the SMTP MAIL FROM and RCPT TO
// commands: a reverse-path or forward-path followed by optional ESMTP
// parameters, as described in RFC 5321 sections 4.1.1.2, 4.1.1.3 and 4.1.2,
// extended for internationalized addresses by RFC 6531.
//
// The parser works in a single pass over the argument, keeps the text exactly
// as the client sent it, and only allocates when the argument carries ESMTP
// parameters.
package address

import (
	"errors"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Limits from RFC 5321 section 4.5.3.1, in octets.
const (
	maxLocalPart = 64  // 4.5.3.1.1
	maxDomain    = 255 // 4.5.3.1.2
	maxPath      = 256 // 4.5.3.1.3, including the angle brackets
)

var (
	// ErrSyntax reports an argument that does not follow the RFC 5321 path
	// and parameter syntax, including one that contains an ASCII control
	// character (CR, LF, NUL, tab, DEL, ...) or malformed UTF-8.
	ErrSyntax = errors.New("address: syntax error in path or parameters")

	// ErrTooLong reports a path over the RFC 5321 section 4.5.3.1 size
	// limits: a local part over 64 octets, a domain over 255 octets, or a
	// path over 256 octets including the angle brackets.
	ErrTooLong = errors.New("address: path too long")

	// ErrTooManyParams reports more than MaxParams ESMTP parameters; it is found
	// before any parameter is stored.
	ErrTooManyParams = errors.New("address: too many ESMTP parameters")
)

// Param is one ESMTP parameter: keyword [ "=" value ].
type Param struct {
	Key      string // as sent (compare case-insensitively)
	Value    string // as sent; "" when HasValue is false
	HasValue bool   // the keyword was followed by "=" and a value
}

// Path is a parsed reverse-path or forward-path with its parameters.
type Path struct {
	// Mailbox is "local@domain" as sent, without the angle brackets and
	// without the source route. It is "" for the null reverse-path <>, and
	// the bare local part (for example "Postmaster") for the special
	// RCPT TO:<Postmaster> recipient.
	Mailbox string

	// SourceRoute is the obsolete source route "@a,@b" as sent, without the
	// trailing colon, or "". RFC 5321 section 4.1.1.3 says to ignore it, so
	// it is not part of Mailbox.
	SourceRoute string

	// Bracketless reports that the client wrote the mailbox without angle
	// brackets. This is accepted for compatibility with broken clients.
	Bracketless bool

	// Params are the ESMTP parameters in the order sent, or nil.
	Params []Param
}

// IsASCII reports whether Mailbox is pure ASCII. A mailbox that is not needs
// the SMTPUTF8 extension (RFC 6531).
func (p Path) IsASCII() bool {
	for i := 0; i < len(p.Mailbox); i++ {
		if p.Mailbox[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// Parse parses arg, the text of a MAIL or RCPT command after "FROM:" or
// "TO:" with the line ending removed.
//
// Spaces before the path are skipped. The path is either
// "<" [source-route ":"] mailbox ">" or, for compatibility, a bare mailbox
// without angle brackets. ESMTP parameters follow the path after one or more
// spaces; trailing spaces are allowed.
//
// nullOK allows the null reverse-path "<>" and must be true for MAIL FROM.
// When nullOK is false (RCPT TO), "<>" is a syntax error and the special
// recipient "<Postmaster>" (in any case, without a domain or source route) is
// accepted; its Mailbox is the local part as sent.
//
// The local part and domain may contain non-ASCII UTF-8 (RFC 6531); Parse
// accepts it and leaves the decision to the caller, see [Path.IsASCII].
//
// On failure Parse returns the zero Path and exactly [ErrSyntax],
// [ErrTooLong] or [ErrTooManyParams].
func Parse(arg string, nullOK bool) (Path, error) {
	// Every character class below excludes the ASCII controls, so they need
	// no separate check; only the UTF-8 encoding has to be validated.
	if !utf8.ValidString(arg) {
		return Path{}, ErrSyntax
	}
	i := skipSpaces(arg, 0)
	if i == len(arg) {
		return Path{}, ErrSyntax
	}

	var (
		p   Path
		err error
	)
	if arg[i] == '<' {
		i, err = parseBracketed(arg, i+1, nullOK, &p)
	} else {
		start := i
		if i, err = parseMailbox(arg, i, !nullOK); err == nil {
			p.Mailbox = arg[start:i]
			p.Bracketless = true
		}
	}
	if err != nil {
		return Path{}, err
	}

	if i < len(arg) {
		if arg[i] != ' ' {
			return Path{}, ErrSyntax
		}
		if p.Params, err = parseParams(arg, i); err != nil {
			return Path{}, err
		}
	}
	return p, nil
}

// parseBracketed parses the rest of a bracketed path, starting just after
// the "<", into p. It returns the index just after the closing ">".
func parseBracketed(s string, i int, nullOK bool, p *Path) (int, error) {
	if i < len(s) && s[i] == '>' {
		if !nullOK {
			return 0, ErrSyntax
		}
		return i + 1, nil
	}

	// A-d-l = At-domain *( "," At-domain ), At-domain = "@" Domain.
	if i < len(s) && s[i] == '@' {
		start := i
		for {
			i++ // skip "@"
			d := i
			var err error
			if i, err = parseDomain(s, i); err != nil {
				return 0, err
			}
			if i-d > maxDomain {
				return 0, ErrTooLong
			}
			if i+1 < len(s) && s[i] == ',' && s[i+1] == '@' {
				i++
				continue
			}
			break
		}
		if i == len(s) || s[i] != ':' {
			return 0, ErrSyntax
		}
		p.SourceRoute = s[start:i]
		i++
	}

	start := i
	i, err := parseMailbox(s, i, !nullOK && p.SourceRoute == "")
	if err != nil {
		return 0, err
	}
	if i == len(s) || s[i] != '>' {
		return 0, ErrSyntax
	}
	p.Mailbox = s[start:i]
	return i + 1, nil
}

// parseMailbox parses Mailbox = Local-part "@" ( Domain / address-literal )
// starting at s[i] and returns the index just after it. If postmaster is
// true, a bare local part equal to "postmaster" in any case is accepted.
func parseMailbox(s string, i int, postmaster bool) (int, error) {
	start := i
	var err error
	if i < len(s) && s[i] == '"' {
		i, err = parseQuotedString(s, i)
	} else {
		i, err = parseDotString(s, i)
	}
	if err != nil {
		return 0, err
	}
	if i-start > maxLocalPart {
		return 0, ErrTooLong
	}
	if i == len(s) || s[i] != '@' {
		if postmaster && strings.EqualFold(s[start:i], "postmaster") {
			return i, nil
		}
		return 0, ErrSyntax
	}
	i++ // skip "@"

	d := i
	if i < len(s) && s[i] == '[' {
		i, err = parseAddressLiteral(s, i)
	} else {
		i, err = parseDomain(s, i)
	}
	if err != nil {
		return 0, err
	}
	if i-d > maxDomain || i-start+2 > maxPath {
		return 0, ErrTooLong
	}
	return i, nil
}

// parseDotString parses Dot-string = Atom *( "." Atom ) starting at s[i].
func parseDotString(s string, i int) (int, error) {
	for {
		start := i
		for i < len(s) && is(s[i], cAtext) {
			i++
		}
		if i == start {
			return 0, ErrSyntax
		}
		if i == len(s) || s[i] != '.' {
			return i, nil
		}
		i++ // skip "."
	}
}

// parseQuotedString parses Quoted-string = DQUOTE *QcontentSMTP DQUOTE
// starting at the opening quote s[i].
func parseQuotedString(s string, i int) (int, error) {
	for i++; i < len(s); {
		switch c := s[i]; {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			// quoted-pairSMTP = %d92 %d32-126
			if i+1 == len(s) || s[i+1] < ' ' || s[i+1] > '~' {
				return 0, ErrSyntax
			}
			i += 2
		case is(c, cQtext):
			i++
		default:
			return 0, ErrSyntax
		}
	}
	return 0, ErrSyntax
}

// parseDomain parses Domain = sub-domain *( "." sub-domain ) starting at
// s[i]. A sub-domain is a letter-digit-hyphen label that does not begin or
// end with a hyphen; non-ASCII UTF-8 is allowed in it (U-label).
func parseDomain(s string, i int) (int, error) {
	for {
		start := i
		for i < len(s) && is(s[i], cLabel) {
			i++
		}
		if i == start || s[start] == '-' || s[i-1] == '-' {
			return 0, ErrSyntax
		}
		if i == len(s) || s[i] != '.' {
			return i, nil
		}
		i++ // skip "."
	}
}

// parseAddressLiteral parses address-literal = "[" ( IPv4-address-literal /
// IPv6-address-literal / General-address-literal ) "]" starting at the "["
// in s[i].
func parseAddressLiteral(s string, i int) (int, error) {
	i++ // skip "["
	start := i
	for i < len(s) && is(s[i], cDcontent) {
		i++
	}
	if i == len(s) || s[i] != ']' {
		return 0, ErrSyntax
	}
	if !validLiteral(s[start:i]) {
		return 0, ErrSyntax
	}
	return i + 1, nil
}

// validLiteral reports whether lit, the text between the brackets of an
// address literal, is an IPv4 address, "IPv6:" and an IPv6 address, or a
// general literal tag ":" dcontent.
func validLiteral(lit string) bool {
	colon := strings.IndexByte(lit, ':')
	if colon < 0 {
		ip, err := netip.ParseAddr(lit)
		return err == nil && ip.Is4()
	}
	tag, content := lit[:colon], lit[colon+1:]
	if strings.EqualFold(tag, "IPv6") {
		ip, err := netip.ParseAddr(content)
		return err == nil && ip.Is6() && ip.Zone() == ""
	}
	// Standardized-tag = Ldh-str = *( ALPHA / DIGIT / "-" ) Let-dig
	if tag == "" || content == "" || tag[len(tag)-1] == '-' {
		return false
	}
	for j := 0; j < len(tag); j++ {
		if !is(tag[j], cKeyword) {
			return false
		}
	}
	return true
}

// MaxParams is the most ESMTP parameters one MAIL or RCPT may carry. RFC 5321 sets
// no number; every extension together uses fewer than ten (SIZE, BODY, SMTPUTF8,
// RET, ENVID, AUTH, REQUIRETLS, NOTIFY, ORCPT), and a cap keeps a long line of
// parameters from allocating a record for each.
const MaxParams = 16

// parseParams parses the ESMTP parameters in s[i:], where s[i] is a space.
func parseParams(s string, i int) ([]Param, error) {
	n := 0
	for j := i; j < len(s); j++ {
		if s[j] != ' ' && s[j-1] == ' ' {
			n++
		}
	}
	if n == 0 {
		return nil, nil
	}
	if n > MaxParams {
		return nil, ErrTooManyParams
	}
	params := make([]Param, 0, n)
	for {
		i = skipSpaces(s, i)
		if i == len(s) {
			return params, nil
		}
		// esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
		start := i
		if !is(s[i], cLetDig) {
			return nil, ErrSyntax
		}
		for i++; i < len(s) && is(s[i], cKeyword); i++ {
		}
		p := Param{Key: s[start:i]}
		if i < len(s) && s[i] == '=' {
			// esmtp-value = 1*(%d33-60 / %d62-126 / UTF8-non-ascii)
			i++
			start = i
			for i < len(s) && is(s[i], cValue) {
				i++
			}
			if i == start {
				return nil, ErrSyntax
			}
			p.Value, p.HasValue = s[start:i], true
		}
		if i < len(s) && s[i] != ' ' {
			return nil, ErrSyntax
		}
		params = append(params, p)
	}
}

// skipSpaces returns the index of the first non-space byte in s[i:], or
// len(s).
func skipSpaces(s string, i int) int {
	for i < len(s) && s[i] == ' ' {
		i++
	}
	return i
}

// Character classes, as bits in classes.
const (
	cAtext    = 1 << iota // RFC 5322 atext, plus UTF8-non-ascii
	cQtext                // qtextSMTP, plus UTF8-non-ascii
	cLabel                // sub-domain: ALPHA / DIGIT / "-", plus UTF8-non-ascii
	cLetDig               // ALPHA / DIGIT
	cKeyword              // ALPHA / DIGIT / "-"
	cDcontent             // dcontent: %d33-90 / %d94-126
	cValue                // esmtp-value: %d33-60 / %d62-126, plus UTF8-non-ascii
)

// classes maps each byte to its character class bits. All bytes of a
// multi-byte UTF-8 sequence share the non-ASCII classes; the encoding itself
// is validated separately.
var classes = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		var m uint8
		letDig := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		switch {
		case c >= utf8.RuneSelf:
			m = cAtext | cQtext | cLabel | cValue
		case letDig:
			m = cAtext | cLetDig | cKeyword | cLabel
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~", byte(c)) >= 0:
			m = cAtext
		}
		if c == '-' {
			m |= cKeyword | cLabel
		}
		if c == ' ' || c == '!' || '#' <= c && c <= '[' || ']' <= c && c <= '~' {
			m |= cQtext
		}
		if '!' <= c && c <= 'Z' || '^' <= c && c <= '~' {
			m |= cDcontent
		}
		if '!' <= c && c <= '<' || '>' <= c && c <= '~' {
			m |= cValue
		}
		t[c] = m
	}
	return t
}()

// is reports whether c belongs to any of the classes in mask.
func is(c byte, mask uint8) bool {
	return classes[c]&mask != 0
}
