//! The incident report and the pipeline that writes it: walk the topology, attribute the KPI
//! changes of abnormal services over their dimensions, ask the fault-tree rules about every
//! candidate in one batch, rank, and explain.

use std::fmt::Write as _;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::attribution::{self, AttributionConfig, Cause, CubeBuilder, KpiKind};
use crate::demarcation::{self, Candidate, DemarcationConfig, Element, Walk};
use crate::detect::Direction;
use crate::rules::{
    Attribution, Category, Diagnosis, Evidence, Incident, Metric, Neighbour, Relation, RuleEngine,
    RuleFailure, RuleInput, RuledDiagnosis, Subject, SubjectKind,
};
use crate::topology::{Breakdown, Entity, Topology};
use sonde_sdk::fault_rule::metric;

/// Tuning of the whole pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisConfig {
    pub demarcation: DemarcationConfig,
    /// Root causes listed in a report.
    pub max_root_causes: Option<usize>,
    /// Attribution causes kept per service KPI.
    pub max_attributions: Option<usize>,
}

impl AnalysisConfig {
    fn root_causes(&self) -> usize {
        self.max_root_causes.unwrap_or(10)
    }
    fn attributions(&self) -> usize {
        self.max_attributions.unwrap_or(5)
    }
}

/// A metric's value before and during the incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyMetric {
    /// `service:gw`, `edge:gw->cart`, `node:n1`.
    pub entity: String,
    pub metric: String,
    pub before: f64,
    pub after: f64,
    /// The detector's badness score during the incident.
    pub score: f64,
    /// The node the entity is on, when the placement names exactly one ([`Placed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Where an element runs, from the bundle's placement: a service on one node has `node`, on
/// several `nodes` (all of them, in name order); a machine is its own node; an edge is placed
/// on its callee's node(s), its caller's one node is `caller_node`. Empty when the placement
/// says nothing (a peer known only by its address).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_node: Option<String>,
}

impl Placed {
    pub fn of(topology: &Topology, element: &Element) -> Placed {
        let one_or_many = |hosts: &[String]| match hosts {
            [] => (None, Vec::new()),
            [one] => (Some(one.clone()), Vec::new()),
            many => (None, many.to_vec()),
        };
        match element {
            Element::Node { name } => Placed {
                node: Some(name.clone()),
                ..Placed::default()
            },
            Element::Service { name } => {
                let (node, nodes) = one_or_many(topology.hosts(name));
                Placed {
                    node,
                    nodes,
                    caller_node: None,
                }
            }
            Element::Edge { caller, callee } => {
                let (node, nodes) = one_or_many(topology.hosts(callee));
                Placed {
                    node,
                    nodes,
                    caller_node: one_or_many(topology.hosts(caller)).0,
                }
            }
        }
    }

    /// `node-c`, `node-a,node-b`, or nothing.
    pub fn describe(&self) -> Option<String> {
        self.node
            .clone()
            .or_else(|| (!self.nodes.is_empty()).then(|| self.nodes.join(",")))
    }
}

/// One ranked root cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootCause {
    pub rank: usize,
    pub element: Element,
    /// The category of the most confident diagnosis; `unknown` when no rule matched.
    pub category: String,
    pub confidence: f64,
    /// Final ranking score, 0..=1.
    pub score: f64,
    pub explanation: String,
    pub evidence: Vec<Evidence>,
    /// The rule that made the diagnosis.
    pub rule: Option<String>,
    /// Every diagnosis the rules gave this element, most confident first.
    pub diagnoses: Vec<RuledDiagnosis>,
    /// How the fault travels: from this root cause up to the entry service.
    pub propagation: Vec<Element>,
    /// The node(s) it is on.
    #[serde(flatten)]
    pub placed: Placed,
}

impl RootCause {
    /// `{sep}node-c` for text, nothing when unplaced or the cause is the machine itself.
    fn where_text(&self, sep: &str) -> String {
        match (&self.element, self.placed.describe()) {
            (Element::Node { .. }, _) | (_, None) => String::new(),
            (_, Some(n)) => format!("{sep}{n}"),
        }
    }
}

/// Attribution results for one KPI of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceAttribution {
    pub service: String,
    pub kpi: String,
    pub causes: Vec<Cause>,
}

/// The SLO burn-rate gate's verdict on the incident's entry service.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SloVerdict {
    pub objective: f64,
    /// Highest burn rate over the long windows during the incident (1.0 = on budget).
    pub burn_rate: f64,
    /// Whether the multi-window gate fired (worth paging someone).
    pub firing: bool,
}

/// What Sonde tells a person about an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub incident: Incident,
    /// One line: what the entry service's users see.
    pub phenomenon: String,
    pub key_metrics: Vec<KeyMetric>,
    pub root_causes: Vec<RootCause>,
    /// The propagation path of the first root cause (root → … → entry) as ids: the root, then
    /// the services (and machine) the fault travelled through.
    pub propagation_path: Vec<String>,
    pub attributions: Vec<ServiceAttribution>,
    /// Rules that could not answer (trap, deadline, memory cap).
    pub rule_failures: Vec<RuleFailure>,
    /// The burn-rate gate, when the entry service has an SLO.
    pub slo: Option<SloVerdict>,
    /// When `root_causes` is empty: that nothing was found, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nothing_found: Option<String>,
    /// Elements visited by the walk and abnormal candidates among them.
    pub visited: usize,
    pub candidates: usize,
    /// Wall time of the analysis.
    pub elapsed_ms: f64,
}

fn entity_key(element: &Element) -> String {
    match element.kind() {
        SubjectKind::Service => format!("service:{}", element.id()),
        SubjectKind::Edge => format!("edge:{}", element.id()),
        SubjectKind::Node => format!("node:{}", element.id()),
    }
}

fn entity_of<'a>(topology: &'a Topology, element: &Element) -> Option<&'a Entity> {
    match element {
        Element::Service { name } => topology.services.get(name),
        Element::Node { name } => topology.nodes.get(name),
        Element::Edge { caller, callee } => topology.edge(caller, callee),
    }
}

fn metrics_of(entity: Option<&Entity>) -> Vec<Metric> {
    entity
        .map(|e| {
            e.metrics
                .iter()
                .map(|(name, w)| Metric {
                    name: name.clone(),
                    before: w.before,
                    after: w.after,
                    anomalous: w.anomalous,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn labels_of(entity: Option<&Entity>) -> Vec<(String, String)> {
    entity
        .map(|e| {
            e.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Run attribution on one breakdown.
pub fn attribute_breakdown(breakdown: &Breakdown, keep: usize) -> Vec<Cause> {
    let ratio = breakdown
        .rows
        .iter()
        .any(|r| r.den_before.is_some() || r.den_after.is_some());
    let kind = if ratio {
        KpiKind::Ratio
    } else {
        KpiKind::Additive
    };
    let dims: Vec<&str> = breakdown.dimensions.iter().map(String::as_str).collect();
    let mut builder = CubeBuilder::new(&dims, kind);
    for row in &breakdown.rows {
        if row.values.len() != dims.len() {
            continue;
        }
        let values: Vec<&str> = row.values.iter().map(String::as_str).collect();
        if ratio {
            builder.add_ratio(
                &values,
                row.after,
                row.before,
                row.den_after.unwrap_or(0.0),
                row.den_before.unwrap_or(0.0),
            );
        } else {
            builder.add(&values, row.after, row.before);
        }
    }
    let mut causes = attribution::attribute(&builder.build(), &AttributionConfig::default());
    causes.truncate(keep);
    causes
}

fn attributions_for(
    topology: &Topology,
    service: &str,
    incident_kpi: &str,
    keep: usize,
) -> Vec<ServiceAttribution> {
    let Some(entity) = topology.services.get(service) else {
        return Vec::new();
    };
    entity
        .breakdowns
        .iter()
        .filter(|b| b.kpi == incident_kpi || entity.metric(&b.kpi).is_some_and(|w| w.anomalous))
        .map(|b| ServiceAttribution {
            service: service.to_string(),
            kpi: b.kpi.clone(),
            causes: attribute_breakdown(b, keep),
        })
        .filter(|a| !a.causes.is_empty())
        .collect()
}

fn neighbour(topology: &Topology, walk: &Walk, element: Element, relation: Relation) -> Neighbour {
    let entity = entity_of(topology, &element);
    let candidate = walk.candidates.iter().find(|c| c.element == element);
    Neighbour {
        kind: element.kind(),
        id: element.id(),
        relation,
        abnormal: candidate.is_some(),
        score: candidate.map_or(0.0, |c| c.anomaly),
        metrics: metrics_of(entity),
        labels: labels_of(entity),
    }
}

/// What a rule sees about `candidate`.
pub fn rule_input(
    topology: &Topology,
    incident: &Incident,
    walk: &Walk,
    candidate: &Candidate,
    attributions: &[ServiceAttribution],
) -> RuleInput {
    let element = &candidate.element;
    let entity = entity_of(topology, element);
    let mut neighbours = Vec::new();
    match element {
        Element::Service { name } => {
            for callee in topology.callees(name) {
                let mut n = neighbour(
                    topology,
                    walk,
                    Element::Service {
                        name: callee.to_string(),
                    },
                    Relation::Downstream,
                );
                // The caller's view of the call is what tells a slow downstream from a slow network.
                let edge = Element::Edge {
                    caller: name.clone(),
                    callee: callee.to_string(),
                };
                n.abnormal |= walk.candidates.iter().any(|c| c.element == edge);
                n.metrics.extend(metrics_of(entity_of(topology, &edge)));
                neighbours.push(n);
            }
            for caller in topology.callers(name) {
                neighbours.push(neighbour(
                    topology,
                    walk,
                    Element::Service {
                        name: caller.to_string(),
                    },
                    Relation::Upstream,
                ));
            }
            for node in topology.hosts(name) {
                neighbours.push(neighbour(
                    topology,
                    walk,
                    Element::Node { name: node.clone() },
                    Relation::Host,
                ));
            }
        }
        Element::Edge { caller, callee } => {
            neighbours.push(neighbour(
                topology,
                walk,
                Element::Service {
                    name: caller.clone(),
                },
                Relation::Caller,
            ));
            neighbours.push(neighbour(
                topology,
                walk,
                Element::Service {
                    name: callee.clone(),
                },
                Relation::Callee,
            ));
        }
        Element::Node { name } => {
            for service in topology.hosted(name) {
                neighbours.push(neighbour(
                    topology,
                    walk,
                    Element::Service {
                        name: service.to_string(),
                    },
                    Relation::Hosted,
                ));
            }
        }
    }
    let id = element.id();
    let attributions = attributions
        .iter()
        .filter(|a| a.service == id)
        .flat_map(|a| {
            a.causes.iter().map(|c| Attribution {
                kpi: a.kpi.clone(),
                elements: c.elements.clone(),
                explanatory_power: c.explanatory_power,
                before: c.forecast,
                after: c.actual,
            })
        })
        .collect();
    let changes = topology
        .changes
        .iter()
        .filter(|c| c.subject == id)
        .cloned()
        .collect();
    RuleInput {
        incident: incident.clone(),
        subject: Subject {
            kind: element.kind(),
            id,
            metrics: metrics_of(entity),
            labels: labels_of(entity),
        },
        neighbours,
        attributions,
        changes,
    }
}

fn is_propagation(d: &Diagnosis) -> bool {
    d.category == Category::DownstreamSlow
}

fn key_metrics(topology: &Topology, element: &Element, limit: usize) -> Vec<KeyMetric> {
    let Some(entity) = entity_of(topology, element) else {
        return Vec::new();
    };
    let mut out: Vec<KeyMetric> = entity
        .metrics
        .iter()
        .filter(|(_, w)| w.anomalous)
        .map(|(name, w)| KeyMetric {
            entity: entity_key(element),
            metric: name.clone(),
            before: w.before,
            after: w.after,
            score: Direction::for_metric(name).badness(w.score),
            node: Placed::of(topology, element).node,
        })
        .collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.metric.cmp(&b.metric))
    });
    out.truncate(limit);
    out
}

/// A number for a person: no trailing noise, percentages for ratios.
pub fn fmt_value(metric: &str, v: f64) -> String {
    // Evidence may qualify a metric: `error_rate [endpoint=/checkout]`.
    let metric = metric.split(' ').next().unwrap_or(metric);
    if !v.is_finite() {
        return "n/a".into();
    }
    let unit = match metric::unit(metric) {
        metric::Unit::Ratio => return format!("{:.2}%", v * 100.0),
        metric::Unit::Milliseconds => " ms",
        metric::Unit::PerSecond => "/s",
        metric::Unit::Cores | metric::Unit::Other => "",
    };
    if v.abs() >= 100.0 {
        format!("{v:.0}{unit}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.3}{unit}")
    }
}

fn phenomenon(topology: &Topology, incident: &Incident) -> String {
    let metrics = key_metrics(
        topology,
        &Element::Service {
            name: incident.entry.clone(),
        },
        3,
    );
    if metrics.is_empty() {
        return format!("{}: {} is anomalous", incident.entry, incident.kpi);
    }
    let parts: Vec<String> = metrics
        .iter()
        .map(|k| {
            format!(
                "{} {} → {}",
                k.metric,
                fmt_value(&k.metric, k.before),
                fmt_value(&k.metric, k.after)
            )
        })
        .collect();
    format!("{}: {}", incident.entry, parts.join(", "))
}

/// Why a report has no root cause, in words: the entry KPI did not move enough, or nothing
/// else in the topology did, or nothing reports metrics at all.
fn nothing_found(topology: &Topology, incident: &Incident, visited: usize) -> String {
    let with_metrics = topology
        .services
        .values()
        .chain(topology.nodes.values())
        .chain(topology.edges.values())
        .filter(|e| !e.metrics.is_empty())
        .count();
    if with_metrics == 0 {
        return "no service, edge or machine reports metrics over the incident window".into();
    }
    let kpi = topology
        .services
        .get(&incident.entry)
        .and_then(|e| e.metric(&incident.kpi));
    let entry = match kpi {
        None => format!(
            "{} has no {} samples in the window",
            incident.entry, incident.kpi
        ),
        Some(w) if !w.anomalous => format!(
            "{} of {} went {} → {} (score {:.1}), within its usual variation",
            incident.kpi,
            incident.entry,
            fmt_value(&incident.kpi, w.before),
            fmt_value(&incident.kpi, w.after),
            w.score
        ),
        Some(w) => format!(
            "{} of {} is anomalous ({} → {}) but no other metric of the {} elements with metrics is",
            incident.kpi,
            incident.entry,
            fmt_value(&incident.kpi, w.before),
            fmt_value(&incident.kpi, w.after),
            with_metrics
        ),
    };
    format!(
        "nothing found: {entry}; the walk visited {visited} elements and none is abnormal on its own"
    )
}

/// Analyse an incident: walk, attribute, run the rules in one batch, rank and explain.
pub fn analyze(
    topology: &Topology,
    incident: &Incident,
    rules: &mut dyn RuleEngine,
    cfg: &AnalysisConfig,
) -> Report {
    let started = Instant::now();
    let mut walk = demarcation::walk(topology, &incident.entry, &cfg.demarcation);

    let mut attributions = Vec::new();
    for c in &walk.candidates {
        if let Element::Service { name } = &c.element {
            attributions.extend(attributions_for(
                topology,
                name,
                &incident.kpi,
                cfg.attributions(),
            ));
        }
    }
    let inputs: Vec<RuleInput> = walk
        .candidates
        .iter()
        .map(|c| rule_input(topology, incident, &walk, c, &attributions))
        .collect();
    let outcome = if inputs.is_empty() {
        Default::default()
    } else {
        rules.evaluate(&inputs)
    };
    // A machine explains the services on it only if a rule finds it at fault.
    let undiagnosed_nodes: Vec<Element> = walk
        .candidates
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            c.element.kind() == SubjectKind::Node
                && !outcome
                    .diagnoses
                    .get(*i)
                    .is_some_and(|d| d.iter().any(|d| !is_propagation(&d.diagnosis)))
        })
        .map(|(_, c)| c.element.clone())
        .collect();
    for node in &undiagnosed_nodes {
        demarcation::withdraw_explanations(&mut walk, node);
    }

    let max_score = walk
        .candidates
        .iter()
        .map(|c| c.score)
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let mut ranked: Vec<(f64, &Candidate, Vec<RuledDiagnosis>)> = walk
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut diagnoses = outcome.diagnoses.get(i).cloned().unwrap_or_default();
            diagnoses.sort_by(|a, b| {
                is_propagation(&a.diagnosis)
                    .cmp(&is_propagation(&b.diagnosis))
                    .then(b.diagnosis.confidence.total_cmp(&a.diagnosis.confidence))
                    .then_with(|| a.rule.cmp(&b.rule))
            });
            let own = diagnoses
                .first()
                .filter(|d| !is_propagation(&d.diagnosis))
                .map(|d| d.diagnosis.confidence.clamp(0.0, 1.0));
            let norm = c.score / max_score;
            // An element the rules explain as propagation (or that the walk found explained) is
            // a victim; the rules' confidence in a fault of its own lifts a cause.
            let weight = match own {
                Some(conf) => 0.4 + 0.6 * conf,
                None => 0.3,
            };
            (norm * weight, c, diagnoses)
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.explained_by.is_some().cmp(&b.1.explained_by.is_some()))
            .then(b.1.depth.cmp(&a.1.depth))
            .then_with(|| a.1.element.cmp(&b.1.element))
    });
    // Roots first: elements nothing explains. Victims only when there is nothing else.
    let roots: Vec<_> = ranked
        .iter()
        .filter(|(_, c, _)| c.explained_by.is_none())
        .collect();
    let listed: Vec<_> = if roots.is_empty() {
        ranked.iter().collect()
    } else {
        roots
    };

    let root_causes: Vec<RootCause> = listed
        .into_iter()
        .take(cfg.root_causes())
        .enumerate()
        .map(|(i, (score, c, diagnoses))| {
            let best = diagnoses.first();
            let mut propagation = c.path.clone();
            propagation.reverse();
            RootCause {
                rank: i + 1,
                element: c.element.clone(),
                category: best.map_or("unknown".into(), |d| {
                    d.diagnosis.category.name().to_string()
                }),
                confidence: best.map_or(0.0, |d| d.diagnosis.confidence),
                score: *score,
                explanation: best.map_or_else(
                    || format!("{} is abnormal; no rule matched it", c.element.id()),
                    |d| d.diagnosis.explanation.clone(),
                ),
                evidence: best
                    .map(|d| d.diagnosis.evidence.clone())
                    .unwrap_or_default(),
                rule: best.map(|d| d.rule.clone()),
                diagnoses: diagnoses.clone(),
                propagation,
                placed: Placed::of(topology, &c.element),
            }
        })
        .collect();

    let mut key = key_metrics(
        topology,
        &Element::Service {
            name: incident.entry.clone(),
        },
        4,
    );
    for rc in root_causes.iter().take(3) {
        for k in key_metrics(topology, &rc.element, 4) {
            if !key
                .iter()
                .any(|x| x.entity == k.entity && x.metric == k.metric)
            {
                key.push(k);
            }
        }
    }
    // Services and machines read best; an edge only when it is the root cause itself.
    let propagation_path = root_causes
        .first()
        .map(|rc| {
            rc.propagation
                .iter()
                .enumerate()
                .filter(|(i, e)| *i == 0 || e.kind() != SubjectKind::Edge)
                .map(|(_, e)| e.id())
                .collect()
        })
        .unwrap_or_default();

    let nothing_found = root_causes
        .is_empty()
        .then(|| nothing_found(topology, incident, walk.visited));
    Report {
        nothing_found,
        incident: incident.clone(),
        phenomenon: phenomenon(topology, incident),
        key_metrics: key,
        root_causes,
        propagation_path,
        attributions,
        rule_failures: outcome.failures,
        slo: None,
        visited: walk.visited,
        candidates: walk.candidates.len(),
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    }
}

impl Report {
    /// The report as a person reads it in a terminal.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Incident {} — entry service {}, KPI {}",
            self.incident.id, self.incident.entry, self.incident.kpi
        );
        let _ = writeln!(s, "Phenomenon: {}", self.phenomenon);
        if let Some(slo) = &self.slo {
            let _ = writeln!(
                s,
                "SLO {:.2}%: error budget burning {:.1}× ({})",
                slo.objective * 100.0,
                slo.burn_rate,
                if slo.firing {
                    "over the paging gate"
                } else {
                    "below the paging gate"
                }
            );
        }
        if let Some(top) = self.root_causes.first() {
            let on = top.where_text(", on ");
            let _ = writeln!(
                s,
                "Most likely: {} ({}{on}, confidence {:.0}%)",
                top.explanation,
                top.category,
                top.confidence * 100.0
            );
        }
        if !self.propagation_path.is_empty() {
            let _ = writeln!(s, "Propagation: {}", self.propagation_path.join(" ⇢ "));
        }
        let _ = writeln!(s, "\nRoot causes:");
        if let Some(why) = &self.nothing_found {
            let _ = writeln!(s, "  none — {why}");
        }
        for rc in &self.root_causes {
            let on = rc.where_text(" on ");
            let _ = writeln!(
                s,
                "  {}. [{}] {} {}{on} — score {:.2}, confidence {:.0}%",
                rc.rank,
                rc.category,
                rc.element.kind_name(),
                rc.element.id(),
                rc.score,
                rc.confidence * 100.0
            );
            let _ = writeln!(s, "     {}", rc.explanation);
            for e in rc.evidence.iter().take(4) {
                let _ = writeln!(
                    s,
                    "     · {}: {} → {}{}",
                    e.metric,
                    fmt_value(&e.metric, e.before),
                    fmt_value(&e.metric, e.after),
                    if e.note.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", e.note)
                    }
                );
            }
        }
        if !self.key_metrics.is_empty() {
            let _ = writeln!(s, "\nKey metrics (before → during):");
            for k in &self.key_metrics {
                let _ = writeln!(
                    s,
                    "  {:<28} {:<22} {} → {}",
                    k.entity,
                    k.metric,
                    fmt_value(&k.metric, k.before),
                    fmt_value(&k.metric, k.after)
                );
            }
        }
        if !self.attributions.is_empty() {
            let _ = writeln!(s, "\nWhere the change concentrates:");
            for a in &self.attributions {
                for c in &a.causes {
                    let elements: Vec<String> =
                        c.elements.iter().map(|(d, v)| format!("{d}={v}")).collect();
                    let _ = writeln!(
                        s,
                        "  {} {}: {} explains {:.0}% ({} → {})",
                        a.service,
                        a.kpi,
                        elements.join(" & "),
                        c.explanatory_power * 100.0,
                        fmt_value(&a.kpi, c.forecast),
                        fmt_value(&a.kpi, c.actual)
                    );
                }
            }
        }
        for f in &self.rule_failures {
            let _ = writeln!(s, "\nRule {} could not answer: {}", f.rule, f.error);
        }
        let _ = writeln!(
            s,
            "\n{} elements visited, {} abnormal, analysed in {:.1} ms",
            self.visited, self.candidates, self.elapsed_ms
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::NativeRules;
    use crate::topology::MetricWindow;

    #[test]
    fn an_empty_report_says_nothing_was_found_and_why() {
        let mut t = Topology::default();
        t.add_service(
            "gw",
            Entity::default()
                .with_metric("error_rate", MetricWindow::new(0.001, 0.004, 2.0, false)),
        );
        t.add_call("gw", "cart", Entity::default());
        let incident = Incident {
            id: "i".into(),
            entry: "gw".into(),
            kpi: "error_rate".into(),
            started_at_ms: 0,
        };
        let report = analyze(
            &t,
            &incident,
            &mut NativeRules::new(),
            &AnalysisConfig::default(),
        );
        assert!(report.root_causes.is_empty());
        let why = report.nothing_found.as_deref().unwrap();
        assert!(why.contains("within its usual variation"), "{why}");
        assert!(report.to_text().contains("none — nothing found"));
    }

    /// A cause names the node(s) it is on from the placement: one node, several, an edge
    /// on its callee's with its caller's beside, a machine itself, an unplaced peer nothing.
    #[test]
    fn a_cause_is_placed_on_its_nodes() {
        let mut t = Topology::default();
        t.add_call("gw", "cart", Entity::default())
            .add_call("gw", "10.0.0.9:80", Entity::default())
            .place("gw", "a")
            .place("cart", "b")
            .place("cart", "c");
        let service = |name: &str| Element::Service { name: name.into() };
        assert_eq!(
            Placed::of(&t, &service("gw")),
            Placed {
                node: Some("a".into()),
                ..Placed::default()
            }
        );
        let cart = Placed::of(&t, &service("cart"));
        assert_eq!(cart.nodes, ["b", "c"]);
        assert_eq!(
            (cart.node.as_deref(), cart.describe().as_deref()),
            (None, Some("b,c"))
        );
        let edge = Placed::of(
            &t,
            &Element::Edge {
                caller: "gw".into(),
                callee: "cart".into(),
            },
        );
        assert_eq!(edge.nodes, ["b", "c"]);
        assert_eq!(edge.caller_node.as_deref(), Some("a"));
        assert_eq!(
            Placed::of(&t, &Element::Node { name: "c".into() })
                .node
                .as_deref(),
            Some("c")
        );
        assert_eq!(Placed::of(&t, &service("10.0.0.9:80")), Placed::default());
        // Flattened into the cause's JSON, absent when unknown.
        let json = serde_json::to_value(&edge).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"nodes": ["b", "c"], "caller_node": "a"})
        );
        assert_eq!(
            serde_json::to_value(Placed::default()).unwrap(),
            serde_json::json!({})
        );
    }
}
