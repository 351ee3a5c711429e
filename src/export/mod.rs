//! Other renderings of the same policy, for enforcement points other than
//! podgate's own webhook. `podgate export vap` writes the policy as
//! ValidatingAdmissionPolicy objects that the kube-apiserver evaluates itself.
//!
//! An export reuses the engine's definitions (the [`Policy`], the check ids
//! and the effect each check has under its action and mode), so that the two
//! enforcement points cannot drift apart in what they enforce; how each
//! check decides is mirrored in CEL and proven equal by
//! `tests/vap_differential.rs` on a real apiserver.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Policy;

pub mod cel;
pub mod vap;

/// `podgate export`: which rendering.
#[derive(Debug, clap::Subcommand)]
pub enum ExportCommand {
    /// Write the policy as admissionregistration.k8s.io/v1
    /// ValidatingAdmissionPolicies and their bindings (YAML), for clusters
    /// that want no webhook in the admission path.
    Vap(VapArgs),
}

/// Arguments of `podgate export vap`.
#[derive(Debug, clap::Args)]
pub struct VapArgs {
    /// Policy file (YAML); the built-in default policy applies without one.
    #[arg(long, env = "PODGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Write to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Runs `podgate export ...`; exit code 0, or 2 with a message on stderr.
pub fn run(command: &ExportCommand) -> ExitCode {
    match command {
        ExportCommand::Vap(args) => run_vap(args),
    }
}

fn run_vap(args: &VapArgs) -> ExitCode {
    let policy = match &args.config {
        Some(path) => match Policy::load(path) {
            Ok(policy) => policy,
            Err(e) => {
                eprintln!("podgate export vap: invalid configuration: {e}");
                return ExitCode::from(2);
            }
        },
        None => Policy::default(),
    };
    let yaml = match vap::render(&policy) {
        Ok(yaml) => yaml,
        Err(e) => {
            eprintln!("podgate export vap: {e}");
            return ExitCode::from(2);
        }
    };
    let written = match &args.output {
        Some(path) => std::fs::write(path, yaml).map_err(|e| format!("cannot write {}: {e}", path.display())),
        // A closed pipe (`| head`) is reported, not a panic.
        None => std::io::stdout().write_all(yaml.as_bytes()).map_err(|e| format!("cannot write output: {e}")),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podgate export vap: {e}");
            ExitCode::from(2)
        }
    }
}
