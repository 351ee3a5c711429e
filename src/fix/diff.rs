//! Unified diffs of insert-only edits, and applying those edits.
//!
//! Every edit `fix` makes inserts whole lines between the original ones, so
//! the diff is known exactly from the insertions: no line-matching
//! algorithm (and no `similar`-style crate) is needed to compute it, and
//! the hunks are what `patch` and `git apply` expect (three lines of context).

use super::yaml::Insertion;

/// Lines of `text` with their terminators (`\n` or `\r\n`), the last
/// possibly without one.
fn raw_lines(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

/// `\r\n` when the file's first line ends that way, else `\n`.
pub fn line_ending(text: &str) -> &'static str {
    match text.split_once('\n') {
        Some((first, _)) if first.ends_with('\r') => "\r\n",
        _ => "\n",
    }
}

/// Sorts insertions into the order they are written: by place, and at one
/// place deeper ones first (a container's keys before its pod's).
pub fn sort(insertions: &mut [Insertion]) {
    insertions.sort_by_key(|i| (i.after, std::cmp::Reverse(i.indent)));
}

/// `text` with the (sorted) insertions made; the original lines are kept
/// byte for byte, except that a last line without a terminator gets one
/// when lines are added after it.
pub fn apply(text: &str, insertions: &[Insertion]) -> String {
    let eol = line_ending(text);
    let lines = raw_lines(text);
    let mut out = String::with_capacity(text.len() + insertions.len() * 64);
    let mut next = insertions.iter().peekable();
    for (index, line) in lines.iter().enumerate() {
        out.push_str(line);
        let mut terminated = line.ends_with('\n');
        while let Some(insertion) = next.next_if(|i| i.after == index) {
            if !terminated {
                out.push_str(eol);
                terminated = true;
            }
            for new in &insertion.lines {
                out.push_str(new);
                out.push_str(eol);
            }
        }
    }
    out
}

/// A unified diff (`--- name`, `+++ name`, hunks) from `text` to `text` with
/// the (sorted) insertions; empty when there are none.
pub fn unified(name: &str, text: &str, insertions: &[Insertion]) -> String {
    const CONTEXT: usize = 3;
    if insertions.is_empty() {
        return String::new();
    }
    let eol = line_ending(text);
    let lines = raw_lines(text);
    let n = lines.len();
    // (position in the original: lines before it, the new lines), merged by position.
    let mut changes: Vec<(usize, Vec<String>)> = Vec::new();
    for insertion in insertions {
        let at = (insertion.after + 1).min(n);
        let new = insertion.lines.iter().map(|l| format!("{l}{eol}"));
        match changes.last_mut() {
            Some((last, lines)) if *last == at => lines.extend(new),
            _ => changes.push((at, new.collect())),
        }
    }
    let mut out = format!("--- {name}\n+++ {name}\n");
    let mut added_before = 0;
    let mut group_start = 0;
    while group_start < changes.len() {
        let mut group_end = group_start + 1;
        while group_end < changes.len() && changes[group_end].0 - changes[group_end - 1].0 <= 2 * CONTEXT {
            group_end += 1;
        }
        let group = &changes[group_start..group_end];
        let start = group[0].0.saturating_sub(CONTEXT);
        let end = (group[group.len() - 1].0 + CONTEXT).min(n);
        let added: usize = group.iter().map(|(_, l)| l.len()).sum();
        let mut body = String::new();
        let old_count = end - start;
        let new_count = end - start + added;
        let mut pending = group.iter().peekable();
        for (index, line) in lines.iter().enumerate().take(end).skip(start) {
            let unterminated = !line.ends_with('\n');
            if unterminated && pending.peek().is_some_and(|(at, _)| *at == n) {
                // New lines after a last line without a terminator: that
                // line changes too (it gains one).
                body.push_str(&format!("-{line}\n\\ No newline at end of file\n+{line}{eol}"));
            } else {
                body.push(' ');
                body.push_str(line);
                if unterminated {
                    body.push_str("\n\\ No newline at end of file\n");
                }
            }
            while let Some((_, new)) = pending.next_if(|(at, _)| *at == index + 1) {
                for line in new {
                    body.push('+');
                    body.push_str(line);
                }
            }
        }
        let old_start = if old_count == 0 { start } else { start + 1 };
        let new_start = if new_count == 0 { start + added_before } else { start + added_before + 1 };
        out.push_str(&format!("@@ -{old_start},{old_count} +{new_start},{new_count} @@\n"));
        out.push_str(&body);
        added_before += added;
        group_start = group_end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insertion(after: usize, lines: &[&str]) -> Insertion {
        Insertion { after, indent: 0, lines: lines.iter().map(|l| (*l).to_owned()).collect() }
    }

    #[test]
    fn applies_and_diffs_insertions() {
        let text = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\n";
        let edits = [insertion(0, &["x"]), insertion(11, &["y", "z"])];
        assert_eq!(apply(text, &edits), "a\nx\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\ny\nz\n");
        assert_eq!(
            unified("f.yaml", text, &edits),
            "--- f.yaml\n+++ f.yaml\n@@ -1,4 +1,5 @@\n a\n+x\n b\n c\n d\n@@ -10,3 +11,5 @@\n j\n k\n l\n+y\n+z\n"
        );
        let near = [insertion(1, &["x"]), insertion(4, &["y"])];
        assert_eq!(
            unified("f", "a\nb\nc\nd\ne\n", &near),
            "--- f\n+++ f\n@@ -1,5 +1,7 @@\n a\n b\n+x\n c\n d\n e\n+y\n"
        );
    }

    #[test]
    fn keeps_crlf_and_terminates_a_last_line() {
        let text = "a\r\nb";
        let edits = [insertion(1, &["c"])];
        assert_eq!(apply(text, &edits), "a\r\nb\r\nc\r\n");
        assert_eq!(
            unified("f", text, &edits),
            "--- f\n+++ f\n@@ -1,2 +1,3 @@\n a\r\n-b\n\\ No newline at end of file\n+b\r\n+c\r\n"
        );
    }
}
