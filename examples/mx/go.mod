module github.com/midismtp/smtpd/examples/mx

go 1.26.0

require (
	github.com/d--j/go-milter v0.10.1
	github.com/midismtp/smtpd v0.0.0
	github.com/midismtp/smtpd/internal/testenv v0.0.0
	github.com/midismtp/smtpd/mailauth v0.0.0
	github.com/midismtp/smtpd/milter v0.0.0
)

require (
	blitiri.com.ar/go/spf v1.6.0 // indirect
	github.com/emersion/go-message v0.18.2 // indirect
	github.com/emersion/go-msgauth v0.7.0 // indirect
	github.com/emersion/go-sasl v0.0.0-20241020182733-b788ff22d5a6 // indirect
	golang.org/x/crypto v0.59.0 // indirect
	golang.org/x/net v0.63.0 // indirect
	golang.org/x/text v0.44.0 // indirect
)

replace (
	github.com/midismtp/smtpd => ../..
	github.com/midismtp/smtpd/internal/testenv => ../../internal/testenv
	github.com/midismtp/smtpd/mailauth => ../../mailauth
	github.com/midismtp/smtpd/milter => ../../milter
)
