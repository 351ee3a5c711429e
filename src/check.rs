//! `podgate check`: evaluate manifests offline with the webhook's engine.
//!
//! Exit codes: 0 nothing would be denied, 1 at least one object would be
//! denied, 2 a usage, configuration or parse error (reported on stderr with
//! the file and document index; every other file is still evaluated).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use jiff::Timestamp;

use crate::config::{Expiry, Mode, Policy};
use crate::decode::manifest::{for_each_document, Syntax};
use crate::exemption;
use crate::extract::WorkloadKind;
use crate::report::{render_text, ObjectResult, Report, Tally};
use crate::verdict::{evaluate_object, Subject};

/// Output format of `podgate check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
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
    pub mode: Option<ModeArg>,
    /// Namespace assumed for objects that set none (for namespace exemptions).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Judge exemption expiry at this time instead of now: a date
    /// (2027-03-31, midnight UTC) or an RFC 3339 time, e.g. to see what
    /// is denied once a waiver has run out.
    #[arg(long, value_name = "TIME", value_parser = parse_now)]
    pub now: Option<Timestamp>,
    /// Files or directories (searched recursively for *.yaml, *.yml, *.json);
    /// `-` reads standard input. With no path and no `--config`, nothing to do.
    pub paths: Vec<PathBuf>,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    Enforce,
    Audit,
}

fn parse_now(text: &str) -> Result<Timestamp, String> {
    Expiry::parse(text).map(|expiry| expiry.at)
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
        policy.mode = match mode {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Audit => Mode::Audit,
        };
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

    let mut report = Report::default();
    let mut tally = Tally::default();
    for input in &args.paths {
        for file in expand(input, &mut tally) {
            check_file(&file, &policy, args.namespace.as_deref(), now, &mut report, &mut tally);
        }
    }
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

/// A path argument as the files to read: itself, or for a directory every
/// manifest below it in a stable order (hidden entries and symlinked
/// directories are not followed).
fn expand(input: &Path, tally: &mut Tally) -> Vec<PathBuf> {
    if input == Path::new("-") || !input.is_dir() {
        return vec![input.to_path_buf()];
    }
    let mut files = Vec::new();
    let mut pending = vec![input.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                eprintln!("{}: cannot read directory: {e}", dir.display());
                tally.errors += 1;
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            let Ok(file_type) = entry.file_type() else { continue };
            if hidden {
                continue;
            }
            if file_type.is_dir() {
                pending.push(path);
            } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn check_file(
    file: &Path,
    policy: &Policy,
    default_namespace: Option<&str>,
    now: Timestamp,
    report: &mut Report,
    tally: &mut Tally,
) {
    let name = if file == Path::new("-") { "<stdin>".to_owned() } else { file.display().to_string() };
    let text = match read(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{name}: cannot read: {e}");
            tally.errors += 1;
            return;
        }
    };
    for_each_document(&text, Syntax::detect(&name, &text), |index, document| {
        let source = format!("{name}#{index}");
        let document = match document {
            Ok(document) => document,
            Err(message) => {
                eprintln!("{source}: {message}");
                tally.errors += 1;
                return;
            }
        };
        for found in document.into_objects() {
            let object = &found.object;
            let api_version = object.api_version.as_deref().unwrap_or_default();
            let kind_name = object.kind.as_deref().unwrap_or_default();
            let Some(kind) = WorkloadKind::from_api_version_kind(api_version, kind_name) else {
                tally.skipped += 1;
                continue;
            };
            let metadata = object.metadata.as_ref();
            let namespace = found
                .namespace
                .as_deref()
                .or_else(|| metadata.and_then(|m| m.namespace.as_deref()))
                .or(default_namespace);
            let name = metadata.and_then(|m| m.name.as_deref().or(m.generate_name.as_deref()));
            // A manifest is judged as written; an AdmissionReview in a file
            // as the webhook would judge it, with its requesting user.
            let mut subject = Subject::stored(kind, object, namespace);
            if let Some(user) = &found.user_info {
                subject.username = user.username.as_deref();
                subject.groups = user.groups.as_slice();
                subject.as_stored = false;
            }
            let verdict = evaluate_object(policy, &subject, kind, object, now);
            report.results.push(ObjectResult::new(
                source.clone(),
                api_version.to_owned(),
                kind_name.to_owned(),
                namespace.map(str::to_owned),
                name.map(str::to_owned),
                &verdict,
            ));
        }
    });
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
