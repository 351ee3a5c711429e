#!/usr/bin/env bash
# Debian packages the tests use: package prometheus has promtool (checks
# the metrics exposition, unit-tests the chart's alerts) and the server
# (tests/dashboard.rs queries the Grafana dashboard's panels against it);
# unzip unpacks helm.
set -euo pipefail
missing=()
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing+=(prometheus)
command -v unzip >/dev/null || missing+=(unzip)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
promtool --version | head -1
prometheus --version 2>&1 | head -1
