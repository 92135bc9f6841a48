//! Where parser slots run: inline on the caller's thread, or each on a thread of its own.
//!
//! Threads are the daemon's mode: a plugin that loops until its deadline (200 ms by default)
//! or is slow on a burst only backs up its own bounded queue; capture, reassembly and the other
//! parsers go on. When a queue is full the job is refused and the router abandons the
//! connections in it for that parser (counted), instead of blocking or buffering without bound.
//! Inline is deterministic and single-threaded: benchmarks and unit tests use it.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::slot::{ParserSlot, SlotOutput};
use sonde_parse::ParseJob;
use sonde_parse::ParserStats;

/// Why [`Dispatch::submit`] did not take a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The parser's queue is full: it is behind, a later try may succeed.
    Full,
    /// The parser's thread is gone (retired or stopped): no try will succeed.
    Gone,
}

struct Worker {
    jobs: Option<SyncSender<ParseJob>>,
    stats: Arc<Mutex<ParserStats>>,
    thread: Option<JoinHandle<()>>,
}

enum Mode {
    Inline {
        slots: Vec<ParserSlot>,
        done: VecDeque<SlotOutput>,
    },
    Threads {
        workers: Vec<Worker>,
        results: Receiver<SlotOutput>,
        /// For workers added later (hot load).
        results_tx: mpsc::Sender<SlotOutput>,
        queue_jobs: usize,
    },
}

pub struct Dispatch {
    mode: Mode,
    /// Jobs submitted and not yet returned.
    pending: usize,
}

impl Dispatch {
    /// Slots run when jobs are submitted, on the caller's thread.
    pub fn inline(slots: Vec<ParserSlot>) -> Self {
        Self {
            mode: Mode::Inline {
                slots,
                done: VecDeque::new(),
            },
            pending: 0,
        }
    }

    /// One thread per slot, each with a queue of `queue_jobs` jobs.
    pub fn threaded(slots: Vec<ParserSlot>, queue_jobs: usize) -> Result<Self> {
        let (results_tx, results) = mpsc::channel();
        let mut workers = Vec::new();
        for slot in slots {
            workers.push(spawn_worker(slot, queue_jobs, results_tx.clone())?);
        }
        Ok(Self {
            mode: Mode::Threads {
                workers,
                results,
                results_tx,
                queue_jobs,
            },
            pending: 0,
        })
    }

    /// Add a slot (hot load); returns its index.
    pub fn add(&mut self, slot: ParserSlot) -> Result<usize> {
        match &mut self.mode {
            Mode::Inline { slots, .. } => {
                slots.push(slot);
                Ok(slots.len() - 1)
            }
            Mode::Threads {
                workers,
                results_tx,
                queue_jobs,
                ..
            } => {
                workers.push(spawn_worker(slot, *queue_jobs, results_tx.clone())?);
                Ok(workers.len() - 1)
            }
        }
    }

    /// No more jobs for `parser`: its thread finishes what is queued (the results still
    /// arrive) and ends. Its stats stay as they were last.
    pub fn retire(&mut self, parser: usize) {
        if let Mode::Threads { workers, .. } = &mut self.mode
            && let Some(w) = workers.get_mut(parser)
        {
            w.jobs.take();
            // Joined on drop; a thread mid-call ends at its deadline at the latest.
        }
    }

    pub fn len(&self) -> usize {
        match &self.mode {
            Mode::Inline { slots, .. } => slots.len(),
            Mode::Threads { workers, .. } => workers.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hand a job to parser `parser`. `Err((job, why))`: the job was not taken, because the
    /// queue is full (the parser is behind: worth retrying) or the parser is gone.
    // The job comes back by value so the caller can hold, count or abandon it without a copy
    // or an allocation; a few words of vector headers on the stack are no cost here.
    #[allow(clippy::result_large_err)]
    pub fn submit(&mut self, parser: usize, job: ParseJob) -> Result<(), (ParseJob, Refusal)> {
        match &mut self.mode {
            Mode::Inline { slots, done } => {
                done.push_back(slots[parser].run_to_spent(job));
                Ok(())
            }
            Mode::Threads { workers, .. } => {
                let Some(tx) = &workers[parser].jobs else {
                    return Err((job, Refusal::Gone));
                };
                match tx.try_send(job) {
                    Ok(()) => {
                        self.pending += 1;
                        Ok(())
                    }
                    Err(TrySendError::Full(job)) => Err((job, Refusal::Full)),
                    Err(TrySendError::Disconnected(job)) => Err((job, Refusal::Gone)),
                }
            }
        }
    }

    /// Outputs ready now, without waiting.
    pub fn poll(&mut self, out: &mut Vec<SlotOutput>) {
        match &mut self.mode {
            Mode::Inline { done, .. } => out.extend(done.drain(..)),
            Mode::Threads { results, .. } => {
                while let Ok(o) = results.try_recv() {
                    self.pending -= 1;
                    out.push(o);
                }
            }
        }
    }

    /// Wait (up to `timeout`) until every submitted job has returned; collects the outputs.
    /// Returns whether everything returned.
    pub fn settle(&mut self, timeout: Duration, out: &mut Vec<SlotOutput>) -> bool {
        let deadline = Instant::now() + timeout;
        self.poll(out);
        while self.pending > 0 {
            let Mode::Threads { results, .. } = &self.mode else {
                break;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Ok(o) = results.recv_timeout(left) {
                self.pending -= 1;
                out.push(o);
            }
        }
        true
    }

    /// Jobs submitted and not returned yet.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Every parser's stats (threaded: as of its last finished job).
    pub fn stats(&self) -> Vec<ParserStats> {
        match &self.mode {
            Mode::Inline { slots, .. } => slots.iter().map(ParserSlot::stats).collect(),
            Mode::Threads { workers, .. } => workers
                .iter()
                .filter_map(|w| w.stats.lock().ok().map(|s| s.clone()))
                .collect(),
        }
    }
}

/// A parser slot on a thread of its own, fed through a queue of `queue_jobs` jobs.
fn spawn_worker(
    mut slot: ParserSlot,
    queue_jobs: usize,
    results_tx: mpsc::Sender<SlotOutput>,
) -> Result<Worker> {
    let (tx, rx) = mpsc::sync_channel::<ParseJob>(queue_jobs.max(1));
    let stats = Arc::new(Mutex::new(slot.stats()));
    let shared = stats.clone();
    let thread = std::thread::Builder::new()
        .name(format!("sonde-parse-{}", slot.name()))
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                let out = slot.run_to_spent(job);
                if let Ok(mut s) = shared.lock() {
                    *s = slot.stats();
                }
                if results_tx.send(out).is_err() {
                    break;
                }
            }
        })
        .context("starting a parser thread")?;
    Ok(Worker {
        jobs: Some(tx),
        stats,
        thread: Some(thread),
    })
}

impl Drop for Dispatch {
    fn drop(&mut self) {
        if let Mode::Threads { workers, .. } = &mut self.mode {
            for w in workers.iter_mut() {
                // Closing the queue ends the thread after its current job.
                w.jobs.take();
            }
            for w in workers.iter_mut() {
                if let Some(t) = w.thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}
