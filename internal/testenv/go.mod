module github.com/midismtp/smtpd/internal/testenv

go 1.26.0

require github.com/d--j/go-milter v0.10.1

require (
	github.com/emersion/go-message v0.18.2 // indirect
	golang.org/x/text v0.28.0 // indirect
)
