//! MySQL parser (placeholder; being written).
