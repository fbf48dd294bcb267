#!/usr/bin/env bash
# Creates Threshold's topics on a production Kafka cluster, with Apache
# Kafka's own kafka-topics.sh. Run once, before the services start (they
# create missing topics themselves only with a single broker's settings).
#
#   deploy/create-topics.sh BOOTSTRAP [PARTNER...]
#       e.g. deploy/create-topics.sh kafka-1:9092,kafka-2:9092 nordshop fjallgear
#
# Each partner reads its outcomes from a topic of its own,
# threshold.outcome.PARTNER (`_`, `:` and `.` in a partner id written `_5f`,
# `_3a` and `_2e`); name a new partner's id here before its first parcels
# are loaded, or the publisher creates its topic with a single broker's
# settings.
set -euo pipefail
bootstrap=${1:?usage: deploy/create-topics.sh BOOTSTRAP_SERVERS [PARTNER...]}
shift
topics=${KAFKA_TOPICS:-kafka-topics.sh}

# topic                partitions
while read -r topic partitions retention; do
    "$topics" --bootstrap-server "$bootstrap" --create --if-not-exists \
        --topic "$topic" --partitions "$partitions" --replication-factor 3 \
        --config min.insync.replicas=2 \
        --config cleanup.policy=delete \
        --config retention.ms="$retention" \
        --config unclean.leader.election.enable=false
done <<'TOPICS'
threshold.parcel   24 -1
threshold.route     6 -1
threshold.grant    12 -1
threshold.home     12 -1
TOPICS

# A partner's outcomes: retention as agreed with the partner (here 30 days).
for partner in "$@"; do
    topic=threshold.outcome.$(printf '%s' "$partner" | sed 's/_/_5f/g; s/:/_3a/g; s/\./_2e/g')
    "$topics" --bootstrap-server "$bootstrap" --create --if-not-exists \
        --topic "$topic" --partitions 3 --replication-factor 3 \
        --config min.insync.replicas=2 \
        --config cleanup.policy=delete \
        --config retention.ms=2592000000 \
        --config unclean.leader.election.enable=false
done

# The credentials: one record per credential name (its role, tenant and
# token hash), a tombstone when revoked; compacted, one partition. A
# revoked credential's record and tombstone leave the brokers' disks within
# max.compaction.lag.ms + delete.retention.ms (here 1 h + 1 h).
"$topics" --bootstrap-server "$bootstrap" --create --if-not-exists \
    --topic threshold.credentials --partitions 1 --replication-factor 3 \
    --config min.insync.replicas=2 \
    --config cleanup.policy=compact \
    --config min.cleanable.dirty.ratio=0.01 \
    --config segment.ms=3600000 \
    --config max.compaction.lag.ms=3600000 \
    --config delete.retention.ms=3600000 \
    --config unclean.leader.election.enable=false

# The personal-data vault: the vault's secret and its subjects' keys
# (wrapped under the operator's key-encryption key), address links and
# erasure tombstones; compacted, one partition. A forgotten subject's key
# records leave the brokers' disks within max.compaction.lag.ms +
# delete.retention.ms (here 1 h + 1 h) of its erasure.
"$topics" --bootstrap-server "$bootstrap" --create --if-not-exists \
    --topic threshold.vault --partitions 1 --replication-factor 3 \
    --config min.insync.replicas=2 \
    --config cleanup.policy=compact \
    --config min.cleanable.dirty.ratio=0.01 \
    --config segment.ms=3600000 \
    --config max.compaction.lag.ms=3600000 \
    --config delete.retention.ms=3600000 \
    --config unclean.leader.election.enable=false
