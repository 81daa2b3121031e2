package mailauth

import (
	"strings"
	"testing"
)

// FuzzTagList: the tag-list parser never panics, and what it accepts is well
// formed: valid names, no duplicates, values trimmed and without ";".
func FuzzTagList(f *testing.F) {
	for _, s := range []string{
		"v=1; a=rsa-sha256; d=example.test; s=sel; h=from:to; bh=AAAA; b=AA\r\n AA",
		"v=DKIM1; k=ed25519; p=", "a=1;;b=2;", "=x", "a", "a=1; a=2", "v=DMARC1;p=reject;rua=mailto:x@y",
		"a\x00=1", " \t\r\n", "ab_1=é",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tags, err := parseTagList(s)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, tg := range tags {
			if !validTagName(tg.name) || seen[tg.name] {
				t.Fatalf("%q: bad or duplicate name %q", s, tg.name)
			}
			seen[tg.name] = true
			if strings.Contains(tg.value, ";") || tg.value != trimFWS(tg.value) {
				t.Fatalf("%q: value %q", s, tg.value)
			}
		}
		if len(tags) > maxTags {
			t.Fatalf("%d tags", len(tags))
		}
	})
}
