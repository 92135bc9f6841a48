//! Dependencies: a slow or failing database, failing or slow name resolution.

use sonde_sdk::fault_rule::{Category, Diagnosis, Relation, RuleInput, SubjectKind, metric as m};

use sonde_sdk::fault_rule::helpers::{change, evidence, first_rose, label, neighbours, rose};
use sonde_sdk::fault_rule::params::{ParamSpec, Params, RuleSpec};

/// `[live.rules.database-slow]`.
pub const DATABASE_SPEC: RuleSpec = RuleSpec {
    name: "database-slow",
    doc: "A slow or failing database, or a service whose database calls degraded.",
    params: &[
        ParamSpec {
            name: "confidence_with_slow_queries",
            default: 0.9,
            min: 0.0,
            max: 1.0,
            doc: "A database subject slowed or failing, with slow queries",
        },
        ParamSpec {
            name: "confidence",
            default: 0.85,
            min: 0.0,
            max: 1.0,
            doc: "A database subject slowed or failing",
        },
        ParamSpec {
            name: "confidence_caller",
            default: 0.75,
            min: 0.0,
            max: 1.0,
            doc: "A service whose own database calls degraded",
        },
        ParamSpec {
            name: "confidence_caller_db_in_map",
            default: 0.4,
            min: 0.0,
            max: 1.0,
            doc: "The same, when the database itself is in the map and abnormal (it is the cause)",
        },
    ],
};
/// `[live.rules.dns-failure]`.
pub const DNS_SPEC: RuleSpec = RuleSpec {
    name: "dns-failure",
    doc: "Name resolution failing or slow.",
    params: &[
        ParamSpec {
            name: "confidence_errors_and_latency",
            default: 0.9,
            min: 0.0,
            max: 1.0,
            doc: "Lookups fail and slow down",
        },
        ParamSpec {
            name: "confidence",
            default: 0.85,
            min: 0.0,
            max: 1.0,
            doc: "Lookups fail",
        },
        ParamSpec {
            name: "confidence_latency",
            default: 0.65,
            min: 0.0,
            max: 1.0,
            doc: "Lookups slow down",
        },
    ],
};

/// Protocols that make a service a database.
const DB_PROTOCOLS: &[&str] = &[
    "mysql",
    "postgres",
    "postgresql",
    "redis",
    "mongodb",
    "cassandra",
    "memcached",
];

fn is_database(labels: &[(String, String)]) -> bool {
    label(labels, "kind") == Some("database")
        || label(labels, "protocol").is_some_and(|p| DB_PROTOCOLS.contains(&p))
}

/// Database: the subject is a database whose latency or errors rose, or a service whose own
/// database calls slowed or failed.
pub fn database(input: &RuleInput, params: &Params) -> Option<Diagnosis> {
    if input.subject.kind != SubjectKind::Service {
        return None;
    }
    let p = params.of(&DATABASE_SPEC);
    let ms = &input.subject.metrics;
    if is_database(&input.subject.labels) {
        let x = first_rose(ms, &[m::LATENCY_MEAN_MS, m::LATENCY_P99_MS, m::ERROR_RATE])?;
        let mut ev = vec![evidence(x, "database")];
        ev.extend(rose(ms, m::DB_SLOW_QUERY_RATE).map(|s| evidence(s, "slow queries")));
        return Some(Diagnosis {
            category: Category::DatabaseSlow,
            confidence: if ev.len() > 1 {
                p.get("confidence_with_slow_queries")
            } else {
                p.get("confidence")
            },
            evidence: ev,
            explanation: format!("Database {} is slow: {}", input.subject.id, change(x)),
        });
    }
    let x = first_rose(
        ms,
        &[
            m::DB_QUERY_LATENCY_MS,
            m::DB_SLOW_QUERY_RATE,
            m::DB_ERROR_RATE,
        ],
    )?;
    // When the database itself is in the map and abnormal, it is the cause; this service is
    // only its caller.
    let db_in_map =
        neighbours(input, Relation::Downstream).any(|n| n.abnormal && is_database(&n.labels));
    Some(Diagnosis {
        category: Category::DatabaseSlow,
        confidence: if db_in_map {
            p.get("confidence_caller_db_in_map")
        } else {
            p.get("confidence_caller")
        },
        evidence: vec![evidence(x, "queries from this service")],
        explanation: format!(
            "{}'s database calls degraded: {}",
            input.subject.id,
            change(x)
        ),
    })
}

/// DNS: lookups fail or slow down.
pub fn dns(input: &RuleInput, params: &Params) -> Option<Diagnosis> {
    let p = params.of(&DNS_SPEC);
    let ms = &input.subject.metrics;
    let errors = rose(ms, m::DNS_ERROR_RATE);
    let slow = rose(ms, m::DNS_LATENCY_MS);
    let first = errors.or(slow)?;
    let mut ev = Vec::new();
    ev.extend(errors.map(|x| evidence(x, "failed lookups")));
    ev.extend(slow.map(|x| evidence(x, "lookup time")));
    let confidence = match (errors, slow) {
        (Some(_), Some(_)) => p.get("confidence_errors_and_latency"),
        (Some(_), None) => p.get("confidence"),
        _ => p.get("confidence_latency"),
    };
    Some(Diagnosis {
        category: Category::DnsFailure,
        confidence,
        evidence: ev,
        explanation: format!(
            "Name resolution fails for {}: {}",
            input.subject.id,
            change(first)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    fn database(i: &RuleInput) -> Option<Diagnosis> {
        super::database(i, &Params::default())
    }

    fn dns(i: &RuleInput) -> Option<Diagnosis> {
        super::dns(i, &Params::default())
    }

    #[test]
    fn a_slow_database_subject() {
        let mut i = input(
            SubjectKind::Service,
            "mysql",
            vec![metric(m::LATENCY_MEAN_MS, 2.0, 120.0, true)],
        );
        assert!(database(&i).is_none(), "not known to be a database");
        i.subject.labels.push(("protocol".into(), "mysql".into()));
        assert_eq!(top(&i), Some(Category::DatabaseSlow));
        i.subject
            .metrics
            .push(metric(m::DB_SLOW_QUERY_RATE, 0.0, 14.0, true));
        let d = database(&i).unwrap();
        assert_eq!(d.confidence, 0.9);
        assert!(
            d.explanation
                .contains("Database mysql is slow: latency_mean_ms 2.0 ms → 120.0 ms"),
            "{}",
            d.explanation
        );
    }

    #[test]
    fn a_service_whose_queries_slowed() {
        let mut i = input(
            SubjectKind::Service,
            "product",
            vec![metric(m::DB_QUERY_LATENCY_MS, 3.0, 90.0, true)],
        );
        assert_eq!(database(&i).unwrap().confidence, 0.75);
        // The database is in the map and abnormal: it is the cause, not this caller.
        let mut db = neighbour(
            SubjectKind::Service,
            "mysql",
            Relation::Downstream,
            true,
            vec![],
        );
        db.labels.push(("kind".into(), "database".into()));
        i.neighbours.push(db);
        assert_eq!(database(&i).unwrap().confidence, 0.4);
    }

    #[test]
    fn dns_errors_and_latency() {
        let i = input(
            SubjectKind::Service,
            "cart",
            vec![metric(m::DNS_ERROR_RATE, 0.0, 0.5, true)],
        );
        assert_eq!(top(&i), Some(Category::DnsFailure));
        assert_eq!(dns(&i).unwrap().confidence, 0.85);
        let i = input(
            SubjectKind::Service,
            "cart",
            vec![metric(m::DNS_LATENCY_MS, 1.0, 900.0, true)],
        );
        assert_eq!(dns(&i).unwrap().confidence, 0.65);
        assert!(dns(&i).unwrap().explanation.contains("900.0 ms"));
        let i = input(
            SubjectKind::Service,
            "cart",
            vec![
                metric(m::DNS_ERROR_RATE, 0.0, 0.5, true),
                metric(m::DNS_LATENCY_MS, 1.0, 900.0, true),
            ],
        );
        assert_eq!(dns(&i).unwrap().evidence.len(), 2);
    }
}
