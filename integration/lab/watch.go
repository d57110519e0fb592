package lab

import "sync"

// watcher is the stop and done of a goroutine that watches the guest for as
// long as the lab runs (its stalls, its CPU).
type watcher struct {
	stop chan struct{} // closed by close
	done chan struct{} // closed by the goroutine as it returns
	once sync.Once
}

func newWatcher() watcher {
	return watcher{stop: make(chan struct{}), done: make(chan struct{})}
}

// close stops the goroutine and waits for it; it may be called again.
func (w *watcher) close() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
}
