#!/bin/bash
# usage: standalone.sh <mesh-bin> <outprefix>   -- reproduce the bench's idle proxy and dump smaps
BIN=$1; OUT=$2; B=$((20000 + RANDOM % 20000))
D=$(mktemp -d)
cleanup() { kill $PROXY $CP $REG $BACK 2>/dev/null; wait 2>/dev/null; rm -rf $D; }
trap cleanup EXIT
${MESH_BENCH:?set MESH_BENCH to the mesh-bench binary} backend --addr 127.0.0.1:$((B+1)) >$D/back.log 2>&1 & BACK=$!
$BIN registry --http-addr 127.0.0.1:$((B+2)) --data-dir $D/reg >$D/reg.log 2>&1 & REG=$!
$BIN control-plane --registry-url http://127.0.0.1:$((B+2)) --xds-addr 127.0.0.1:$((B+3)) --admin-addr 127.0.0.1:$((B+4)) >$D/cp.log 2>&1 & CP=$!
for i in $(seq 100); do curl -sf http://127.0.0.1:$((B+4))/ready >/dev/null && break; sleep 0.05; done
curl -sf -X PUT http://127.0.0.1:$((B+2))/v1/config -d '{"Kind":"service-defaults","Name":"bench-backend","Protocol":"http"}' >/dev/null
curl -sf -X PUT http://127.0.0.1:$((B+2))/v1/agent/service/register -d '{"Name":"bench-backend","ID":"bench-backend-1","Address":"127.0.0.1","Port":'$((B+1))',"Check":{"TTL":"1h","Status":"passing"}}' >/dev/null
curl -sf -X PUT http://127.0.0.1:$((B+2))/v1/agent/service/register -d '{"Kind":"connect-proxy","Name":"bench-sidecar-proxy","ID":"bench-sidecar-proxy","Address":"127.0.0.1","Port":'$((B+5))',"Proxy":{"DestinationServiceName":"bench-client","LocalServicePort":'$((B+1))',"Upstreams":[{"DestinationName":"bench-backend","LocalBindPort":'$((B+6))'}]}}' >/dev/null
${WRAP} taskset -c 1 $BIN proxy --node-id bench-sidecar-proxy --xds-url http://127.0.0.1:$((B+3)) --admin-addr 127.0.0.1:$((B+7)) --concurrency 1 >$D/proxy.log 2>&1 & PROXY=$!
for i in $(seq 200); do curl -sf -o /dev/null http://127.0.0.1:$((B+6))/ && break; sleep 0.05; done
sleep 0.3
cp /proc/$PROXY/smaps $OUT.smaps
grep -E "VmRSS|RssAnon|RssFile|RssShmem" /proc/$PROXY/status | tee $OUT.status
