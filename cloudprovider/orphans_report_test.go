package cloudprovider

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/edgelb/edgelb/cloudprovider/servicemap"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// apiserver is a minimal Kubernetes API for the sweep: /version and the
// Service list, which a test can make fail.
type apiserver struct {
	mu       sync.Mutex
	services []v1.Service
	fail     bool
}

func (a *apiserver) set(fail bool, svcs ...*v1.Service) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fail = fail
	a.services = nil
	for _, s := range svcs {
		a.services = append(a.services, *s)
	}
}

func (a *apiserver) client(t *testing.T) kubernetes.Interface {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/version":
			json.NewEncoder(w).Encode(map[string]string{"major": "1", "minor": "30", "gitVersion": "v1.30.0"})
		case "/api/v1/services":
			if a.fail {
				w.WriteHeader(http.StatusInternalServerError)
				json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: "Failure", Code: 500, Message: "etcd is down"})
				return
			}
			json.NewEncoder(w).Encode(v1.ServiceList{TypeMeta: metav1.TypeMeta{Kind: "ServiceList", APIVersion: "v1"}, Items: a.services})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	kube, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return kube
}

// The sweep's orphans ride the heartbeat to lbd (a real one) until they are
// deleted; a failed or empty Service list keeps the last complete report and
// adds nothing to it.
func TestSweepReportsOrphansOnHeartbeat(t *testing.T) {
	e := newEnv(t, "")
	live, gone := service("aaaa1111", 80), service("bbbb2222", 80)
	for _, s := range []*v1.Service{live, gone} {
		if _, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", s, nodes("10.0.0.1")); err != nil {
			t.Fatalf("EnsureLoadBalancer %s: %v", s.Name, err)
		}
	}
	goneName := servicemap.Name(gone, v1.IPv4Protocol)
	api := &apiserver{}
	s := &orphanSweeper{tenant: "cluster-a", kube: api.client(t), lbd: e.lb.c, timeout: 5 * time.Second}
	hb := e.lb.c.(heartbeater)
	tenants := edgelbv1.NewTenantServiceClient(e.c.Admin(t))
	// reported is what lbd shows after one heartbeat.
	reported := func(when string) []string {
		t.Helper()
		if err := s.beat(e.ctx, hb); err != nil {
			t.Fatalf("%s: heartbeat: %v", when, err)
		}
		r, err := tenants.ListTenants(e.ctx, &edgelbv1.ListTenantsRequest{})
		if err != nil {
			t.Fatalf("%s: ListTenants: %v", when, err)
		}
		for _, x := range r.Tenants {
			if x.Name == "cluster-a" {
				if x.LastSeen == nil {
					t.Errorf("%s: no heartbeat recorded", when)
				}
				return x.OrphanedServices
			}
		}
		t.Fatalf("%s: tenant cluster-a not listed: %v", when, r.Tenants)
		return nil
	}
	kubernetesSvc := service("kube0000")

	// lbd refuses the delete: the orphan is reported, the live one is not.
	var failDeletes atomic.Bool
	failDeletes.Store(true)
	e.c.Inject(t, func(_ context.Context, method string) error {
		if failDeletes.Load() && strings.HasSuffix(method, "/DeleteVirtualService") {
			return status.Error(codes.Unavailable, "injected: lbd is busy")
		}
		return nil
	})
	api.set(false, live, kubernetesSvc)
	if _, err := s.sweep(e.ctx); err == nil {
		t.Fatal("sweep with failing deletes reported no error")
	}
	if got := reported("delete failed"); !slices.Equal(got, []string{goneName}) {
		t.Fatalf("reported %v, want [%s]", got, goneName)
	}

	// A failed, then an empty, Service list: nothing new is reported (the
	// live Service is not taken for gone), the last complete report stays.
	api.set(true)
	if _, err := s.sweep(e.ctx); err == nil {
		t.Fatal("sweep on a failing Service list reported no error")
	}
	if got := reported("list failed"); !slices.Equal(got, []string{goneName}) {
		t.Errorf("after a failed list: reported %v, want [%s]", got, goneName)
	}
	api.set(false)
	if _, err := s.sweep(e.ctx); err == nil {
		t.Fatal("sweep on an empty Service list reported no error")
	}
	if got := reported("empty list"); !slices.Equal(got, []string{goneName}) {
		t.Errorf("after an empty list: reported %v, want [%s]", got, goneName)
	}

	// The delete succeeds: the name leaves the report, and the service lbd.
	failDeletes.Store(false)
	api.set(false, live, kubernetesSvc)
	if n, err := s.sweep(e.ctx); err != nil || n != 1 {
		t.Fatalf("sweep: deleted %d, %v; want 1", n, err)
	}
	if got := s.orphaned(); len(got) != 0 {
		t.Errorf("the sweeper still reports %v after deleting it", got)
	}
	if got := reported("deleted"); len(got) != 0 {
		t.Errorf("lbd still shows %v orphaned after the delete", got)
	}
	if e.lookup(t, "cluster-a", goneName) != nil || e.lookup(t, "cluster-a", servicemap.Name(live, v1.IPv4Protocol)) == nil {
		t.Errorf("after the sweep: %s should be gone and the live one kept", goneName)
	}
}
