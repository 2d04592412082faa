#!/usr/bin/env bash
# The project's whole test run: what README.md calls "the tests" and what CI runs.
# Needs: the Rust toolchain with rustfmt and clippy, the zstd command, python3 with msgpack and zstandard
# (pip install msgpack zstandard), redis-server and redis-cli on PATH for tests that start servers;
# for bench/run's smoke: GNU time (/usr/bin/time), and npm and pip reaching their registries
# (the dump tools it compares with; left out, saying so, when they cannot be installed).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked
echo "== independent reference reader (format-spec/reference) against fixtures/"
python3 format-spec/reference/run_fixtures.py fixtures
echo "== the README's quick start (scripts/quickstart.sh, on the debug build)"
scripts/quickstart.sh --debug
echo "== the benchmark harness on a tiny dataset (bench/run smoke, debug build; no timings asserted)"
bench/run smoke --runs 1 --debug
bench/run smoke --runs 1 --debug --mix binary
echo "== all tests passed"
