//! The documentation's links: README.md, SECURITY.md, BENCHMARKS.md and the
//! guide in `docs/`.
//!
//! Every relative link must resolve to a file or directory of the repository,
//! and every `#anchor` (in the same file or another Markdown file) must be
//! one of the target's heading anchors, computed as GitHub computes them:
//! the heading's text lowercased, every character that is not a letter, a
//! digit, `-`, `_` or a space removed, spaces turned into `-`, and a repeated
//! anchor suffixed `-1`, `-2`, ... in document order. A forge renders the
//! files as they are, so a broken link is only ever found by a reader; this
//! test finds it first and names every one with its file and line.
//!
//! The scan is a small Markdown reader rather than a full CommonMark parser
//! (no new dependency earns its place for this): ATX headings (`# Title`),
//! inline links and images (`[text](target)`, `![alt](target "title")`,
//! `<target>` destinations) and reference definitions (`[label]: target`),
//! outside fenced code blocks and inline code spans (links in indented
//! lines are judged too). Absolute URLs
//! (`https:`, `mailto:`, ...) are not fetched: only the repository's own
//! files are judged. Setext headings (text underlined with `===` or `---`)
//! are not recognised; the docs use none, and a link to one would be
//! reported as broken rather than wrongly accepted.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The files whose links are checked: the top-level documents and the guide.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md"), PathBuf::from("SECURITY.md"), PathBuf::from("BENCHMARKS.md")];
    let mut guide: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| path.strip_prefix(root()).unwrap().to_path_buf())
        .collect();
    guide.sort();
    files.extend(guide);
    files
}

#[test]
fn every_link_and_anchor_in_the_docs_resolves() {
    let files = documents();
    assert!(files.len() > 10, "the guide has pages: {files:?}");
    let mut checker = Checker::new(root());
    let mut broken = Vec::new();
    let mut links = 0;
    for file in &files {
        let report = checker.check(file);
        links += report.links;
        broken.extend(report.broken);
    }
    assert!(broken.is_empty(), "{} broken links:\n{}", broken.len(), broken.join("\n"));
    // The scan found the links it is meant to judge (the map alone has dozens):
    // a reader that saw none would pass vacuously.
    assert!(links > 50, "only {links} relative links found in {files:?}");
}

/// The checker on a fixture with known faults: it reports each with its
/// file and line, and nothing else (links in code are not links; a
/// duplicate heading's `-1` anchor and a reference definition are judged).
#[test]
fn rejects_the_broken_links_and_anchors_of_the_fixture() {
    let dir = root().join("tests/fixtures/docs");
    let mut checker = Checker::new(&dir);
    let report = checker.check(Path::new("broken.md"));
    let expected = [
        "broken.md:10: link \"missing.md\": no such file or directory (missing.md)",
        "broken.md:12: link \"other.md#no-such-heading\": no heading with anchor \"no-such-heading\" in other.md",
        "broken.md:14: link \"#setup-2\": no heading with anchor \"setup-2\" in broken.md",
        "broken.md:16: link \"Other.md\": no such file or directory (Other.md)",
        "broken.md:18: link \"sub/../../outside.md\": leaves the repository",
        "broken.md:20: link \"#Setup\": no heading with anchor \"Setup\" in broken.md",
        "broken.md:37: link \"gone.md#x\": no such file or directory (gone.md)",
    ];
    assert_eq!(report.broken, expected, "{:#?}", report.broken);
    // The fixture's good links were seen and accepted, not skipped.
    assert_eq!(report.links, 15, "{report:?}");
}

#[test]
fn accepts_the_fixture_that_has_no_faults() {
    let dir = root().join("tests/fixtures/docs");
    let report = Checker::new(&dir).check(Path::new("other.md"));
    assert_eq!(report.broken, Vec::<String>::new());
    assert_eq!(report.links, 2, "{report:?}");
}

#[test]
fn anchors_are_computed_as_github_computes_them() {
    let cases = [
        ("`podgate audit`: what is already running", "podgate-audit-what-is-already-running"),
        ("Continuous audit (`--interval`)", "continuous-audit---interval"),
        ("The chart's tests", "the-charts-tests"),
        ("Plain manifests (`kubectl apply`)", "plain-manifests-kubectl-apply"),
        (
            "`podgate audit`: 10,000 Pods against the apiserver's own list",
            "podgate-audit-10000-pods-against-the-apiservers-own-list",
        ),
        (
            "Roll out safely: audit, read the would-deny counts, enforce per check",
            "roll-out-safely-audit-read-the-would-deny-counts-enforce-per-check",
        ),
        ("snake_case and **bold** [a link](x.md) ##", "snake_case-and-bold-a-link"),
        ("  Größe  ", "größe"),
    ];
    for (heading, anchor) in cases {
        assert_eq!(github_anchor(heading), anchor, "{heading:?}");
    }
    let scan = scan("# A\n## A\n```\n# A\n```\n### A #\n#NotAHeading\n    # indented code\n~~~~\n# A\n~~~\n~~~~\n");
    assert_eq!(scan.anchors, ["a", "a-1", "a-2"]);
}

/// The README is the landing page: short, and it gets a newcomer going with
/// the two commands of the quick start.
#[test]
fn readme_is_a_landing_page() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines < 400, "README.md has {lines} lines; the guide in docs/ is the place for detail");
    for command in ["cargo run --release -- serve --self-signed", "cargo test"] {
        assert!(readme.contains(command), "README.md lacks the quick start's `{command}`");
    }
    assert!(readme.contains("](docs/README.md)"), "README.md links to the guide's map");
}

/// What one file's scan found: how many relative links it judged and the
/// broken ones, each as `FILE:LINE: link "TARGET": REASON`.
#[derive(Debug)]
struct Report {
    links: usize,
    broken: Vec<String>,
}

/// Checks files under `root`, caching the anchors of every Markdown file a
/// link points into.
struct Checker {
    root: PathBuf,
    anchors: HashMap<PathBuf, Vec<String>>,
}

impl Checker {
    fn new(root: &Path) -> Self {
        Checker { root: root.to_path_buf(), anchors: HashMap::new() }
    }

    /// `file` is relative to the root.
    fn check(&mut self, file: &Path) -> Report {
        let text = std::fs::read_to_string(self.root.join(file)).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let scanned = scan(&text);
        self.anchors.insert(file.to_path_buf(), scanned.anchors.clone());
        let mut report = Report { links: 0, broken: Vec::new() };
        for link in &scanned.links {
            if is_absolute_url(&link.target) {
                continue;
            }
            report.links += 1;
            if let Err(reason) = self.resolve(file, &link.target) {
                report.broken.push(format!("{}:{}: link {:?}: {reason}", file.display(), link.line, link.target));
            }
        }
        report
    }

    fn resolve(&mut self, from: &Path, target: &str) -> Result<(), String> {
        let (path, anchor) = match target.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (target, None),
        };
        let path = percent_decode(path);
        let file = if path.is_empty() {
            from.to_path_buf()
        } else if let Some(absolute) = path.strip_prefix('/') {
            // A forge resolves a leading `/` against the repository's root.
            normalize(Path::new(absolute))?
        } else {
            normalize(&from.parent().unwrap_or(Path::new("")).join(&path))?
        };
        if !exists_exactly(&self.root, &file) {
            return Err(format!("no such file or directory ({})", file.display()));
        }
        let Some(anchor) = anchor else { return Ok(()) };
        // Anchors into other files (a source file's `#L10`) are the forge's
        // business; only Markdown headings are known here.
        if file.extension().is_none_or(|ext| ext != "md") {
            return Ok(());
        }
        let anchors = self.anchors_of(&file);
        if anchors.iter().any(|a| a == anchor) {
            Ok(())
        } else {
            Err(format!("no heading with anchor {anchor:?} in {}", file.display()))
        }
    }

    fn anchors_of(&mut self, file: &Path) -> &Vec<String> {
        let root = &self.root;
        self.anchors.entry(file.to_path_buf()).or_insert_with(|| {
            let text = std::fs::read_to_string(root.join(file)).unwrap_or_default();
            scan(&text).anchors
        })
    }
}

/// `a/./b/../c` as `a/c`; an error when `..` climbs out of the root.
fn normalize(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err("leaves the repository".to_string());
                }
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::Prefix(_) => return Err("is not relative".to_string()),
        }
    }
    Ok(out)
}

/// Whether `path` exists with exactly this spelling: a forge's paths are
/// case-sensitive even where the checkout's file system is not.
fn exists_exactly(root: &Path, path: &Path) -> bool {
    let mut dir = root.to_path_buf();
    for part in path.components() {
        let Ok(entries) = std::fs::read_dir(&dir) else { return false };
        let found = entries.filter_map(Result::ok).any(|entry| entry.file_name() == part.as_os_str());
        if !found {
            return false;
        }
        dir.push(part);
    }
    true
}

fn is_absolute_url(target: &str) -> bool {
    // A scheme: a letter, then letters, digits, `+`, `-` or `.`, then `:`.
    let Some((scheme, _)) = target.split_once(':') else { return false };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(byte) =
                std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A link found in a file: its destination and 1-based line.
#[derive(Debug)]
struct Link {
    line: usize,
    target: String,
}

#[derive(Debug)]
struct Scan {
    anchors: Vec<String>,
    links: Vec<Link>,
}

/// The heading anchors (in order, duplicates suffixed) and the links of a
/// Markdown text, outside fenced code blocks and inline code.
fn scan(text: &str) -> Scan {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = Vec::new();
    let mut links = Vec::new();
    // The open fence's character and length: it closes on a line of at
    // least as many of the same character.
    let mut fence: Option<(char, usize)> = None;
    for (index, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let body = line.trim_start_matches(' ');
        let run = |c: char| body.chars().take_while(|&x| x == c).count();
        if let Some((c, len)) = fence {
            if indent < 4 && run(c) >= len && body.trim_start_matches(c).trim().is_empty() {
                fence = None;
            }
            continue;
        }
        // Four spaces of indentation make an indented code block or a list
        // item's continuation: neither a fence nor a heading, but its links
        // are judged all the same (a false alarm there is cheap to fix, a
        // link never checked is not).
        let structural = indent < 4;
        if structural {
            let (ticks, tildes) = (run('`'), run('~'));
            if ticks >= 3 && !body[ticks..].contains('`') {
                fence = Some(('`', ticks));
                continue;
            }
            if tildes >= 3 {
                fence = Some(('~', tildes));
                continue;
            }
        }
        let hashes = run('#');
        if structural && (1..=6).contains(&hashes) && (body.len() == hashes || body[hashes..].starts_with([' ', '\t']))
        {
            let base = github_anchor(&body[hashes..]);
            let count = seen.entry(base.clone()).or_insert(0);
            anchors.push(if *count == 0 { base.clone() } else { format!("{base}-{count}") });
            *count += 1;
        }
        let line_no = index + 1;
        let visible = without_code_spans(body);
        if let Some(target) = reference_definition(&visible) {
            links.push(Link { line: line_no, target });
            continue;
        }
        for target in inline_link_targets(&visible) {
            links.push(Link { line: line_no, target });
        }
    }
    Scan { anchors, links }
}

/// GitHub's anchor for a heading's source text: the rendered text (link and
/// emphasis syntax gone, code spans' contents kept), lowercased, every
/// character but letters, digits, `_`, `-` and spaces dropped, spaces as `-`.
fn github_anchor(heading: &str) -> String {
    let mut text = heading.trim();
    // A closing run of `#` counts only after a space (`## C#` keeps its `#`,
    // which is then dropped as punctuation all the same).
    let unclosed = text.trim_end_matches('#');
    if unclosed.is_empty() || unclosed.ends_with([' ', '\t']) {
        text = unclosed.trim_end();
    }
    let mut text = text.to_string();
    // `[text](target)` renders as `text`.
    while let Some(open) = text.find("](") {
        let Some(close) = text[open..].find(')') else { break };
        text.replace_range(open..open + close + 1, "");
    }
    text.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The line with every inline code span blanked out: a run of N backticks
/// opens a span that the next run of exactly N closes.
fn without_code_spans(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let open = chars[i..].iter().take_while(|&&c| c == '`').count();
        let mut j = i + open;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let n = chars[j..].iter().take_while(|&&c| c == '`').count();
                if n == open {
                    close = Some(j + n);
                    break;
                }
                j += n;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                out.push_str(&" ".repeat(end - i));
                i = end;
            }
            None => {
                // An unmatched run is literal text.
                out.extend(&chars[i..i + open]);
                i += open;
            }
        }
    }
    out
}

/// `[label]: target` at the start of a line.
fn reference_definition(line: &str) -> Option<String> {
    let rest = line.strip_prefix('[')?;
    let (label, after) = rest.split_once("]:")?;
    if label.is_empty() || label.contains(']') {
        return None;
    }
    destination(after.trim_start())
}

/// The destinations of the inline links and images of a line (`](` starts one).
fn inline_link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        if let Some(target) = destination(after) {
            targets.push(target);
        }
        rest = after;
    }
    targets
}

/// A link destination at the start of `s`: `<...>`, or up to whitespace or
/// the `)` that balances the parentheses.
fn destination(s: &str) -> Option<String> {
    if let Some(inner) = s.strip_prefix('<') {
        return inner.split_once('>').map(|(target, _)| target.to_string());
    }
    let mut depth = 0usize;
    let mut end = s.len();
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => {
                end = i;
                break;
            }
            ')' => depth -= 1,
            c if c.is_whitespace() => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let target = &s[..end];
    (!target.is_empty()).then(|| target.to_string())
}
