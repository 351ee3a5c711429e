//! Step 0 for `podgate check`: where documents come from.
//!
//! A repository holds plain manifests beside Helm charts, kustomizations and
//! other tools' YAML. Walking a path yields three kinds of [`Input`]: manifest
//! files, read as they are; Helm charts (a directory with `Chart.yaml`) and
//! kustomizations (a directory with `kustomization.yaml`), which are one unit
//! each and, when asked, rendered by the real tool (`helm template`,
//! `kubectl kustomize`) into documents for the same decode step. Their files
//! are never parsed one by one: a template or a patch is not an object.
//! [`kustomize`] renders so that each object names its source file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub mod kustomize;

/// One thing to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A manifest file, or `-` for standard input.
    File(PathBuf),
    /// A directory holding `Chart.yaml`.
    Chart(PathBuf),
    /// A directory holding a kustomization file.
    Kustomization(PathBuf),
    /// A file a kustomization applies as a patch.
    Patch(PathBuf),
}

/// The names kustomize accepts for its file.
pub(crate) const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// What a walk found, in a stable order, and the directories it could not read.
#[derive(Debug, Default)]
pub struct Walk {
    pub inputs: Vec<Input>,
    pub errors: Vec<(String, String)>,
}

/// Expands the command line's paths. A directory is searched recursively for
/// `*.yaml`, `*.yml` and `*.json` (hidden entries skipped, symlinked
/// directories not followed); a chart directory is not entered (its
/// subcharts are part of it); a kustomization directory's own files belong
/// to it, its subdirectories are searched as usual, and files its
/// kustomization names as patches are marked as such.
pub fn walk(paths: &[PathBuf]) -> Walk {
    let mut walk = Walk::default();
    for path in paths {
        if path == Path::new("-") || !path.is_dir() {
            walk.inputs.push(Input::File(path.clone()));
            continue;
        }
        let mut found = Vec::new();
        let mut patches = BTreeSet::new();
        let mut pending = vec![path.clone()];
        while let Some(dir) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries.flatten().collect::<Vec<_>>(),
                Err(e) => {
                    walk.errors.push((dir.display().to_string(), format!("cannot read directory: {e}")));
                    continue;
                }
            };
            let has = |name: &str| entries.iter().any(|e| e.file_name() == name);
            if has("Chart.yaml") {
                found.push(Input::Chart(dir));
                continue;
            }
            let kustomization = KUSTOMIZATION_FILES.iter().find(|name| has(name));
            if let Some(name) = kustomization {
                patches.extend(patch_files(&dir, &dir.join(name)));
                found.push(Input::Kustomization(dir.clone()));
            }
            for entry in entries {
                let path = entry.path();
                let Ok(file_type) = entry.file_type() else { continue };
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                if file_type.is_dir() {
                    pending.push(path);
                } else if kustomization.is_none()
                    && matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
                {
                    found.push(Input::File(path));
                }
            }
        }
        for input in &mut found {
            if let Input::File(file) = input {
                if file.canonicalize().is_ok_and(|c| patches.contains(&c)) {
                    *input = Input::Patch(file.clone());
                }
            }
        }
        found.sort_by(|a, b| a.path().cmp(b.path()));
        walk.inputs.extend(found);
    }
    walk
}

impl Input {
    /// The file or directory.
    pub fn path(&self) -> &Path {
        match self {
            Input::File(p) | Input::Chart(p) | Input::Kustomization(p) | Input::Patch(p) => p,
        }
    }
}

/// The files a kustomization applies as patches (`patches[].path`,
/// `patchesStrategicMerge[]`, `patchesJson6902[].path`), canonical. An
/// unreadable kustomization names none; rendering it reports the problem.
fn patch_files(dir: &Path, kustomization: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(kustomization) else { return Vec::new() };
    let Ok(serde_yaml_ng::Value::Mapping(map)) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for key in ["patches", "patchesStrategicMerge", "patchesJson6902"] {
        let Some(serde_yaml_ng::Value::Sequence(items)) = map.get(key) else { continue };
        for item in items {
            let name = match item {
                serde_yaml_ng::Value::String(s) => Some(s.as_str()),
                serde_yaml_ng::Value::Mapping(m) => m.get("path").and_then(|p| p.as_str()),
                _ => None,
            };
            // An inline patch is text with a newline, not a file name.
            if let Some(name) = name.filter(|n| !n.contains('\n')) {
                names.push(name.to_owned());
            }
        }
    }
    names.iter().filter_map(|name| dir.join(name).canonicalize().ok()).collect()
}

/// How to call `helm template`.
#[derive(Debug, Clone, Default)]
pub struct HelmOptions {
    pub release_name: String,
    pub namespace: Option<String>,
    /// `--values FILE`, in order.
    pub values: Vec<PathBuf>,
    /// `--set KEY=VALUE`, in order.
    pub set: Vec<String>,
}

/// One document of a rendering, with the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedDocument {
    /// The template file (`charts/x/templates/deployment.yaml`), or
    /// `Chart.yaml` when helm names no template, or the kustomization file
    /// ([`render_kustomization`]).
    pub file: PathBuf,
    /// Whether `file` is the template the document came from.
    pub from_template: bool,
    /// The document's text.
    pub text: String,
}

/// Renders a chart with `helm template` and splits the output by the
/// `# Source:` comment helm puts before every document; `timeout` bounds
/// the run.
pub fn render_chart(chart: &Path, options: &HelmOptions, timeout: Duration) -> Result<Vec<RenderedDocument>, String> {
    let mut command = Command::new("helm");
    command.arg("template").arg(&options.release_name).arg(chart);
    if let Some(namespace) = &options.namespace {
        command.arg("--namespace").arg(namespace);
    }
    for values in &options.values {
        command.arg("--values").arg(values);
    }
    for set in &options.set {
        command.arg("--set").arg(set);
    }
    let output = run(command, "helm", "--helm", timeout)?;
    let mut documents = Vec::new();
    for text in split_documents(&output) {
        let source = text.lines().find_map(|line| line.strip_prefix("# Source: "));
        let file = match source {
            // `name/templates/x.yaml`, `name/charts/sub/templates/x.yaml`: the
            // first component is the chart's name, not its directory's.
            Some(source) => match source.trim().split_once('/') {
                Some((_, inside)) => (chart.join(inside), true),
                None => (chart.join("Chart.yaml"), false),
            },
            None => (chart.join("Chart.yaml"), false),
        };
        documents.push(RenderedDocument { file: file.0, from_template: file.1, text });
    }
    Ok(documents)
}

/// How long a renderer may run unless `--render-timeout` says otherwise.
pub const DEFAULT_RENDER_TIMEOUT: Duration = Duration::from_secs(120);

/// Renders a kustomization with plain `kubectl kustomize` (or `kustomize
/// build` when kubectl is not on PATH), every document named after the
/// kustomization file (`podgate fix`, which edits no kustomization; `podgate
/// check` renders through [`kustomize::render`] to learn each object's
/// source file).
pub fn render_kustomization(dir: &Path, timeout: Duration) -> Result<Vec<RenderedDocument>, String> {
    let output = if which("kubectl") {
        let mut command = Command::new("kubectl");
        command.arg("kustomize").arg(dir);
        run(command, "kubectl", "--kustomize", timeout)?
    } else {
        let mut command = Command::new("kustomize");
        command.arg("build").arg(dir);
        run(command, "kustomize", "--kustomize", timeout)?
    };
    let file = KUSTOMIZATION_FILES.iter().map(|name| dir.join(name)).find(|p| p.exists()).unwrap_or(dir.into());
    Ok(split_documents(&output)
        .into_iter()
        .map(|text| RenderedDocument { file: file.clone(), from_template: false, text })
        .collect())
}

/// Whether `program` is an executable on PATH.
pub(crate) fn which(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Runs a renderer and returns its standard output, or a one-line error
/// with the end of what it printed on standard error. A renderer that has
/// not finished after `timeout` is killed: a rendering is local work that
/// takes well under a second, so one that hangs waits for something that
/// will not come (a network fetch, a blocking file) and must not hang CI.
pub(crate) fn run(mut command: Command, program: &str, flag: &str, timeout: Duration) -> Result<String, String> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{flag} needs `{program}` on PATH"),
        _ => format!("cannot run {program}: {e}"),
    })?;
    // Read both pipes while waiting, so a large rendering cannot fill one
    // and stall the renderer.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} did not finish within {timeout:?} (--render-timeout) and was stopped"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("cannot wait for {program}: {e}")),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(format!("{program} failed ({status}): {}", last.trim()));
    }
    String::from_utf8(stdout).map_err(|_| format!("{program} printed invalid UTF-8"))
}

/// Reads a child's pipe to its end on a thread of its own.
fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// A rendering's documents (`---` separated), blank ones dropped.
pub(crate) fn split_documents(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line == "---" || line.starts_with("--- ") {
            out.push(std::mem::take(&mut current));
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    out.push(current);
    out.retain(|d| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')));
    out
}

/// The line of a template to point at for a field of an object it rendered.
///
/// A rendered line cannot be traced back to its template in general (values,
/// `include`, `toYaml`), so this looks for the field's own key and then each
/// ancestor's, deepest first, and takes the first that the template spells
/// out on exactly one line (`runAsUser:` written in the template, not
/// produced by `toYaml .Values.securityContext`); else the line of `kind:`,
/// where the object starts; else 1.
pub fn template_line(template: &str, field: &str) -> usize {
    let keys = field.split('.').map(|part| part.split('[').next().unwrap_or_default()).filter(|k| !k.is_empty());
    let keys: Vec<&str> = keys.collect();
    let lines_with = |key: &str| -> Vec<usize> {
        template
            .lines()
            .enumerate()
            .filter(|(_, line)| {
                let line = line.trim_start();
                let line = line.strip_prefix("- ").unwrap_or(line);
                line.strip_prefix(key).is_some_and(|rest| rest.starts_with(':'))
            })
            .map(|(number, _)| number + 1)
            .collect()
    };
    for key in keys.iter().rev() {
        if let [line] = lines_with(key)[..] {
            return line;
        }
    }
    lines_with("kind").first().copied().unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_rendered_output_and_drops_blank_documents() {
        let docs = split_documents(
            "---\n# Source: a/templates/x.yaml\nkind: A\n---\n# Source: a/templates/y.yaml\n---\nkind: B\n",
        );
        assert_eq!(docs, ["# Source: a/templates/x.yaml\nkind: A\n", "kind: B\n"]);
    }

    #[test]
    fn points_at_the_deepest_key_a_template_spells_out_once() {
        let template = "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      securityContext:\n        {{- toYaml .Values.pod | nindent 8 }}\n      containers:\n        - name: app\n          securityContext:\n            runAsUser: {{ .Values.uid }}\n";
        assert_eq!(template_line(template, "spec.template.spec.containers[0].securityContext.runAsUser"), 11);
        // securityContext twice, containers once.
        assert_eq!(template_line(template, "spec.template.spec.containers[0].securityContext.privileged"), 8);
        assert_eq!(template_line("{{ include \"x\" . }}\nkind: Pod\n", "spec.containers[0].image"), 2);
        assert_eq!(template_line("{{ include \"x\" . }}\n", "spec"), 1);
    }
}
