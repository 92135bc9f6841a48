//! Topology scenarios at unit level: each seeded bundle (series → detector → topology → walk →
//! attribution → the default fault tree, compiled natively here; the daemon runs the same rules
//! as a sandboxed component) must rank the injected fault first with the right category.

use sonde_analysis::demarcation::Element;
use sonde_analysis::replay::{Bundle, analyze_bundle};
use sonde_analysis::report::{AnalysisConfig, Report};
use sonde_analysis::rules::NativeRules;
use sonde_analysis::scenarios;

fn analyse(bundle: &Bundle) -> Report {
    let mut rules = NativeRules::new().with("sonde-default-tree", sonde_fta_rules::evaluate);
    analyze_bundle(bundle, &mut rules, &AnalysisConfig::default()).expect("analysis runs")
}

fn run(name: &str) -> Report {
    let report = analyse(&scenarios::scenario(name).expect("known scenario"));
    eprintln!("{}", report.to_text());
    report
}

fn service(name: &str) -> Element {
    Element::Service { name: name.into() }
}

#[test]
fn network_fault_on_one_edge() {
    let r = run("network-edge");
    let top = &r.root_causes[0];
    assert_eq!(
        top.element,
        Element::Edge {
            caller: "gateway".into(),
            callee: "cart".into()
        }
    );
    assert_eq!(top.category, "network");
    assert!(
        top.evidence.iter().any(|e| e.metric == "retransmit_rate"),
        "retransmits are evidence: {:?}",
        top.evidence
    );
    assert_eq!(r.propagation_path, ["gateway->cart", "gateway"]);
    assert!(
        !r.root_causes.iter().any(|c| c.element == service("cart")),
        "cart itself is healthy"
    );
}

#[test]
fn slow_downstream_two_hops_deep() {
    let r = run("slow-database");
    let top = &r.root_causes[0];
    assert_eq!(top.element, service("mysql"));
    assert_eq!(top.category, "database-slow");
    assert_eq!(r.propagation_path, ["mysql", "product", "gateway"]);
    // The services in between are victims, not causes.
    assert!(
        !r.root_causes
            .iter()
            .any(|c| c.element == service("gateway"))
    );
    assert!(
        !r.root_causes
            .iter()
            .any(|c| c.element == service("product"))
    );
}

#[test]
fn a_machine_no_rule_diagnoses_does_not_explain_a_slow_database() {
    // The walk first lets n3 (abnormal run queue) explain mysql; no rule finds n3 at fault
    // (its CPUs are idle), so mysql stays the root cause, as in slow-database.
    let r = run("slow-database-busy-node");
    let top = &r.root_causes[0];
    assert_eq!(top.element, service("mysql"));
    assert_eq!(top.category, "database-slow");
    assert_eq!(r.propagation_path, ["mysql", "product", "gateway"]);
    let n3 = r
        .root_causes
        .iter()
        .position(|c| c.element == Element::Node { name: "n3".into() });
    assert!(
        n3.is_none_or(|i| i > 0),
        "n3 is at most a lesser candidate: {:?}",
        r.root_causes
    );
}

#[test]
fn cpu_saturation_on_one_node_hosting_two_services() {
    let r = run("node-cpu");
    let top = &r.root_causes[0];
    assert_eq!(top.element, Element::Node { name: "n2".into() });
    assert_eq!(top.category, "node-saturation");
    assert!(top.explanation.contains("n2"), "{}", top.explanation);
    // Both services on n2 are explained by it.
    for s in ["cart", "product"] {
        assert!(
            !r.root_causes.iter().any(|c| c.element == service(s)),
            "{s} is a victim of n2"
        );
    }
}

#[test]
fn error_burst_in_one_endpoint() {
    let r = run("endpoint-errors");
    let top = &r.root_causes[0];
    assert_eq!(top.element, service("cart"));
    assert_eq!(top.category, "code-error");
    let cart_errors = r
        .attributions
        .iter()
        .find(|a| a.service == "cart" && a.kpi == "error_rate")
        .expect("cart's error rate is attributed");
    assert_eq!(
        cart_errors.causes[0].elements,
        [("endpoint".to_string(), "/checkout".to_string())]
    );
    assert!(
        cart_errors.causes[0].explanatory_power > 0.9,
        "{:?}",
        cart_errors.causes[0]
    );
    assert!(top.explanation.contains("/checkout"), "{}", top.explanation);
}

#[test]
fn an_unrelated_old_change_is_not_blamed() {
    for (name, _) in scenarios::SCENARIOS {
        let r = analyse(&scenarios::scenario(name).unwrap());
        assert!(
            r.root_causes.iter().all(|c| c.category != "recent-change"),
            "{name}"
        );
    }
}

#[test]
fn a_recent_deploy_on_the_faulty_service_is_named() {
    let mut bundle = scenarios::scenario("endpoint-errors").unwrap();
    bundle
        .spec
        .changes
        .push(sonde_analysis::replay::ChangeSpec {
            at: scenarios::T0 + (scenarios::FAULT_AT as i64 - 2) * scenarios::STEP,
            subject: "cart".into(),
            description: "deploy cart v7".into(),
        });
    let r = analyse(&bundle);
    let cart = r
        .root_causes
        .iter()
        .find(|c| c.element == service("cart"))
        .unwrap();
    assert!(
        cart.diagnoses
            .iter()
            .any(|d| d.diagnosis.category.name() == "recent-change"),
        "{:?}",
        cart.diagnoses
    );
}

#[test]
fn reports_are_deterministic_and_round_trip_through_disk() {
    let bundle = scenarios::scenario("slow-database").unwrap();
    let dir = std::env::temp_dir().join(format!("sonde-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    bundle.write(&dir).unwrap();
    let loaded = Bundle::load(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let mut a = analyse(&bundle);
    let mut b = analyse(&loaded);
    a.elapsed_ms = 0.0;
    b.elapsed_ms = 0.0;
    // CSV keeps every digit of an f64 (Rust prints the shortest exact representation).
    assert_eq!(a, b);
}

#[test]
fn large_topology_finds_the_deep_fault() {
    let (bundle, faulty) = scenarios::large(100, 50, 11);
    let r = analyse(&bundle);
    assert_eq!(r.root_causes[0].element, service(&faulty));
    assert_eq!(r.root_causes[0].category, "cpu-saturation");
}

#[test]
fn slo_gate_opens_the_incident_only_when_the_budget_burns() {
    // 0.1% → 6% errors: 60× the budget of a 99.9% SLO; averaged over the long windows (mostly
    // healthy samples) about 7×, over the 6× gate.
    let mut bundle = scenarios::scenario("endpoint-errors").unwrap();
    bundle.spec.incident.slo = Some(0.999);
    let r = analyse(&bundle);
    let slo = r.slo.expect("the report carries the gate");
    assert!(slo.firing && slo.burn_rate > 6.0, "{slo:?}");
    assert_eq!(r.root_causes[0].category, "code-error");
    // A 90% SLO has budget to spare for 6% errors: anomalous, but not worth a report.
    bundle.spec.incident.slo = Some(0.9);
    let mut rules = NativeRules::new().with("sonde-default-tree", sonde_fta_rules::evaluate);
    let err = analyze_bundle(&bundle, &mut rules, &AnalysisConfig::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no incident worth a report") && err.contains("budget burns at most"),
        "{err}"
    );
}

/// The rank-1 cause names the machine it is on (the bundle's placement): the callee's for an
/// edge with the caller's beside it, the machine itself for a machine cause.
#[test]
fn the_first_cause_names_its_node() {
    for (name, node, caller_node) in [
        ("network-edge", "n2", Some("n1")),
        ("slow-database", "n3", None),
        ("node-cpu", "n2", None),
    ] {
        let r = analyse(&scenarios::scenario(name).unwrap());
        let top = &r.root_causes[0];
        assert_eq!(top.placed.node.as_deref(), Some(node), "{name}");
        assert_eq!(top.placed.caller_node.as_deref(), caller_node, "{name}");
        let json = serde_json::to_value(top).unwrap();
        assert_eq!(json["node"], node, "{name}: {json}");
        // Text says where, except for a machine (it is its node).
        let text = r.to_text();
        let machine = name == "node-cpu";
        assert_eq!(
            text.contains(&format!(" on {node} ")),
            !machine,
            "{name}: {text}"
        );
    }
}
