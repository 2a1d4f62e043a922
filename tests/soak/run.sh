#!/usr/bin/env bash
# Soak test for Tandem (not part of `cargo test`): builds the release broker, the example
# plugins it runs (tandem-policy for Authenticate, tandem-topic-acl for topic checks with
# RECEIVE) and the soak driver, then runs the driver, which starts the broker itself on
# 127.0.0.1 and stops everything when done. See README.md.
#
#   tests/soak/run.sh                      # 10 minutes, 200 clients, 50 connects/s
#   tests/soak/run.sh --duration 3m --warmup 1m
#
# Every argument is passed to tandem-soak (`tandem-soak --help` lists them). The exit status
# is the driver's: 0 when every 0-target held, 1 when one did not.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" \
    -p tandem-broker -p tandem-policy -p tandem-topic-acl -p tandem-tests \
    --bin tandem --bin tandem-policy --bin tandem-topic-acl --bin tandem-soak
# Enough descriptors for 200 long-lived clients, the churn and the broker's side of each.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec "$target/release/tandem-soak" --bin-dir "$target/release" "$@"
