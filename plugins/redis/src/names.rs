//! What a command and an error reply are called: bounded-cardinality names for metrics, and a
//! query text without the arguments (keys and values may be personal data).

use crate::QUERY_MAX;

/// Longest command, subcommand or error code taken as a name.
pub(crate) const NAME_MAX: usize = 32;

/// Commands whose first argument is a subcommand: the operation is both words
/// (`CLIENT SETNAME`, `CONFIG GET`), as Redis itself names them in `COMMAND DOCS`.
const CONTAINERS: &[&str] = &[
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION", "LATENCY", "MEMORY",
    "MODULE", "OBJECT", "PUBSUB", "SCRIPT", "SENTINEL", "SLOWLOG", "XGROUP", "XINFO",
];

/// After one of these succeeds the connection stops being request/response: pub/sub
/// messages, a `MONITOR` feed or a replication stream follow.
const SWITCHES: &[&str] = &["SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR", "PSYNC"];

/// Old replicas' `SYNC`: its reply is the RDB file as a bulk string without the final CRLF,
/// then the replication stream. Nothing to pair: the connection is done when it is sent.
pub(crate) const SYNC: &str = "SYNC";

/// The operation of an unnamable command (binary or overlong name).
pub(crate) const UNKNOWN: &str = "UNKNOWN";

/// A command, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name {
    /// `GET`, `CLIENT SETNAME`.
    pub operation: String,
    /// The operation with each remaining argument replaced by `?`, at most [`QUERY_MAX`] bytes.
    pub query: String,
    /// Whether it is one of the mode switches (`SUBSCRIBE`…).
    pub switches: bool,
}

/// Names a command from its first words (as the scanner kept them) and argument count.
pub(crate) fn command(words: &[Vec<u8>], argc: u64) -> Name {
    let Some(mut operation) = words.first().and_then(|w| word(w)) else {
        // Still one `?` per argument: the shape of what was sent, nothing of its content.
        return Name {
            operation: UNKNOWN.into(),
            query: query("?", 1, argc),
            switches: false,
        };
    };
    let mut named = 1;
    if CONTAINERS.contains(&operation.as_str())
        && let Some(sub) = words.get(1).and_then(|w| word(w))
    {
        operation.push(' ');
        operation.push_str(&sub);
        named = 2;
    }
    let switches = SWITCHES.contains(&operation.as_str());
    Name {
        query: query(&operation, named, argc),
        operation,
        switches,
    }
}

/// `head` then ` ?` for each argument after the first `named`, whole tokens up to
/// [`QUERY_MAX`] bytes (an `MSET` of 10 000 keys stays one short line).
fn query(head: &str, named: u64, argc: u64) -> String {
    let mut q = head.to_string();
    for _ in named..argc {
        if q.len() + 2 > QUERY_MAX {
            break;
        }
        q.push_str(" ?");
    }
    q
}

/// A command or subcommand name, uppercased; `None` if it does not look like one (module
/// commands have dots: `FT.SEARCH`; Sentinel's subcommands dashes).
fn word(w: &[u8]) -> Option<String> {
    let ok = (1..=NAME_MAX).contains(&w.len())
        && w[0].is_ascii_alphabetic()
        && w.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._-|".contains(b));
    ok.then(|| String::from_utf8_lossy(w).to_ascii_uppercase())
}

/// The code of an error reply: its first word when that is an uppercase code, as Redis
/// writes them (`ERR`, `WRONGTYPE`, `MOVED`, `NOAUTH`…); else the generic `ERR`.
pub(crate) fn error_code(text: &[u8]) -> String {
    let first = text.split(|&b| b == b' ').next().unwrap_or_default();
    let ok = (1..=NAME_MAX).contains(&first.len())
        && first[0].is_ascii_uppercase()
        && first
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
    if ok {
        String::from_utf8_lossy(first).into_owned()
    } else {
        "ERR".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[&str]) -> Vec<Vec<u8>> {
        ws.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn one_and_two_word_operations() {
        let n = command(&words(&["get", "user:1"]), 2);
        assert_eq!(
            (n.operation.as_str(), n.query.as_str(), n.switches),
            ("GET", "GET ?", false)
        );
        let n = command(&words(&["CLIENT", "setname", "app"]), 3);
        assert_eq!(
            (n.operation.as_str(), n.query.as_str()),
            ("CLIENT SETNAME", "CLIENT SETNAME ?")
        );
        // A container with a bad subcommand is named by itself.
        assert_eq!(command(&words(&["config", "%%"]), 2).operation, "CONFIG");
        assert_eq!(
            command(&words(&["FT.SEARCH", "idx"]), 3).query,
            "FT.SEARCH ? ?"
        );
        assert!(command(&words(&["psubscribe", "news.*"]), 2).switches);
    }

    #[test]
    fn unnamable_commands_and_bounded_query() {
        let n = command(&[vec![0xff, 0x01]], 3);
        assert_eq!((n.operation.as_str(), n.query.as_str()), (UNKNOWN, "? ? ?"));
        assert_eq!(command(&[], 0).operation, UNKNOWN);
        assert_eq!(command(&[vec![b'a'; NAME_MAX + 1]], 1).operation, UNKNOWN);
        let q = command(&words(&["MSET", "k"]), 1_000_000).query;
        assert!(
            q.len() <= QUERY_MAX && q.len() > QUERY_MAX - 2 && q.ends_with(" ?"),
            "{q}"
        );
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            error_code(b"WRONGTYPE Operation against a key"),
            "WRONGTYPE"
        );
        assert_eq!(error_code(b"MOVED 3999 127.0.0.1:6381"), "MOVED");
        assert_eq!(error_code(b"ERR"), "ERR");
        assert_eq!(error_code(b"Error: lowercase"), "ERR");
        assert_eq!(error_code(b""), "ERR");
    }
}
