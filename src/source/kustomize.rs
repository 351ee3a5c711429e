//! `--kustomize`: rendering a kustomization so that every object names the
//! file it came from, and finding the overlay patch that changed a field.
//!
//! kustomize records an object's source file when the build asks for it
//! (`buildMetadata: [originAnnotations]` puts `config.kubernetes.io/origin:
//! {path: ...}` on each object; generated objects get `configuredIn:` the
//! kustomization instead). podgate asks without touching the user's files: it
//! writes a wrapper kustomization into a fresh temporary directory, whose one
//! resource is the target directory (by a relative path: kustomize refuses an
//! absolute one) and which turns the annotations on, and renders that. No
//! load restrictor is relaxed: a directory resource is a kustomization root
//! of its own, so the target is read under exactly the rules `kubectl
//! kustomize TARGET` applies, and the wrapper reads nothing but the target.
//! The annotation is taken off again before the object is checked.
//!
//! Remote resources (`https://github.com/...`, `github.com/org/repo//path`,
//! `git@...`) are refused before kustomize runs: kustomize would clone them
//! over the network, which in CI is slow at best and hangs behind a firewall
//! at worst; a missing local base is named with the file that refers to it.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use super::{run, split_documents, which, KUSTOMIZATION_FILES};
use crate::decode::locate::Locator;
use crate::decode::manifest::{for_each_document_with_source, Syntax};

/// The annotation `buildMetadata: [originAnnotations]` adds.
const ORIGIN: &str = "config.kubernetes.io/origin";

/// Where kustomize says a rendered object came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A resource file (absolute, without `.` or `..`).
    Resource(PathBuf),
    /// Made by a generator (configMapGenerator, secretGenerator) configured
    /// in this kustomization file (absolute).
    Generated(PathBuf),
    /// kustomize did not say.
    Unknown,
}

/// One object of a rendering.
#[derive(Debug, Clone)]
pub struct Document {
    /// The object as YAML, without the origin annotation.
    pub text: String,
    /// The object, parsed (for matching it to its source and patches).
    pub value: Value,
    pub origin: Origin,
}

/// What rendering a kustomization directory gave.
#[derive(Debug)]
pub enum Rendered {
    Documents(Vec<Document>),
    /// A `kind: Component`: not buildable alone; it is checked through the
    /// kustomizations that use it.
    Component,
}

/// The kustomization file of `dir`, if it has one.
pub fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_FILES.iter().map(|name| dir.join(name)).find(|p| p.is_file())
}

/// Why a kustomization could not be rendered: the message, and the
/// kustomization file and line to point at when known (a missing or remote
/// resource: the entry that names it, in whichever kustomization it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub message: String,
}

impl From<String> for RenderError {
    fn from(message: String) -> Self {
        RenderError { file: None, line: None, message }
    }
}

/// Renders `dir` with `kubectl kustomize` (or `kustomize build` when kubectl
/// is not on PATH) through a wrapper that records each object's origin.
pub fn render(dir: &Path, timeout: Duration) -> Result<Rendered, RenderError> {
    let file = kustomization_file(dir).ok_or_else(|| "no kustomization file".to_owned())?;
    if read_kustomization(&file)?.get("kind").and_then(Value::as_str) == Some("Component") {
        return Ok(Rendered::Component);
    }
    preflight(dir, &mut BTreeSet::new())?;
    let target = dir.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
    let wrapper = TempDir::new()?;
    let relative = relative(&wrapper.path, &target);
    let relative_text = relative.to_str().ok_or_else(|| "the path is not UTF-8".to_owned())?;
    let quoted = serde_json::to_string(relative_text).expect("a string serialises");
    std::fs::write(
        wrapper.path.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {quoted}\n\
             buildMetadata: [originAnnotations]\n"
        ),
    )
    .map_err(|e| RenderError::from(format!("cannot write a temporary kustomization: {e}")))?;
    let mut command = if which("kubectl") {
        let mut command = Command::new("kubectl");
        command.arg("kustomize");
        command
    } else {
        let mut command = Command::new("kustomize");
        command.arg("build");
        command
    };
    // Never a credential prompt from a git that kustomize runs.
    command.arg(&wrapper.path).env("GIT_TERMINAL_PROMPT", "0");
    let program = if which("kubectl") { "kubectl" } else { "kustomize" };
    let output = run(command, program, "--kustomize", timeout)
        // kustomize names the target as the wrapper spelled it.
        .map_err(|message| message.replace(relative_text, &dir.display().to_string()))?;
    let mut documents = Vec::new();
    for text in split_documents(&output) {
        let mut value: Value =
            serde_yaml_ng::from_str(&text).map_err(|e| format!("{program} printed invalid YAML: {e}"))?;
        let origin = take_origin(&mut value, &wrapper.path);
        let text = serde_yaml_ng::to_string(&value).map_err(|e| format!("cannot re-serialise: {e}"))?;
        documents.push(Document { text, value, origin });
    }
    Ok(Rendered::Documents(documents))
}

/// Removes the origin annotation (and `annotations` if that emptied it) and
/// says what it named, relative to the wrapper directory `base`.
fn take_origin(object: &mut Value, base: &Path) -> Origin {
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_mapping_mut) else { return Origin::Unknown };
    let Some(annotations) = metadata.get_mut("annotations").and_then(Value::as_mapping_mut) else {
        return Origin::Unknown;
    };
    let origin = annotations.remove(ORIGIN);
    if annotations.is_empty() {
        metadata.remove("annotations");
    }
    let Some(origin) = origin.as_ref().and_then(Value::as_str) else { return Origin::Unknown };
    let Ok(origin) = serde_yaml_ng::from_str::<Mapping>(origin) else { return Origin::Unknown };
    if origin.contains_key("repo") {
        return Origin::Unknown; // remote: refused before rendering anyway
    }
    let path = |key: &str| origin.get(key).and_then(Value::as_str).map(|p| normalize(&base.join(p)));
    match (path("path"), path("configuredIn")) {
        (Some(path), _) => Origin::Resource(path),
        (None, Some(kustomization)) => Origin::Generated(kustomization),
        (None, None) => Origin::Unknown,
    }
}

fn read_kustomization(file: &Path) -> Result<Mapping, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    match serde_yaml_ng::from_str::<Value>(&text) {
        Ok(Value::Mapping(map)) => Ok(map),
        Ok(Value::Null) => Ok(Mapping::new()),
        Ok(_) => Err(format!("{}: not a mapping", file.display())),
        Err(e) => Err(format!("{}: invalid YAML: {e}", file.display())),
    }
}

/// Whether a resource entry names something kustomize would fetch: a URL,
/// a `host/org/repo//path` git reference, or scp-style `git@host:...`.
pub fn is_remote(entry: &str) -> bool {
    entry.contains("://")
        || entry.starts_with("git@")
        || entry.starts_with("git::")
        || entry.contains("?ref=")
        || entry.contains("?version=")
        || ["github.com/", "gitlab.com/", "bitbucket.org/", "dev.azure.com/"].iter().any(|h| entry.starts_with(h))
}

/// Refuses remote resources and names missing local ones, following local
/// directory resources and components; `seen` holds canonical directories.
fn preflight(dir: &Path, seen: &mut BTreeSet<PathBuf>) -> Result<(), RenderError> {
    let Ok(canonical) = dir.canonicalize() else { return Ok(()) };
    if !seen.insert(canonical) {
        return Ok(());
    }
    let Some(file) = kustomization_file(dir) else { return Ok(()) };
    let map = read_kustomization(&file)?;
    for key in ["resources", "bases", "components", "generators", "transformers", "validators"] {
        let Some(Value::Sequence(entries)) = map.get(key) else { continue };
        for (index, entry) in entries.iter().enumerate() {
            let Some(entry) = entry.as_str() else { continue };
            if entry.contains('\n') {
                continue; // an inline generator or transformer configuration
            }
            let local = dir.join(entry);
            let message = if local.exists() {
                if local.is_dir() {
                    preflight(&normalize(&local), seen)?;
                }
                continue;
            } else if is_remote(entry) {
                format!(
                    "remote base `{entry}` ({key} in {}): podgate check does not fetch over the network; vendor it \
                     into the repository, or render it yourself and pipe the output to `podgate check -`",
                    file.display()
                )
            } else if matches!(key, "resources" | "bases" | "components") {
                format!(
                    "missing base `{entry}` ({key} in {}): {} does not exist",
                    file.display(),
                    normalize(&local).display()
                )
            } else {
                continue;
            };
            let line = std::fs::read_to_string(&file)
                .ok()
                .and_then(|text| Locator::new(&text, Syntax::Yaml).line_of(&format!("{key}[{index}]")));
            return Err(RenderError { file: Some(file), line, message });
        }
    }
    Ok(())
}

/// A directory under the system's temporary directory, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> Result<TempDir, String> {
        let base = std::env::temp_dir().canonicalize().map_err(|e| format!("no temporary directory: {e}"))?;
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        for attempt in 0..100u32 {
            let path = base.join(format!("podgate-kustomize-{}-{nanos}-{attempt}", std::process::id()));
            // `create_dir` fails if it exists: the directory is ours alone.
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("cannot create a temporary directory: {e}")),
            }
        }
        Err("cannot create a temporary directory".to_owned())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `path` without `.` components and with `..` applied to the component
/// before it, as written (symlinks are not resolved). A leading `./` stays,
/// so `./deploy/overlays/dev/../../base` becomes `./deploy/base`.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for (i, component) in path.components().enumerate() {
        match component {
            Component::CurDir if i == 0 => out.push(component),
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(component),
            },
            _ => out.push(component),
        }
    }
    let out: PathBuf = out.iter().collect();
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

/// The relative path from directory `from` to `to` (both absolute and
/// normalized).
pub fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for component in &to[common..] {
        out.push(component);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// The document of a source file that a rendered object came from, found by
/// kind and name: kustomize may prefix, suffix or renamespace a name, never
/// change its kind. Returns its index among the file's documents and its
/// text (with the file's line numbers); the first document if none match.
pub fn source_document(text: &str, syntax: Syntax, rendered: &Value) -> Option<(usize, String)> {
    let kind = rendered.get("kind").and_then(Value::as_str);
    let name = name_of(rendered).unwrap_or_default();
    let mut documents: Vec<(usize, String, Option<Value>)> = Vec::new();
    for_each_document_with_source(text, syntax, |index, source, _| {
        let value = match syntax {
            Syntax::Yaml => serde_yaml_ng::from_str::<Value>(source).ok(),
            Syntax::Json => {
                serde_json::from_str::<serde_json::Value>(source).ok().and_then(|v| serde_yaml_ng::to_value(v).ok())
            }
        };
        documents.push((index, source.to_owned(), value));
    });
    let score = |value: &Option<Value>| -> Option<usize> {
        let value = value.as_ref()?;
        if value.get("kind").and_then(Value::as_str) != kind {
            return None;
        }
        let own = name_of(value).unwrap_or_default();
        // The longest source name inside the rendered one; 0 for a kind match only.
        Some(if !own.is_empty() && name.contains(own) { own.len() + 1 } else { 0 })
    };
    let best = documents
        .iter()
        .filter_map(|(index, source, value)| score(value).map(|s| (s, *index, source)))
        .max_by_key(|(score, index, _)| (*score, std::cmp::Reverse(*index)));
    match best {
        Some((_, index, source)) => Some((index, source.clone())),
        None => documents.into_iter().next().map(|(index, source, _)| (index, source)),
    }
}

fn name_of(value: &Value) -> Option<&str> {
    value.get("metadata")?.get("name")?.as_str()
}

/// A place in an overlay that changes a field: the patch file (or the
/// kustomization, for an inline patch) and the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchSite {
    /// Absolute, normalized.
    pub file: PathBuf,
    pub line: usize,
}

/// One patch of a kustomization, read.
struct Patch {
    /// Where to point: the patch file, or the kustomization for an inline one.
    file: PathBuf,
    /// For an inline patch, its entry's field path in the kustomization.
    entry: Option<String>,
    /// The patch's text (a strategic-merge object or a JSON 6902 list).
    text: String,
    syntax: Syntax,
    /// The entry's `target` selector, if any.
    target: Option<Mapping>,
}

/// The patch in the kustomization at `overlay` (its own patches first, then
/// those of its components and of the kustomizations it builds on, except
/// the directories holding `source`, whose patches the base rendering has
/// too) that comes closest to `field` of `rendered` (the object as the
/// overlay renders it); `None` when no patch targets the object or touches
/// any part of the field.
pub fn patch_site(overlay: &Path, source: &Path, rendered: &Value, field: &str) -> Option<PatchSite> {
    let mut patches = Vec::new();
    collect_patches(overlay, source, &mut BTreeSet::new(), &mut patches);
    let steps = field_steps(field);
    let mut best: Option<(usize, PatchSite)> = None;
    for patch in &patches {
        if let Some((depth, site)) = patch_touches(patch, rendered, &steps) {
            // A patch reaching into the pod template (or the whole field),
            // not one that merely sets `spec.replicas`.
            let near = depth >= 3.min(steps.len());
            if near && best.as_ref().is_none_or(|(d, _)| depth > *d) {
                best = Some((depth, site));
            }
        }
    }
    best.map(|(_, site)| site)
}

fn collect_patches(dir: &Path, source: &Path, seen: &mut BTreeSet<PathBuf>, out: &mut Vec<Patch>) {
    let Ok(canonical) = dir.canonicalize() else { return };
    if source.starts_with(&canonical) || !seen.insert(canonical.clone()) {
        return;
    }
    let Some(file) = kustomization_file(&canonical) else { return };
    let Ok(map) = read_kustomization(&file) else { return };
    for key in ["patches", "patchesStrategicMerge", "patchesJson6902"] {
        let Some(Value::Sequence(items)) = map.get(key) else { continue };
        for (index, item) in items.iter().enumerate() {
            let (path, inline, target) = match item {
                Value::String(s) if s.contains('\n') => (None, Some(s.clone()), None),
                Value::String(s) => (Some(s.clone()), None, None),
                Value::Mapping(m) => (
                    m.get("path").and_then(Value::as_str).map(str::to_owned),
                    m.get("patch").and_then(Value::as_str).map(str::to_owned),
                    m.get("target").and_then(Value::as_mapping).cloned(),
                ),
                _ => continue,
            };
            let patch = match (path, inline) {
                (Some(path), _) => {
                    let patch_file = normalize(&canonical.join(&path));
                    let Ok(text) = std::fs::read_to_string(&patch_file) else { continue };
                    let syntax = Syntax::detect(&path, &text);
                    Patch { file: patch_file, entry: None, text, syntax, target }
                }
                (None, Some(text)) => {
                    let entry = if matches!(item, Value::Mapping(_)) {
                        format!("{key}[{index}].patch")
                    } else {
                        format!("{key}[{index}]")
                    };
                    Patch { file: file.clone(), entry: Some(entry), syntax: Syntax::detect("", &text), text, target }
                }
                (None, None) => continue,
            };
            out.push(patch);
        }
    }
    for key in ["components", "resources", "bases"] {
        let Some(Value::Sequence(entries)) = map.get(key) else { continue };
        for entry in entries.iter().filter_map(Value::as_str) {
            let local = canonical.join(entry);
            if local.is_dir() {
                collect_patches(&local, source, seen, out);
            }
        }
    }
}

/// A field path's steps: `a.b[0].c` -> `a`, `b`, `[0]`, `c`.
fn field_steps(field: &str) -> Vec<Step> {
    let mut out = Vec::new();
    for part in field.split('.').filter(|p| !p.is_empty()) {
        let Some(at) = part.find('[') else {
            out.push(Step::Key(part.to_owned()));
            continue;
        };
        if at > 0 {
            out.push(Step::Key(part[..at].to_owned()));
        }
        let mut rest = &part[at..];
        while let Some(inner) = rest.strip_prefix('[') {
            let Some(end) = inner.find(']') else { break };
            match inner[..end].parse() {
                Ok(index) => out.push(Step::Index(index)),
                Err(_) => break,
            }
            rest = &inner[end + 1..];
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

fn path_text(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Step::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// Whether `patch` targets `rendered` and how many steps of the field it
/// spells out, with the line to point at.
fn patch_touches(patch: &Patch, rendered: &Value, steps: &[Step]) -> Option<(usize, PatchSite)> {
    let value: Value = match patch.syntax {
        Syntax::Yaml => serde_yaml_ng::from_str(&patch.text).ok()?,
        Syntax::Json => serde_yaml_ng::to_value(serde_json::from_str::<serde_json::Value>(&patch.text).ok()?).ok()?,
    };
    if let Some(target) = &patch.target {
        if !selects(target, rendered) {
            return None;
        }
    }
    let (depth, path) = match &value {
        // JSON 6902: the operation whose path shares the most steps.
        Value::Sequence(ops) => {
            let pointer: Vec<String> = steps
                .iter()
                .map(|s| match s {
                    Step::Key(k) => k.clone(),
                    Step::Index(i) => i.to_string(),
                })
                .collect();
            let (depth, index) = ops
                .iter()
                .enumerate()
                .filter_map(|(i, op)| {
                    let path = op.get("path")?.as_str()?;
                    let parts: Vec<String> =
                        path.split('/').skip(1).map(|p| p.replace("~1", "/").replace("~0", "~")).collect();
                    let common = parts.iter().zip(&pointer).take_while(|(a, b)| a == b).count();
                    Some((common, std::cmp::Reverse(i)))
                })
                .max()?;
            (depth, format!("[{}]", index.0))
        }
        // Strategic merge: an object of the same kind and name, whose
        // fields are walked beside the rendered object's (list items by
        // `name`, as the merge matches them).
        Value::Mapping(_) => {
            if patch.target.is_none() && !same_object(&value, rendered) {
                return None;
            }
            let (depth, translated) = walk_beside(&value, rendered, steps);
            (depth, path_text(&translated))
        }
        _ => return None,
    };
    let line = match &patch.entry {
        // Inline: the entry's line in the kustomization.
        Some(entry) => {
            let text = std::fs::read_to_string(&patch.file).ok()?;
            Locator::new(&text, Syntax::detect(&patch.file.to_string_lossy(), &text)).line_of(entry).unwrap_or(1)
        }
        None => {
            let mut line = None;
            for_each_document_with_source(&patch.text, patch.syntax, |index, source, _| {
                if index == 0 {
                    line = Locator::new(source, patch.syntax).line_of(&path);
                }
            });
            line.unwrap_or(1)
        }
    };
    Some((depth, PatchSite { file: patch.file.clone(), line }))
}

/// Whether a strategic-merge patch without a `target` names `rendered`:
/// the same kind, and a name the rendered one contains (a prefix or suffix
/// of a later layer may have been added).
fn same_object(patch: &Value, rendered: &Value) -> bool {
    let kind = |v: &Value| v.get("kind").and_then(Value::as_str).map(str::to_owned);
    kind(patch) == kind(rendered)
        && match (name_of(patch), name_of(rendered)) {
            (Some(own), Some(name)) => name.contains(own),
            _ => false,
        }
}

/// Whether a patch `target` selector may select `rendered`: kind and name
/// (names may be regular expressions in kustomize; a name with regex
/// characters is taken to match). Label and annotation selectors are not
/// evaluated (taken to match).
fn selects(target: &Mapping, rendered: &Value) -> bool {
    let field = |key: &str| target.get(key).and_then(Value::as_str);
    let kind = rendered.get("kind").and_then(Value::as_str);
    if field("kind").is_some_and(|k| Some(k) != kind) {
        return false;
    }
    match (field("name"), name_of(rendered)) {
        (Some(want), Some(name)) if !want.contains(['*', '.', '^', '$', '(', '|', '[', '+', '?']) => {
            name.contains(want)
        }
        _ => true,
    }
}

/// Follows `steps` through `patch` beside `rendered`: how many steps the
/// patch has, and the path in the patch's own indexes.
fn walk_beside(patch: &Value, rendered: &Value, steps: &[Step]) -> (usize, Vec<Step>) {
    let (mut patch, mut rendered) = (patch, Some(rendered));
    let mut translated = Vec::new();
    for (depth, step) in steps.iter().enumerate() {
        let next = match step {
            Step::Key(key) => {
                let next = patch.get(key.as_str());
                rendered = rendered.and_then(|r| r.get(key.as_str()));
                next.map(|n| (n, step.clone()))
            }
            Step::Index(index) => {
                let item = rendered.and_then(|r| r.get(*index));
                rendered = item;
                let items = patch.as_sequence();
                let by_name = item
                    .and_then(|i| i.get("name"))
                    .and_then(|name| items?.iter().position(|candidate| candidate.get("name") == Some(name)));
                match by_name.or_else(|| item.map_or(Some(*index), |i| i.get("name").is_none().then_some(*index))) {
                    Some(at) => patch.get(at).map(|n| (n, Step::Index(at))),
                    None => None,
                }
            }
        };
        match next {
            Some((value, step)) => {
                patch = value;
                translated.push(step);
            }
            None => return (depth, translated),
        }
    }
    (steps.len(), translated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_and_made_relative() {
        assert_eq!(normalize(Path::new("./deploy/overlays/dev/../../base/x.yaml")), Path::new("./deploy/base/x.yaml"));
        assert_eq!(normalize(Path::new("a/../../b")), Path::new("../b"));
        assert_eq!(normalize(Path::new("/a/../../b")), Path::new("/b"));
        assert_eq!(relative(Path::new("/tmp/w"), Path::new("/srv/repo/o")), Path::new("../../srv/repo/o"));
        assert_eq!(relative(Path::new("/srv/repo"), Path::new("/srv/repo/base/x.yaml")), Path::new("base/x.yaml"));
    }

    #[test]
    fn remote_references_are_recognised() {
        for remote in [
            "https://github.com/stefanprodan/podinfo//kustomize?ref=6.7.0",
            "github.com/org/repo//deploy?ref=v1",
            "git@github.com:org/repo.git//base",
            "ssh://git@example.com/repo.git",
        ] {
            assert!(is_remote(remote), "{remote}");
        }
        for local in ["../../base", "deployment.yaml", "github/base"] {
            assert!(!is_remote(local), "{local}");
        }
    }

    #[test]
    fn the_origin_annotation_is_taken_off_and_read() {
        let mut object: Value = serde_yaml_ng::from_str(
            "kind: Deployment\nmetadata:\n  name: a\n  annotations:\n    config.kubernetes.io/origin: |\n      path: ../repo/base/d.yaml\n",
        )
        .unwrap();
        assert_eq!(take_origin(&mut object, Path::new("/tmp/w")), Origin::Resource("/tmp/repo/base/d.yaml".into()));
        assert_eq!(serde_yaml_ng::to_string(&object).unwrap(), "kind: Deployment\nmetadata:\n  name: a\n");
        let mut object: Value = serde_yaml_ng::from_str(
            "kind: ConfigMap\nmetadata:\n  annotations:\n    keep: x\n    config.kubernetes.io/origin: |\n      configuredIn: ../o/kustomization.yaml\n      configuredBy: {kind: ConfigMapGenerator}\n",
        )
        .unwrap();
        assert_eq!(
            take_origin(&mut object, Path::new("/tmp/w")),
            Origin::Generated("/tmp/o/kustomization.yaml".into())
        );
        assert_eq!(object["metadata"]["annotations"]["keep"], "x");
    }

    #[test]
    fn a_rendered_object_is_matched_to_its_source_document_by_kind_and_name() {
        let text = "kind: Service\nmetadata: {name: api}\n---\nkind: Deployment\nmetadata: {name: api}\n---\nkind: Deployment\nmetadata: {name: api-worker}\n";
        let rendered: Value = serde_yaml_ng::from_str("kind: Deployment\nmetadata: {name: prod-api-worker}\n").unwrap();
        let (index, source) = source_document(text, Syntax::Yaml, &rendered).unwrap();
        assert_eq!(index, 2);
        assert_eq!(source.lines().position(|l| l.starts_with("kind")), Some(6));
        let rendered: Value = serde_yaml_ng::from_str("kind: Deployment\nmetadata: {name: prod-api}\n").unwrap();
        assert_eq!(source_document(text, Syntax::Yaml, &rendered).unwrap().0, 1);
    }

    #[test]
    fn a_strategic_merge_patch_is_walked_by_container_name() {
        let rendered: Value = serde_yaml_ng::from_str(
            "kind: Deployment\nmetadata: {name: api}\nspec:\n  template:\n    spec:\n      containers:\n        - {name: app}\n        - {name: proxy}\n",
        )
        .unwrap();
        let patch: Value = serde_yaml_ng::from_str(
            "kind: Deployment\nmetadata: {name: api}\nspec:\n  template:\n    spec:\n      containers:\n        - name: proxy\n          securityContext: {privileged: true}\n",
        )
        .unwrap();
        let steps = field_steps("spec.template.spec.containers[1].securityContext.privileged");
        let (depth, translated) = walk_beside(&patch, &rendered, &steps);
        assert_eq!(depth, steps.len());
        assert_eq!(path_text(&translated), "spec.template.spec.containers[0].securityContext.privileged");
        // The first container is not in the patch: only `containers` is.
        let (depth, _) = walk_beside(&patch, &rendered, &field_steps("spec.template.spec.containers[0].image"));
        assert_eq!(depth, 4);
    }

    #[test]
    fn the_patch_closest_to_a_field_is_found_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let write = |name: &str, text: &str| {
            std::fs::create_dir_all(root.join(name).parent().unwrap()).unwrap();
            std::fs::write(root.join(name), text).unwrap();
        };
        write("base/kustomization.yaml", "resources: [app.yaml]\n");
        write("base/app.yaml", "kind: Deployment\nmetadata: {name: web}\n");
        write(
            "prod/kustomization.yaml",
            "resources: [../base]\npatches:\n  - path: other.yaml\n  - path: replicas.json\n    target: {kind: Deployment, name: web}\n  \
             - path: uid.yaml\n    target: {kind: Deployment}\n",
        );
        write("prod/replicas.json", "[{\"op\": \"replace\", \"path\": \"/spec/replicas\", \"value\": 3}]\n");
        write(
            "prod/uid.yaml",
            "- op: add\n  path: /spec/template/spec/containers/0/livenessProbe\n  value: {}\n\
             - op: replace\n  path: /spec/template/spec/securityContext/runAsUser\n  value: 0\n",
        );
        // Names another object: not a candidate, though it has the field.
        write("prod/other.yaml", "kind: Deployment\nmetadata: {name: db}\nspec:\n  template:\n    spec:\n      securityContext: {runAsUser: 0}\n");
        let rendered: Value = serde_yaml_ng::from_str(
            "kind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers: [{name: web}]\n",
        )
        .unwrap();
        let source = root.join("base/app.yaml");
        let site = patch_site(&root.join("prod"), &source, &rendered, "spec.template.spec.securityContext.runAsUser");
        assert_eq!(site, Some(PatchSite { file: root.join("prod/uid.yaml"), line: 4 }), "the second operation");
        // No operation has this field: the first that reaches into the pod
        // template (`/spec/replicas` alone is too far).
        assert_eq!(
            patch_site(&root.join("prod"), &source, &rendered, "spec.template.spec.hostPID"),
            Some(PatchSite { file: root.join("prod/uid.yaml"), line: 1 })
        );
        // The base's own directory is not searched: its patches are the base's.
        assert_eq!(
            patch_site(&root.join("base"), &source, &rendered, "spec.template.spec.securityContext.runAsUser"),
            None
        );
    }
}
