#!/usr/bin/env bash
# Starts and stops a real Apache Kafka broker (KRaft, one combined
# broker+controller on 127.0.0.1) for the real-broker tests.
#
#   scripts/kafka.sh up     fetch the broker with Maven (once), format, start, wait
#   scripts/kafka.sh down   stop it and delete its data
#
# KAFKA_PORT (default 19092) is the plaintext client port; the controller
# listens on KAFKA_PORT+1, and a SASL_SSL listener on KAFKA_PORT+2 takes
# PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for user kdedup (password
# kdedup-secret-4f1c) with a throw-away CA in .cache/kafka/certs/ca.pem.
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

up() {
  command -v java >/dev/null || { echo "kafka.sh: java not found" >&2; exit 1; }
  if [ ! -f "$LIBS/kafka_2.13-$VERSION.jar" ]; then
    command -v mvn >/dev/null || { echo "kafka.sh: mvn not found" >&2; exit 1; }
    echo "fetching Apache Kafka $VERSION with Maven into $LIBS"
    rm -rf "$LIBS"
    mvn -q -f scripts/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory="$LIBS"
  fi
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

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
