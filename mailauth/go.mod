module github.com/midismtp/smtpd/mailauth

go 1.26.0

require (
	blitiri.com.ar/go/spf v1.6.0
	github.com/emersion/go-msgauth v0.7.0
	github.com/midismtp/smtpd v0.0.0
	go.yaml.in/yaml/v3 v3.0.5
	golang.org/x/net v0.63.0
)

require (
	github.com/emersion/go-sasl v0.0.0-20241020182733-b788ff22d5a6 // indirect
	github.com/midismtp/smtpd/internal/testenv v0.0.0
	golang.org/x/crypto v0.59.0 // indirect
	golang.org/x/text v0.44.0 // indirect
)

replace github.com/midismtp/smtpd => ../

replace github.com/midismtp/smtpd/internal/testenv => ../internal/testenv
