//! Prometheus label values, escaped.

/// Append `v` escaped as a Prometheus label value (`\\`, `\"`, `\n`).
pub fn push_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `v` escaped as a Prometheus label value.
pub fn label_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    push_label_value(&mut s, v);
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }
}
