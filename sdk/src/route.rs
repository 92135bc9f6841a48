//! Route normalisation: a request path turned into a low-cardinality route, so
//! `/users/123` and `/users/456` are both `/users/{id}` and a metric per operation stays a
//! handful of series, not one per customer.
//!
//! Rules, per `/`-separated segment: anything that does not read as a word becomes [`ID`], so
//! neither ids nor secrets put in a path (`/reset/{id}/{id}` for `/reset/7/PATHSECRET42`) reach
//! a metric label. A word is lowercase letters (digits only as a version or a short suffix:
//! `v1`, `v2beta1`, `http2`, `oauth2`) in `-`/`_`/`.`-separated parts, each with a plausible
//! vowel/consonant mix; a file name (`app.min.js`) is words too. All digits, UUIDs, hex,
//! base64/ULID-like tokens, e-mail addresses, capitals that do not start words (`PATHSECRET`,
//! `aBcD`; camel case of real words, `getUser`, `Products`, is words), letters and
//! digits interleaved (`abc123def`) and consonant runs (`xkcdqzt`) are ids; a
//! short all-letter hex word (`cafe`, `deadbeef`) reads as a word. At most [`MAX_SEGMENTS`] segments are kept, each cut to [`MAX_SEGMENT`]
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

/// Does this segment name one thing among many (an id, or a secret) rather than a kind of
/// thing? Everything that does not read as a word is taken for one.
pub fn is_id(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) || is_uuid(b) || is_email(s) {
        return true;
    }
    if b.len() >= MIN_TOKEN_ID && b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    !is_word_segment(s)
}

/// Short words that are not dictionary words but name kinds of things in APIs.
const API_WORDS: &[&str] = &[
    "amd64", "api", "arm64", "asp", "aspx", "bin", "cdn", "cfg", "cgi", "cjs", "cli", "css", "csv",
    "db", "dist", "dns", "env", "eot", "fs", "gif", "gql", "grpc", "gz", "h2", "h2c", "healthz",
    "htm", "html", "http2", "ico", "id", "ids", "img", "ip", "jpg", "js", "json", "jsp", "jwt",
    "k8s", "lib", "livez", "map", "md", "me", "metrics", "mfa", "mjs", "mp3", "mp4", "my", "npm",
    "oauth", "oauth2", "openid", "otp", "pdf", "php", "ping", "pkg", "png", "readyz", "rest",
    "rpc", "rss", "s3", "saml", "scim", "sdk", "sql", "src", "ssl", "sso", "svg", "tar", "tcp",
    "tls", "tmp", "ts", "ttf", "txt", "udp", "ui", "utf8", "wasm", "webp", "woff", "woff2", "ws",
    "wss", "www", "x86", "xml", "yaml", "yml", "zip",
];

/// Lowercase words, `-`, `_` or `.` between them (`app.min.js`, `user_profile`, `v1`,
/// `well-known`, `.well-known`), each plausible: see [`is_word`].
fn is_word_segment(s: &str) -> bool {
    // A leading dot (`.well-known`, `.env`) and a `~` before a user name are path syntax.
    let s = s.strip_prefix(['.', '~']).unwrap_or(s);
    // `%`-escapes, `+`, `=`, upper case and the like are never a word.
    !s.is_empty()
        && s.split(['-', '_', '.'])
            .all(|w| w.is_empty() || is_word(w) || is_camel_words(w))
        && s.bytes().any(|c| c.is_ascii_alphabetic())
}

/// One lowercase word: an API word (`api`, `k8s`), a version (`v1`, `v2beta1`), up to 3
/// letters, or letters with a vowel, no run of 6 consonants or 4 vowels, and at most a 1-digit suffix (`http2`,
/// `s3`, `page2`).
fn is_word(w: &str) -> bool {
    // The plain test first: it settles almost every segment of a real path in a few byte
    // comparisons; the word list and versions only for what it refuses (binary search:
    // [`API_WORDS`] is sorted, a test checks it).
    plain_word(w) || is_version(w) || API_WORDS.binary_search(&w).is_ok()
}

/// Lowercase letters with a vowel and a plausible mix (or up to 3 letters), and at most a
/// 1-digit suffix.
fn plain_word(w: &str) -> bool {
    let b = w.as_bytes();
    let letters = b
        .iter()
        .position(|c| !c.is_ascii_lowercase())
        .unwrap_or(b.len());
    let (alpha, digits) = b.split_at(letters);
    if alpha.is_empty() || digits.len() > 1 || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    // Short abbreviations (`lf`, `cgi`, `rss`) need no vowel.
    if alpha.len() <= 3 {
        return true;
    }
    let vowel = |c: &u8| matches!(c, b'a' | b'e' | b'i' | b'o' | b'u' | b'y');
    if !alpha.iter().any(vowel) {
        return false;
    }
    let (mut consonants, mut vowels) = (0, 0);
    for c in alpha {
        if vowel(c) {
            (consonants, vowels) = (0, vowels + 1);
        } else {
            (consonants, vowels) = (consonants + 1, 0);
        }
        if consonants >= 6 || vowels >= 4 {
            return false;
        }
    }
    true
}

/// Camel or Pascal case of words (`getUser`, `Products`, `userProfileImage`): each capital
/// starts a run of lowercase letters, each run a word of at least 3 letters, one of them at
/// least 4. Capitals in a row (`PATHSECRET`) or short runs (`aBcD`, `AbCdEf`) are not words.
fn is_camel_words(w: &str) -> bool {
    let b = w.as_bytes();
    if !b.iter().all(u8::is_ascii_alphabetic) || !b.iter().any(u8::is_ascii_uppercase) {
        return false;
    }
    let mut long_run = false;
    let mut start = 0;
    while start < b.len() {
        let end = b[start + 1..]
            .iter()
            .position(u8::is_ascii_uppercase)
            .map_or(b.len(), |i| start + 1 + i);
        let run = w[start..end].to_ascii_lowercase();
        // The run after its capital (or the leading lowercase run) is lowercase by the split;
        // a capital right after a capital leaves a run of one letter.
        if run.len() < 3 || !is_word(&run) {
            return false;
        }
        long_run |= run.len() >= 4;
        start = end;
    }
    long_run
}

/// `v1`, `v2`, `v1beta1`, `v2alpha`, `v10`.
fn is_version(w: &str) -> bool {
    let Some(rest) = w.strip_prefix('v') else {
        return false;
    };
    let n = rest
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    if n == 0 || n > 2 {
        return false;
    }
    let tail = &rest[n..];
    ["", "alpha", "beta"].iter().any(|p| {
        tail.strip_prefix(p)
            .is_some_and(|d| d.len() <= 2 && d.bytes().all(|c| c.is_ascii_digit()))
            && (p.is_empty() == tail.is_empty())
    })
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
    fn the_word_list_is_sorted_for_binary_search() {
        assert!(API_WORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(API_WORDS.iter().all(|w| is_word(w)));
    }

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
            ("/users/", "/users/"),
            // Not words: short secrets and ids are replaced too.
            ("/reset/x/PATHSECRET42", "/reset/x/{id}"),
            (
                "/reset/123/PATHSECRET42?token=QUERYSECRET",
                "/reset/{id}/{id}",
            ),
            ("/api/v1/users/123", "/api/v1/users/{id}"),
            ("/orders/abc123def", "/orders/{id}"),
            ("/shortmix1234", "/{id}"),
            ("/deadbeef", "/deadbeef"),
            ("/k/Hunter2", "/k/{id}"),
            ("/s/aB3x", "/s/{id}"),
            ("/s/xkcdqzt", "/s/{id}"),
            ("/s/qwrtpsdf", "/s/{id}"),
            ("/s/a%2Fb", "/s/{id}"),
            ("/s/aaaa-bbbb", "/s/{id}"),
            ("/s/zzzz", "/s/{id}"),
            ("/s/AbCdEfGh", "/s/{id}"),
            ("/s/PathSECRET", "/s/{id}"),
            ("/s/XyzAbc", "/s/{id}"),
            // Words, API words, versions and file names stay.
            ("/health", "/health"),
            ("/healthz", "/healthz"),
            ("/static/app.js", "/static/app.js"),
            ("/index.html", "/index.html"),
            ("/favicon.ico", "/favicon.ico"),
            (
                "/.well-known/openid-configuration",
                "/.well-known/openid-configuration",
            ),
            ("/api/v2beta1/user_profiles", "/api/v2beta1/user_profiles"),
            ("/apis/apps/v1/namespaces", "/apis/apps/v1/namespaces"),
            ("/oauth2/authorize", "/oauth2/authorize"),
            ("/shop/books/items", "/shop/books/items"),
            ("/checkout/cart/page2", "/checkout/cart/page2"),
            ("/search/strengths", "/search/strengths"),
            ("/x", "/x"),
            // Camel and Pascal case of words stay.
            ("/api/getUser", "/api/getUser"),
            ("/Products/42", "/Products/{id}"),
            ("/v1/userProfileImage", "/v1/userProfileImage"),
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
        let long = "wo".repeat(50);
        assert_eq!(
            normalise(&format!("/{long}/y")),
            format!("/{}/y", "wo".repeat(32))
        );
        let many = format!("/{long}").repeat(8);
        let r = normalise(&many);
        assert!(r.len() <= MAX_ROUTE, "{}", r.len());
        assert!(r.ends_with(REST), "{r}");
        // Multi-byte characters are never cut in half (and are no word: an id).
        let wide = "é".repeat(40);
        assert_eq!(normalise(&format!("/{wide}")), "/{id}");
        assert_eq!(truncate(&wide, 65), "é".repeat(32));
        for n in 0..600 {
            let p = "/ab".repeat(n);
            assert!(normalise(&p).len() <= MAX_ROUTE);
        }
    }
}
