module github.com/midismtp/smtpd/internal/testenv

go 1.26.0
