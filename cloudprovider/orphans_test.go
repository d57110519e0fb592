package cloudprovider

import (
	"errors"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/edgelb/edgelb/cloudprovider/servicemap"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

func managed(tenant, name, uid string) *edgelbv1.VirtualService {
	return &edgelbv1.VirtualService{Tenant: tenant, Name: name, Labels: map[string]string{
		servicemap.LabelManagedBy: servicemap.ManagedBy, servicemap.LabelUID: uid,
		servicemap.LabelNamespace: "default", servicemap.LabelName: name,
	}}
}

func svcWithUID(uid string) v1.Service {
	return v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "s-" + uid, UID: types.UID(uid)}}
}

func names(vss []*edgelbv1.VirtualService) []string {
	var out []string
	for _, vs := range vss {
		out = append(out, vs.GetName())
	}
	return out
}

func TestOrphans(t *testing.T) {
	byHand := &edgelbv1.VirtualService{Tenant: "c1", Name: "web", Labels: map[string]string{servicemap.LabelUID: "gone"}}
	otherCCM := managed("c1", "x", "gone")
	otherCCM.Labels[servicemap.LabelManagedBy] = "someone-else"
	noUID := managed("c1", "nouid", "")
	vss := []*edgelbv1.VirtualService{
		managed("c1", "k8s-live", "live"), managed("c1", "k8s-live-ipv6", "live"),
		managed("c1", "k8s-gone", "gone"), managed("c1", "k8s-gone-ipv6", "gone"),
		managed("c2", "k8s-other-tenant", "gone"), // another cluster's: never ours
		byHand, otherCCM, noUID,
	}
	for _, tc := range []struct {
		name     string
		services []v1.Service
		want     []string
		err      error
	}{
		{"a Service gone: both families of its VIP", []v1.Service{svcWithUID("live"), svcWithUID("kubernetes")}, []string{"k8s-gone", "k8s-gone-ipv6"}, nil},
		{"every Service there", []v1.Service{svcWithUID("live"), svcWithUID("gone")}, nil, nil},
		{"only default/kubernetes left: the rest are orphans", []v1.Service{svcWithUID("kubernetes")}, []string{"k8s-live", "k8s-live-ipv6", "k8s-gone", "k8s-gone-ipv6"}, nil},
		{"an empty list deletes nothing", nil, nil, errEmptyList},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Orphans("c1", tc.services, vss)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if g := names(got); len(g) != len(tc.want) || len(g) > 0 && !slices.Equal(g, tc.want) {
				t.Errorf("orphans %v, want %v", g, tc.want)
			}
		})
	}
	if got, err := Orphans("c1", []v1.Service{svcWithUID("kubernetes")}, nil); err != nil || len(got) != 0 {
		t.Errorf("a tenant without VirtualServices: %v %v", got, err)
	}
}
