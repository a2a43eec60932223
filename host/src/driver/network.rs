//! Session isolation: the Ship runtime's API has no authentication, so no
//! sandbox may reach another sandbox's runtime port.
//!
//! Berth keeps ONE NetworkPolicy per namespace selecting every session Pod
//! (`<prefix>.managed=true`), applied at start-up, before any session exists,
//! and re-applied on every start so an operator's edit is undone. When the
//! API server cannot be reached at start-up Berth serves anyway, retries in
//! the background, and refuses to create sessions until the policy is in. One shared
//! policy, not one per session, because:
//! - no window: it exists before the first Pod, where a per-session policy
//!   would be created after its Pod (it needs the Pod as owner) and a failure
//!   in between would leave a reachable sandbox;
//! - no orphans and no per-session API calls on the hot path;
//! - session Pods listen only on their runtime ports, so allowing Bay to any
//!   port of a session Pod exposes nothing more than the runtime ports.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::config::{Config, EgressMode};
use crate::error::Result;

pub fn policy_name(config: &Config) -> String {
    format!("{}-session-isolation", config.label_prefix)
}

pub fn session_isolation_policy(config: &Config) -> NetworkPolicy {
    let np = &config.network_policy;
    let managed = BTreeMap::from([(
        format!("{}.managed", config.label_prefix),
        "true".to_string(),
    )]);
    let from = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(np.ingress_from_pods.clone()),
            match_expressions: None,
        }),
        namespace_selector: (!np.ingress_from_namespaces.is_empty()).then(|| LabelSelector {
            match_labels: Some(np.ingress_from_namespaces.clone()),
            match_expressions: None,
        }),
        ip_block: None,
    };
    let dns = NetworkPolicyEgressRule {
        to: None,
        ports: Some(
            ["UDP", "TCP"]
                .iter()
                .map(|p| NetworkPolicyPort {
                    port: Some(IntOrString::Int(53)),
                    protocol: Some((*p).into()),
                    end_port: None,
                })
                .collect(),
        ),
    };
    let (egress, types) = match np.egress {
        EgressMode::Unrestricted => (None, vec!["Ingress".to_string()]),
        EgressMode::DnsOnly => (Some(vec![dns]), vec!["Ingress".into(), "Egress".into()]),
        EgressMode::DnsAndExternal => (
            Some(vec![
                dns,
                NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        ip_block: Some(IPBlock {
                            cidr: "0.0.0.0/0".into(),
                            except: Some(np.cluster_cidrs.clone()),
                        }),
                        ..Default::default()
                    }]),
                    ports: None,
                },
            ]),
            vec!["Ingress".into(), "Egress".into()],
        ),
    };
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(policy_name(config)),
            namespace: Some(config.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "berth".to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(managed),
                match_expressions: None,
            }),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![from]),
                ports: None,
            }]),
            egress,
            policy_types: Some(types),
        }),
    }
}

/// Applies the policy (server-side apply: idempotent, undoes drift).
pub async fn ensure(client: &kube::Client, config: &Config) -> Result<()> {
    if !config.network_policy.enabled {
        return Ok(());
    }
    let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), &config.namespace);
    let policy = session_isolation_policy(config);
    api.patch(
        &policy_name(config),
        &PatchParams::apply("berth").force(),
        &Patch::Apply(&policy),
    )
    .await?;
    Ok(())
}
