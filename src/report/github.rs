//! `--format github`: GitHub Actions workflow commands. Each finding becomes
//! an `::error` (deny) or `::warning` (warn) annotation on the file and line
//! of the offending field, shown inline in the pull request; inputs that
//! could not be evaluated are errors too, and skipped charts and
//! kustomizations are `::notice`s. The text summary line ends the output.

use std::fmt::Write as _;

use super::{skip_hint, Report, Tally};

/// Escapes an annotation's message (GitHub's rules for command data).
fn data(text: &str) -> String {
    text.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Escapes a property value (`file=`, `title=`): also `:` and `,`.
fn property(text: &str) -> String {
    data(text).replace(':', "%3A").replace(',', "%2C")
}

fn annotation(out: &mut String, command: &str, file: &str, line: Option<usize>, title: &str, message: &str) {
    let file = file.strip_prefix("./").unwrap_or(file);
    let _ = write!(out, "::{command} file={}", property(file));
    if let Some(line) = line {
        let _ = write!(out, ",line={line}");
    }
    let _ = writeln!(out, ",title={}::{}", property(title), data(message));
}

/// The annotations of a run, then the summary line of the text format.
pub fn render(report: &Report, tally: Tally) -> String {
    let mut out = String::new();
    // A base object's finding once, not once per overlay that renders it.
    for found in super::annotated(report) {
        let (object, v) = (found.object, found.violation);
        let namespace = object.namespace.as_deref().map(|ns| format!("{ns}/")).unwrap_or_default();
        let name = object.name.as_deref().unwrap_or("<unnamed>");
        let command = if v.action == "deny" { "error" } else { "warning" };
        let title = format!("podgate {}: {} {namespace}{name}", v.check, object.kind);
        let mut message = format!("{} (field {})", v.message, v.field);
        if !found.rendered_by.is_empty() {
            message.push_str(&format!("; rendered by {}", found.rendered_by.join(", ")));
        }
        annotation(&mut out, command, found.file, found.line, &title, &message);
    }
    for error in &report.errors {
        annotation(&mut out, "error", &error.file, error.line, "podgate: cannot check", &error.message);
    }
    for skipped in &report.skipped {
        if let Some(hint) = skip_hint(skipped) {
            let file = skipped.source.rsplit_once('#').map_or(skipped.source.as_str(), |(file, _)| file);
            annotation(&mut out, "notice", file, None, "podgate: skipped", &hint);
        }
    }
    out.push_str(&super::summary(report, tally));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_properties_and_messages() {
        let mut out = String::new();
        annotation(&mut out, "error", "./a,b:c.yaml", Some(3), "t: x", "50% done\nnext");
        assert_eq!(out, "::error file=a%2Cb%3Ac.yaml,line=3,title=t%3A x::50%25 done%0Anext\n");
    }
}
