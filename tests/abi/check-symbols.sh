#!/bin/sh
# check-symbols.sh LIBRARY EXPECTED HEADER — the ABI check run by ctest: libcoffer.so exports
# exactly the functions listed in EXPECTED (one per line, sorted), every one of them named
# coffer_*, and they are the functions coffer.h declares with COFFER_API. A new public
# function means adding it to all three; an internal one leaking out fails here.
set -eu
library=$1 expected=$2 header=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Defined dynamic symbols, without the linker's own markers (_edata, _end, __bss_start).
nm -D --defined-only "$library" | awk '{print $3}' |
    grep -v -x -e _edata -e _end -e __bss_start -e _init -e _fini | LC_ALL=C sort >"$work/exported"
status=0
if grep -v '^coffer_' "$work/exported" >"$work/foreign"; then
    echo "exported symbols not named coffer_* (give them hidden visibility):"
    sed 's/^/  /' "$work/foreign"
    status=1
fi
if ! diff -u "$expected" "$work/exported" >"$work/diff"; then
    echo "the exported symbols differ from $expected (- expected, + exported):"
    cat "$work/diff"
    status=1
fi
# Declarations marked COFFER_API: the name is the identifier right before the '('.
grep 'COFFER_API' "$header" | grep -v '#define' |
    sed -n 's/.*[ *]\(coffer_[a-z0-9_]*\)(.*/\1/p' | LC_ALL=C sort >"$work/declared"
if ! diff -u "$work/declared" "$work/exported" >"$work/diff"; then
    echo "COFFER_API declarations of $header differ from the exports (- declared, + exported):"
    cat "$work/diff"
    status=1
fi
[ "$status" -eq 0 ] && echo "$(wc -l <"$work/exported") exported symbols, all coffer_*, as expected"
exit "$status"
