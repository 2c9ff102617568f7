#!/bin/sh
# One-shot job (temporal-namespace service): make sure the namespace exists and carries every
# custom search attribute a TradeWorkflow upserts. Idempotent: safe on every `up`.
#
# usage: setup-namespace.sh NAME=Type [NAME=Type ...]
#   e.g. setup-namespace.sh Symbol=Keyword RealizedPnl=Double
#
# Environment: TEMPORAL_ADDRESS (temporal:7233), TEMPORAL_NAMESPACE (default),
#              NAMESPACE_RETENTION (720h: how long closed trades stay queryable).
set -eu

ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"
NAMESPACE="${TEMPORAL_NAMESPACE:-default}"
RETENTION="${NAMESPACE_RETENTION:-720h}"

[ "$#" -gt 0 ] || { echo "usage: $0 NAME=Type [NAME=Type ...]" >&2; exit 2; }

# The server binds IPv4 only (BIND_ON_IP=0.0.0.0): dial its IPv4 address even on networks where
# the name also resolves to IPv6 (the same workaround as Temporal's own compose samples).
host="${ADDRESS%:*}"
port="${ADDRESS##*:}"
ipv4=$(getent ahosts "$host" 2>/dev/null | awk '$1 ~ /^[0-9.]+$/ { print $1; exit }') || true
if [ -n "$ipv4" ]; then
    ADDRESS="$ipv4:$port"
fi

# An open port is not a ready frontend: wait until the cluster answers its health check.
tries=0
until temporal operator cluster health --address "$ADDRESS" >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge 60 ]; then
        echo "Temporal at $ADDRESS is not healthy after 120 s" >&2
        temporal operator cluster health --address "$ADDRESS" >&2 || true
        exit 1
    fi
    sleep 2
done
echo "Temporal at $ADDRESS is serving"

if temporal operator namespace describe --namespace "$NAMESPACE" --address "$ADDRESS" >/dev/null 2>&1; then
    echo "namespace $NAMESPACE already exists"
else
    if out=$(temporal operator namespace create --namespace "$NAMESPACE" --retention "$RETENTION" \
            --address "$ADDRESS" 2>&1); then
        echo "namespace $NAMESPACE created (retention $RETENTION)"
    else
        case "$out" in
            *"already"*) echo "namespace $NAMESPACE already exists" ;;
            *) echo "$out" >&2; exit 1 ;;
        esac
    fi
fi

# A just-created namespace reaches every frontend cache within ~10 s: retry transient errors.
# Never retried: an attribute that exists with another type (an operator decision, not a glitch).
ensure_attribute() {
    name="$1"
    kind="$2"
    attempt=0
    while :; do
        if out=$(temporal operator search-attribute create --namespace "$NAMESPACE" \
                --address "$ADDRESS" --name "$name" --type "$kind" 2>&1); then
            echo "search attribute $name ($kind) registered"
            return 0
        fi
        case "$out" in
            *"different type"*) echo "$out" >&2; return 1 ;;
            *"already exists"*) echo "search attribute $name ($kind) already registered"; return 0 ;;
        esac
        attempt=$((attempt + 1))
        if [ "$attempt" -ge 15 ]; then
            echo "could not register search attribute $name: $out" >&2
            return 1
        fi
        sleep 2
    done
}

for pair in "$@"; do
    case "$pair" in
        *=*) ensure_attribute "${pair%%=*}" "${pair#*=}" ;;
        *) echo "bad argument '$pair': expected NAME=Type" >&2; exit 2 ;;
    esac
done
echo "namespace $NAMESPACE is ready"
