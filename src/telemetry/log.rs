//! Logging set-up shared by `podgate serve` and `podgate audit`: the
//! `--log-format` values and the global `tracing` subscriber.

use super::logformat::{JsonLines, Rfc3339Time};
use super::logwriter::{self, FlushGuard};

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
}

/// Logs to standard output through a background writer thread: a review
/// never waits for a slow log consumer (a full buffer drops lines rather
/// than stalling admission); see [`logwriter`]. Dropping the guard flushes
/// what is still queued.
pub fn init_logging(format: LogFormat) -> Option<FlushGuard> {
    match logwriter::spawn(std::io::stdout()) {
        Ok((writer, guard)) => {
            init_subscriber(format, writer);
            Some(guard)
        }
        Err(error) => {
            eprintln!("podgate: cannot start the log writer thread ({error}); logging synchronously");
            init_subscriber(format, std::io::stdout);
            None
        }
    }
}

/// Installs the global subscriber: the level from `RUST_LOG` (default
/// `info`), lines in `format` to `writer`.
pub fn init_subscriber<W>(format: LogFormat, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::EnvFilter;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let result = match format {
        LogFormat::Text => builder.with_ansi(ansi).with_timer(Rfc3339Time).try_init(),
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
    };
    if let Err(error) = result {
        eprintln!("podgate: cannot set up logging: {error}");
    }
}
