'use strict';
// Send one message with nodemailer, for the smtpd real-client tests
// (clients_cli_test.go). Reads a JSON spec on stdin:
//
//   host, port        the server (loopback)
//   secure            true: implicit TLS from the first byte
//   requireTLS        true: STARTTLS must succeed before anything else
//   ca                PEM file to trust (the server's certificate); verification is on
//   user, pass        AUTH credentials (none when user is empty)
//   name              the EHLO argument
//   from, to          addresses, for the header fields and the envelope
//   subject, text     the message; messageId and date make it reproducible
//
// Prints sendMail's info (envelope, accepted, rejected, response) as JSON on stdout
// and nodemailer's protocol log ("C:" and "S:" lines, credentials masked) on stderr.
const fs = require('fs');
const util = require('util');
const nodemailer = require('nodemailer');

// logger writes nodemailer's log to stderr, every line prefixed with "C:" (sent by
// the client), "S:" (sent by the server) or the level.
function log(level) {
    return (entry, ...args) => {
        const prefix = { client: 'C:', server: 'S:' }[entry && entry.tnx] || level;
        for (const line of util.format(...args).split('\n')) {
            process.stderr.write(`${prefix} ${line}\n`);
        }
    };
}
const logger = {};
for (const level of ['trace', 'debug', 'info', 'warn', 'error', 'fatal']) {
    logger[level] = log(level.toUpperCase());
}

function main(spec) {
    const options = {
        host: spec.host,
        port: spec.port,
        secure: !!spec.secure,
        requireTLS: !!spec.requireTLS,
        name: spec.name,
        connectionTimeout: 20000,
        greetingTimeout: 20000,
        socketTimeout: 20000,
        tls: { rejectUnauthorized: true },
        logger,
        debug: true
    };
    if (spec.ca) {
        options.tls.ca = fs.readFileSync(spec.ca);
    }
    if (spec.user) {
        options.auth = { user: spec.user, pass: spec.pass };
    }
    const transport = nodemailer.createTransport(options);
    transport.sendMail(
        {
            from: spec.from,
            to: spec.to,
            subject: spec.subject,
            text: spec.text,
            messageId: spec.messageId,
            date: new Date(spec.date)
        },
        (err, info) => {
            transport.close();
            if (err) {
                process.stderr.write(`sendMail: ${err.stack || err}\n`);
                process.exitCode = 1;
                return;
            }
            const out = { envelope: info.envelope, accepted: info.accepted, rejected: info.rejected, response: info.response };
            process.stdout.write(JSON.stringify(out) + '\n');
        }
    );
}

main(JSON.parse(fs.readFileSync(0, 'utf8')));
