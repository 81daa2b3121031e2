package testenv

import (
	"context"
	"strings"
	"testing"
	"time"
)

// Step is one thing done to a message on its way to the receiver; a SignJob's steps are
// done in order by scripts/sign.py. The signatures are dkimpy's and OpenDKIM's own.
type Step struct {
	// Op is "dkim" (sign), "arc" (one forwarding hop: Authentication-Results with dkimpy's
	// verdicts and chain validation status, then an ARC set), "prepend" (raw header lines
	// on top), "append" (text at the end of the body), "replace" (Old by New, Count times,
	// -1 for all, 0 for once) or "repeat" (the topmost field named Text, Count more copies).
	Op string `json:"op"`
	// Via picks the signer: for dkim "api" (dkimpy's DKIM.sign, the default), "dkimsign"
	// (python3-dkim's command) or "opendkim" (OpenDKIM's opendkim-testmsg, which signs with
	// its own defaults, rsa-sha1 and relaxed/simple, and wants a Date field); for arc "api"
	// (dkimpy's arc_sign) or "arcsign" (python3-dkim's command).
	Via      string   `json:"via,omitempty"`
	Key      string   `json:"key,omitempty"`      // private key file (Key.File)
	Alg      string   `json:"alg,omitempty"`      // a=: "rsa-sha256" (default), "rsa-sha1", "ed25519-sha256"
	Selector string   `json:"selector,omitempty"` // s=
	Domain   string   `json:"domain,omitempty"`   // d=
	Canon    string   `json:"canon,omitempty"`    // c=, "relaxed/simple" by default
	Headers  []string `json:"headers,omitempty"`  // h=; nil: dkimpy's default list
	Identity string   `json:"identity,omitempty"` // i=
	Length   int      `json:"length,omitempty"`   // -1: l= of the whole canonical body
	Time     int64    `json:"time,omitempty"`     // t= (0: now)
	Expire   int64    `json:"expire,omitempty"`   // x= (0: none)
	SrvID    string   `json:"srv_id,omitempty"`   // arc: the forwarder's authserv-id
	Text     string   `json:"text,omitempty"`     // prepend, append, repeat
	Old      string   `json:"old,omitempty"`      // replace
	New      string   `json:"new,omitempty"`      // replace
	Count    int      `json:"count,omitempty"`    // replace, repeat
}

// SignJob is one message and what is done to it.
type SignJob struct {
	ID      string `json:"id"`
	Message []byte `json:"message"`
	Steps   []Step `json:"steps"`
}

// DKIM returns a dkim Step signed by dkimpy's API with key, selector and domain.
func DKIM(k *Key, selector, domain string) Step {
	alg := "rsa-sha256"
	if k.Algorithm == "ed25519" {
		alg = "ed25519-sha256"
	}
	return Step{Op: "dkim", Key: k.File, Alg: alg, Selector: selector, Domain: domain}
}

// ARC returns an arc Step: one hop sealed by dkimpy's arc_sign with key, selector and
// domain, the hop's authserv-id being srvID.
func ARC(k *Key, selector, domain, srvID string) Step {
	return Step{Op: "arc", Key: k.File, Selector: selector, Domain: domain, SrvID: srvID}
}

// Sign runs every job through scripts/sign.py in one Python process, its DNS queries (an ARC
// forwarder verifies what it forwards) going to dnsAddr, and returns the messages by job ID.
// A job the signers refused fails the test. The dkimsign, arcsign and opendkim-testmsg
// programs are needed only when a step asks for them.
func Sign(t testing.TB, dnsAddr string, jobs []SignJob) map[string][]byte {
	t.Helper()
	for _, j := range jobs {
		for _, s := range j.Steps {
			switch s.Via {
			case "dkimsign", "arcsign":
				Need(t, s.Via)
			case "opendkim":
				Need(t, "opendkim-testmsg")
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out struct {
		Results map[string]struct {
			Message []byte `json:"message"`
			Error   string `json:"error"`
			Ms      int    `json:"ms"`
		} `json:"results"`
	}
	in := map[string]any{"dns": dnsAddr, "jobs": jobs}
	if err := runScript(ctx, t, "sign.py", nil, in, &out); err != nil {
		t.Fatal(err)
	}
	msgs := make(map[string][]byte, len(jobs))
	ms := map[string]int{}
	for id, r := range out.Results {
		ms[id] = r.Ms
	}
	logSlowest(t, "signing", ms)
	var failed []string
	for _, j := range jobs {
		r, ok := out.Results[j.ID]
		switch {
		case !ok:
			failed = append(failed, j.ID+": no answer")
		case r.Error != "":
			failed = append(failed, j.ID+": "+r.Error)
		default:
			msgs[j.ID] = r.Message
		}
	}
	if len(failed) > 0 {
		t.Fatalf("signing failed:\n%s", strings.Join(failed, "\n"))
	}
	return msgs
}
