//! Statement text: normalisation (literals → `?`, comments dropped, whitespace collapsed,
//! `IN (?, ?, …)` → `IN (?)`, bounded) and the statement kind (its first keyword). The SDK's
//! [`sonde_sdk::sql`], with MySQL's lexical rules; tested there.

pub use sonde_sdk::sql::{kind, normalise};
