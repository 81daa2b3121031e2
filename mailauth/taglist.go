package mailauth

import (
	"errors"
	"strings"
)

// This file is the tag=value list of RFC 6376 section 3.2, the syntax of
// DKIM-Signature, ARC-Seal, ARC-Message-Signature, DKIM key records and DMARC
// records.

// maxTags bounds the tags of one list: no record of these RFCs has more than 15
// defined tags, so a list of hundreds is hostile.
const maxTags = 64

// tag is one tag=value pair, both trimmed of surrounding folding whitespace.
type tag struct {
	name, value string
}

// tagList is a parsed tag list in the order written.
type tagList []tag

// get returns the value of the tag called name (case-sensitive, as RFC 6376 3.2
// says tag names are).
func (l tagList) get(name string) (string, bool) {
	for _, t := range l {
		if t.name == name {
			return t.value, true
		}
	}
	return "", false
}

// value returns the tag's value, "" when absent.
func (l tagList) value(name string) string {
	v, _ := l.get(name)
	return v
}

var (
	errTagSyntax    = errors.New("malformed tag list")
	errTagDuplicate = errors.New("duplicate tag")
	errTagMany      = errors.New("too many tags")
)

// parseTagList parses s as "tag=value; tag=value[;]". A tag name is ALPHA
// *(ALPHA / DIGIT / "_"); a value is printable characters (and UTF-8, RFC 8616)
// without ";", with folding whitespace inside. A tag named twice, a spec
// without "=", a control character or more than maxTags tags are errors.
func parseTagList(s string) (tagList, error) {
	var l tagList
	for spec := range strings.SplitSeq(s, ";") {
		if trimFWS(spec) == "" {
			continue // an empty spec: a trailing ";", or ";;"
		}
		name, value, ok := strings.Cut(spec, "=")
		if !ok {
			return nil, errTagSyntax
		}
		name, value = trimFWS(name), trimFWS(value)
		if !validTagName(name) || !validTagValue(value) {
			return nil, errTagSyntax
		}
		if _, dup := l.get(name); dup {
			return nil, errTagDuplicate
		}
		if len(l) == maxTags {
			return nil, errTagMany
		}
		l = append(l, tag{name, value})
	}
	return l, nil
}

func validTagName(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlpha(c) && !isDigit(c) && c != '_' {
			return false
		}
	}
	return true
}

func validTagValue(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 && !isFWS(c) || c == 0x7f {
			return false
		}
	}
	return true
}

// stripFWS removes all folding whitespace from s: base64 values (b=, bh=, p=) and
// colon-separated lists may be folded anywhere.
func stripFWS(s string) string {
	if strings.IndexAny(s, " \t\r\n") < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if !isFWS(s[i]) {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// splitColonList splits a colon-separated value (h=, q=, key h= and s=) into its
// trimmed elements.
func splitColonList(s string) []string {
	var out []string
	for e := range strings.SplitSeq(s, ":") {
		out = append(out, trimFWS(e))
	}
	return out
}

func trimFWS(s string) string { return strings.Trim(s, " \t\r\n") }

func isFWS(c byte) bool   { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
func isWSP(c byte) bool   { return c == ' ' || c == '\t' }
func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }
