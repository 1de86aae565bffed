package httpapi

import (
	"bytes"
	"net"
)

// CompatListener wraps the HTTP listener so that the old web manager's
// bridge requests are read as the HttpPushServer bridge read them. That
// site put the message into the URL as it was typed, spaces included
// ("GET /?act=user&…&data=hello world&ticket=… HTTP/1.0"); Go's HTTP
// server refuses such a request line with 400, the bridge pushed it. So
// on each connection the first request line, when it is a bridge request
// (GET /?…), has its raw spaces and control characters percent-encoded,
// and the connection is closed after that request, as the bridge closed
// every connection: the client's next request is again a first line.
// Every other request is passed on untouched.
func CompatListener(ln net.Listener) net.Listener { return &compatListener{ln} }

type compatListener struct{ net.Listener }

func (l *compatListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &compatConn{Conn: c}, nil
}

// maxRequestLine bounds how much of a bridge request line is read ahead;
// net/http's own header limit is 1 MB.
const maxRequestLine = 1 << 20

var bridgePrefix = []byte("GET /?")

// compatConn looks at the first request line of a connection before the
// HTTP server reads it.
type compatConn struct {
	net.Conn
	looked  bool
	pending []byte // read ahead, handed to the server first
	err     error  // what ended the read-ahead, after pending is handed over
}

func (c *compatConn) Read(p []byte) (int, error) {
	if !c.looked {
		c.looked = true
		c.pending, c.err = c.readFirstLine()
		if line, ok := fixBridgeRequestLine(c.pending); ok {
			c.pending = line
		}
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(p)
}

// readFirstLine reads until the end of the first line, or until the start
// shows it is not a bridge request. What it returns may run past the line.
func (c *compatConn) readFirstLine() ([]byte, error) {
	buf := make([]byte, 0, 512)
	for {
		if len(buf) >= len(bridgePrefix) && !bytes.HasPrefix(buf, bridgePrefix) {
			return buf, nil
		}
		if bytes.IndexByte(buf, '\n') >= 0 || len(buf) >= maxRequestLine {
			return buf, nil
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := c.Conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			return buf, err
		}
	}
}

// fixBridgeRequestLine rewrites the first line of b when it is a bridge
// request whose target holds bytes a request line cannot carry: each such
// byte is percent-encoded, and a Connection: close header follows the
// line. It reports whether it changed anything.
func fixBridgeRequestLine(b []byte) ([]byte, bool) {
	if !bytes.HasPrefix(b, bridgePrefix) {
		return b, false
	}
	end := bytes.IndexByte(b, '\n')
	if end < 0 {
		return b, false
	}
	line := bytes.TrimSuffix(b[:end], []byte("\r"))
	// The target runs from after "GET " to the last " HTTP/x.y".
	proto := bytes.LastIndex(line, []byte(" HTTP/"))
	if proto < len("GET ") || !isHTTPVersion(line[proto+1:]) {
		return b, false
	}
	target := line[len("GET "):proto]
	if !bytes.ContainsFunc(target, needsEscape) {
		return b, false
	}
	out := make([]byte, 0, len(b)+64)
	out = append(out, "GET "...)
	for _, c := range target {
		if needsEscape(rune(c)) {
			out = append(out, '%', "0123456789ABCDEF"[c>>4], "0123456789ABCDEF"[c&15])
			continue
		}
		out = append(out, c)
	}
	out = append(out, line[proto:]...)
	out = append(out, "\r\nConnection: close\r\n"...)
	return append(out, b[end+1:]...), true
}

// needsEscape: a space, a tab or another control character, which the
// bridge took as part of the value and a request line cannot carry.
// (Bytes of a raw UTF-8 message pass, as net/http takes them.)
func needsEscape(r rune) bool { return r <= ' ' || r == 0x7f }

// CloseWrite lets the HTTP server half-close the connection as it does a
// plain TCP one, so the client reads the whole answer before the close.
func (c *compatConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func isHTTPVersion(b []byte) bool {
	return len(b) == len("HTTP/1.1") && bytes.HasPrefix(b, []byte("HTTP/")) &&
		b[5] >= '0' && b[5] <= '9' && b[6] == '.' && b[7] >= '0' && b[7] <= '9'
}
