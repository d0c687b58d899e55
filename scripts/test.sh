#!/usr/bin/env bash
# The README's test command: all set-up a fresh machine needs, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Interop tests talk to Python's posix_ipc through the same named objects.
if ! python3 -c "import posix_ipc" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check posix_ipc
fi

# `shmkit mq ls` lists the mqueue filesystem, which some machines do not mount (POSIX
# queues work without it): mount it as root so that its tests run.
if ! grep -qs ' /dev/mqueue ' /proc/mounts && [ "$(id -u)" = 0 ]; then
    mkdir -p /dev/mqueue && mount -t mqueue none /dev/mqueue \
        || echo "could not mount /dev/mqueue: mq ls is tested for its error instead" >&2
fi

# Unit, integration (real processes) and doc tests of every crate in the workspace.
# The zenoh bridge builds once, in release (zenoh is large: no second, debug build);
# its topology tests use network namespaces when run as root with `ip` (iproute2).
cargo test --workspace --all-targets --exclude shmkit-bridge
cargo test --workspace --doc --exclude shmkit-bridge
cargo test --release -p shmkit-bridge

# No test may leave a named object behind.
left=$( (ls -a /dev/shm; ls /dev/mqueue 2>/dev/null; ls "${TMPDIR:-/tmp}") | grep -E '^(shmkit-test-|\.shmkit-init\.)' || true)
if [ -n "$left" ]; then
    echo "tests left named objects behind:" >&2
    echo "$left" >&2
    exit 1
fi
