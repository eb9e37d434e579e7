#!/usr/bin/env bash
# The Debian/Ubuntu packages headless napari needs (Xvfb, Qt's xcb/GL libraries): the one list.
#
#   scripts/system-deps.sh          install the missing ones when it can (root, or `sudo -n` works),
#                                   then exit 0 if none is missing, else print one sentence and exit 1
#   scripts/system-deps.sh --check  only print that sentence (exit 1) when something is missing
#
# `make test`, `make studio` and `.ci/run` call it. SYSTEM_DEPS=skip never installs (a user who cannot).
# Outside Debian (no dpkg-query) it checks nothing: napari's own start-up then decides.
set -u

PACKAGES=(
    xvfb xauth libgl1 libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon0
    libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
    libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xkb1 libx11-xcb1
)

command -v dpkg-query >/dev/null 2>&1 || exit 0

missing() {
    local p out=()
    for p in "${PACKAGES[@]}"; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || out+=("$p")
    done
    # An installed xvfb whose Xvfb cannot run (removed, hidden) is as good as missing.
    local xvfb
    xvfb=$(command -v Xvfb)
    if [[ " ${out[*]} " != *" xvfb "* ]] && ! { [ -f "$xvfb" ] && [ -x "$xvfb" ]; }; then out+=(xvfb); fi
    echo "${out[*]}"
}

need=$(missing)
[ -z "$need" ] && exit 0

if [ "${1:-}" != --check ] && [ "${SYSTEM_DEPS:-}" != skip ] && command -v apt-get >/dev/null 2>&1; then
    sudo=()
    if [ "$(id -u)" != 0 ]; then sudo=(sudo -n); fi
    if [ ${#sudo[@]} -eq 0 ] || sudo -n true 2>/dev/null; then
        echo "Installing the system packages napari needs: $need"
        export DEBIAN_FRONTEND=noninteractive
        # shellcheck disable=SC2086 (one word per package)
        "${sudo[@]}" apt-get update -qq && \
            "${sudo[@]}" apt-get install -y -qq --no-install-recommends $need >/dev/null
        need=$(missing)
        [ -z "$need" ] && exit 0
    fi
fi

echo "napari cannot open a window here: missing system packages $need; install them with" \
     "'sudo apt-get install --no-install-recommends $need' (or run make as root)."
exit 1
