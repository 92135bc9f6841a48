//! Trace context from record attributes.
//!
//! Protocol parsers (Wasm plugins) pass HTTP trace headers through as record attributes with their
//! raw values, keyed by lower-case header name: `traceparent`, `tracestate` (W3C Trace Context
//! Level 1), `b3` (B3 single header) and `x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`,
//! `x-b3-sampled`, `x-b3-flags` (B3 multiple headers). [`from_attrs`] turns them into one
//! normalised [`TraceContext`].
//!
//! Rules, in order of precedence:
//!
//! 1. A valid W3C `traceparent` wins. Version `00` must be exactly
//!    `00-{32 hex}-{16 hex}-{2 hex}` (55 characters); a higher version (not `ff`) is parsed the
//!    same way and may carry more fields after the flags (`-` must follow them). Hex must be
//!    lower-case, neither id may be all zeros, `sampled` is bit 0 of the flags. Surrounding
//!    spaces and tabs (OWS) are trimmed. Two different `traceparent` values make it invalid
//!    (the spec's test suite treats a duplicated header as invalid). `tracestate` is carried only
//!    here: values from repeated attributes are joined with `,`, trimmed, and dropped when empty,
//!    longer than [`MAX_TRACESTATE_LEN`] characters (the spec lets a vendor drop rather than
//!    truncate) or not printable ASCII.
//! 2. Otherwise a `b3` single header carrying ids: `{TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`.
//!    The header is taken as a whole: any malformed field makes it invalid.
//! 3. Otherwise the `x-b3-*` headers, which need both `x-b3-traceid` and `x-b3-spanid`; a
//!    malformed `x-b3-parentspanid` is ignored. A sampling-only `b3` header (`0`, `1` or `d`)
//!    supplies the sampling decision here.
//!
//! B3 trace ids are 16 or 32 lower-case hex digits; 64-bit ids are left-padded with zeros to 128
//! bits, as the B3 spec says for interoperability with W3C. Span ids are 16 lower-case hex digits;
//! no id may be all zeros. Invalid input is never an error: it just yields no context.

use serde::{Deserialize, Serialize};
use sonde_sdk::attributes as attr;

/// Record attribute the daemon adds with the trace id of a record's trace context.
pub const ATTR_TRACE_ID: &str = attr::TRACE_ID;
/// Record attribute the daemon adds with the span id of a record's trace context.
pub const ATTR_SPAN_ID: &str = attr::SPAN_ID;

/// Longest `tracestate` (in characters, after combining and trimming) that is carried; a longer
/// one is dropped whole.
pub const MAX_TRACESTATE_LEN: usize = 512;

/// Which propagation format the context came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TraceFormat {
    /// W3C Trace Context (`traceparent`, `tracestate`).
    #[serde(rename = "w3c")]
    W3c,
    /// B3 single header (`b3`).
    #[serde(rename = "b3")]
    B3Single,
    /// B3 multiple headers (`x-b3-*`).
    #[serde(rename = "b3multi")]
    B3Multi,
}

impl TraceFormat {
    /// The serialised name: `"w3c"`, `"b3"` or `"b3multi"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TraceFormat::W3c => "w3c",
            TraceFormat::B3Single => "b3",
            TraceFormat::B3Multi => "b3multi",
        }
    }
}

/// A normalised trace context taken from a record's trace headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// 32 lower-case hex digits (B3's 64-bit ids are left-padded with zeros, as the B3 spec says
    /// for interop with W3C).
    pub trace_id: String,
    /// 16 lower-case hex digits: the span id the caller sent (the parent of the server's span).
    pub span_id: String,
    /// 16 lower-case hex digits: the caller's parent span, which only B3 carries.
    pub parent_span_id: Option<String>,
    /// None when the sender deferred the decision.
    pub sampled: Option<bool>,
    /// The W3C `tracestate`, trimmed; never set for B3.
    pub tracestate: Option<String>,
    pub format: TraceFormat,
}

impl TraceContext {
    /// Labels for an OpenMetrics exemplar: `trace_id` and `span_id` (63 characters together, well
    /// under the 128-character limit on an exemplar's label set).
    pub fn exemplar_labels(&self) -> [(&'static str, &str); 2] {
        [
            (ATTR_TRACE_ID, self.trace_id.as_str()),
            (ATTR_SPAN_ID, self.span_id.as_str()),
        ]
    }
}

/// Builds the trace context from a record's attributes (header name → raw value). Attribute names
/// are matched ignoring ASCII case; unrelated attributes are ignored. Returns `None` when no valid
/// context is present (including a sampling-only `b3` header on its own).
pub fn from_attrs<'a>(attrs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<TraceContext> {
    let mut h = Headers::default();
    for (key, value) in attrs {
        h.add(key, value);
    }
    h.resolve()
}

/// One single-valued header: the first value wins, except for `traceparent` where a differing
/// second value makes the header invalid.
#[derive(Default)]
enum Slot<'a> {
    #[default]
    Absent,
    One(&'a str),
    Conflict,
}

#[derive(Default)]
struct Headers<'a> {
    traceparent: Slot<'a>,
    tracestate: Vec<&'a str>,
    b3: Option<&'a str>,
    x_trace_id: Option<&'a str>,
    x_span_id: Option<&'a str>,
    x_parent_span_id: Option<&'a str>,
    x_sampled: Option<&'a str>,
    x_flags: Option<&'a str>,
}

impl<'a> Headers<'a> {
    fn add(&mut self, key: &str, value: &'a str) {
        let value = trim_ows(value);
        let is = |name: &str| key.eq_ignore_ascii_case(name);
        if is(attr::TRACEPARENT) {
            self.traceparent = match self.traceparent {
                Slot::Absent => Slot::One(value),
                Slot::One(prev) if prev == value => Slot::One(prev),
                _ => Slot::Conflict,
            };
        } else if is(attr::TRACESTATE) {
            self.tracestate.push(value);
        } else {
            let slot = if is("b3") {
                &mut self.b3
            } else if is("x-b3-traceid") {
                &mut self.x_trace_id
            } else if is("x-b3-spanid") {
                &mut self.x_span_id
            } else if is("x-b3-parentspanid") {
                &mut self.x_parent_span_id
            } else if is("x-b3-sampled") {
                &mut self.x_sampled
            } else if is("x-b3-flags") {
                &mut self.x_flags
            } else {
                return;
            };
            slot.get_or_insert(value);
        }
    }

    fn resolve(&self) -> Option<TraceContext> {
        if let Slot::One(tp) = self.traceparent
            && let Some((trace_id, span_id, sampled)) = parse_traceparent(tp)
        {
            return Some(TraceContext {
                trace_id: trace_id.to_owned(),
                span_id: span_id.to_owned(),
                parent_span_id: None,
                sampled: Some(sampled),
                tracestate: combine_tracestate(&self.tracestate),
                format: TraceFormat::W3c,
            });
        }

        let mut single_sampling = None;
        match self.b3.and_then(parse_b3_single) {
            Some(B3Single::Context(ctx)) => return Some(ctx),
            Some(B3Single::SamplingOnly(s)) => single_sampling = Some(s),
            None => {}
        }

        let trace_id = b3_trace_id(self.x_trace_id?)?;
        let span_id = self.x_span_id.filter(|s| is_id(s, 16))?;
        let parent_span_id = self.x_parent_span_id.filter(|s| is_id(s, 16));
        let debug = self.x_flags == Some("1");
        let multi_sampled = self.x_sampled.and_then(|s| {
            if s == "1" || s.eq_ignore_ascii_case("true") {
                Some(true)
            } else if s == "0" || s.eq_ignore_ascii_case("false") {
                Some(false)
            } else {
                None
            }
        });
        // Debug (from either header) implies sampled; otherwise the single header's decision,
        // being the newer encoding, wins over `x-b3-sampled`.
        let sampled = if debug {
            Some(true)
        } else {
            single_sampling.or(multi_sampled)
        };
        Some(TraceContext {
            trace_id,
            span_id: span_id.to_owned(),
            parent_span_id: parent_span_id.map(str::to_owned),
            sampled,
            tracestate: None,
            format: TraceFormat::B3Multi,
        })
    }
}

/// Trims HTTP optional whitespace (spaces and horizontal tabs).
fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `len` lower-case hex digits, not all zeros.
fn is_id(s: &str, len: usize) -> bool {
    s.len() == len && is_lower_hex(s) && s.bytes().any(|b| b != b'0')
}

/// Parses a `traceparent` value (already trimmed) into (trace id, parent id, sampled).
fn parse_traceparent(v: &str) -> Option<(&str, &str, bool)> {
    const LEN: usize = 55;
    let b = v.as_bytes();
    if b.len() < LEN || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    // The separators checked above are ASCII, so these are char boundaries; `get` keeps it
    // panic-free regardless.
    let version = v.get(0..2)?;
    let trace_id = v.get(3..35)?;
    let parent_id = v.get(36..52)?;
    let flags = v.get(53..55)?;
    if !is_lower_hex(version) || version == "ff" {
        return None;
    }
    if version == "00" {
        if b.len() != LEN {
            return None;
        }
    } else if b.len() > LEN && b[LEN] != b'-' {
        return None;
    }
    if !is_id(trace_id, 32) || !is_id(parent_id, 16) || !is_lower_hex(flags) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace_id, parent_id, flags & 0x01 != 0))
}

/// Joins repeated `tracestate` values; `None` when empty, too long or not printable ASCII.
fn combine_tracestate(values: &[&str]) -> Option<String> {
    let joined = values
        .iter()
        .copied()
        .filter(|v| !v.is_empty())
        .collect::<Vec<_>>()
        .join(",");
    let joined = trim_ows(&joined);
    let printable = joined
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    (!joined.is_empty() && printable && joined.len() <= MAX_TRACESTATE_LEN)
        .then(|| joined.to_owned())
}

/// A B3 trace id (16 or 32 lower-case hex digits, not all zeros), padded to 32 digits.
fn b3_trace_id(s: &str) -> Option<String> {
    if is_id(s, 32) {
        Some(s.to_owned())
    } else if is_id(s, 16) {
        Some(format!("0000000000000000{s}"))
    } else {
        None
    }
}

/// A B3 sampling state: `0` → not sampled, `1` → sampled, `d` (debug) → sampled.
fn b3_sampling_state(s: &str) -> Option<bool> {
    match s {
        "0" => Some(false),
        "1" | "d" => Some(true),
        _ => None,
    }
}

enum B3Single {
    Context(TraceContext),
    /// A bare `0`, `1` or `d`: a sampling decision without ids.
    SamplingOnly(bool),
}

/// Parses a `b3` single header value (already trimmed); `None` when malformed.
fn parse_b3_single(v: &str) -> Option<B3Single> {
    let mut fields = v.split('-');
    let first = fields.next()?;
    let Some(span_id) = fields.next() else {
        return b3_sampling_state(first).map(B3Single::SamplingOnly);
    };
    let trace_id = b3_trace_id(first)?;
    if !is_id(span_id, 16) {
        return None;
    }
    let sampled = match fields.next() {
        Some(state) => Some(b3_sampling_state(state)?),
        None => None,
    };
    let parent_span_id = match fields.next() {
        Some(p) if is_id(p, 16) => Some(p.to_owned()),
        Some(_) => return None,
        None => None,
    };
    if fields.next().is_some() {
        return None;
    }
    Some(B3Single::Context(TraceContext {
        trace_id,
        span_id: span_id.to_owned(),
        parent_span_id,
        sampled,
        tracestate: None,
        format: TraceFormat::B3Single,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const SPAN: &str = "b7ad6b7169203331";
    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    const B3_TRACE128: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const B3_TRACE64: &str = "64fe8b2a57d3eff7";
    const B3_SPAN: &str = "e457b5a2e4d86bd1";
    const B3_PARENT: &str = "05e3ac9a4f6e3b90";

    fn ctx(attrs: &[(&str, &str)]) -> Option<TraceContext> {
        from_attrs(attrs.iter().copied())
    }

    fn tp(value: &str) -> Option<TraceContext> {
        ctx(&[("traceparent", value)])
    }

    fn b3(value: &str) -> Option<TraceContext> {
        ctx(&[("b3", value)])
    }

    // ---- W3C traceparent ----

    #[test]
    fn w3c_spec_example() {
        let c = tp(TP).unwrap();
        assert_eq!(
            c,
            TraceContext {
                trace_id: TRACE.into(),
                span_id: SPAN.into(),
                parent_span_id: None,
                sampled: Some(true),
                tracestate: None,
                format: TraceFormat::W3c,
            }
        );
    }

    #[test]
    fn w3c_sampled_flag_is_bit_zero() {
        let flags = |f: &str| tp(&format!("00-{TRACE}-{SPAN}-{f}")).map(|c| c.sampled);
        assert_eq!(flags("00"), Some(Some(false)));
        assert_eq!(flags("01"), Some(Some(true)));
        assert_eq!(flags("02"), Some(Some(false)));
        assert_eq!(flags("03"), Some(Some(true)));
        assert_eq!(flags("ff"), Some(Some(true)));
        assert_eq!(flags("fe"), Some(Some(false)));
        assert_eq!(flags("0F"), None, "upper-case flags");
        assert_eq!(flags("0g"), None);
        assert_eq!(flags("1"), None);
        assert_eq!(flags("001"), None);
    }

    #[test]
    fn w3c_all_zero_ids_invalid() {
        assert_eq!(tp(&format!("00-{}-{SPAN}-01", "0".repeat(32))), None);
        assert_eq!(tp(&format!("00-{TRACE}-{}-01", "0".repeat(16))), None);
        // Only all-zeros is invalid; leading zeros are fine.
        let t = format!("{}1", "0".repeat(31));
        let s = format!("{}1", "0".repeat(15));
        let c = tp(&format!("00-{t}-{s}-00")).unwrap();
        assert_eq!(
            (c.trace_id.as_str(), c.span_id.as_str()),
            (t.as_str(), s.as_str())
        );
    }

    #[test]
    fn w3c_upper_case_invalid() {
        assert_eq!(tp(&format!("00-{}-{SPAN}-01", TRACE.to_uppercase())), None);
        assert_eq!(tp(&format!("00-{TRACE}-{}-01", SPAN.to_uppercase())), None);
        assert_eq!(
            tp("00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01"),
            None
        );
        assert_eq!(
            tp(&format!("0A-{TRACE}-{SPAN}-01")),
            None,
            "upper-case version"
        );
        assert_eq!(
            tp(&format!("00-0af7651916cd43dd8448eb211c80319C-{SPAN}-01")),
            None
        );
    }

    #[test]
    fn w3c_wrong_lengths_invalid() {
        let t = TRACE;
        let s = SPAN;
        for bad in [
            format!("0-{t}-{s}-01"),
            format!("000-{t}-{s}-01"),
            format!("00-{}-{s}-01", &t[1..]),
            format!("00-{t}0-{s}-01"),
            format!("00-{t}-{}-01", &s[1..]),
            format!("00-{t}-{s}0-01"),
            format!("00-{t}-{s}-1"),
            format!("00-{t}-{s}-011"),
            format!("00-{t}-{s}"),
            format!("00-{t}-{s}-"),
            format!("00-{t}"),
            String::new(),
            "00".to_owned(),
        ] {
            assert_eq!(tp(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn w3c_bad_separators_and_characters_invalid() {
        for bad in [
            format!("00_{TRACE}_{SPAN}_01"),
            format!("00-{TRACE}_{SPAN}-01"),
            format!("00 {TRACE}-{SPAN}-01"),
            format!("0g-{TRACE}-{SPAN}-01"),
            format!("00-{}z-{SPAN}-01", &TRACE[1..]),
            format!("00-{TRACE}-{}.-01", &SPAN[1..]),
            format!("00-{TRACE}-{SPAN} -01"),
        ] {
            assert_eq!(tp(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn w3c_non_ascii_does_not_panic() {
        // Multi-byte characters straddling the fixed field offsets.
        for bad in [
            "00-0af7651916cd43dd8448eb211c80319é-b7ad6b716920333-01",
            "é0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0é",
            "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01é",
            "ééééééééééééééééééééééééééééééééééééééééééééééééééééééé",
        ] {
            assert_eq!(tp(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn w3c_version_ff_invalid() {
        assert_eq!(tp(&format!("ff-{TRACE}-{SPAN}-01")), None);
        assert_eq!(tp(&format!("ff-{TRACE}-{SPAN}-01-extra")), None);
    }

    #[test]
    fn w3c_version_00_must_be_exactly_55() {
        assert_eq!(tp(&format!("{TP}-extra")), None);
        assert_eq!(tp(&format!("{TP}-")), None);
        assert_eq!(tp(&format!("{TP}0")), None);
    }

    #[test]
    fn w3c_future_version() {
        // Exactly the version-00 layout.
        let c = tp(&format!("cc-{TRACE}-{SPAN}-01")).unwrap();
        assert_eq!((c.trace_id.as_str(), c.span_id.as_str()), (TRACE, SPAN));
        assert_eq!(c.sampled, Some(true));
        assert_eq!(c.format, TraceFormat::W3c);
        // More fields after the flags.
        let c = tp(&format!(
            "cc-{TRACE}-{SPAN}-00-what-the-future-will-be-like"
        ))
        .unwrap();
        assert_eq!((c.trace_id.as_str(), c.sampled), (TRACE, Some(false)));
        assert!(tp(&format!("01-{TRACE}-{SPAN}-01-")).is_some());
        assert!(tp(&format!("fe-{TRACE}-{SPAN}-01-0123")).is_some());
        // The flags must be followed by `-` or the end.
        assert_eq!(
            tp(&format!(
                "cc-{TRACE}-{SPAN}-01.what-the-future-will-be-like"
            )),
            None
        );
        assert_eq!(tp(&format!("cc-{TRACE}-{SPAN}-010")), None);
        // Field rules still apply to the first four fields.
        assert_eq!(tp(&format!("cc-{TRACE}-{}-01-x", "0".repeat(16))), None);
        assert_eq!(
            tp(&format!("cc-{}-{SPAN}-01-x", TRACE.to_uppercase())),
            None
        );
        assert_eq!(tp(&format!("cc-{TRACE}-{SPAN}")), None, "shorter than 55");
    }

    #[test]
    fn w3c_ows_trimmed() {
        assert_eq!(tp(&format!("  {TP}\t")).unwrap().trace_id, TRACE);
        assert_eq!(tp(&format!("\t \t{TP}")).unwrap().span_id, SPAN);
        // Only spaces and tabs are OWS.
        assert_eq!(tp(&format!("{TP}\n")), None);
    }

    #[test]
    fn w3c_duplicate_traceparent() {
        let other = format!("00-{TRACE}-{}-01", B3_SPAN);
        // Conflicting values: invalid.
        assert_eq!(ctx(&[("traceparent", TP), ("traceparent", &other)]), None);
        // The same value twice: fine.
        assert!(ctx(&[("traceparent", TP), ("traceparent", TP)]).is_some());
        // Conflicting values fall back to B3.
        let c = ctx(&[
            ("traceparent", TP),
            ("traceparent", &other),
            ("b3", &format!("{B3_TRACE128}-{B3_SPAN}")),
        ]);
        assert_eq!(c.unwrap().format, TraceFormat::B3Single);
    }

    // ---- tracestate ----

    #[test]
    fn tracestate_carried_with_w3c() {
        let c = ctx(&[
            ("traceparent", TP),
            ("tracestate", "  rojo=00f067aa0ba902b7,congo=t61rcWkgMzE\t"),
        ])
        .unwrap();
        assert_eq!(
            c.tracestate.as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
        // Order of attributes does not matter.
        let c = ctx(&[("tracestate", "a=1"), ("traceparent", TP)]).unwrap();
        assert_eq!(c.tracestate.as_deref(), Some("a=1"));
    }

    #[test]
    fn tracestate_repeated_values_combined() {
        let c = ctx(&[
            ("traceparent", TP),
            ("tracestate", "a=1"),
            ("tracestate", " "),
            ("tracestate", "b=2 "),
        ])
        .unwrap();
        assert_eq!(c.tracestate.as_deref(), Some("a=1,b=2"));
    }

    #[test]
    fn tracestate_empty_or_absent() {
        assert_eq!(tp(TP).unwrap().tracestate, None);
        assert_eq!(
            ctx(&[("traceparent", TP), ("tracestate", " \t ")])
                .unwrap()
                .tracestate,
            None
        );
    }

    #[test]
    fn tracestate_length_limit() {
        let at_limit = format!("k={}", "v".repeat(MAX_TRACESTATE_LEN - 2));
        let c = ctx(&[
            ("traceparent", TP),
            ("tracestate", &format!(" {at_limit} ")),
        ])
        .unwrap();
        assert_eq!(c.tracestate.as_deref(), Some(at_limit.as_str()));
        let over = format!("k={}", "v".repeat(MAX_TRACESTATE_LEN - 1));
        let c = ctx(&[("traceparent", TP), ("tracestate", &over)]).unwrap();
        assert_eq!(c.tracestate, None, "dropped, the context kept");
        assert_eq!(c.trace_id, TRACE);
    }

    #[test]
    fn tracestate_not_printable_ascii_dropped() {
        let c = ctx(&[("traceparent", TP), ("tracestate", "a=é")]).unwrap();
        assert_eq!(c.tracestate, None);
        let c = ctx(&[("traceparent", TP), ("tracestate", "a=1,\nb=2")]).unwrap();
        assert_eq!(c.tracestate, None);
        let c = ctx(&[("traceparent", TP), ("tracestate", "a=1 ,\tb=2")]).unwrap();
        assert_eq!(c.tracestate.as_deref(), Some("a=1 ,\tb=2"));
    }

    #[test]
    fn tracestate_never_with_b3() {
        assert_eq!(ctx(&[("tracestate", "a=1")]), None);
        let c = ctx(&[
            ("tracestate", "a=1"),
            ("b3", &format!("{B3_TRACE128}-{B3_SPAN}-1")),
        ])
        .unwrap();
        assert_eq!(c.tracestate, None);
        let c = ctx(&[
            ("traceparent", "00-garbage"),
            ("tracestate", "a=1"),
            ("x-b3-traceid", B3_TRACE128),
            ("x-b3-spanid", B3_SPAN),
        ])
        .unwrap();
        assert_eq!((c.format, c.tracestate), (TraceFormat::B3Multi, None));
    }

    // ---- B3 single header ----

    #[test]
    fn b3_single_128_bit() {
        let c = b3(&format!("{B3_TRACE128}-{B3_SPAN}-1-{B3_PARENT}")).unwrap();
        assert_eq!(
            c,
            TraceContext {
                trace_id: B3_TRACE128.into(),
                span_id: B3_SPAN.into(),
                parent_span_id: Some(B3_PARENT.into()),
                sampled: Some(true),
                tracestate: None,
                format: TraceFormat::B3Single,
            }
        );
    }

    #[test]
    fn b3_single_64_bit_padded() {
        let c = b3(&format!("{B3_TRACE64}-{B3_SPAN}")).unwrap();
        assert_eq!(c.trace_id, format!("0000000000000000{B3_TRACE64}"));
        assert_eq!(c.trace_id.len(), 32);
        assert_eq!(c.span_id, B3_SPAN);
        assert_eq!((c.sampled, c.parent_span_id), (None, None));
    }

    #[test]
    fn b3_single_sampling_states() {
        let state = |s: &str| b3(&format!("{B3_TRACE128}-{B3_SPAN}-{s}")).map(|c| c.sampled);
        assert_eq!(state("1"), Some(Some(true)));
        assert_eq!(state("0"), Some(Some(false)));
        assert_eq!(state("d"), Some(Some(true)), "debug implies sampled");
        assert_eq!(
            b3(&format!("{B3_TRACE128}-{B3_SPAN}")).unwrap().sampled,
            None,
            "deferred"
        );
        for bad in ["", "2", "D", "true", "01"] {
            assert_eq!(state(bad), None, "{bad:?}");
        }
        let c = b3(&format!("{B3_TRACE64}-{B3_SPAN}-d-{B3_PARENT}")).unwrap();
        assert_eq!(
            (c.sampled, c.parent_span_id.as_deref()),
            (Some(true), Some(B3_PARENT))
        );
        let c = b3(&format!("{B3_TRACE64}-{B3_SPAN}-0-{B3_PARENT}")).unwrap();
        assert_eq!(c.sampled, Some(false));
    }

    #[test]
    fn b3_single_sampling_only_is_no_context() {
        for s in ["0", "1", "d", " 1 "] {
            assert_eq!(b3(s), None, "{s:?}");
        }
    }

    #[test]
    fn b3_single_invalid() {
        let t = B3_TRACE128;
        let s = B3_SPAN;
        let p = B3_PARENT;
        for bad in [
            String::new(),
            "x".to_owned(),
            t.to_owned(),
            format!("{t}-"),
            format!("{}-{s}", t.to_uppercase()),
            format!("{t}-{}", s.to_uppercase()),
            format!("{t}-{s}-1-{}", p.to_uppercase()),
            format!("{}-{s}", &t[1..]),
            format!("{}-{s}", &t[..20]),
            format!("{t}0-{s}"),
            format!("{t}-{}", &s[1..]),
            format!("{t}-{s}0"),
            format!("{}-{s}", "0".repeat(32)),
            format!("{}-{s}", "0".repeat(16)),
            format!("{t}-{}", "0".repeat(16)),
            format!("{t}-{s}-1-{}", "0".repeat(16)),
            format!("{t}-{s}-1-{}", &p[1..]),
            format!("{t}-{s}-1-{t}"),
            format!("{t}-{s}-1-"),
            format!("{t}-{s}--{p}"),
            format!("{t}-{s}-1-{p}-extra"),
            format!("{t}_{s}"),
            format!("{t}-{s}-é"),
        ] {
            assert_eq!(b3(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn b3_single_ows_trimmed() {
        assert!(b3(&format!(" \t{B3_TRACE128}-{B3_SPAN}-1 ")).is_some());
    }

    // ---- B3 multiple headers ----

    fn multi(
        trace: &str,
        span: &str,
        extra: &[(&'static str, &'static str)],
    ) -> Option<TraceContext> {
        let mut attrs = vec![("x-b3-traceid", trace), ("x-b3-spanid", span)];
        attrs.extend_from_slice(extra);
        ctx(&attrs)
    }

    #[test]
    fn b3_multi_128_bit() {
        let c = multi(
            B3_TRACE128,
            B3_SPAN,
            &[("x-b3-parentspanid", B3_PARENT), ("x-b3-sampled", "1")],
        )
        .unwrap();
        assert_eq!(
            c,
            TraceContext {
                trace_id: B3_TRACE128.into(),
                span_id: B3_SPAN.into(),
                parent_span_id: Some(B3_PARENT.into()),
                sampled: Some(true),
                tracestate: None,
                format: TraceFormat::B3Multi,
            }
        );
    }

    #[test]
    fn b3_multi_64_bit_padded() {
        let c = multi(B3_TRACE64, B3_SPAN, &[]).unwrap();
        assert_eq!(c.trace_id, format!("0000000000000000{B3_TRACE64}"));
        assert_eq!((c.sampled, c.parent_span_id), (None, None));
    }

    #[test]
    fn b3_multi_sampled_values() {
        let sampled = |v: &'static str| {
            multi(B3_TRACE128, B3_SPAN, &[("x-b3-sampled", v)])
                .unwrap()
                .sampled
        };
        assert_eq!(sampled("1"), Some(true));
        assert_eq!(sampled("true"), Some(true));
        assert_eq!(sampled("True"), Some(true));
        assert_eq!(sampled("0"), Some(false));
        assert_eq!(sampled("false"), Some(false));
        assert_eq!(sampled(" 0 "), Some(false));
        assert_eq!(sampled("yes"), None);
        assert_eq!(sampled(""), None);
    }

    #[test]
    fn b3_multi_debug_flag() {
        let c = multi(B3_TRACE128, B3_SPAN, &[("x-b3-flags", "1")]).unwrap();
        assert_eq!(c.sampled, Some(true));
        let c = multi(
            B3_TRACE128,
            B3_SPAN,
            &[("x-b3-flags", "1"), ("x-b3-sampled", "0")],
        )
        .unwrap();
        assert_eq!(c.sampled, Some(true), "debug implies sampled");
        let c = multi(
            B3_TRACE128,
            B3_SPAN,
            &[("x-b3-flags", "0"), ("x-b3-sampled", "0")],
        )
        .unwrap();
        assert_eq!(c.sampled, Some(false));
        let c = multi(B3_TRACE128, B3_SPAN, &[("x-b3-flags", "0")]).unwrap();
        assert_eq!(c.sampled, None);
    }

    #[test]
    fn b3_multi_invalid_parent_ignored() {
        for bad in [
            "",
            "0000000000000000",
            "05E3AC9A4F6E3B90",
            "05e3ac9a4f6e3b9",
            B3_TRACE128,
        ] {
            let attrs = [
                ("x-b3-traceid", B3_TRACE128),
                ("x-b3-spanid", B3_SPAN),
                ("x-b3-parentspanid", bad),
            ];
            let c = ctx(&attrs).unwrap();
            assert_eq!(c.parent_span_id, None, "{bad:?}");
            assert_eq!(c.span_id, B3_SPAN);
        }
    }

    #[test]
    fn b3_multi_requires_valid_ids() {
        assert_eq!(ctx(&[("x-b3-traceid", B3_TRACE128)]), None);
        assert_eq!(
            ctx(&[("x-b3-spanid", B3_SPAN), ("x-b3-sampled", "1")]),
            None
        );
        assert_eq!(multi(&B3_TRACE128.to_uppercase(), B3_SPAN, &[]), None);
        assert_eq!(multi(B3_TRACE128, &B3_SPAN.to_uppercase(), &[]), None);
        assert_eq!(multi(&B3_TRACE128[..24], B3_SPAN, &[]), None);
        assert_eq!(
            multi(B3_TRACE128, B3_TRACE128, &[]),
            None,
            "span id is 64-bit only"
        );
        assert_eq!(multi(&"0".repeat(32), B3_SPAN, &[]), None);
        assert_eq!(multi(B3_TRACE64, &"0".repeat(16), &[]), None);
    }

    #[test]
    fn b3_sampling_only_single_with_multi_ids() {
        let c = multi(B3_TRACE128, B3_SPAN, &[("b3", "0")]).unwrap();
        assert_eq!((c.format, c.sampled), (TraceFormat::B3Multi, Some(false)));
        let c = multi(B3_TRACE128, B3_SPAN, &[("b3", "d")]).unwrap();
        assert_eq!(c.sampled, Some(true));
        // The single header's decision wins over x-b3-sampled.
        let c = multi(B3_TRACE128, B3_SPAN, &[("b3", "1"), ("x-b3-sampled", "0")]).unwrap();
        assert_eq!(c.sampled, Some(true));
        // ...but x-b3-flags debug still implies sampled.
        let c = multi(B3_TRACE128, B3_SPAN, &[("b3", "0"), ("x-b3-flags", "1")]).unwrap();
        assert_eq!(c.sampled, Some(true));
        // A malformed single header is ignored.
        let c = multi(B3_TRACE128, B3_SPAN, &[("b3", "2"), ("x-b3-sampled", "0")]).unwrap();
        assert_eq!((c.format, c.sampled), (TraceFormat::B3Multi, Some(false)));
    }

    // ---- precedence and attribute handling ----

    #[test]
    fn w3c_takes_precedence_over_b3() {
        let b3_value = format!("{B3_TRACE128}-{B3_SPAN}-0");
        let attrs = [
            ("b3", b3_value.as_str()),
            ("x-b3-traceid", B3_TRACE128),
            ("x-b3-spanid", B3_SPAN),
            ("x-b3-sampled", "0"),
            ("traceparent", TP),
        ];
        let c = ctx(&attrs).unwrap();
        assert_eq!(
            (c.format, c.trace_id.as_str(), c.sampled),
            (TraceFormat::W3c, TRACE, Some(true))
        );
    }

    #[test]
    fn invalid_w3c_falls_back_to_b3() {
        let upper = TP.to_uppercase();
        let b3_value = format!("{B3_TRACE64}-{B3_SPAN}-1");
        let c = ctx(&[("traceparent", upper.as_str()), ("b3", b3_value.as_str())]).unwrap();
        assert_eq!(c.format, TraceFormat::B3Single);
        assert_eq!(c.trace_id, format!("0000000000000000{B3_TRACE64}"));
        let c = ctx(&[
            ("traceparent", "ff-x"),
            ("x-b3-traceid", B3_TRACE128),
            ("x-b3-spanid", B3_SPAN),
        ])
        .unwrap();
        assert_eq!(c.format, TraceFormat::B3Multi);
    }

    #[test]
    fn b3_single_takes_precedence_over_multi() {
        let b3_value = format!("{B3_TRACE64}-{B3_PARENT}-0");
        let c = multi(B3_TRACE128, B3_SPAN, &[("x-b3-sampled", "1")]);
        assert_eq!(c.unwrap().format, TraceFormat::B3Multi);
        let attrs = [
            ("x-b3-traceid", B3_TRACE128),
            ("x-b3-spanid", B3_SPAN),
            ("b3", b3_value.as_str()),
        ];
        let c = ctx(&attrs).unwrap();
        assert_eq!(c.format, TraceFormat::B3Single);
        assert_eq!((c.span_id.as_str(), c.sampled), (B3_PARENT, Some(false)));
        // An invalid single header falls back to the multiple headers.
        let attrs = [
            ("x-b3-traceid", B3_TRACE128),
            ("x-b3-spanid", B3_SPAN),
            ("b3", "nonsense-value"),
        ];
        assert_eq!(ctx(&attrs).unwrap().format, TraceFormat::B3Multi);
    }

    #[test]
    fn no_headers_no_context() {
        assert_eq!(ctx(&[]), None);
        assert_eq!(
            ctx(&[
                ("path", "/"),
                ("host", "example.com"),
                ("user-agent", "curl")
            ]),
            None
        );
    }

    #[test]
    fn attribute_names_ignore_ascii_case_and_unrelated_keys() {
        let c = ctx(&[("method", "GET"), ("TraceParent", TP), ("status", "200")]).unwrap();
        assert_eq!(c.format, TraceFormat::W3c);
        let c = ctx(&[
            ("X-B3-TraceId", B3_TRACE128),
            ("X-B3-SpanId", B3_SPAN),
            ("X-B3-Sampled", "1"),
        ])
        .unwrap();
        assert_eq!((c.format, c.sampled), (TraceFormat::B3Multi, Some(true)));
    }

    #[test]
    fn b3_first_value_wins() {
        let attrs = [
            ("x-b3-traceid", B3_TRACE128),
            ("x-b3-traceid", B3_TRACE64),
            ("x-b3-spanid", B3_SPAN),
        ];
        assert_eq!(ctx(&attrs).unwrap().trace_id, B3_TRACE128);
    }

    #[test]
    fn from_attrs_accepts_any_iterator() {
        let owned: Vec<(String, String)> = vec![("traceparent".into(), TP.into())];
        let c = from_attrs(owned.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert!(c.is_some());
        let map = std::collections::BTreeMap::from([("traceparent", TP)]);
        assert!(from_attrs(map).is_some());
    }

    // ---- output ----

    #[test]
    fn exemplar_labels_and_attr_names() {
        let c = tp(TP).unwrap();
        assert_eq!(
            c.exemplar_labels(),
            [("trace_id", TRACE), ("span_id", SPAN)]
        );
        assert_eq!((ATTR_TRACE_ID, ATTR_SPAN_ID), ("trace_id", "span_id"));
        let len: usize = c
            .exemplar_labels()
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        assert!(len <= 128, "OpenMetrics exemplar label set limit");
    }

    #[test]
    fn serialises_with_lower_case_format_names() {
        let c = ctx(&[("traceparent", TP), ("tracestate", "a=1")]).unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "trace_id": TRACE,
                "span_id": SPAN,
                "parent_span_id": null,
                "sampled": true,
                "tracestate": "a=1",
                "format": "w3c",
            })
        );
        for f in [
            TraceFormat::W3c,
            TraceFormat::B3Single,
            TraceFormat::B3Multi,
        ] {
            assert_eq!(
                serde_json::to_value(f).unwrap(),
                serde_json::json!(f.as_str())
            );
        }
        assert_eq!(TraceFormat::B3Single.as_str(), "b3");
        assert_eq!(TraceFormat::B3Multi.as_str(), "b3multi");
    }
}
