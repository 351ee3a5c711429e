//! Decodes manifest files for `podgate check`: YAML (multi-document) or JSON,
//! `kind: List`, and files that hold an `AdmissionReview`, into the same lean
//! [`Object`] model the webhook uses.

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
            return vec![FoundObject { object, namespace: request.namespace, user_info: request.user_info }];
        }
        if kind.ends_with("List") && !self.items.is_empty() {
            return self
                .items
                .into_iter()
                .map(|object| FoundObject { object, namespace: None, user_info: None })
                .collect();
        }
        let object =
            Object { api_version: self.api_version, kind: self.kind, metadata: self.metadata, spec: self.spec };
        vec![FoundObject { object, namespace: None, user_info: None }]
    }
}

/// Splits a file into its documents and decodes each one on its own, so a
/// broken document does not hide the ones after it. Blank documents are
/// skipped and not counted. `visit` gets each document's 0-based index and
/// the document, or the decoder's message (with the line where it has one).
pub fn for_each_document(text: &str, syntax: Syntax, mut visit: impl FnMut(usize, Result<Document<'_>, String>)) {
    match syntax {
        Syntax::Json => {
            for (index, doc) in serde_json::Deserializer::from_str(text).into_iter::<Document<'_>>().enumerate() {
                let failed = doc.is_err();
                visit(index, doc.map_err(|e| e.to_string()));
                if failed {
                    break; // a JSON stream cannot resynchronise after an error
                }
            }
        }
        Syntax::Yaml => {
            let mut index = 0;
            for chunk in yaml_chunks(text) {
                match serde_yaml_ng::from_str::<Option<Document<'_>>>(&chunk) {
                    Ok(Some(doc)) if !doc.is_empty() => visit(index, Ok(doc)),
                    Ok(_) => continue,
                    Err(e) => visit(index, Err(e.to_string())),
                }
                index += 1;
            }
        }
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
            out.push((i, doc.map(|d| d.kind.as_deref().unwrap_or("").to_owned())))
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
    fn detects_json_by_extension_or_content() {
        assert_eq!(Syntax::detect("a.json", "kind: x"), Syntax::Json);
        assert_eq!(Syntax::detect("-", " {\"kind\":1}"), Syntax::Json);
        assert_eq!(Syntax::detect("a.yaml", "{kind: Pod}"), Syntax::Yaml);
        assert_eq!(Syntax::detect("-", "kind: Pod"), Syntax::Yaml);
    }
}
