//! Telemetry of the long-running commands (`podgate serve`, continuous
//! `podgate audit`): logging set-up, the log format and writer, and metric
//! exposition with content negotiation. Transport (listeners, TLS,
//! connections) stays with each command; which metrics exist too.

mod log;
pub mod logformat;
pub mod logwriter;
pub mod metrics;

pub use log::{init_logging, init_subscriber, LogFormat};
