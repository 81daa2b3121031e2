package mailauth

import (
	"fmt"
	"strconv"
	"strings"
)

// This file writes the Authentication-Results field (RFC 8601). Every value that
// came from outside (HELO, MAIL FROM, DNS names, signature tags, reasons) goes
// through writeValue or writeComment, which quote it or replace what cannot be
// written, so no client can end the field or add one.

// maxReason bounds a reason="..." value, maxValue any other: a domain name has at
// most 253 octets, and with escapes no line of the field nears RFC 5322's 998.
const (
	maxReason = 100
	maxValue  = 255
)

// foldAt is where a field line is folded when it can be.
const foldAt = 78

// Field returns the whole Authentication-Results header field, "Authentication-Results: "
// + authserv-id + "; " + methods, folded, ending in CRLF, ready to prepend: one
// spf, one dkim per signature (at most MaxDKIMSignatures, then one line for the
// rest), one dmarc, arc and iprev.
func (v *Verdict) Field() string {
	var w arWriter
	w.b.WriteString("Authentication-Results: ")
	w.col, w.fresh = w.b.Len(), true
	w.word(value(v.AuthServID))
	w.resinfo(v.spfWords())
	for i, d := range v.DKIM {
		if i == MaxDKIMSignatures {
			w.resinfo([]string{"dkim=policy", reason(fmt.Sprintf("%d more signatures not verified", len(v.DKIM)-i))})
			break
		}
		w.resinfo(dkimWords(d))
	}
	if len(v.DKIM) == 0 {
		w.resinfo([]string{"dkim=none"})
	}
	w.resinfo(v.dmarcWords())
	w.resinfo(v.arcWords())
	w.resinfo(v.iprevWords())
	w.b.WriteString("\r\n")
	return w.b.String()
}

// arWriter builds the field, folding between words.
type arWriter struct {
	b     strings.Builder
	col   int  // the current line's length
	fresh bool // nothing written on this line yet
}

func (w *arWriter) word(s string) {
	switch {
	case w.fresh:
	case w.col+1+len(s) > foldAt:
		w.b.WriteString("\r\n\t")
		w.col = 1
	default:
		w.b.WriteByte(' ')
		w.col++
	}
	w.b.WriteString(s)
	w.col += len(s)
	w.fresh = false
}

// resinfo writes ";" and one method result on a line of its own.
func (w *arWriter) resinfo(words []string) {
	w.b.WriteString(";\r\n\t")
	w.col, w.fresh = 1, true
	for _, s := range words {
		w.word(s)
	}
}

func (v *Verdict) spfWords() []string {
	s := v.SPF
	words := []string{"spf=" + string(orNone(s.Result))}
	words = append(words, reasonIf(s.Result, s.Reason)...)
	prop := "smtp.mailfrom="
	if s.Identity == "helo" {
		prop = "smtp.helo="
	}
	if s.Domain != "" {
		words = append(words, prop+value(s.Domain))
	}
	return words
}

func dkimWords(d DKIMResult) []string {
	words := []string{"dkim=" + string(orNone(d.Result))}
	words = append(words, reasonIf(d.Result, d.Reason)...)
	for _, p := range [][2]string{
		{"header.d=", d.Domain}, {"header.i=", d.Identifier}, {"header.s=", d.Selector},
		{"header.a=", d.Algorithm}, {"header.b=", d.Signature},
	} {
		if p[1] != "" {
			words = append(words, p[0]+value(p[1]))
		}
	}
	return words
}

func (v *Verdict) dmarcWords() []string {
	d := v.DMARC
	words := []string{"dmarc=" + string(orNone(d.Result))}
	words = append(words, reasonIf(d.Result, d.Reason)...)
	if d.Policy != "" {
		words = append(words, "(p="+string(d.Policy)+" dis="+string(orDisposition(d.Applied))+")")
	}
	if d.FromDomain != "" {
		words = append(words, "header.from="+value(d.FromDomain))
	}
	return words
}

func (v *Verdict) arcWords() []string {
	a := v.ARC
	words := []string{"arc=" + string(orNone(a.Result))}
	words = append(words, reasonIf(a.Result, a.Reason)...)
	if a.Instances > 0 {
		words = append(words, "(i="+strconv.Itoa(a.Instances)+")")
	}
	return words
}

func (v *Verdict) iprevWords() []string {
	r := v.IPRev
	words := []string{"iprev=" + string(orNone(r.Result))}
	words = append(words, reasonIf(r.Result, r.Reason)...)
	if r.IP != "" {
		words = append(words, "policy.iprev="+value(r.IP))
	}
	if r.Name != "" {
		words = append(words, comment(shorten(r.Name, maxValue)))
	}
	return words
}

func orNone(r Result) Result {
	if r == "" {
		return None
	}
	return r
}

func orDisposition(d Disposition) Disposition {
	if d == "" {
		return DispositionNone
	}
	return d
}

// reasonIf is the reasonspec for a result other than pass and none.
func reasonIf(r Result, text string) []string {
	if r == Pass || r == None || r == "" || text == "" {
		return nil
	}
	return []string{reason(text)}
}

func reason(text string) string {
	return "reason=" + quoted(shorten(text, maxReason))
}

// shorten cuts s to n octets, marking the cut with "...".
func shorten(s string, n int) string {
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}

// value writes s as an RFC 2045 token when it is one, else as a quoted-string;
// an address local-part@domain of token characters stays bare (RFC 8601 pvalue).
func value(s string) string {
	s = shorten(s, maxValue)
	if s != "" && isToken(s) {
		return s
	}
	if l, d, ok := cutLastAt(s); ok && d != "" && isToken(d) && (l == "" || isToken(l)) {
		return s
	}
	return quoted(s)
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return s != ""
}

// quoted makes a quoted-string of s: '"' and '\' escaped, and each byte that is
// not printable ASCII (CR, LF, other controls, UTF-8) written as '?'.
func quoted(s string) string { return enclose(s, '"', '"', `"\`) }

// comment makes an RFC 5322 comment of s: "(", ")" and "\" escaped, each byte
// that is not printable ASCII written as '?'.
func comment(s string) string { return enclose(s, '(', ')', `()\`) }

// enclose writes s between open and close, a backslash before each byte of
// special, '?' for each byte that is not printable ASCII.
func enclose(s string, open, close byte, special string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte(open)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case strings.IndexByte(special, c) >= 0:
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c >= 0x7f:
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte(close)
	return b.String()
}
