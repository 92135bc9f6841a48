//! One parser's end of the pipeline: the connections it was told about (to tag its records),
//! and the ones a failure poisoned.
//!
//! A failed call (trap, deadline, memory cap, quarantine) loses the state of every connection
//! the backend was parsing: a Wasm instance that failed is dropped. Those connections are
//! poisoned here — their later segments never reach the fresh instance, which would see them
//! mid-stream — until they close, and reported as abandoned so the router stops sending them.

use sonde_capture::tables::IdMap;
use std::collections::HashSet;
use std::sync::Arc;

use sonde_parse::Failure;
use sonde_parse::{
    Claim, ConnInfo, ParseJob, ParserBackend, ParserCounters, ParserStats, TaggedRecord,
};

/// What one job produced.
#[derive(Debug, Default)]
pub struct SlotOutput {
    /// Index of the parser in the router.
    pub parser: usize,
    pub records: Vec<TaggedRecord>,
    pub claims: Vec<(u64, Claim)>,
    /// Connections whose state this job's failure destroyed.
    pub abandoned: Vec<u64>,
    pub failure: Option<Failure>,
    /// The job that was run, emptied, its buffers kept: the router reuses it instead of
    /// growing a new one from nothing (see [`ParserSlot::run_to_spent`]).
    pub spent: ParseJob,
}

pub struct ParserSlot {
    index: usize,
    backend: Box<dyn ParserBackend>,
    /// Connections announced to the backend, and whether it still parses them (not decided
    /// `NotMine`/`Finished`): only those lose something when it fails.
    conns: IdMap<(Arc<ConnInfo>, bool)>,
    poisoned: HashSet<u64>,
    pub counters: ParserCounters,
}

impl ParserSlot {
    pub fn new(index: usize, backend: Box<dyn ParserBackend>) -> Self {
        Self {
            index,
            backend,
            conns: IdMap::default(),
            poisoned: HashSet::new(),
            counters: ParserCounters::default(),
        }
    }

    pub fn name(&self) -> &str {
        self.backend.name()
    }

    /// Connections the slot tracks (live and poisoned).
    pub fn tracked(&self) -> usize {
        self.conns.len() + self.poisoned.len()
    }

    pub fn stats(&self) -> ParserStats {
        ParserStats {
            name: self.backend.name().to_string(),
            version: self.backend.version().to_string(),
            source: self.backend.source().to_string(),
            health: self.backend.health(),
            counters: self.counters.clone(),
        }
    }

    /// [`Self::run`], then hands the emptied job back in the output's `spent`.
    pub fn run_to_spent(&mut self, mut job: ParseJob) -> SlotOutput {
        let mut out = self.run(&mut job);
        job.clear();
        out.spent = job;
        out
    }

    pub fn run(&mut self, job: &mut ParseJob) -> SlotOutput {
        let mut out = SlotOutput {
            parser: self.index,
            ..Default::default()
        };
        for c in &job.opened {
            if !self.poisoned.contains(&c.id) {
                self.conns.insert(c.id, (c.clone(), true));
            }
        }
        for c in &job.relabeled {
            if let Some((info, _)) = self.conns.get_mut(&c.id) {
                *info = c.clone();
            }
        }
        let mut filtered;
        let job = if job.meta.iter().any(|m| self.poisoned.contains(&m.conn)) {
            filtered = job.without(&|c| self.poisoned.contains(&c));
            &mut filtered
        } else {
            job
        };
        self.counters.jobs += 1;
        self.counters.segments += job.meta.len() as u64;
        self.counters.bytes += job.data.len() as u64;
        match self.backend.run(job) {
            Ok(parsed) => {
                for record in parsed.records {
                    let conn = self
                        .conns
                        .get(&record.conn())
                        .map(|(c, _)| c.clone())
                        .unwrap_or_else(|| {
                            Arc::new(ConnInfo {
                                id: record.conn(),
                                ..Default::default()
                            })
                        });
                    out.records.push(TaggedRecord { conn, record });
                }
                self.counters.records += out.records.len() as u64;
                for (conn, claim) in &parsed.claims {
                    match claim {
                        Claim::Mine => self.counters.claimed += 1,
                        Claim::NotMine | Claim::Finished => {
                            if let Some((_, active)) = self.conns.get_mut(conn) {
                                *active = false;
                            }
                        }
                        Claim::Undecided => {}
                    }
                }
                out.claims = parsed.claims;
            }
            Err(failure) => {
                // Every connection the backend knew is gone with its instance, and so are the
                // ones this job was about to introduce.
                let mut lost: Vec<u64> = self
                    .conns
                    .drain()
                    .filter(|(_, (_, active))| *active)
                    .map(|(id, _)| id)
                    .collect();
                lost.extend(job.meta.iter().map(|m| m.conn));
                lost.sort_unstable();
                lost.dedup();
                lost.retain(|c| !job.closed.contains(c));
                self.counters.abandoned += lost.len() as u64;
                self.poisoned.extend(lost.iter().copied());
                out.abandoned = lost;
                out.failure = Some(failure);
            }
        }
        for c in &job.closed {
            self.conns.remove(c);
            self.poisoned.remove(c);
        }
        out
    }
}
