//! Small helpers for writing CEL source text.

/// `s` as a CEL string literal: single-quoted, with backslash, quote and
/// control characters escaped, so that any configured value (a namespace, a
/// username) stays data and can never change the expression around it.
pub fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A CEL list literal of string literals.
pub fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| lit(s)).collect();
    format!("[{}]", items.join(", "))
}

/// `a || b || ...`, or `false` for none.
pub fn any(terms: &[String]) -> String {
    match terms {
        [] => "false".to_owned(),
        [one] => one.clone(),
        _ => terms.iter().map(|t| format!("({t})")).collect::<Vec<_>>().join(" || "),
    }
}

/// `a && b && ...`, or `true` for none.
pub fn all(terms: &[String]) -> String {
    match terms {
        [] => "true".to_owned(),
        [one] => one.clone(),
        _ => terms.iter().map(|t| format!("({t})")).collect::<Vec<_>>().join(" && "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_everything_that_could_end_them() {
        assert_eq!(lit("kube-system"), "'kube-system'");
        assert_eq!(lit(r"a'b\c"), r"'a\'b\\c'");
        assert_eq!(lit("x\ny\u{1}"), r"'x\ny\u0001'");
        assert_eq!(lit("\"q\""), r#"'\"q\"'"#);
    }

    #[test]
    fn lists_and_connectives() {
        assert_eq!(list(&["a".into(), "b".into()]), "['a', 'b']");
        assert_eq!(any(&[]), "false");
        assert_eq!(all(&[]), "true");
        assert_eq!(any(&["a".into(), "b".into()]), "(a) || (b)");
    }
}
