//! A typed exposition writer: families of a kind (counter, gauge, histogram, unknown), each
//! with its `# HELP`/`# TYPE` header written once in the form of the format, samples with
//! escaped labels, and exemplars in OpenMetrics only. Everything is appended to one `String`
//! without allocating (past its growth).

use std::fmt::Write as _;

use crate::label::push_label_value;

/// The text format of an exposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0: counter families named without `_total`, exemplars, `# EOF`.
    OpenMetrics,
}

/// An exposition being written. A family handle borrows it mutably, so a family's samples are
/// contiguous and follow its header.
#[derive(Debug, Clone)]
pub struct Exposition {
    out: String,
    format: Format,
}

impl Exposition {
    pub fn new(format: Format) -> Self {
        Self::with_capacity(format, 0)
    }

    pub fn with_capacity(format: Format, capacity: usize) -> Self {
        Self {
            out: String::with_capacity(capacity),
            format,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The text so far (no `# EOF`).
    pub fn as_str(&self) -> &str {
        &self.out
    }

    /// A counter family. `name` is the sample name, `_total` included: the OpenMetrics family
    /// is named without it. A counter named without `_total` is not a valid OpenMetrics
    /// counter: its family is written there as `unknown` (the sample keeps its name).
    pub fn counter<'e, 'n>(&'e mut self, name: &'n str, help: &str) -> Counter<'e, 'n> {
        let family = match self.format {
            Format::Prometheus => Some((name, "counter")),
            Format::OpenMetrics => name.strip_suffix("_total").map(|f| (f, "counter")),
        };
        let (family, kind) = family.unwrap_or((name, "unknown"));
        self.header(family, kind, help);
        Counter(Family { ex: self, name })
    }

    /// A gauge family.
    pub fn gauge<'e, 'n>(&'e mut self, name: &'n str, help: &str) -> Gauge<'e, 'n> {
        self.header(name, "gauge", help);
        Gauge(Family { ex: self, name })
    }

    /// A histogram family: series of `_bucket{le=…}` lines, `_sum` and `_count`.
    pub fn histogram<'e, 'n>(&'e mut self, name: &'n str, help: &str) -> Histogram<'e, 'n> {
        self.header(name, "histogram", help);
        Histogram(Family { ex: self, name })
    }

    /// A family of no declared kind (`untyped` in Prometheus, `unknown` in OpenMetrics).
    pub fn unknown<'e, 'n>(&'e mut self, name: &'n str, help: &str) -> Unknown<'e, 'n> {
        let kind = match self.format {
            Format::Prometheus => "untyped",
            Format::OpenMetrics => "unknown",
        };
        self.header(name, kind, help);
        Unknown(Family { ex: self, name })
    }

    /// A counter or a gauge family chosen by a table row (see [`Kind`]).
    pub fn family<'e, 'n>(&'e mut self, kind: Kind, name: &'n str, help: &str) -> Scalar<'e, 'n> {
        match kind {
            Kind::Counter => Scalar::Counter(self.counter(name, help)),
            Kind::Gauge => Scalar::Gauge(self.gauge(name, help)),
        }
    }

    /// Append families written apart (e.g. rendered ahead of time by another task).
    ///
    /// # Panics
    /// If `part` is of another format: its headers would be wrong here.
    pub fn append(&mut self, part: &Exposition) {
        assert_eq!(self.format, part.format, "appending another format");
        self.out.push_str(&part.out);
    }

    /// The exposition, ended by `# EOF` in OpenMetrics.
    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let o = &mut self.out;
        o.push_str("# HELP ");
        o.push_str(name);
        o.push(' ');
        o.push_str(help);
        o.push_str("\n# TYPE ");
        o.push_str(name);
        o.push(' ');
        o.push_str(kind);
        o.push('\n');
    }
}

/// What every family handle shares: the exposition and the sample name.
struct Family<'e, 'n> {
    ex: &'e mut Exposition,
    name: &'n str,
}

impl Family<'_, '_> {
    /// `{name}{suffix}{labels} {value}[ exemplar]\n`.
    fn line(
        &mut self,
        suffix: &str,
        labels: &(impl Labels + ?Sized),
        value: impl Value,
        exemplar: Option<&Exemplar<'_>>,
    ) {
        let format = self.ex.format;
        let o = &mut self.ex.out;
        o.push_str(self.name);
        o.push_str(suffix);
        if !labels.is_empty() {
            o.push('{');
            labels.write(o);
            o.push('}');
        }
        o.push(' ');
        value.write(o);
        if let (Some(e), Format::OpenMetrics) = (exemplar, format) {
            e.write(o);
        }
        o.push('\n');
    }
}

/// A counter family (see [`Exposition::counter`]).
pub struct Counter<'e, 'n>(Family<'e, 'n>);

impl Counter<'_, '_> {
    pub fn sample(&mut self, labels: impl Labels, value: impl Value) -> &mut Self {
        self.0.line("", &labels, value, None);
        self
    }
}

/// A gauge family.
pub struct Gauge<'e, 'n>(Family<'e, 'n>);

impl Gauge<'_, '_> {
    pub fn sample(&mut self, labels: impl Labels, value: impl Value) -> &mut Self {
        self.0.line("", &labels, value, None);
        self
    }
}

/// The kind of a family of plain samples, for tables of series of either kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A counter or a gauge family (see [`Exposition::family`]).
pub enum Scalar<'e, 'n> {
    Counter(Counter<'e, 'n>),
    Gauge(Gauge<'e, 'n>),
}

impl Scalar<'_, '_> {
    pub fn sample(&mut self, labels: impl Labels, value: impl Value) -> &mut Self {
        match self {
            Scalar::Counter(c) => {
                c.sample(labels, value);
            }
            Scalar::Gauge(g) => {
                g.sample(labels, value);
            }
        }
        self
    }
}

/// A family of no declared kind.
pub struct Unknown<'e, 'n>(Family<'e, 'n>);

impl Unknown<'_, '_> {
    pub fn sample(&mut self, labels: impl Labels, value: impl Value) -> &mut Self {
        self.0.line("", &labels, value, None);
        self
    }
}

/// A histogram family; each series is written by [`Histogram::series`].
pub struct Histogram<'e, 'n>(Family<'e, 'n>);

impl<'e, 'n> Histogram<'e, 'n> {
    /// One series: its buckets in increasing `le`, then `+Inf`, `_sum`, `_count`.
    pub fn series<'h, L: Labels>(&'h mut self, labels: L) -> HistogramSeries<'h, 'e, 'n, L> {
        HistogramSeries { h: self, labels }
    }
}

/// The lines of one histogram series, all with the series' labels.
pub struct HistogramSeries<'h, 'e, 'n, L: Labels> {
    h: &'h mut Histogram<'e, 'n>,
    labels: L,
}

impl<L: Labels> HistogramSeries<'_, '_, '_, L> {
    /// `_bucket{…,le="{le}"} {cumulative}`, with the exemplar in OpenMetrics.
    pub fn bucket(&mut self, le: f64, cumulative: u64, exemplar: Option<&Exemplar<'_>>) {
        self.h
            .0
            .line("_bucket", &(&self.labels, Le(le)), cumulative, exemplar);
    }

    /// `_bucket{…,le="+Inf"} {count}`.
    pub fn inf(&mut self, count: u64, exemplar: Option<&Exemplar<'_>>) {
        self.h.0.line(
            "_bucket",
            &(&self.labels, [("le", "+Inf")]),
            count,
            exemplar,
        );
    }

    pub fn sum(&mut self, sum: impl Value) {
        self.h.0.line("_sum", &self.labels, sum, None);
    }

    pub fn count(&mut self, count: u64) {
        self.h.0.line("_count", &self.labels, count, None);
    }
}

/// An OpenMetrics exemplar: ` # {trace_id="…",span_id="…"} {value} {timestamp}`, the
/// timestamp in Unix seconds with millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar<'a> {
    pub trace_id: &'a str,
    pub span_id: &'a str,
    pub value: f64,
    pub timestamp: f64,
}

impl Exemplar<'_> {
    fn write(&self, o: &mut String) {
        o.push_str(" # {trace_id=\"");
        push_label_value(o, self.trace_id);
        o.push_str("\",span_id=\"");
        push_label_value(o, self.span_id);
        let _ = write!(o, "\"}} {} {:.3}", self.value, self.timestamp);
    }
}

/// A sample value, written as Rust's `Display` does (`1`, `0.25`, `NaN`, `inf`).
pub trait Value {
    fn write(&self, o: &mut String);
}

macro_rules! display_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn write(&self, o: &mut String) {
                let _ = write!(o, "{self}");
            }
        }
    )*};
}
display_value!(u8, u16, u32, u64, usize, i32, i64, f64);

/// A label set inside `{…}`: written with values escaped, or already escaped ([`LabelText`]).
pub trait Labels {
    fn is_empty(&self) -> bool;
    /// `k="v",…` without braces.
    fn write(&self, o: &mut String);
}

/// No labels.
impl Labels for () {
    fn is_empty(&self) -> bool {
        true
    }
    fn write(&self, _: &mut String) {}
}

/// Pairs, values escaped (keys are names, written as they are).
impl Labels for [(&str, &str)] {
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn write(&self, o: &mut String) {
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            o.push_str(k);
            o.push_str("=\"");
            push_label_value(o, v);
            o.push('"');
        }
    }
}

impl<const N: usize> Labels for [(&str, &str); N] {
    fn is_empty(&self) -> bool {
        N == 0
    }
    fn write(&self, o: &mut String) {
        self[..].write(o);
    }
}

impl<L: Labels + ?Sized> Labels for &L {
    fn is_empty(&self) -> bool {
        (**self).is_empty()
    }
    fn write(&self, o: &mut String) {
        (**self).write(o);
    }
}

/// Two sets, one after the other (e.g. a series' labels, then the sample's own).
impl<A: Labels, B: Labels> Labels for (A, B) {
    fn is_empty(&self) -> bool {
        self.0.is_empty() && self.1.is_empty()
    }
    fn write(&self, o: &mut String) {
        self.0.write(o);
        if !self.0.is_empty() && !self.1.is_empty() {
            o.push(',');
        }
        self.1.write(o);
    }
}

/// `le="{bound}"`, the bound as `Display` writes it.
struct Le(f64);

impl Labels for Le {
    fn is_empty(&self) -> bool {
        false
    }
    fn write(&self, o: &mut String) {
        let _ = write!(o, "le=\"{}\"", self.0);
    }
}

/// Labels written once, escaped, for series that write many lines (histograms) or are sorted
/// by their labels. Reusable: [`LabelText::clear`] keeps the buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelText(String);

impl LabelText {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append `key="value"`, the value escaped.
    pub fn push(&mut self, key: &str, value: &str) -> &mut Self {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        self.0.push_str(key);
        self.0.push_str("=\"");
        push_label_value(&mut self.0, value);
        self.0.push('"');
        self
    }

    /// Append `key="value"` for a value written by `Display` (numbers, names), escaped.
    pub fn push_display(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        self.0.push_str(key);
        self.0.push_str("=\"");
        let start = self.0.len();
        let _ = write!(self.0, "{value}");
        if self.0[start..].contains(['\\', '"', '\n']) {
            let raw = self.0.split_off(start);
            push_label_value(&mut self.0, &raw);
        }
        self.0.push('"');
        self
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Labels for LabelText {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn write(&self, o: &mut String) {
        o.push_str(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(write: impl Fn(&mut Exposition)) -> (String, String) {
        let render = |f| {
            let mut ex = Exposition::new(f);
            write(&mut ex);
            ex.finish()
        };
        (render(Format::Prometheus), render(Format::OpenMetrics))
    }

    #[test]
    fn counter_families_drop_total_in_openmetrics_only() {
        let (prom, om) = both(|ex| {
            ex.counter("req_total", "Requests.")
                .sample([("code", "200")], 3u64)
                .sample((), 1u64);
        });
        assert_eq!(
            prom,
            "# HELP req_total Requests.\n# TYPE req_total counter\nreq_total{code=\"200\"} 3\nreq_total 1\n"
        );
        assert_eq!(
            om,
            "# HELP req Requests.\n# TYPE req counter\nreq_total{code=\"200\"} 3\nreq_total 1\n# EOF\n"
        );
    }

    #[test]
    fn a_counter_without_total_is_unknown_in_openmetrics() {
        let (prom, om) = both(|ex| {
            ex.counter("hits", "Hits.").sample((), 2u64);
        });
        assert_eq!(prom, "# HELP hits Hits.\n# TYPE hits counter\nhits 2\n");
        assert_eq!(
            om,
            "# HELP hits Hits.\n# TYPE hits unknown\nhits 2\n# EOF\n"
        );
    }

    #[test]
    fn families_from_a_table_keep_their_kind() {
        let (prom, om) = both(|ex| {
            ex.family(Kind::Counter, "c_total", "C.").sample((), 1u64);
            ex.family(Kind::Gauge, "g_total", "G.").sample((), 2u64);
        });
        assert_eq!(
            prom,
            "# HELP c_total C.\n# TYPE c_total counter\nc_total 1\n# HELP g_total G.\n# TYPE g_total gauge\ng_total 2\n"
        );
        assert_eq!(
            om,
            "# HELP c C.\n# TYPE c counter\nc_total 1\n# HELP g_total G.\n# TYPE g_total gauge\ng_total 2\n# EOF\n"
        );
    }

    #[test]
    fn gauges_and_unknowns() {
        let (prom, om) = both(|ex| {
            ex.gauge("temp", "T.").sample([("a", "x"), ("b", "y")], 0.5);
            ex.unknown("raw", "R.").sample((), -1i64);
        });
        assert_eq!(
            prom,
            "# HELP temp T.\n# TYPE temp gauge\ntemp{a=\"x\",b=\"y\"} 0.5\n# HELP raw R.\n# TYPE raw untyped\nraw -1\n"
        );
        assert_eq!(
            om,
            "# HELP temp T.\n# TYPE temp gauge\ntemp{a=\"x\",b=\"y\"} 0.5\n# HELP raw R.\n# TYPE raw unknown\nraw -1\n# EOF\n"
        );
    }

    #[test]
    fn label_values_are_escaped_everywhere() {
        let mut pre = LabelText::new();
        pre.push("path", "C:\\a\"b\nc").push_display("n", 7);
        assert_eq!(pre.as_str(), "path=\"C:\\\\a\\\"b\\nc\",n=\"7\"");
        let mut odd = LabelText::new();
        odd.push_display("q", "say \"hi\"");
        assert_eq!(odd.as_str(), "q=\"say \\\"hi\\\"\"");
        let (prom, _) = both(|ex| {
            ex.gauge("g", "G.")
                .sample([("v", "a\\b")], 1u64)
                .sample(&pre, 2u64)
                .sample((&pre, [("k", "\"")]), 3u64);
        });
        assert_eq!(
            prom,
            "# HELP g G.\n# TYPE g gauge\ng{v=\"a\\\\b\"} 1\ng{path=\"C:\\\\a\\\"b\\nc\",n=\"7\"} 2\ng{path=\"C:\\\\a\\\"b\\nc\",n=\"7\",k=\"\\\"\"} 3\n"
        );
    }

    fn histogram(ex: &mut Exposition) {
        let e = Exemplar {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            span_id: "00f067aa0ba902b7",
            value: 0.03,
            timestamp: 1700000000.1234,
        };
        let mut h = ex.histogram("lat_seconds", "Latency.");
        let mut s = h.series([("op", "get")]);
        s.bucket(0.01, 1, None);
        s.bucket(0.05, 2, Some(&e));
        s.bucket(1.0, 2, None);
        s.inf(3, Some(&e));
        s.sum(2.5);
        s.count(3);
        let mut s = h.series(());
        s.inf(0, None);
        s.sum(0.0);
        s.count(0);
    }

    #[test]
    fn histograms_with_exemplars_in_openmetrics_only() {
        let (prom, om) = both(histogram);
        assert_eq!(
            prom,
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
             lat_seconds_bucket{op=\"get\",le=\"0.01\"} 1\n\
             lat_seconds_bucket{op=\"get\",le=\"0.05\"} 2\n\
             lat_seconds_bucket{op=\"get\",le=\"1\"} 2\n\
             lat_seconds_bucket{op=\"get\",le=\"+Inf\"} 3\n\
             lat_seconds_sum{op=\"get\"} 2.5\n\
             lat_seconds_count{op=\"get\"} 3\n\
             lat_seconds_bucket{le=\"+Inf\"} 0\n\
             lat_seconds_sum 0\n\
             lat_seconds_count 0\n"
        );
        let ex = " # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"} 0.03 1700000000.123";
        assert_eq!(
            om,
            format!(
                "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
                 lat_seconds_bucket{{op=\"get\",le=\"0.01\"}} 1\n\
                 lat_seconds_bucket{{op=\"get\",le=\"0.05\"}} 2{ex}\n\
                 lat_seconds_bucket{{op=\"get\",le=\"1\"}} 2\n\
                 lat_seconds_bucket{{op=\"get\",le=\"+Inf\"}} 3{ex}\n\
                 lat_seconds_sum{{op=\"get\"}} 2.5\n\
                 lat_seconds_count{{op=\"get\"}} 3\n\
                 lat_seconds_bucket{{le=\"+Inf\"}} 0\n\
                 lat_seconds_sum 0\n\
                 lat_seconds_count 0\n# EOF\n"
            )
        );
    }

    #[test]
    fn parts_append_in_their_own_format() {
        let mut part = Exposition::new(Format::OpenMetrics);
        part.counter("a_total", "A.").sample((), 1u64);
        let mut ex = Exposition::new(Format::OpenMetrics);
        ex.gauge("g", "G.").sample((), 2u64);
        ex.append(&part);
        assert_eq!(
            ex.finish(),
            "# HELP g G.\n# TYPE g gauge\ng 2\n# HELP a A.\n# TYPE a counter\na_total 1\n# EOF\n"
        );
    }

    #[test]
    #[should_panic(expected = "appending another format")]
    fn parts_of_another_format_are_refused() {
        let part = Exposition::new(Format::Prometheus);
        Exposition::new(Format::OpenMetrics).append(&part);
    }
}
