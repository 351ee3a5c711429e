//! A Dockerfile's `HEALTHCHECK`, turned into Kubernetes probes.
//!
//! Kubernetes ignores an image's `HEALTHCHECK`, so a service that declares
//! one still has no probes until someone writes them. The translation, only
//! where the meaning is the same:
//!
//! - the command: `curl -f URL` (with `--fail`; quiet, silent, output and
//!   redirect flags allowed) or `wget URL` (which fails on an HTTP error by
//!   itself) against the container itself (`localhost`, `127.0.0.1`, `::1`,
//!   `0.0.0.0`) becomes `httpGet` with the URL's path, port and scheme;
//!   anything else runs as written, an `exec` probe (`/bin/sh -c` for the
//!   shell form, as Docker runs it). `curl` without `--fail` succeeds on an
//!   HTTP 500, so it stays `exec` rather than become a stricter `httpGet`.
//! - `--interval` -> `periodSeconds`, `--timeout` -> `timeoutSeconds`,
//!   `--retries` -> `failureThreshold`, with Docker's defaults (30s, 30s, 3)
//!   where the Dockerfile sets none, so the probe means what the image says.
//! - `--start-period` -> a `startupProbe`, Kubernetes' direct analogue:
//!   while it runs, liveness and readiness are not probed and its failures
//!   restart nothing, and it ends at the first success, as Docker's start
//!   period does. `initialDelaySeconds` would instead hold every probe for
//!   the whole period even when the service is up in a second, delaying
//!   readiness on every rollout. It probes every `--start-interval`
//!   (Docker's default 5s, raised to the timeout, which must fit in a
//!   period), and allows as long as Docker does before calling the
//!   container unhealthy: the start period plus `retries` failed checks at
//!   `interval`.
//!
//! Durations are Docker's (Go's) syntax; Kubernetes counts whole seconds, so
//! a duration that is not a whole number of seconds is reported, not rounded.
//! The last stage's `HEALTHCHECK` counts, inherited from an earlier stage it
//! is built `FROM`; one in an external base image cannot be seen.

use std::path::Path;

use super::yaml::Value;
use crate::duration::parse_go;

/// A `HEALTHCHECK CMD` of the final stage, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `CMD ["a", "b"]` (exec form) or `CMD a b` (shell form).
    pub command: Command,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub start_period: Option<String>,
    pub start_interval: Option<String>,
    pub retries: Option<String>,
    /// The line of the `HEALTHCHECK` instruction (1-based).
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

/// The probes a `HEALTHCHECK` becomes: one handler for liveness and
/// readiness, their timings, and the startup probe if there is a start period.
#[derive(Debug, Clone, PartialEq)]
pub struct Probes {
    /// `liveness` and `readiness` are the same probe.
    pub probe: Value,
    pub startup: Option<Value>,
    /// How it was translated, for the report.
    pub summary: String,
    /// How the start period was translated.
    pub startup_summary: Option<String>,
    /// The timings written, in seconds: period and timeout of the probe,
    /// and the startup probe's period.
    pub period: u64,
    pub timeout: u64,
    pub startup_period: Option<u64>,
}

/// Reads the final stage's `HEALTHCHECK` from a Dockerfile's text.
/// `Ok(None)` when it has none (or `HEALTHCHECK NONE`); `Err` when it
/// cannot be read, with the line.
pub fn parse(text: &str) -> Result<Option<HealthCheck>, String> {
    let escape = escape_char(text);
    // Stage name (lowercase) -> its health check, for `FROM stage`.
    let mut stages: Vec<(Option<String>, Option<HealthCheck>)> = Vec::new();
    let mut current: Option<HealthCheck> = None;
    let mut current_name: Option<String> = None;
    let mut started = false;
    for (line, instruction) in instructions(text, escape) {
        let (word, rest) = instruction.split_once(char::is_whitespace).unwrap_or((&instruction, ""));
        let rest = rest.trim();
        match word.to_ascii_uppercase().as_str() {
            "FROM" => {
                if started {
                    stages.push((current_name.take(), current.take()));
                }
                started = true;
                let args: Vec<&str> = rest.split_whitespace().filter(|a| !a.starts_with("--")).collect();
                let base = args.first().map(|b| b.to_ascii_lowercase());
                current_name = match args.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_ascii_lowercase()),
                    _ => None,
                };
                // Built on an earlier stage: its health check is inherited.
                current = base
                    .and_then(|base| stages.iter().rev().find(|(name, _)| name.as_deref() == Some(&base)))
                    .and_then(|(_, check)| check.clone());
            }
            "HEALTHCHECK" => current = parse_healthcheck(rest, line)?,
            _ => {}
        }
    }
    Ok(current)
}

/// The `# escape=` parser directive, else `\`.
fn escape_char(text: &str) -> char {
    for line in text.lines() {
        let Some(directive) = line.trim().strip_prefix('#') else { break };
        let Some((name, value)) = directive.split_once('=') else { break };
        if name.trim().eq_ignore_ascii_case("escape") {
            return value.trim().chars().next().unwrap_or('\\');
        }
    }
    '\\'
}

/// The instructions with their continuation lines joined, and the line
/// each starts on. Comment lines are dropped, also inside a continuation,
/// as Docker does.
fn instructions(text: &str, escape: char) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_some()) {
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        let (body, continues) = match trimmed.strip_suffix(escape) {
            Some(body) => (body, true),
            None => (trimmed, false),
        };
        let entry = current.get_or_insert_with(|| (number + 1, String::new()));
        if !entry.1.is_empty() {
            entry.1.push(' ');
        }
        entry.1.push_str(body.trim());
        if !continues {
            out.extend(current.take());
        }
    }
    out.extend(current);
    out
}

fn parse_healthcheck(rest: &str, line: usize) -> Result<Option<HealthCheck>, String> {
    let mut check = HealthCheck {
        command: Command::Shell(String::new()),
        interval: None,
        timeout: None,
        start_period: None,
        start_interval: None,
        retries: None,
        line,
    };
    let mut rest = rest.trim();
    if rest.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    while let Some(option) = rest.strip_prefix("--") {
        let (option, after) = option.split_once(char::is_whitespace).unwrap_or((option, ""));
        rest = after.trim_start();
        let Some((name, value)) = option.split_once('=') else {
            return Err(format!("line {line}: HEALTHCHECK option --{option} has no =VALUE"));
        };
        let value = Some(value.to_owned());
        match name {
            "interval" => check.interval = value,
            "timeout" => check.timeout = value,
            "start-period" => check.start_period = value,
            "start-interval" => check.start_interval = value,
            "retries" => check.retries = value,
            _ => return Err(format!("line {line}: unknown HEALTHCHECK option --{name}")),
        }
    }
    let (word, command) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    if !word.eq_ignore_ascii_case("CMD") {
        return Err(format!("line {line}: HEALTHCHECK must be NONE or [OPTIONS] CMD command"));
    }
    let command = command.trim();
    check.command = if command.starts_with('[') {
        match serde_json::from_str::<Vec<String>>(command) {
            Ok(argv) if !argv.is_empty() => Command::Exec(argv),
            // Docker runs a malformed JSON array as a shell command.
            _ => Command::Shell(command.to_owned()),
        }
    } else {
        Command::Shell(command.to_owned())
    };
    if matches!(&check.command, Command::Shell(s) if s.is_empty()) {
        return Err(format!("line {line}: HEALTHCHECK CMD has no command"));
    }
    Ok(Some(check))
}

/// Docker's defaults for options the Dockerfile leaves out (or sets to 0).
const DEFAULT_INTERVAL: u64 = 30;
const DEFAULT_TIMEOUT: u64 = 30;
const DEFAULT_RETRIES: u64 = 3;
const DEFAULT_START_INTERVAL: u64 = 5;

/// A Docker duration in whole seconds; `None` for unset or 0 (Docker's
/// default applies).
fn seconds(option: &str, value: Option<&str>) -> Result<Option<u64>, String> {
    let Some(text) = value else { return Ok(None) };
    let nanos = parse_go(text).map_err(|e| format!("--{option}: {e}"))?.0;
    if nanos < 0 {
        return Err(format!("--{option}={text} is negative"));
    }
    if nanos == 0 {
        return Ok(None);
    }
    if nanos % 1_000_000_000 != 0 {
        return Err(format!(
            "--{option}={text} is not a whole number of seconds, and Kubernetes probe timings are whole seconds"
        ));
    }
    Ok(Some((nanos / 1_000_000_000) as u64))
}

/// The container the probes are for: its declared ports (name, number),
/// to name the port when the URL's port is declared with a name.
pub struct Target<'p> {
    pub ports: &'p [(Option<String>, i64)],
    pub windows: bool,
}

/// Translates `check` into probes for a container. `Err` says what cannot
/// be translated.
pub fn probes(check: &HealthCheck, target: &Target<'_>) -> Result<Probes, String> {
    let interval = seconds("interval", check.interval.as_deref())?.unwrap_or(DEFAULT_INTERVAL);
    let timeout = seconds("timeout", check.timeout.as_deref())?.unwrap_or(DEFAULT_TIMEOUT);
    let start_period = seconds("start-period", check.start_period.as_deref())?;
    let start_interval = seconds("start-interval", check.start_interval.as_deref())?;
    let retries = match check.retries.as_deref() {
        None => DEFAULT_RETRIES,
        Some(text) => match text.parse::<u64>() {
            Ok(0) => DEFAULT_RETRIES,
            Ok(n) => n,
            Err(_) => return Err(format!("--retries={text} is not a whole number")),
        },
    };
    let (handler_key, handler, what) = handler(&check.command, target)?;
    let int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
    let probe = Value::Map(vec![
        (handler_key.to_owned(), handler.clone()),
        ("periodSeconds".into(), int(interval)),
        ("timeoutSeconds".into(), int(timeout)),
        ("failureThreshold".into(), int(retries)),
    ]);
    let summary = format!(
        "{what}; periodSeconds {interval} (--interval{}), timeoutSeconds {timeout} (--timeout{}), failureThreshold {retries} (--retries{})",
        default_note(&check.interval),
        default_note(&check.timeout),
        default_note(&check.retries),
    );
    let mut startup_summary = None;
    let startup_period = start_period.map(|_| start_interval.unwrap_or(DEFAULT_START_INTERVAL).max(timeout));
    let startup = start_period.zip(startup_period).map(|(start, period)| {
        let allowed = start + retries * interval;
        let threshold = allowed.div_ceil(period).max(1);
        startup_summary = Some(format!(
            "--start-period={}: a startup probe every {period}s, up to {threshold} failures ({allowed}s: the start period plus {retries} retries at the interval)",
            check.start_period.as_deref().unwrap_or_default()
        ));
        Value::Map(vec![
            (handler_key.to_owned(), handler),
            ("periodSeconds".into(), int(period)),
            ("timeoutSeconds".into(), int(timeout)),
            ("failureThreshold".into(), int(threshold)),
        ])
    });
    Ok(Probes { probe, startup, summary, startup_summary, period: interval, timeout, startup_period })
}

fn default_note(option: &Option<String>) -> &'static str {
    if option.is_some() {
        ""
    } else {
        ", Docker's default"
    }
}

/// The probe handler: `httpGet` for a plain HTTP fetch of the container
/// itself, else `exec` of the command as Docker would run it.
fn handler(command: &Command, target: &Target<'_>) -> Result<(&'static str, Value, String), String> {
    let argv: Option<Vec<String>> = match command {
        Command::Exec(argv) => Some(argv.clone()),
        Command::Shell(shell) => shell_words(shell),
    };
    if let Some((scheme, port, path)) = argv.as_deref().and_then(http_fetch) {
        let named = target.ports.iter().find(|(name, number)| *number == i64::from(port) && name.is_some());
        let port_value = match named {
            Some((Some(name), _)) => Value::Str(name.clone()),
            _ => Value::Int(i64::from(port)),
        };
        let mut entries = vec![("path".to_owned(), Value::Str(path.clone())), ("port".to_owned(), port_value)];
        if scheme == "https" {
            entries.push(("scheme".to_owned(), Value::Str("HTTPS".to_owned())));
        }
        let declared = match named {
            Some((Some(name), _)) => format!(", declared as {name:?}"),
            _ => String::new(),
        };
        let what =
            format!("httpGet {} {path} on port {port}{declared} (the HEALTHCHECK's URL)", scheme.to_ascii_uppercase());
        return Ok(("httpGet", Value::Map(entries), what));
    }
    let command = match command {
        Command::Exec(argv) => argv.clone(),
        Command::Shell(_) if target.windows => {
            return Err("a shell-form HEALTHCHECK on a Windows pod (Docker would run it with cmd; \
                        write the exec probe by hand)"
                .to_owned())
        }
        Command::Shell(shell) => vec!["/bin/sh".to_owned(), "-c".to_owned(), shell.clone()],
    };
    let what = "exec of the HEALTHCHECK's command".to_owned();
    Ok(("exec", Value::Map(vec![("command".into(), Value::Seq(command.into_iter().map(Value::Str).collect()))]), what))
}

/// Splits a shell command into words when it is a plain command, optionally
/// followed by `|| exit 1` (which changes no probe's outcome: any non-zero
/// exit is a failure). `None` when it uses anything else of the shell.
fn shell_words(shell: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = shell.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '$' | '`' | '\\' => return None,
                        c => word.push(c),
                    }
                }
            }
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '$' | '`' | '\\' | ';' | '&' | '<' | '>' | '(' | ')' | '*' | '?' | '[' | '#' | '~' | '{' => return None,
            '|' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                }
                // Only `|| exit` or `|| exit 1` at the end.
                let rest: String = chars.collect();
                let rest = rest.strip_prefix('|')?.trim();
                return matches!(rest, "exit" | "exit 1").then_some(words);
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// `curl --fail URL` or `wget URL` of the container itself: the URL's
/// scheme, port and path.
fn http_fetch(argv: &[String]) -> Option<(String, u16, String)> {
    let (program, args) = argv.split_first()?;
    let program = Path::new(program).file_name()?.to_str()?;
    let url = match program {
        "curl" => curl_url(args)?,
        "wget" => wget_url(args)?,
        _ => return None,
    };
    parse_url(&url)
}

/// The URL of a `curl` call whose outcome an `httpGet` probe has too:
/// `--fail` given, and every other option one that only changes output,
/// retries of redirects, or certificate checks (which kubelet skips).
fn curl_url(args: &[String]) -> Option<String> {
    let mut fail = false;
    let mut url = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fail" | "--fail-with-body" => fail = true,
            "--silent" | "--show-error" | "--location" | "--insecure" | "--head" | "--no-progress-meter" => {}
            "-o" | "--output" | "-m" | "--max-time" | "--connect-timeout" => {
                args.next()?;
            }
            short if short.starts_with('-') && !short.starts_with("--") => {
                for flag in short[1..].chars() {
                    match flag {
                        'f' => fail = true,
                        's' | 'S' | 'L' | 'k' | 'I' => {}
                        _ => return None,
                    }
                }
            }
            other if other.starts_with('-') => return None,
            other => {
                if url.replace(other.to_owned()).is_some() {
                    return None;
                }
            }
        }
    }
    fail.then_some(url).flatten()
}

/// The URL of a `wget` call: it exits non-zero on an HTTP error by itself.
fn wget_url(args: &[String]) -> Option<String> {
    let mut url = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-q" | "--quiet" | "--spider" | "-nv" | "--no-verbose" | "--no-check-certificate" | "-O-" => {}
            "-O" | "--output-document" | "-T" | "-t" => {
                args.next()?;
            }
            long if long.starts_with("--timeout=")
                || long.starts_with("--tries=")
                || long.starts_with("--output-document=") => {}
            short if short.starts_with('-') && !short.starts_with("--") => {
                // `-q`, `-qO-`, `-O/dev/null`, `-qO /dev/null`: quiet and output only.
                let flags = &short[1..];
                let mut takes_next = false;
                for (at, flag) in flags.char_indices() {
                    match flag {
                        'q' => {}
                        'O' => {
                            takes_next = at + 1 == flags.len();
                            break;
                        }
                        _ => return None,
                    }
                }
                if takes_next {
                    args.next()?;
                }
            }
            other if other.starts_with('-') => return None,
            other => {
                if url.replace(other.to_owned()).is_some() {
                    return None;
                }
            }
        }
    }
    url
}

/// `http://localhost:8000/health?x=1` -> (`http`, 8000, `/health?x=1`), for
/// a host that is the container itself.
fn parse_url(url: &str) -> Option<(String, u16, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_owned() };
    if authority.contains('@') || path.contains('#') {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if !matches!(host.to_ascii_lowercase().as_str(), "localhost" | "127.0.0.1" | "::1" | "0.0.0.0") {
        return None;
    }
    let port = match port {
        Some(port) => port.parse().ok().filter(|p| *p > 0)?,
        None => default_port,
    };
    Some((scheme, port, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Target<'static> = Target { ports: &[], windows: false };

    fn check(dockerfile: &str) -> HealthCheck {
        parse(dockerfile).unwrap().expect("has a HEALTHCHECK")
    }

    #[test]
    fn reads_the_hardened_service_healthcheck() {
        let hc = check(
            "FROM python:3.12-slim\nUSER 1000\nHEALTHCHECK --interval=30s --timeout=10s --start-period=40s --retries=3 CMD curl -f http://localhost:8000/health || exit 1\n",
        );
        let probes = probes(&hc, &TARGET).unwrap();
        let http = Value::Map(vec![("path".into(), Value::Str("/health".into())), ("port".into(), Value::Int(8000))]);
        assert_eq!(
            probes.probe,
            Value::Map(vec![
                ("httpGet".into(), http.clone()),
                ("periodSeconds".into(), Value::Int(30)),
                ("timeoutSeconds".into(), Value::Int(10)),
                ("failureThreshold".into(), Value::Int(3)),
            ])
        );
        // Every 10s (the 5s start interval raised to the timeout), for
        // 40s + 3 x 30s = 130s.
        assert_eq!(
            probes.startup,
            Some(Value::Map(vec![
                ("httpGet".into(), http),
                ("periodSeconds".into(), Value::Int(10)),
                ("timeoutSeconds".into(), Value::Int(10)),
                ("failureThreshold".into(), Value::Int(13)),
            ]))
        );
    }

    #[test]
    fn takes_the_last_stage_and_what_it_inherits() {
        let text = "FROM golang AS build\nHEALTHCHECK CMD [\"/app\", \"health\"]\nFROM build AS final\nFROM scratch\n";
        assert_eq!(parse(text).unwrap(), None, "scratch has none");
        let text = "FROM golang AS build\nHEALTHCHECK CMD [\"/app\", \"health\"]\nFROM build\n";
        assert_eq!(check(text).command, Command::Exec(vec!["/app".into(), "health".into()]));
        let text = "FROM a\nHEALTHCHECK CMD true\nFROM b\nHEALTHCHECK --interval=5s \\\n  # comment\n  CMD wget -q --spider http://127.0.0.1/ready\n";
        let hc = check(text);
        assert_eq!(hc.line, 4);
        assert_eq!(hc.interval.as_deref(), Some("5s"));
        assert_eq!(parse("FROM a\nHEALTHCHECK CMD true\nHEALTHCHECK NONE\n").unwrap(), None);
        let text = "# escape=`\nFROM a\nHEALTHCHECK --retries=2 `\n  CMD true\n";
        assert_eq!(check(text).retries.as_deref(), Some("2"));
    }

    #[test]
    fn translates_fetches_of_the_container_itself_to_http_get() {
        let ports = [(Some("http".to_owned()), 8080)];
        let target = Target { ports: &ports, windows: false };
        let http = |cmd: &str| {
            let hc = check(&format!("FROM a\nHEALTHCHECK {cmd}\n"));
            match probes(&hc, &target).unwrap().probe {
                Value::Map(entries) => entries[0].clone(),
                _ => unreachable!(),
            }
        };
        let (key, value) = http("CMD curl -fsS 'https://localhost:8443/healthz?full=1'");
        assert_eq!(key, "httpGet");
        assert_eq!(value.brief(), "{path: \"/healthz?full=1\", port: 8443, scheme: HTTPS}");
        assert_eq!(http("CMD [\"curl\", \"--fail\", \"http://127.0.0.1:8080\"]").1.brief(), "{path: /, port: http}");
        assert_eq!(http("CMD wget -q --spider http://localhost:8080/ready").1.brief(), "{path: /ready, port: http}");
        assert_eq!(http("CMD wget -qO- 'http://[::1]:9000/' || exit 1").1.brief(), "{path: /, port: 9000}");
        // Not the same meaning: exec of the command as written.
        for cmd in [
            "CMD curl http://localhost/health",
            "CMD curl -f http://db:5432/",
            "CMD curl -f -H 'X: y' http://localhost/",
            "CMD curl -f http://localhost/ && echo ok",
            "CMD pg_isready -U postgres",
        ] {
            assert_eq!(http(cmd).0, "exec", "{cmd}");
        }
        assert_eq!(
            http("CMD pg_isready -U postgres").1.brief(),
            "{command: [/bin/sh, \"-c\", \"pg_isready -U postgres\"]}"
        );
    }

    #[test]
    fn reports_what_it_cannot_translate() {
        let hc = check("FROM a\nHEALTHCHECK --interval=1500ms CMD true\n");
        let err = probes(&hc, &TARGET).unwrap_err();
        assert!(err.contains("not a whole number of seconds"), "{err}");
        let hc = check("FROM a\nHEALTHCHECK --interval=1d CMD true\n");
        assert!(probes(&hc, &TARGET).unwrap_err().contains("unknown unit"));
        assert!(parse("FROM a\nHEALTHCHECK --bogus=1 CMD true\n").unwrap_err().contains("line 2"));
        assert!(parse("FROM a\nHEALTHCHECK curl x\n").is_err());
        let windows = Target { ports: &[], windows: true };
        assert!(probes(&check("FROM a\nHEALTHCHECK CMD ping\n"), &windows).is_err());
    }

    #[test]
    fn applies_dockers_defaults() {
        let probes = probes(&check("FROM a\nHEALTHCHECK CMD [\"/bin/health\"]\n"), &TARGET).unwrap();
        assert!(probes.startup.is_none());
        assert_eq!(
            probes.probe.brief(),
            "{exec: {command: [/bin/health]}, periodSeconds: 30, timeoutSeconds: 30, failureThreshold: 3}"
        );
        assert!(probes.summary.contains("--interval, Docker's default"), "{}", probes.summary);
    }
}
