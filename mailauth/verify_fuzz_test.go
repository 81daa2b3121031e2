package mailauth

import (
	"testing"
)

// FuzzVerify: any message gets a verdict and a well-formed field. DNS is a loopback
// server that knows no name.
func FuzzVerify(f *testing.F) {
	for _, s := range []string{
		plainMessage,
		arcFields(1, "none") + plainMessage,
		"DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=s; h=from; bh=AAAA; b=AAAA\r\n" + plainMessage,
		"From: a@b, c@d\r\n\r\n", "\r\n\r\n", "From: <@>\r\n",
	} {
		f.Add([]byte(s))
	}
	v := offlineVerifier(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		vd := v.Verify(t.Context(), conn(), msg)
		checkFieldShape(t, vd.Field())
	})
}
