//! `podgate check`: evaluate manifests offline with the webhook's engine.
//!
//! Sources ([`crate::source`]: files, rendered charts and kustomizations)
//! feed the same pipeline as the webhook: decode, extract, checks, verdict,
//! then [`crate::report`] in the chosen format. Only Kubernetes objects can
//! fail a run; everything else is skipped and counted by reason.
//!
//! Exit codes: 0 nothing would be denied, 1 at least one object would be
//! denied, 2 a usage, configuration or parse error (reported on stderr with
//! the file and document index; every other file is still evaluated).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::checks::Mode;
use crate::config::Policy;
use crate::decode::locate::Locator;
use crate::decode::manifest::{for_each_document_with_source, DocumentError, SkipReason, Syntax};
use crate::exemption::{self, Subject};
use crate::extract::WorkloadKind;
use crate::report::{self, render_text, ObjectResult, Problem, Report, Skipped, Tally};
use crate::source::kustomize::Rendered;
use crate::source::{self, HelmOptions, Input, RenderedDocument};
use crate::verdict::evaluate_object;

mod kustomize;
use kustomize::Rendering;

/// Output format of `podgate check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: a block per object, then a summary line.
    Text,
    /// The JSON contract for pipelines.
    Json,
    /// SARIF 2.1.0, for GitHub code scanning and other SARIF readers.
    Sarif,
    /// GitHub Actions workflow-command annotations (`::error file=...,line=...::`).
    Github,
}

/// Arguments of `podgate check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Policy file (YAML); the built-in default policy applies without one.
    #[arg(long, env = "PODGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Override the policy's mode, e.g. `--mode enforce` to fail a pipeline
    /// on would-be denials while the cluster is still in audit mode.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Namespace assumed for objects that set none (for namespace
    /// exemptions); also the namespace charts are rendered for.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Judge exemption expiry at this time instead of now: a date
    /// (2027-03-31, midnight UTC) or an RFC 3339 time, e.g. to see what
    /// is denied once a waiver has run out.
    #[arg(long, value_name = "TIME", value_parser = exemption::parse_now)]
    pub now: Option<Timestamp>,
    /// Render Helm charts (directories with a Chart.yaml) with `helm
    /// template` and check what they render; without it a chart is skipped.
    #[arg(long)]
    pub helm: bool,
    /// Release name for `helm template`.
    #[arg(long, default_value = "release", requires = "helm")]
    pub release_name: String,
    /// Values file for `helm template` (repeatable; every chart gets them).
    #[arg(long = "values", value_name = "FILE", requires = "helm")]
    pub values: Vec<PathBuf>,
    /// `KEY=VALUE` for `helm template --set` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "helm")]
    pub set: Vec<String>,
    /// Render kustomizations (directories with a kustomization.yaml) with
    /// `kubectl kustomize` (or `kustomize build`) and check what they
    /// render, located in the source files; without it a kustomization is
    /// skipped.
    #[arg(long)]
    pub kustomize: bool,
    /// Stop a `helm template` or `kubectl kustomize` that has not finished
    /// after this long (Go duration syntax: 30s, 2m) and report an error.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_timeout)]
    pub render_timeout: std::time::Duration,
    /// Files or directories (searched recursively for *.yaml, *.yml, *.json);
    /// `-` reads standard input. With no path and no `--config`, nothing to do.
    pub paths: Vec<PathBuf>,
}

/// `--render-timeout`: a Go duration, more than zero.
fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    let duration = crate::duration::parse_non_negative(text).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err(format!("duration {text:?} must be more than zero"));
    }
    Ok(duration)
}

/// Runs `podgate check` and returns its exit code.
pub fn run(args: &CheckArgs) -> ExitCode {
    let mut policy = match &args.config {
        Some(path) => match Policy::load(path) {
            Ok(policy) => policy,
            Err(e) => {
                eprintln!("podgate check: invalid configuration: {e}");
                return ExitCode::from(2);
            }
        },
        None => Policy::default(),
    };
    if let Some(mode) = args.mode {
        policy.mode = mode;
    }
    let now = args.now.unwrap_or_else(Timestamp::now);
    if args.config.is_some() {
        // Warnings about the exemption rules; they do not change the exit code.
        for warning in exemption::lint(&policy, now) {
            eprintln!("podgate check: warning: {warning}");
        }
    }
    if args.paths.is_empty() {
        if args.config.is_some() {
            // `podgate check --config FILE` alone lints the configuration.
            eprintln!("podgate check: configuration is valid");
            return ExitCode::SUCCESS;
        }
        eprintln!("podgate check: no PATH given (use - for standard input)");
        return ExitCode::from(2);
    }

    let mut run = Run {
        policy: &policy,
        default_namespace: args.namespace.as_deref(),
        now,
        report: Report::default(),
        tally: Tally::default(),
        quiet: false,
    };
    let helm = HelmOptions {
        release_name: args.release_name.clone(),
        namespace: args.namespace.clone(),
        values: args.values.clone(),
        set: args.set.clone(),
    };
    let walk = source::walk(&args.paths);
    // Every kustomization is rendered first and checked together: the same
    // base object rendered by several overlays is one result (see
    // `kustomize`).
    let mut renderings = Vec::new();
    for (source, message) in walk.errors {
        run.error(&source, &source, None, message);
    }
    for input in &walk.inputs {
        match input {
            Input::File(file) => run.check_file(file),
            Input::Patch(file) => run.skip(file.display().to_string(), SkipReason::KustomizePatch),
            Input::Chart(dir) if args.helm => match source::render_chart(dir, &helm, args.render_timeout) {
                Ok(documents) => run.check_rendered(&documents),
                Err(message) => {
                    run.error(&dir.display().to_string(), &dir.join("Chart.yaml").display().to_string(), None, message)
                }
            },
            Input::Chart(dir) => run.skip(dir.display().to_string(), SkipReason::HelmChart),
            Input::Kustomization(dir) if args.kustomize => match source::kustomize::render(dir, args.render_timeout) {
                Ok(Rendered::Documents(documents)) => renderings.push(Rendering { dir: dir.clone(), documents }),
                Ok(Rendered::Component) => {}
                Err(e) => {
                    let file = e.file.or_else(|| source::kustomize::kustomization_file(dir)).unwrap_or(dir.clone());
                    run.error(&dir.display().to_string(), &file.display().to_string(), e.line, e.message)
                }
            },
            Input::Kustomization(dir) => run.skip(dir.display().to_string(), SkipReason::Kustomization),
        }
    }
    run.check_kustomizations(&renderings);
    let Run { report, tally, .. } = run;
    // Rules naming objects that none of the objects checked belongs to:
    // a typo, or a workload that is gone.
    if args.config.is_some() && !report.results.is_empty() {
        for rule in policy.exemptions.iter().filter(|rule| !rule.objects.is_empty()) {
            let label = rule.label();
            if !report.results.iter().any(|r| r.exemptions.iter().any(|e| e.rule == label)) {
                eprintln!(
                    "podgate check: warning: exemption \"{label}\": names objects, but matched none of the {} objects checked",
                    report.results.len()
                );
            }
        }
    }

    let rendered = match args.format {
        Format::Json => serde_json::to_string_pretty(&report).expect("report serialises") + "\n",
        Format::Text => render_text(&report, tally),
        Format::Sarif => {
            // Relative paths in the report are relative to the working
            // directory: that is `%SRCROOT%`.
            let srcroot = std::env::current_dir().ok();
            let log = report::sarif::render(&report, tally, &policy, srcroot.as_deref());
            serde_json::to_string_pretty(&log).expect("SARIF serialises") + "\n"
        }
        Format::Github => report::github::render(&report, tally),
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(rendered.as_bytes());

    if tally.errors > 0 {
        ExitCode::from(2)
    } else if report.results.iter().any(|r| !r.allowed) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// One `podgate check` run: the policy, and what it has found so far.
struct Run<'p> {
    policy: &'p Policy,
    default_namespace: Option<&'p str>,
    /// The time exemption expiry is judged at (`--now`, else the clock).
    now: Timestamp,
    report: Report,
    tally: Tally,
    /// Errors go to the report only, not to stderr (yet): renderings of the
    /// same base are checked before duplicates are dropped.
    quiet: bool,
}

/// Where line numbers come from for a document's findings.
#[derive(Clone, Copy)]
enum Lines<'t> {
    /// The document's own text, whose lines are the file's.
    Source(Syntax),
    /// A document rendered from this template text: the template's line
    /// that spells the field's key out (see [`source::template_line`]).
    Template(&'t str),
    /// Nothing to map back to here (a kustomize rendering: located later,
    /// in its source file, see [`kustomize`]).
    Unknown,
}

impl Run<'_> {
    fn skip(&mut self, source: String, reason: SkipReason) {
        self.tally.skip(reason);
        self.report.skipped.push(Skipped { source, reason });
    }

    /// An input that cannot be evaluated: on stderr as `SOURCE: message`,
    /// and in the report for the machine-readable formats.
    fn error(&mut self, source: &str, file: &str, line: Option<usize>, message: String) {
        if !self.quiet {
            eprintln!("{source}: {message}");
        }
        self.tally.errors += 1;
        let file = file.to_owned();
        self.report.errors.push(Problem { source: source.to_owned(), file, line, message });
    }

    fn check_file(&mut self, file: &Path) {
        let name = if file == Path::new("-") { "<stdin>".to_owned() } else { file.display().to_string() };
        let text = match read(file) {
            Ok(text) => text,
            Err(e) => return self.error(&name, &name, None, format!("cannot read: {e}")),
        };
        let syntax = Syntax::detect(&name, &text);
        self.check_text(&name, &text, syntax, Lines::Source(syntax), 0);
    }

    /// The documents of a chart, each under the name of
    /// the file it came from and its index among that file's documents.
    fn check_rendered(&mut self, documents: &[RenderedDocument]) {
        let mut seen: BTreeMap<&Path, usize> = BTreeMap::new();
        let mut templates: BTreeMap<&Path, Option<String>> = BTreeMap::new();
        for document in documents {
            let index = seen.entry(&document.file).or_default();
            let first = *index;
            *index += 1;
            let name = document.file.display().to_string();
            let template = if document.from_template {
                templates.entry(&document.file).or_insert_with(|| std::fs::read_to_string(&document.file).ok()).clone()
            } else {
                None
            };
            let lines = template.as_deref().map_or(Lines::Unknown, Lines::Template);
            self.check_text(&name, &document.text, Syntax::Yaml, lines, first);
        }
    }

    /// Decodes and evaluates every document of `text`; `first` is the index
    /// of its first document in the file it is named after.
    fn check_text(&mut self, name: &str, text: &str, syntax: Syntax, lines: Lines<'_>, first: usize) {
        for_each_document_with_source(text, syntax, |index, doc_source, document| {
            let source = format!("{name}#{}", first + index);
            let document = match document {
                Ok(document) => document,
                Err(DocumentError::Skipped(reason)) => return self.skip(source, reason),
                Err(DocumentError::Invalid(message)) => {
                    let line = match lines {
                        Lines::Source(_) => line_in_message(&message),
                        Lines::Template(_) | Lines::Unknown => None,
                    };
                    return self.error(&source, name, line, message);
                }
            };
            let mut locator = match lines {
                Lines::Source(syntax) => Some(Locator::new(doc_source, syntax)),
                _ => None,
            };
            let mut line_of = |path: &str| match lines {
                Lines::Source(_) => locator.as_mut().and_then(|l| l.line_of(path)),
                Lines::Template(template) => Some(source::template_line(template, path)),
                Lines::Unknown => None,
            };
            for found in document.into_objects() {
                let object = &found.object;
                let api_version = object.api_version.as_deref().unwrap_or_default();
                let kind_name = object.kind.as_deref().unwrap_or_default();
                let Some(kind) = WorkloadKind::from_api_version_kind(api_version, kind_name) else {
                    self.skip(source.clone(), SkipReason::NotWorkload);
                    continue;
                };
                let metadata = object.metadata.as_ref();
                let namespace = found
                    .namespace
                    .as_deref()
                    .or_else(|| metadata.and_then(|m| m.namespace.as_deref()))
                    .or(self.default_namespace);
                let object_name = metadata.and_then(|m| m.name.as_deref().or(m.generate_name.as_deref()));
                // A manifest is judged as written; an AdmissionReview in a
                // file as the webhook would judge it, with its requesting user.
                let mut subject = Subject::stored(kind, object, namespace);
                if let Some(user) = &found.user_info {
                    subject.username = user.username.as_deref();
                    subject.groups = user.groups.as_slice();
                    subject.as_stored = false;
                }
                let verdict = evaluate_object(self.policy, &subject, kind, object, self.now);
                let mut result = ObjectResult::new(
                    source.clone(),
                    api_version.to_owned(),
                    kind_name.to_owned(),
                    namespace.map(str::to_owned),
                    object_name.map(str::to_owned),
                    &verdict,
                );
                result.file = name.to_owned();
                result.line = line_of(&found.path);
                for violation in &mut result.violations {
                    let path = if found.path.is_empty() {
                        violation.field.clone()
                    } else {
                        format!("{}.{}", found.path, violation.field)
                    };
                    violation.line = line_of(&path);
                }
                self.report.results.push(result);
            }
        });
    }
}

/// The line a decoder's message names (`... (line 12, column 3)`, or
/// `at line 12 column 3` in messages kept as they are).
fn line_in_message(message: &str) -> Option<usize> {
    let (_, rest) = message.rsplit_once("line ")?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn read(file: &Path) -> std::io::Result<String> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}
