//! OpenMetrics from Prometheus text.

use std::fmt::Write as _;

/// Prometheus text → OpenMetrics: a counter family is named without its `_total` suffix
/// (its samples keep it), a counter whose samples lack the suffix becomes `unknown`, and the
/// exposition ends with `# EOF`.
pub fn to_openmetrics(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut o = String::with_capacity(text.len() + 16);
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("#"), Some(kw @ ("HELP" | "TYPE")), Some(name), rest) => {
                let counter_total = name.ends_with("_total") && counters.contains(name);
                let rest = rest.unwrap_or("");
                let (name, rest) = match (kw, counter_total) {
                    (_, true) => (name.trim_end_matches("_total"), rest),
                    ("TYPE", false) if rest == "counter" => (name, "unknown"),
                    ("TYPE", false) if rest == "untyped" => (name, "unknown"),
                    _ => (name, rest),
                };
                let _ = writeln!(o, "# {kw} {name} {rest}");
            }
            _ => {
                o.push_str(line);
                o.push('\n');
            }
        }
    }
    o.push_str("# EOF\n");
    o
}
