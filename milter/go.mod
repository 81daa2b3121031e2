module github.com/midismtp/smtpd/milter

go 1.26.0

require (
	github.com/d--j/go-milter v0.10.1
	github.com/midismtp/smtpd v0.0.0
	github.com/stretchr/testify v1.12.1
)

require (
	github.com/emersion/go-message v0.18.2 // indirect
	github.com/emersion/go-sasl v0.0.0-20241020182733-b788ff22d5a6 // indirect
	github.com/midismtp/smtpd/internal/testenv v0.0.0
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/text v0.28.0 // indirect
)

replace github.com/midismtp/smtpd => ../

replace github.com/midismtp/smtpd/internal/testenv => ../internal/testenv
