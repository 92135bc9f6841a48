//! Panic isolation for the daemon's non-core tasks: log mining, correlation scans and the live
//! engine. They digest what other processes write and what the node looks like, so a bug in
//! them must cost that task, not the daemon: capture, parsing and `/metrics` go on.
//!
//! A task that panics is counted (`sonde_task_panics_total{task="…"}`), logged once with its
//! panic message, and turned off until the daemon restarts: its state may be half-updated (a
//! poisoned lock, a broken invariant), and running it again on the same input would most
//! likely panic again — every time printing a backtrace and throwing its state away.
//!
//! Catching needs `panic = "unwind"` (Rust's default; no profile of the workspace aborts).
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A task that may fail without taking the daemon with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Log mining: stdout/stderr chunks, tailed files, the miner's tick.
    Logs,
    /// Correlation scans: processes, cgroups, container usage.
    Correlate,
    /// The live engine: history, detection, incident reports.
    Live,
}

impl Task {
    pub const ALL: [Task; 3] = [Task::Logs, Task::Correlate, Task::Live];

    pub fn as_str(self) -> &'static str {
        match self {
            Task::Logs => "logs",
            Task::Correlate => "correlate",
            Task::Live => "live",
        }
    }
}

/// Panics caught per task, shared by the tasks' guards and `/metrics`.
#[derive(Debug, Default)]
pub struct TaskPanics([AtomicU64; Task::ALL.len()]);

impl TaskPanics {
    pub fn get(&self, task: Task) -> u64 {
        self.0[task as usize].load(Ordering::Relaxed)
    }

    fn add(&self, task: Task) {
        self.0[task as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `sonde_task_panics_total`, one series per task (zeros included, to alert on).
    pub fn render(&self, ex: &mut sonde_metrics::Exposition) {
        let mut c = ex.counter(
            "sonde_task_panics_total",
            "Panics caught in a non-core task; the task is off after its first (capture and metrics go on).",
        );
        for task in Task::ALL {
            c.sample([("task", task.as_str())], self.get(task));
        }
    }
}

/// A task's state, run one step at a time with panics caught. No state: the task is off
/// (not configured, or it panicked).
pub struct Isolated<T> {
    task: Task,
    state: Option<T>,
    panics: Arc<TaskPanics>,
}

impl<T> Isolated<T> {
    pub fn new(task: Task, state: Option<T>, panics: Arc<TaskPanics>) -> Self {
        Self {
            task,
            state,
            panics,
        }
    }

    pub fn is_on(&self) -> bool {
        self.state.is_some()
    }

    /// One step of the task: its result, or `None` when the task is off or the step
    /// panicked (counted and logged; the state is dropped, so the task stays off).
    pub fn run<R>(&mut self, step: impl FnOnce(&mut T) -> R) -> Option<R> {
        let state = self.state.as_mut()?;
        // Unwind safety: on a panic the state is dropped, never seen again; what the step
        // shared with others is behind locks that the panic poisons, and their readers take
        // a poisoned lock as "nothing to report".
        match catch_unwind(AssertUnwindSafe(|| step(state))) {
            Ok(r) => Some(r),
            Err(payload) => {
                self.state = None;
                self.panics.add(self.task);
                tracing::error!(
                    task = self.task.as_str(),
                    panic = panic_message(payload.as_ref()),
                    "task panicked; it is off until the daemon restarts (capture and metrics go on)"
                );
                None
            }
        }
    }
}

/// What `panic!` was given, when it was text (it nearly always is).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_step_is_counted_and_turns_its_task_off() {
        let panics = Arc::new(TaskPanics::default());
        let mut logs = Isolated::new(Task::Logs, Some(0u32), panics.clone());
        let mut live = Isolated::new(Task::Live, Some(0u32), panics.clone());
        assert_eq!(logs.run(|n| *n += 1), Some(()));

        let text = "byte index 1 is not a char boundary";
        assert_eq!(logs.run(|_| -> u32 { panic!("{text}") }), None);
        assert_eq!(panics.get(Task::Logs), 1);
        assert!(!logs.is_on());

        // Off: later steps are skipped, not run and not counted again.
        let mut ran = false;
        assert_eq!(
            logs.run(|_| {
                ran = true;
            }),
            None
        );
        assert!(!ran);
        assert_eq!(panics.get(Task::Logs), 1);

        // Other tasks go on.
        assert_eq!(live.run(|n| *n + 41), Some(41));
        assert_eq!(panics.get(Task::Live), 0);
        assert_eq!(panics.get(Task::Correlate), 0);

        let mut ex = sonde_metrics::Exposition::new(sonde_metrics::Format::Prometheus);
        panics.render(&mut ex);
        let o = ex.finish();
        assert!(
            o.contains("# TYPE sonde_task_panics_total counter\n"),
            "{o}"
        );
        assert!(
            o.contains("sonde_task_panics_total{task=\"logs\"} 1\n"),
            "{o}"
        );
        assert!(
            o.contains("sonde_task_panics_total{task=\"correlate\"} 0\n"),
            "{o}"
        );
        assert!(
            o.contains("sonde_task_panics_total{task=\"live\"} 0\n"),
            "{o}"
        );
    }

    #[test]
    fn a_task_without_state_never_runs() {
        let panics = Arc::new(TaskPanics::default());
        let mut live: Isolated<u32> = Isolated::new(Task::Live, None, panics.clone());
        assert!(!live.is_on());
        assert_eq!(live.run(|_| -> u32 { panic!("not reached") }), None);
        assert_eq!(panics.get(Task::Live), 0);
    }

    #[test]
    fn panic_messages_of_both_kinds() {
        let s: Box<dyn Any + Send> = Box::new("static");
        assert_eq!(panic_message(s.as_ref()), "static");
        let s: Box<dyn Any + Send> = Box::new(format!("at {}", 3));
        assert_eq!(panic_message(s.as_ref()), "at 3");
        let s: Box<dyn Any + Send> = Box::new(3u8);
        assert_eq!(panic_message(s.as_ref()), "(no message)");
    }
}
