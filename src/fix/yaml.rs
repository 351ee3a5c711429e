//! A line-preserving editor for block-style YAML: finds a mapping by field
//! path in a document's lines and computes lines to insert into it, never
//! re-serialising anything that is there.
//!
//! Neither YAML library here exposes node positions (see
//! [`crate::decode::locate`], which recovers one line per field from error
//! positions, not the extent of a mapping), so this is a small scanner of
//! block-style indentation: a mapping is the run of lines from its first key
//! to the first content line indented less; its keys are the lines whose
//! content starts exactly at its indentation (the first one possibly after a
//! sequence dash, `- name: app`); a sequence is the run of `-` items at one
//! indentation, under its key (`containers:\n  - name`) or level with it
//! (`containers:\n- name`). Anything it does not understand (a flow
//! collection `{...}`, an alias, a `null` written out, a complex key) is
//! reported by position and never edited. The caller (`super`) re-parses
//! every edited document and compares it with the intended result, so a
//! misreading by this scanner can only ever refuse an edit, never write a
//! wrong one.

use std::fmt;

pub use crate::decode::locate::{steps, Step};

/// A value to insert, with its keys in the order they are written.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Map(Vec<(String, Value)>),
    Seq(Vec<Value>),
    Int(i64),
    Bool(bool),
    Str(String),
}

impl Value {
    /// The same value as JSON, for comparing with a parsed document.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Map(entries) => {
                serde_json::Value::Object(entries.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
            Value::Seq(items) => serde_json::Value::Array(items.iter().map(Value::to_json).collect()),
            Value::Int(n) => serde_json::Value::from(*n),
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Str(s) => serde_json::Value::String(s.clone()),
        }
    }

    /// A one-line rendering for messages: `{path: /health, port: 8000}`.
    pub fn brief(&self) -> String {
        match self {
            Value::Map(entries) => {
                let inner: Vec<String> = entries.iter().map(|(k, v)| format!("{k}: {}", v.brief())).collect();
                format!("{{{}}}", inner.join(", "))
            }
            Value::Seq(items) => format!("[{}]", items.iter().map(Value::brief).collect::<Vec<_>>().join(", ")),
            Value::Int(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Str(s) => scalar(s),
        }
    }
}

/// A string as a YAML scalar: plain when that reads back as the same
/// string, else double-quoted (JSON's escaping is valid YAML).
pub fn scalar(s: &str) -> String {
    let plain_safe = !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "/_.-".contains(c))
        && !s.starts_with(['-', '.'])
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
        )
        && !s.chars().next().is_some_and(|c| c.is_ascii_digit());
    if plain_safe {
        s.to_owned()
    } else {
        serde_json::Value::String(s.to_owned()).to_string()
    }
}

/// How the file lays out nested blocks, so inserted lines look like theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Spaces a nested mapping is indented by under its key.
    pub step: usize,
    /// Spaces a sequence's dash is indented by under its key (0: level with it).
    pub dash_offset: usize,
}

/// A node found by path, by the lines it occupies (0-based, the file's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// A block mapping whose keys start at column `indent`; its first key
    /// is on line `start` (possibly after a dash).
    Map { indent: usize, start: usize },
    /// A block sequence whose dashes are at column `indent`.
    Seq { indent: usize, start: usize },
    /// A key written with no value at all (`securityContext:`): a null that
    /// children can be added under. `indent` is the key's column.
    Empty { line: usize, indent: usize },
    /// Something this editor does not extend: a flow collection, a
    /// scalar, a written-out null, an alias. `line` is where it is.
    Other { line: usize, what: Unsupported },
}

/// Why a node cannot be extended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    Flow,
    Scalar,
    Null,
    Alias,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unsupported::Flow => "a flow-style collection ({...} or [...]), which fix does not rewrite",
            Unsupported::Scalar => "a scalar where a mapping was expected",
            Unsupported::Null => "a null written out (null or ~), which fix does not rewrite",
            Unsupported::Alias => "an alias (*name), which fix does not follow",
        })
    }
}

/// Lines to insert after line `after` (0-based, the file's), without line
/// terminators. `indent` orders insertions at the same place: deeper first,
/// so a container's new keys come before its pod's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insertion {
    pub after: usize,
    pub indent: usize,
    pub lines: Vec<String>,
}

/// One YAML document's lines, numbered as in the file.
pub struct Document<'t> {
    lines: Vec<&'t str>,
}

/// Leading spaces.
fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// A line that holds YAML content: not blank, not only a comment.
fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// A sequence item's content: `-` then a space or the end of the line.
fn is_dash(content: &str) -> bool {
    content == "-" || content.starts_with("- ") || content.starts_with("-\t")
}

/// The line's content starting at column `col`, when everything before it
/// is indentation or sequence dashes (`  - name: x` has content at 4).
fn content_at(line: &str, col: usize) -> Option<&str> {
    let (prefix, rest) = (line.get(..col)?, line.get(col..)?);
    if rest.is_empty() || rest.starts_with([' ', '\t']) {
        return None;
    }
    let mut chars = prefix.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' => {}
            '-' if matches!(chars.peek(), Some(' ') | None) => {}
            _ => return None,
        }
    }
    Some(rest)
}

/// `key: rest` at the start of `content`: the key and what follows the
/// colon with any comment removed, trimmed. `None` for a sequence item,
/// a complex key, or text that is no key.
fn split_key(content: &str) -> Option<(String, &str)> {
    if is_dash(content) || content.starts_with(['?', '{', '[', '#', '&', '*', '!', '|', '>']) {
        return None;
    }
    let (key, after) = if let Some(quote @ ('"' | '\'')) = content.chars().next() {
        let body = &content[1..];
        let end = body.find(quote)?;
        (body[..end].to_owned(), body[end + 1..].trim_start_matches(' '))
    } else {
        let colon = content.match_indices(':').find(|(at, _)| {
            let next = content[at + 1..].chars().next();
            matches!(next, None | Some(' ' | '\t'))
        })?;
        let key = content[..colon.0].trim_end();
        if key.contains(" #") {
            return None;
        }
        (key.to_owned(), &content[colon.0..])
    };
    let rest = after.strip_prefix(':')?;
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    Some((key, strip_comment(rest).trim()))
}

/// `rest` without a trailing ` # comment` (outside quotes).
fn strip_comment(rest: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (at, c) in rest.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if previous == ' ' || previous == '\t' => return &rest[..at],
            _ => {}
        }
        previous = c;
    }
    rest
}

/// What an inline value (after `key:` or `- `) is, ignoring anchors and tags.
fn inline_kind(rest: &str) -> Option<Unsupported> {
    let mut rest = rest.trim();
    while rest.starts_with(['&', '!']) {
        rest = rest.split_once([' ', '\t']).map_or("", |(_, r)| r.trim_start());
    }
    match rest.chars().next() {
        None => None,
        Some('{' | '[') => Some(Unsupported::Flow),
        Some('*') => Some(Unsupported::Alias),
        _ if matches!(rest, "~" | "null" | "Null" | "NULL") => Some(Unsupported::Null),
        _ => Some(Unsupported::Scalar),
    }
}

impl<'t> Document<'t> {
    /// The document: `text` is the whole file or a document padded with
    /// blank lines so its line numbers are the file's. `\r` is ignored.
    pub fn new(text: &'t str) -> Self {
        Document { lines: text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l)).collect() }
    }

    fn content_lines(&self, from: usize) -> impl Iterator<Item = (usize, &'t str)> + '_ {
        self.lines.iter().copied().enumerate().skip(from).filter(|(_, l)| is_content(l))
    }

    /// The top-level node.
    pub fn root(&self) -> Option<Node> {
        let (line, text) = self.content_lines(0).next()?;
        let indent = indent_of(text);
        Some(match text.trim_start() {
            t if is_dash(t) => Node::Seq { indent, start: line },
            t if split_key(t).is_some() => Node::Map { indent, start: line },
            t => Node::Other { line, what: inline_kind(t).unwrap_or(Unsupported::Scalar) },
        })
    }

    /// The first line after a node's last line (or the end).
    fn end_of(&self, node: Node) -> usize {
        let (indent, start, seq) = match node {
            Node::Map { indent, start } => (indent, start, false),
            Node::Seq { indent, start } => (indent, start, true),
            Node::Empty { line, .. } | Node::Other { line, .. } => return line + 1,
        };
        self.content_lines(start + 1)
            .find(|(_, l)| {
                let i = indent_of(l);
                i < indent || (seq && i == indent && !is_dash(l.trim_start()))
            })
            .map_or(self.lines.len(), |(n, _)| n)
    }

    /// The last content line of a node.
    pub fn last_line(&self, node: Node) -> usize {
        let end = self.end_of(node);
        let start = match node {
            Node::Map { start, .. } | Node::Seq { start, .. } => start,
            Node::Empty { line, .. } | Node::Other { line, .. } => line,
        };
        (start..end).rev().find(|&n| is_content(self.lines[n])).unwrap_or(start)
    }

    /// The value of key `key` in mapping `map`, and the key's line.
    pub fn get(&self, map: Node, key: &str) -> Option<(usize, Node)> {
        let Node::Map { indent, start } = map else { return None };
        let end = self.end_of(map);
        for (line, text) in self.content_lines(start).take_while(|(n, _)| *n < end) {
            let Some((found, rest)) = content_at(text, indent).and_then(split_key) else { continue };
            if found == key {
                return Some((line, self.value(line, indent, rest, end)));
            }
        }
        None
    }

    /// Item `index` of sequence `seq`, and its line.
    pub fn item(&self, seq: Node, index: usize) -> Option<(usize, Node)> {
        let Node::Seq { indent, start } = seq else { return None };
        let end = self.end_of(seq);
        let (line, text) = self
            .content_lines(start)
            .take_while(|(n, _)| *n < end)
            .filter(|(_, l)| indent_of(l) == indent && is_dash(l.trim_start()))
            .nth(index)?;
        let after = &text[indent + 1..];
        let col = indent + 1 + indent_of(after);
        let content = strip_comment(after).trim();
        let node = if content.is_empty() {
            self.below(line, indent, end)
        } else if split_key(&text[col..]).is_some() {
            Node::Map { indent: col, start: line }
        } else if is_dash(content) {
            Node::Seq { indent: col, start: line }
        } else {
            Node::Other { line, what: inline_kind(content).unwrap_or(Unsupported::Scalar) }
        };
        Some((line, node))
    }

    /// The value of the key on `line` at column `indent`, given what follows its colon.
    fn value(&self, line: usize, indent: usize, rest: &str, end: usize) -> Node {
        match inline_kind(rest) {
            Some(what) => Node::Other { line, what },
            None => match self.below(line, indent, end) {
                // `key:` then a sequence level with the key: `containers:\n- name`.
                Node::Empty { .. } => match self.content_lines(line + 1).next() {
                    Some((n, l)) if n < end && indent_of(l) == indent && is_dash(l.trim_start()) => {
                        Node::Seq { indent, start: n }
                    }
                    _ => Node::Empty { line, indent },
                },
                node => node,
            },
        }
    }

    /// The block node on the lines after `line`, indented more than `indent`.
    fn below(&self, line: usize, indent: usize, end: usize) -> Node {
        match self.content_lines(line + 1).next() {
            Some((n, l)) if n < end && indent_of(l) > indent => {
                let col = indent_of(l);
                if is_dash(l.trim_start()) {
                    Node::Seq { indent: col, start: n }
                } else {
                    Node::Map { indent: col, start: n }
                }
            }
            _ => Node::Empty { line, indent },
        }
    }

    /// Follows `path` from the root; the node, or how far it got: `Err(n)`
    /// when step `n` does not exist (its parent is `steps[..n]`).
    pub fn find(&self, path: &[Step]) -> Result<Node, usize> {
        let mut node = self.root().ok_or(0usize)?;
        for (depth, step) in path.iter().enumerate() {
            let next = match step {
                Step::Key(key) => self.get(node, key),
                Step::Index(index) => self.item(node, *index),
            };
            node = next.ok_or(depth)?.1;
        }
        Ok(node)
    }

    /// The layout around `node`: from the first nested mapping and the
    /// first sequence inside it, else anywhere in the document, else two
    /// spaces and an indented dash.
    pub fn style_near(&self, node: Node) -> Style {
        let (start, end) = match node {
            Node::Map { start, .. } | Node::Seq { start, .. } => (start, self.end_of(node)),
            Node::Empty { line, .. } | Node::Other { line, .. } => (line, line + 1),
        };
        let (step, dash) = self.layout(start, end);
        let (doc_step, doc_dash) = self.layout(0, self.lines.len());
        Style { step: step.or(doc_step).unwrap_or(2), dash_offset: dash.or(doc_dash).unwrap_or(2) }
    }

    /// The document's layout (see [`Document::style_near`]).
    pub fn style(&self) -> Style {
        let (step, dash_offset) = self.layout(0, self.lines.len());
        Style { step: step.unwrap_or(2), dash_offset: dash_offset.unwrap_or(2) }
    }

    /// The indentation step and dash offset first seen between lines
    /// `from` and `to`.
    fn layout(&self, from: usize, to: usize) -> (Option<usize>, Option<usize>) {
        let mut step = None;
        let mut dash_offset = None;
        let mut lines = self.content_lines(from).take_while(|(n, _)| *n < to).peekable();
        while let Some((_, line)) = lines.next() {
            let Some(&(_, next)) = lines.peek() else { break };
            // The key may follow a dash: `- name:` then its block.
            let trimmed = line.trim_start();
            let (col, content) = match trimmed.strip_prefix("- ") {
                Some(after) => (line.len() - after.trim_start().len(), after.trim_start()),
                None => (indent_of(line), trimmed),
            };
            let Some((_, rest)) = split_key(content) else { continue };
            if !rest.is_empty() {
                continue;
            }
            let below = indent_of(next);
            if is_dash(next.trim_start()) {
                dash_offset.get_or_insert(below.saturating_sub(col));
            } else if below > col {
                step.get_or_insert(below - col);
            }
            if step.is_some() && dash_offset.is_some() {
                break;
            }
        }
        (step, dash_offset)
    }
}

/// The lines of `key: value` at column `indent`, nested blocks laid out in `style`.
pub fn render(key: &str, value: &Value, indent: usize, style: Style) -> Vec<String> {
    let pad = " ".repeat(indent);
    match value {
        Value::Map(entries) => {
            let mut out = vec![format!("{pad}{key}:")];
            for (k, v) in entries {
                out.extend(render(k, v, indent + style.step, style));
            }
            out
        }
        Value::Seq(items) => {
            let mut out = vec![format!("{pad}{key}:")];
            let dash = " ".repeat(indent + style.dash_offset);
            for item in items {
                out.push(format!("{dash}- {}", item.brief()));
            }
            out
        }
        scalar => vec![format!("{pad}{key}: {}", scalar.brief())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web # the name
spec:
  template:
    spec:
      containers:
      - name: app
        image: app:1
        command:
        - run
        securityContext:
          runAsUser: 1000
      - name: side
        securityContext: {privileged: false}

      initContainers:
        - name: init
          args: |
            not: a key
          env: ~
";

    fn path(doc: &Document<'_>, p: &str) -> Result<Node, usize> {
        doc.find(&steps(p))
    }

    #[test]
    fn finds_mappings_sequences_and_items_in_both_dash_styles() {
        let doc = Document::new(DEPLOYMENT);
        assert_eq!(path(&doc, "spec.template.spec"), Ok(Node::Map { indent: 6, start: 7 }));
        assert_eq!(path(&doc, "spec.template.spec.containers"), Ok(Node::Seq { indent: 6, start: 8 }));
        assert_eq!(path(&doc, "spec.template.spec.containers[0]"), Ok(Node::Map { indent: 8, start: 8 }));
        assert_eq!(
            path(&doc, "spec.template.spec.containers[0].securityContext"),
            Ok(Node::Map { indent: 10, start: 13 })
        );
        assert_eq!(
            path(&doc, "spec.template.spec.containers[1].securityContext"),
            Ok(Node::Other { line: 15, what: Unsupported::Flow })
        );
        assert_eq!(path(&doc, "spec.template.spec.initContainers[0]"), Ok(Node::Map { indent: 10, start: 18 }));
        assert_eq!(
            path(&doc, "spec.template.spec.initContainers[0].env"),
            Ok(Node::Other { line: 21, what: Unsupported::Null })
        );
        assert_eq!(path(&doc, "spec.template.spec.initContainers[0].not"), Err(5), "inside a block scalar");
        assert_eq!(path(&doc, "spec.template.spec.containers[2]"), Err(4));
        assert_eq!(path(&doc, "metadata.name"), Ok(Node::Other { line: 3, what: Unsupported::Scalar }));
    }

    #[test]
    fn ends_a_mapping_at_its_last_content_line() {
        let doc = Document::new(DEPLOYMENT);
        let container = path(&doc, "spec.template.spec.containers[0]").unwrap();
        assert_eq!(doc.last_line(container), 13);
        let side = path(&doc, "spec.template.spec.containers[1]").unwrap();
        assert_eq!(doc.last_line(side), 15, "the blank line after it is not the container's");
        let init = path(&doc, "spec.template.spec.initContainers[0]").unwrap();
        assert_eq!(doc.last_line(init), 21);
    }

    #[test]
    fn reads_the_files_style() {
        assert_eq!(Document::new(DEPLOYMENT).style(), Style { step: 2, dash_offset: 0 });
        assert_eq!(Document::new("a:\n    b: 1\nc:\n    - x\n").style(), Style { step: 4, dash_offset: 4 });
        let mixed = Document::new("a:\n  b:\n      c:\n          x: 1\n      d:\n          -   e\n  f: 1\n");
        let b = mixed.find(&steps("a.b")).unwrap();
        assert_eq!(mixed.style_near(b), Style { step: 4, dash_offset: 4 }, "the local layout first");
        assert_eq!(mixed.style(), Style { step: 2, dash_offset: 4 });
    }

    #[test]
    fn renders_blocks_and_quotes_only_what_needs_it() {
        let value = Value::Map(vec![
            ("command".into(), Value::Seq(vec![Value::Str("/bin/sh".into()), Value::Str("-c".into())])),
            ("port".into(), Value::Int(8000)),
            ("path".into(), Value::Str("/health".into())),
        ]);
        let style = Style { step: 2, dash_offset: 0 };
        assert_eq!(
            render("exec", &value, 4, style),
            [
                "    exec:",
                "      command:",
                "      - /bin/sh",
                "      - \"-c\"",
                "      port: 8000",
                "      path: /health"
            ]
        );
        assert_eq!(scalar("true"), "\"true\"");
        assert_eq!(scalar("8080"), "\"8080\"");
        assert_eq!(scalar("curl -f x"), "\"curl -f x\"");
    }

    #[test]
    fn reads_keys() {
        assert_eq!(split_key("name: app # x"), Some(("name".to_owned(), "app")));
        assert_eq!(split_key("\"a b\": {x: 1}"), Some(("a b".to_owned(), "{x: 1}")));
        assert_eq!(split_key("image: nginx:1.2"), Some(("image".to_owned(), "nginx:1.2")));
        assert_eq!(split_key("- name: app"), None);
        assert_eq!(split_key("http://x"), None);
        assert_eq!(content_at("  - name: a", 4), Some("name: a"));
        assert_eq!(content_at("      image: a", 4), None);
    }
}
