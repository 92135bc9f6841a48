//! `sonde-sdk`: what a Sonde plugin author depends on.
//!
//! Each WIT world of the `sonde:plugin` package (`wit/` in this crate) has a module here with
//! plain Rust types and a trait. An author implements the trait and calls the world's export
//! macro once; the macro generates the WebAssembly component glue when built for
//! `wasm32-wasip2` and nothing otherwise, so the same code runs natively in tests without a
//! Wasm runtime.
//!
//! The daemon (`sonde`) and the analysis engine use the same types, so a rule's input and
//! output mean exactly the same thing on both sides of the sandbox.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod attributes;
pub mod fault_rule;
pub mod h2c;
pub mod protocol_parser;
pub mod route;
pub mod sql;

/// The version of the `sonde:plugin` WIT package this SDK implements.
pub const WIT_PACKAGE_VERSION: &str = "0.1.0";

/// The wit-bindgen glue of the `fault-rule` world. Only on wasm32; use
/// [`export_fault_rule!`] instead of touching it.
#[cfg(all(target_arch = "wasm32", feature = "fault-rule"))]
#[doc(hidden)]
pub mod __fault_rule_bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "configurable-fault-rule",
        pub_export_macro: true,
        export_macro_name: "__export_fault_rule_world",
        default_bindings_module: "sonde_sdk::__fault_rule_bindings",
    });
}

/// Export a [`fault_rule::FaultRule`] implementation as the component's
/// `configurable-fault-rule` world: the `fault-rule` world plus `parameters` and `configure`
/// (a rule without parameters declares none and refuses any). Needs the SDK feature
/// `fault-rule` (on by default; with `default-features = false`, ask for it alone so the
/// component carries no other world's imports).
///
/// ```
/// use sonde_sdk::fault_rule::{Diagnosis, FaultRule, RuleInfo, RuleInput};
///
/// struct MyRule;
///
/// impl FaultRule for MyRule {
///     fn info() -> RuleInfo {
///         RuleInfo { name: "my-rule".into(), version: "1.0.0".into(), categories: vec![] }
///     }
///     fn evaluate(_input: &RuleInput) -> Vec<Diagnosis> {
///         Vec::new()
///     }
/// }
///
/// sonde_sdk::export_fault_rule!(MyRule);
/// # assert_eq!(MyRule::info().name, "my-rule");
/// ```
///
/// On native targets it expands to nothing, so the crate also builds as a plain library for
/// tests.
#[macro_export]
macro_rules! export_fault_rule {
    ($rule:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __SondeFaultRule;
            impl $crate::__fault_rule_bindings::Guest for __SondeFaultRule {
                fn info() -> $crate::__fault_rule_bindings::sonde::plugin::fault_types::RuleInfo {
                    $crate::fault_rule::wit::info_to_wit(<$rule as $crate::fault_rule::FaultRule>::info())
                }
                fn evaluate(
                    inputs: ::std::vec::Vec<$crate::__fault_rule_bindings::sonde::plugin::fault_types::RuleInput>,
                ) -> ::std::vec::Vec<::std::vec::Vec<$crate::__fault_rule_bindings::sonde::plugin::fault_types::Diagnosis>> {
                    $crate::fault_rule::wit::evaluate::<$rule>(inputs)
                }
                fn parameters() -> ::std::vec::Vec<$crate::__fault_rule_bindings::sonde::plugin::fault_params::RuleParams> {
                    $crate::fault_rule::wit::parameters::<$rule>()
                }
                fn configure(
                    settings: ::std::vec::Vec<(::std::string::String, ::std::vec::Vec<(::std::string::String, f64)>)>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::fault_rule::wit::configure::<$rule>(settings)
                }
            }
            $crate::__fault_rule_bindings::__export_fault_rule_world!(__SondeFaultRule with_types_in $crate::__fault_rule_bindings);
        };
    };
}

/// The wit-bindgen glue of the `protocol-parser` world. Only on wasm32; use
/// [`export_protocol_parser!`].
#[cfg(all(target_arch = "wasm32", feature = "protocol-parser"))]
#[doc(hidden)]
pub mod __protocol_parser_bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "protocol-parser",
        pub_export_macro: true,
        export_macro_name: "__export_protocol_parser_world",
        default_bindings_module: "sonde_sdk::__protocol_parser_bindings",
    });
}

/// Export a [`protocol_parser::ProtocolParser`] as the component's `protocol-parser` world.
/// Needs the SDK feature `protocol-parser` (on by default).
/// The component keeps one [`protocol_parser::Driver`] (the connection table) for its life.
/// On native targets it expands to nothing; test with `protocol_parser::harness` (SDK feature
/// `harness`, for `[dev-dependencies]`).
#[macro_export]
macro_rules! export_protocol_parser {
    ($parser:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__protocol_parser_bindings::sonde::plugin::parser_types as __w;
            // A component instance is single-threaded; the mutex only satisfies `static`.
            static DRIVER: ::std::sync::Mutex<$crate::protocol_parser::Driver<$parser>> =
                ::std::sync::Mutex::new($crate::protocol_parser::Driver::new());
            fn driver() -> ::std::sync::MutexGuard<'static, $crate::protocol_parser::Driver<$parser>> {
                DRIVER.lock().unwrap_or_else(|e| e.into_inner())
            }
            struct __SondeParser;
            impl $crate::__protocol_parser_bindings::Guest for __SondeParser {
                fn info() -> __w::ParserInfo {
                    $crate::protocol_parser::wit::info_to_wit(<$parser as $crate::protocol_parser::ProtocolParser>::info())
                }
                fn opened(conns: ::std::vec::Vec<__w::ConnInfo>) {
                    let mut d = driver();
                    for c in conns {
                        d.open($crate::protocol_parser::wit::conn_from_wit(c));
                    }
                }
                fn feed(batch: __w::SegmentBatch) -> __w::FeedResult {
                    $crate::protocol_parser::wit::feed(&mut driver(), batch)
                }
                fn closed(conns: ::std::vec::Vec<u64>) -> __w::FeedResult {
                    $crate::protocol_parser::wit::close(&mut driver(), conns)
                }
            }
            $crate::__protocol_parser_bindings::__export_protocol_parser_world!(__SondeParser with_types_in $crate::__protocol_parser_bindings);
        };
    };
}
