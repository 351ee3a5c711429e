#!/usr/bin/env bash
# Installs Microsoft's SARIF Multitool (npm @microsoft/sarif-multitool, which
# pulls its platform package @microsoft/sarif-multitool-linux: a
# self-contained .NET executable, no .NET runtime needed) into
# "$PODGATE_TOOLS/sarif-multitool", with "$PODGATE_TOOLS/bin/sarif-multitool"
# calling it. tests/check_repo.rs validates `podgate check --format sarif`
# with `sarif-multitool validate`. ICU is not needed: the wrapper runs .NET
# in globalization-invariant mode. Idempotent: does nothing when the pinned
# version is there. Sourced by .ci/run, also runnable on its own.
(
    set -euo pipefail
    want=5.7.0
    tools="${PODGATE_TOOLS:-$HOME/.cache/podgate-tools}"
    prefix="$tools/sarif-multitool"
    wrapper="$tools/bin/sarif-multitool"
    if [ -x "$wrapper" ] && "$wrapper" --version 2>&1 | grep "^SARIF Multitool $want" >/dev/null; then
        exit 0
    fi
    echo "sarif-multitool.sh: npm install @microsoft/sarif-multitool@$want" >&2
    mkdir -p "$prefix" "$tools/bin"
    npm install --silent --no-audit --no-fund --prefix "$prefix" "@microsoft/sarif-multitool@$want" >/dev/null
    binary="$prefix/node_modules/@microsoft/sarif-multitool-linux/Sarif.Multitool"
    chmod u+x "$binary"
    cat >"$wrapper" <<WRAPPER
#!/bin/sh
DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1 exec "$binary" "\$@"
WRAPPER
    chmod 0755 "$wrapper"
    "$wrapper" --version 2>&1 | head -1 >&2
)
