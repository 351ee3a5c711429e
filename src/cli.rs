//! The command line: `podgate check`, `podgate fix`, `podgate serve`, `podgate audit` and `podgate export`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::audit::{self, AuditArgs};
use crate::check::{self, CheckArgs};
use crate::export::{self, ExportCommand};
use crate::fix::{self, FixArgs};
use crate::server::{self, ServeArgs};

/// A Kubernetes validating admission webhook: non-root, sane UIDs, no
/// privilege escalation, correct probes.
#[derive(Debug, Parser)]
#[command(name = "podgate", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Evaluate manifests offline, exactly as the webhook would.
    Check(CheckArgs),
    /// Write the fixes with one obvious answer into manifests
    /// (allowPrivilegeEscalation, runAsNonRoot, probes from a Dockerfile's
    /// HEALTHCHECK) and list what is left for a person.
    Fix(FixArgs),
    /// Audit the objects already in a cluster: what enforcing would deny,
    /// reported by owning workload (once, or continuously with --interval).
    Audit(Box<AuditArgs>),
    /// Run the HTTPS admission webhook (POST /validate), with /metrics,
    /// /healthz and /readyz on a plain-HTTP port.
    #[command(
        after_help = "Durations are written as in Go and Kubernetes: a number and a unit (ns, us, µs, ms, s, m, h), \
                            combined as in 1m30s, 1.5h, 500ms or 2h45m0.5s; 0 needs no unit."
    )]
    Serve(Box<ServeArgs>),
    /// Write the policy in another form, e.g. `podgate export vap`.
    #[command(subcommand)]
    Export(ExportCommand),
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Check(args) => check::run(args),
        Command::Fix(args) => fix::run(args),
        Command::Serve(args) => server::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Export(command) => export::run(command),
    }
}
