// Package logcapture lets tests read what a component logs: a buffer that
// the component's goroutines (or a child process) write while the test
// reads, and the slog JSON records in it.
package logcapture

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Buffer is a bytes.Buffer safe for concurrent writers and readers.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Logger logs JSON records, debug level and up, into b.
func (b *Buffer) Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Records parses the JSON lines written so far; raw holds each line's text.
func (b *Buffer) Records() (recs []map[string]any, raw []string, err error) {
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			return nil, nil, fmt.Errorf("log line %q: %w", line, err)
		}
		recs = append(recs, m)
		raw = append(raw, line)
	}
	return recs, raw, nil
}

// MustRecords is Records for a test: a line that is not JSON fails it.
func (b *Buffer) MustRecords(t testing.TB) []map[string]any {
	t.Helper()
	recs, _, err := b.Records()
	if err != nil {
		t.Fatal(err)
	}
	return recs
}
