package certs

import (
	"crypto/tls"
	"slices"
)

// Cipher presets: the TLS 1.2 cipher suite IDs of crypto/tls for the OpenSSL
// cipher strings of MidiSmtpServer (TLS_CIPHERS_ADVANCED_PLUS,
// TLS_CIPHERS_ADVANCED, TLS_CIPHERS_BROAD_COMP, TLS_CIPHERS_WIDEST_COMP and
// TLS_CIPHERS_LEGACY). See [MappingDoc] for the name-by-name mapping.
//
// Every ECDHE-RSA suite is preceded by its ECDHE-ECDSA twin so that ECDSA
// certificates (such as the one made by [SelfSigned]) work with TLS 1.2
// clients too; the server only ever picks the suites matching its key.
// Suites that crypto/tls does not implement (DHE-*, the SHA-384 CBC suites,
// AES256-SHA256) are left out. AdvancedPlus, Advanced and BroadCompatibility
// contain no suite that crypto/tls rates insecure (see
// [tls.InsecureCipherSuites]); WidestCompatibility and Legacy do include the
// insecure ones Ruby lists (CBC-SHA256, static RSA key exchange, and 3DES
// for Legacy). Each preset keeps Ruby's order, strongest first, although
// crypto/tls applies its own preference order to the suites it is given.
// TLS 1.3 suites are not configurable in crypto/tls and always enabled.
//
// The slices must not be modified; [Config] copies them.
var (
	// AdvancedPlus mirrors TLS_CIPHERS_ADVANCED_PLUS, Ruby's default.
	AdvancedPlus = []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	}
	// Advanced mirrors TLS_CIPHERS_ADVANCED; without the suite Go rates
	// insecure it equals AdvancedPlus.
	Advanced = slices.Clone(AdvancedPlus)

	// BroadCompatibility mirrors TLS_CIPHERS_BROAD_COMP.
	BroadCompatibility = slices.Concat(Advanced, []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	})

	// WidestCompatibility mirrors TLS_CIPHERS_WIDEST_COMP, insecure suites
	// included.
	WidestCompatibility = slices.Clone(widest)

	// Legacy mirrors TLS_CIPHERS_LEGACY, insecure suites (3DES too)
	// included.
	Legacy = slices.Concat(widest, []uint16{
		tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA, // insecure in crypto/tls
	})
)

// widest is the part shared by WidestCompatibility and Legacy.
var widest = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, // insecure in crypto/tls
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,   // insecure in crypto/tls
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_RSA_WITH_AES_256_GCM_SHA384, // insecure in crypto/tls
	tls.TLS_RSA_WITH_AES_128_GCM_SHA256, // insecure in crypto/tls
	tls.TLS_RSA_WITH_AES_128_CBC_SHA256, // insecure in crypto/tls
	tls.TLS_RSA_WITH_AES_256_CBC_SHA,    // insecure in crypto/tls
	tls.TLS_RSA_WITH_AES_128_CBC_SHA,    // insecure in crypto/tls
}

// Config returns a server *tls.Config holding cert, with MinVersion TLS 1.2
// (TLS 1.3 enabled; crypto/tls picks its suites) and CipherSuites a copy of
// suites; nil or empty suites mean [AdvancedPlus].
func Config(cert tls.Certificate, suites []uint16) *tls.Config {
	if len(suites) == 0 {
		suites = AdvancedPlus
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		CipherSuites: slices.Clone(suites),
	}
}

// MappingDoc is a Markdown table, for the README, of how the OpenSSL cipher
// names in MidiSmtpServer's cipher strings map to crypto/tls constants, and
// which names Go does not offer.
const MappingDoc = "" +
	"| OpenSSL name (Ruby) | Ruby strings | crypto/tls constants | Go presets |\n" +
	"|---|---|---|---|\n" +
	"| `ECDHE-RSA-AES256-GCM-SHA384` | all five | `TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384` (+ `TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384`) | all five |\n" +
	"| `ECDHE-RSA-AES128-GCM-SHA256` | all five | `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256` (+ `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`) | all five |\n" +
	"| `ECDHE-RSA-AES128-SHA256` | Advanced, Broad, Widest, Legacy | `TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256` (+ `TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256`), insecure in Go | Widest, Legacy |\n" +
	"| `ECDHE-RSA-AES256-SHA` | Broad, Widest, Legacy | `TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA` (+ `TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA`) | Broad, Widest, Legacy |\n" +
	"| `ECDHE-RSA-AES128-SHA` | Broad, Widest, Legacy | `TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA` (+ `TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA`) | Broad, Widest, Legacy |\n" +
	"| `AES256-GCM-SHA384` | Widest, Legacy | `TLS_RSA_WITH_AES_256_GCM_SHA384`, insecure in Go | Widest, Legacy |\n" +
	"| `AES128-GCM-SHA256` | Widest, Legacy | `TLS_RSA_WITH_AES_128_GCM_SHA256`, insecure in Go | Widest, Legacy |\n" +
	"| `AES128-SHA256` | Widest, Legacy | `TLS_RSA_WITH_AES_128_CBC_SHA256`, insecure in Go | Widest, Legacy |\n" +
	"| `AES256-SHA` | Widest, Legacy | `TLS_RSA_WITH_AES_256_CBC_SHA`, insecure in Go | Widest, Legacy |\n" +
	"| `AES128-SHA` | Widest, Legacy | `TLS_RSA_WITH_AES_128_CBC_SHA`, insecure in Go | Widest, Legacy |\n" +
	"| `DES-CBC3-SHA` | Legacy | `TLS_RSA_WITH_3DES_EDE_CBC_SHA`, insecure in Go | Legacy |\n" +
	"| `DHE-RSA-AES256-GCM-SHA384` | all five | not offered by Go | none |\n" +
	"| `DHE-RSA-AES128-GCM-SHA256` | all five | not offered by Go | none |\n" +
	"| `DHE-RSA-AES256-SHA256` | Advanced, Broad, Widest, Legacy | not offered by Go | none |\n" +
	"| `DHE-RSA-AES128-SHA256` | Advanced, Broad, Widest, Legacy | not offered by Go | none |\n" +
	"| `ECDHE-RSA-AES256-SHA384` | Advanced, Broad, Widest, Legacy | not offered by Go | none |\n" +
	"| `DHE-RSA-AES256-SHA` | Broad, Widest, Legacy | not offered by Go | none |\n" +
	"| `DHE-RSA-AES128-SHA` | Broad, Widest, Legacy | not offered by Go | none |\n" +
	"| `AES256-SHA256` | Widest, Legacy | not offered by Go | none |\n" +
	"\n" +
	"Ruby strings: Advanced Plus = `TLS_CIPHERS_ADVANCED_PLUS`, Advanced = `TLS_CIPHERS_ADVANCED`, " +
	"Broad = `TLS_CIPHERS_BROAD_COMP`, Widest = `TLS_CIPHERS_WIDEST_COMP`, Legacy = `TLS_CIPHERS_LEGACY`. " +
	"Go presets: `AdvancedPlus`, `Advanced`, `BroadCompatibility`, `WidestCompatibility`, `Legacy`.\n" +
	"\n" +
	"Notes:\n" +
	"\n" +
	"- These presets apply to TLS 1.2 only. TLS 1.3 is always enabled and its suites " +
	"(`TLS_AES_128_GCM_SHA256`, `TLS_AES_256_GCM_SHA384`, `TLS_CHACHA20_POLY1305_SHA256`) are chosen by Go.\n" +
	"- Each ECDHE-RSA suite comes with its ECDHE-ECDSA twin (in parentheses) so that ECDSA certificates, " +
	"including the generated self-signed one, work with TLS 1.2 clients; Ruby only lists RSA suites because " +
	"its self-signed certificate is RSA.\n" +
	"- Suites marked \"insecure in Go\" are in `tls.InsecureCipherSuites()` (static RSA key exchange, CBC with SHA-256, 3DES). " +
	"They are only part of `WidestCompatibility` and `Legacy`; for that reason `Advanced` drops `ECDHE-RSA-AES128-SHA256` " +
	"and ends up equal to `AdvancedPlus`.\n" +
	"- DHE key exchange, the SHA-384 CBC suites and `AES256-SHA256` are not implemented by crypto/tls, so they are not offered.\n" +
	"- Go applies its own preference order to the configured suites; the presets keep Ruby's order, strongest first.\n"
