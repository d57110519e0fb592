package output

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestMessageAndList(t *testing.T) {
	vs := &edgelbv1.VirtualService{Name: "web", Tenant: "default", Generation: 3}
	var buf bytes.Buffer
	if err := Message(&buf, JSON, vs); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil || m["name"] != "web" || m["generation"] != "3" {
		t.Fatalf("json = %s (%v)", buf.String(), err)
	}
	if _, ok := m["vip"]; ok {
		t.Error("unset fields must be omitted")
	}
	buf.Reset()
	if err := List(&buf, YAML, []*edgelbv1.VirtualService{vs}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(buf.String(), "items:\n- generation: \"3\"\n") {
		t.Errorf("yaml list = %q", buf.String())
	}
}

func TestAge(t *testing.T) {
	now := time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{30 * time.Second: "30s", 10 * time.Minute: "10m", 5 * time.Hour: "5h", 72 * time.Hour: "3d"} {
		if got := Age(timestamppb.New(now.Add(-d)), now); got != want {
			t.Errorf("Age(%v) = %s, want %s", d, got, want)
		}
	}
}
