#!/usr/bin/env bash
# Local Apache Kafka (KRaft, one combined broker+controller) without Docker.
#
#   deploy/local/kafka.sh start   fetch jars once, format once, start; returns when a client
#                                 can create a topic; prints the bootstrap address last
#   deploy/local/kafka.sh stop    SIGTERM, then SIGKILL after CARBON_KAFKA_STOP_TIMEOUT seconds
#   deploy/local/kafka.sh status  exit 0 running and answering, 1 running but not answering,
#                                 3 not running
#
# Needs Java 17+ and, for the first start, Maven (jars come from Maven Central).
# Environment:
#   CARBON_KAFKA_DIR              jars, data and logs
#                                 (default ${XDG_CACHE_HOME:-$HOME/.cache}/carbon/kafka)
#   CARBON_KAFKA_PORT             client port (default 9092)
#   CARBON_KAFKA_CONTROLLER_PORT  KRaft controller port (default 9093)
#   CARBON_KAFKA_HEAP_OPTS        default "-Xms256m -Xmx512m"
#   CARBON_KAFKA_JAVA_OPTS        extra JVM options
#   CARBON_KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (default 90)
#   CARBON_KAFKA_STOP_TIMEOUT     seconds to wait after SIGTERM (default 30)
#   PYTHON                        interpreter with kafka-python for the readiness check
# A second broker on other ports needs its own CARBON_KAFKA_DIR.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CONF="$HERE/kafka"

DIR="${CARBON_KAFKA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/carbon/kafka}"
PORT="${CARBON_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${CARBON_KAFKA_CONTROLLER_PORT:-9093}"
HEAP_OPTS="${CARBON_KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
START_TIMEOUT="${CARBON_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${CARBON_KAFKA_STOP_TIMEOUT:-30}"
BOOTSTRAP="127.0.0.1:$PORT"
PROBE_TOPIC="carbon.local.readiness"

LIB="$DIR/lib"
DATA="$DIR/data"
LOGS="$DIR/logs"
PROPS="$DIR/server.properties"
PIDFILE="$DIR/kafka.pid"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
JAVAC="${JAVA_HOME:+$JAVA_HOME/bin/}javac"

say() { echo "kafka: $*" >&2; }
die() { say "error: $*"; exit 1; }

for n in "$PORT" "$CONTROLLER_PORT" "$START_TIMEOUT" "$STOP_TIMEOUT"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "ports and timeouts must be numbers, got '$n'"
done

# Tools (format, probe) log to stderr at WARN only; the broker logs to $LOGS.
TOOL_OPTS=(-Xmx256m -Dorg.apache.logging.log4j.level=WARN)
tool_java() { "$JAVA" "${TOOL_OPTS[@]}" -cp "$LIB/*" "$@"; }

require_java() {
    command -v "$JAVA" >/dev/null || die "Java 17+ is required (install openjdk-17-jre-headless or set JAVA_HOME)"
    local v
    v="$("$JAVA" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)"
    [[ -n "$v" && "$v" -ge 17 ]] || die "Kafka 4 needs Java 17+, found: $("$JAVA" -version 2>&1 | head -n1)"
}

# The pid file is ours only if it names a live broker started with our properties file.
running_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid="$(<"$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "kafka.Kafka $PROPS" || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Re-fetch only when the pom changes (e.g. a Kafka version bump).
fetch_jars() {
    local want
    want="$(sha256sum "$CONF/pom.xml" | cut -d' ' -f1)"
    if [[ -f "$LIB/.pom.sha256" && "$(<"$LIB/.pom.sha256")" == "$want" ]]; then
        return 0
    fi
    command -v mvn >/dev/null || die "Maven is required to fetch the Kafka jars once (install maven)"
    say "fetching Kafka jars into $LIB"
    local tmp
    tmp="$(mktemp -d "$DIR/fetch.XXXXXX")"
    # Copy the pom so Maven writes nothing next to the tracked one.
    cp "$CONF/pom.xml" "$tmp/pom.xml"
    # Output kept for failures only: Maven 3.8 prints stray colour codes even with -B -q.
    if ! mvn -B -q -f "$tmp/pom.xml" dependency:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$tmp/lib" >"$tmp/mvn.log" 2>&1; then
        tail -n 40 "$tmp/mvn.log" >&2
        rm -rf "$tmp"
        die "Maven could not fetch the Kafka jars"
    fi
    echo "$want" >"$tmp/lib/.pom.sha256"
    rm -rf "$LIB"
    mv "$tmp/lib" "$LIB"
    rm -rf "$tmp"
}

render_props() {
    local text
    text="$(<"$CONF/server.properties.in")"
    text="${text//@PORT@/$PORT}"
    text="${text//@CONTROLLER_PORT@/$CONTROLLER_PORT}"
    text="${text//@DATA_DIR@/$DATA}"
    printf '%s\n' "$text" >"$PROPS"
}

format_storage() {
    [[ -f "$DATA/meta.properties" ]] && return 0
    local id
    id="$(tool_java kafka.tools.StorageTool random-uuid | tail -n1)"
    [[ "$id" =~ ^[A-Za-z0-9_-]{22}$ ]] || die "could not generate a cluster id (got: $id)"
    say "formatting KRaft storage in $DATA (cluster $id)"
    tool_java kafka.tools.StorageTool format -t "$id" -c "$PROPS" >&2
}

# Readiness = a real client creates a topic. kafka-python from $PYTHON or the repo's
# virtualenv when it has it, else Kafka's own admin client.
PROBE_CMD=()
pick_probe() {
    local py
    for py in "${PYTHON:-python3}" "$REPO/.venv/bin/python"; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import kafka.admin' 2>/dev/null; then
            PROBE_CMD=("$py" -c "$PY_PROBE" "$BOOTSTRAP" "$PROBE_TOPIC")
            return 0
        fi
    done
    local classes="$DIR/probe"
    if [[ ! -f "$classes/Probe.class" || "$CONF/Probe.java" -nt "$classes/Probe.class" ]]; then
        command -v "$JAVAC" >/dev/null || die "need kafka-python (pip install kafka-python) or a JDK (javac) for the readiness check"
        mkdir -p "$classes"
        "$JAVAC" -nowarn -d "$classes" -cp "$LIB/*" "$CONF/Probe.java"
    fi
    PROBE_CMD=("$JAVA" "${TOOL_OPTS[@]}" -cp "$LIB/*:$classes" Probe "$BOOTSTRAP" "$PROBE_TOPIC")
}

PY_PROBE='
import sys, warnings
warnings.simplefilter("ignore")
import kafka
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError
v3 = int(kafka.__version__.split(".")[0]) >= 3
# Fail fast while the broker is still coming up; the shell loop retries.
extra = {"bootstrap_timeout_ms": 3000} if v3 else {}
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], client_id="carbon-readiness",
                         request_timeout_ms=10000, **extra)
try:
    if v3:
        admin.create_topics({sys.argv[2]: {"num_partitions": 1, "replication_factor": 1}},
                            wait_for_metadata=True)
    else:
        admin.create_topics([NewTopic(sys.argv[2], 1, 1)])
except TopicAlreadyExistsError:
    pass
finally:
    admin.close()
'

probe() { timeout 30 "${PROBE_CMD[@]}" >/dev/null 2>&1; }

# Log sizes at launch, so a failure shows this run's lines only.
declare -A LOG_START=()
mark_logs() {
    local f
    for f in "$LOGS/kafka.out" "$LOGS/server.log"; do
        LOG_START[$f]="$(stat -c %s "$f" 2>/dev/null || echo 0)"
    done
}

show_log_tail() {
    local f from size
    for f in "$LOGS/kafka.out" "$LOGS/server.log"; do
        [[ -s "$f" ]] || continue
        from="${LOG_START[$f]:-0}"
        size="$(stat -c %s "$f")"
        ((size != from)) || continue
        # A rolled-over server.log is smaller than at launch: show its end instead.
        ((size > from)) || from=0
        say "---- last lines of $f"
        tail -c +"$((from + 1))" "$f" | tail -n 30 >&2
    done
}

wait_ready() {
    local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "broker (pid $pid) exited during start"
            show_log_tail
            return 1
        fi
        # A closed port fails fast; only then pay for a client round trip.
        if port_open "$PORT" && probe; then return 0; fi
        sleep 1
    done
    say "broker did not answer on $BOOTSTRAP within ${START_TIMEOUT}s"
    show_log_tail
    return 1
}

stop_pid() {
    local pid="$1" deadline=$((SECONDS + STOP_TIMEOUT))
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
        say "broker (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    fi
    rm -f "$PIDFILE"
}

# Serialise start/stop: parallel test workers may all call start at once.
take_lock() {
    exec 9>"$DIR/kafka.lock"
    flock -w 600 9 || die "timed out waiting for another kafka.sh start/stop"
}

cmd_start() {
    require_java
    mkdir -p "$DIR" "$LOGS"
    take_lock
    local pid
    if pid="$(running_pid)"; then
        pick_probe
        if probe || wait_ready "$pid"; then
            echo "$BOOTSTRAP"
            return 0
        fi
        exit 1
    fi
    rm -f "$PIDFILE"
    for p in "$PORT" "$CONTROLLER_PORT"; do
        port_open "$p" && die "127.0.0.1:$p is already in use by another process"
    done
    fetch_jars
    render_props
    format_storage
    pick_probe
    say "starting broker on $BOOTSTRAP (logs in $LOGS)"
    mark_logs
    # shellcheck disable=SC2086  # heap and extra options are word lists
    (
        exec setsid "$JAVA" $HEAP_OPTS \
            -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
            -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
            -Dkafka.logs.dir="$LOGS" -Dlog4j2.configurationFile="$CONF/log4j2.xml" \
            ${CARBON_KAFKA_JAVA_OPTS:-} \
            -cp "$LIB/*" kafka.Kafka "$PROPS" \
            >>"$LOGS/kafka.out" 2>&1 </dev/null 9>&-
    ) &
    pid=$!
    echo "$pid" >"$PIDFILE"
    local t0=$SECONDS
    if ! wait_ready "$pid"; then
        stop_pid "$pid"
        rm -f "$PIDFILE"
        exit 1
    fi
    say "ready in $((SECONDS - t0))s (pid $pid)"
    echo "$BOOTSTRAP"
}

cmd_stop() {
    mkdir -p "$DIR"
    take_lock
    local pid
    if pid="$(running_pid)"; then
        say "stopping broker (pid $pid)"
        stop_pid "$pid"
    else
        rm -f "$PIDFILE"
        say "not running"
    fi
}

cmd_status() {
    local pid
    if ! pid="$(running_pid)"; then
        say "not running"
        exit 3
    fi
    [[ -d "$LIB" ]] || die "running (pid $pid) but the jars are missing"
    pick_probe
    if probe; then
        say "running (pid $pid) on $BOOTSTRAP"
        echo "$BOOTSTRAP"
    else
        say "running (pid $pid) but not answering on $BOOTSTRAP"
        exit 1
    fi
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
