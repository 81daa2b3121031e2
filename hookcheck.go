package smtpd

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// This file checks a Handler's method set for hooks the server would never call:
// a misspelled name (OnRcpt, OnData, OnMessageRecieved) compiles — the embedded
// BaseHandler supplies the real hook — and silently does nothing.

// optionalHooks are the hooks of the optional interfaces, with the interface each
// method must satisfy to be called.
var optionalHooks = map[string]reflect.Type{
	"OnMessageStream":    reflect.TypeFor[MessageStreamer](),
	"OnMessageRecipient": reflect.TypeFor[RecipientHandler](),
	"OnDataCommand":      reflect.TypeFor[DataCommandHandler](),
	"OnReset":            reflect.TypeFor[ResetHandler](),
	"OnAuthToken":        reflect.TypeFor[TokenAuthHandler](),
	"OnAuthExternal":     reflect.TypeFor[ExternalAuthHandler](),
}

// hookAliases are the names other libraries give to our hooks (go-smtp's Session,
// chrj/smtpd's checkers, Ruby's events), lower-cased: what a newcomer types.
var hookAliases = map[string]string{
	"ondata": "OnMessage", "onmail": "OnMailFrom", "onrcpt": "OnRcptTo", "onrecipient": "OnRcptTo",
	"onsender": "OnMailFrom", "onlogout": "OnDisconnect", "onquit": "OnDisconnect", "onclose": "OnDisconnect",
	"onehlo": "OnHelo", "onlogin": "OnAuth", "onauthplain": "OnAuth", "onrset": "OnReset",
	"onmessagedata": "OnMessage", "onconnection": "OnConnect",
}

// CheckHandler reports the exported methods of h that are named like a hook ("On"
// and an upper-case letter) but are none the server calls — a misspelling, or an
// optional hook with the wrong signature — each naming the hook it probably meant.
// Start logs each at Warn; smtptest.NewServer fails the test on them.
func CheckHandler(h Handler) error {
	if h == nil {
		return nil
	}
	t := reflect.TypeOf(h)
	var errs []error
	for i := range t.NumMethod() {
		if err := checkHookMethod(t, t.Method(i).Name); err != nil {
			errs = append(errs, err)
		}
	}
	if t.Kind() != reflect.Pointer { // a hook with a pointer receiver is not in a value's method set
		pt := reflect.PointerTo(t)
		for i := range pt.NumMethod() {
			name := pt.Method(i).Name
			if _, inValue := t.MethodByName(name); !inValue && isHookName(name) {
				errs = append(errs, fmt.Errorf("smtpd: %s.%s is never called: its receiver is a pointer but the Handler is a %s value; use &%s{...}",
					t, name, t, t))
			}
		}
	}
	return errors.Join(errs...)
}

// isHookName reports whether a method name looks like a hook: "On" and an upper-case letter.
func isHookName(name string) bool {
	return len(name) >= 3 && strings.HasPrefix(name, "On") && name[2] >= 'A' && name[2] <= 'Z'
}

// checkHookMethod checks one method name of handler type t.
func checkHookMethod(t reflect.Type, name string) error {
	if !isHookName(name) {
		return nil
	}
	if _, ok := reflect.TypeFor[Handler]().MethodByName(name); ok {
		return nil
	}
	if iface, ok := optionalHooks[name]; ok {
		if t.Implements(iface) {
			return nil
		}
		m, _ := iface.MethodByName(name)
		return fmt.Errorf("smtpd: %s.%s is never called: its signature is not %s's %s%s",
			t, name, iface, name, strings.TrimPrefix(m.Type.String(), "func"))
	}
	if want := likelyHook(name); want != "" {
		return fmt.Errorf("smtpd: %s.%s is no hook and is never called; did you mean %s?", t, name, want)
	}
	return fmt.Errorf("smtpd: %s.%s is named like a hook but is none; the server never calls it", t, name)
}

// hookNames lists every hook the server calls.
func hookNames() []string {
	var names []string
	ht := reflect.TypeFor[Handler]()
	for i := range ht.NumMethod() {
		names = append(names, ht.Method(i).Name)
	}
	for name := range optionalHooks {
		names = append(names, name)
	}
	return names
}

// likelyHook returns the hook a misnamed method probably meant, or "": another
// library's name for it; a hook the name begins with (OnMessageRecieved:
// OnMessage); the shortest hook that begins with the name (OnRcpt: OnRcptTo); or the
// nearest by edit distance, if near.
func likelyHook(name string) string {
	lower := strings.ToLower(name)
	if alias, ok := hookAliases[lower]; ok {
		return alias
	}
	best, bestDist := "", 4
	var prefixOf, extends string
	for _, hook := range hookNames() {
		h := strings.ToLower(hook)
		switch {
		case strings.HasPrefix(lower, h) && len(hook) > len(prefixOf):
			prefixOf = hook
		case strings.HasPrefix(h, lower) && (extends == "" || len(hook) < len(extends)):
			extends = hook
		}
		if d := editDistance(lower, h); d < bestDist || d == bestDist && hook < best {
			best, bestDist = hook, d
		}
	}
	switch {
	case bestDist <= 2:
		return best
	case prefixOf != "":
		return prefixOf
	case extends != "":
		return extends
	}
	return best
}

// editDistance is the Levenshtein distance of a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
