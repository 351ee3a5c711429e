//! podgate's container image as `deploy/image.sh` writes it, read back with
//! real tools: the OCI config against the Dockerfile's USER, ENTRYPOINT, CMD
//! and EXPOSE (parsed here, not copied), the layer's files against the
//! binary and the libraries `ldd` names, the audit data `cargo auditable`
//! embeds (read by `rust-audit-info`) against Cargo.lock, the CycloneDX SBOM
//! auditable2cdx derives from that list (validated against the CycloneDX
//! schema by cyclonedx-python-lib, naming the same crates), the same digest
//! and SBOM from a second build, and the archive imported into a
//! containerd of the test's own and run with runc as UID 65532: `--version`,
//! and the default arguments serving with a certificate and policy mounted
//! at /certs and /config as the chart mounts them.
//!
//! The image is built once per run of this file. Without `PODGATE_BINARY`,
//! image.sh runs `cargo auditable build --release --locked --bin podgate`
//! (fat LTO: minutes on a loaded machine the first time, nothing when
//! `target/release/podgate` is up to date); with it, that binary goes in.
//! The tools come from `.ci/install.d/image-tools.sh`; a test that needs a
//! missing one is skipped with a loud message, or fails under
//! `PODGATE_REQUIRE_TOOLS=1` (as `.ci/run` sets). containerd needs root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "common/tools.rs"]
mod tools;

use tools::path_with_tools;

/// How long any awaited condition may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(180);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// PATH with `$PODGATE_TOOLS/bin` and `~/.cargo/bin` first, as `.ci/run`
/// sets it.
/// Whether the test can run: every tool is installed (and `also` holds);
/// if not, it is skipped loudly, or fails under `PODGATE_REQUIRE_TOOLS=1`.
fn have(test: &str, tools: &[&str], also: Option<&str>) -> bool {
    let mut missing = tools::missing(tools);
    missing.extend(also.map(str::to_owned));
    tools::require(test, missing, "install them with `bash .ci/install.d/image-tools.sh`")
}

/// What image.sh needs, and what reading its output needs.
const BUILD_TOOLS: &[&str] = &["python3", "ldd", "tar", "sha256sum", "cargo-auditable", "auditable2cdx"];

fn run(command: &mut Command) -> Output {
    let output = command.env("PATH", path_with_tools()).output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One image.sh run, unpacked: the archive's layout under `oci/`, the
/// layer's files under `rootfs/`.
struct Built {
    dir: PathBuf,
    archive: PathBuf,
    sbom: PathBuf,
    /// The binary that went in (`PODGATE_BINARY`, or what cargo built).
    binary: PathBuf,
    /// image.sh's stdout: "REFERENCE sha256:MANIFEST".
    printed: String,
    index: Value,
    manifest: Value,
    config: Value,
    /// `tar -tv --numeric-owner` of the layer, one line per entry.
    listing: Vec<String>,
}

impl Built {
    fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
        self.dir.join("oci/blobs/sha256").join(hex)
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

/// Runs image.sh once for the whole file; None when its tools are missing.
fn built(test: &str) -> Option<&'static Built> {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    if !have(test, BUILD_TOOLS, None) {
        return None;
    }
    match BUILT.get_or_init(|| std::panic::catch_unwind(build).map_err(|_| "building the image failed".to_owned())) {
        Ok(built) => Some(built),
        Err(e) => panic!("{e} (see the first test's output)"),
    }
}

fn build() -> Built {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("podgate-image");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("oci")).unwrap();
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    let archive = dir.join("podgate.tar");
    let started = Instant::now();
    let mut image_sh = Command::new(root().join("deploy/image.sh"));
    image_sh.arg(&archive).env_remove("PODGATE_IMAGE").env_remove("PODGATE_SBOM").stderr(Stdio::inherit());
    // What cargo sets for this test and not for a shell: build scripts that
    // track these (ring's tracks CARGO_MANIFEST_DIR) would make the nested
    // release build differ from the one image.sh from a shell makes and
    // rebuild, each time, everything above them.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        {
            image_sh.env_remove(name.as_ref());
        }
    }
    let output = run(&mut image_sh);
    eprintln!("image.sh took {:.1?}", started.elapsed());
    let binary = match std::env::var_os("PODGATE_BINARY") {
        Some(binary) => PathBuf::from(binary),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| root().join("target"), PathBuf::from)
            .join("release/podgate"),
    };
    run(Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(dir.join("oci")));

    let index = read_json(&dir.join("oci/index.json"));
    let mut built = Built {
        sbom: dir.join("podgate.cdx.json"),
        dir,
        archive,
        binary,
        printed: stdout(&output).trim().to_owned(),
        index,
        manifest: Value::Null,
        config: Value::Null,
        listing: Vec::new(),
    };
    let manifest_digest = built.index["manifests"][0]["digest"].as_str().expect("index names a manifest").to_owned();
    built.manifest = read_json(&built.blob(&manifest_digest));
    let config_digest = built.manifest["config"]["digest"].as_str().expect("manifest names a config").to_owned();
    built.config = read_json(&built.blob(&config_digest));
    let layer = built.blob(built.manifest["layers"][0]["digest"].as_str().expect("manifest names a layer"));
    built.listing =
        stdout(&run(Command::new("tar").args(["-tvzf"]).arg(&layer).arg("--numeric-owner").env("TZ", "UTC")))
            .lines()
            .map(str::to_owned)
            .collect();
    run(Command::new("tar").arg("-xzf").arg(&layer).arg("-C").arg(built.rootfs()).arg("--no-same-owner"));
    built
}

/// The final stage of the Dockerfile: instruction -> arguments, with
/// continuation lines joined and comments dropped.
fn dockerfile_final_stage() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            instructions.push(std::mem::take(&mut current));
        }
    }
    let mut stage = BTreeMap::new();
    for instruction in instructions {
        let (keyword, args) = instruction.split_once(char::is_whitespace).unwrap_or((&instruction, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            stage.clear();
        }
        match keyword.as_str() {
            // EXPOSE may be given more than once; the others, last one wins.
            "EXPOSE" => {
                let entry: &mut String = stage.entry(keyword).or_default();
                entry.push(' ');
                entry.push_str(args.trim());
            }
            _ => {
                stage.insert(keyword, args.trim().to_owned());
            }
        }
    }
    stage
}

/// An exec-form (JSON array) ENTRYPOINT or CMD.
fn exec_form(stage: &BTreeMap<String, String>, keyword: &str) -> Value {
    let args = stage.get(keyword).unwrap_or_else(|| panic!("the Dockerfile's final stage has no {keyword}"));
    let value: Value =
        serde_json::from_str(args).unwrap_or_else(|e| panic!("{keyword} is not in exec (JSON) form: {e}: {args}"));
    assert!(value.is_array(), "{keyword} {args}");
    value
}

#[test]
fn image_config_matches_the_dockerfile() {
    let Some(built) = built("image_config_matches_the_dockerfile") else { return };
    let stage = dockerfile_final_stage();
    let config = &built.config["config"];
    assert_eq!(config["User"], Value::String(stage["USER"].clone()), "USER");
    assert_eq!(config["Entrypoint"], exec_form(&stage, "ENTRYPOINT"), "ENTRYPOINT");
    assert_eq!(config["Cmd"], exec_form(&stage, "CMD"), "CMD");
    let expose: BTreeSet<String> = stage["EXPOSE"]
        .split_whitespace()
        .map(|port| if port.contains('/') { port.to_owned() } else { format!("{port}/tcp") })
        .collect();
    let exposed: BTreeSet<String> = config["ExposedPorts"].as_object().expect("ExposedPorts").keys().cloned().collect();
    assert_eq!(exposed, expose, "EXPOSE");
    assert_eq!(built.config["os"], "linux");
    assert_eq!(built.config["architecture"], "amd64", "this test runs on amd64 hosts");
}

/// Every blob is where its digest says, with the size its descriptor says,
/// and the index names the image as a Pod's `image: podgate:VERSION` is
/// looked up in containerd.
#[test]
fn archive_is_an_oci_layout_with_verified_digests() {
    let Some(built) = built("archive_is_an_oci_layout_with_verified_digests") else { return };
    assert_eq!(read_json(&built.dir.join("oci/oci-layout"))["imageLayoutVersion"], "1.0.0");
    assert_eq!(built.index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let descriptor = &built.index["manifests"][0];
    let reference = format!("docker.io/library/podgate:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(descriptor["annotations"]["io.containerd.image.name"], reference.as_str());
    assert_eq!(descriptor["annotations"]["org.opencontainers.image.ref.name"], env!("CARGO_PKG_VERSION"));
    assert_eq!(built.printed, format!("{reference} {}", descriptor["digest"].as_str().unwrap()));

    let mut descriptors = vec![descriptor.clone(), built.manifest["config"].clone()];
    descriptors.extend(built.manifest["layers"].as_array().unwrap().iter().cloned());
    assert_eq!(descriptors.len(), 3, "one config and one layer");
    for descriptor in &descriptors {
        let digest = descriptor["digest"].as_str().unwrap();
        let blob = built.blob(digest);
        let sum = stdout(&run(Command::new("sha256sum").arg(&blob)));
        assert_eq!(format!("sha256:{}", sum.split_whitespace().next().unwrap()), digest);
        assert_eq!(descriptor["size"].as_u64(), Some(std::fs::metadata(&blob).unwrap().len()), "{digest}");
    }
    assert_eq!(built.manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    // The config's diff_id is the digest of the uncompressed layer.
    let layer = built.blob(built.manifest["layers"][0]["digest"].as_str().unwrap());
    let mut gunzip = Command::new("sh");
    gunzip.arg("-c").arg("gzip -dc \"$0\" | sha256sum").arg(&layer);
    let sum = stdout(&run(&mut gunzip));
    assert_eq!(
        built.config["rootfs"]["diff_ids"][0].as_str().unwrap(),
        format!("sha256:{}", sum.split_whitespace().next().unwrap())
    );
}

/// The same binary gives the same image (sorted entries, fixed times) and
/// the same SBOM, byte for byte, and PODGATE_IMAGE names it; a name without
/// a registry is Docker Hub's, as the kubelet resolves it.
#[test]
fn rebuilding_gives_the_same_digest_under_another_name() {
    let Some(built) = built("rebuilding_gives_the_same_digest_under_another_name") else { return };
    for (run_number, (name, stored)) in [
        ("registry.example:5000/team/podgate:test", "registry.example:5000/team/podgate:test"),
        ("team/podgate", "docker.io/team/podgate:latest"),
    ]
    .into_iter()
    .enumerate()
    {
        let archive = built.dir.join("again.tar");
        let sbom = built.dir.join("again.cdx.json");
        // The SBOM once: it does not depend on the name.
        let with_sbom = run_number == 0;
        let output = run(Command::new(root().join("deploy/image.sh"))
            .arg(&archive)
            .env("PODGATE_BINARY", &built.binary)
            .env("PODGATE_IMAGE", name)
            .env("PODGATE_SBOM", if with_sbom { "1" } else { "0" }));
        let digest = built.printed.split_whitespace().nth(1).unwrap();
        assert_eq!(stdout(&output).trim(), format!("{stored} {digest}"), "PODGATE_IMAGE={name}");
        if with_sbom {
            assert!(same_bytes(&sbom, &built.sbom), "a second SBOM of the same binary differs");
            std::fs::remove_file(&sbom).unwrap();
        } else {
            assert!(!sbom.exists(), "PODGATE_SBOM=0 wrote an SBOM");
        }
        let listing = stdout(&run(Command::new("tar").arg("-xOf").arg(&archive).arg("index.json")));
        let index: Value = serde_json::from_str(&listing).unwrap();
        assert_eq!(index["manifests"][0]["annotations"]["io.containerd.image.name"], stored);
        std::fs::remove_file(&archive).unwrap();
    }
    let failed = Command::new(root().join("deploy/image.sh"))
        .arg(built.dir.join("never.tar"))
        .env("PATH", path_with_tools())
        .env("PODGATE_BINARY", built.dir.join("no-such-binary"))
        .env("PODGATE_SBOM", "0")
        .output()
        .unwrap();
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("not an executable file"), "{failed:?}");
    assert!(!built.dir.join("never.tar").exists());
}

/// The mode, owner and path of one entry of the layer's listing.
fn entry<'a>(built: &'a Built, path: &str) -> (&'a str, &'a str) {
    built
        .listing
        .iter()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(5) == Some(&path)).then(|| (fields[0], fields[1]))
        })
        .unwrap_or_else(|| panic!("{path} is not in the layer:\n{}", built.listing.join("\n")))
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap_or_else(|e| panic!("{}: {e}", a.display()))
        == std::fs::read(b).unwrap_or_else(|e| panic!("{}: {e}", b.display()))
}

/// A path in the rootfs, following symbolic links inside it (an absolute
/// target is relative to the rootfs, not the host).
fn resolve_in(rootfs: &Path, path: &str) -> PathBuf {
    let mut path = PathBuf::from(path.trim_start_matches('/'));
    for _ in 0..40 {
        let host = rootfs.join(&path);
        match std::fs::read_link(&host) {
            Ok(target) if target.is_absolute() => path = target.strip_prefix("/").unwrap().to_owned(),
            Ok(target) => path = path.parent().unwrap().join(target),
            Err(_) => return host,
        }
    }
    panic!("symbolic link loop at {}", path.display())
}

#[test]
fn layer_holds_the_binary_its_libraries_the_users_and_the_ca_bundle() {
    let Some(built) = built("layer_holds_the_binary_its_libraries_the_users_and_the_ca_bundle") else { return };
    let rootfs = built.rootfs();
    assert!(same_bytes(&rootfs.join("usr/local/bin/podgate"), &built.binary), "the binary");
    assert_eq!(entry(built, "usr/local/bin/podgate"), ("-rwxr-xr-x", "0/0"));

    // Every library the host's loader resolves for the binary, at the same
    // path and with the same bytes; the loader too.
    let ldd = stdout(&run(Command::new("ldd").arg(&built.binary)));
    let mut libraries = Vec::new();
    for line in ldd.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "=>", path, ..] if path.starts_with('/') => libraries.push(path.to_string()),
            [path, ..] if path.starts_with('/') => libraries.push(path.to_string()),
            _ => {}
        }
    }
    assert!(libraries.iter().any(|lib| lib.ends_with("/libc.so.6")), "{ldd}");
    assert!(libraries.iter().any(|lib| lib.contains("/ld-linux")), "{ldd}");
    for library in &libraries {
        let inside = resolve_in(&rootfs, library);
        assert!(inside.is_file(), "{library} is not in the image");
        assert!(same_bytes(&inside, Path::new(library)), "{library} differs from the host's");
    }

    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l == "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin"), "{passwd}");
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l == "nonroot:x:65532:"), "{group}");
    assert_eq!(entry(built, "home/nonroot/"), ("drwx------", "65532/65532"));
    assert_eq!(entry(built, "tmp/"), ("drwxrwxrwt", "0/0"));
    let nsswitch = std::fs::read_to_string(rootfs.join("etc/nsswitch.conf")).unwrap();
    assert!(nsswitch.lines().any(|l| l.split_whitespace().eq(["hosts:", "files", "dns"])), "{nsswitch}");

    let bundle = rootfs.join("etc/ssl/certs/ca-certificates.crt");
    assert!(same_bytes(&bundle, Path::new("/etc/ssl/certs/ca-certificates.crt")), "the CA bundle");
    assert!(std::fs::read_to_string(&bundle).unwrap().matches("BEGIN CERTIFICATE").count() > 50);
    for package in ["libc6", "ca-certificates"] {
        let status = std::fs::read_to_string(rootfs.join("var/lib/dpkg/status.d").join(package)).unwrap();
        assert!(status.starts_with(&format!("Package: {package}\n")), "{status}");
        assert!(rootfs.join("usr/share/doc").join(package).join("copyright").is_file(), "{package}'s copyright");
    }

    // Nothing else of an operating system: no shell, no package manager.
    for absent in ["bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/dpkg", "usr/bin/apt"] {
        assert!(!resolve_in(&rootfs, absent).exists(), "{absent} is in the image");
    }
    // Deterministic: numeric root owners (but nonroot's home), one mtime,
    // entries in sorted order.
    let times: BTreeSet<String> =
        built.listing.iter().map(|l| l.split_whitespace().skip(3).take(2).collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(times.len(), 1, "one mtime for every entry: {times:?}");
    let paths: Vec<&str> = built.listing.iter().map(|l| l.split_whitespace().nth(5).unwrap()).collect();
    let mut sorted = paths.clone();
    sorted.sort_unstable();
    assert_eq!(paths, sorted);
    for line in &built.listing {
        let owner = line.split_whitespace().nth(1).unwrap();
        assert!(owner == "0/0" || line.contains(" home/nonroot/"), "{line}");
    }
}

/// `name version` pairs of Cargo.lock's packages.
fn lockfile_packages() -> BTreeSet<(String, String)> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    let mut packages = BTreeSet::new();
    let mut name = None;
    for line in lock.lines() {
        if line == "[[package]]" {
            name = None;
        } else if let Some(value) = line.strip_prefix("name = ") {
            name = Some(value.trim_matches('"').to_owned());
        } else if let (Some(value), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            packages.insert((n, value.trim_matches('"').to_owned()));
        }
    }
    packages
}

/// What `cargo metadata` says about podgate's dependencies on this host.
struct Dependencies {
    /// podgate's own direct dependencies by kind ("normal", "dev",
    /// "build"), optional ones left out.
    direct: BTreeMap<String, BTreeSet<String>>,
    /// Every package reachable from podgate through normal and build
    /// edges for the host target: what can be compiled into the binary (a
    /// superset: features only dev-dependencies turn on add some).
    linkable: BTreeSet<(String, String)>,
}

fn dependencies() -> Dependencies {
    let host = stdout(&run(Command::new("rustc").arg("-vV")))
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc -vV names the host");
    let output = run(Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--locked", "--filter-platform", &host])
        .arg("--manifest-path")
        .arg(root().join("Cargo.toml")));
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let name_version = |id: &str| {
        let package = packages.iter().find(|p| p["id"] == id).unwrap_or_else(|| panic!("no package {id}"));
        (package["name"].as_str().unwrap().to_owned(), package["version"].as_str().unwrap().to_owned())
    };
    let podgate = packages.iter().find(|p| p["name"] == "podgate").unwrap();
    let mut direct: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for dependency in podgate["dependencies"].as_array().unwrap() {
        if dependency["optional"] == true {
            continue;
        }
        let kind = dependency["kind"].as_str().unwrap_or("normal").to_owned();
        direct.entry(kind).or_default().insert(dependency["name"].as_str().unwrap().to_owned());
    }
    let nodes: BTreeMap<&str, &Value> =
        metadata["resolve"]["nodes"].as_array().unwrap().iter().map(|n| (n["id"].as_str().unwrap(), n)).collect();
    let mut seen = BTreeSet::new();
    let mut queue = vec![podgate["id"].as_str().unwrap()];
    while let Some(id) = queue.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            if dep["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"] != "dev") {
                queue.push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    Dependencies { direct, linkable: seen.into_iter().map(name_version).collect() }
}

/// `name version` of every package in the audit data embedded in `binary`.
fn audited_packages(binary: &Path) -> BTreeSet<(String, String)> {
    let output = run(Command::new("rust-audit-info").arg(binary));
    let audit: Value = serde_json::from_slice(&output.stdout).expect("rust-audit-info prints JSON");
    let packages = audit["packages"].as_array().expect("packages");
    let roots: Vec<&Value> = packages.iter().filter(|p| p["root"] == true).collect();
    assert_eq!(roots.len(), 1, "{roots:?}");
    assert_eq!(roots[0]["name"], "podgate");
    assert_eq!(roots[0]["version"], env!("CARGO_PKG_VERSION"));
    packages
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["version"].as_str().unwrap().to_owned()))
        .collect()
}

/// Listed crates are in Cargo.lock and can be linked into podgate, every
/// direct dependency is there, and dev-only crates (criterion, proptest,
/// ...) are not.
fn check_crate_list(what: &str, listed: &BTreeSet<(String, String)>) {
    let lock = lockfile_packages();
    let not_locked: Vec<_> = listed.difference(&lock).collect();
    assert!(not_locked.is_empty(), "in the {what} but not in Cargo.lock: {not_locked:?}");
    let dependencies = dependencies();
    let not_linkable: Vec<_> = listed.difference(&dependencies.linkable).collect();
    assert!(not_linkable.is_empty(), "in the {what} but not a dependency of the binary: {not_linkable:?}");
    let names: BTreeSet<&str> = listed.iter().map(|(name, _)| name.as_str()).collect();
    for dependency in &dependencies.direct["normal"] {
        assert!(names.contains(dependency.as_str()), "dependency {dependency} is not in the {what}");
    }
    let linkable_names: BTreeSet<&str> = dependencies.linkable.iter().map(|(name, _)| name.as_str()).collect();
    let dev_only: Vec<&String> =
        dependencies.direct["dev"].iter().filter(|d| !linkable_names.contains(d.as_str())).collect();
    assert!(!dev_only.is_empty(), "podgate has dev-only dependencies to check for");
    for dependency in dev_only {
        assert!(!names.contains(dependency.as_str()), "dev-dependency {dependency} is in the {what}");
    }
}

#[test]
fn binary_in_the_image_carries_its_dependency_list() {
    let test = "binary_in_the_image_carries_its_dependency_list";
    if !have(test, &["rust-audit-info"], None) {
        return;
    }
    let Some(built) = built(test) else { return };
    let listed = audited_packages(&built.rootfs().join("usr/local/bin/podgate"));
    check_crate_list("audit data", &listed);
}

#[test]
fn sbom_is_valid_cyclonedx_naming_podgate_and_its_dependencies() {
    let test = "sbom_is_valid_cyclonedx_naming_podgate_and_its_dependencies";
    let validator = Command::new("python3")
        .args(["-c", "import cyclonedx.validation.json"])
        .env("PATH", path_with_tools())
        .output()
        .is_ok_and(|o| o.status.success());
    let also = (!validator).then_some("python3 module cyclonedx-python-lib[json-validation]");
    if !have(test, &["python3", "rust-audit-info"], also) {
        return;
    }
    let Some(built) = built(test) else { return };
    assert!(built.sbom.is_file(), "no SBOM next to the archive: {}", built.sbom.display());
    let sbom = read_json(&built.sbom);
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    // auditable2cdx 0.1.0 writes CycloneDX 1.3; another version is a change
    // of the tool to look at (and to say in docs/image.md).
    let spec = sbom["specVersion"].as_str().expect("specVersion").to_owned();
    assert_eq!(spec, "1.3", "the SBOM's spec version changed");

    // The schema of that spec version, strict.
    let script = "import sys\n\
        from cyclonedx.schema import SchemaVersion\n\
        from cyclonedx.validation.json import JsonStrictValidator\n\
        version = SchemaVersion.from_version(sys.argv[1])\n\
        error = JsonStrictValidator(version).validate_str(open(sys.argv[2]).read())\n\
        sys.exit(str(error) if error else 0)\n";
    run(Command::new("python3").args(["-c", script, &spec]).arg(&built.sbom));

    let component = &sbom["metadata"]["component"];
    assert_eq!(component["name"], "podgate");
    assert_eq!(component["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(component["type"], "application");
    let components = sbom["components"].as_array().expect("components");
    // Every purl is pkg:cargo/NAME@VERSION, qualifiers after a "?" (image.sh
    // puts back the "?" auditable2cdx writes as "&" for podgate itself).
    for c in components.iter().chain([component]) {
        let purl = c["purl"].as_str().unwrap_or_else(|| panic!("no purl: {c}"));
        let (coordinates, qualifiers) = purl.split_once('?').unwrap_or((purl, ""));
        let expected = format!("pkg:cargo/{}@{}", c["name"].as_str().unwrap(), c["version"].as_str().unwrap());
        assert_eq!(coordinates, expected, "{c}");
        assert!(!qualifiers.contains(['?', '#']), "{c}");
    }
    // The dependency graph names only components of the SBOM, and podgate
    // depends on something.
    let refs: BTreeSet<&str> =
        components.iter().chain([component]).map(|c| c["bom-ref"].as_str().expect("bom-ref")).collect();
    let graph = sbom["dependencies"].as_array().expect("dependencies");
    for node in graph {
        assert!(refs.contains(node["ref"].as_str().unwrap()), "{node}");
        for dependency in node["dependsOn"].as_array().into_iter().flatten() {
            assert!(refs.contains(dependency.as_str().unwrap()), "{node}");
        }
    }
    let podgate_node = graph.iter().find(|n| n["ref"] == component["bom-ref"]).expect("podgate in the graph");
    assert!(!podgate_node["dependsOn"].as_array().is_none_or(Vec::is_empty), "{podgate_node}");
    let mut listed: BTreeSet<(String, String)> = components
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_owned(), c["version"].as_str().unwrap().to_owned()))
        .collect();
    listed.insert(("podgate".to_owned(), env!("CARGO_PKG_VERSION").to_owned()));
    check_crate_list("SBOM", &listed);
    // The same crates as were compiled into the binary in the image.
    let audited = audited_packages(&built.rootfs().join("usr/local/bin/podgate"));
    assert_eq!(
        listed.symmetric_difference(&audited).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "the SBOM and the binary's audit data list different crates"
    );

    // A binary without the list (this test, built by plain cargo) gets a
    // clear error and neither archive nor SBOM.
    let test_binary = std::env::current_exe().unwrap();
    let archive = built.dir.join("unaudited.tar");
    let failed = Command::new(root().join("deploy/image.sh"))
        .arg(&archive)
        .env("PATH", path_with_tools())
        .env("PODGATE_BINARY", &test_binary)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "{failed:?}");
    assert!(stderr.contains("auditable2cdx cannot read a dependency list"), "{stderr}");
    assert!(stderr.contains("NoAuditData"), "{stderr}");
    assert!(!archive.exists() && !built.dir.join("unaudited.cdx.json").exists());
    assert!(!built.dir.join("unaudited.cdx.json.partial").exists());
}

/// A containerd of the test's own (root, state, socket in a temporary
/// folder; no CRI plugin), stopped with everything it started when dropped,
/// also when the test panics.
struct Containerd {
    dir: tempfile::TempDir,
    socket: PathBuf,
    daemon: Child,
}

const NAMESPACE: &str = "podgate-image-test";

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::Builder::new().prefix("podgate-ctr").tempdir_in("/tmp").unwrap();
        let socket = dir.path().join("containerd.sock");
        let config = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {socket:?}\n[ttrpc]\n  address = \"{socket}.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
            root = dir.path().join("root"),
            state = dir.path().join("state"),
            socket = socket.display(),
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .env("PATH", path_with_tools())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd starts");
        let containerd = Containerd { dir, socket, daemon };
        containerd.eventually("containerd answers", || containerd.ctr(&["version"]).status.success());
        containerd
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", NAMESPACE, "--timeout", "300s"])
            .args(args)
            .env("PATH", path_with_tools())
            .output()
            .expect("ctr runs")
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let output = self.ctr(args);
        assert!(
            output.status.success(),
            "ctr {args:?} failed:\n{}\n{}\ncontainerd's log:\n{}",
            stdout(&output),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
        );
        stdout(&output)
    }

    fn eventually(&self, what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}; containerd's log:\n{}",
                std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks and containers first, while containerd can still clean up
        // their mounts and cgroups.
        let containers = stdout(&self.ctr(&["container", "ls", "-q"]));
        for id in containers.lines().map(str::trim).filter(|id| !id.is_empty()) {
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
            let _ = self.ctr(&["task", "delete", "--force", id]);
            let _ = self.ctr(&["container", "delete", id]);
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // Shims outlive containerd; each names this socket in its -address.
        let needle = self.socket.to_string_lossy().into_owned();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
        // Whatever is still mounted below the folder, deepest first.
        let prefix = self.dir.path().to_string_lossy().into_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> =
            mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&prefix)).collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in mounts {
            let _ = Command::new("umount").arg("-l").arg(mount).status();
        }
        // Cgroups runc made for this namespace (cgroup v1: one per controller).
        for controller in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let namespace = controller.path().join(NAMESPACE);
            for child in std::fs::read_dir(&namespace).into_iter().flatten().flatten() {
                if child.path().is_dir() {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
            let _ = std::fs::remove_dir(&namespace);
        }
    }
}

#[test]
fn image_runs_in_containerd_as_nonroot_with_the_default_arguments() {
    let test = "image_runs_in_containerd_as_nonroot_with_the_default_arguments";
    let is_root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")));
    if !have(test, &["containerd", "ctr", "runc", "nsenter", "curl"], (!is_root).then_some("root (for containerd)")) {
        return;
    }
    let Some(built) = built(test) else { return };
    let containerd = Containerd::start();
    let archive = built.archive.to_str().unwrap();
    containerd.ctr_ok(&["image", "import", archive]);
    let reference = built.printed.split_whitespace().next().unwrap();
    let images = containerd.ctr_ok(&["image", "ls", "-q"]);
    assert!(images.lines().any(|l| l.trim() == reference), "{reference} not imported: {images}");

    let version =
        containerd.ctr_ok(&["run", "--rm", reference, "podgate-version", "/usr/local/bin/podgate", "--version"]);
    assert_eq!(version.trim(), format!("podgate {}", env!("CARGO_PKG_VERSION")));

    // The image's own entrypoint and arguments, with the certificate and the
    // policy where the chart mounts them (readable by 65532, as a Secret's
    // and a ConfigMap's files are).
    let certs = containerd.dir.path().join("certs");
    let config = containerd.dir.path().join("config");
    for dir in [&certs, &config] {
        std::fs::create_dir(dir).unwrap();
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(certs.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(certs.join("tls.key"), key.serialize_pem()).unwrap();
    std::fs::copy(root().join("tests/fixtures/config/strict.yaml"), config.join("policy.yaml")).unwrap();
    let log = containerd.dir.path().join("serve.log");
    let mounts = [
        format!("type=bind,src={},dst=/certs,options=rbind:ro", certs.display()),
        format!("type=bind,src={},dst=/config,options=rbind:ro", config.display()),
    ];
    let log_uri = format!("file://{}", log.display());
    containerd.ctr_ok(&[
        "run",
        "-d",
        "--log-uri",
        &log_uri,
        "--mount",
        &mounts[0],
        "--mount",
        &mounts[1],
        reference,
        "podgate-serve",
    ]);
    let serve_log = || std::fs::read_to_string(&log).unwrap_or_default();
    containerd.eventually("podgate serve listens", || {
        let tasks = stdout(&containerd.ctr(&["task", "ls"]));
        assert!(!tasks.contains("STOPPED"), "podgate serve stopped:\n{}", serve_log());
        serve_log().contains("listening on http://0.0.0.0:9090/metrics")
    });
    assert!(serve_log().contains("\"message\":\"listening on https://0.0.0.0:8443/validate\""), "{}", serve_log());

    let tasks = containerd.ctr_ok(&["task", "ls"]);
    let pid = tasks
        .lines()
        .find_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.first() == Some(&"podgate-serve")).then(|| fields[1].to_owned())
        })
        .unwrap_or_else(|| panic!("no podgate-serve task: {tasks}"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for field in ["Uid:", "Gid:"] {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        assert!(line.split_whitespace().skip(1).all(|id| id == "65532"), "{line}");
    }
    // Ready, asked from inside the container's network namespace.
    let ready = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["curl", "-sS", "--max-time", "30", "http://127.0.0.1:9090/readyz"])
        .output()
        .unwrap();
    assert_eq!(stdout(&ready).trim(), "ready", "{ready:?}\n{}", serve_log());
}
