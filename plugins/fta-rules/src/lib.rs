//! Sonde's default fault tree (placeholder; being written).
