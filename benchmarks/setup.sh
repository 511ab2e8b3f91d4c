#!/usr/bin/env bash
# Installs what the benchmarks need, non-interactively: Postfix (for smtp-sink and
# smtp-source; its own mail service is left stopped) and the Python clients compared.
# Usage: bash benchmarks/setup.sh [PYTHON]   (default: .venv/bin/python)
set -euo pipefail
python=${1:-.venv/bin/python}
if ! command -v smtp-sink >/dev/null 2>&1 && [ ! -x /usr/sbin/smtp-sink ]; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    echo "postfix postfix/main_mailer_type select No configuration" | $sudo_cmd debconf-set-selections
    echo "postfix postfix/mailname string localhost" | $sudo_cmd debconf-set-selections
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends postfix >/dev/null
    # The benchmarks start their own servers; the system's mail service stays off.
    $sudo_cmd postfix stop >/dev/null 2>&1 || true
fi
"$python" -m pip install -q -e '.[bench]'
echo "benchmark prerequisites installed"
