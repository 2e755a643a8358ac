#!/usr/bin/env bash
# The project's one test command: installs what the tests need, then runs the whole suite.
#   bash tests/run.sh            everything (what CI runs)
#   bash tests/run.sh -m 'not slow'   skip the slow randomized tests
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
# The object store of tests/test_s3.py: Swift with s3api (tests/harness/swift.py), memcached for its tempauth.
command -v swift-proxy-server >/dev/null 2>&1 || need+=(swift swift-proxy swift-account swift-container swift-object)
command -v memcached >/dev/null 2>&1 || need+=(memcached)
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)  # the slow-storage passthrough (tests/test_slowfs.py)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the browser test of audit --html (tests/test_html.py)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${need[*]} (Debian packages)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "warning: ${need[*]} missing and not root: real-registry tests will be skipped" >&2
    fi
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test,bench]'
exec python3 -m pytest "$@"
