//! Protocol parsers as sandboxed components: the daemon side of the `protocol-parser` world.
//!
//! [`WasmParser`] is a [`ParserBackend`]: one sandbox call per job applies its announcements,
//! its batch of segments and its closes, under one deadline. A failure (trap, deadline, memory
//! cap) drops the instance and with it every connection's state; the parse pipeline
//! ([`sonde_pipeline::slot`]) then stops feeding those connections to this parser, and new ones
//! go to a fresh instance (or nowhere while the plugin is quarantined).

use std::sync::Arc;

use anyhow::{Context as _, Result};
use wasmtime::Store;

use super::{
    BadOutput, EngineOptions, Failure, Health, Limits, PluginEngine, SandboxState, Sandboxed,
    WorldPre,
};
use crate::PluginsConfig;
use sonde_parse::{self as pp, Claim, Direction, ParseJob, ParseOutput, ParserBackend};
use sonde_sdk::protocol_parser::{RecordBatch, RecordHead, Role, Span, Transport};

wasmtime::component::bindgen!({
    path: "../../sdk/wit",
    world: "protocol-parser",
});

use self::sonde::plugin::parser_types as w;

/// The HTTP/1.x parser (`plugins/http`), built by build.rs for wasm32-wasip2. Empty when the
/// build skipped it (`SONDE_WASM_SKIP`).
pub static HTTP_PARSER_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sonde_http_parser.wasm"));

/// The DNS parser (`plugins/dns`), likewise.
pub static DNS_PARSER_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sonde_dns_parser.wasm"));

/// The MySQL parser (`plugins/mysql`), likewise.
pub static MYSQL_PARSER_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sonde_mysql_parser.wasm"));

/// The Redis parser (`plugins/redis`), likewise.
pub static REDIS_PARSER_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sonde_redis_parser.wasm"));
/// The PostgreSQL parser (`plugins/postgres`), likewise.
pub static POSTGRES_PARSER_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sonde_postgres_parser.wasm"));
/// The MQTT parser (`plugins/mqtt`), likewise.
pub static MQTT_PARSER_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sonde_mqtt_parser.wasm"));
/// The HTTP/2 and gRPC parser (`plugins/http2`), likewise.
pub static HTTP2_PARSER_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sonde_http2_parser.wasm"));

/// The parsers embedded in the binary, loaded unless `default_parsers = false`.
pub fn embedded() -> [(&'static str, &'static [u8]); 7] {
    [
        ("HTTP", HTTP_PARSER_WASM),
        ("HTTP/2", HTTP2_PARSER_WASM),
        ("MySQL", MYSQL_PARSER_WASM),
        ("PostgreSQL", POSTGRES_PARSER_WASM),
        ("DNS", DNS_PARSER_WASM),
        ("Redis", REDIS_PARSER_WASM),
        ("MQTT", MQTT_PARSER_WASM),
    ]
}

/// The WIT world these components implement.
pub const WORLD: &str = "protocol-parser";

impl WorldPre for ProtocolParserPre<SandboxState> {
    type Bindings = ProtocolParser;
    fn instantiate(&self, store: &mut Store<SandboxState>) -> wasmtime::Result<ProtocolParser> {
        ProtocolParserPre::instantiate(self, store)
    }
}

/// One loaded parser component.
pub struct WasmParser {
    pub name: String,
    pub version: String,
    pub protocols: Vec<String>,
    source: String,
    engine: Arc<PluginEngine>,
    limits: Limits,
    sandbox: Sandboxed<ProtocolParserPre<SandboxState>>,
}

impl WasmParser {
    /// Compile (or fetch from the cache), link, and ask the component who it is.
    pub fn load(
        engine: Arc<PluginEngine>,
        limits: Limits,
        wasm: &[u8],
        source: &str,
    ) -> Result<Self> {
        let (component, _) = engine.component(wasm)?;
        let linker = engine.linker_for(&component)?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let pre = ProtocolParserPre::new(pre)
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .context("the component does not implement the sonde:plugin/protocol-parser world")?;
        let mut sandbox = Sandboxed::new(pre);
        let info = sandbox
            .call(&engine, &limits, |b, store| b.call_info(store))
            .map_err(|f| anyhow::anyhow!("info: {f}"))?;
        tracing::info!(parser = %info.name, version = %info.version, protocols = ?info.protocols, source, "protocol-parser component loaded");
        Ok(Self {
            name: info.name,
            version: info.version,
            protocols: info.protocols,
            source: source.to_string(),
            engine,
            limits,
            sandbox,
        })
    }
}

impl ParserBackend for WasmParser {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> &str {
        &self.version
    }

    fn source(&self) -> &str {
        &self.source
    }

    fn health(&self) -> Health {
        self.sandbox.health.clone()
    }

    fn run(&mut self, job: &mut ParseJob) -> Result<ParseOutput, Failure> {
        let opened: Vec<w::ConnInfo> = job.opened.iter().map(|c| conn_to_wit(c)).collect();
        // The payload moves into the call's argument and back afterwards: lowering copies it
        // into the instance once, and that is the only copy.
        let batch = (!job.meta.is_empty()).then(|| w::SegmentBatch {
            data: std::mem::take(&mut job.data),
            ends: std::mem::take(&mut job.ends),
            meta: job
                .meta
                .iter()
                .map(|m| w::SegmentMeta {
                    conn: m.conn,
                    direction: match m.direction {
                        Direction::Egress => w::Direction::Egress,
                        Direction::Ingress => w::Direction::Ingress,
                    },
                    ts_ns: m.ts_ns,
                    gap_before: m.gap_before,
                })
                .collect(),
        });
        let closed = &job.closed;
        let result = self.sandbox.call(&self.engine, &self.limits, |b, store| {
            let mut out = ParseOutput::default();
            if !opened.is_empty() {
                b.call_opened(&mut *store, &opened)?;
            }
            if let Some(batch) = &batch {
                absorb(&mut out, b.call_feed(&mut *store, batch)?)?;
            }
            if !closed.is_empty() {
                absorb(&mut out, b.call_closed(&mut *store, closed)?)?;
            }
            Ok(out)
        });
        if let Some(batch) = batch {
            job.data = batch.data;
            job.ends = batch.ends;
        }
        result
    }
}

/// Records and claims of one call, checked: spans must lie in the batch's text, and a record
/// must name a connection.
fn absorb(out: &mut ParseOutput, r: w::FeedResult) -> wasmtime::Result<()> {
    let span = |s: w::Span| Span {
        start: s.start,
        len: s.len,
    };
    let b = r.records;
    let batch = RecordBatch {
        heads: b
            .heads
            .iter()
            .map(|h| RecordHead {
                conn: h.conn,
                protocol: span(h.protocol),
                operation: span(h.operation),
                status: h.status,
                error: h.error.map(span),
                request_ts_ns: h.request_ts_ns,
                response_ts_ns: h.response_ts_ns,
                request_bytes: h.request_bytes,
                response_bytes: h.response_bytes,
                attrs_start: h.attrs_start,
                attrs_len: h.attrs_len,
            })
            .collect(),
        attrs: b.attrs.iter().map(|(k, v)| (span(*k), span(*v))).collect(),
        text: b.text,
    };
    batch.validate().map_err(BadOutput)?;
    if batch.heads.iter().any(|h| h.conn == 0) {
        return Err(BadOutput("a record without a connection id".into()).into());
    }
    if !batch.heads.is_empty() {
        let batch = std::sync::Arc::new(batch);
        out.records
            .extend((0..batch.heads.len() as u32).map(|i| pp::Record::Batched(batch.clone(), i)));
    }
    out.claims.extend(r.claims.into_iter().map(|(c, claim)| {
        (
            c,
            match claim {
                w::Claim::Undecided => Claim::Undecided,
                w::Claim::Mine => Claim::Mine,
                w::Claim::NotMine => Claim::NotMine,
                w::Claim::Finished => Claim::Finished,
            },
        )
    }));
    Ok(())
}

fn conn_to_wit(c: &pp::ConnInfo) -> w::ConnInfo {
    let ep = |e: &Option<sonde_sdk::protocol_parser::Endpoint>| {
        e.as_ref().map(|e| w::Endpoint {
            ip: e.ip.clone(),
            port: e.port,
        })
    };
    w::ConnInfo {
        id: c.id,
        pid: c.pid,
        comm: c.comm.clone(),
        local: ep(&c.local),
        remote: ep(&c.remote),
        role: match c.role {
            Role::Unknown => w::Role::Unknown,
            Role::Client => w::Role::Client,
            Role::Server => w::Role::Server,
        },
        transport: match c.transport {
            Transport::Tcp => w::Transport::Tcp,
            Transport::Udp => w::Transport::Udp,
        },
        labels: c.labels.clone(),
    }
}

/// The engine parsers run in, from `[plugins]`.
pub fn engine(cfg: &PluginsConfig) -> Result<Arc<PluginEngine>> {
    Ok(Arc::new(PluginEngine::with_options(
        &EngineOptions::from_config(cfg),
    )?))
}

/// The embedded parsers (unless `default_parsers = false`) and every `*.wasm` in
/// `parser_dirs`, sorted by file name. A component there must pass [`super::manifest::verify`]
/// (signed by a trusted key, or in an `allow_unsigned_dirs` directory) and its own `info` must
/// agree with its manifest; the bytes verified are the bytes loaded. A component that does not
/// load is an error naming its file: the operator asked for it. Two parsers with one name are an
/// error too.
pub fn load_all(cfg: &PluginsConfig, engine: &Arc<PluginEngine>) -> Result<Vec<WasmParser>> {
    use super::manifest::{self, Trust, World};
    let files = super::wasm_files(&cfg.parser_dirs, "parser")?;
    let trust = Trust::from_config(cfg, Some(World::ProtocolParser))?;
    // Every component checked before anything compiles: a refusal comes first, and names the
    // file and what to do.
    let verified = files
        .iter()
        .map(|f| manifest::verify(f, &trust))
        .collect::<Result<Vec<_>, _>>()?;
    let mut parsers: Vec<WasmParser> = Vec::new();
    if cfg.default_parsers {
        for (what, wasm) in embedded() {
            anyhow::ensure!(
                !wasm.is_empty(),
                "this sonde was built with SONDE_WASM_SKIP: it has no embedded {what} parser (set default_parsers = false)"
            );
            parsers.push(
                WasmParser::load(engine.clone(), cfg.limits, wasm, "embedded")
                    .with_context(|| format!("loading the embedded {what} parser"))?,
            );
        }
    }
    for verified in verified {
        let file = &verified.path;
        let p = WasmParser::load(
            engine.clone(),
            cfg.limits,
            &verified.wasm,
            &file.display().to_string(),
        )
        .with_context(|| format!("loading parser component {}", file.display()))?;
        verified.check_identity(&p.name, &p.version)?;
        tracing::info!(parser = %p.name, file = %file.display(), provenance = %verified.provenance(), "parser component verified");
        if let Some(other) = parsers.iter().find(|o| o.name == p.name) {
            anyhow::bail!(
                "{}: a parser named {:?} is already loaded from {}",
                file.display(),
                p.name,
                other.source
            );
        }
        parsers.push(p);
    }
    Ok(parsers)
}
