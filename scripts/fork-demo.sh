#!/usr/bin/env bash
# Forks 10 clones from one snapshot and shows each one's fresh identity and
# that it reaches a server. Runs entirely inside two private network
# namespaces (a "host" for smolvmd and an "internet" with an HTTP server),
# so no guest ever touches this machine's real network; everything is
# removed at the end. Build first (scripts/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/private-daemon.sh
server_pid=""; ins=""
private_daemon_on_stop() {
  [ -n "$server_pid" ] && { kill "$server_pid"; wait "$server_pid"; }
  [ -n "$ins" ] && ip netns del "$ins"
}
private_daemon_init svf
tag=${work: -6}
hns="$netns"; ins="svf-$tag-i"
ip netns add "$ins"
ip link add "svfh$tag" type veth peer name "svfi$tag"
ip link set "svfh$tag" netns "$hns"; ip link set "svfi$tag" netns "$ins"
ip -n "$hns" link set "svfh$tag" name up0
ip -n "$hns" addr add 198.51.100.1/24 dev up0; ip -n "$hns" link set up0 up; ip -n "$hns" link set lo up
ip -n "$hns" route add default via 198.51.100.2
ip -n "$ins" addr add 198.51.100.2/24 dev "svfi$tag"; ip -n "$ins" link set "svfi$tag" up
mkdir -p "$work/www"; echo "hello from the internet" >"$work/www/hello.txt"
ip netns exec "$ins" busybox httpd -f -p 198.51.100.2:8080 -h "$work/www" &
server_pid=$!
private_daemon_start --uplink up0 --subnet 10.77.0.0/24 --dns none --default-image minimal
ctl=build/client/smolvmctl

echo "== boot one VM and snapshot it"
$ctl vm create --id origin --memory-mib 256 --vcpus 1
$ctl snapshot create origin --id base --resume >/dev/null
echo "== fork 10 clones from snapshot 'base' in one call"
start=$(date +%s%N)
$ctl snapshot fork base --count 10 --prefix clone
end=$(date +%s%N)
echo "forked 10 clones in $(( (end - start) / 1000000 )) ms"
echo "== every clone, from inside its guest: its address, and the server (all at once)"
pids=()
for i in $(seq 1 10); do
  ( out=$($ctl vm exec "clone-$i" -- sh -c \
      'ip -o -4 addr show eth0 | awk "{print \$4}"; cat /sys/class/net/eth0/address; timeout 10 wget -q -O - http://198.51.100.2:8080/hello.txt' | tr '\n' ' ')
    echo "clone-$i: $out" ) &
  pids+=($!)
done
wait "${pids[@]}"
echo "== cleanup"
for i in $(seq 1 10); do $ctl vm delete "clone-$i"; done
$ctl vm delete origin
echo "taps left: $(ip -n "$hns" -o link show | grep -c ' smv' || true)"
