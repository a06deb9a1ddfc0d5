#!/usr/bin/env bash
# Starts and stops real Apache Kafka brokers (KRaft, on 127.0.0.1) for the
# real-broker tests: one combined broker+controller, or a cluster of three.
#
#   scripts/kafka.sh up       one broker: fetch it with Maven (once), format, start, wait
#   scripts/kafka.sh down     stop it and delete its data
#   scripts/kafka.sh up3      three nodes, each broker+controller; wait until usable
#   scripts/kafka.sh down3    stop the three and delete their data
#   scripts/kafka.sh kill N   SIGKILL node N (1..3) of the three, data kept
#   scripts/kafka.sh start N  start node N again on its data; wait until registered
#   scripts/kafka.sh brokers3 print the three client addresses, comma-separated
#
# KAFKA_PORT (default 19092) is the single broker's plaintext client port;
# its controller listens on KAFKA_PORT+1, and a SASL_SSL listener on
# KAFKA_PORT+2 takes PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for user kdedup
# (password kdedup-secret-4f1c) with a throw-away CA in
# .cache/kafka/certs/ca.pem.
#
# KAFKA_CLUSTER_PORT (default 19192) is node 1's client port of the three:
# node N listens for clients on KAFKA_CLUSTER_PORT+N-1 and for the
# controller quorum on KAFKA_CLUSTER_PORT+100+N-1 (19192-19194 and
# 19292-19294 by default). Replication factor 3, min.insync.replicas 2,
# small heaps (KAFKA_CLUSTER_HEAP, default 384m) so three JVMs fit a small
# machine. Data, logs and pid files are in .cache/kafka/cluster/nodeN.
#
# Everything lives under .cache/kafka, which git ignores.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=4.1.1
PORT=${KAFKA_PORT:-19092}
CPORT=$((PORT + 1))
SPORT=$((PORT + 2))
SASL_USER=kdedup
PASSWORD=kdedup-secret-4f1c
CERTS=$PWD/.cache/kafka/certs
CACHE=$PWD/.cache/kafka
LIBS=$CACHE/libs
DATA=$CACHE/data
PIDFILE=$CACHE/broker.pid
CPORT0=${KAFKA_CLUSTER_PORT:-19192}
CLUSTER=$CACHE/cluster
NODES=3
HEAP=${KAFKA_CLUSTER_HEAP:-384m}
# Small JVMs for the cluster: serial GC, C1 only (faster start, less
# compiler CPU), an OOM ends the process instead of leaving it limping.
CLUSTER_JVM=(-Xms128m "-Xmx$HEAP" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError
  -Djava.awt.headless=true -Dlog4j2.configurationFile="$PWD/scripts/kafka/log4j2.properties")

fetch() {
  command -v java >/dev/null || { echo "kafka.sh: java not found" >&2; exit 1; }
  if [ ! -f "$LIBS/kafka_2.13-$VERSION.jar" ]; then
    command -v mvn >/dev/null || { echo "kafka.sh: mvn not found" >&2; exit 1; }
    echo "fetching Apache Kafka $VERSION with Maven into $LIBS"
    rm -rf "$LIBS"
    mvn -q -f scripts/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory="$LIBS"
  fi
}

up() {
  fetch
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "kafka.sh: already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
    return 0
  fi
  rm -rf "$DATA" "$CERTS"
  mkdir -p "$DATA"
  go run ./internal/testcerts/gencerts "$CERTS"
  cat >"$CACHE/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT,SASL_SSL://127.0.0.1:$SPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,SASL_SSL://127.0.0.1:$SPORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$PASSWORD";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$CERTS/server-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$CERTS/ca.pem
log.dirs=$DATA
num.partitions=3
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
# kdedup creates its topics; production clusters disable auto-creation.
auto.create.topics.enable=false
# Test data carries event times hours in the past: never delete by time.
log.retention.ms=-1
PROPS
  local cp="$LIBS/*"
  local jvm=(-Xms256m -Xmx1g -Dlog4j2.configurationFile="$PWD/scripts/kafka/log4j2.properties" -Dkafka.logs.dir="$CACHE")
  local id
  id=$(java "${jvm[@]}" -cp "$cp" kafka.tools.StorageTool random-uuid)
  java "${jvm[@]}" -cp "$cp" kafka.tools.StorageTool format -t "$id" -c "$CACHE/server.properties" \
    --add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$PASSWORD]" >/dev/null
  nohup java "${jvm[@]}" -cp "$cp" kafka.Kafka "$CACHE/server.properties" >"$CACHE/stdout.log" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 120); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null; then
      echo "Apache Kafka $VERSION (KRaft) up on 127.0.0.1:$PORT (SASL_SSL on $SPORT, CA $CERTS/ca.pem), pid $(cat "$PIDFILE")"
      return 0
    fi
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { echo "kafka.sh: broker exited; see $CACHE/stdout.log and $CACHE/broker.log" >&2; tail -20 "$CACHE/stdout.log" >&2; exit 1; }
    sleep 0.5 # polling the port: the broker gives no other signal
  done
  echo "kafka.sh: broker did not answer on 127.0.0.1:$PORT within 60s" >&2
  exit 1
}

down() {
  if [ -f "$PIDFILE" ]; then
    pid=$(cat "$PIDFILE")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
  fi
  rm -rf "$DATA" "$CERTS"
  echo "kafka stopped"
}

# The three-node cluster. Node n's directory, ports and pid file:
node_dir() { echo "$CLUSTER/node$1"; }
node_port() { echo $((CPORT0 + $1 - 1)); }
node_cport() { echo $((CPORT0 + 100 + $1 - 1)); }
node_pid() { cat "$(node_dir "$1")/pid" 2>/dev/null; }
node_alive() { local pid; pid=$(node_pid "$1") && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
brokers3() {
  local n list=""
  for n in $(seq 1 $NODES); do list="$list${list:+,}127.0.0.1:$(node_port "$n")"; done
  echo "$list"
}
check_node() {
  case "${1:-}" in
    [1-9]) [ "$1" -le $NODES ] || { echo "kafka.sh: no node $1 (1..$NODES)" >&2; exit 2; } ;;
    *) echo "kafka.sh: want a node number 1..$NODES, got '${1:-}'" >&2; exit 2 ;;
  esac
  [ -f "$(node_dir "$1")/server.properties" ] || { echo "kafka.sh: node $1 was never set up: run $0 up3" >&2; exit 1; }
}

# ready runs scripts/kafka/ready (built once into the cache) with args.
ready() {
  if [ ! -x "$CACHE/ready" ] || [ scripts/kafka/ready/main.go -nt "$CACHE/ready" ]; then
    go build -o "$CACHE/ready" ./scripts/kafka/ready
  fi
  "$CACHE/ready" -brokers "$(brokers3)" "$@"
}

# launch starts node n on its formatted data and waits for its client port.
launch() {
  local n=$1 dir port pid
  dir=$(node_dir "$n")
  port=$(node_port "$n")
  nohup java "${CLUSTER_JVM[@]}" -Dkafka.logs.dir="$dir" -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" >>"$dir/stdout.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/pid"
  for _ in $(seq 1 240); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "kafka.sh: node $n exited; see $dir/stdout.log and $dir/broker.log" >&2; tail -20 "$dir/stdout.log" >&2; exit 1; }
    sleep 0.5 # polling the port: the broker gives no other signal
  done
  echo "kafka.sh: node $n did not answer on 127.0.0.1:$port within 120s" >&2
  exit 1
}

up3() {
  fetch
  local n voters="" running=0
  for n in $(seq 1 $NODES); do
    voters="$voters${voters:+,}$n@127.0.0.1:$(node_cport "$n")"
    if node_alive "$n"; then running=$((running + 1)); fi
  done
  if [ "$running" = $NODES ]; then
    echo "kafka.sh: cluster already running on $(brokers3)"
    return 0
  fi
  [ "$running" = 0 ] || { echo "kafka.sh: $running of $NODES nodes running: $0 start N, or $0 down3 first" >&2; exit 1; }
  rm -rf "$CLUSTER"
  mkdir -p "$CLUSTER"
  local id
  id=$(java "${CLUSTER_JVM[@]}" -Dkafka.logs.dir="$CLUSTER" -cp "$LIBS/*" kafka.tools.StorageTool random-uuid)
  for n in $(seq 1 $NODES); do
    local dir
    dir=$(node_dir "$n")
    mkdir -p "$dir/data"
    cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(node_port "$n"),CONTROLLER://127.0.0.1:$(node_cport "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(node_port "$n")
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=3
# Every topic on all three nodes; an acknowledged write is on two at least.
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
# Fewer internal partitions than the default 50: less for a restarted node
# to catch up on, on a small machine.
offsets.topic.num.partitions=12
transaction.state.log.num.partitions=12
group.initial.rebalance.delay.ms=0
# kdedup creates its topics; production clusters disable auto-creation.
auto.create.topics.enable=false
# Test data carries event times hours in the past: never delete by time.
log.retention.ms=-1
# Few threads: three brokers share a small machine.
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
PROPS
    java "${CLUSTER_JVM[@]}" -Dkafka.logs.dir="$dir" -cp "$LIBS/*" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" >/dev/null
  done
  # All three at once: a controller quorum of three needs two to elect.
  local waits=() failed=0 w
  for n in $(seq 1 $NODES); do
    launch "$n" &
    waits+=($!)
  done
  for w in "${waits[@]}"; do wait "$w" || failed=1; done
  if [ "$failed" = 1 ]; then
    down3 >/dev/null
    exit 1
  fi
  if ! ready -nodes $NODES; then
    echo "kafka.sh: the cluster is not usable; logs in $CLUSTER/node*/broker.log" >&2
    down3 >/dev/null
    exit 1
  fi
  echo "Apache Kafka $VERSION (KRaft) cluster of $NODES up on $(brokers3) (controllers on $(node_cport 1)-$(node_cport $NODES)), pids $(for n in $(seq 1 $NODES); do printf '%s ' "$(node_pid "$n")"; done)"
}

down3() {
  local n pid pids=()
  for n in $(seq 1 $NODES); do
    pid=$(node_pid "$n") || continue
    [ -n "$pid" ] || continue
    pids+=("$pid")
    kill "$pid" 2>/dev/null || true
  done
  # A controlled shutdown of all three at once can wait on a controller
  # quorum that is going away too, and the data is deleted next: give
  # them 15s together, then SIGKILL.
  for _ in $(seq 1 30); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 1 ] || break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$CLUSTER"
  echo "kafka cluster stopped"
}

kill_node() {
  check_node "$1"
  local pid
  if ! node_alive "$1"; then
    echo "kafka.sh: node $1 is not running" >&2
    exit 1
  fi
  pid=$(node_pid "$1")
  kill -9 "$pid"
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  rm -f "$(node_dir "$1")/pid"
  echo "node $1 killed (pid $pid)"
}

start_node() {
  check_node "$1"
  if node_alive "$1"; then
    echo "kafka.sh: node $1 already running (pid $(node_pid "$1"))"
    return 0
  fi
  launch "$1"
  ready -node "$1" || { echo "kafka.sh: node $1 did not register; see $(node_dir "$1")/broker.log" >&2; exit 1; }
  echo "node $1 up on 127.0.0.1:$(node_port "$1"), pid $(node_pid "$1")"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  up3) up3 ;;
  down3) down3 ;;
  kill) kill_node "${2:-}" ;;
  start) start_node "${2:-}" ;;
  brokers3) brokers3 ;;
  *) echo "usage: $0 up|down|up3|down3|kill N|start N|brokers3" >&2; exit 2 ;;
esac
