package milter

import (
	"strconv"
	"strings"

	gomilter "github.com/d--j/go-milter"
	"github.com/midismtp/smtpd"
)

// Postfix's replies for a milter's actions (milter8.c) and for a milter that is
// down or misbehaves (milter_default_action).
var (
	replyReject   = &smtpd.SMTPError{Code: 550, EnhancedCode: "5.7.1", Message: "Command rejected"}
	replyTempFail = &smtpd.SMTPError{Code: 451, EnhancedCode: "4.7.1", Message: "Service unavailable - try again later"}
	replyDown     = &smtpd.SMTPError{Code: 550, EnhancedCode: "5.5.0", Message: "Service unavailable"}
)

// failReply is the reply that a milter's failure leaves for the rest of the
// session under action a: nil for Accept (the milter is skipped).
func failReply(a DefaultAction) *smtpd.SMTPError {
	switch a {
	case Accept:
		return nil
	case Reject:
		return replyDown
	}
	return replyTempFail
}

// actionReply is the reply of a refusing action (reject, tempfail, or a reply
// with its own code), nil for any other.
func actionReply(a *gomilter.Action) *smtpd.SMTPError {
	switch a.Type {
	case gomilter.ActionReject:
		return replyReject
	case gomilter.ActionTempFail:
		return replyTempFail
	case gomilter.ActionRejectWithCode:
		return parseReply(int(a.SMTPCode), a.SMTPReply)
	}
	return nil
}

// parseReply turns a milter's SMTP reply — "550 5.7.1 text", or several lines
// "550-5.7.1 one\r\n550 5.7.1 two" — into an SMTPError: the first line's code, its
// RFC 3463 code when it has one (removed from every line that repeats it), and the
// lines' texts joined by "\n" (the server sends a multi-line reply). As Postfix,
// "%%" becomes "%" and a single "%" is dropped (Sendmail sends the text through
// printf). A code outside 400-599 falls back to code, which go-milter checked.
func parseReply(code int, text string) *smtpd.SMTPError {
	lines := strings.Split(strings.ReplaceAll(strings.TrimRight(text, "\r\n"), "\r\n", "\n"), "\n")
	e := &smtpd.SMTPError{Code: code}
	texts := make([]string, 0, len(lines))
	for i, line := range lines {
		c, rest := splitCode(line)
		if i == 0 && c >= 400 && c <= 599 {
			e.Code = c
		}
		if i == 0 {
			e.EnhancedCode, rest = splitEnhanced(e.Code, rest)
		} else if enh, r := splitEnhanced(e.Code, rest); enh != "" && enh == e.EnhancedCode {
			rest = r
		}
		texts = append(texts, unpercent(rest))
	}
	e.Message = strings.Join(texts, "\n")
	return e
}

// splitCode splits "550-text", "550 text" or "550" into its code and text; a line
// without a code is all text (code 0).
func splitCode(line string) (int, string) {
	if len(line) < 3 || !isDigits(line[:3]) {
		return 0, line
	}
	c, _ := strconv.Atoi(line[:3])
	rest := line[3:]
	if rest != "" && (rest[0] == '-' || rest[0] == ' ') {
		rest = rest[1:]
	}
	return c, rest
}

// splitEnhanced splits an RFC 3463 code of code's class off the front of text.
func splitEnhanced(code int, text string) (string, string) {
	word, rest, _ := strings.Cut(text, " ")
	parts := strings.Split(word, ".")
	if len(parts) != 3 || parts[0] != strconv.Itoa(code/100) {
		return "", text
	}
	for _, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 || !isDigits(p) {
			return "", text
		}
	}
	return word, rest
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// unpercent undoes Sendmail's printf escaping as Postfix does: "%%" is "%", a
// single "%" is removed.
func unpercent(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' {
			b.WriteByte('%')
			i++
		}
	}
	return b.String()
}

// replyErr returns r as an error: nil (not a nil *SMTPError in an interface)
// when r is nil.
func replyErr(r *smtpd.SMTPError) error {
	if r == nil {
		return nil
	}
	return r
}
