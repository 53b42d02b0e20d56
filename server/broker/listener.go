package broker

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// connectTimeout is how long a new connection may take to send CONNECT
// (and, with TLS, to finish its handshake) before it is dropped.
const connectTimeout = 30 * time.Second

// listener serves mochi from a net.Listener we opened ourselves, so that the
// bound address is known as soon as Start returns and Close can wait until
// every connection goroutine has finished.
type listener struct {
	id  string
	nl  net.Listener
	log *slog.Logger
	wg  sync.WaitGroup // connection goroutines

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

var _ listeners.Listener = (*listener)(nil)

func newListener(id string, nl net.Listener, log *slog.Logger) *listener {
	return &listener{id: id, nl: nl, log: log, conns: map[net.Conn]struct{}{}}
}

func (l *listener) ID() string              { return l.id }
func (l *listener) Address() string         { return l.nl.Addr().String() }
func (l *listener) Protocol() string        { return "tcp" }
func (l *listener) Init(*slog.Logger) error { return nil }

func (l *listener) Serve(establish listeners.EstablishFn) {
	for {
		c, err := l.nl.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || l.isClosed() {
				return
			}
			// Out of file descriptors and the like: back off, keep serving.
			l.log.Warn("accepting connection", "error", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = c.Close()
			return
		}
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		_ = c.SetDeadline(time.Now().Add(connectTimeout))
		go func() {
			defer l.wg.Done()
			err := establish(l.id, c)
			l.log.Debug("connection ended", "remote", c.RemoteAddr().String(), "error", err)
			_ = c.Close()
			l.mu.Lock()
			delete(l.conns, c)
			l.mu.Unlock()
		}()
	}
}

// Close stops accepting, lets mochi disconnect its clients, then closes
// whatever connection is left (for example one that never sent CONNECT).
func (l *listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	_ = l.nl.Close()
	closeClients(l.id)
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
}

// wait returns once every connection goroutine has finished; call it after
// Close.
func (l *listener) wait() { l.wg.Wait() }

func (l *listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}
