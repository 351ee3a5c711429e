//! Decodes manifest files for `podgate check`: YAML (multi-document) or JSON,
//! `kind: List`, and files that hold an `AdmissionReview`, into the same lean
//! [`Object`] model the webhook uses.

use std::fmt;

use serde::Deserialize;

use super::model::{Object, ObjectMeta, ObjectSpec, Text};
use super::review::{GroupVersionKind, UserInfo};

/// The syntax of a manifest file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Yaml,
    Json,
}

impl Syntax {
    /// JSON for `*.json`, or for text that starts like a JSON object or array;
    /// YAML otherwise.
    pub fn detect(path: &str, text: &str) -> Syntax {
        let looks_json = matches!(text.trim_start().as_bytes().first(), Some(b'{' | b'['));
        if path.ends_with(".json") || (looks_json && !path.ends_with(".yaml") && !path.ends_with(".yml")) {
            Syntax::Json
        } else {
            Syntax::Yaml
        }
    }
}

/// One top-level document of a manifest file: an object, a `List` of
/// objects, or an `AdmissionReview` holding one.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document<'a> {
    #[serde(borrow, default)]
    pub api_version: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub metadata: Option<ObjectMeta<'a>>,
    #[serde(borrow, default)]
    pub spec: Option<ObjectSpec<'a>>,
    /// `kind: List` (and `*List` kinds such as `DeploymentList`).
    #[serde(borrow, default, deserialize_with = "super::model::nullable_vec")]
    pub items: Vec<Object<'a>>,
    /// `kind: AdmissionReview`.
    #[serde(borrow, default)]
    pub request: Option<EmbeddedRequest<'a>>,
}

/// `request` of an `AdmissionReview` found in a file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddedRequest<'a> {
    #[serde(borrow, default)]
    pub kind: Option<GroupVersionKind<'a>>,
    #[serde(borrow, default)]
    pub namespace: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub user_info: Option<UserInfo<'a>>,
    #[serde(borrow, default)]
    pub object: Option<Object<'a>>,
}

/// An object found in a document, with who submitted it when the document
/// says so (an `AdmissionReview`).
#[derive(Debug)]
pub struct FoundObject<'a> {
    pub object: Object<'a>,
    /// The request's namespace, for an object taken from an `AdmissionReview`.
    pub namespace: Option<Text<'a>>,
    pub user_info: Option<UserInfo<'a>>,
    /// Where the object is in its document, as a field path prefix: empty,
    /// `items[3]` in a `List`, `request.object` in an `AdmissionReview`.
    pub path: String,
}

impl<'a> Document<'a> {
    /// Whether the document is blank (`null`, or a YAML document of comments).
    pub fn is_empty(&self) -> bool {
        self.api_version.is_none()
            && self.kind.is_none()
            && self.metadata.is_none()
            && self.spec.is_none()
            && self.items.is_empty()
            && self.request.is_none()
    }

    /// The objects this document holds.
    pub fn into_objects(self) -> Vec<FoundObject<'a>> {
        let kind = self.kind.as_deref().unwrap_or_default();
        if kind == "AdmissionReview" {
            let Some(request) = self.request else { return Vec::new() };
            let Some(mut object) = request.object else { return Vec::new() };
            if object.kind.is_none() {
                // Fall back to request.kind when the object omits its own.
                if let Some(gvk) = request.kind {
                    let api_version = if gvk.group.is_empty() {
                        gvk.version.0.clone()
                    } else {
                        format!("{}/{}", gvk.group, gvk.version).into()
                    };
                    object.api_version = Some(Text(api_version));
                    object.kind = Some(gvk.kind);
                }
            }
            return vec![FoundObject {
                object,
                namespace: request.namespace,
                user_info: request.user_info,
                path: "request.object".to_owned(),
            }];
        }
        if kind.ends_with("List") && !self.items.is_empty() {
            return self
                .items
                .into_iter()
                .enumerate()
                .map(|(i, object)| FoundObject {
                    object,
                    namespace: None,
                    user_info: None,
                    path: format!("items[{i}]"),
                })
                .collect();
        }
        let object =
            Object { api_version: self.api_version, kind: self.kind, metadata: self.metadata, spec: self.spec };
        vec![FoundObject { object, namespace: None, user_info: None, path: String::new() }]
    }
}

/// Why a document (or a whole chart or kustomization) is not checked. None
/// of these fails a run: only Kubernetes objects can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// A Kubernetes object of a kind podgate does not check (Service, ConfigMap ...).
    NotWorkload,
    /// A mapping without `apiVersion` and `kind`: values files, CI
    /// workflows, other tools' configuration.
    NotKubernetesObject,
    /// A top-level list or scalar, e.g. a JSON patch.
    NotAMapping,
    /// Go template syntax (`{{ ... }}`) outside a Helm chart.
    GoTemplate,
    /// A Helm chart, not rendered because `--helm` was not given.
    HelmChart,
    /// A kustomization, not rendered because `--kustomize` was not given.
    Kustomization,
    /// A patch a kustomization applies; only meaningful once rendered.
    KustomizePatch,
}

impl SkipReason {
    /// Every reason, in the order summaries list them.
    pub const ALL: [SkipReason; 7] = [
        SkipReason::NotWorkload,
        SkipReason::NotKubernetesObject,
        SkipReason::NotAMapping,
        SkipReason::GoTemplate,
        SkipReason::HelmChart,
        SkipReason::Kustomization,
        SkipReason::KustomizePatch,
    ];

    /// The id used in `--format json`.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotWorkload => "not-workload",
            SkipReason::NotKubernetesObject => "not-kubernetes-object",
            SkipReason::NotAMapping => "not-a-mapping",
            SkipReason::GoTemplate => "go-template",
            SkipReason::HelmChart => "helm-chart",
            SkipReason::Kustomization => "kustomization",
            SkipReason::KustomizePatch => "kustomize-patch",
        }
    }

    /// What the summary line says about documents skipped for this reason.
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::NotWorkload => "not a Pod or workload",
            SkipReason::NotKubernetesObject => "no apiVersion and kind: not a Kubernetes object",
            SkipReason::NotAMapping => "a top-level list or scalar, e.g. a JSON patch",
            SkipReason::GoTemplate => "Go template syntax: render it first",
            SkipReason::HelmChart => "Helm chart: use --helm",
            SkipReason::Kustomization => "kustomization: use --kustomize",
            SkipReason::KustomizePatch => "kustomize patch",
        }
    }
}

/// Why a document yields no [`Document`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentError {
    /// Not a Kubernetes object: counted, never an error.
    Skipped(SkipReason),
    /// A Kubernetes object (it has `apiVersion` and `kind`) that does not
    /// decode, or text that is not YAML/JSON at all: the message names the
    /// field, what was expected and the line.
    Invalid(String),
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocumentError::Skipped(reason) => write!(f, "skipped: {}", reason.describe()),
            DocumentError::Invalid(message) => f.write_str(message),
        }
    }
}

/// Splits a file into its documents and decodes each one on its own, so a
/// broken document does not hide the ones after it. Blank documents are
/// skipped and not counted. `visit` gets each document's 0-based index and
/// the document, or why there is none.
pub fn for_each_document(
    text: &str,
    syntax: Syntax,
    mut visit: impl FnMut(usize, Result<Document<'_>, DocumentError>),
) {
    for_each_document_with_source(text, syntax, |index, _, document| visit(index, document));
}

/// As [`for_each_document`], and `visit` also gets the document's own text,
/// padded with blank lines so that its line numbers are the file's (for
/// [`super::locate::Locator::line_of`]).
pub fn for_each_document_with_source(
    text: &str,
    syntax: Syntax,
    mut visit: impl FnMut(usize, &str, Result<Document<'_>, DocumentError>),
) {
    match syntax {
        Syntax::Json => {
            let mut stream = serde_json::Deserializer::from_str(text).into_iter::<&serde_json::value::RawValue>();
            let mut index = 0;
            loop {
                let start = stream.byte_offset();
                let Some(raw) = stream.next() else { break };
                let raw = match raw {
                    Ok(raw) => raw,
                    Err(e) => {
                        // A JSON stream cannot resynchronise after an error.
                        visit(index, text, Err(DocumentError::Invalid(format!("not valid JSON: {e}"))));
                        break;
                    }
                };
                let rest = &text[start..];
                let lines_before = text[..start + rest.len() - rest.trim_start().len()].matches('\n').count();
                let source = format!("{}{}", "\n".repeat(lines_before), raw.get());
                let shape = serde_json::from_str::<serde_json::Value>(&source).map_err(|e| e.to_string());
                let document = classify(&source, "JSON", shape.map(Shape::of_json), || {
                    serde_json::from_str::<Document<'_>>(&source).map_err(|e| json_error_with_path(&source, e))
                });
                visit(index, &source, document);
                index += 1;
            }
        }
        Syntax::Yaml => {
            let mut index = 0;
            for chunk in yaml_chunks(text) {
                let shape = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&chunk).map_err(|e| e.to_string());
                if matches!(shape, Ok(serde_yaml_ng::Value::Null)) {
                    continue; // a blank document: `~`, or comments only
                }
                let document = classify(&chunk, "YAML", shape.map(Shape::of_yaml), || {
                    serde_yaml_ng::from_str::<Document<'_>>(&chunk).map_err(|e| e.to_string())
                });
                visit(index, &chunk, document);
                index += 1;
            }
        }
    }
}

/// The outline of a document, read before decoding it as an object.
enum Shape {
    /// A mapping; whether it has both `apiVersion` and `kind` (of any type).
    Mapping { kubernetes: bool },
    /// A list or a scalar.
    Other,
}

impl Shape {
    fn of_yaml(value: serde_yaml_ng::Value) -> Shape {
        match value {
            serde_yaml_ng::Value::Mapping(map) => {
                Shape::Mapping { kubernetes: map.contains_key("apiVersion") && map.contains_key("kind") }
            }
            serde_yaml_ng::Value::Tagged(tagged) => Shape::of_yaml(tagged.value),
            _ => Shape::Other,
        }
    }

    fn of_json(value: serde_json::Value) -> Shape {
        match value {
            serde_json::Value::Object(map) => {
                Shape::Mapping { kubernetes: map.contains_key("apiVersion") && map.contains_key("kind") }
            }
            _ => Shape::Other,
        }
    }
}

/// serde_json's messages do not name the field; the YAML decoder's do, and
/// JSON is YAML with the same line numbers, so its message is used when it
/// names the field.
fn json_error_with_path(source: &str, error: serde_json::Error) -> String {
    match serde_yaml_ng::from_str::<Document<'_>>(source) {
        Err(yaml) if yaml.to_string().contains(": invalid ") => yaml.to_string(),
        _ => error.to_string(),
    }
}

/// Only a mapping with `apiVersion` and `kind` can be an error; everything
/// else is skipped with its reason. Text with `{{` that is not a decodable
/// object is a Go template (a chart's template file, or something like it).
fn classify<'a>(
    source: &str,
    syntax: &str,
    shape: Result<Shape, String>,
    decode: impl FnOnce() -> Result<Document<'a>, String>,
) -> Result<Document<'a>, DocumentError> {
    let template = || has_template_syntax(source);
    match shape {
        Err(_) if template() => Err(DocumentError::Skipped(SkipReason::GoTemplate)),
        Err(message) => Err(DocumentError::Invalid(format!("not valid {syntax}: {}", humanize(&message)))),
        Ok(Shape::Other) if template() => Err(DocumentError::Skipped(SkipReason::GoTemplate)),
        Ok(Shape::Other) => Err(DocumentError::Skipped(SkipReason::NotAMapping)),
        Ok(Shape::Mapping { kubernetes: false }) if template() => Err(DocumentError::Skipped(SkipReason::GoTemplate)),
        Ok(Shape::Mapping { kubernetes: false }) => Err(DocumentError::Skipped(SkipReason::NotKubernetesObject)),
        Ok(Shape::Mapping { kubernetes: true }) => match decode() {
            Ok(document) => Ok(document),
            Err(_) if template() => Err(DocumentError::Skipped(SkipReason::GoTemplate)),
            Err(message) => Err(DocumentError::Invalid(humanize(&message))),
        },
    }
}

/// Whether a line that is not a comment holds `{{`.
fn has_template_syntax(source: &str) -> bool {
    source.lines().any(|line| !line.trim_start().starts_with('#') && line.contains("{{"))
}

/// A decoder's message in a person's terms: `spec.containers: invalid type:
/// map, expected a sequence at line 14 column 15` becomes `spec.containers:
/// expected a list, found a mapping (line 14, column 15)`. Messages of other
/// shapes (YAML syntax errors, unknown values) are kept, already readable.
pub fn humanize(message: &str) -> String {
    let (body, position) = match message.rfind(" at line ") {
        Some(at) => (&message[..at], Some(&message[at + 4..])),
        None => (message, None),
    };
    let (field, body) = match body.split_once(": invalid ") {
        Some((field, rest)) if !field.contains(' ') => (Some(field), format!("invalid {rest}")),
        _ => (None, body.to_owned()),
    };
    let rewritten = body.strip_prefix("invalid type: ").and_then(|rest| {
        let (found, expected) = rest.rsplit_once(", expected ")?;
        Some(format!("expected {}, found {}", expected_in_words(expected), found_in_words(found)))
    });
    let Some(rewritten) = rewritten else { return message.to_owned() };
    let mut out = match field {
        Some(field) => format!("{field}: {rewritten}"),
        None => format!("the document: {rewritten}"),
    };
    if let Some(position) = position {
        out.push_str(&format!(" ({})", position.replacen(" column ", ", column ", 1)));
    }
    out
}

fn expected_in_words(expected: &str) -> String {
    match expected {
        "i64" | "i32" | "u64" | "u32" | "u16" | "i16" | "u8" | "i8" => "an integer".to_owned(),
        "a sequence" => "a list".to_owned(),
        "a boolean" | "a string" => expected.to_owned(),
        _ if expected.starts_with("struct ") || expected.starts_with("an object") => "a mapping".to_owned(),
        _ if expected.starts_with("a map") => "a mapping".to_owned(),
        _ => expected.to_owned(),
    }
}

/// What the decoder found, by type only: the value itself stays out of the
/// message (it may be a secret in an environment variable).
fn found_in_words(found: &str) -> &'static str {
    match found.split([' ', '`']).next().unwrap_or_default() {
        "map" => "a mapping",
        "sequence" => "a list",
        "string" => "a string",
        "integer" => "an integer",
        "floating" => "a decimal number",
        "boolean" => "a boolean",
        "unit" | "null" => "null",
        _ => "another type",
    }
}

/// The YAML documents of a file, each padded with blank lines so that the
/// parser's line numbers are the file's. A document starts at a line that
/// begins with `---` (block scalars are indented, so this is unambiguous).
fn yaml_chunks(text: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut has_content = false;
    for (number, line) in text.lines().enumerate() {
        if line.starts_with("---") && (line.len() == 3 || line[3..].starts_with([' ', '\t'])) {
            if has_content {
                chunks.push(std::mem::take(&mut current));
            }
            // Keep what follows the marker (`--- !tag` or `--- {…}`) on its line.
            current = "\n".repeat(number);
            current.push_str(line[3..].trim_start());
            current.push('\n');
            has_content = is_content(&line[3..]);
            continue;
        }
        if current.is_empty() && number > 0 {
            current = "\n".repeat(number);
        }
        has_content |= is_content(line);
        current.push_str(line);
        current.push('\n');
    }
    if has_content {
        chunks.push(current);
    }
    chunks
}

fn is_content(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty() && !line.starts_with('#') && line != "..."
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (index, kind or error) of every document.
    fn summary(text: &str, syntax: Syntax) -> Vec<(usize, Result<String, String>)> {
        let mut out = Vec::new();
        for_each_document(text, syntax, |i, doc| {
            out.push((i, doc.map(|d| d.kind.as_deref().unwrap_or("").to_owned()).map_err(|e| e.to_string())))
        });
        out
    }

    /// The objects of the first document.
    fn objects_of(text: &str, syntax: Syntax, check: impl FnOnce(Vec<FoundObject<'_>>)) {
        let mut check = Some(check);
        for_each_document(text, syntax, |_, doc| {
            if let Some(check) = check.take() {
                check(doc.unwrap().into_objects());
            }
        });
    }

    #[test]
    fn splits_multi_document_yaml_and_keeps_line_numbers() {
        let text = "# header\n---\napiVersion: v1\nkind: Pod\n---\n# only a comment\n---\napiVersion: v1\nkind: Pod\nspec:\n  containers: 7\n";
        let docs = summary(text, Syntax::Yaml);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0], (0, Ok("Pod".to_owned())));
        assert_eq!(docs[1].0, 1);
        let err = docs[1].1.as_ref().unwrap_err();
        assert!(err.contains("line 11"), "{err}");
    }

    #[test]
    fn a_broken_document_does_not_hide_later_ones() {
        let text = "kind: Pod\n---\nkind: [unclosed\n---\nkind: Deployment\napiVersion: apps/v1\n";
        let docs = summary(text, Syntax::Yaml);
        assert_eq!(docs.len(), 3);
        assert!(docs[1].1.is_err());
        assert_eq!(docs[2], (2, Ok("Deployment".to_owned())));
    }

    #[test]
    fn expands_lists_and_admission_reviews() {
        let list = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Pod"},{"apiVersion":"apps/v1","kind":"Deployment"}]}"#;
        objects_of(list, Syntax::Json, |objects| {
            assert_eq!(objects.len(), 2);
            assert_eq!(objects[1].object.kind.as_deref(), Some("Deployment"));
        });

        let review = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"namespace":"prod","kind":{"group":"apps","version":"v1","kind":"Deployment"},"object":{"spec":{}}}}"#;
        objects_of(review, Syntax::Json, |objects| {
            assert_eq!(objects[0].namespace.as_deref(), Some("prod"));
            assert_eq!(objects[0].object.api_version.as_deref(), Some("apps/v1"));
            assert_eq!(objects[0].object.kind.as_deref(), Some("Deployment"));
        });
    }

    #[test]
    fn skips_what_is_not_a_kubernetes_object_by_reason() {
        let skipped = |reason| Err(DocumentError::Skipped(reason).to_string());
        let text = "- op: add\n---\njust text\n---\nname: ci\non: [push]\n---\nkind: Pod\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: {{ .Values.name }}}\n---\n{{ .Values.x }}\n---\n\
                    apiVersion: v1\nkind: ConfigMap\ndata: {a: \"{{ not a template }}\"}\n";
        let docs: Vec<_> = summary(text, Syntax::Yaml).into_iter().map(|(_, doc)| doc).collect();
        assert_eq!(
            docs,
            [
                skipped(SkipReason::NotAMapping),
                skipped(SkipReason::NotAMapping),
                skipped(SkipReason::NotKubernetesObject),
                skipped(SkipReason::NotKubernetesObject),
                skipped(SkipReason::GoTemplate),
                skipped(SkipReason::GoTemplate),
                Ok("ConfigMap".to_owned()),
            ]
        );
        let docs = summary("[1, 2]\n{\"kind\": \"Pod\"}\n", Syntax::Json);
        assert_eq!(docs[0].1, skipped(SkipReason::NotAMapping));
        assert_eq!(docs[1].1, skipped(SkipReason::NotKubernetesObject));
    }

    #[test]
    fn says_what_was_expected_in_a_persons_terms_without_the_value() {
        let text = "apiVersion: v1\nkind: Pod\nspec:\n  securityContext:\n    runAsUser: \"s3cret\"\n";
        let err = summary(text, Syntax::Yaml).remove(0).1.unwrap_err();
        assert_eq!(err, "spec.securityContext.runAsUser: expected an integer, found a string (line 5, column 16)");
        let text = "apiVersion: v1\nkind: Pod\nspec:\n  containers: {a: 1}\n";
        let err = summary(text, Syntax::Yaml).remove(0).1.unwrap_err();
        assert_eq!(err, "spec.containers: expected a list, found a mapping (line 4, column 15)");
        let err = summary("apiVersion: v1\nkind: Pod\nspec: [\n", Syntax::Yaml).remove(0).1.unwrap_err();
        assert!(err.starts_with("not valid YAML: ") && err.contains("line "), "{err}");
    }

    #[test]
    fn json_documents_keep_the_file_line_numbers() {
        let text = "{\"apiVersion\": \"v1\", \"kind\": \"Pod\"}\n\n{\"apiVersion\": \"v1\",\n \"kind\": \"Pod\", \"spec\": 5}\n";
        let docs = summary(text, Syntax::Json);
        assert_eq!(docs[0].1, Ok("Pod".to_owned()));
        let err = docs[1].1.as_ref().unwrap_err();
        assert!(err.starts_with("spec: expected a mapping, found an integer (line 4, "), "{err}");
    }

    #[test]
    fn detects_json_by_extension_or_content() {
        assert_eq!(Syntax::detect("a.json", "kind: x"), Syntax::Json);
        assert_eq!(Syntax::detect("-", " {\"kind\":1}"), Syntax::Json);
        assert_eq!(Syntax::detect("a.yaml", "{kind: Pod}"), Syntax::Yaml);
        assert_eq!(Syntax::detect("-", "kind: Pod"), Syntax::Yaml);
    }
}
