//! `sonde-sdk`: what a Sonde plugin author depends on.
//!
//! Each WIT world of the `sonde:plugin` package (see `wit/`) has a module here with plain Rust
//! types and a trait. An author implements the trait and calls the world's export macro once;
//! the macro generates the WebAssembly component glue when built for `wasm32-wasip2` and
//! nothing otherwise, so the same code runs natively in tests without a Wasm runtime.
//!
//! The daemon (`sonde`) and the analysis engine use the same types, so a rule's input and
//! output mean exactly the same thing on both sides of the sandbox.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod fault_rule;

/// The version of the `sonde:plugin` WIT package this SDK implements.
pub const WIT_PACKAGE_VERSION: &str = "0.1.0";
