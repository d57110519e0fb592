package cloudprovider

import (
	"context"
	"net/netip"
	"strings"

	v1 "k8s.io/api/core/v1"
	k8scloud "k8s.io/cloud-provider"
)

// ProviderIDPrefix starts every providerID this provider sets.
const ProviderIDPrefix = ProviderName + "://"

// providedNodeIPAnnotation is set by kubelets run with --cloud-provider=external and --node-ip.
const providedNodeIPAnnotation = "alpha.kubernetes.io/provided-node-ip"

// Instances implements InstancesV2 from the Node object alone: edgelb has no
// machine inventory, so a Node exists while its object does, and is never
// reported shut down. That is enough for the cloud node controller to
// initialise nodes (providerID, addresses) and remove the uninitialized taint.
type Instances struct{}

var _ k8scloud.InstancesV2 = Instances{}

// InstanceExists is always true: the node lifecycle must not delete Nodes on our word.
func (Instances) InstanceExists(context.Context, *v1.Node) (bool, error) { return true, nil }

// InstanceShutdown is always false.
func (Instances) InstanceShutdown(context.Context, *v1.Node) (bool, error) { return false, nil }

// InstanceMetadata returns providerID edgelb://<node-name> (an existing one
// with our prefix is kept) and the Node's addresses.
func (Instances) InstanceMetadata(_ context.Context, node *v1.Node) (*k8scloud.InstanceMetadata, error) {
	id := node.Spec.ProviderID
	if !strings.HasPrefix(id, ProviderIDPrefix) {
		id = ProviderIDPrefix + node.Name
	}
	return &k8scloud.InstanceMetadata{ProviderID: id, NodeAddresses: nodeAddresses(node)}, nil
}

// nodeAddresses keeps what the Node reports; a kubelet with an external cloud
// provider reports none until initialised, so fall back to its --node-ip
// annotation and hostname.
func nodeAddresses(node *v1.Node) []v1.NodeAddress {
	if len(node.Status.Addresses) > 0 {
		return append([]v1.NodeAddress(nil), node.Status.Addresses...)
	}
	var out []v1.NodeAddress
	for _, s := range strings.Split(node.Annotations[providedNodeIPAnnotation], ",") {
		if a, err := netip.ParseAddr(strings.TrimSpace(s)); err == nil {
			out = append(out, v1.NodeAddress{Type: v1.NodeInternalIP, Address: a.String()})
		}
	}
	return append(out, v1.NodeAddress{Type: v1.NodeHostName, Address: node.Name})
}
