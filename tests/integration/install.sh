#!/bin/sh
# `make install DESTDIR=...` produces exactly the expected tree: the programs under PREFIX/bin,
# the configuration (never overwritten once there), the systemd unit with ExecStart under
# PREFIX, the state directory; `make uninstall` removes the programs and the unit and keeps
# the configuration and the state.
. tests/integration/lib.sh
if [ -n "${SAN:-}" ]; then echo "nothing sanitizer-specific, skipped under SAN=$SAN"; exit 77; fi
T=$(mktemp_state)
D=$T/root

mk() { make --no-print-directory -s "$@" > "$T/make.log" 2>&1 || { cat "$T/make.log"; fail "make $*"; }; }

note "make install DESTDIR=$D"
mk install DESTDIR="$D"

# The expected files, from the sources: the daemon and one intentd-NAME per src/tools/NAME.c.
{
    echo "./usr/local/bin/intentd"
    for t in src/tools/*.c; do
        [ -e "$t" ] && echo "./usr/local/bin/intentd-$(basename "$t" .c)"
    done
    echo "./etc/intentd/intentd.yaml"
    echo "./lib/systemd/system/intentd.service"
} | sort > "$T/expected"
(cd "$D" && find . -type f | sort) > "$T/actual"
diff "$T/expected" "$T/actual" > "$T/diff" || { cat "$T/diff"; fail "unexpected installed tree"; }
[ -d "$D/var/lib/intentd" ] || fail "no state directory $D/var/lib/intentd"
note "tree: $(wc -l < "$T/actual") files, state directory present"

perms() { stat -c %a "$1"; }
while read -r f; do
    case $f in
    ./usr/local/bin/*)
        [ "$(perms "$D/$f")" = 755 ] || fail "$f has mode $(perms "$D/$f"), not 755"
        cmp -s "$D/$f" "$BIN/$(basename "$f")" || fail "$f differs from $BUILD/$(basename "$f")"
        ;;
    *) [ "$(perms "$D/$f")" = 644 ] || fail "$f has mode $(perms "$D/$f"), not 644" ;;
    esac
done < "$T/expected"
cmp -s "$D/etc/intentd/intentd.yaml" config/intentd.yaml || fail "installed config differs"
grep -qx 'ExecStart=/usr/local/bin/intentd -c /etc/intentd/intentd.yaml' \
    "$D/lib/systemd/system/intentd.service" || fail "ExecStart does not point at PREFIX/bin"

# The installed programs run, and the shipped configuration is valid as installed.
"$D/usr/local/bin/intentd" --version > "$T/version.txt" 2>&1 \
    || { cat "$T/version.txt"; fail "installed intentd --version failed"; }
[ -s "$T/version.txt" ] || fail "intentd --version printed nothing"
"$D/usr/local/bin/intentd" --check-config -c "$D/etc/intentd/intentd.yaml" > "$T/check.txt" 2>&1 \
    || { cat "$T/check.txt"; fail "the installed intentd.yaml does not pass --check-config"; }
note "installed intentd runs: $(head -1 "$T/version.txt"); the shipped config passes --check-config"

# An operator's edit survives a reinstall (an upgrade must not reset the configuration).
echo "# edited by the operator" >> "$D/etc/intentd/intentd.yaml"
cp "$D/etc/intentd/intentd.yaml" "$T/edited.yaml"
mk install DESTDIR="$D"
cmp -s "$D/etc/intentd/intentd.yaml" "$T/edited.yaml" || fail "reinstall overwrote the configuration"
note "reinstall kept the edited configuration"

note "make uninstall DESTDIR=$D"
mk uninstall DESTDIR="$D"
left=$(cd "$D" && find . -type f | sort)
[ "$left" = "./etc/intentd/intentd.yaml" ] || fail "after uninstall, files left: $left"
[ -d "$D/var/lib/intentd" ] || fail "uninstall removed the state directory"
note "uninstall removed programs and unit, kept configuration and state"
echo "install: ok"
