//! Exception demarcation: from the anomalous entry service, walk the calls it makes
//! (horizontally) and the machines under each service (vertically), keep the abnormal services,
//! edges and machines, and decide for each whether something below it explains its symptoms.
//!
//! The idea, as in DeepFlow's and Coroot's service maps but made explicit: a caller whose
//! latency rise is covered by the rise it sees on one of its call edges is a victim, not a
//! cause; an edge whose caller-side latency rose while the callee's own (server-side) latency
//! did not is where the time went — the network between them; a machine that is saturated and
//! hosts several abnormal services explains them all. What is left unexplained is a root-cause
//! candidate, ranked by how abnormal it is and, later, by what the fault-tree rules say.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::detect::Direction;
use crate::rules::SubjectKind;
use crate::topology::{Entity, MetricWindow, Topology, edge_id};
use sonde_sdk::fault_rule::metric as m;

/// Symptom metrics: what a user of the entity sees.
const SERVICE_RED: &[&str] = &[
    m::LATENCY_MEAN_MS,
    m::LATENCY_P99_MS,
    m::ERROR_RATE,
    m::REQUEST_RATE,
];
/// Resource metrics of a service: causes, not symptoms. A service with one of these abnormal
/// is never only a victim of its callees.
const SERVICE_RESOURCES: &[&str] = &[
    m::CPU_THROTTLED_RATIO,
    m::CPU_USAGE_CORES,
    m::MEMORY_USAGE_RATIO,
    m::OOM_KILLS,
];
/// Dependency metrics measured at the service (its database and DNS calls). Abnormal ones
/// make the service a candidate, but an abnormal database or DNS service it calls still
/// explains them.
const SERVICE_DEPENDENCIES: &[&str] = &[
    m::DB_QUERY_LATENCY_MS,
    m::DB_SLOW_QUERY_RATE,
    m::DB_ERROR_RATE,
    m::DNS_ERROR_RATE,
    m::DNS_LATENCY_MS,
];
const EDGE_CALLER: &[&str] = &[
    m::CALLER_LATENCY_MS,
    m::CALLER_ERROR_RATE,
    m::CONNECT_FAIL_RATE,
];
const EDGE_NETWORK: &[&str] = &[
    m::RETRANSMIT_RATE,
    m::RTT_MS,
    m::DROP_RATE,
    m::RESET_RATE,
    m::CONNECT_FAIL_RATE,
];
const NODE_METRICS: &[&str] = &[
    m::NODE_CPU_RATIO,
    m::NODE_MEMORY_RATIO,
    m::NODE_RUNQUEUE_DELAY_MS,
    m::SOFTIRQ_DELAY_MS,
];

/// Tuning of the walk.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemarcationConfig {
    /// Scores are capped here so that one absurd ratio does not swamp the ranking.
    pub score_cap: f64,
    /// A victim keeps this share of its score (so it still shows, below its cause).
    pub victim_weight: f64,
    /// A caller's rise counts as explained by an edge when the edge's caller-side rise is at
    /// least this share of it.
    pub explain_share: f64,
    /// At most this many candidates go to the rules and the report.
    pub max_candidates: usize,
    /// Stop walking this many calls away from the entry.
    pub max_depth: usize,
    /// A service the walk did not reach (no abnormal call leads to it) but with anomalies of
    /// its own is still a candidate, at this share of its score.
    pub unreached_weight: f64,
    /// An edge whose callee reports no metrics at all (an uninstrumented endpoint, seen only
    /// from the caller) cannot tell the network from the callee; it keeps this share of its
    /// score, so that an observed service with the same evidence ranks above it.
    pub unobserved_callee_weight: f64,
}

impl Default for DemarcationConfig {
    fn default() -> Self {
        Self {
            score_cap: 50.0,
            victim_weight: 0.25,
            explain_share: 0.5,
            max_candidates: 64,
            max_depth: 16,
            unreached_weight: 0.25,
            unobserved_callee_weight: 0.5,
        }
    }
}

/// A reference to a topology element.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Element {
    Service { name: String },
    Edge { caller: String, callee: String },
    Node { name: String },
}

impl Element {
    pub fn kind(&self) -> SubjectKind {
        match self {
            Element::Service { .. } => SubjectKind::Service,
            Element::Edge { .. } => SubjectKind::Edge,
            Element::Node { .. } => SubjectKind::Node,
        }
    }

    /// `service`, `edge` or `node`, for text.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Element::Service { .. } => "service",
            Element::Edge { .. } => "edge",
            Element::Node { .. } => "node",
        }
    }

    /// The id rules and reports use: the service or node name, `caller->callee` for an edge.
    pub fn id(&self) -> String {
        match self {
            Element::Service { name } | Element::Node { name } => name.clone(),
            Element::Edge { caller, callee } => edge_id(caller, callee),
        }
    }

    fn service(name: &str) -> Self {
        Element::Service {
            name: name.to_string(),
        }
    }
}

/// An abnormal element found by the walk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub element: Element,
    /// How abnormal the element itself is (capped badness of its worst anomalous metric).
    pub anomaly: f64,
    /// What explains it, if anything: the element whose fault it merely propagates.
    pub explained_by: Option<Element>,
    /// `anomaly`, discounted when explained; the ranking before the rules have a say.
    pub score: f64,
    /// From the entry service to this element.
    pub path: Vec<Element>,
    /// Calls away from the entry.
    pub depth: usize,
}

/// The outcome of a walk: abnormal elements, best first by score.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Walk {
    pub candidates: Vec<Candidate>,
    /// Everything visited, abnormal or not (for the report's coverage line).
    pub visited: usize,
}

/// Worst badness among the anomalous metrics of `names`, capped; 0 when none is anomalous.
pub fn badness(entity: &Entity, names: &[&str], cap: f64) -> f64 {
    names
        .iter()
        .filter_map(|name| entity.metric(name).map(|w| (name, w)))
        .filter(|(_, w)| w.anomalous)
        .map(|(name, w)| Direction::for_metric(name).badness(w.score).clamp(0.0, cap))
        .fold(0.0, f64::max)
}

/// Worst badness among a service's anomalous symptoms (its RED metrics). Other latency
/// percentiles a service may carry (p50, p90, p95) reach the rules and the report but do not
/// make a service abnormal: on public data they flag sparse, noisy services far more often
/// than the mean and p99 do.
pub fn symptom_badness(entity: &Entity, cap: f64) -> f64 {
    badness(entity, SERVICE_RED, cap)
}

/// Share of its CPU limit over which a container is saturated whether or not it is throttled.
const CPU_NEAR_LIMIT: f64 = 0.9;

/// Badness of a container's CPU usage near its limit: usage during the incident at least
/// [`CPU_NEAR_LIMIT`] of the limit, having been under it before. Scored 10 at the limit.
pub fn cpu_saturation(entity: &Entity) -> f64 {
    let (Some(usage), Some(limit)) = (
        entity.metric(m::CPU_USAGE_CORES),
        entity.metric(m::CPU_LIMIT_CORES),
    ) else {
        return 0.0;
    };
    let limit = if limit.after > 0.0 {
        limit.after
    } else {
        limit.before
    };
    if limit.is_nan()
        || limit <= 0.0
        || usage.after < CPU_NEAR_LIMIT * limit
        || usage.before >= CPU_NEAR_LIMIT * limit
    {
        return 0.0;
    }
    10.0 * (usage.after / limit).min(1.0)
}

fn rise(entity: &Entity, name: &str) -> Option<f64> {
    entity
        .metric(name)
        .filter(|w| w.anomalous)
        .map(|w: &MetricWindow| w.after - w.before)
}

fn is_anomalous(entity: &Entity, name: &str) -> bool {
    entity.metric(name).is_some_and(|w| w.anomalous)
}

/// Does the edge's caller-side latency cover the caller's latency rise? The edge's caller-side
/// rise is at least `share` of the service's mean-latency (or p99) rise.
fn edge_covers_latency(service: &Entity, edge: &Entity, share: f64) -> bool {
    match (
        rise(service, m::LATENCY_MEAN_MS).or(rise(service, m::LATENCY_P99_MS)),
        rise(edge, m::CALLER_LATENCY_MS),
    ) {
        (Some(svc), Some(e)) => svc <= 0.0 || e >= share * svc,
        _ => false,
    }
}

/// Do the edge's caller-side errors (or failed connects) cover the caller's error rise?
fn edge_covers_errors(edge: &Entity) -> bool {
    is_anomalous(edge, m::CALLER_ERROR_RATE) || is_anomalous(edge, m::CONNECT_FAIL_RATE)
}

/// The call edge that explains the service's symptoms, if its calls explain all of them: a
/// latency rise covered by one edge's caller-side rise, an error rise by one edge's caller-side
/// errors. A service slowed by a callee that also fails on its own is not a victim.
fn callee_edge_explaining(
    topology: &Topology,
    name: &str,
    service: &Entity,
    share: f64,
) -> Option<Element> {
    let slow = rise(service, m::LATENCY_MEAN_MS)
        .or(rise(service, m::LATENCY_P99_MS))
        .is_some();
    let failing = is_anomalous(service, m::ERROR_RATE);
    let covering = |covers: &dyn Fn(&Entity) -> bool| {
        topology
            .callees(name)
            .find(|callee| topology.edge(name, callee).is_some_and(covers))
            .map(|callee| Element::Edge {
                caller: name.to_string(),
                callee: callee.to_string(),
            })
    };
    let latency = if slow {
        covering(&|e| edge_covers_latency(service, e, share))
    } else {
        None
    };
    let errors = if failing {
        covering(&|e| edge_covers_errors(e))
    } else {
        None
    };
    match (slow, failing) {
        (true, true) => latency.filter(|_| errors.is_some()),
        (true, false) => latency,
        (false, true) => errors,
        (false, false) => None,
    }
}

/// Is the edge's caller-side symptom just the callee's own? The callee's server-side latency
/// rise is at least `share` of the caller-side rise, or the callee's own errors rose with the
/// caller-side errors; and no network metric on the edge is anomalous.
fn callee_explains_edge(edge: &Entity, callee: &Entity, share: f64) -> bool {
    if EDGE_NETWORK.iter().any(|n| is_anomalous(edge, n)) {
        return false;
    }
    let callee_rise = rise(edge, m::CALLEE_LATENCY_MS)
        .or(rise(callee, m::LATENCY_MEAN_MS))
        .or(rise(callee, m::LATENCY_P99_MS));
    let latency = match (rise(edge, m::CALLER_LATENCY_MS), callee_rise) {
        (Some(caller), Some(callee)) => callee >= share * caller,
        _ => false,
    };
    let errors = is_anomalous(edge, m::CALLER_ERROR_RATE)
        && (is_anomalous(edge, m::CALLEE_ERROR_RATE) || is_anomalous(callee, m::ERROR_RATE));
    latency || errors
}

/// Walk the topology from `entry` and return the abnormal elements, ranked.
pub fn walk(topology: &Topology, entry: &str, cfg: &DemarcationConfig) -> Walk {
    let cap = cfg.score_cap;
    let empty = Entity::default();
    let service = |name: &str| topology.services.get(name).unwrap_or(&empty);

    // Breadth-first over abnormal calls; `paths` remembers how each element was reached.
    let mut paths: BTreeMap<Element, (Vec<Element>, usize)> = BTreeMap::new();
    let mut queue = VecDeque::new();
    let start = Element::service(entry);
    paths.insert(start.clone(), (vec![start.clone()], 0));
    queue.push_back(entry.to_string());
    let mut seen = BTreeSet::from([entry.to_string()]);
    while let Some(name) = queue.pop_front() {
        let (path, depth) = paths[&Element::service(&name)].clone();
        for node in topology.hosts(&name) {
            let el = Element::Node { name: node.clone() };
            paths.entry(el.clone()).or_insert_with(|| {
                let mut p = path.clone();
                p.push(el);
                (p, depth)
            });
        }
        if depth >= cfg.max_depth {
            continue;
        }
        for callee in topology.callees(&name) {
            let edge = topology.edge(&name, callee).unwrap_or(&empty);
            let edge_abnormal =
                badness(edge, EDGE_CALLER, cap) > 0.0 || badness(edge, EDGE_NETWORK, cap) > 0.0;
            let callee_abnormal = symptom_badness(service(callee), cap) > 0.0;
            if !edge_abnormal && !callee_abnormal {
                continue;
            }
            let el = Element::Edge {
                caller: name.clone(),
                callee: callee.to_string(),
            };
            let mut p = path.clone();
            p.push(el.clone());
            paths.entry(el).or_insert_with(|| (p.clone(), depth + 1));
            if seen.insert(callee.to_string()) {
                p.push(Element::service(callee));
                paths.insert(Element::service(callee), (p, depth + 1));
                queue.push_back(callee.to_string());
            }
        }
    }

    let visited = paths.len();
    // Services no abnormal walk leads to, with anomalies of their own: a callee behind a
    // caller whose KPIs barely moved, or one without request metrics. Reached over any call
    // from the entry when they can be (for the propagation path), else on their own.
    let mut unreached = BTreeSet::new();
    let mut any_path: BTreeMap<String, (Vec<Element>, usize)> = BTreeMap::new();
    any_path.insert(entry.to_string(), (vec![start.clone()], 0));
    let mut queue = VecDeque::from([entry.to_string()]);
    while let Some(name) = queue.pop_front() {
        let (path, depth) = any_path[&name].clone();
        for callee in topology.callees(&name) {
            if any_path.contains_key(callee) {
                continue;
            }
            let mut p = path.clone();
            p.push(Element::Edge {
                caller: name.clone(),
                callee: callee.to_string(),
            });
            p.push(Element::service(callee));
            any_path.insert(callee.to_string(), (p, depth + 1));
            queue.push_back(callee.to_string());
        }
    }
    for (name, entity) in &topology.services {
        let el = Element::service(name);
        if paths.contains_key(&el) {
            continue;
        }
        let own = symptom_badness(entity, cap)
            .max(badness(entity, SERVICE_RESOURCES, cap))
            .max(cpu_saturation(entity))
            .max(badness(entity, SERVICE_DEPENDENCIES, cap));
        if own <= 0.0 {
            continue;
        }
        let (path, depth) = any_path
            .get(name)
            .cloned()
            .unwrap_or_else(|| (vec![el.clone()], cfg.max_depth));
        paths.insert(el.clone(), (path, depth));
        unreached.insert(el);
    }
    // Likewise a call edge with caller-side or network anomalies of its own (a slow network
    // under a caller whose KPIs barely moved).
    for ((caller, callee), entity) in &topology.edges {
        let el = Element::Edge {
            caller: caller.clone(),
            callee: callee.clone(),
        };
        if paths.contains_key(&el)
            || (badness(entity, EDGE_CALLER, cap) <= 0.0
                && badness(entity, EDGE_NETWORK, cap) <= 0.0)
        {
            continue;
        }
        let (mut path, depth) = paths
            .get(&Element::service(caller))
            .or_else(|| any_path.get(caller))
            .cloned()
            .unwrap_or_else(|| (vec![Element::service(caller)], cfg.max_depth));
        path.push(el.clone());
        paths.insert(el.clone(), (path, depth + 1));
        unreached.insert(el);
    }
    let mut candidates = Vec::new();
    for (element, (path, depth)) in &paths {
        let (anomaly, explained_by) = match element {
            Element::Service { name } => {
                let entity = service(name);
                let red = symptom_badness(entity, cap);
                let resources = badness(entity, SERVICE_RESOURCES, cap).max(cpu_saturation(entity));
                let anomaly = red
                    .max(resources)
                    .max(badness(entity, SERVICE_DEPENDENCIES, cap));
                let explained = if resources > 0.0 {
                    None
                } else {
                    callee_edge_explaining(topology, name, entity, cfg.explain_share).or_else(
                        || {
                            topology
                                .hosts(name)
                                .iter()
                                .find(|n| {
                                    topology
                                        .nodes
                                        .get(*n)
                                        .is_some_and(|e| badness(e, NODE_METRICS, cap) > 0.0)
                                })
                                .map(|n| Element::Node { name: n.clone() })
                        },
                    )
                };
                (anomaly, explained)
            }
            Element::Edge { caller, callee } => {
                let entity = topology.edge(caller, callee).unwrap_or(&empty);
                let anomaly =
                    badness(entity, EDGE_CALLER, cap).max(badness(entity, EDGE_NETWORK, cap));
                let explained = callee_explains_edge(entity, service(callee), cfg.explain_share)
                    .then(|| Element::service(callee));
                (anomaly, explained)
            }
            Element::Node { name } => {
                let entity = topology.nodes.get(name).unwrap_or(&empty);
                let own = badness(entity, NODE_METRICS, cap);
                // A saturated machine under several abnormal services explains more.
                let abnormal_hosted = topology
                    .hosted(name)
                    .filter(|s| symptom_badness(service(s), cap) > 0.0)
                    .count();
                let anomaly = if own > 0.0 {
                    own * (1.0 + 0.5 * abnormal_hosted.saturating_sub(1) as f64)
                } else {
                    0.0
                };
                (anomaly.min(cap * 2.0), None)
            }
        };
        if anomaly <= 0.0 {
            continue;
        }
        let mut score = if explained_by.is_some() {
            anomaly * cfg.victim_weight
        } else {
            anomaly
        };
        if unreached.contains(element) {
            score *= cfg.unreached_weight;
        }
        if let Element::Edge { callee, .. } = element
            && topology
                .services
                .get(callee)
                .is_none_or(|e| e.metrics.is_empty())
        {
            score *= cfg.unobserved_callee_weight;
        }
        candidates.push(Candidate {
            element: element.clone(),
            anomaly,
            explained_by,
            score,
            path: path.clone(),
            depth: *depth,
        });
    }
    // Best first; among equals the deeper (closer to the cause), then by name: deterministic.
    candidates.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.depth.cmp(&a.depth))
            .then_with(|| a.element.cmp(&b.element))
    });
    candidates.truncate(cfg.max_candidates);
    Walk {
        candidates,
        visited,
    }
}

/// Take back the walk's verdict that `explainer` explains other candidates: they become
/// candidates of their own again, at full score. Candidates keep their order (rule answers are
/// matched to them by position).
///
/// The walk lets any abnormal machine explain the services on it; the rules then decide
/// whether the machine is really at fault. A machine no rule diagnoses (say its run queue rose
/// while its CPUs stayed mostly idle, because something else ran for a moment) must not
/// explain a database that got 300 times slower away into "unknown".
pub fn withdraw_explanations(walk: &mut Walk, explainer: &Element) {
    for c in walk
        .candidates
        .iter_mut()
        .filter(|c| c.explained_by.as_ref() == Some(explainer))
    {
        c.explained_by = None;
        c.score = c.anomaly;
    }
}

/// The chain of explanations from `candidate` down to the element nothing explains, as
/// elements (each explained by the next).
pub fn explanation_chain(walk: &Walk, start: &Element) -> Vec<Element> {
    let by_element: BTreeMap<&Element, &Candidate> =
        walk.candidates.iter().map(|c| (&c.element, c)).collect();
    let mut chain = vec![start.clone()];
    let mut current = start;
    while let Some(next) = by_element
        .get(current)
        .and_then(|c| c.explained_by.as_ref())
    {
        if chain.contains(next) {
            break;
        }
        chain.push(next.clone());
        current = next;
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(before: f64, after: f64) -> MetricWindow {
        MetricWindow::new(before, after, 20.0, true)
    }
    fn flat(v: f64) -> MetricWindow {
        MetricWindow::new(v, v, 0.5, false)
    }

    #[test]
    fn network_edge_is_the_unexplained_one() {
        let mut t = Topology::default();
        t.add_service(
            "gw",
            Entity::default().with_metric(m::LATENCY_MEAN_MS, up(20.0, 220.0)),
        );
        t.add_service(
            "cart",
            Entity::default().with_metric(m::LATENCY_MEAN_MS, flat(10.0)),
        );
        t.add_call(
            "gw",
            "cart",
            Entity::default()
                .with_metric(m::CALLER_LATENCY_MS, up(12.0, 210.0))
                .with_metric(m::CALLEE_LATENCY_MS, flat(10.0))
                .with_metric(m::RETRANSMIT_RATE, up(0.0, 40.0)),
        );
        let w = walk(&t, "gw", &DemarcationConfig::default());
        assert_eq!(
            w.candidates[0].element,
            Element::Edge {
                caller: "gw".into(),
                callee: "cart".into()
            }
        );
        assert!(w.candidates[0].explained_by.is_none());
        let gw = w
            .candidates
            .iter()
            .find(|c| c.element == Element::service("gw"))
            .unwrap();
        assert_eq!(gw.explained_by, Some(w.candidates[0].element.clone()));
        assert!(
            !w.candidates
                .iter()
                .any(|c| c.element == Element::service("cart")),
            "cart is normal"
        );
    }

    #[test]
    fn a_slowed_caller_with_errors_of_its_own_is_no_victim() {
        let mut t = Topology::default();
        let gw = |errors: MetricWindow| {
            Entity::default()
                .with_metric(m::LATENCY_MEAN_MS, up(20.0, 220.0))
                .with_metric(m::ERROR_RATE, errors)
        };
        t.add_service(
            "cart",
            Entity::default().with_metric(m::LATENCY_MEAN_MS, up(10.0, 210.0)),
        );
        t.add_call(
            "gw",
            "cart",
            Entity::default()
                .with_metric(m::CALLER_LATENCY_MS, up(12.0, 210.0))
                .with_metric(m::CALLEE_LATENCY_MS, up(10.0, 208.0)),
        );
        // Its latency rise is cart's, its errors are not on the call: the gateway fails itself.
        t.add_service("gw", gw(up(0.0, 0.3)));
        let w = walk(&t, "gw", &DemarcationConfig::default());
        let of = |name: &str| {
            w.candidates
                .iter()
                .find(|c| c.element == Element::service(name))
                .unwrap()
        };
        assert_eq!(of("gw").explained_by, None);
        // Without errors of its own it is cart's victim.
        t.add_service("gw", gw(flat(0.0)));
        let w = walk(&t, "gw", &DemarcationConfig::default());
        let of = |name: &str| {
            w.candidates
                .iter()
                .find(|c| c.element == Element::service(name))
                .unwrap()
        };
        assert_eq!(
            of("gw").explained_by,
            Some(Element::Edge {
                caller: "gw".into(),
                callee: "cart".into()
            })
        );
    }

    #[test]
    fn cpu_near_its_limit_is_a_cause_without_throttle_counters() {
        // db is slow and its CPU went from 0.015 to 0.198 cores on a 0.2-core limit; no
        // throttling metric. Its usage is not flagged by the detector (say a short history),
        // yet it is saturated: a resource cause, not a victim of anything.
        let mut t = Topology::default();
        t.add_service(
            "gw",
            Entity::default().with_metric(m::LATENCY_MEAN_MS, up(20.0, 220.0)),
        );
        let db = Entity::default()
            .with_metric(m::LATENCY_MEAN_MS, up(5.0, 200.0))
            .with_metric(
                m::CPU_USAGE_CORES,
                MetricWindow::new(0.015, 0.198, 3.0, false),
            )
            .with_metric(m::CPU_LIMIT_CORES, flat(0.2));
        assert!(cpu_saturation(&db) >= 9.0);
        t.add_service("db", db);
        t.add_call(
            "gw",
            "db",
            Entity::default().with_metric(m::CALLER_LATENCY_MS, up(6.0, 201.0)),
        );
        // db also calls a slow cache whose rise covers db's: saturation keeps db a cause.
        t.add_service(
            "cache",
            Entity::default().with_metric(m::LATENCY_MEAN_MS, up(1.0, 200.0)),
        );
        t.add_call(
            "db",
            "cache",
            Entity::default().with_metric(m::CALLER_LATENCY_MS, up(1.0, 199.0)),
        );
        let w = walk(&t, "gw", &DemarcationConfig::default());
        let db = w
            .candidates
            .iter()
            .find(|c| c.element == Element::service("db"))
            .unwrap();
        assert_eq!(db.explained_by, None, "{db:?}");
        // Under the limit, or already there before, it is not saturation.
        let calm = Entity::default()
            .with_metric(
                m::CPU_USAGE_CORES,
                MetricWindow::new(0.19, 0.198, 1.0, false),
            )
            .with_metric(m::CPU_LIMIT_CORES, flat(0.2));
        assert_eq!(cpu_saturation(&calm), 0.0);
    }

    #[test]
    fn a_service_behind_a_calm_caller_is_still_a_candidate() {
        // gw -> mid -> store: mid's KPIs did not move (a cache hides store's slowness from
        // most requests), so the walk stops at mid; store's own latency tripled.
        let mut t = Topology::default();
        t.add_service(
            "gw",
            Entity::default().with_metric(m::LATENCY_MEAN_MS, up(20.0, 60.0)),
        );
        t.add_service(
            "mid",
            Entity::default().with_metric(m::LATENCY_MEAN_MS, flat(10.0)),
        );
        t.add_service(
            "store",
            Entity::default().with_metric(m::LATENCY_MEAN_MS, up(5.0, 15.0)),
        );
        t.add_call("gw", "mid", Entity::default());
        t.add_call("mid", "store", Entity::default());
        let w = walk(&t, "gw", &DemarcationConfig::default());
        let store = w
            .candidates
            .iter()
            .find(|c| c.element == Element::service("store"))
            .expect("store is a candidate");
        assert_eq!(store.depth, 2);
        assert_eq!(
            store.path.last(),
            Some(&Element::service("store")),
            "{:?}",
            store.path
        );
        assert!(store.score < store.anomaly, "unreached: discounted");
    }

    #[test]
    fn an_observed_service_outranks_a_call_to_an_unobserved_endpoint() {
        // gw calls search directly and through a load balancer nobody instruments (lb): the
        // call to lb is slow as seen by gw, and search is slow in its own metrics, equally.
        let mut t = Topology::default();
        t.add_service(
            "gw",
            Entity::default().with_metric(m::LATENCY_MEAN_MS, up(20.0, 60.0)),
        );
        t.add_service(
            "search",
            Entity::default().with_metric(m::LATENCY_MEAN_MS, up(5.0, 45.0)),
        );
        t.add_call("gw", "search", Entity::default());
        t.add_call(
            "gw",
            "lb",
            // The caller's view adds the balancer's and the network's noise: a higher score.
            Entity::default().with_metric(
                m::CALLER_LATENCY_MS,
                MetricWindow::new(6.0, 46.0, 30.0, true),
            ),
        );
        let w = walk(&t, "gw", &DemarcationConfig::default());
        assert_eq!(w.candidates[0].element, Element::service("search"), "{w:?}");
    }

    #[test]
    fn a_slow_network_edge_under_a_calm_path_is_still_a_candidate() {
        // gw -> api -> db: gw and api barely moved (the slow call is rare), but api's calls
        // to db take 700 ms instead of 3 at api's end while db's own latency is flat.
        let mut t = Topology::default();
        t.add_service(
            "gw",
            Entity::default().with_metric(m::LATENCY_MEAN_MS, up(20.0, 26.0)),
        );
        t.add_service(
            "api",
            Entity::default().with_metric(m::LATENCY_MEAN_MS, flat(10.0)),
        );
        t.add_service(
            "db",
            Entity::default().with_metric(m::LATENCY_MEAN_MS, flat(3.0)),
        );
        t.add_call("gw", "api", Entity::default());
        t.add_call(
            "api",
            "db",
            Entity::default()
                .with_metric(m::CALLER_LATENCY_MS, up(3.0, 700.0))
                .with_metric(m::CALLEE_LATENCY_MS, flat(3.0)),
        );
        let w = walk(&t, "gw", &DemarcationConfig::default());
        let edge = Element::Edge {
            caller: "api".into(),
            callee: "db".into(),
        };
        let c = w
            .candidates
            .iter()
            .find(|c| c.element == edge)
            .expect("the edge is a candidate");
        assert_eq!(
            c.explained_by, None,
            "db's own latency is flat: the network"
        );
        assert_eq!(c.path.last(), Some(&edge));
    }

    #[test]
    fn walk_is_deterministic_and_bounded() {
        let mut t = Topology::default();
        // A cycle a -> b -> a must not loop.
        let e = Entity::default().with_metric(m::CALLER_LATENCY_MS, up(1.0, 9.0));
        t.add_service(
            "a",
            Entity::default().with_metric(m::LATENCY_MEAN_MS, up(1.0, 9.0)),
        );
        t.add_service(
            "b",
            Entity::default().with_metric(m::LATENCY_MEAN_MS, up(1.0, 9.0)),
        );
        t.add_call("a", "b", e.clone()).add_call("b", "a", e);
        let w1 = walk(&t, "a", &DemarcationConfig::default());
        let w2 = walk(&t, "a", &DemarcationConfig::default());
        assert_eq!(w1, w2);
        assert_eq!(w1.visited, 4);
    }
}
