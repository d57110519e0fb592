// Package seam holds one test over the source tree: the daemon reaches the
// kernel only through lbd/dataplane's interfaces. No code outside
// lbd/dataplane names *dataplane.Engine or calls an IPVS() accessor, so the
// data plane can change (or be faked in tests) behind its interface alone.
package seam
