//! SQL statement text, shared by the database parsers: normalisation (literals → `?`, comments
//! dropped, whitespace collapsed, `IN (?, ?, …)` → `IN (?)`, bounded) and the statement kind
//! (its first keyword). One normaliser, so a statement reads the same whichever database ran it.

/// The lexical rules that differ between the databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// MySQL / MariaDB: `'…'` and `"…"` are strings with backslash escapes, `` `…` `` quotes an
    /// identifier, `#` starts a comment.
    Mysql,
    /// PostgreSQL: `'…'` is a string without backslash escapes (unless `E'…'`), `"…"` quotes an
    /// identifier, `$tag$…$tag$` is a dollar-quoted string, `$1` a parameter, `#` an operator.
    Postgres,
}

/// Normalise `text` (possibly a cut prefix of a statement, possibly not UTF-8) into at most
/// `max` bytes of UTF-8, with MySQL's lexical rules.
pub fn normalise(text: &[u8], max: usize) -> String {
    normalise_dialect(text, max, Dialect::Mysql)
}

/// Normalise `text` as [`normalise`] does, with the lexical rules of `dialect`.
pub fn normalise_dialect(text: &[u8], max: usize, dialect: Dialect) -> String {
    let pg = dialect == Dialect::Postgres;
    // Work on a little more than `max` so collapsed lists still fill the bound.
    let budget = max.saturating_mul(4);
    let mut out: Vec<u8> = Vec::with_capacity(text.len().min(budget) + 1);
    let n = text.len();
    let mut i = 0;
    let mut space = false;
    let push = |out: &mut Vec<u8>, space: &mut bool, b: &[u8]| {
        if *space && !out.is_empty() {
            out.push(b' ');
        }
        *space = false;
        out.extend_from_slice(b);
    };
    while i < n && out.len() < budget {
        let b = text[i];
        let next = text.get(i + 1).copied();
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                space = true;
                i += 1;
            }
            b'"' if pg => {
                let end = skip_quoted(text, i, false);
                push(&mut out, &mut space, &text[i..end]);
                i = end;
            }
            b'$' if pg && (space || !out.last().is_some_and(|p| ident(*p))) => {
                match dollar_quoted(text, i) {
                    Some(end) => {
                        i = end;
                        push(&mut out, &mut space, b"?");
                    }
                    None => {
                        push(&mut out, &mut space, b"$");
                        i += 1;
                    }
                }
            }
            b'\'' | b'"' => {
                // A prefix making it a hex, bit, national or escape string: X'..', b'..',
                // N'..', E'..' (PostgreSQL).
                let prefixed = out.last().is_some_and(|&p| {
                    !space
                        && (matches!(p, b'x' | b'X' | b'b' | b'B' | b'n' | b'N')
                            || (pg && matches!(p, b'e' | b'E')))
                        && !out.len().checked_sub(2).is_some_and(|j| ident(out[j]))
                });
                let escapes = !pg || (prefixed && matches!(out.last(), Some(b'e' | b'E')));
                i = skip_quoted(text, i, escapes);
                if prefixed {
                    out.pop();
                }
                push(&mut out, &mut space, b"?");
            }
            b'`' if !pg => {
                let end = text[i + 1..]
                    .iter()
                    .position(|c| *c == b'`')
                    .map_or(n, |p| i + 1 + p + 1);
                push(&mut out, &mut space, &text[i..end]);
                i = end;
            }
            b'/' if next == Some(b'*') => {
                i = text[i + 2..]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(n, |p| i + 2 + p + 2);
                space = true;
            }
            b'-' if next == Some(b'-')
                && text.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                i = line_end(text, i);
                space = true;
            }
            b'#' if !pg => {
                i = line_end(text, i);
                space = true;
            }
            b'0'..=b'9' if !out.last().is_some_and(|p| ident(*p)) || space => {
                i = skip_number(text, i);
                push(&mut out, &mut space, b"?");
            }
            b'.' if next.is_some_and(|c| c.is_ascii_digit())
                && (space || !out.last().is_some_and(|p| ident(*p) || *p == b'`')) =>
            {
                i = skip_number(text, i);
                push(&mut out, &mut space, b"?");
            }
            _ => {
                push(&mut out, &mut space, &[b]);
                i += 1;
            }
        }
    }
    let out = collapse_in_lists(&out);
    let mut s = String::from_utf8_lossy(&out).into_owned();
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn line_end(text: &[u8], i: usize) -> usize {
    text[i..]
        .iter()
        .position(|c| *c == b'\n')
        .map_or(text.len(), |p| i + p + 1)
}

/// End of the quoted string starting at `i` (doubled quotes, and backslash escapes when
/// `escapes`).
fn skip_quoted(text: &[u8], i: usize, escapes: bool) -> usize {
    let q = text[i];
    let mut j = i + 1;
    while j < text.len() {
        match text[j] {
            b'\\' if escapes => j += 2,
            c if c == q => {
                if text.get(j + 1) == Some(&q) {
                    j += 2;
                } else {
                    return j + 1;
                }
            }
            _ => j += 1,
        }
    }
    text.len()
}

/// End of the dollar-quoted string (`$$…$$`, `$tag$…$tag$`) starting at `i`, if one starts
/// there (an unterminated one runs to the end). `$1` is a parameter, not a quote.
fn dollar_quoted(text: &[u8], i: usize) -> Option<usize> {
    let rest = &text[i + 1..];
    let tag_len = rest
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || *c >= 0x80))?;
    if rest[tag_len] != b'$' || rest.first().is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    let delim = &text[i..i + tag_len + 2];
    let body = i + delim.len();
    Some(
        text[body..]
            .windows(delim.len())
            .position(|w| w == delim)
            .map_or(text.len(), |p| body + p + delim.len()),
    )
}

/// End of the number starting at `i`: `0x…`, `0b…`, digits with a fraction and an exponent.
fn skip_number(text: &[u8], i: usize) -> usize {
    let at = |j: usize| text.get(j).copied().unwrap_or(0);
    let mut j = i;
    if at(j) == b'0' && matches!(at(j + 1), b'x' | b'X') {
        j += 2;
        while at(j).is_ascii_hexdigit() {
            j += 1;
        }
        return j;
    }
    if at(j) == b'0' && matches!(at(j + 1), b'b' | b'B') && matches!(at(j + 2), b'0' | b'1') {
        j += 2;
        while matches!(at(j), b'0' | b'1') {
            j += 1;
        }
        return j;
    }
    while at(j).is_ascii_digit() {
        j += 1;
    }
    if at(j) == b'.' {
        j += 1;
        while at(j).is_ascii_digit() {
            j += 1;
        }
    }
    if matches!(at(j), b'e' | b'E')
        && (at(j + 1).is_ascii_digit()
            || (matches!(at(j + 1), b'+' | b'-') && at(j + 2).is_ascii_digit()))
    {
        j += 2;
        while at(j).is_ascii_digit() {
            j += 1;
        }
    }
    // `1abc` is an identifier in MySQL; keep its letters as they are (the digits are gone).
    j
}

/// `IN (?, ?, ?)` → `IN (?)` (case-insensitive `IN`, any spacing).
fn collapse_in_lists(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'('
            && preceded_by_in(&out)
            && let Some(end) = placeholder_list(s, i)
        {
            out.extend_from_slice(b"(?)");
            i = end;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn preceded_by_in(out: &[u8]) -> bool {
    let t = out.strip_suffix(b" ").unwrap_or(out);
    t.len() >= 2
        && t[t.len() - 2..].eq_ignore_ascii_case(b"in")
        && (t.len() == 2 || !ident(t[t.len() - 3]))
}

/// If `s[i..]` is `( ? , ? … )`, the index after the `)`.
fn placeholder_list(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    let skip_sp = |j: &mut usize| {
        while s.get(*j) == Some(&b' ') {
            *j += 1;
        }
    };
    loop {
        skip_sp(&mut j);
        if s.get(j) != Some(&b'?') {
            return None;
        }
        j += 1;
        skip_sp(&mut j);
        match s.get(j) {
            Some(b',') => j += 1,
            Some(b')') => return Some(j + 1),
            _ => return None,
        }
    }
}

/// Statement kinds reported as the operation; anything else is `OTHER`.
const KINDS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "REPLACE",
    "BEGIN",
    "START",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "SET",
    "SHOW",
    "CREATE",
    "DROP",
    "ALTER",
    "TRUNCATE",
    "RENAME",
    "CALL",
    "USE",
    "WITH",
    "EXPLAIN",
    "DESCRIBE",
    "DESC",
    "GRANT",
    "REVOKE",
    "LOCK",
    "UNLOCK",
    "LOAD",
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
    "DO",
    "HANDLER",
    "ANALYZE",
    "OPTIMIZE",
    "CHECK",
    "REPAIR",
    "FLUSH",
    "KILL",
    "XA",
    "VALUES",
    "TABLE",
    "COPY",
    "LISTEN",
    "NOTIFY",
    "UNLISTEN",
    "VACUUM",
    "DECLARE",
    "FETCH",
    "CLOSE",
    "MOVE",
    "MERGE",
    "DISCARD",
    "RESET",
    "END",
    "ABORT",
    "COMMENT",
    "REFRESH",
    "REINDEX",
    "CLUSTER",
];

/// The statement kind: its first keyword uppercased when it is one of [`KINDS`], else `OTHER`.
pub fn kind(text: &str) -> &'static str {
    let t = text.trim_start_matches(|c: char| c == '(' || c.is_whitespace());
    let word = t
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    KINDS
        .iter()
        .find(|k| k.eq_ignore_ascii_case(word))
        .copied()
        .unwrap_or("OTHER")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalise(s.as_bytes(), 1024)
    }

    #[test]
    fn literals_become_placeholders() {
        assert_eq!(
            n("SELECT * FROM t WHERE id = 42 AND name = 'bob'"),
            "SELECT * FROM t WHERE id = ? AND name = ?"
        );
        assert_eq!(
            n("select  a,\n\tb from t1 where x=-3.5e10 and y=\"it''s\" and z = 0xFF"),
            "select a, b from t1 where x=-? and y=? and z = ?"
        );
        assert_eq!(n(r"SELECT 'a\'b', X'0A', .5"), "SELECT ?, ?, ?");
        assert_eq!(
            n("SELECT `col 1`, t2.c3 FROM db1.t2"),
            "SELECT `col 1`, t2.c3 FROM db1.t2"
        );
        assert_eq!(n("SELECT 1 /* hint 5 */ -- c\n, 2 # x"), "SELECT ? , ?");
        assert_eq!(
            n("INSERT INTO t VALUES (?, ?)"),
            "INSERT INTO t VALUES (?, ?)"
        );
        assert_eq!(n("  \n"), "");
    }

    #[test]
    fn in_lists_collapse() {
        assert_eq!(
            n("SELECT * FROM t WHERE id IN (1, 2, 3) AND s in('a','b')"),
            "SELECT * FROM t WHERE id IN (?) AND s in(?)"
        );
        assert_eq!(
            n("SELECT * FROM t WHERE id IN (?,?)"),
            "SELECT * FROM t WHERE id IN (?)"
        );
        assert_eq!(n("SELECT f IN (a, 1)"), "SELECT f IN (a, ?)");
        assert_eq!(n("SELECT min(1, 2)"), "SELECT min(?, ?)");
    }

    #[test]
    fn bounded_and_utf8() {
        let long = format!("SELECT '{}', é{}", "x".repeat(5000), "é".repeat(2000));
        let s = normalise(long.as_bytes(), 1024);
        assert!(s.len() <= 1024);
        assert!(s.starts_with("SELECT ?, é"));
        let s = normalise(b"SELECT \xff\xfe 'unterminated", 1024);
        assert_eq!(s, "SELECT \u{fffd}\u{fffd} ?");
    }

    fn pg(s: &str) -> String {
        normalise_dialect(s.as_bytes(), 1024, Dialect::Postgres)
    }

    #[test]
    fn postgres_dialect() {
        assert_eq!(
            pg(r#"SELECT "Name", 'it''s', E'a\'b', $1 FROM "T" WHERE x = 3 # 1"#),
            r#"SELECT "Name", ?, ?, $1 FROM "T" WHERE x = ? # ?"#
        );
        assert_eq!(pg(r"SELECT 'a\', 2"), "SELECT ?, ?");
        assert_eq!(
            pg("SELECT $$it's$$, $fn$ body $1 $fn$, $2::int IN ($3, $4)"),
            "SELECT ?, ?, $2::int IN ($3, $4)"
        );
        assert_eq!(
            pg("select * from t where id in (1, 2) -- c\n"),
            "select * from t where id in (?)"
        );
        assert_eq!(pg("SELECT $$unterminated"), "SELECT ?");
    }

    #[test]
    fn kinds() {
        assert_eq!(kind("select 1"), "SELECT");
        assert_eq!(kind("(SELECT 1) UNION (SELECT 2)"), "SELECT");
        assert_eq!(kind("commit"), "COMMIT");
        assert_eq!(kind("frobnicate"), "OTHER");
        assert_eq!(kind(""), "OTHER");
    }
}
