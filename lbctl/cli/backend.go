package cli

import (
	"fmt"
	"net/netip"

	"github.com/edgelb/edgelb/lbctl/output"
	"github.com/edgelb/edgelb/lbctl/spec"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/spf13/cobra"
)

func (a *app) backendCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "backend",
		Aliases: []string{"backends"},
		Short:   "Change the backends of a virtual service",
		Example: `  lbctl backend list web
  lbctl backend add web 10.0.0.14:30080 --weight 2
  lbctl backend drain web 10.0.0.11:30080
  lbctl backend remove web 10.0.0.11:30080`,
	}
	c.AddCommand(a.backendListCmd(), a.backendSetCmd(), a.backendAddCmd(), a.backendRemoveCmd(), a.backendDrainCmd())
	return c
}

// printBackendResult shows the service after a backend change.
func (a *app) printBackendResult(vs *edgelbv1.VirtualService, what string) error {
	if a.format.Machine() {
		return output.Message(a.stdout, a.format, vs)
	}
	fmt.Fprintf(a.stdout, "virtualservice %s/%s: %s (generation %d)\n", vs.GetTenant(), vs.GetName(), what, vs.GetGeneration())
	printBackends(a.stdout, vs.GetBackends(), "")
	return nil
}

func (a *app) backendListCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "list NAME",
		Short:             "Show the backends of a virtual service with their health",
		Example:           `  lbctl backend list web`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVIPs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			vs, err := a.getVIP(cmd, args[0])
			if err != nil {
				return err
			}
			if a.format.Machine() {
				return output.List(a.stdout, a.format, vs.GetBackends())
			}
			printBackends(a.stdout, vs.GetBackends(), "")
			return nil
		}),
	}
}

func (a *app) backendSetCmd() *cobra.Command {
	var backends []string
	var ifGen uint64
	c := &cobra.Command{
		Use:   "set NAME --backend ADDR[:PORT][,weight=N][,drained] ...",
		Short: "Replace the whole backend list of a virtual service",
		Example: `  lbctl backend set web --backend 10.0.0.11 --backend 10.0.0.12,weight=2 --backend 10.0.0.13,drained
  lbctl backend set web6 --backend '[2001:db8::11]:30080' --if-generation 5`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVIPs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			bs, err := parseBackends(backends)
			if err != nil {
				return err
			}
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			resp, err := conn.VirtualServices.SetBackends(ctx, &edgelbv1.SetBackendsRequest{Tenant: a.tenant, Name: args[0], Backends: bs, ExpectedGeneration: ifGen})
			if err != nil {
				return conflictHint(err, args[0], ifGen)
			}
			return a.printBackendResult(resp.GetService(), fmt.Sprintf("%d backends set", len(bs)))
		}),
	}
	c.Flags().StringArrayVar(&backends, "backend", nil, "backend, repeatable: "+spec.BackendSyntax)
	c.Flags().Uint64Var(&ifGen, "if-generation", 0, "change only if the stored generation is this one")
	c.MarkFlagRequired("backend")
	return c
}

func (a *app) backendAddCmd() *cobra.Command {
	var weight string
	var drained bool
	c := &cobra.Command{
		Use:   "add NAME ADDR[:PORT]",
		Short: "Add one backend to a virtual service",
		Example: `  lbctl backend add web 10.0.0.14
  lbctl backend add web 10.0.0.14:30080 --weight 3
  lbctl backend add web6 '[2001:db8::14]:30080' --drained   # IPv6 VIP; add without traffic yet`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: a.completeVIPs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			addr, port, err := spec.ParseAddrPort(args[1])
			if err != nil {
				return usagef("%w", err)
			}
			b := &edgelbv1.Backend{Address: addr, Port: port, Drained: drained}
			if weight != "" {
				if b.Weight, err = spec.ParseWeight(weight); err != nil {
					return usagef("--weight: %w", err)
				}
			}
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			resp, err := conn.VirtualServices.AddBackend(ctx, &edgelbv1.AddBackendRequest{Tenant: a.tenant, Name: args[0], Backend: b})
			if err != nil {
				return err
			}
			return a.printBackendResult(resp.GetService(), "backend "+args[1]+" added")
		}),
	}
	c.Flags().StringVar(&weight, "weight", "", "IPVS weight 1-65535 (default 1)")
	c.Flags().BoolVar(&drained, "drained", false, "add it drained: no new connections until undrained")
	return c
}

func (a *app) backendRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME ADDR[:PORT]",
		Short: "Remove one backend from a virtual service",
		Long: `Remove one backend. Established connections to it are cut; to let them finish,
drain it first and remove it once its connections are gone.`,
		Example:           `  lbctl backend drain web 10.0.0.11:30080 && sleep 300 && lbctl backend remove web 10.0.0.11:30080`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: a.completeVIPs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			addr, port, err := spec.ParseAddrPort(args[1])
			if err != nil {
				return usagef("%w", err)
			}
			port, err = a.storedPort(cmd, args[0], addr, port)
			if err != nil {
				return err
			}
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			resp, err := conn.VirtualServices.RemoveBackend(ctx, &edgelbv1.RemoveBackendRequest{Tenant: a.tenant, Name: args[0], Address: addr, Port: port})
			if err != nil {
				return err
			}
			return a.printBackendResult(resp.GetService(), "backend "+args[1]+" removed")
		}),
	}
}

func (a *app) backendDrainCmd() *cobra.Command {
	var undo bool
	c := &cobra.Command{
		Use:   "drain NAME ADDR[:PORT]",
		Short: "Drain a backend: keep its established connections, send it no new ones",
		Example: `  lbctl backend drain web 10.0.0.11:30080
  lbctl backend drain web 10.0.0.11:30080 --undo`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: a.completeVIPs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			addr, port, err := spec.ParseAddrPort(args[1])
			if err != nil {
				return usagef("%w", err)
			}
			port, err = a.storedPort(cmd, args[0], addr, port)
			if err != nil {
				return err
			}
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			resp, err := conn.VirtualServices.DrainBackend(ctx, &edgelbv1.DrainBackendRequest{Tenant: a.tenant, Name: args[0], Address: addr, Port: port, Drained: !undo})
			if err != nil {
				return err
			}
			what := "backend " + args[1] + " drained"
			if undo {
				what = "backend " + args[1] + " undrained"
			}
			return a.printBackendResult(resp.GetService(), what)
		}),
	}
	c.Flags().BoolVar(&undo, "undo", false, "undrain: let the backend take new connections again")
	return c
}

// storedPort maps the ADDR[:PORT] an operator typed to the port of the
// backend entry it means. The API names a backend by its stored address and
// port, and a backend added without a port ("--backend 10.0.0.11", the
// README's way) is stored with port 0 and receives on the service's backend
// port; "10.0.0.11:30080" means that entry, and a bare "10.0.0.11" means the
// only entry of that address. When nothing matches, port is returned as
// given and the server answers NotFound.
func (a *app) storedPort(cmd *cobra.Command, name, addr string, port uint32) (uint32, error) {
	vs, err := a.getVIP(cmd, name)
	if err != nil {
		return 0, fmt.Errorf("look up virtual service %s: %w", name, err)
	}
	want, err := netip.ParseAddr(addr)
	if err != nil {
		return port, nil // the server refuses it with the reason
	}
	var same []*edgelbv1.Backend
	for _, b := range vs.GetBackends() {
		if got, err := netip.ParseAddr(b.GetAddress()); err == nil && got.Unmap() == want.Unmap() {
			if b.GetPort() == port {
				return port, nil // exactly as stored
			}
			same = append(same, b)
		}
	}
	if port == 0 {
		if len(same) == 1 {
			return same[0].GetPort(), nil
		}
		return port, nil
	}
	for _, b := range same {
		if b.GetPort() != 0 {
			continue
		}
		for _, p := range vs.GetPorts() {
			bp := p.GetBackendPort()
			if bp == 0 {
				bp = p.GetPort()
			}
			if bp == port {
				return 0, nil
			}
		}
	}
	return port, nil
}
