package mailauth

import (
	"errors"
	"fmt"
	"net/mail"
	"strings"

	"golang.org/x/net/idna"
)

// maxFromLength bounds the From value parsed: one address is far shorter, and a
// longer value only costs parsing.
const maxFromLength = 8 << 10

// fromDomain returns the RFC5322.From domain that DMARC evaluates (RFC 7489 6.6.1),
// lowercase, in A-labels. A message without a From field, with more than one, or
// whose From does not hold exactly one address with a domain is an error: RFC
// 7489 6.6.1 leaves such messages to local policy ("typically rejected"), and
// this package reports DMARC permerror for them.
func fromDomain(fields []field) (string, error) {
	var from *field
	for i := range fields {
		if fields[i].is("From") {
			if from != nil {
				return "", errors.New("more than one From field")
			}
			from = &fields[i]
		}
	}
	if from == nil {
		return "", errors.New("no From field")
	}
	value := strings.NewReplacer("\r\n", "", "\n", "").Replace(from.value())
	if len(value) > maxFromLength {
		return "", errors.New("From field too long")
	}
	addrs, err := mail.ParseAddressList(value)
	if err != nil {
		return "", errors.New("From field unreadable")
	}
	if len(addrs) != 1 {
		return "", fmt.Errorf("From field has %d addresses", len(addrs))
	}
	_, domain, _ := cutLastAt(addrs[0].Address)
	domain = strings.TrimSuffix(domain, ".")
	if domain == "" || strings.HasPrefix(domain, "[") {
		return "", errors.New("From address has no domain name")
	}
	if !isASCII(domain) {
		if domain, err = idna.Lookup.ToASCII(domain); err != nil {
			return "", errors.New("From domain is not a valid domain name")
		}
	}
	return strings.ToLower(domain), nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
