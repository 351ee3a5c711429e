//! Metric exposition shared by `podgate serve` and `podgate audit`: a
//! `prometheus_client` registry rendered as OpenMetrics text or as the
//! Prometheus text format, whichever the scraper asks for. Which metrics
//! exist is each command's own (`server::metrics`, `audit::metrics`).

use std::fmt::Write as _;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

/// The content type of OpenMetrics text ([`render_openmetrics`]).
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text format 0.0.4 ([`prometheus_text`]).
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A registry in OpenMetrics text, ending with `# EOF`.
pub fn render_openmetrics(registry: &Registry, capacity: usize) -> String {
    let mut out = String::with_capacity(capacity);
    if encode(&mut out, registry).is_err() {
        // Writing to a String cannot fail; keep the contract anyway.
        out.clear();
        let _ = writeln!(out, "# EOF");
    }
    out
}

/// OpenMetrics text as the Prometheus text format 0.0.4: counter families
/// named after their `_total` samples, no `# UNIT` lines, no `# EOF`.
pub fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len() + 256);
    let mut pending_help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name, help));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if kind == "counter" { "_total" } else { "" };
            if let Some((help_name, help)) = pending_help.take() {
                let _ = writeln!(out, "# HELP {help_name}{suffix} {help}");
            }
            let _ = writeln!(out, "# TYPE {name}{suffix} {kind}");
            continue;
        }
        if let Some((name, help)) = pending_help.take() {
            let _ = writeln!(out, "# HELP {name} {help}");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Whether a scrape asked for OpenMetrics (Prometheus does, in `Accept`).
pub fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|value| value.to_str().is_ok_and(|accept| accept.contains("application/openmetrics-text")))
}

/// The answer to `GET /metrics`: `render`'s OpenMetrics text for clients
/// that accept it, else the same samples in the Prometheus text format
/// (`curl`, `promtool check metrics`), each with its content type.
pub fn scrape_response(headers: &HeaderMap, render: impl FnOnce() -> String) -> Response {
    let (content_type, body) = if wants_openmetrics(headers) {
        (OPENMETRICS_CONTENT_TYPE, render())
    } else {
        (PROMETHEUS_TEXT_CONTENT_TYPE, prometheus_text(&render()))
    };
    ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_openmetrics_only_when_asked_for() {
        let mut headers = HeaderMap::new();
        assert!(!wants_openmetrics(&headers));
        headers.append(header::ACCEPT, HeaderValue::from_static("text/plain;version=0.0.4;q=0.5"));
        assert!(!wants_openmetrics(&headers));
        headers.append(
            header::ACCEPT,
            HeaderValue::from_static("application/openmetrics-text;version=1.0.0;q=0.75,*/*;q=0.1"),
        );
        assert!(wants_openmetrics(&headers));
    }

    #[test]
    fn prometheus_text_drops_eof_and_units_and_suffixes_counters() {
        let openmetrics = "# HELP jobs Jobs run.\n# TYPE jobs counter\njobs_total 3\n# HELP age Age.\n# TYPE age gauge\n# UNIT age seconds\nage 5\n# EOF\n";
        assert_eq!(
            prometheus_text(openmetrics),
            "# HELP jobs_total Jobs run.\n# TYPE jobs_total counter\njobs_total 3\n# HELP age Age.\n# TYPE age gauge\nage 5\n"
        );
    }
}
