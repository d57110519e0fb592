// Package output renders results: tables for people, JSON and YAML for
// scripts. Machine output of one object is its protojson (lowerCamelCase
// field names, unset fields omitted); lists are {"items": [...]}.
package output

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"
)

// Format is the value of -o/--output.
type Format string

const (
	Table Format = "table"
	Wide  Format = "wide"
	JSON  Format = "json"
	YAML  Format = "yaml"
)

// ParseFormat checks the value of -o.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case Table, Wide, JSON, YAML:
		return f, nil
	}
	return "", fmt.Errorf("invalid output format %q: want table|json|yaml|wide", s)
}

// Machine reports whether f is for programs rather than people.
func (f Format) Machine() bool { return f == JSON || f == YAML }

// MarshalJSON renders one message as compact protojson.
func MarshalJSON(m proto.Message) ([]byte, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	// protojson randomises white space on purpose; compacting gives stable output.
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Message writes one message as JSON or YAML.
func Message(w io.Writer, f Format, m proto.Message) error {
	b, err := MarshalJSON(m)
	if err != nil {
		return err
	}
	return writeJSON(w, f, b)
}

// List writes messages as {"items": [...]}.
func List[T proto.Message](w io.Writer, f Format, items []T) error {
	raw := make([]json.RawMessage, 0, len(items))
	for _, m := range items {
		b, err := MarshalJSON(m)
		if err != nil {
			return err
		}
		raw = append(raw, b)
	}
	return Value(w, f, map[string]any{"items": raw})
}

// Value writes any JSON-encodable value as JSON or YAML.
func Value(w io.Writer, f Format, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	return writeJSON(w, f, b)
}

// JSONLine writes one message as a single line of JSON (for streams).
func JSONLine(w io.Writer, m proto.Message) error {
	b, err := MarshalJSON(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func writeJSON(w io.Writer, f Format, compact []byte) error {
	if f == YAML {
		y, err := yaml.JSONToYAML(compact)
		if err != nil {
			return fmt.Errorf("encode yaml: %w", err)
		}
		_, err = w.Write(y)
		return err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, compact, "", "  "); err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// TableWriter aligns tab-separated columns. Flush it when done.
func TableWriter(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
}

// Row writes one table row.
func Row(w io.Writer, cols ...string) {
	for i, c := range cols {
		if c == "" {
			c = "-"
		}
		cols[i] = c
	}
	fmt.Fprintln(w, strings.Join(cols, "\t"))
}

// Age renders how long ago ts was, like kubectl: 45s, 12m, 5h, 3d.
func Age(ts *timestamppb.Timestamp, now time.Time) string {
	if ts == nil {
		return "-"
	}
	d := now.Sub(ts.AsTime())
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

// Time renders a timestamp for detail views.
func Time(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}
