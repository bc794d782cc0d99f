#!/bin/sh
# Load test of degrade's tier-aware shedding (issue 14). Needs vegeta:
#   go install github.com/tsenart/vegeta/v12@v12.13.0
# Usage: examples/loadshed/run.sh [port] [duration]
set -eu
PORT=${1:-18100}
DUR=${2:-10s}
MAX=20
LATENCY=20ms
CAP=1000 # MAX / LATENCY, requests per second
VEGETA=${VEGETA:-vegeta}
cd "$(dirname "$0")/../.."
OUT=$(mktemp -d)
go build -o "$OUT/loadshed" ./examples/loadshed
"$OUT/loadshed" serve -addr 127.0.0.1:$PORT -max $MAX -latency $LATENCY ${UNLIMITED:+-unlimited} &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$OUT"' EXIT
sleep 1
URL=http://127.0.0.1:$PORT
printf 'POST %s/pay\nContent-Type: application/json\n@%s/body\n' "$URL" "$OUT" > "$OUT/critical"
echo '{"amount":5}' > "$OUT/body"
: > "$OUT/mixed"
for i in 1 2 3 4 5 6; do printf 'GET %s/items/%s\n\n' "$URL" "$i" >> "$OUT/mixed"; done
for i in 1 2 3; do printf 'POST %s/orders\nContent-Type: application/json\n@%s/body\n\n' "$URL" "$OUT" >> "$OUT/mixed"; done
# Prime the stale cache, as a working service would have.
for i in 1 2 3 4 5 6; do curl -s -o /dev/null "$URL/items/$i"; done

echo "== unloaded: Critical alone at 50/s for $DUR"
"$VEGETA" attack -targets "$OUT/critical" -rate 50/s -duration "$DUR" -max-workers 200 | "$VEGETA" encode --to json | "$OUT/loadshed" report

curl -s "$URL/stats"
curl -s -X POST "$URL/stats/reset"
echo "== loaded: reads+writes at $((2 * CAP - CAP / 10))/s and Critical at $((CAP / 10))/s (2x capacity of $CAP/s) for $DUR"
"$VEGETA" attack -targets "$OUT/mixed" -rate $((2 * CAP - CAP / 10))/s -duration "$DUR" -max-workers 2000 -timeout 10s > "$OUT/mixed.bin" &
MIXED=$!
"$VEGETA" attack -targets "$OUT/critical" -rate $((CAP / 10))/s -duration "$DUR" -max-workers 500 -timeout 10s > "$OUT/critical.bin"
wait $MIXED
"$VEGETA" encode --to json < "$OUT/critical.bin" | "$OUT/loadshed" report
"$VEGETA" encode --to json < "$OUT/mixed.bin" | "$OUT/loadshed" report
curl -s "$URL/stats"
