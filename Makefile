# Threshold — the commands a developer and CI need.
#
#   make run     the main job: serve, simulate 31 days ending on the sample day, report, keep serving
#   make demo    the same, stopping after the report
#   make test    every test; builds the test broker (tansu, a Kafka-protocol broker) into
#                .tools/ the first time (about 12 minutes) and runs it on loopback meanwhile;
#                the adversarial suite is one of its test targets
#   make test-adversarial  the adversarial suite alone: every actor against every RPC on
#                another party's identifiers, replayed, reordered, future-dated, oversized
#   make bench   log append and projection benchmarks; figures printed and written to target/bench/
#   make bench-webhooks a day's outcomes to 50 loopback endpoints, 5 failing half the time
#   make bench-routing  the planner against the literature and PyVRP and VROOM (Solomon, Gehring & Homberger)
#                and a whole four-country day of 20,000 parcels over 40 depots
#   make load    the handheld ingestion load test against a release server on loopback
#   make load-kafka  the same with the server on the Kafka backend (the test broker)
#   make bench-kafka  the Kafka backend against a plain librdkafka client, same run, same broker
#   make load-tracing  the same with tracing off and with OTLP export at 1%, alternating
#   make bench-track  the track-and-trace store: SQLite beside PostgreSQL, same run
#   make bench-vault  manifest loads on Kafka: the vault topic against a vault directory
#   make image   an OCI image of threshold (buildah, FROM scratch, non-root, gRPC health check)
#   make lint    rustfmt and clippy, as CI runs them

CARGO ?= cargo
DATA  ?= data

.PHONY: run demo test image bench-vault bench-track test-workspace test-adversarial lint fmt bench bench-webhooks bench-routing load load-kafka bench-kafka load-tracing check clean-data

run:
	$(CARGO) run --release -p threshold -- run --data $(DATA) --admin 127.0.0.1:9464 --console 127.0.0.1:8080

demo:
	$(CARGO) run --release -p threshold -- run --data $(DATA) --demo

test:
	scripts/container-tools.sh
	scripts/test-broker.sh run $(MAKE) --no-print-directory test-workspace

# TAG: the image's name (default localhost/threshold:VERSION and :latest).
image:
	scripts/container-tools.sh
	scripts/image.sh $(if $(TAG),--tag $(TAG))

# Every test, with a broker already running (THRESHOLD_TEST_KAFKA=host:port).
# The ScyllaDB track store (cargo feature `scylla`) runs its contract
# against a cluster only where THRESHOLD_TEST_SCYLLA names one.
test-workspace:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast && \
		$(CARGO) nextest run -p threshold-projections --features scylla --no-fail-fast -E 'binary(track_scylla)'; \
	else \
		$(CARGO) test --workspace --no-fail-fast && \
		$(CARGO) test -p threshold-projections --features scylla --test track_scylla; \
	fi

# The adversarial suite (services/server/tests/adversarial), black-box over
# gRPC against the production server. `make test` runs it too: nextest runs
# every test target of the workspace.
test-adversarial:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run -p threshold-server --test adversarial --no-fail-fast; \
	else \
		$(CARGO) test -p threshold-server --test adversarial --no-fail-fast; \
	fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p threshold-projections --features scylla --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench-track:
	scripts/pg-peer.sh run $(CARGO) bench -p threshold-projections --bench track

bench:
	$(CARGO) bench -p threshold-log --bench append
	$(CARGO) bench -p threshold-projections --bench projections
	scripts/pg-peer.sh run $(CARGO) bench -p threshold-projections --bench track
	$(CARGO) bench -p threshold-console --bench pages
	$(CARGO) bench -p threshold-privacy --bench at_rest

bench-webhooks:
	$(CARGO) bench -p threshold-webhook-service --bench webhooks

# VRPTW_DIR: the benchmark instances (default ../shared/data/vrptw).
bench-routing:
	$(CARGO) bench -p threshold-routing --bench literature
	$(CARGO) bench -p threshold-routing --bench depot_day

load:
	load-tests/run.sh

# The same on the Kafka backend, against the test broker on loopback.
load-kafka:
	scripts/test-broker.sh run load-tests/run.sh kafka

bench-kafka:
	scripts/test-broker.sh run scripts/bench-kafka.sh

bench-vault:
	scripts/test-broker.sh run scripts/bench-vault.sh

load-tracing:
	load-tests/tracing-overhead.sh

check:
	$(CARGO) check --workspace --all-targets

clean-data:
	rm -rf $(DATA)
