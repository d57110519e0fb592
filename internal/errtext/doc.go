// Package errtext holds one test over the source tree: no Go code outside
// tests decides anything by an error's text. Errors are told apart by gRPC
// code, errors.Is/As, or the google.rpc.ErrorInfo reason (raft/errinfo);
// messages are for people and may be reworded.
package errtext
