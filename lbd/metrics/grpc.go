package metrics

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// UnaryServerInterceptor counts and times unary calls. Chain it outermost
// (before authorisation) so refused calls are counted with their code.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		g := m.GRPCInFlight.WithLabelValues("unary")
		g.Inc()
		start := time.Now()
		resp, err := handler(ctx, req)
		g.Dec()
		m.GRPCLatency.WithLabelValues(info.FullMethod, "unary").Observe(time.Since(start).Seconds())
		m.GRPCRequests.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
		return resp, err
	}
}

// StreamServerInterceptor counts streams when they end and times their lifetime.
func (m *Metrics) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		g := m.GRPCInFlight.WithLabelValues("stream")
		g.Inc()
		start := time.Now()
		err := handler(srv, ss)
		g.Dec()
		m.GRPCLatency.WithLabelValues(info.FullMethod, "stream").Observe(time.Since(start).Seconds())
		m.GRPCRequests.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
		return err
	}
}

// ServerOptions are the interceptors as grpc.NewServer options. Options from
// several ChainUnaryInterceptor calls run in the order given, so put these first.
func (m *Metrics) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(m.StreamServerInterceptor()),
	}
}
