#!/usr/bin/env bash
# Installs what benchmarks/run.py needs, non-interactively and idempotently:
#   - Debian's postfix package, for smtp-sink, smtp-source and a private smtpd
#     (the system's own mail service is never left running);
#   - the Python clients compared and the test servers, into the Python given.
#
# Usage: bash benchmarks/setup.sh [PYTHON]
#   PYTHON defaults to $VIRTUAL_ENV/bin/python when a venv is active, else python3.
# Needs root, or sudo, for apt-get. Nothing is fetched but packages.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${1:-${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}}
python=${python:-python3}

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup.sh: needs root or sudo for apt-get" >&2; exit 1; }
    as_root=(sudo)
fi

have_postfix() {
    [ -x /usr/sbin/smtp-sink ] && [ -x /usr/sbin/smtp-source ] && [ -x /usr/sbin/postfix ]
}

if ! have_postfix; then
    echo "setup.sh: installing postfix (no configuration, service not started)"
    # "No configuration": Debian then writes no main.cf and starts nothing.
    echo "postfix postfix/main_mailer_type select No configuration" \
        | "${as_root[@]}" debconf-set-selections
    # Refuse every service start during the installation (invoke-rc.d honours
    # policy-rc.d), unless the machine already has its own policy.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
        "${as_root[@]}" chmod 755 "$policy"
        own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    status=0
    {
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends postfix
    } || status=$?
    [ "$own_policy" -eq 1 ] && "${as_root[@]}" rm -f "$policy"
    [ "$status" -eq 0 ] || { echo "setup.sh: installing postfix failed" >&2; exit "$status"; }
fi

# The system instance must not hold port 25 or run beside the benchmark's own.
if [ -e /etc/postfix/main.cf ] && "${as_root[@]}" postfix status >/dev/null 2>&1; then
    echo "setup.sh: stopping the system's postfix"
    "${as_root[@]}" postfix stop >/dev/null 2>&1 || true
fi
if command -v systemctl >/dev/null && systemctl is-enabled postfix >/dev/null 2>&1; then
    "${as_root[@]}" systemctl disable --now postfix >/dev/null 2>&1 || true
fi

# The clients compared and the servers, next to aiosmtp itself.
if ! "$python" -c "import aiosmtp" 2>/dev/null; then
    "$python" -m pip install -q -e "$repo"
fi
"$python" -m pip install -q "aiosmtplib>=3" "aiosmtpd>=1.4.4" "trustme>=1.1"

echo "setup.sh: ready; run: $python benchmarks/run.py"
