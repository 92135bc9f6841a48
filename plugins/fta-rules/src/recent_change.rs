//! Recent change: a deploy, config reload or plugin swap on the subject shortly before the
//! incident started.

use sonde_sdk::fault_rule::params::{ParamSpec, Params, RuleSpec};
use sonde_sdk::fault_rule::{Category, Diagnosis, Evidence, RuleInput};

/// `[live.rules.recent-change]`.
pub const SPEC: RuleSpec = RuleSpec {
    name: "recent-change",
    doc: "A deploy, config reload or plugin swap on the subject shortly before the incident.",
    params: &[
        ParamSpec {
            name: "window_min",
            default: 15.0,
            min: 0.0,
            max: 10080.0,
            doc: "How many minutes before the incident a change still counts",
        },
        ParamSpec {
            name: "close_min",
            default: 5.0,
            min: 0.0,
            max: 10080.0,
            doc: "A change at most this many minutes before the start gets confidence, an earlier one confidence_older",
        },
        ParamSpec {
            name: "confidence",
            default: 0.7,
            min: 0.0,
            max: 1.0,
            doc: "The change came within close_min of the start",
        },
        ParamSpec {
            name: "confidence_older",
            default: 0.5,
            min: 0.0,
            max: 1.0,
            doc: "The change came earlier, within window_min",
        },
    ],
};

pub fn recent_change(input: &RuleInput, params: &Params) -> Option<Diagnosis> {
    let p = params.of(&SPEC);
    let window_ms = p.get("window_min") * 60_000.0;
    let start = input.incident.started_at_ms;
    let c = input
        .changes
        .iter()
        .filter(|c| {
            c.subject == input.subject.id
                && c.at_ms <= start
                && (start - c.at_ms) as f64 <= window_ms
        })
        .max_by_key(|c| c.at_ms)?;
    let minutes = (start - c.at_ms) as f64 / 60_000.0;
    Some(Diagnosis {
        category: Category::RecentChange,
        // The closer to the start, the likelier the link.
        confidence: if minutes <= p.get("close_min") {
            p.get("confidence")
        } else {
            p.get("confidence_older")
        },
        evidence: vec![Evidence {
            metric: "change".into(),
            before: 0.0,
            after: minutes,
            note: c.description.clone(),
        }],
        explanation: format!(
            "{} changed {:.0} min before the incident: {}",
            input.subject.id, minutes, c.description
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    fn recent_change(i: &RuleInput) -> Option<Diagnosis> {
        super::recent_change(i, &Params::default())
    }
    use sonde_sdk::fault_rule::{Change, SubjectKind, metric as m};

    fn change(minutes_before: u64, subject: &str) -> Change {
        Change {
            at_ms: START_MS - minutes_before * 60_000,
            subject: subject.into(),
            description: "schema migration".into(),
        }
    }

    #[test]
    fn a_change_minutes_before_is_named() {
        let mut i = input(
            SubjectKind::Service,
            "mysql",
            vec![metric(m::LATENCY_MEAN_MS, 2.0, 120.0, true)],
        );
        i.changes = vec![change(12, "mysql"), change(2, "mysql")];
        let d = recent_change(&i).unwrap();
        assert_eq!(d.confidence, 0.7, "the latest change counts");
        assert!(
            d.explanation
                .contains("mysql changed 2 min before the incident: schema migration"),
            "{}",
            d.explanation
        );
        i.changes = vec![change(12, "mysql")];
        assert_eq!(recent_change(&i).unwrap().confidence, 0.5);
    }

    #[test]
    fn old_later_or_foreign_changes_are_not() {
        let mut i = input(SubjectKind::Service, "mysql", vec![]);
        i.changes = vec![change(60, "mysql"), change(2, "cart")];
        i.changes.push(Change {
            at_ms: START_MS + 60_000,
            subject: "mysql".into(),
            description: "after".into(),
        });
        assert!(recent_change(&i).is_none());
        assert!(categories(&i).is_empty());
    }
}
