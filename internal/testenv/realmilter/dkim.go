package realmilter

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DKIMKey is an RSA signing key made for one test, with where its public half is
// published: the TXT record at Selector._domainkey.Domain.
type DKIMKey struct {
	Domain, Selector string
	Key              *rsa.PrivateKey
}

// NewDKIMKey makes a 2048-bit RSA key (RFC 8301 wants at least 1024; 2048 is
// what opendkim-genkey makes) for domain and selector.
func NewDKIMKey(t T, domain, selector string) *DKIMKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("realmilter: %v", err)
	}
	return &DKIMKey{Domain: domain, Selector: selector, Key: k}
}

// PEM is the private key as OpenDKIM's KeyFile and dkimpy read it (PKCS #1).
func (k *DKIMKey) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.Key)})
}

// Record is the key's DNS TXT value (RFC 6376 §3.6.1).
func (k *DKIMKey) Record() string {
	pub, err := x509.MarshalPKIXPublicKey(&k.Key.PublicKey)
	if err != nil {
		panic(err) // an RSA public key always marshals
	}
	return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(pub)
}

// Zone is the DNS zone of the key's domain, publishing it.
func (k *DKIMKey) Zone() Zone {
	return Zone{Name: k.Domain, Records: []string{TXT(k.Selector+"._domainkey", k.Record())}}
}

// pythonPath is the Python python found, once found.
var (
	pythonMu   sync.Mutex
	pythonPath string
)

// python finds a Python 3 that has dkimpy and dnspython (Debian: python3-dkim,
// python3-dnspython): the system's, not one a version manager put first in PATH.
func python(t T) string {
	t.Helper()
	pythonMu.Lock()
	defer pythonMu.Unlock()
	if pythonPath != "" {
		return pythonPath
	}
	cands := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		cands = append(cands, p)
	}
	for _, p := range cands {
		if exec.Command(p, "-c", "import dkim, dns.resolver").Run() == nil {
			pythonPath = p
			return p
		}
	}
	Missing(t, "no python3 with dkim and dns modules (apt-get install python3-dkim python3-dnspython)")
	return ""
}

// dkimVerifyPy verifies every DKIM-Signature of the message on stdin with dkimpy,
// asking the DNS server named by its arguments for the keys (dkimverify's code
// with a resolver of our choosing: dkimverify itself asks the system's).
const dkimVerifyPy = `
import sys, dkim, dns.resolver
host, port = sys.argv[1], int(sys.argv[2])
r = dns.resolver.Resolver(configure=False)
r.nameservers = [host]
r.port = port
r.lifetime = 5
def txt(name, timeout=5):
    try:
        ans = r.resolve(name.decode() if isinstance(name, bytes) else name, "TXT")
    except Exception as e:
        print("dns:", name, e)
        return None
    return b"".join(b"".join(rr.strings) for rr in ans)
msg = sys.stdin.buffer.read()
d = dkim.DKIM(msg)
n = sum(1 for h in d.headers if h[0].lower() == b"dkim-signature")
ok = n > 0
for i in range(n):
    try:
        res = d.verify(idx=i, dnsfunc=txt)
    except dkim.DKIMException as e:
        print("signature %d: %s" % (i, e))
        res = False
    print("signature %d: %s" % (i, "pass" if res else "fail"), d.signature_fields.get(b"d", b"").decode(), d.signature_fields.get(b"s", b"").decode())
    ok = ok and res
print("signatures:", n)
sys.exit(0 if ok else 1)
`

// DKIMVerify verifies every DKIM-Signature field of msg with dkimpy (Debian:
// python3-dkim), which fetches the keys from dnsServer ("127.0.0.1:PORT"). It
// reports whether there was at least one signature and all verified, with
// dkimpy's words.
func DKIMVerify(t T, msg []byte, dnsServer string) (bool, string) {
	t.Helper()
	py := python(t)
	host, port, _ := strings.Cut(dnsServer, ":")
	if _, err := strconv.Atoi(port); err != nil {
		t.Fatalf("realmilter: DKIMVerify: bad DNS server %q", dnsServer)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-c", dkimVerifyPy, host, port)
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if _, exit := err.(*exec.ExitError); !exit || ctx.Err() != nil {
			t.Fatalf("realmilter: dkimpy: %v: %s", err, out)
		}
	}
	return err == nil, string(out)
}

// dkimSignPy signs the message on stdin with dkimpy: key file, domain, selector,
// canonicalization ("relaxed/simple") and the header fields to sign.
const dkimSignPy = `
import sys, dkim
key = open(sys.argv[1], "rb").read()
hc, bc = sys.argv[4].split("/")
heads = [h.encode() for h in sys.argv[5].split(":")]
msg = sys.stdin.buffer.read()
sig = dkim.sign(msg, sys.argv[3].encode(), sys.argv[2].encode(), key,
                canonicalize=(hc.encode(), bc.encode()), include_headers=heads)
sys.stdout.buffer.write(sig + msg)
`

// DKIMSign signs msg (CRLF line ends) with dkimpy using k, canonicalization c
// ("relaxed/relaxed", "simple/simple" ...) over the header fields named in
// headers, and returns the message with its DKIM-Signature field first.
func DKIMSign(t T, k *DKIMKey, c string, headers []string, msg []byte) []byte {
	t.Helper()
	py := python(t)
	keyFile := filepath.Join(instanceDir(t, "dkimsign"), "key.pem")
	if err := os.WriteFile(keyFile, k.PEM(), 0o600); err != nil {
		t.Fatalf("realmilter: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-c", dkimSignPy, keyFile, k.Domain, k.Selector, c, strings.Join(headers, ":"))
	cmd.Stdin = bytes.NewReader(msg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("realmilter: dkimpy sign: %v: %s", err, stderr.String())
	}
	if !bytes.HasPrefix(out, []byte("DKIM-Signature:")) {
		t.Fatalf("realmilter: dkimpy sign: unexpected output %.200q", out)
	}
	return out
}

// String describes the key for messages.
func (k *DKIMKey) String() string {
	return fmt.Sprintf("%s._domainkey.%s (RSA %d)", k.Selector, k.Domain, k.Key.N.BitLen())
}
