//! Route templates from `[metrics] route_templates`, matched against raw paths.

/// One route template, split in segments.
#[derive(Debug, Clone)]
pub struct Template {
    pub text: String,
    segments: Vec<String>,
    rest: bool,
}

impl Template {
    pub fn parse(t: &str) -> Self {
        let mut segments: Vec<String> =
            t.trim_matches('/').split('/').map(str::to_string).collect();
        let rest = segments.last().is_some_and(|s| s == "{*}");
        if rest {
            segments.pop();
        }
        Self {
            text: t.to_string(),
            segments,
            rest,
        }
    }

    /// Does the raw `path` (a query string is ignored) fit the template?
    pub fn matches(&self, path: &str) -> bool {
        let path = path.split('?').next().unwrap_or(path);
        let mut parts = path.trim_matches('/').split('/');
        for seg in &self.segments {
            match parts.next() {
                Some(p) if seg.starts_with('{') && seg.ends_with('}') && !p.is_empty() => {}
                Some(p) if p == seg => {}
                _ => return false,
            }
        }
        self.rest || parts.next().is_none()
    }
}
