//! Online log-template mining, after Drain (He, Zhu, Zheng, Lyu: "Drain: An Online Log Parsing
//! Approach with Fixed Depth Tree", ICWS 2017), with Drain3's refinements.
//!
//! 1. **Preprocess**: split on whitespace; tokens that are obviously variable — numbers (with
//!    units: `2003ms`, `1.5s`, `12KiB`, `50%`), durations (`1m30s`), hex (`0x1f`, ids of 8+
//!    hex digits), IPv4/IPv6 addresses and socket addresses, UUIDs, dates and times, tokens
//!    mixing letters and digits (`Hunter2Secret`, base64, ULIDs, JWTs: 8 bytes or more) and
//!    long base64-like runs — become `<*>`; `key=value` keeps its key (`id=<*>`); the value of
//!    a secret-like key (`password`, `token`, `secret`, `api_key`, `authorization`, …) is
//!    always masked, and so is the token after a bare `password:` or `Bearer`; surrounding
//!    punctuation stays (`(<*>),`). Templates are what the log API serves by default, so no
//!    secret or id may survive in them.
//! 2. **Fixed-depth tree**: first by token count (and a class the caller gives: the miner
//!    keeps error and non-error lines apart, so `ERROR x` never merges with `INFO x`), then by
//!    the first `depth - 3` tokens (a token with a digit goes to the `<*>` branch; at
//!    `max_children` children new tokens go there too). The leaf holds candidate clusters.
//! 3. **Match**: the most similar cluster of the leaf — similarity is the share of positions
//!    where the template's constant token equals the line's; a line that fits the template
//!    (every constant position equal) matches outright — if at least `similarity`.
//! 4. **Merge**: positions where the template and the line differ become wildcards.
//!    Otherwise a new cluster starts from the line.
//!
//! Memory is bounded: at most `max_clusters` clusters (the least recently matched one is
//! evicted and counted), `max_children` per tree node, `max_tokens` per line (the rest of a
//! longer line is one `<*>`). Everything is deterministic: the same lines in the same order
//! give the same clusters and ids.
use std::collections::{BTreeMap, HashMap};

/// What variable parts of a template print as.
pub const WILDCARD: &str = "<*>";
/// A wildcard made by merging (a position where lines differed), as opposed to a token
/// masked by preprocessing: masked tokens are equal to each other when lines are compared,
/// merged wildcards are skipped. Both print as [`WILDCARD`].
const MERGED: &str = "\u{0}*";

#[derive(Clone, Debug)]
pub struct DrainConfig {
    /// Tree depth as in Drain3: root, token count, `depth - 3` first-token layers, leaf.
    /// Minimum 3 (no token layer).
    pub depth: usize,
    /// Minimum similarity (0..=1) for a line to join a cluster.
    pub similarity: f64,
    /// Children per tree node; beyond, new tokens share the `<*>` branch.
    pub max_children: usize,
    /// Clusters kept; beyond, the least recently used is evicted.
    pub max_clusters: usize,
    /// Tokens considered per line; the rest becomes one trailing `<*>`.
    pub max_tokens: usize,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            depth: 4,
            similarity: 0.4,
            max_children: 100,
            max_clusters: 1000,
            max_tokens: 64,
        }
    }
}

pub type ClusterId = u64;

/// What [`Drain::add`] did with a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddOutcome {
    pub cluster: ClusterId,
    /// A new cluster was created for the line.
    pub created: bool,
    /// The line changed the cluster's template (merge).
    pub template_changed: bool,
    /// The cluster evicted to make room for the new one.
    pub evicted: Option<ClusterId>,
}

#[derive(Clone, Debug)]
struct Cluster {
    tokens: Vec<String>,
    class: u8,
    /// Tree keys leading to the leaf holding this cluster (for eviction).
    path: Vec<String>,
    size: u64,
    /// Key in `lru`.
    used: u64,
}

#[derive(Default, Debug)]
struct Node {
    children: HashMap<String, Node>,
    clusters: Vec<ClusterId>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DrainStats {
    pub clusters: u64,
    pub evictions: u64,
}

pub struct Drain {
    cfg: DrainConfig,
    /// (class, token count) → first-token tree.
    roots: HashMap<(u8, usize), Node>,
    clusters: HashMap<ClusterId, Cluster>,
    /// use counter → cluster, least recently used first.
    lru: BTreeMap<u64, ClusterId>,
    next_id: ClusterId,
    clock: u64,
    evictions: u64,
}

impl Drain {
    pub fn new(cfg: DrainConfig) -> Self {
        Self {
            cfg: DrainConfig {
                depth: cfg.depth.max(3),
                similarity: cfg.similarity.clamp(0.0, 1.0),
                max_children: cfg.max_children.max(2),
                max_clusters: cfg.max_clusters.max(1),
                max_tokens: cfg.max_tokens.max(1),
            },
            roots: HashMap::new(),
            clusters: HashMap::new(),
            lru: BTreeMap::new(),
            next_id: 1,
            clock: 0,
            evictions: 0,
        }
    }

    pub fn stats(&self) -> DrainStats {
        DrainStats {
            clusters: self.clusters.len() as u64,
            evictions: self.evictions,
        }
    }

    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// The cluster's template, wildcards printed as `<*>`.
    pub fn template(&self, id: ClusterId) -> Option<String> {
        self.clusters.get(&id).map(|c| render(&c.tokens))
    }

    /// Lines the cluster has absorbed.
    pub fn size(&self, id: ClusterId) -> Option<u64> {
        self.clusters.get(&id).map(|c| c.size)
    }

    /// Adds one line of `class` (lines of different classes never share a cluster).
    pub fn add(&mut self, line: &str, class: u8) -> AddOutcome {
        let tokens = tokenize(line, self.cfg.max_tokens);
        self.add_tokens(tokens, class)
    }

    fn add_tokens(&mut self, tokens: Vec<String>, class: u8) -> AddOutcome {
        self.clock += 1;
        let path = self.route(class, &tokens);
        if let Some(id) = self.best_match(class, &path, &tokens) {
            let c = self.clusters.get_mut(&id).expect("leaf ids are live");
            let mut changed = false;
            for (t, l) in c.tokens.iter_mut().zip(&tokens) {
                if t != l && t != MERGED {
                    *t = MERGED.to_string();
                    changed = true;
                }
            }
            c.size += 1;
            self.lru.remove(&c.used);
            c.used = self.clock;
            self.lru.insert(self.clock, id);
            return AddOutcome {
                cluster: id,
                created: false,
                template_changed: changed,
                evicted: None,
            };
        }
        let evicted = if self.clusters.len() >= self.cfg.max_clusters {
            self.evict_lru()
        } else {
            None
        };
        let id = self.next_id;
        self.next_id += 1;
        let leaf = self.leaf_mut(class, tokens.len(), &path);
        leaf.clusters.push(id);
        self.lru.insert(self.clock, id);
        self.clusters.insert(
            id,
            Cluster {
                tokens,
                class,
                path,
                size: 1,
                used: self.clock,
            },
        );
        AddOutcome {
            cluster: id,
            created: true,
            template_changed: false,
            evicted,
        }
    }

    /// Tree keys for the first `depth - 3` tokens, creating no node: a token with a digit
    /// (or a masked one) goes to `<*>`; a token with its own branch takes it; a new token
    /// gets a new branch while the node has room (one slot is kept for `<*>`), else `<*>`.
    fn route(&self, class: u8, tokens: &[String]) -> Vec<String> {
        let layers = (self.cfg.depth - 3).min(tokens.len());
        let mut node = self.roots.get(&(class, tokens.len()));
        let mut path = Vec::with_capacity(layers);
        for t in &tokens[..layers] {
            let own = !(t.contains(|c: char| c.is_ascii_digit()) || t == WILDCARD)
                && match node {
                    Some(n) => {
                        n.children.contains_key(t) || n.children.len() + 1 < self.cfg.max_children
                    }
                    None => true,
                };
            let key = if own { t.clone() } else { WILDCARD.to_string() };
            node = node.and_then(|n| n.children.get(&key));
            path.push(key);
        }
        path
    }

    fn best_match(&self, class: u8, path: &[String], tokens: &[String]) -> Option<ClusterId> {
        let mut node = self.roots.get(&(class, tokens.len()))?;
        for key in path {
            node = node.children.get(key)?;
        }
        let mut best: Option<(f64, usize, ClusterId)> = None;
        for &id in &node.clusters {
            let c = &self.clusters[&id];
            if c.class != class || c.tokens.len() != tokens.len() {
                continue;
            }
            let (sim, params) = similarity(&c.tokens, tokens);
            let better = match best {
                None => true,
                Some((s, p, bid)) => {
                    sim > s || (sim == s && (params > p || (params == p && id < bid)))
                }
            };
            if better {
                best = Some((sim, params, id));
            }
        }
        best.filter(|(s, _, _)| *s >= self.cfg.similarity)
            .map(|(_, _, id)| id)
    }

    /// The leaf at `path` (as [`Self::route`] chose it), created as needed.
    fn leaf_mut(&mut self, class: u8, len: usize, path: &[String]) -> &mut Node {
        let mut node = self.roots.entry((class, len)).or_default();
        for key in path {
            node = node.children.entry(key.clone()).or_default();
        }
        node
    }

    fn evict_lru(&mut self) -> Option<ClusterId> {
        let (_, id) = self.lru.pop_first()?;
        let c = self.clusters.remove(&id)?;
        self.evictions += 1;
        let root_key = (c.class, c.tokens.len());
        if let Some(root) = self.roots.get_mut(&root_key) {
            remove_from(root, &c.path, id);
            if root.children.is_empty() && root.clusters.is_empty() {
                self.roots.remove(&root_key);
            }
        }
        Some(id)
    }
}

/// Removes `id` from the leaf at `path` and prunes nodes left empty; true when `node` is
/// empty afterwards.
fn remove_from(node: &mut Node, path: &[String], id: ClusterId) -> bool {
    match path.split_first() {
        None => node.clusters.retain(|&c| c != id),
        Some((key, rest)) => {
            if let Some(child) = node.children.get_mut(key)
                && remove_from(child, rest, id)
            {
                node.children.remove(key);
            }
        }
    }
    node.children.is_empty() && node.clusters.is_empty()
}

/// (similarity, wildcards in the template). A line that fits the template — every constant
/// position equal — has similarity 1.
fn similarity(template: &[String], line: &[String]) -> (f64, usize) {
    let n = template.len().max(1);
    let mut equal = 0;
    let mut params = 0;
    for (t, l) in template.iter().zip(line) {
        if t == MERGED {
            params += 1;
        } else if t == l {
            equal += 1;
        }
    }
    if equal + params == template.len() {
        return (1.0, params);
    }
    (equal as f64 / n as f64, params)
}

fn render(tokens: &[String]) -> String {
    let mut out = String::new();
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(if t == MERGED { WILDCARD } else { t });
    }
    out
}

/// Whitespace tokens, masked (see the module docs). Beyond `max_tokens`, one `<*>`.
pub fn tokenize(line: &str, max_tokens: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut secret_next = false;
    for (i, tok) in line.split_whitespace().enumerate() {
        if i + 1 == max_tokens && line.split_whitespace().nth(max_tokens).is_some() {
            out.push(WILDCARD.to_string());
            break;
        }
        out.push(if secret_next {
            WILDCARD.to_string()
        } else {
            mask_token(tok)
        });
        secret_next = introduces_secret(tok);
    }
    out
}

/// `password:`, `token=`, `"secret":` or `Bearer`: the next token is a secret.
fn introduces_secret(tok: &str) -> bool {
    if tok.eq_ignore_ascii_case("bearer") || tok.eq_ignore_ascii_case("basic") {
        return true;
    }
    tok.strip_suffix([':', '='])
        .is_some_and(|k| is_secret_key(k.trim_matches(['"', '\'', '{', ',', '('])))
}

/// A URL or path (`/reset/x/PATHSECRET42?token=abc`, `https://host/a/b`): segments that are
/// not plain lowercase words or that are variable become `<*>`, every query value too
/// (`/reset/x/<*>?token=<*>`). None when nothing changed or `s` is no path.
fn mask_path(s: &str) -> Option<String> {
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None if s.starts_with('/') => (None, s),
        None => return None,
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let mut out = String::with_capacity(s.len());
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let plain = seg
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'));
        // The host of a URL stays (`http://db:5432` is a kind of thing, not a secret).
        let host = scheme.is_some() && i == 0;
        if !host && !seg.is_empty() && (!plain || is_variable(seg)) {
            out.push_str(WILDCARD);
        } else {
            out.push_str(seg);
        }
    }
    if let Some(q) = query {
        out.push('?');
        for (i, pair) in q.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((k, _)) => {
                    out.push_str(k);
                    out.push('=');
                    out.push_str(WILDCARD);
                }
                None => out.push_str(WILDCARD),
            }
        }
    }
    (out != s).then_some(out)
}

/// Keys whose values are credentials, whatever they look like.
fn is_secret_key(key: &str) -> bool {
    const SECRET_WORDS: &[&str] = &[
        "password",
        "passwd",
        "pwd",
        "pass",
        "secret",
        "token",
        "apikey",
        "api_key",
        "api-key",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "cookie",
        "session",
        "sessionid",
        "private_key",
        "privatekey",
        "access_key",
        "signature",
        "sig",
        "otp",
        "pin",
        "ssn",
        "card",
        "cvv",
    ];
    let k = key.to_ascii_lowercase();
    SECRET_WORDS.contains(&k.as_str())
        || [
            "password",
            "passwd",
            "secret",
            "token",
            "apikey",
            "api_key",
            "credential",
        ]
        .iter()
        .any(|w| k.contains(w))
}

/// One token with its variable part replaced by `<*>`.
pub fn mask_token(tok: &str) -> String {
    const OPEN: &[char] = &['(', '[', '{', '<', '"', '\'', '`'];
    const CLOSE: &[char] = &[
        ')', ']', '}', '>', '"', '\'', '`', ',', ';', ':', '.', '!', '?',
    ];
    if is_variable(tok) {
        // Whole-token forms that begin or end with punctuation: `[::1]:443`.
        return WILDCARD.to_string();
    }
    let start = tok.len() - tok.trim_start_matches(OPEN).len();
    let core_and_tail = &tok[start..];
    let core = core_and_tail.trim_end_matches(CLOSE);
    let (head, tail) = (&tok[..start], &core_and_tail[core.len()..]);
    if core.is_empty() || core == WILDCARD {
        return tok.to_string();
    }
    let masked = if is_variable(core) {
        Some(WILDCARD.to_string())
    } else if let Some(p) = mask_path(core) {
        Some(p)
    } else if let Some((key, value)) = core.split_once(['=', ':'])
        && !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '"'))
        && !value.is_empty()
    {
        let bare_key = key.trim_matches(['"', '\'']);
        let v = if is_secret_key(bare_key) {
            WILDCARD.to_string()
        } else {
            mask_token(value)
        };
        // The separator is what lies between the key and the value.
        let sep = &core[key.len()..core.len() - value.len()];
        (v != value).then(|| format!("{key}{sep}{v}"))
    } else {
        None
    };
    match masked {
        Some(m) => format!("{head}{m}{tail}"),
        None => tok.to_string(),
    }
}

/// Numbers, durations, sizes, hex, addresses, UUIDs, dates and times, and tokens (ids,
/// secrets, hashes) that read as no word.
fn is_variable(s: &str) -> bool {
    if !s.contains(|c: char| c.is_ascii_digit()) {
        return is_long_token(s);
    }
    is_number_with_unit(s)
        || is_duration(s)
        || is_hex(s)
        || is_uuid(s)
        || is_address(s)
        || is_date_or_time(s)
        || is_mixed_token(s)
}

/// Letters and digits mixed in 8 bytes or more of token characters (`Hunter2Secret`,
/// `abc123def456`, base64, ULIDs, JWTs): an id or a secret, not a word like `http2`.
fn is_mixed_token(s: &str) -> bool {
    // `=` only as base64 padding: `key=value` is split, not swallowed.
    let body = s.trim_end_matches('=');
    s.len() >= 8
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '.'))
        && s.chars().any(|c| c.is_ascii_alphabetic())
        && s.chars().filter(char::is_ascii_digit).count() >= 1
        && !s.contains("..")
}

/// 24 bytes or more of base64 alphabet with upper and lower case and no separator a word
/// would have (`dGhpcyBpcyBhIHNlY3JldA`): an encoded secret, not `ConnectionRefusedError`.
fn is_long_token(s: &str) -> bool {
    s.len() >= 24
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '-' | '_'))
        && {
            // A word boundary is a lower-case letter followed by an upper-case one; random
            // text has far more case changes than CamelCase.
            let b = s.as_bytes();
            let changes = b
                .windows(2)
                .filter(|w| w[0].is_ascii_uppercase() != w[1].is_ascii_uppercase())
                .count();
            changes * 3 >= s.len()
        }
}

const UNITS: &[&str] = &[
    "ns", "us", "µs", "ms", "s", "sec", "secs", "m", "min", "mins", "h", "d", "b", "k", "kb",
    "kib", "m", "mb", "mib", "g", "gb", "gib", "t", "tb", "tib", "%", "x", "rps", "qps",
];

/// `-12`, `3.5`, `1e9`, `2003ms`, `12KiB`, `50%`.
fn is_number_with_unit(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let num_end = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(num_end);
    if num.is_empty() || !num.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    if unit.is_empty() {
        return true;
    }
    if let Some(exp) = unit.strip_prefix(['e', 'E']) {
        let exp = exp.strip_prefix(['-', '+']).unwrap_or(exp);
        if !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit()) {
            return true;
        }
    }
    let unit = unit.to_ascii_lowercase();
    UNITS.contains(&unit.as_str())
        || unit
            .strip_suffix("/s")
            .is_some_and(|per_second| UNITS.contains(&per_second))
}

/// `1m30s`, `1h2m3.5s`, `250ms`.
fn is_duration(s: &str) -> bool {
    let mut rest = s;
    let mut parts = 0;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            return false;
        }
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..u];
        if !matches!(unit, "ns" | "us" | "µs" | "ms" | "s" | "m" | "h" | "d") {
            return false;
        }
        rest = &rest[u..];
        parts += 1;
    }
    parts > 0
}

/// `0x1f`, or 8+ hex digits with at least one digit (hashes, ids, addresses).
fn is_hex(s: &str) -> bool {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit());
    }
    s.len() >= 8 && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// IPv4/IPv6 addresses, optionally with a port or prefix length, and `[v6]:port`.
fn is_address(s: &str) -> bool {
    use std::net::{IpAddr, SocketAddr};
    if s.parse::<IpAddr>().is_ok() || s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    if let Some((ip, bits)) = s.rsplit_once('/') {
        return ip.parse::<IpAddr>().is_ok() && bits.parse::<u8>().is_ok();
    }
    false
}

/// `2024-01-02`, `12:00:01.123`, `2024-01-02T12:00:01Z`, `2024/01/02`, `1.2.3`: digits and
/// date/time punctuation only.
fn is_date_or_time(s: &str) -> bool {
    s.chars().all(|c| {
        c.is_ascii_digit() || matches!(c, '-' | ':' | '.' | '/' | 'T' | 'Z' | '+' | ',' | '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain() -> Drain {
        Drain::new(DrainConfig::default())
    }

    #[test]
    fn masks_variable_tokens() {
        let cases = [
            ("2003", "<*>"),
            ("2003ms", "<*>"),
            ("1.5s", "<*>"),
            ("1m30s", "<*>"),
            ("-12", "<*>"),
            ("50%", "<*>"),
            ("12KiB", "<*>"),
            ("0x7ffd1234", "<*>"),
            ("deadbeef01", "<*>"),
            ("10.1.2.3", "<*>"),
            ("10.1.2.3:8080", "<*>"),
            ("[::1]:443", "<*>"),
            ("fe80::1", "<*>"),
            ("10.0.0.0/8", "<*>"),
            ("123e4567-e89b-12d3-a456-426614174000", "<*>"),
            ("2024-01-02T12:00:01.123Z", "<*>"),
            ("12:00:01,123", "<*>"),
            ("(2003ms),", "(<*>),"),
            ("id=42", "id=<*>"),
            ("latency_ms=17.2", "latency_ms=<*>"),
            ("\"took\":1200", "\"took\":<*>"),
            ("upstream", "upstream"),
            ("deadbeef", "deadbeef"),
            ("ERROR:", "ERROR:"),
            ("user=alice", "user=alice"),
            ("http2", "http2"),
            ("x86_64", "x86_64"),
            ("sha256", "sha256"),
            // Secrets and ids that are no number.
            ("password=Hunter2Secret", "password=<*>"),
            ("password=hunter", "password=<*>"),
            ("\"password\":\"hunter\",", "\"password\":<*>\","),
            ("DB_PASSWORD=x", "DB_PASSWORD=<*>"),
            ("api_key=abc", "api_key=<*>"),
            ("token:abc", "token:<*>"),
            ("Hunter2Secret", "<*>"),
            ("abc123def456", "<*>"),
            ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "<*>"),
            ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig", "<*>"),
            ("dGhpcyBpcyBhIHNlY3JldCB0b2tlbg", "<*>"),
            ("4111-1111-1111-1111", "<*>"),
            ("4111111111111111", "<*>"),
            ("ConnectionRefusedError", "ConnectionRefusedError"),
            (
                "connection_refused_by_upstream",
                "connection_refused_by_upstream",
            ),
            ("/api/v1/users", "/api/v1/users"),
            ("/api/v1/users/123", "/api/v1/users/<*>"),
            (
                "/reset/x/PATHSECRET42?token=QUERYSECRET",
                "/reset/x/<*>?token=<*>",
            ),
            ("\"GET", "\"GET"),
            ("http://db:5432/q?u=bob", "http://db:5432/q?u=<*>"),
        ];
        for (input, want) in cases {
            assert_eq!(mask_token(input), want, "mask of {input:?}");
        }
    }

    #[test]
    fn secrets_after_a_key_or_bearer_are_masked() {
        let t = tokenize(
            "login ok password: hunter Authorization: Bearer abc.def card 4111 1111 1111 1111",
            64,
        );
        assert_eq!(
            t.join(" "),
            "login ok password: <*> Authorization: <*> <*> card <*> <*> <*> <*>"
        );
        let t = tokenize("INFO reset password=Hunter2Secret for user alice", 64);
        assert_eq!(t.join(" "), "INFO reset password=<*> for user alice");
    }

    #[test]
    fn merges_timed_out_lines_into_one_template() {
        let mut d = drain();
        let a = d.add("ERROR upstream timed out after 2003 ms", 1);
        let b = d.add("ERROR upstream timed out after 17 ms", 1);
        let c = d.add("ERROR upstream timed out after 2003ms", 1);
        let e = d.add("ERROR upstream timed out after 17ms", 1);
        assert!(a.created && !b.created);
        assert_eq!(a.cluster, b.cluster);
        assert_eq!(c.cluster, e.cluster);
        assert_eq!(
            d.template(a.cluster).unwrap(),
            "ERROR upstream timed out after <*> ms"
        );
        assert_eq!(
            d.template(c.cluster).unwrap(),
            "ERROR upstream timed out after <*>"
        );
        assert_eq!(d.size(a.cluster), Some(2));
    }

    #[test]
    fn merges_differing_words_into_wildcards() {
        let mut d = drain();
        let a = d.add("user alice logged in from web", 0);
        let b = d.add("user bob logged in from web", 0);
        assert_eq!(a.cluster, b.cluster);
        assert!(b.template_changed);
        assert_eq!(
            d.template(a.cluster).unwrap(),
            "user <*> logged in from web"
        );
        let c = d.add("user carol logged in from web", 0);
        assert_eq!(c.cluster, a.cluster);
        assert!(!c.template_changed, "the line fits the template");
    }

    #[test]
    fn different_messages_stay_apart() {
        let mut d = drain();
        let lines = [
            "connection refused by upstream db",
            "request completed in 12 ms",
            "cache miss for key session",
            "ERROR upstream timed out after 5 ms",
            "starting worker pool size 8",
            "connection refused by upstream db extra",
        ];
        let ids: Vec<_> = lines.iter().map(|l| d.add(l, 0).cluster).collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), lines.len(), "{ids:?}");
        // Same words, different class: apart too.
        let e = d.add("cache miss for key session", 1);
        assert!(e.created);
        // Same first token and length, little else in common.
        let f = d.add("cache hit ratio is high", 0);
        assert!(f.created && f.cluster != ids[2]);
    }

    #[test]
    fn dissimilar_lines_of_the_same_shape_stay_apart() {
        let mut d = drain();
        let a = d.add("GET request served ok", 0);
        let b = d.add("GET disk almost full", 0);
        assert_ne!(a.cluster, b.cluster, "1 of 4 tokens equal is below 0.4");
    }

    #[test]
    fn clusters_are_bounded_least_recently_used_evicted() {
        let mut d = Drain::new(DrainConfig {
            max_clusters: 3,
            ..DrainConfig::default()
        });
        let words = ["alpha", "bravo", "charlie", "delta", "echo"];
        let first = d.add("alpha one two three", 0).cluster;
        let second = d.add("bravo four five six", 0).cluster;
        d.add("charlie seven eight nine", 0);
        // Use the first again: the second is now the least recently used.
        assert_eq!(d.add("alpha one two three", 0).cluster, first);
        let out = d.add("delta ten eleven twelve", 0);
        assert_eq!(out.evicted, Some(second));
        assert_eq!(d.len(), 3);
        assert!(d.template(second).is_none());
        for (i, w) in words.iter().cycle().take(50).enumerate() {
            d.add(&format!("{w} x{i} y z q{i}"), (i % 2) as u8);
            assert!(d.len() <= 3);
        }
        assert!(d.stats().evictions >= 1);
        // The tree holds nothing for evicted clusters.
        let in_tree: usize = d.roots.values().map(count_ids).sum();
        assert_eq!(in_tree, d.len());
    }

    fn count_ids(n: &Node) -> usize {
        n.clusters.len() + n.children.values().map(count_ids).sum::<usize>()
    }

    #[test]
    fn tree_children_are_bounded() {
        let mut d = Drain::new(DrainConfig {
            depth: 5,
            max_children: 4,
            ..DrainConfig::default()
        });
        for w in ["a", "b", "c", "d", "e", "f", "g"] {
            for v in ["p", "q", "r", "s", "t", "u"] {
                d.add(&format!("{w} {v} same tail"), 0);
            }
        }
        fn max_children(n: &Node) -> usize {
            n.children
                .values()
                .map(max_children)
                .max()
                .unwrap_or(0)
                .max(n.children.len())
        }
        let widest = d.roots.values().map(max_children).max().unwrap();
        assert!(widest <= 4, "{widest}");
    }

    #[test]
    fn long_lines_are_capped() {
        let line = (0..200)
            .map(|i| format!("w{i}x"))
            .collect::<Vec<_>>()
            .join(" ");
        let t = tokenize(&line, 64);
        assert_eq!(t.len(), 64);
        assert_eq!(t.last().unwrap(), WILDCARD);
        assert_eq!(tokenize("a b", 2), ["a", "b"]);
    }

    #[test]
    fn deterministic() {
        let lines: Vec<String> = (0..300)
            .map(|i| match i % 5 {
                0 => format!("user u{} logged in", i % 7),
                1 => format!("ERROR upstream timed out after {i} ms"),
                2 => format!("GET /api/items/{i} 200 {}ms", i * 3),
                3 => format!("worker {} picked job {}", ["a", "b", "c"][i % 3], i),
                _ => format!("cache {} for key k{}", ["hit", "miss"][i % 2], i),
            })
            .collect();
        let run = || {
            let mut d = Drain::new(DrainConfig {
                max_clusters: 5,
                ..DrainConfig::default()
            });
            lines
                .iter()
                .map(|l| {
                    let o = d.add(l, 0);
                    (o.cluster, d.template(o.cluster).unwrap())
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
