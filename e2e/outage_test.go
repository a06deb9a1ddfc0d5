package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kdedup/kdedup/internal/e2e"
)

// outageListener is a kfake broker's listener that can go down and come
// back on the same address: down closes the socket (connections are then
// refused, as by a broker whose process is gone) and every connection it
// accepted (reset, as by a broker that crashed or a network that broke);
// up listens again. The cluster behind it keeps its state and its clocks:
// it sees its clients vanish, as brokers cut off from them do (sessions
// expire, transactions time out).
type outageListener struct {
	addr  net.Addr
	mu    sync.Mutex
	ln    net.Listener
	down  bool
	back  chan struct{} // closed when up again
	shut  bool          // closed for good (the cluster's Close)
	conns map[net.Conn]bool
}

func (l *outageListener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		ln := l.ln
		l.mu.Unlock()
		c, err := ln.Accept()
		l.mu.Lock()
		switch {
		case err == nil && l.down:
			l.mu.Unlock()
			c.Close()
			continue
		case err == nil:
			l.conns[c] = true
			l.mu.Unlock()
			return &outageConn{Conn: c, l: l}, nil
		case l.shut:
			l.mu.Unlock()
			return nil, err
		case l.down:
			back := l.back
			l.mu.Unlock()
			<-back // up again, or shut
			continue
		}
		l.mu.Unlock()
		return nil, err
	}
}

func (l *outageListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shut {
		return nil
	}
	l.shut = true
	if l.down {
		close(l.back)
		return nil
	}
	return l.ln.Close()
}

func (l *outageListener) Addr() net.Addr { return l.addr }

// cut takes the broker off the network.
func (l *outageListener) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down || l.shut {
		return
	}
	l.down = true
	l.back = make(chan struct{})
	l.ln.Close()
	for c := range l.conns {
		c.Close()
	}
	clear(l.conns)
}

// restore listens on the broker's address again.
func (l *outageListener) restore() error {
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port may take a moment to be free
		if ln, err = net.Listen("tcp", l.addr.String()); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shut {
		return ln.Close()
	}
	l.ln, l.down = ln, false
	close(l.back)
	return nil
}

type outageConn struct {
	net.Conn
	l *outageListener
}

func (c *outageConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c.Conn)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// outage is every broker's listener of a cluster.
type outage struct {
	mu  sync.Mutex
	lns []*outageListener
}

// listen is the cluster's kfake.ListenFn.
func (o *outage) listen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	l := &outageListener{addr: ln.Addr(), ln: ln, conns: map[net.Conn]bool{}}
	o.mu.Lock()
	o.lns = append(o.lns, l)
	o.mu.Unlock()
	return l, nil
}

// cut makes every broker unreachable at once.
func (o *outage) cut() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, l := range o.lns {
		l.cut()
	}
}

// restore brings every broker back.
func (o *outage) restore() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	var errs []error
	for _, l := range o.lns {
		errs = append(errs, l.restore())
	}
	return errors.Join(errs...)
}

// outageSetup is fakeSetup on three brokers whose listeners can be cut.
func outageSetup(t *testing.T) (*env, *outage) {
	t.Helper()
	if realBrokers() != nil {
		t.Skip("cuts the in-process brokers off: runs in make test")
	}
	o := &outage{}
	tp := e2e.NewTopics("")
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(e2e.Partitions, tp.Inputs()...), kfake.ListenFn(o.listen))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &env{bs: c.ListenAddrs(), tp: tp, fake: c}, o
}

// readyz answers GET /readyz of admin address addr: its status code, 0
// when it does not answer.
func readyz(addr string) int {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// outageDuration is KDEDUP_OUTAGE (a Go duration), by default 30s.
func outageDuration(t *testing.T) time.Duration {
	d := 30 * time.Second
	if s := os.Getenv("KDEDUP_OUTAGE"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 {
			t.Fatalf("KDEDUP_OUTAGE=%q: want a duration", s)
		}
	}
	return d
}

// sessionTimeout is kdedup's group session timeout (consumer.Options'
// default): the longest a member cut off from its group stays in it.
const sessionTimeout = 45 * time.Second

// TestLongOutage cuts every broker off from kdedup (and from everyone
// else) in the middle of a workload, for KDEDUP_OUTAGE (30s by default;
// KDEDUP_OUTAGE=5m for the long run), then brings them back. kdedup must
// not exit; /readyz must answer 503 before the outage is over and at the
// latest a session timeout into it, and 200 again once kdedup processes
// again, by itself; the result must be exactly once (nothing lost, nothing
// twice, every decision right). The readiness timeline is logged.
func TestLongOutage(t *testing.T) {
	e, o := outageSetup(t)
	d := outageDuration(t)
	seed := testSeed(t)
	admin := freeAddr(t)
	in := start(t, e.config(t, "outage", "admin_addr: "+admin+"\n"))
	waitReady := func(within time.Duration) time.Duration {
		began := time.Now()
		for readyz(admin) != http.StatusOK {
			if time.Since(began) > within {
				t.Fatalf("/readyz not 200 within %v (%d)\nkdedup's goroutines and log: %s", within, readyz(admin), in.dump())
			}
			time.Sleep(100 * time.Millisecond)
		}
		return time.Since(began)
	}
	waitReady(time.Minute)

	// Events at a steady rate from 3s before the cut to 12s after it: a
	// transaction is open when the brokers go, and the producer holds the
	// rest until they are back.
	const n, rate = 6_000, 400
	p := startProducing(context.Background(), producerClient(t, e), e.tp.NewWorkload(seed, n), n, rate)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.sent.wait(ctx, 3*rate); err != nil {
		t.Fatal(err)
	}

	cut := time.Now()
	o.cut()
	var timeline []string
	last, unready := -1, time.Duration(-1)
	for time.Since(cut) < d {
		code := readyz(admin)
		at := time.Since(cut)
		if code != last {
			timeline = append(timeline, fmt.Sprintf("%v: %d", at.Round(100*time.Millisecond), code))
			last = code
		}
		if code != http.StatusOK && unready < 0 {
			unready = at
		}
		select {
		case err := <-in.done:
			t.Fatalf("kdedup exited %v into the outage: %v\n%s", at, err, in.logs)
		case <-time.After(250 * time.Millisecond):
		}
	}
	if err := o.restore(); err != nil {
		t.Fatalf("bringing the brokers back: %v", err)
	}
	restored := time.Now()
	back := waitReady(3 * time.Minute)
	timeline = append(timeline, fmt.Sprintf("%v: 200 (%v after the brokers came back)", time.Since(cut).Round(100*time.Millisecond), back.Round(100*time.Millisecond)))
	t.Logf("outage of %v; /readyz from the cut on: %s", d, strings.Join(timeline, ", "))
	p.wait(t)
	rep := e.verify(t, n)
	caughtUp := time.Since(restored)
	in.running(t, "after the outage")
	if !rep.OK() {
		t.Fatalf("seed %d: %v\nkdedup's goroutines and log: %s", seed, rep, in.dump())
	}
	in.stop(t)
	t.Logf("long outage: every result read %v after the brokers came back; sessions rebuilt %d: %v", caughtUp.Round(time.Second), in.rebuilds.get(), rep)
	switch {
	case unready < 0:
		t.Fatalf("/readyz answered 200 throughout an outage of %v", d)
	case unready > sessionTimeout:
		t.Fatalf("/readyz answered 200 for %v of the outage: longer than the session timeout %v", unready.Round(time.Second), sessionTimeout)
	}
}
