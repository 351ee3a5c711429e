//! `--kustomize` results: one per source document and set of findings.
//!
//! A base rendered alone and through three overlays is four renderings of
//! the same source document. Each rendering is checked as usual; then the
//! results are grouped by the document they came from (kustomize's origin
//! annotation: file, then the document in it of the same kind and name) and
//! by their verdict (allowed, exemptions, notices and findings, with their
//! messages). Renderings with the same verdict are one result, located in
//! the source file as a plain manifest is, with `renderedBy` naming the
//! kustomization directories. The main group is the one with the base
//! rendered alone (a base directory is a kustomization too), else the one
//! with the most renderings. Every other group is an overlay whose patches
//! change the verdict: its own result, located at the patch that makes (or
//! fixes) the first differing finding, else at the overlay's kustomization
//! file, with `differsFrom` saying what differs. Objects kustomize generates
//! (configMapGenerator ...) have their kustomization as their source;
//! objects without an origin keep their rendering's kustomization file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::{Lines, Run};
use crate::decode::locate::Locator;
use crate::decode::manifest::Syntax;
use crate::report::{DiffersFrom, ObjectResult, Report, ViolationResult};
use crate::source::kustomize::{self, normalize, relative, source_document, Document, Origin};

/// One kustomization directory (as the walk found it) and what it rendered.
pub(super) struct Rendering {
    pub dir: PathBuf,
    pub documents: Vec<Document>,
}

/// One checked object of one rendering.
struct Entry<'r> {
    rendering: usize,
    /// The source document: file (canonical) and index.
    key: (PathBuf, usize),
    /// The source file as the user's paths spell it.
    display: String,
    /// The source document's text (with the file's line numbers) and syntax.
    document: Option<(String, Syntax)>,
    rendered: &'r Value,
    result: ObjectResult,
}

/// `path` (absolute) as seen from the kustomization directory `dir` as
/// given on the command line: `./deploy/overlays/dev` and
/// `/…/deploy/base/x.yaml` give `./deploy/base/x.yaml`.
fn display(dir: &Path, canonical_dir: &Path, path: &Path) -> String {
    normalize(&dir.join(relative(canonical_dir, path))).display().to_string()
}

/// The identity of a finding, for comparing renderings.
fn finding(v: &ViolationResult) -> (String, &str, &str, Option<&str>, &str) {
    (v.check.to_string(), v.action, v.field.as_str(), v.container.as_deref(), v.message.as_str())
}

/// Everything about a result that the reader sees apart from identity and
/// place: renderings with the same signature are one result.
fn signature(result: &ObjectResult) -> String {
    let mut out = format!("{}|{:?}|{:?}", result.allowed, result.exempt, result.notices);
    for rule in &result.exemptions {
        out.push_str(&format!("|{}:{}", rule.rule, rule.effect));
    }
    for v in &result.violations {
        out.push_str(&format!("|{:?}", finding(v)));
    }
    out
}

impl Run<'_> {
    /// Checks every rendering's objects, then reports them grouped.
    pub(super) fn check_kustomizations(&mut self, renderings: &[Rendering]) {
        let canonical: Vec<PathBuf> =
            renderings.iter().map(|r| r.dir.canonicalize().unwrap_or_else(|_| r.dir.clone())).collect();
        let mut files: BTreeMap<PathBuf, Option<String>> = BTreeMap::new();
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        let mut errors = Vec::new();
        for (r, rendering) in renderings.iter().enumerate() {
            let own_file = kustomize::kustomization_file(&rendering.dir).unwrap_or_else(|| rendering.dir.clone());
            let mut generated: BTreeMap<PathBuf, usize> = BTreeMap::new();
            for (position, document) in rendering.documents.iter().enumerate() {
                let (key, display, source) = match &document.origin {
                    Origin::Resource(path) => {
                        let text = files.entry(path.clone()).or_insert_with(|| std::fs::read_to_string(path).ok());
                        let syntax = Syntax::detect(&path.to_string_lossy(), text.as_deref().unwrap_or_default());
                        let found = text.as_deref().and_then(|t| source_document(t, syntax, &document.value));
                        let index = found.as_ref().map_or(0, |(index, _)| *index);
                        let shown = display(&rendering.dir, &canonical[r], path);
                        ((path.clone(), index), shown, found.map(|(_, text)| (text, syntax)))
                    }
                    Origin::Generated(file) => {
                        let counter = generated.entry(file.clone()).or_default();
                        *counter += 1;
                        ((file.clone(), *counter - 1), display(&rendering.dir, &canonical[r], file), None)
                    }
                    // No origin: this rendering's own, never merged (a key
                    // no file has).
                    Origin::Unknown => ((canonical[r].join("\0"), position), own_file.display().to_string(), None),
                };
                let report = self.scratch(|run| {
                    run.check_text(&display, &document.text, Syntax::Yaml, Lines::Unknown, key.1);
                });
                skipped.extend(report.skipped);
                errors.extend(report.errors);
                for result in report.results {
                    entries.push(Entry {
                        rendering: r,
                        key: key.clone(),
                        display: display.clone(),
                        document: source.clone(),
                        rendered: &document.value,
                        result,
                    });
                }
            }
        }
        // The same skipped or broken source document once, not per rendering.
        let mut seen = BTreeSet::new();
        for skip in skipped {
            if seen.insert(skip.source.clone()) {
                self.skip(skip.source, skip.reason);
            }
        }
        let mut seen = BTreeSet::new();
        for error in errors {
            if seen.insert((error.source.clone(), error.message.clone())) {
                self.error(&error.source, &error.file, error.line, error.message);
            }
        }

        // By the source file itself (two spellings of one path are one
        // file), in the order of its name as shown.
        let mut by_source: BTreeMap<(PathBuf, usize), Vec<Entry<'_>>> = BTreeMap::new();
        for entry in entries {
            by_source.entry(entry.key.clone()).or_default().push(entry);
        }
        let mut by_source: Vec<_> = by_source.into_iter().collect();
        by_source.sort_by(|a, b| (&a.1[0].display, a.0 .1).cmp(&(&b.1[0].display, b.0 .1)));
        for ((file, _), entries) in by_source {
            self.group(renderings, &canonical, &file, entries);
        }
    }

    /// Runs `check` against an empty report, quietly, and returns what it
    /// found (its skips and errors are counted when they are re-added).
    fn scratch(&mut self, check: impl FnOnce(&mut Self)) -> Report {
        let report = std::mem::take(&mut self.report);
        let tally = std::mem::take(&mut self.tally);
        let quiet = std::mem::replace(&mut self.quiet, true);
        check(self);
        self.quiet = quiet;
        self.tally = tally;
        std::mem::replace(&mut self.report, report)
    }

    /// The results of one source document: one per distinct verdict.
    fn group(&mut self, renderings: &[Rendering], canonical: &[PathBuf], file: &Path, entries: Vec<Entry<'_>>) {
        let mut groups: Vec<(String, Vec<Entry<'_>>)> = Vec::new();
        for entry in entries {
            let sig = signature(&entry.result);
            match groups.iter_mut().find(|(s, _)| *s == sig) {
                Some((_, members)) => members.push(entry),
                None => groups.push((sig, vec![entry])),
            }
        }
        // The base rendered alone: its directory holds the source file.
        let alone = |e: &Entry<'_>| file.starts_with(&canonical[e.rendering]);
        let main = groups.iter().position(|(_, members)| members.iter().any(alone)).unwrap_or_else(|| {
            let most = groups.iter().map(|(_, m)| m.len()).max().unwrap_or(0);
            groups.iter().position(|(_, m)| m.len() == most).unwrap_or(0)
        });
        let dirs = |members: &[Entry<'_>]| -> Vec<String> {
            let mut out: Vec<String> = Vec::new();
            for e in members {
                let dir = renderings[e.rendering].dir.display().to_string();
                if !out.contains(&dir) {
                    out.push(dir);
                }
            }
            out
        };

        // The main result, located in the source document.
        let (_, mut members) = groups.remove(main);
        let first = members.iter().position(alone).unwrap_or(0);
        let representative = members.remove(first);
        members.insert(0, representative);
        let main_dirs = dirs(&members);
        let head = &members[0];
        let mut locator = head.document.as_ref().map(|(text, syntax)| Locator::new(text, *syntax));
        let mut result = head.result.clone();
        result.file = head.display.clone();
        result.line = locator.as_mut().and_then(|l| l.line_of(""));
        for v in &mut result.violations {
            v.line = locator.as_mut().and_then(|l| l.line_of(&v.field));
        }
        result.rendered_by = main_dirs.clone();
        let main_violations = result.violations.clone();
        let main_file = result.file.clone();
        let main_line = result.line;
        let main_namespace = result.namespace.clone();
        self.report.results.push(result);

        // Overlays whose patches change the verdict.
        for (_, members) in groups {
            let head = &members[0];
            let overlay = &renderings[head.rendering].dir;
            let overlay_canonical = &canonical[head.rendering];
            // No patch to point at: the overlay's kustomization, at its
            // `namespace:` when that is what differs (an exemption for
            // the namespace), else its first line.
            let own = kustomize::kustomization_file(overlay).unwrap_or_else(|| overlay.clone());
            let mut line = 1;
            if head.result.namespace != main_namespace {
                if let Ok(text) = std::fs::read_to_string(&own) {
                    line = Locator::new(&text, Syntax::Yaml).line_of("namespace").unwrap_or(1);
                }
            }
            let fallback = (own.display().to_string(), line);
            let site = |field: &str| -> (String, usize) {
                match kustomize::patch_site(overlay, file, head.rendered, field) {
                    Some(site) => (display(overlay, overlay_canonical, &site.file), site.line),
                    None => fallback.clone(),
                }
            };
            let mut result = head.result.clone();
            let mut places = Vec::new();
            let mut added = Vec::new();
            for v in &mut result.violations {
                match main_violations.iter().find(|m| finding(m) == finding(v)) {
                    Some(shared) => places.push((main_file.clone(), shared.line)),
                    None => {
                        let (file, line) = site(&v.field);
                        places.push((file.clone(), Some(line)));
                        let mut v = v.clone();
                        v.file = Some(file);
                        v.line = Some(line);
                        added.push(v);
                    }
                }
            }
            let removed: Vec<ViolationResult> = main_violations
                .iter()
                .filter(|m| !result.violations.iter().any(|v| finding(v) == finding(m)))
                .map(|m| {
                    let (file, line) = site(&m.field);
                    ViolationResult { file: Some(file), line: Some(line), ..m.clone() }
                })
                .collect();
            let (file, line) = added
                .iter()
                .chain(&removed)
                .next()
                .map_or(fallback.clone(), |v| (v.file.clone().unwrap_or_default(), v.line.unwrap_or(1)));
            for (v, (place, line)) in result.violations.iter_mut().zip(places) {
                v.line = line;
                v.file = (place != file).then_some(place);
            }
            result.file = file;
            result.line = Some(line);
            result.rendered_by = dirs(&members);
            result.differs_from = Some(DiffersFrom {
                rendered_by: main_dirs.clone(),
                file: main_file.clone(),
                line: main_line,
                added,
                removed,
            });
            self.report.results.push(result);
        }
    }
}
