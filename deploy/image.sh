#!/usr/bin/env bash
# Builds podgate's container image without a registry or a container daemon
# and writes it as an OCI image archive (an OCI image layout in a tar, the
# format `ctr image import`, `docker load` 25+, `podman load`,
# `kind load image-archive` and k3s's auto-import read).
#
#   deploy/image.sh OUT.tar
#
# What goes in is what distroless "cc" (the Dockerfile's base) carries for a
# glibc-linked Rust binary, taken from this Debian host instead of a pulled
# base image: the binary at /usr/local/bin/podgate, exactly the shared
# libraries `ldd` names for it plus the dynamic loader, /etc/passwd and
# /etc/group with nonroot 65532 (home /home/nonroot), /etc/nsswitch.conf,
# the CA bundle, /etc/os-release, and dpkg's status.d entries and copyright
# files of the Debian packages those files come from (so that scanners see
# their versions and the licences travel with them). No shell, no package
# manager.
#
# One layer, written deterministically: entries sorted, numeric owners, every
# mtime (and the config's `created`) set to SOURCE_DATE_EPOCH, by default the
# time of the last commit; gzip without a name or time. The same binary and
# the same host files give the same image digest.
#
# User, entrypoint, default arguments and ports are the Dockerfile's
# (tests/image.rs compares the two and fails when they drift). The Dockerfile
# stays the way to build with docker; see docs/image.md.
#
# Environment:
#   PODGATE_IMAGE   image reference to record (default podgate:VERSION, VERSION
#                   from Cargo.toml). A name without a registry is stored as
#                   docker.io/library/NAME, which is what the kubelet asks
#                   containerd for when a Pod says `image: NAME`.
#   PODGATE_BINARY  use this podgate binary instead of building one (tests and
#                   CI build the fat-LTO release once). Without it:
#                   `cargo auditable build --release --locked --bin podgate`.
#   PODGATE_SBOM    0 to skip the SBOM (default 1: needs auditable2cdx, and a
#                   binary built with `cargo auditable`).
#   SOURCE_DATE_EPOCH  timestamp for files and config (default: last commit).
#
# Outputs: OUT.tar, and (unless PODGATE_SBOM=0) the CycloneDX JSON SBOM of
# the binary in the image next to it: OUT.tar -> OUT.cdx.json, converted by
# auditable2cdx from the dependency list `cargo auditable` embedded in the
# binary, so it names exactly the crates compiled in. Prints the image
# reference and the manifest digest on stdout. Needs python3, ldd, and the
# tools from .ci/install.d/image-tools.sh (cargo-auditable, auditable2cdx).
set -euo pipefail

die() { echo "image.sh: $*" >&2; exit 1; }

[ $# -eq 1 ] && [ -n "$1" ] && [ "$1" != "-h" ] && [ "$1" != "--help" ] \
    || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
out="$1"
case "$out" in
    */) die "OUT must be a file name, not a directory: $out" ;;
esac
out_dir="$(dirname "$out")"
[ -d "$out_dir" ] || die "no such directory: $out_dir"
out="$(cd "$out_dir" && pwd)/$(basename "$out")"
sbom="${out%.tar}.cdx.json"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
version="$(sed -n 's/^version = "\([^"]*\)"$/\1/p' Cargo.toml | head -1)"
[ -n "$version" ] || die "no version in Cargo.toml"
image="${PODGATE_IMAGE:-podgate:$version}"
command -v python3 >/dev/null || die "python3 is needed to write the OCI archive"
command -v ldd >/dev/null || die "ldd (libc-bin) is needed to find the binary's libraries"

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH="$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)"
fi
case "$SOURCE_DATE_EPOCH" in
    ''|*[!0-9]*) die "SOURCE_DATE_EPOCH is not a number of seconds: $SOURCE_DATE_EPOCH" ;;
esac

binary="${PODGATE_BINARY:-}"
if [ -z "$binary" ]; then
    cargo auditable --version >/dev/null 2>&1 \
        || die "cargo-auditable is missing: run .ci/install.d/image-tools.sh (or set PODGATE_BINARY)"
    echo "image.sh: cargo auditable build --release --locked --bin podgate" >&2
    cargo auditable build --release --locked --bin podgate >&2
    binary="${CARGO_TARGET_DIR:-$root/target}/release/podgate"
fi
[ -f "$binary" ] && [ -x "$binary" ] || die "not an executable file: $binary"
binary="$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")"

# The libraries as the host's loader resolves them: "name => /path (addr)"
# and the loader itself as "/path (addr)"; linux-vdso has no file.
if ldd_out="$(ldd "$binary" 2>&1)"; then
    if grep -q 'not found' <<<"$ldd_out"; then
        die "ldd cannot resolve every library of $binary:"$'\n'"$ldd_out"
    fi
    libs="$(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out" | sort -u)"
else
    # "not a dynamic executable": a static (e.g. musl) build needs none.
    libs=""
fi

if [ "${PODGATE_SBOM:-1}" != 0 ]; then
    command -v auditable2cdx >/dev/null 2>&1 \
        || die "auditable2cdx is missing: run .ci/install.d/image-tools.sh (or set PODGATE_SBOM=0)"
    # auditable2cdx (0.1.0) takes only the binary's path, prints minified
    # CycloneDX 1.3 JSON and panics on a binary without the list; its
    # message ("NoAuditData", an I/O error) follows ours.
    if ! cdx="$(RUST_BACKTRACE=0 auditable2cdx "$binary" 2>&1 >"$sbom.partial")"; then
        rm -f "$sbom.partial"
        die "no SBOM: auditable2cdx cannot read a dependency list from $binary" \
            "(build it with \`cargo auditable build\`, or set PODGATE_SBOM=0):"$'\n'"$cdx"
    fi
    # It writes podgate's own purl (a path dependency, source "local") as
    # "pkg:cargo/podgate@0.1.0&download_url=redacted": the qualifiers begin
    # with "&" instead of "?", so a purl parser reads the version as
    # "0.1.0&download_url=redacted". Put the "?" back, keeping the rest of the
    # document byte for byte (minified, keys in its order).
    python3 - "$sbom.partial" <<'PY' || { rm -f "$sbom.partial"; die "cannot fix the purls in the SBOM"; }
import json, re, sys
path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    bom = json.load(f)
def fix(component):
    purl = component.get("purl")
    if purl and "?" not in purl:
        component["purl"] = re.sub(r"^(pkg:cargo/[^@]+@[^&#]+)&", r"\1?", purl)
fix(bom.get("metadata", {}).get("component", {}))
for component in bom.get("components", []):
    fix(component)
with open(path, "w", encoding="utf-8") as f:
    json.dump(bom, f, ensure_ascii=False, separators=(",", ":"))
PY
    mv "$sbom.partial" "$sbom"
fi

python3 - "$binary" "$out" "$image" "$version" "$SOURCE_DATE_EPOCH" $libs <<'PY'
import gzip, hashlib, io, json, os, subprocess, sys, tarfile

binary, out, image, version, epoch = sys.argv[1:6]
libs = sys.argv[6:]
epoch = int(epoch)

# The runtime configuration; tests/image.rs checks it against the Dockerfile.
USER = "65532:65532"
EXPOSE = ["8443/tcp", "9090/tcp"]
ENTRYPOINT = ["/usr/local/bin/podgate"]
CMD = ["serve", "--listen=0.0.0.0:8443", "--metrics-listen=0.0.0.0:9090",
       "--tls-cert=/certs/tls.crt", "--tls-key=/certs/tls.key",
       "--config=/config/policy.yaml", "--log-format=json",
       "--shutdown-delay=5s", "--shutdown-grace=10s",
       "--idle-timeout=120s", "--header-read-timeout=5s",
       "--max-buffered-bytes=33554432"]

# distroless's base files, byte for byte what cc-debian12:nonroot carries.
PASSWD = ("root:x:0:0:root:/root:/sbin/nologin\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
          "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
GROUP = ("root:x:0:\n"
         "nobody:x:65534:\n"
         "tty:x:5:\n"
         "staff:x:50:\n"
         "nonroot:x:65532:\n")
NSSWITCH = ("passwd:         files\n"
            "group:          files\n"
            "shadow:         files\n"
            "gshadow:        files\n"
            "\n"
            "hosts:          files dns\n"
            "networks:       files\n"
            "\n"
            "protocols:      db files\n"
            "services:       db files\n"
            "ethers:         db files\n"
            "rpc:            db files\n"
            "\n"
            "netgroup:       nis\n")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

def fail(msg):
    sys.exit("image.sh: " + msg)

def read(path):
    with open(path, "rb") as f:
        return f.read()

# ELF machine -> OCI architecture; the image is for the binary's platform.
elf = read(binary)
if elf[:4] != b"\x7fELF":
    fail(binary + " is not an ELF executable")
machine = int.from_bytes(elf[18:20], "little" if elf[5] == 1 else "big")
arch = {0x3E: "amd64", 0xB7: "arm64", 0xF3: "riscv64", 0x15: "ppc64le", 0x16: "s390x"}.get(machine)
if arch is None:
    fail("unknown ELF machine 0x%x in %s" % (machine, binary))

# cargo auditable's dependency list is the ELF section .dep-v0; a binary
# from PODGATE_BINARY may have been built without it.
def section_names(data):
    if data[4] != 2:  # ELFCLASS64
        return set()
    order = "little" if data[5] == 1 else "big"
    num = lambda at, size: int.from_bytes(data[at:at + size], order)
    shoff, shentsize, shnum, shstrndx = num(0x28, 8), num(0x3A, 2), num(0x3C, 2), num(0x3E, 2)
    if shoff == 0 or shstrndx >= shnum:
        return set()
    strtab = shoff + shstrndx * shentsize
    str_off = num(strtab + 0x18, 8)
    names = set()
    for i in range(shnum):
        name_at = str_off + num(shoff + i * shentsize, 4)
        names.add(data[name_at:data.index(b"\0", name_at)].decode("ascii", "replace"))
    return names

if ".dep-v0" not in section_names(elf):
    print("image.sh: warning: %s carries no dependency list (.dep-v0): build it with "
          "`cargo auditable build --release`" % binary, file=sys.stderr)

# path in the image -> (kind, payload, mode, uid, gid)
entries = {}

def add_dir(path, mode=0o755, uid=0, gid=0):
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i])
        entries.setdefault(parent, ("dir", None, 0o755, 0, 0))
    entries[path.strip("/")] = ("dir", None, mode, uid, gid)

def add_file(path, data, mode=0o644):
    parent = os.path.dirname(path.strip("/"))
    if parent and parent not in entries:
        add_dir(parent)
    entries[path.strip("/")] = ("file", data, mode, 0, 0)

def add_symlink(path, target):
    parent = os.path.dirname(path.strip("/"))
    if parent and parent not in entries:
        add_dir(parent)
    entries[path.strip("/")] = ("symlink", target, 0o777, 0, 0)

add_dir("tmp", 0o1777)
add_dir("root", 0o700)
add_dir("home/nonroot", 0o700, 65532, 65532)
add_file("etc/passwd", PASSWD.encode())
add_file("etc/group", GROUP.encode())
add_file("etc/nsswitch.conf", NSSWITCH.encode())
if not os.path.isfile(CA_BUNDLE):
    fail(CA_BUNDLE + " is missing: install Debian's ca-certificates")
add_file(CA_BUNDLE, read(CA_BUNDLE))
for os_release in ("/etc/os-release", "/usr/lib/os-release"):
    if os.path.isfile(os_release):
        add_file("etc/os-release", read(os_release))
        break
add_file("usr/local/bin/podgate", elf, 0o755)

# Each library at the path ldd names; a symbolic link (the loader's
# /lib64/ld-linux-x86-64.so.2) stays one, with the file it points at.
host_files = [CA_BUNDLE]
for lib in libs:
    path = lib
    for _ in range(40):
        if not os.path.islink(path):
            break
        target = os.readlink(path)
        add_symlink(path, target)
        path = os.path.normpath(os.path.join(os.path.dirname(path), target))
    else:
        fail("symbolic link loop at " + lib)
    if not os.path.isfile(path):
        fail("library %s resolves to %s, not a file" % (lib, path))
    add_file(path, read(path), os.stat(path).st_mode & 0o755)
    host_files.append(lib)

# dpkg's record of where those files came from, as distroless keeps it: one
# status file per package under /var/lib/dpkg/status.d, and its copyright.
def dpkg(*args):
    try:
        return subprocess.run(["dpkg-query"] + list(args), check=True,
                              capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""

# The CA bundle is generated by update-ca-certificates, so no package owns it.
packages = {"ca-certificates"} if dpkg("-s", "ca-certificates") else set()
for path in host_files:
    owner = dpkg("-S", path)
    if owner:
        packages.add(owner.split(":", 1)[0].strip())
add_dir("var/lib/dpkg/status.d")
for pkg in sorted(packages):
    status = dpkg("-s", pkg)
    if status:
        add_file("var/lib/dpkg/status.d/" + pkg, status.encode())
    copyright = "/usr/share/doc/%s/copyright" % pkg
    if os.path.isfile(copyright):
        add_file(copyright.lstrip("/"), read(copyright))

def tar_bytes(members):
    """members: sorted [(name, kind, payload, mode, uid, gid)] -> tar bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload, mode, uid, gid in members:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode, info.uid, info.gid = epoch, mode, uid, gid
            info.uname = info.gname = ""
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                tar.addfile(info)
            else:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()

layer_tar = tar_bytes([(name,) + entries[name] for name in sorted(entries)])
layer_gz = gzip.compress(layer_tar, compresslevel=6, mtime=0)

def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()

def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

created = __import__("datetime").datetime.fromtimestamp(
    epoch, __import__("datetime").timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
labels = {
    "org.opencontainers.image.title": "podgate",
    "org.opencontainers.image.version": version,
    "org.opencontainers.image.created": created,
}
config = canonical({
    "created": created,
    "architecture": arch,
    "os": "linux",
    "config": {
        "User": USER,
        "ExposedPorts": {port: {} for port in EXPOSE},
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "SSL_CERT_FILE=" + CA_BUNDLE],
        "Entrypoint": ENTRYPOINT,
        "Cmd": CMD,
        "WorkingDir": "/home/nonroot",
        "Labels": labels,
    },
    "rootfs": {"type": "layers", "diff_ids": [sha(layer_tar)]},
    "history": [{"created": created, "created_by": "deploy/image.sh"}],
})
manifest = canonical({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": sha(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha(layer_gz), "size": len(layer_gz)}],
    "annotations": labels,
})

# The reference the kubelet asks for: "podgate:0.1.0" in a Pod is
# docker.io/library/podgate:0.1.0 to containerd.
name, tag = image, "latest"
if "@" in name:
    fail("PODGATE_IMAGE must be NAME[:TAG], not a digest: " + image)
if ":" in name.rsplit("/", 1)[-1]:
    name, tag = name.rsplit(":", 1)
first = name.split("/", 1)[0]
if "/" not in name:
    name = "docker.io/library/" + name
elif not ("." in first or ":" in first or first == "localhost"):
    name = "docker.io/" + name
full = "%s:%s" % (name, tag)
index = canonical({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha(manifest), "size": len(manifest),
        "platform": {"architecture": arch, "os": "linux"},
        "annotations": {"io.containerd.image.name": full,
                        "org.opencontainers.image.ref.name": tag},
    }],
})

archive = [("blobs", "dir", None, 0o755, 0, 0),
           ("blobs/sha256", "dir", None, 0o755, 0, 0)]
for blob in sorted({config, manifest, layer_gz}, key=sha):
    archive.append(("blobs/sha256/" + sha(blob)[7:], "file", blob, 0o644, 0, 0))
archive.append(("index.json", "file", index, 0o644, 0, 0))
archive.append(("oci-layout", "file", b'{"imageLayoutVersion":"1.0.0"}', 0o644, 0, 0))
tmp = out + ".partial"
with open(tmp, "wb") as f:
    f.write(tar_bytes(archive))
os.replace(tmp, out)
print("%s %s" % (full, sha(manifest)))
print("image.sh: wrote %s (%d bytes, layer %d bytes compressed, %d uncompressed)"
      % (out, os.path.getsize(out), len(layer_gz), len(layer_tar)), file=sys.stderr)
PY
if [ "${PODGATE_SBOM:-1}" != 0 ]; then
    echo "image.sh: wrote $sbom" >&2
fi
