//! Places session Pods: tolerations, node selector, node/pod affinity,
//! topology spread and priority class from settings, with per-profile rules
//! that override the default rule field by field.

use std::collections::BTreeMap;

use berth_plugin_sdk::k8s_openapi::api::core::v1::{
    Affinity, Toleration, TopologySpreadConstraint,
};
use berth_plugin_sdk::{Context, Hooks, Pod, Policy, Rejection, export_policy};
use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rule {
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub affinity: Option<Affinity>,
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    pub priority_class_name: Option<String>,
    pub runtime_class_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Applied to every profile without a rule of its own.
    pub default: Rule,
    /// Profile id → rule. A profile's rule replaces each field of the default
    /// it sets, and leaves the others to the default.
    pub profiles: BTreeMap<String, Rule>,
}

impl Settings {
    fn rule_for(&self, profile: &str) -> Rule {
        let mut rule = self.default.clone();
        if let Some(p) = self.profiles.get(profile) {
            if !p.node_selector.is_empty() {
                rule.node_selector = p.node_selector.clone();
            }
            if !p.tolerations.is_empty() {
                rule.tolerations = p.tolerations.clone();
            }
            if p.affinity.is_some() {
                rule.affinity = p.affinity.clone();
            }
            if !p.topology_spread_constraints.is_empty() {
                rule.topology_spread_constraints = p.topology_spread_constraints.clone();
            }
            if p.priority_class_name.is_some() {
                rule.priority_class_name = p.priority_class_name.clone();
            }
            if p.runtime_class_name.is_some() {
                rule.runtime_class_name = p.runtime_class_name.clone();
            }
        }
        rule
    }
}

pub struct Scheduling;

const VALID_OPERATORS: [&str; 2] = ["Exists", "Equal"];
const VALID_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

fn validate_rule(name: &str, r: &Rule) -> Result<(), String> {
    for (i, t) in r.tolerations.iter().enumerate() {
        if let Some(op) = &t.operator {
            if !VALID_OPERATORS.contains(&op.as_str()) {
                return Err(format!(
                    "{name}.tolerations[{i}].operator must be Exists or Equal, got {op:?}"
                ));
            }
            if op == "Exists" && t.value.as_deref().is_some_and(|v| !v.is_empty()) {
                return Err(format!(
                    "{name}.tolerations[{i}]: operator Exists takes no value"
                ));
            }
        }
        if let Some(e) = &t.effect
            && !e.is_empty()
            && !VALID_EFFECTS.contains(&e.as_str())
        {
            return Err(format!(
                "{name}.tolerations[{i}].effect {e:?} is not a taint effect"
            ));
        }
    }
    for (i, c) in r.topology_spread_constraints.iter().enumerate() {
        if c.max_skew < 1 {
            return Err(format!(
                "{name}.topology_spread_constraints[{i}].maxSkew must be >= 1"
            ));
        }
        if c.topology_key.is_empty() {
            return Err(format!(
                "{name}.topology_spread_constraints[{i}].topologyKey is required"
            ));
        }
    }
    Ok(())
}

impl Policy for Scheduling {
    type Settings = Settings;
    const NAME: &'static str = "scheduling";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: Hooks = Hooks::POD;

    fn validate(s: &Settings) -> Result<(), String> {
        validate_rule("default", &s.default)?;
        for (p, r) in &s.profiles {
            validate_rule(&format!("profiles.{p}"), r)?;
        }
        Ok(())
    }

    fn shape_pod(s: &Settings, ctx: &Context, pod: &mut Pod) -> Result<(), Rejection> {
        let rule = s.rule_for(&ctx.profile_id);
        let spec = pod
            .spec
            .as_mut()
            .ok_or_else(|| Rejection::Error("Pod has no spec".into()))?;
        if !rule.node_selector.is_empty() {
            spec.node_selector
                .get_or_insert_default()
                .extend(rule.node_selector);
        }
        if !rule.tolerations.is_empty() {
            let existing = spec.tolerations.get_or_insert_default();
            for t in rule.tolerations {
                if !existing.contains(&t) {
                    existing.push(t);
                }
            }
        }
        if rule.affinity.is_some() {
            spec.affinity = rule.affinity;
        }
        if !rule.topology_spread_constraints.is_empty() {
            // The API server refuses two constraints on the same topology key
            // and whenUnsatisfiable: this rule's replaces one already there,
            // so running the plugin again (or twice in a chain) changes
            // nothing.
            let existing = spec.topology_spread_constraints.get_or_insert_default();
            for c in rule.topology_spread_constraints {
                match existing.iter_mut().find(|e| {
                    e.topology_key == c.topology_key && e.when_unsatisfiable == c.when_unsatisfiable
                }) {
                    Some(e) => *e = c,
                    None => existing.push(c),
                }
            }
        }
        if rule.priority_class_name.is_some() {
            spec.priority_class_name = rule.priority_class_name;
        }
        if rule.runtime_class_name.is_some() {
            spec.runtime_class_name = rule.runtime_class_name;
        }
        Ok(())
    }
}

export_policy!(Scheduling);
