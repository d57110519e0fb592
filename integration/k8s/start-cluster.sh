#!/usr/bin/env bash
# Start etcd + kube-apiserver on 127.0.0.1 with throwaway state.
# Usage: start-cluster.sh <bindir> <workdir> [etcd_port] [apiserver_port]
# Writes <workdir>/kubeconfig, <workdir>/pids, logs in <workdir>/*.log
set -euo pipefail
BIN=${1:?bindir}; W=${2:?workdir}; EPORT=${3:-23790}; APORT=${4:-26443}
PPORT=$((EPORT+1))
mkdir -p "$W"/etcd-data "$W"/certs
ms() { date +%s%3N; }

# --- keys / tokens
openssl genrsa -out "$W"/sa.key 2048 2>/dev/null
openssl rsa -in "$W"/sa.key -pubout -out "$W"/sa.pub 2>/dev/null
TOKEN=$(openssl rand -hex 16)
echo "$TOKEN,admin,admin-uid,system:masters" > "$W"/tokens.csv

# --- etcd
t0=$(ms)
"$BIN"/etcd --name test --data-dir "$W"/etcd-data \
  --listen-client-urls http://127.0.0.1:$EPORT --advertise-client-urls http://127.0.0.1:$EPORT \
  --listen-peer-urls http://127.0.0.1:$PPORT --initial-advertise-peer-urls http://127.0.0.1:$PPORT \
  --initial-cluster test=http://127.0.0.1:$PPORT \
  ${ETCD_EXTRA:-} > "$W"/etcd.log 2>&1 &
echo $! > "$W"/etcd.pid
until curl -sf http://127.0.0.1:$EPORT/health >/dev/null; do sleep 0.05; done
t1=$(ms); echo "etcd healthy after $((t1-t0)) ms"

# --- kube-apiserver
t2=$(ms)
"$BIN"/kube-apiserver \
  --etcd-servers=http://127.0.0.1:$EPORT \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=$APORT \
  --cert-dir="$W"/certs \
  --service-cluster-ip-range=10.96.0.0/16 \
  --service-node-port-range=30000-32767 \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$W"/sa.pub \
  --service-account-signing-key-file="$W"/sa.key \
  --token-auth-file="$W"/tokens.csv \
  --authorization-mode=RBAC \
  --allow-privileged=true \
  --endpoint-reconciler-type=none \
  ${APISERVER_EXTRA:-} > "$W"/apiserver.log 2>&1 &
echo $! > "$W"/apiserver.pid
until curl -skf -H "Authorization: Bearer $TOKEN" https://127.0.0.1:$APORT/readyz >/dev/null 2>&1; do
  if ! kill -0 "$(cat "$W"/apiserver.pid)" 2>/dev/null; then echo "apiserver died"; tail -30 "$W"/apiserver.log; exit 1; fi
  sleep 0.1
done
t3=$(ms); echo "apiserver /readyz ok after $((t3-t2)) ms (total $((t3-t0)) ms)"

cat > "$W"/kubeconfig <<KC
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:$APORT
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
KC
echo "kubeconfig: $W/kubeconfig"
