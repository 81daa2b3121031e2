package milter

import (
	"fmt"
	"io"

	gomilter "github.com/d--j/go-milter"
)

// This file is the end of a message: each milter in order gets its end of
// message (the milters that did not get the content live get it first, as the
// milters before them changed it), and its changes are applied before the next.

// result is what the milters made of a message.
type result struct {
	outcome
	msg         *message                // the content, changed or not
	env         []gomilter.ModifyAction // envelope changes, in order
	quarantine  string
	quarantined bool
}

// finish ends the message: the rest of the content to the live milters, then
// each milter's end of message. It returns the verdict and the changes.
func (f *feeder) finish() result {
	f.endHeaders()
	f.sendBody(true)
	f.msg.size = f.off
	var res result
	for i, c := range f.conns {
		if f.done {
			break
		}
		if c.state != mOpen {
			continue
		}
		if i >= f.live {
			f.replay(i)
		}
		if !f.body[i] && !f.done && c.state == mOpen {
			f.sendChunk(nil, i, i+1) // go-milter needs a body event before the end of the message
		}
		if f.done || c.state != mOpen {
			continue
		}
		f.endOfMessage(c, &res)
	}
	res.outcome, res.msg = f.verdict, &f.msg
	return res
}

// endOfMessage sends one milter its end of message and applies its answer.
func (f *feeder) endOfMessage(c *mconn, res *result) {
	var mods []gomilter.ModifyAction
	act := f.ss.call(c, stEOM, func() (*gomilter.Action, error) {
		m, a, err := c.cs.End()
		mods = m
		return a, err
	})
	if act == nil {
		if c.reply != nil {
			f.stop(outcome{reply: c.reply})
		}
		return
	}
	if o, stop := f.ss.apply(c, stEOM, act); stop {
		f.stop(o)
		return
	}
	if err := checkMods(mods); err != nil {
		f.ss.fail(c, stEOM, err)
		if c.reply != nil {
			f.stop(outcome{reply: c.reply})
		}
		return
	}
	f.applyMods(c, mods, res)
}

// checkMods refuses changes that cannot be applied.
func checkMods(mods []gomilter.ModifyAction) error {
	for _, m := range mods {
		switch m.Type {
		case gomilter.ActionAddHeader, gomilter.ActionInsertHeader, gomilter.ActionChangeHeader:
			if !validName(m.HeaderName) {
				return fmt.Errorf("%w: %q", errBadEdit, m.HeaderName)
			}
		}
	}
	return nil
}

// applyMods applies one milter's changes, in the order it sent them.
func (f *feeder) applyMods(c *mconn, mods []gomilter.ModifyAction, res *result) {
	lead := c.leadSpace()
	var body []byte
	replaced := false
	for _, m := range mods {
		switch m.Type {
		case gomilter.ActionAddHeader:
			f.msg.addHeader(m.HeaderName, m.HeaderValue, lead)
		case gomilter.ActionInsertHeader:
			f.msg.insertHeader(int(m.HeaderIndex), m.HeaderName, m.HeaderValue, lead)
		case gomilter.ActionChangeHeader:
			f.msg.changeHeader(int(m.HeaderIndex), m.HeaderName, m.HeaderValue, lead)
		case gomilter.ActionReplaceBody:
			body, replaced = append(body, m.Body...), true
		case gomilter.ActionQuarantine:
			if !res.quarantined { // the first reason stays (Postfix: one HOLD)
				res.quarantine, res.quarantined = m.Reason, true
			}
		case gomilter.ActionAddRcpt, gomilter.ActionDelRcpt, gomilter.ActionChangeFrom:
			res.env = append(res.env, m)
		}
	}
	if replaced {
		f.msg.replaceBody(body)
	}
}

// replay sends a milter that did not get the content live the message as the
// milters before it left it: its header fields (the program's hidden ones left
// out), the end of the headers, the body in chunks.
func (f *feeder) replay(i int) {
	one := f.conns[i : i+1]
	for j := range f.msg.fields {
		fl := &f.msg.fields[j]
		if fl.hidden {
			continue
		}
		raw := f.msg.fieldBytes(fl, headerSizeLimit)
		f.each(one, stHeader, func(c *mconn) (*gomilter.Action, error) {
			name, value := splitField(raw, c.leadSpace())
			return c.cs.HeaderField(name, value, nil)
		})
	}
	f.each(one, stEOH, func(c *mconn) (*gomilter.Action, error) { return c.cs.HeaderEnd() })
	if f.chunk == nil {
		f.chunk = chunkPool.Get().(*[]byte)
	}
	r := f.msg.bodyReader()
	for !f.done && one[0].state == mOpen {
		n, err := io.ReadFull(r, *f.chunk)
		if n > 0 {
			f.sendChunk((*f.chunk)[:n], i, i+1)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return
		}
		if err != nil {
			f.stop(outcome{reply: replyTempFail})
			return
		}
	}
}
