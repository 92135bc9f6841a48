//! Route normalisation: a request path turned into a low-cardinality route, so
//! `/users/123` and `/users/456` are both `/users/{id}` and a metric per operation stays a
//! handful of series, not one per customer.
//!
//! Rules, per `/`-separated segment: all digits, a UUID, a hex string of 16 or more, a token of
//! 16 or more mixing letters and digits (base64, ULID and similar ids) or an e-mail address
//! become [`ID`]. At most [`MAX_SEGMENTS`] segments are kept, each cut to [`MAX_SEGMENT`]
//! bytes, and the route never exceeds [`MAX_ROUTE`] bytes; what does not fit becomes [`REST`].

/// What an identifier segment becomes.
pub const ID: &str = "{id}";
/// What replaces the segments past the limits.
pub const REST: &str = "/{rest}";
/// Segments kept.
pub const MAX_SEGMENTS: usize = 8;
/// Bytes kept of one segment.
pub const MAX_SEGMENT: usize = 64;
/// Bytes of a whole route, at most.
pub const MAX_ROUTE: usize = 256;
/// Shortest hex string or mixed token taken for an identifier.
const MIN_TOKEN_ID: usize = 16;

/// The route of `path` (a query string or fragment, if any, is dropped). Empty → `/`.
pub fn normalise(path: &str) -> String {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let path = &path[..end];
    let path = path.strip_prefix('/').unwrap_or(path);
    if path.is_empty() {
        return "/".into();
    }
    let mut out = String::with_capacity(path.len().min(MAX_ROUTE) + 1);
    for (i, segment) in path.split('/').enumerate() {
        let piece = if is_id(segment) {
            ID
        } else {
            truncate(segment, MAX_SEGMENT)
        };
        if i == MAX_SEGMENTS || out.len() + 1 + piece.len() > MAX_ROUTE - REST.len() {
            out.push_str(REST);
            break;
        }
        out.push('/');
        out.push_str(piece);
    }
    out
}

/// Does this segment name one thing among many (an id) rather than a kind of thing?
pub fn is_id(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) || is_uuid(b) || is_email(s) {
        return true;
    }
    if b.len() < MIN_TOKEN_ID {
        return false;
    }
    if b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    // base64(url), ULID, nanoid and the like.
    b.iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'+' | b'='))
        && b.iter().any(u8::is_ascii_digit)
        && b.iter().any(u8::is_ascii_alphabetic)
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `local@domain.tld`, the `@` possibly percent-encoded.
fn is_email(s: &str) -> bool {
    // Most segments have neither `@` nor `%`: one byte scan, no substring search.
    if !s.bytes().any(|b| b == b'@' || b == b'%') {
        return false;
    }
    let (local, domain) = match s.split_once('@').or_else(|| s.split_once("%40")) {
        Some(parts) => parts,
        None => return false,
    };
    !local.is_empty()
        && domain
            .rfind('.')
            .is_some_and(|dot| dot > 0 && dot + 1 < domain.len())
}

/// At most `max` bytes of `s`, cut on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_replaced() {
        let cases = [
            ("/users/123", "/users/{id}"),
            ("/users/456", "/users/{id}"),
            ("/users/456/orders/7?x=1", "/users/{id}/orders/{id}"),
            ("/o/550e8400-e29b-41d4-a716-446655440000", "/o/{id}"),
            ("/blob/deadbeefdeadbeef00", "/blob/{id}"),
            ("/u/01ARZ3NDEKTSV4RRFFQ69G5FAV", "/u/{id}"),
            ("/t/aGVsbG8gd29ybGQ1MjM0NQ==", "/t/{id}"),
            ("/people/jane.doe@example.com/x", "/people/{id}/x"),
            ("/people/jane%40example.org", "/people/{id}"),
            ("/api/v1/items", "/api/v1/items"),
            ("/static/app.min.js", "/static/app.min.js"),
            ("/cafe", "/cafe"),
            ("/deadbeef", "/deadbeef"),
            ("/shortmix1234", "/shortmix1234"),
            ("/users/", "/users/"),
        ];
        for (path, want) in cases {
            assert_eq!(normalise(path), want, "{path}");
        }
    }

    #[test]
    fn empty_and_root() {
        for p in ["", "/", "?a=1", "/?a=1", "#f"] {
            assert_eq!(normalise(p), "/", "{p:?}");
        }
        assert_eq!(normalise("a/b"), "/a/b");
    }

    #[test]
    fn bounds() {
        assert_eq!(normalise("/a/b/c/d/e/f/g/h/i/j"), "/a/b/c/d/e/f/g/h/{rest}");
        assert_eq!(normalise("/a/b/c/d/e/f/g/h"), "/a/b/c/d/e/f/g/h");
        let long = "x".repeat(100);
        assert_eq!(
            normalise(&format!("/{long}/y")),
            format!("/{}/y", "x".repeat(64))
        );
        let many = format!("/{long}").repeat(8);
        let r = normalise(&many);
        assert!(r.len() <= MAX_ROUTE, "{}", r.len());
        assert!(r.ends_with(REST), "{r}");
        // Multi-byte characters are never cut in half.
        let wide = "é".repeat(40);
        let r = normalise(&format!("/{wide}"));
        assert!(r.len() <= 65 && r.chars().all(|c| c == 'é' || c == '/'));
        for n in 0..600 {
            let p = "/ab".repeat(n);
            assert!(normalise(&p).len() <= MAX_ROUTE);
        }
    }
}
