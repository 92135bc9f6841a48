//! A parser compiled into the daemon: the same SDK [`Driver`] the component glue runs, without
//! the sandbox. For the native-vs-Wasm benchmark and for tests of the pipeline around parsers.
//! Not used for third-party code: that only ever runs as a component.

use std::marker::PhantomData;

use sonde_sdk::protocol_parser::{Driver, FeedResult, ProtocolParser, Segment};

use sonde_parse::{Failure, Health};
use sonde_parse::{ParseJob, ParseOutput, ParserBackend};

pub struct NativeParser<P: ProtocolParser> {
    driver: Driver<P>,
    name: String,
    version: String,
    health: Health,
    _p: PhantomData<fn() -> P>,
}

impl<P: ProtocolParser> Default for NativeParser<P> {
    fn default() -> Self {
        let info = P::info();
        Self {
            driver: Driver::new(),
            name: info.name,
            version: info.version,
            health: Health::default(),
            _p: PhantomData,
        }
    }
}

impl<P: ProtocolParser> NativeParser<P> {
    pub fn new() -> Self {
        Self::default()
    }
}

impl<P: ProtocolParser> ParserBackend for NativeParser<P>
where
    P::State: Send,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> &str {
        &self.version
    }

    fn source(&self) -> &str {
        "native"
    }

    fn run(&mut self, job: &mut ParseJob) -> Result<ParseOutput, Failure> {
        self.health.succeeded();
        let mut out = FeedResult::default();
        for c in &job.opened {
            self.driver.open((**c).clone());
        }
        for (i, m) in job.meta.iter().enumerate() {
            let seg = Segment {
                direction: m.direction,
                ts_ns: m.ts_ns,
                gap_before: m.gap_before,
                data: job.segment(i),
            };
            self.driver.feed(m.conn, &seg, &mut out);
        }
        for c in &job.closed {
            self.driver.close(*c, &mut out);
        }
        Ok(ParseOutput {
            records: out
                .records
                .into_iter()
                .map(sonde_parse::Record::Owned)
                .collect(),
            claims: out.claims,
        })
    }

    fn health(&self) -> Health {
        self.health.clone()
    }
}
