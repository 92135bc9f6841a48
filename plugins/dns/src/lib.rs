//! DNS parser (placeholder; being written).
