package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// checkJSONText refuses a request body that encoding/json would change
// without a word: bytes that are not UTF-8, and \u escapes naming half a
// UTF-16 surrogate pair. It replaces both with U+FFFD, so a payload (or a
// user id, whose md5 is the target) would arrive different from what was
// sent. Payloads that are not text go in binaryData, as base64.
func checkJSONText(b []byte) error {
	if !utf8.Valid(b) {
		at := 0
		for at < len(b) {
			r, n := utf8.DecodeRune(b[at:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			at += n
		}
		return fmt.Errorf("request body is not valid UTF-8 (byte %d is 0x%02x): JSON text must be UTF-8, so send a payload that is not text as binaryData (base64)", at, b[at])
	}
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !inString {
			inString = c == '"'
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			if i+1 >= len(b) || b[i+1] != 'u' {
				i++ // an escaped character: skip it
				continue
			}
			r1, ok := hex4(b, i+2)
			if !ok {
				continue // not an escape: the JSON decoder reports it
			}
			if !utf16.IsSurrogate(r1) {
				i += 5
				continue
			}
			if r1 < 0xdc00 && i+11 < len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
				if r2, ok := hex4(b, i+8); ok && r2 >= 0xdc00 && r2 <= 0xdfff {
					i += 11 // a whole pair
					continue
				}
			}
			return fmt.Errorf("request body holds \\u%04x (at byte %d), half of a UTF-16 surrogate pair that names no character: "+
				"send valid Unicode text, or a payload that is not text as binaryData (base64)", r1, i)
		}
	}
	return nil
}

// hex4 reads the four hex digits at b[i:i+4].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(d)
	}
	return r, true
}

// unknownFieldError rewrites encoding/json's "unknown field" error into
// one that lists the fields the endpoint takes: a misspelt field must not
// look like a syntax error, and must never be ignored.
func unknownFieldError(err error, v any) error {
	name, ok := strings.CutPrefix(err.Error(), "json: unknown field ")
	if !ok {
		return nil
	}
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var fields []string
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if tag != "" && tag != "-" {
			fields = append(fields, tag)
		}
	}
	return errors.New("unknown field " + name + ": this endpoint takes " + strings.Join(fields, ", "))
}

// checkRepeatedFields refuses an object that names one field twice:
// encoding/json keeps the last value and drops the other without a word
// (and matches names regardless of case, so "data" and "Data" are one
// field). It looks at the top-level object only, which is where every
// field of the API lives.
func checkRepeatedFields(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil // not an object: the real decoding says what is wrong
	}
	seen := map[string]string{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil
		}
		name, _ := t.(string)
		if first, ok := seen[strings.ToLower(name)]; ok {
			if first == name {
				return fmt.Errorf("field %q appears twice: give each field once", name)
			}
			return fmt.Errorf("fields %q and %q are the same field (names match regardless of case): give it once", first, name)
		}
		seen[strings.ToLower(name)] = name
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}
