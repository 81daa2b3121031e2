module github.com/midismtp/smtpd/mailauth

go 1.26.0

require github.com/midismtp/smtpd v0.0.0

require (
	blitiri.com.ar/go/spf v1.6.0 // indirect
	github.com/emersion/go-msgauth v0.7.0 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	golang.org/x/net v0.63.0 // indirect
)

replace github.com/midismtp/smtpd => ../
