module smtpd-bench/tools

go 1.26
