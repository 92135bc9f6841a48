//! Downstream slow: the service is slow or failing because a service it calls is. The engine
//! recurses into that downstream; this branch only says "explained by X below".

use sonde_sdk::fault_rule::{Category, Diagnosis, Relation, RuleInput, SubjectKind, metric as m};

use sonde_sdk::fault_rule::helpers::{change, evidence, first_rose, neighbours};
use sonde_sdk::fault_rule::params::{ParamSpec, Params, RuleSpec};

/// `[live.rules.downstream-slow]`.
pub const SPEC: RuleSpec = RuleSpec {
    name: "downstream-slow",
    doc: "A service slow or failing because a service it calls is.",
    params: &[
        ParamSpec {
            name: "confidence",
            default: 0.7,
            min: 0.0,
            max: 1.0,
            doc: "The calls to the abnormal downstream show the rise too",
        },
        ParamSpec {
            name: "confidence_unseen",
            default: 0.4,
            min: 0.0,
            max: 1.0,
            doc: "The downstream is abnormal but the calls to it show no rise",
        },
    ],
};

pub fn downstream(input: &RuleInput, params: &Params) -> Option<Diagnosis> {
    let p = params.of(&SPEC);
    if input.subject.kind != SubjectKind::Service {
        return None;
    }
    let own = first_rose(
        &input.subject.metrics,
        &[m::LATENCY_MEAN_MS, m::LATENCY_P99_MS, m::ERROR_RATE],
    )?;
    // The most abnormal downstream; ties by name, for the same answer every time.
    let culprit = neighbours(input, Relation::Downstream)
        .filter(|n| n.abnormal)
        .max_by(|a, b| a.score.total_cmp(&b.score).then_with(|| b.id.cmp(&a.id)))?;
    // What the calls to it show (caller side of the edge), or its own server-side numbers.
    let seen = first_rose(
        &culprit.metrics,
        &[
            m::CALLER_LATENCY_MS,
            m::LATENCY_MEAN_MS,
            m::CALLER_ERROR_RATE,
            m::ERROR_RATE,
        ],
    );
    let mut ev = vec![evidence(own, "the service")];
    ev.extend(seen.map(|x| evidence(x, &format!("calls to {}", culprit.id))));
    let why = seen
        .map(|x| format!(", whose {}", change(x)))
        .unwrap_or_default();
    Some(Diagnosis {
        category: Category::DownstreamSlow,
        confidence: if seen.is_some() {
            p.get("confidence")
        } else {
            p.get("confidence_unseen")
        },
        evidence: ev,
        explanation: format!(
            "{} is affected by its downstream {}{why}: {}",
            input.subject.id,
            culprit.id,
            change(own)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    fn downstream(i: &RuleInput) -> Option<Diagnosis> {
        super::downstream(i, &Params::default())
    }

    #[test]
    fn names_the_most_abnormal_downstream() {
        let mut i = input(
            SubjectKind::Service,
            "gateway",
            vec![metric(m::LATENCY_MEAN_MS, 10.0, 90.0, true)],
        );
        i.neighbours.push(neighbour(
            SubjectKind::Service,
            "auth",
            Relation::Downstream,
            false,
            vec![],
        ));
        assert!(
            downstream(&i).is_none(),
            "a normal downstream explains nothing"
        );
        let mut slow = neighbour(
            SubjectKind::Service,
            "product",
            Relation::Downstream,
            true,
            vec![metric(m::LATENCY_MEAN_MS, 8.0, 80.0, true)],
        );
        slow.score = 20.0;
        i.neighbours.push(slow);
        i.neighbours.push(neighbour(
            SubjectKind::Service,
            "cart",
            Relation::Downstream,
            true,
            vec![],
        ));
        let d = downstream(&i).unwrap();
        assert_eq!(d.category, Category::DownstreamSlow);
        assert!(
            d.explanation
                .starts_with("gateway is affected by its downstream product"),
            "{}",
            d.explanation
        );
        assert_eq!(d.confidence, 0.7);
        assert_eq!(d.evidence[1].note, "calls to product");
        // Upstream callers never explain the subject.
        i.neighbours.retain(|n| n.relation != Relation::Downstream);
        i.neighbours.push(neighbour(
            SubjectKind::Service,
            "web",
            Relation::Upstream,
            true,
            vec![],
        ));
        assert!(downstream(&i).is_none());
    }

    #[test]
    fn an_abnormal_downstream_without_numbers_is_weak() {
        let mut i = input(
            SubjectKind::Service,
            "gateway",
            vec![metric(m::ERROR_RATE, 0.0, 0.2, true)],
        );
        i.neighbours.push(neighbour(
            SubjectKind::Service,
            "cart",
            Relation::Downstream,
            true,
            vec![],
        ));
        assert_eq!(downstream(&i).unwrap().confidence, 0.4);
    }
}
