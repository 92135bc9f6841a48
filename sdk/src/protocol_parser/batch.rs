//! The flat record batch, the form records cross the sandbox in (the WIT `record-batch`).
//! Internal: the component glue encodes it, the daemon decodes and validates it; authors only
//! ever see [`RequestRecord`]s.

use super::RequestRecord;

/// Bytes `start .. start + len` of a [`RecordBatch`]'s text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

/// A record of a [`RecordBatch`]: numbers, and spans of the batch's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordHead {
    pub conn: u64,
    pub protocol: Span,
    pub operation: Span,
    pub status: u32,
    pub error: Option<Span>,
    pub request_ts_ns: u64,
    pub response_ts_ns: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub attrs_start: u32,
    pub attrs_len: u32,
}

/// Records in the flat form they cross the sandbox in (the WIT `record-batch`): all text in
/// one string, so a call's result is three lists instead of one allocation per string on each
/// side. Authors never see it: the component glue encodes, the daemon decodes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordBatch {
    pub text: String,
    pub heads: Vec<RecordHead>,
    pub attrs: Vec<(Span, Span)>,
}

impl RecordBatch {
    /// Flatten records. Within a batch each distinct attribute key and protocol name is
    /// written once (they repeat in every record).
    pub fn encode(records: &[RequestRecord]) -> RecordBatch {
        let mut b = RecordBatch {
            text: String::with_capacity(records.len() * 256),
            heads: Vec::with_capacity(records.len()),
            attrs: Vec::with_capacity(records.len() * 8),
        };
        // A handful of distinct keys: a linear scan beats hashing.
        let mut interned: Vec<(&str, Span)> = Vec::new();
        for r in records {
            let protocol = b.intern(&mut interned, &r.protocol);
            let operation = b.push(&r.operation);
            let error = r.error.as_deref().map(|e| b.intern(&mut interned, e));
            let attrs_start = b.attrs.len() as u32;
            for (k, v) in &r.attributes {
                let k = b.intern(&mut interned, k);
                let v = b.push(v);
                b.attrs.push((k, v));
            }
            b.heads.push(RecordHead {
                conn: r.conn,
                protocol,
                operation,
                status: r.status,
                error,
                request_ts_ns: r.request_ts_ns,
                response_ts_ns: r.response_ts_ns,
                request_bytes: r.request_bytes,
                response_bytes: r.response_bytes,
                attrs_start,
                attrs_len: r.attributes.len() as u32,
            });
        }
        b
    }

    fn push(&mut self, s: &str) -> Span {
        let span = Span {
            start: self.text.len() as u32,
            len: s.len() as u32,
        };
        self.text.push_str(s);
        span
    }

    fn intern<'a>(&mut self, interned: &mut Vec<(&'a str, Span)>, s: &'a str) -> Span {
        if let Some((_, span)) = interned.iter().find(|(k, _)| *k == s) {
            return *span;
        }
        let span = self.push(s);
        interned.push((s, span));
        span
    }

    /// The text of a span; an error if it is out of bounds or splits a character (a
    /// component's output is not trusted).
    pub fn text_of(&self, span: Span) -> Result<&str, String> {
        let (start, end) = (span.start as usize, span.start as usize + span.len as usize);
        self.text.get(start..end).ok_or_else(|| {
            format!(
                "text span {start}..{end} outside the batch's {} bytes or inside a character",
                self.text.len()
            )
        })
    }

    /// Check every span and attribute range once, so [`RecordRef`] reads need no error path.
    /// Errors name the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        for h in &self.heads {
            self.text_of(h.protocol)?;
            self.text_of(h.operation)?;
            if let Some(e) = h.error {
                self.text_of(e)?;
            }
            let attrs = self
                .attrs
                .get(h.attrs_start as usize..h.attrs_start as usize + h.attrs_len as usize)
                .ok_or_else(|| {
                    format!(
                        "attribute range {}+{} outside the batch's {}",
                        h.attrs_start,
                        h.attrs_len,
                        self.attrs.len()
                    )
                })?;
            for (k, v) in attrs {
                self.text_of(*k)?;
                self.text_of(*v)?;
            }
        }
        Ok(())
    }

    /// Record `i`, borrowed. Only for a [`validate`](Self::validate)d batch (a bad span reads
    /// as an empty string rather than panicking).
    pub fn get(&self, i: usize) -> RecordRef<'_> {
        RecordRef {
            batch: self,
            head: &self.heads[i],
        }
    }

    /// The records, owned. Errors name the first bad span or attribute range.
    pub fn decode(&self) -> Result<Vec<RequestRecord>, String> {
        self.validate()?;
        Ok((0..self.heads.len())
            .map(|i| self.get(i).to_owned())
            .collect())
    }
}

/// A record of a [`RecordBatch`], read in place.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    batch: &'a RecordBatch,
    head: &'a RecordHead,
}

impl<'a> RecordRef<'a> {
    fn text(&self, s: Span) -> &'a str {
        self.batch.text_of(s).unwrap_or("")
    }

    pub fn head(&self) -> &'a RecordHead {
        self.head
    }

    pub fn protocol(&self) -> &'a str {
        self.text(self.head.protocol)
    }

    pub fn operation(&self) -> &'a str {
        self.text(self.head.operation)
    }

    pub fn error(&self) -> Option<&'a str> {
        self.head.error.map(|e| self.text(e))
    }

    pub fn attributes(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        let (start, len) = (self.head.attrs_start as usize, self.head.attrs_len as usize);
        let batch = self.batch;
        batch
            .attrs
            .get(start..start + len)
            .unwrap_or(&[])
            .iter()
            .map(move |(k, v)| {
                (
                    batch.text_of(*k).unwrap_or(""),
                    batch.text_of(*v).unwrap_or(""),
                )
            })
    }

    pub fn attr(&self, key: &str) -> Option<&'a str> {
        self.attributes().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn to_owned(&self) -> RequestRecord {
        let h = self.head;
        RequestRecord {
            conn: h.conn,
            protocol: self.protocol().to_string(),
            operation: self.operation().to_string(),
            status: h.status,
            error: self.error().map(str::to_string),
            request_ts_ns: h.request_ts_ns,
            response_ts_ns: h.response_ts_ns,
            request_bytes: h.request_bytes,
            response_bytes: h.response_bytes,
            attributes: self
                .attributes()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}
