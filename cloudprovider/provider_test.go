package cloudprovider

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8scloud "k8s.io/cloud-provider"
)

// TestInitCloudProviderAfterRegister goes the way the CCM main does: Register,
// then k8s.io/cloud-provider's InitCloudProvider with --cloud-provider and
// --cloud-config, and uses what comes back against a real lbd.
func TestInitCloudProviderAfterRegister(t *testing.T) {
	if !k8scloud.IsCloudProvider(ProviderName) { // registering twice is fatal upstream (-count=2)
		Register()
	}
	e := newEnv(t, "")
	addr := e.c.Members[0].Addr
	// As deployed: the cloud-provider identity of the cluster's tenant.
	f := e.c.ClientFiles(t, "cloud-provider", "cluster-a")
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "cloud.yaml")
	cfgText := fmt.Sprintf("endpoints: [%s]\nrequestTimeout: 2s\ntls: {caFile: %s, certFile: %s, keyFile: %s}\n", addr, f.CA, f.Cert, f.Key)
	if err := os.WriteFile(cfgFile, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}

	cloud, err := k8scloud.InitCloudProvider("edgelb", cfgFile)
	if err != nil || cloud == nil {
		t.Fatalf("InitCloudProvider = %v, %v", cloud, err)
	}
	if got := cloud.ProviderName(); got != "edgelb" {
		t.Errorf("ProviderName() = %q, want edgelb", got)
	}
	if !cloud.HasClusterID() {
		t.Error("HasClusterID() = false, want true (the cluster name is the tenant)")
	}
	for name, ok := range map[string]bool{
		"Instances": second(cloud.Instances()), "Zones": second(cloud.Zones()),
		"Clusters": second(cloud.Clusters()), "Routes": second(cloud.Routes()),
	} {
		if ok {
			t.Errorf("%s() is supported; edgelb implements none of it", name)
		}
	}

	lb, ok := cloud.LoadBalancer()
	if !ok {
		t.Fatal("LoadBalancer() not supported")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := service("abababab", 80)
	st, err := lb.EnsureLoadBalancer(ctx, "cluster-a", s, nodes("10.0.0.1"))
	if err != nil {
		t.Fatalf("EnsureLoadBalancer through the initialised provider: %v", err)
	}
	if len(st.Ingress) != 1 || !strings.HasPrefix(st.Ingress[0].IP, "10.250.0.") {
		t.Fatalf("ingress %v, want a VIP from pool a", st.Ingress)
	}
	if all, _ := e.all(t); len(all) != 1 || all[0].Tenant != "cluster-a" {
		t.Fatalf("lbd holds %v, want one virtual service of cluster-a", all)
	}

	inst, ok := cloud.InstancesV2()
	if !ok {
		t.Fatal("InstancesV2() not supported")
	}
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}}
	if md, err := inst.InstanceMetadata(ctx, n); err != nil || md.ProviderID != "edgelb://w1" {
		t.Errorf("InstanceMetadata = %+v, %v", md, err)
	}

	// The factory's own refusals come back through InitCloudProvider.
	if _, err := k8scloud.InitCloudProvider("edgelb", ""); err == nil || !strings.Contains(err.Error(), "--cloud-config is required") {
		t.Errorf("without --cloud-config: err = %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("endpoints: ["+addr+"]\ntenent: typo\n"), 0o600)
	if _, err := k8scloud.InitCloudProvider("edgelb", bad); err == nil || !strings.Contains(err.Error(), "tenent") {
		t.Errorf("with an unknown key: err = %v", err)
	}
}

func second[T any](_ T, ok bool) bool { return ok }

// TestInstanceShutdownAndExists: edgelb has no machine inventory, so an
// existing Node is never reported shut down (nor gone), whatever it says.
func TestInstanceShutdownAndExists(t *testing.T) {
	ctx := context.Background()
	for _, n := range []*v1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "ready"}, Spec: v1.NodeSpec{ProviderID: "edgelb://ready"},
			Status: v1.NodeStatus{Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "notready"},
			Status: v1.NodeStatus{Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionUnknown}}}},
	} {
		down, err := Instances{}.InstanceShutdown(ctx, n)
		if err != nil || down {
			t.Errorf("InstanceShutdown(%s) = %v, %v; want false, nil", n.Name, down, err)
		}
		exists, err := Instances{}.InstanceExists(ctx, n)
		if err != nil || !exists {
			t.Errorf("InstanceExists(%s) = %v, %v; want true, nil", n.Name, exists, err)
		}
	}
	c := New(nil, nil)
	if c.ProviderName() != "edgelb" || !c.HasClusterID() {
		t.Errorf("ProviderName() = %q, HasClusterID() = %v", c.ProviderName(), c.HasClusterID())
	}
}
