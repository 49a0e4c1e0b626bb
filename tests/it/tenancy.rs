//! Tenants and installations kept apart, each attack beside its allowed
//! control (the same set-up with consent converges), so a refusal is shown
//! to be the policy's and not the set-up's: the operator's own identity
//! lent only where the installation allows it and only with the external
//! ID it generates (moto enforcing the role's trust policy); consent bound
//! to the account a cluster reached AWS through; two installations on one
//! AWS account that never touch each other's resources; node roles that
//! cannot be escalated; one tenant's credentials never looking at another
//! tenant's clusters (the proxy's trace by session).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use aws_sdk_ec2::types::Filter;
use byoc_operator::api::{AccountPhase, CloudAccount, ComputeCluster};
use byoc_operator::installation::{Installation, SECRET_KEY};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

use crate::clusters::{
    condition_with, counts, delete_and_wait_gone, orphan, ready_account, small_cluster_manifest,
    stalled_with, wait_gone, wait_running, Counts, WAIT,
};
use crate::support::{
    assert_no_key_material_in, byoc, create_namespace, eventually, ground_with_crds, install_crds,
    kubectl_apply_in, record_figure, CrossAccount, Edited, Ground, Operator, OperatorExt,
};

/// An installation Secret `name` in `namespace` holding `secret`, made
/// before the operator starts so that the test knows its external IDs.
async fn installation(
    g: &Ground,
    namespace: &str,
    name: &str,
    secret: &str,
) -> Result<Installation> {
    kubectl_apply_in(
        g,
        namespace,
        &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{{SECRET_KEY}: \"{secret}\"}}\n"),
    )?;
    Installation::from_secret(secret.as_bytes()).context("a secret of 32 bytes or more")
}

fn installation_args<'a>(name: &'a str, namespace: &'a str) -> Vec<&'a str> {
    vec![
        "--installation-secret",
        name,
        "--installation-namespace",
        namespace,
    ]
}

/// Waits until the CloudAccount `namespace/name` has condition `Stalled`
/// with `reason`, or is `ready` when `reason` is `None`.
async fn account_state(
    g: &Ground,
    namespace: &str,
    name: &str,
    reason: Option<&str>,
) -> Result<CloudAccount> {
    let api: Api<CloudAccount> = Api::namespaced(g.client.clone(), namespace);
    eventually(
        &format!("CloudAccount {namespace}/{name}: {reason:?}"),
        WAIT,
        || async {
            let a = api.get(name).await?;
            let status = a.status.clone().unwrap_or_default();
            let done = match reason {
                None => status.phase == Some(AccountPhase::Ready),
                Some(r) => status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == r),
            };
            Ok(done.then_some(a))
        },
    )
    .await
}

fn stalled_message(a: &CloudAccount) -> String {
    a.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Stalled"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// AssumeRole calls the proxy has answered so far.
fn assume_role_calls(g: &Ground) -> u64 {
    g.proxy.calls().get("AssumeRole").copied().unwrap_or(0)
}

/// A role in moto's account trusting `principal` with `external_id` in
/// sessions of `namespace`, allowed everything.
async fn trusting_role(
    x: &CrossAccount,
    name: &str,
    principal: &str,
    (external_id, namespace): (&str, &str),
) -> Result<String> {
    let iam = aws_sdk_iam::Client::new(&x.admin);
    // The trust policy as the operator prints it (`iam-policy trust`).
    let trust = byoc_operator::account::iam_policy::trust_policy(
        principal,
        Some(external_id),
        Some(namespace),
    );
    let role = iam
        .create_role()
        .role_name(name)
        .assume_role_policy_document(trust.to_string())
        .send()
        .await?;
    iam.put_role_policy()
        .role_name(name)
        .policy_name("p")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
        )
        .send()
        .await?;
    Ok(role.role().map(|r| r.arn().to_string()).unwrap_or_default())
}

fn ambient_account(name: &str, role: &str, extra: &str) -> String {
    format!("apiVersion: byoc.dev/v1alpha1\nkind: CloudAccount\nmetadata: {{name: {name}}}\nspec:\n  region: us-east-1\n  roleArn: {role}\n{extra}")
}

#[tokio::test]
async fn the_operators_identity_is_lent_only_where_allowed_and_only_with_its_external_id(
) -> Result<()> {
    let g = ground_with_crds("ten-ambient").await?;
    let a = g.namespace.clone();
    let (b, c) = (format!("{a}-b"), format!("{a}-c"));
    create_namespace(&g.client, &b).await?;
    create_namespace(&g.client, &c).await?;
    let secret = "installation-secret-of-the-tenancy-test-0001";
    let inst = installation(&g, &a, "inst", secret).await?;
    let x = CrossAccount::set_up(&g).await?;
    // Team A's role trusts the operator's identity with A's generated
    // external ID; team B's with B's; team C's with C's.
    let mut roles = vec![];
    for (role, ns, account) in [
        ("team-a", &a, "acme"),
        ("team-b", &b, "own"),
        ("team-c", &c, "late"),
    ] {
        let trust = (&inst.external_id(ns, account)[..], &ns[..]);
        roles.push(trusting_role(&x, role, &x.base_arn, trust).await?);
    }
    let [role_a, role_b, role_c] =
        <[String; 3]>::try_from(roles).map_err(|_| anyhow::anyhow!("three roles"))?;

    // One installation, an operator process per namespace (each watches
    // one), acting as the operator's identity: keys allowed only AssumeRole.
    let ambient = format!("{a},{b}");
    let mut args = installation_args("inst", &a);
    args.extend(["--ambient-identity-namespaces", &ambient]);
    args.extend(["--account-verify-interval", "10m"]);
    let env = [
        ("AWS_ACCESS_KEY_ID", x.base_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", x.base_secret.as_str()),
    ];
    let op_a = Operator::start_in(&g, &a, &args, &env)?;
    let _op_b = Operator::start_in(&g, &b, &args, &env)?;
    let op_c = Operator::start_in(&g, &c, &args, &env)?;

    // Control: A's account assumes A's role with the ID it publishes.
    kubectl_apply_in(&g, &a, &ambient_account("acme", &role_a, ""))?;
    let acme = account_state(&g, &a, "acme", None).await?;
    let published = acme.status.as_ref().and_then(|s| s.external_id.clone());
    assert_eq!(
        published.as_deref(),
        Some(inst.external_id(&a, "acme").as_str()),
        "status.externalId {published:?}"
    );
    assert!(
        acme.status
            .as_ref()
            .and_then(|s| s.arn.as_deref())
            .is_some_and(|arn| arn.contains("assumed-role/team-a/")),
        "acme verified as {:?}",
        acme.status
    );

    // B copies A's external ID into its spec: refused before STS.
    let before = assume_role_calls(&g);
    let copied = format!("  externalId: {}\n", inst.external_id(&a, "acme"));
    kubectl_apply_in(&g, &b, &ambient_account("copycat", &role_a, &copied))?;
    let copycat = account_state(&g, &b, "copycat", Some("ExternalIdNotAllowed")).await?;
    assert!(
        stalled_message(&copycat).contains(&inst.external_id(&b, "copycat")),
        "the message does not say what to trust: {}",
        stalled_message(&copycat)
    );
    // A namespace the installation does not list: refused, no AWS call.
    kubectl_apply_in(&g, &c, &ambient_account("late", &role_c, ""))?;
    let late = account_state(&g, &c, "late", Some("AmbientIdentityNotAllowed")).await?;
    assert!(
        stalled_message(&late).contains("ambientIdentity.namespaces"),
        "the message does not name the setting: {}",
        stalled_message(&late)
    );
    assert!(
        late.status
            .as_ref()
            .and_then(|s| s.external_id.as_ref())
            .is_none(),
        "an external ID was published where the identity may not be used"
    );
    // Without a role the operator's identity itself would be lent.
    kubectl_apply_in(
        &g,
        &b,
        "apiVersion: byoc.dev/v1alpha1\nkind: CloudAccount\nmetadata: {name: bare}\nspec:\n  region: us-east-1\n",
    )?;
    account_state(&g, &b, "bare", Some("AmbientIdentityNotAllowed")).await?;
    assert_eq!(
        assume_role_calls(&g),
        before,
        "AssumeRole was called for refused accounts: {} calls, {before} before",
        assume_role_calls(&g)
    );

    // B names A's role with the operator's identity: B's generated ID is
    // sent, and A's trust policy (moto enforcing it) refuses it.
    kubectl_apply_in(&g, &b, &ambient_account("borrowed", &role_a, ""))?;
    let borrowed = account_state(&g, &b, "borrowed", Some("AssumeRoleDenied")).await?;
    assert!(
        assume_role_calls(&g) > before,
        "STS was not asked: the refusal is not the trust policy's"
    );
    assert!(
        stalled_message(&borrowed).contains(&inst.external_id(&b, "borrowed")),
        "the message does not say what to trust: {}",
        stalled_message(&borrowed)
    );
    // What the operator prints for A's trust policy names A's ID.
    let trust = byoc(
        &g,
        &[
            "iam-policy",
            "trust",
            "--account",
            &format!("{a}/acme"),
            "--principal",
            &x.base_arn,
        ],
    )?;
    assert!(
        trust.contains(&inst.external_id(&a, "acme")) && trust.contains(&x.base_arn),
        "iam-policy trust --account: {trust}"
    );
    // Control: B's own role, trusting B's ID, is assumed.
    kubectl_apply_in(&g, &b, &ambient_account("own", &role_b, ""))?;
    account_state(&g, &b, "own", None).await?;
    // Control: C listed by the installation, its account is used.
    drop(op_c);
    let ambient = format!("{a},{b},{c}");
    let mut args = installation_args("inst", &a);
    args.extend(["--ambient-identity-namespaces", &ambient]);
    let _op_c = Operator::start_in(&g, &c, &args, &env)?;
    account_state(&g, &c, "late", None).await?;

    // The installation's secret is in no log, Event, status or metric.
    assert_no_key_material_in(&g, &a, &op_a, &[secret]).await?;
    record_figure(serde_json::json!({
        "suite": "tenancy",
        "setup": "moto enforcing IAM; the operator's identity: keys allowed only sts:AssumeRole; one installation, an operator per namespace; team roles trusting that identity with their account's generated external ID",
        "n": 5,
        "figure": "B naming A's role: STS refused B's generated ID (AssumeRoleDenied); B copying A's external ID into its spec, a namespace not listed, no roleArn: refused with no AssumeRole call; controls ready: A's account, B's own role, C once listed",
        "pass": true,
    }))
}

/// A Secret `name` holding `data` (a YAML flow mapping's body), labelled
/// for `usage` (none: unlabelled).
fn secret_manifest(name: &str, data: &str, usage: Option<&str>) -> String {
    let labels = usage
        .map(|u| format!(", labels: {{byoc.dev/use: {u}}}"))
        .unwrap_or_default();
    format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}{labels}}}\nstringData: {{{data}}}\n")
}

/// The Secret-based account `name` in `namespace` with base keys `key_id`
/// (moto takes any key while it does not enforce IAM).
fn keyed_account(name: &str, key_id: &str, allowed: &str) -> String {
    let secret = secret_manifest(
        &format!("{name}-keys"),
        &format!("AWS_ACCESS_KEY_ID: {key_id}, AWS_SECRET_ACCESS_KEY: testing"),
        Some("credentials"),
    );
    format!(
        "{secret}---\napiVersion: byoc.dev/v1alpha1\nkind: CloudAccount\nmetadata: {{name: {name}}}\nspec:\n  region: us-east-1\n  credentialsSecretRef: {{name: {name}-keys}}\n  roleArn: arn:aws:iam::123456789012:role/byoc-cross-account\n  allowedNamespaces: [{allowed}]\n"
    )
}

fn in_use(finalizers: &[String]) -> bool {
    finalizers.iter().any(|f| f == "byoc.dev/in-use")
}

#[tokio::test]
async fn a_cluster_pointed_at_a_foreign_account_gets_nothing_of_it() -> Result<()> {
    let g = ground_with_crds("ten-repoint").await?;
    let c = g.namespace.clone();
    let a = format!("{c}-a");
    create_namespace(&g.client, &a).await?;
    // Team A's account, with keys the trace can tell apart, allowing no
    // other namespace; an operator of the same installation watches A.
    const FOREIGN_KEY: &str = "AKIDTEAMAFOREIGN0001";
    kubectl_apply_in(&g, &a, &keyed_account("acme", FOREIGN_KEY, ""))?;
    let _op_a = Operator::start_in(&g, &a, &["--progress-poll", "1s"], &[])?;
    account_state(&g, &a, "acme", None).await?;
    // Team C provisions through its own account.
    let op = Operator::start(&g, &["--progress-poll", "1s"], &[])?;
    ready_account(&g).await?;
    kubectl_apply_in(&g, &c, &small_cluster_manifest("ml", "10.20.0.0/16"))?;
    let cc = wait_running(&g, "ml", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    let recorded = cc.status.as_ref().and_then(|s| s.cloud_account.clone());
    assert!(
        recorded
            .as_ref()
            .is_some_and(|r| r.namespace == c && r.name == "acme"),
        "status.cloudAccount {recorded:?}"
    );
    let foreign_used = || {
        g.proxy
            .trace()
            .iter()
            .any(|call| call.access_key == FOREIGN_KEY)
    };
    let calls_before = g.proxy.trace().len();
    assert!(
        g.proxy
            .trace()
            .iter()
            .any(|call| !call.access_key.is_empty()),
        "the trace records no access keys: nothing would be checked"
    );
    let foreign_before = g
        .proxy
        .trace()
        .iter()
        .filter(|c| c.access_key == FOREIGN_KEY)
        .count();

    // Re-pointed at A's account, which does not allow C: refused.
    let clusters = g.api::<ComputeCluster>();
    let repoint = |ns: &str| serde_json::json!({"spec": {"cloudAccountRef": {"name": "acme", "namespace": ns}}});
    clusters
        .patch("ml", &PatchParams::default(), &Patch::Merge(repoint(&a)))
        .await?;
    let why = stalled_with(&g, "ml", "NamespaceNotAllowed").await?;
    assert!(why.message.contains(&a), "{}", why.message.clone());
    // `describe` decides as the operator does: A's account is not used to
    // describe C's cluster.
    let described = byoc(&g, &["describe", "computecluster", "ml", "-n", &c])?;
    assert!(
        described.contains("not described") && described.contains("does not allow namespace"),
        "{described}"
    );
    // Deleting it does not open the door either: its resources came
    // through C's account, not A's.
    clusters.delete("ml", &DeleteParams::default()).await?;
    eventually("the deletion held for want of consent", WAIT, || async {
        let cc = clusters.get("ml").await?;
        Ok(cc
            .status
            .unwrap_or_default()
            .conditions
            .into_iter()
            .find(|c| {
                c.type_ == "Stalled"
                    && c.reason == "NamespaceNotAllowed"
                    && c.message.contains("cannot delete")
            }))
    })
    .await?;
    let accounts_a: Api<CloudAccount> = Api::namespaced(g.client.clone(), &a);
    let secrets_a: Api<Secret> = Api::namespaced(g.client.clone(), &a);
    assert!(
        !in_use(accounts_a.get("acme").await?.finalizers()),
        "A's account was marked in use by C's cluster"
    );
    assert!(
        !in_use(secrets_a.get("acme-keys").await?.finalizers()),
        "A's Secret was marked in use by C's cluster"
    );
    let foreign_after = g
        .proxy
        .trace()
        .iter()
        .filter(|c| c.access_key == FOREIGN_KEY)
        .count();
    assert_eq!(
        foreign_after, foreign_before,
        "A's credentials were used for C's cluster ({foreign_before} → {foreign_after} calls)"
    );
    assert!(
        g.proxy.trace().len() >= calls_before,
        "the trace went backwards"
    );
    // Pointed back, it is deleted through C's account, to nothing.
    clusters
        .patch("ml", &PatchParams::default(), &Patch::Merge(repoint(&c)))
        .await?;
    wait_gone(&g, "ml").await?;
    assert_eq!(counts(&g, &uid).await?, Counts::default(), "left behind");

    // Control: once A allows C, a cluster of C uses A's account, which is
    // then held in use and its credentials used.
    kubectl_apply_in(&g, &a, &keyed_account("acme", FOREIGN_KEY, &c))?;
    kubectl_apply_in(
        &g,
        &c,
        &small_cluster_manifest("invited", "10.21.0.0/16").edited(
            "cloudAccountRef: {name: acme}",
            &format!("cloudAccountRef: {{name: acme, namespace: {a}}}"),
        ),
    )?;
    let invited = wait_running(&g, "invited", |_| true)
        .await
        .with_context(|| format!("operator log tail:\n{}", op.log_tail(15)))?;
    assert!(
        foreign_used(),
        "A's credentials were not used once A allowed C"
    );
    // (Whether A's account is held for it is the account controller's to
    // say, and the one watching A does not see C's clusters here: the
    // consent recorded is what binds its cleanup.)
    let through = invited
        .status
        .as_ref()
        .and_then(|s| s.cloud_account.clone());
    assert!(
        through
            .as_ref()
            .is_some_and(|r| r.namespace == a && r.name == "acme"),
        "status.cloudAccount {through:?}"
    );
    let invited_uid = invited.uid().context("uid")?;
    delete_and_wait_gone(&g, "invited").await?;
    assert_eq!(
        counts(&g, &invited_uid).await?,
        Counts::default(),
        "left behind"
    );
    record_figure(serde_json::json!({
        "suite": "tenancy",
        "setup": "a running cluster of namespace C re-pointed at namespace A's account, which does not allow C (same AWS account), then deleted; control: A allows C",
        "n": 1,
        "figure": format!("refused (NamespaceNotAllowed) and its deletion held until pointed back; A's account and Secret got no finalizer; A's keys signed 0 of {} calls before A allowed C; the control converged through A's keys and was deleted to zero", calls_before),
        "pass": true,
    }))
}

/// Every EC2 resource in moto with its tags, by ID, of the clusters `uids`.
async fn snapshot(g: &Ground, uids: &[&str]) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let tags = ec2
        .describe_tags()
        .filters(
            Filter::builder()
                .name("key")
                .values("byoc.dev/cluster-uid")
                .build(),
        )
        .filters(
            Filter::builder()
                .name("value")
                .set_values(Some(uids.iter().map(|u| u.to_string()).collect()))
                .build(),
        )
        .send()
        .await?;
    let ids: Vec<String> = tags
        .tags()
        .iter()
        .filter_map(|t| t.resource_id().map(str::to_string))
        .collect();
    for chunk in ids.chunks(100) {
        let all = ec2
            .describe_tags()
            .filters(
                Filter::builder()
                    .name("resource-id")
                    .set_values(Some(chunk.to_vec()))
                    .build(),
            )
            .send()
            .await?;
        for t in all.tags() {
            out.entry(t.resource_id().unwrap_or_default().to_string())
                .or_default()
                .insert(
                    t.key().unwrap_or_default().to_string(),
                    t.value().unwrap_or_default().to_string(),
                );
        }
    }
    Ok(out)
}

async fn running_in(g: &Ground, namespace: &str, name: &str) -> Result<ComputeCluster> {
    let api: Api<ComputeCluster> = Api::namespaced(g.client.clone(), namespace);
    eventually(&format!("{namespace}/{name} running"), WAIT, || async {
        let cc = api.get(name).await?;
        let running = cc.status.as_ref().and_then(|s| s.phase)
            == Some(byoc_operator::api::ClusterPhase::Running);
        Ok(running.then_some(cc))
    })
    .await
}

/// Two installations on one apiserver and one AWS account: production in
/// the ground's namespace, staging in `<it>-s`, each with its installation
/// Secret `inst`.
struct Two {
    p: String,
    s: String,
    prod: Installation,
    staging: Installation,
}

/// The role staging's CloudAccount assumes (production's: `ROLE_ARN`).
const STAGING_ROLE: &str = "arn:aws:iam::123456789012:role/byoc-cross-account-staging";

async fn two_installations(g: &Ground) -> Result<Two> {
    let p = g.namespace.clone();
    let s = format!("{p}-s");
    create_namespace(&g.client, &s).await?;
    let prod = installation(g, &p, "inst", "production-installation-secret-0000000000").await?;
    let staging = installation(g, &s, "inst", "staging-installation-secret-00000000000000").await?;
    assert_ne!(prod.id(), staging.id(), "the two installations share an ID");
    // Each installation reaches the account through the role connected for
    // it, whose only permission is its own installation's policy.
    g.grant_apart(prod.id(), STAGING_ROLE, staging.id())?;
    Ok(Two {
        p,
        s,
        prod,
        staging,
    })
}

impl Two {
    /// The operator of the installation in `ns`.
    fn start(&self, g: &Ground, ns: &str, resync: &str) -> Result<Operator> {
        let mut args = installation_args("inst", ns);
        args.extend(["--progress-poll", "1s", "--resync-interval", resync]);
        Operator::start_in(g, ns, &args, &[])
    }

    /// CloudAccount `acme` of each, through its own role, verified.
    async fn accounts(&self, g: &Ground) -> Result<()> {
        for (ns, role) in [(&self.p, crate::support::ROLE_ARN), (&self.s, STAGING_ROLE)] {
            let account =
                keyed_account("acme", "testing", "").edited(crate::support::ROLE_ARN, role);
            kubectl_apply_in(g, ns, &account)?;
            account_state(g, ns, "acme", None).await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn two_installations_on_one_aws_account_never_touch_each_others_resources() -> Result<()> {
    let g = ground_with_crds("ten-two").await?;
    let two = two_installations(&g).await?;
    let (p, s) = (two.p.clone(), two.s.clone());
    let (prod, staging) = (&two.prod, &two.staging);
    let start = |ns: &str| two.start(&g, ns, "2s");
    let mut op_p = start(&p)?;
    let mut op_s = start(&s)?;
    two.accounts(&g).await?;
    // Production: one live, one to leak, one let go with Retain.
    // Staging: one live, one to leak. All in one AWS account and region.
    for (ns, name, cidr) in [
        (&p, "live", "10.30.0.0/16"),
        (&p, "leak", "10.31.0.0/16"),
        (&p, "kept", "10.32.0.0/16"),
        (&s, "live", "10.33.0.0/16"),
        (&s, "leak", "10.34.0.0/16"),
    ] {
        kubectl_apply_in(&g, ns, &small_cluster_manifest(name, cidr))?;
    }
    let mut uid = BTreeMap::new();
    for (ns, name) in [
        (&p, "live"),
        (&p, "leak"),
        (&p, "kept"),
        (&s, "live"),
        (&s, "leak"),
    ] {
        let cc = running_in(&g, ns, name).await?;
        let recorded = cc.status.as_ref().and_then(|st| st.installation.clone());
        let want = if ns == &p { prod.id() } else { staging.id() };
        assert_eq!(
            recorded.as_deref(),
            Some(want),
            "{ns}/{name}: status.installation {recorded:?}, want {want}"
        );
        uid.insert(format!("{ns}/{name}"), cc.uid().context("uid")?);
    }
    let u = |k: &str| uid[k].clone();
    // Every resource carries its installation's tag.
    let tagged = snapshot(&g, &[&u(&format!("{p}/live")), &u(&format!("{s}/live"))]).await?;
    assert!(!tagged.is_empty(), "nothing found for the live clusters");
    for (id, tags) in &tagged {
        let want = if tags.get("byoc.dev/cluster-uid") == Some(&u(&format!("{p}/live"))) {
            prod.id()
        } else {
            staging.id()
        };
        assert_eq!(
            tags.get("byoc.dev/installation").map(String::as_str),
            Some(want),
            "{id}: {tags:?}"
        );
    }

    // Production lets one go with Retain, and both lose one cluster's
    // object with its resources left (a finalizer removed by hand).
    let clusters_p: Api<ComputeCluster> = Api::namespaced(g.client.clone(), &p);
    clusters_p
        .patch(
            "kept",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"deletionPolicy": "Retain"}})),
        )
        .await?;
    clusters_p.delete("kept", &DeleteParams::default()).await?;
    eventually("p/kept gone", WAIT, || async {
        Ok(clusters_p.get_opt("kept").await?.is_none().then_some(()))
    })
    .await?;
    op_p.process.kill();
    op_s.process.kill();
    orphan(&g, &p, "leak").await?;
    orphan(&g, &s, "leak").await?;
    let op_p = start(&p)?;
    let _op_s = start(&s)?;

    let others = [
        u(&format!("{s}/live")),
        u(&format!("{s}/leak")),
        u(&format!("{p}/kept")),
    ];
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    let before = snapshot(&g, &others).await?;
    assert!(before.len() > 10, "too little to compare: {before:?}");

    // Production's audit, everything it lists: its own leak only.
    let prod_args = |extra: &[&str]| {
        let mut v = vec![
            "audit",
            "--installation-secret",
            "inst",
            "--installation-namespace",
            &p,
            "--deadline",
            "3m",
        ];
        v.extend_from_slice(extra);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let args = prod_args(&["--delete", "--all"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = byoc(&g, &args)?;
    assert!(
        out.contains(&u(&format!("{p}/leak")))
            && out.contains("clusters of other operator installations")
            && out.contains("let go with deletionPolicy: Retain")
            && !out.contains(&u(&format!("{s}/leak")))
            && !out.contains(&u(&format!("{p}/kept"))),
        "production's audit:\n{out}"
    );
    assert_eq!(
        counts(&g, &u(&format!("{p}/leak"))).await?,
        Counts::default(),
        "production's leak was not deleted:\n{out}"
    );
    let after = snapshot(&g, &others).await?;
    assert_eq!(
        after, before,
        "production's audit changed what is not its to change:\nbefore {before:?}\nafter {after:?}"
    );
    // Production's running operator, resyncing every 2 s all along, did not either.
    assert_eq!(
        running_in(&g, &s, "live").await?.uid(),
        Some(u(&format!("{s}/live"))),
        "staging's cluster is gone"
    );

    // Control: staging's audit finds its own leak and deletes it when told.
    let staging_uid = u(&format!("{s}/leak"));
    let out = byoc(
        &g,
        &[
            "audit",
            "--installation-secret",
            "inst",
            "--installation-namespace",
            &s,
            "--delete",
            "--cluster",
            &staging_uid,
            "--deadline",
            "3m",
        ],
    )?;
    assert!(
        out.contains(&format!("former cluster {s}/leak (uid {staging_uid})")),
        "staging's audit:\n{out}"
    );
    assert_eq!(
        counts(&g, &staging_uid).await?,
        Counts::default(),
        "staging's leak was not deleted:\n{out}"
    );
    // A live cluster is refused by name.
    let live = u(&format!("{p}/live"));
    let args = prod_args(&["--delete", "--cluster", &live]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(
        byoc(&g, &args).is_err(),
        "audit accepted a live cluster to delete"
    );
    let retained = counts(&g, &u(&format!("{p}/kept"))).await?;
    assert_eq!(retained.vpcs, 1, "the retained VPC: {retained:?}");
    drop(op_p);
    record_figure(serde_json::json!({
        "suite": "tenancy",
        "setup": "two installations (different secrets) on one moto account, resyncing every 2 s: production with a live, a leaked and a Retain'ed cluster; staging with a live and a leaked one",
        "n": before.len(),
        "figure": format!("each converged its own, every resource tagged with its installation; production's `audit --delete --all` deleted its leak and left {} resources of staging and of the Retain'ed cluster as they were (tags compared); staging's audit deleted its own leak by --cluster; a live UID refused", before.len()),
        "pass": true,
    }))
}

#[tokio::test]
async fn node_roles_cannot_be_escalated_or_borrowed() -> Result<()> {
    let g = ground_with_crds("ten-iam").await?;
    let iam = aws_sdk_iam::Client::new(&g.aws().await);
    let policy = |name: &'static str| {
        let iam = iam.clone();
        async move {
            iam.create_policy()
                .policy_name(name)
                .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#)
                .send()
                .await?
                .policy()
                .and_then(|p| p.arn().map(str::to_string))
                .context("no policy ARN")
        }
    };
    let boundary = policy("team-boundary").await?;
    // The policy nodes may get, and one that would make them admins.
    let allowed = policy("node-extras").await?;
    let escalation = policy("everything").await?;
    let inst = installation(
        &g,
        &g.namespace,
        "inst",
        "iam-tenancy-installation-secret-000000",
    )
    .await?;
    // AWS's answer: the generated policy, with its allow-list and
    // boundary, is the role's only permission.
    g.grant(byoc_operator::account::iam_policy::PolicyOptions {
        installation: inst.id().to_string(),
        managed_policy_arns: vec![allowed.clone()],
        permissions_boundary: Some(boundary.clone()),
        // The team's own profile of the control below (`--pass-role`).
        pass_roles: vec!["arn:aws:iam::123456789012:role/team-nodes".into()],
        shared_node_role: None,
        ..Default::default()
    })?;
    let mut args = installation_args("inst", &g.namespace);
    args.extend(["--progress-poll", "1s"]);
    let op = Operator::start(&g, &args, &[])?;
    crate::clusters::ready_account(&g).await?;
    let ns = g.namespace.clone();
    kubectl_apply_in(
        &g,
        &ns,
        &format!("apiVersion: byoc.dev/v1alpha1\nkind: CloudAccount\nmetadata: {{name: acme}}\nspec:\n  region: us-east-1\n  credentialsSecretRef: {{name: keys}}\n  roleArn: arn:aws:iam::123456789012:role/byoc-cross-account\n  permissionsBoundaryArn: {boundary}\n"),
    )?;
    let with_policies = |name: &str, cidr: &str, arn: &str| {
        small_cluster_manifest(name, cidr).edited(
            "  nodeGroups:",
            &format!("  iam: {{managedPolicyArns: [\"{arn}\"]}}\n  nodeGroups:"),
        )
    };
    // Control: a listed policy is attached, and the role has the boundary.
    kubectl_apply_in(&g, &ns, &with_policies("bounded", "10.40.0.0/16", &allowed))?;
    let bounded = match wait_running(&g, "bounded", |_| true).await {
        Ok(cc) => cc,
        Err(e) => {
            let cc = g.api::<ComputeCluster>().get("bounded").await?;
            let conditions = cc.status.map(|s| s.conditions);
            return Err(e.context(format!("{conditions:?}\n{}", op.log_tail(5))));
        }
    };
    let role = bounded
        .status
        .as_ref()
        .and_then(|s| s.iam.as_ref())
        .and_then(|i| i.role_name.clone())
        .context("no role in status")?;
    let got = iam.get_role().role_name(&role).send().await?;
    let has = got
        .role()
        .and_then(|r| r.permissions_boundary())
        .and_then(|b| b.permissions_boundary_arn());
    assert_eq!(
        has,
        Some(boundary.as_str()),
        "role {role} has boundary {has:?}"
    );
    let attached = iam
        .list_attached_role_policies()
        .role_name(&role)
        .send()
        .await?;
    assert!(
        attached
            .attached_policies()
            .iter()
            .any(|p| p.policy_arn() == Some(allowed.as_str())),
        "the listed policy was not attached"
    );

    // A policy outside the list: AWS (the generated policy) refuses it.
    kubectl_apply_in(
        &g,
        &ns,
        &with_policies("escalate", "10.41.0.0/16", &escalation),
    )?;
    let denied = stalled_with(&g, "escalate", "AccessDenied").await?;
    assert!(
        denied.message.contains("AttachRolePolicy"),
        "not the attach that was refused: {}",
        denied.message
    );

    // The bounded cluster's instance profile, brought by another cluster:
    // refused before anything is made.
    let profile = role.clone();
    kubectl_apply_in(
        &g,
        &ns,
        &small_cluster_manifest("borrower", "10.42.0.0/16").edited(
            "  nodeGroups:",
            &format!("  iam: {{instanceProfileName: {profile}}}\n  nodeGroups:"),
        ),
    )?;
    let refused = stalled_with(&g, "borrower", "NotOursToUse").await?;
    assert!(
        refused.message.contains(&profile),
        "{}",
        refused.message.clone()
    );
    let borrower = g.api::<ComputeCluster>().get("borrower").await?;
    let borrower_uid = borrower.uid().context("uid")?;
    assert_eq!(
        counts(&g, &borrower_uid).await?.instances(),
        0,
        "nodes were launched with another cluster's profile"
    );
    // Control: a profile the team made itself is used.
    iam.create_role()
        .role_name("team-nodes")
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#)
        .send()
        .await?;
    iam.create_instance_profile()
        .instance_profile_name("team-nodes")
        .send()
        .await?;
    iam.add_role_to_instance_profile()
        .instance_profile_name("team-nodes")
        .role_name("team-nodes")
        .send()
        .await?;
    kubectl_apply_in(
        &g,
        &ns,
        &small_cluster_manifest("brings", "10.43.0.0/16").edited(
            "  nodeGroups:",
            "  iam: {instanceProfileName: team-nodes}\n  nodeGroups:",
        ),
    )?;
    wait_running(&g, "brings", |_| true).await?;
    for name in ["borrower", "escalate", "brings", "bounded"] {
        delete_and_wait_gone(&g, name).await?;
    }
    record_figure(serde_json::json!({
        "suite": "tenancy",
        "setup": "the generated permissions policy (one managed policy allowed, a permissions boundary) evaluated by the proxy where moto passes conditions unread; the CloudAccount requiring the boundary",
        "n": 3,
        "figure": "node role created with the boundary (GetRole) and the listed policy attached; a policy outside the list: AttachRolePolicy denied, Stalled AccessDenied; another cluster's instance profile brought: NotOursToUse, 0 instances; control: the team's own profile used",
        "pass": true,
    }))
}

/// The EC2 resources of cluster `uid` and whether each carries an
/// installation tag, with the IAM role's and profile's.
async fn installation_tags(g: &Ground, uid: &str, iam_name: &str) -> Result<Vec<(String, bool)>> {
    let all = snapshot(g, &[uid]).await?;
    let mut out: Vec<(String, bool)> = all
        .into_iter()
        .map(|(id, tags)| (id, tags.contains_key("byoc.dev/installation")))
        .collect();
    let iam = aws_sdk_iam::Client::new(&g.aws().await);
    let role = iam.get_role().role_name(iam_name).send().await?;
    let tagged =
        |tags: &[aws_sdk_iam::types::Tag]| tags.iter().any(|t| t.key() == "byoc.dev/installation");
    out.push((
        format!("iam-role/{iam_name}"),
        role.role().is_some_and(|r| tagged(r.tags())),
    ));
    let profile = iam
        .get_instance_profile()
        .instance_profile_name(iam_name)
        .send()
        .await?;
    out.push((
        format!("instance-profile/{iam_name}"),
        profile.instance_profile().is_some_and(|p| tagged(p.tags())),
    ));
    Ok(out)
}

#[tokio::test]
async fn resources_made_before_installations_are_adopted_with_one_tag_write() -> Result<()> {
    let g = ground_with_crds("ten-adopt").await?;
    let inst = installation(
        &g,
        &g.namespace,
        "inst",
        "adoption-installation-secret-0000000000",
    )
    .await?;
    let mut args = installation_args("inst", &g.namespace);
    args.extend(["--progress-poll", "1s"]);
    let mut op = Operator::start(&g, &args, &[])?;
    ready_account(&g).await?;
    kubectl_apply_in(
        &g,
        &g.namespace,
        &small_cluster_manifest("old", "10.50.0.0/16"),
    )?;
    let cc = wait_running(&g, "old", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    let iam_name = cc
        .status
        .as_ref()
        .and_then(|s| s.iam.as_ref())
        .and_then(|i| i.role_name.clone())
        .context("no role")?;
    // `version` and the metric name the installation the resources carry.
    let version = byoc(
        &g,
        &[
            "version",
            "--installation-secret",
            "inst",
            "--installation-namespace",
            &g.namespace,
        ],
    )?;
    assert!(
        version.contains(&format!("installation {}", inst.id())),
        "byoc-operator version: {version}"
    );
    assert_eq!(
        op.metric(&format!(
            "byoc_installation{{installation=\"{}\"}}",
            inst.id()
        ))?,
        1.0,
        "the installation metric"
    );
    let before = installation_tags(&g, &uid, &iam_name).await?;
    assert!(
        before.len() > 5 && before.iter().all(|(_, tagged)| *tagged),
        "not every resource carries the installation tag: {before:?}"
    );

    // As an operator before installations made it: no installation tag on
    // anything, none in status.
    op.process.kill();
    let admin = g.aws().await;
    let ec2 = aws_sdk_ec2::Client::new(&admin);
    let ec2_ids: Vec<String> = before
        .iter()
        .map(|(id, _)| id.clone())
        .filter(|id| !id.contains('/'))
        .collect();
    ec2.delete_tags()
        .set_resources(Some(ec2_ids.clone()))
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("byoc.dev/installation")
                .build(),
        )
        .send()
        .await?;
    let iam = aws_sdk_iam::Client::new(&admin);
    iam.untag_role()
        .role_name(&iam_name)
        .tag_keys("byoc.dev/installation")
        .send()
        .await?;
    iam.untag_instance_profile()
        .instance_profile_name(&iam_name)
        .tag_keys("byoc.dev/installation")
        .send()
        .await?;
    g.api::<ComputeCluster>()
        .patch_status(
            "old",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"installation": null}})),
        )
        .await?;
    assert!(
        installation_tags(&g, &uid, &iam_name)
            .await?
            .iter()
            .all(|(_, t)| !t),
        "the installation tags were not removed"
    );

    // The installation whose apiserver holds the live cluster adopts them,
    // with the adoption window open in its policy (`--adopt`).
    g.grant(byoc_operator::account::iam_policy::PolicyOptions {
        adopt: true,
        ..Default::default()
    })?;
    g.proxy.reset_calls();
    // (Started, it reconciles every cluster it watches.)
    let op = Operator::start(&g, &args, &[])?;
    let api = g.api::<ComputeCluster>();
    eventually("the cluster adopted", WAIT, || async {
        let cc = api.get("old").await?;
        let recorded = cc.status.and_then(|s| s.installation);
        Ok((recorded.as_deref() == Some(inst.id())).then_some(()))
    })
    .await
    .with_context(|| format!("operator log tail:\n{}", op.log_tail(10)))?;
    let after = installation_tags(&g, &uid, &iam_name).await?;
    assert!(
        after.len() == before.len() && after.iter().all(|(_, tagged)| *tagged),
        "not every resource was adopted: {after:?}"
    );
    let calls = g.proxy.calls();
    let count = |op: &str| calls.get(op).copied().unwrap_or(0);
    assert!(
        count("CreateTags") == 1 && count("TagRole") == 1 && count("TagInstanceProfile") == 1,
        "adoption took more than one tag write per service: {calls:?}"
    );
    assert!(
        count("RunInstances") == 0 && count("CreateVpc") == 0,
        "adoption created something: {calls:?}"
    );
    delete_and_wait_gone(&g, "old").await?;
    assert_eq!(counts(&g, &uid).await?, Counts::default(), "left behind");
    Ok(())
}

/// The identity of the apiserver `g` talks to (its kube-system UID).
async fn apiserver_of(g: &Ground) -> Result<String> {
    byoc_operator::installation::apiserver_identity(&g.client)
        .await
        .map_err(Into::into)
}

#[tokio::test]
async fn one_installation_runs_against_one_apiserver() -> Result<()> {
    use byoc_operator::installation::APISERVER_ANNOTATION;
    const COPIED: &str = "installation-secret-copied-to-a-second-apiserver";
    let a = Ground::new("ten-apiserver").await?;
    let b = Ground::on_own_apiserver("ten-apiserver-b").await?;
    for g in [&a, &b] {
        install_crds(g).await?;
    }
    let (here_a, here_b) = (apiserver_of(&a).await?, apiserver_of(&b).await?);
    assert_ne!(here_a, here_b, "two apiservers, one identity");
    let inst = installation(&a, &a.namespace, "inst", COPIED).await?;
    // The first start binds the installation to its apiserver.
    let args_a = installation_args("inst", &a.namespace);
    let _op_a = Operator::start_in(&a, &a.namespace, &args_a, &[])?;
    let secrets_a: Api<Secret> = Api::namespaced(a.client.clone(), &a.namespace);
    let bound = eventually("the Secret bound to its apiserver", WAIT, || async {
        let s = secrets_a.get("inst").await?;
        Ok(s.annotations().get(APISERVER_ANNOTATION).cloned())
    })
    .await?;
    assert_eq!(bound, here_a);

    // The Secret copied to a second apiserver, as GitOps or a backup would.
    let original = secrets_a.get("inst").await?;
    let copy = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("inst".into()),
            namespace: Some(b.namespace.clone()),
            annotations: Some(original.annotations().clone()),
            ..Default::default()
        },
        data: original.data.clone(),
        ..Default::default()
    };
    let secrets_b: Api<Secret> = Api::namespaced(b.client.clone(), &b.namespace);
    secrets_b
        .create(&kube::api::PostParams::default(), &copy)
        .await?;
    // `byoc-operator COMMAND` with the copied Secret on the second apiserver.
    let ns_b = b.namespace.clone();
    let on_b = |command: &str, extra: &[&str]| -> Vec<String> {
        [
            command,
            "--installation-secret",
            "inst",
            "--installation-namespace",
            &ns_b,
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };
    // The operator refuses to run there, naming both apiservers and the way out.
    let run = on_b("run", &[]);
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let out = crate::support::byoc_within(&b, std::time::Duration::from_secs(60), &run)?;
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success()
            && said.contains("belongs to another apiserver")
            && said.contains(&here_a)
            && said.contains(&here_b)
            && said.contains("installation.apiserver"),
        "run on the second apiserver: {:?} {said}",
        out.status
    );
    // audit refuses there: the copied Secret, or the installation named.
    let copied = on_b("audit", &[]);
    let named: Vec<String> = vec!["audit".into(), "--installation".into(), inst.id().into()];
    for args in [copied, named] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = crate::support::byoc_with(&b, &[], &args)?;
        let said = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success() && said.contains("--force"),
            "{args:?} on the second apiserver: {said}"
        );
    }
    // Control: forced, audit acts; and the installation moved on purpose
    // (what the chart's installation.apiserver writes) runs there.
    let forced = on_b("audit", &["--force"]);
    let args: Vec<&str> = forced.iter().map(String::as_str).collect();
    let out = crate::support::byoc_with(&b, &[], &args)?;
    assert!(
        out.status.success(),
        "forced audit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    secrets_b
        .patch(
            "inst",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {APISERVER_ANNOTATION: here_b}}}),
            ),
        )
        .await?;
    let args_b = installation_args("inst", &b.namespace);
    let mut op_b = Operator::start_in(&b, &b.namespace, &args_b, &[])?;
    op_b.wait_healthy()?;
    record_figure(serde_json::json!({
        "suite": "tenancy",
        "setup": "one installation secret on two apiservers (the second a Kubernetes cluster of its own): its Secret bound by the first start on the first, then copied with its annotation to the second",
        "n": 4,
        "figure": "on the second apiserver the operator refused to run (naming both kube-system UIDs and installation.apiserver), audit refused the copied Secret and the installation named by ID; controls: audit with --force acted, and the Secret moved on purpose (its annotation naming the second apiserver) ran there",
        "pass": true,
    }))
}

/// The calls the proxy accepted since `mark` (its uptime then).
fn calls_since(g: &Ground, mark: std::time::Duration) -> Vec<testground::proxy::Call> {
    let mut calls = g.proxy.trace();
    calls.retain(|c| c.accepted >= mark);
    calls
}

/// The sessions (assumed-role ARNs) that signed `operation` since `mark`.
fn sessions_of(
    g: &Ground,
    mark: std::time::Duration,
    operation: &str,
) -> std::collections::BTreeSet<String> {
    calls_since(g, mark)
        .into_iter()
        .filter(|c| c.operation == operation)
        .map(|c| c.session)
        .collect()
}

#[tokio::test]
async fn a_tenants_credentials_look_only_at_its_own_clusters() -> Result<()> {
    // Two CloudAccounts reaching the same AWS account and region through
    // keys and sessions the trace tells apart; the shared resync ticks
    // every 2 s.
    let g = ground_with_crds("ten-groups").await?;
    let op = Operator::start(
        &g,
        &["--progress-poll", "1s", "--resync-interval", "2s"],
        &[],
    )?;
    let ns = g.namespace.clone();
    kubectl_apply_in(
        &g,
        &ns,
        &keyed_account("team-x", "AKIDTENANTX000000001", ""),
    )?;
    kubectl_apply_in(
        &g,
        &ns,
        &keyed_account("team-y", "AKIDTENANTY000000001", ""),
    )?;
    for name in ["team-x", "team-y"] {
        account_state(&g, &ns, name, None).await?;
    }
    let session = |name: &str| {
        format!("arn:aws:sts::123456789012:assumed-role/byoc-cross-account/byoc.{ns}.{name}")
    };
    let cluster = |name: &str, cidr: &str, account: &str| {
        small_cluster_manifest(name, cidr).edited(
            "cloudAccountRef: {name: acme}",
            &format!("cloudAccountRef: {{name: {account}}}"),
        )
    };
    // Y's cluster settles first, X's last: X's clients are the latest.
    kubectl_apply_in(&g, &ns, &cluster("of-y", "10.61.0.0/16", "team-y"))?;
    wait_running(&g, "of-y", |_| true)
        .await
        .with_context(|| op.log_tail(20))?;
    kubectl_apply_in(&g, &ns, &cluster("of-x", "10.62.0.0/16", "team-x"))?;
    wait_running(&g, "of-x", |_| true)
        .await
        .with_context(|| op.log_tail(20))?;
    crate::resync::unchanged_grows_by(&op, 2).await?;

    // Settled: each tenant's clusters are looked at through its own
    // session, and each session is seen (the trace can tell).
    let mark = g.proxy.uptime();
    crate::resync::unchanged_grows_by(&op, 4).await?;
    let looked = sessions_of(&g, mark, "DescribeVpcs");
    assert_eq!(
        looked,
        [session("team-x"), session("team-y")].into_iter().collect(),
        "the shared resync's sessions (one group per CloudAccount expected)"
    );

    // X leaves: its cluster and its account are deleted. Its credentials
    // look at nothing again (a verification of X's own account in flight
    // when it went may still end: that is STS, not a look), while Y's
    // clusters are still looked at.
    delete_and_wait_gone(&g, "of-x").await?;
    let accounts = g.api::<CloudAccount>();
    accounts.delete("team-x", &DeleteParams::default()).await?;
    eventually("CloudAccount team-x gone", WAIT, || async {
        Ok(accounts.get_opt("team-x").await?.is_none().then_some(()))
    })
    .await?;
    let mark = g.proxy.uptime();
    crate::resync::unchanged_grows_by(&op, 2).await?;
    let after: Vec<_> = calls_since(&g, mark)
        .into_iter()
        .filter(|c| c.session == session("team-x") && c.operation != "GetCallerIdentity")
        .map(|c| c.operation)
        .collect();
    assert!(
        after.is_empty(),
        "X's session was used after X left: {after:?}\n{}",
        op.log_tail(40)
    );
    assert_eq!(
        sessions_of(&g, mark, "DescribeVpcs"),
        [session("team-y")].into_iter().collect(),
        "Y's cluster is no longer looked at through Y's session"
    );
    delete_and_wait_gone(&g, "of-y").await?;
    Ok(())
}

#[tokio::test]
async fn secrets_are_read_only_where_their_owner_labelled_them() -> Result<()> {
    let g = ground_with_crds("ten-secrets").await?;
    let op = Operator::start(&g, &["--progress-poll", "1s"], &[])?;
    ready_account(&g).await?;
    let ns = g.namespace.clone();
    // Someone's database password, and someone's AWS keys, in the
    // namespace, neither meant for the operator.
    const PASSWORD: &str = "db-password-not-for-nodes-7319";
    const KEY_ID: &str = "AKIDUNLABELLED000001";
    let db = |usage| secret_manifest("db-creds", &format!("password: {PASSWORD}"), usage);
    let keys = |usage| {
        secret_manifest(
            "ops-keys",
            &format!("AWS_ACCESS_KEY_ID: {KEY_ID}, AWS_SECRET_ACCESS_KEY: testing"),
            usage,
        )
    };
    kubectl_apply_in(&g, &ns, &db(None))?;
    kubectl_apply_in(&g, &ns, &keys(None))?;

    // As user data: refused, naming the label to add; nothing launched.
    kubectl_apply_in(
        &g,
        &ns,
        &small_cluster_manifest("snoop", "10.63.0.0/16").edited(
            "subnets: public}",
            "subnets: public, userDataSecretRef: {name: db-creds, key: password}}",
        ),
    )?;
    let why = stalled_with(&g, "snoop", "SecretNotLabelled").await?;
    assert!(
        why.message.contains("byoc.dev/use=user-data") && why.message.contains("db-creds"),
        "{}",
        why.message
    );
    // As credentials: refused alike; its key never reaches AWS.
    kubectl_apply_in(
        &g,
        &ns,
        "apiVersion: byoc.dev/v1alpha1\nkind: CloudAccount\nmetadata: {name: borrowed}\nspec:\n  region: us-east-1\n  credentialsSecretRef: {name: ops-keys}\n  roleArn: arn:aws:iam::123456789012:role/byoc-cross-account\n",
    )?;
    let refused = account_state(&g, &ns, "borrowed", Some("SecretNotLabelled")).await?;
    assert!(
        stalled_message(&refused).contains("byoc.dev/use=credentials"),
        "{}",
        stalled_message(&refused)
    );
    let used = |key: &str| g.proxy.trace().iter().any(|c| c.access_key == key);
    assert!(!used(KEY_ID), "the unlabelled Secret's key was sent to AWS");
    // Labelled for another use: still refused.
    kubectl_apply_in(&g, &ns, &db(Some("credentials")))?;
    let uid = crate::clusters::uid_of(&g, "snoop").await?;
    stalled_with(&g, "snoop", "SecretNotLabelled").await?;
    assert_eq!(
        counts(&g, &uid).await?.instances.values().sum::<usize>(),
        0,
        "an instance was launched with an unlabelled Secret's content"
    );

    // Controls: once labelled for the use, the same Secrets are read. The
    // label alone starts the next look (the Secret watch).
    kubectl_apply_in(&g, &ns, &db(Some("user-data")))?;
    wait_running(&g, "snoop", |_| true)
        .await
        .with_context(|| op.log_tail(20))?;
    kubectl_apply_in(&g, &ns, &keys(Some("credentials")))?;
    account_state(&g, &ns, "borrowed", None).await?;
    assert!(used(KEY_ID), "the labelled Secret's key was not used");
    // Even read, neither Secret's content is logged or published.
    assert_no_key_material_in(&g, &ns, &op, &[PASSWORD]).await?;
    delete_and_wait_gone(&g, "snoop").await?;
    Ok(())
}

/// Makes the operator of the test's namespace look at the clusters
/// `names` now. It watches that namespace alone, so a change of the
/// lender's account in another namespace reaches it at the next periodic
/// look; an operator watching every namespace (the chart's default) is
/// started by the account's change itself (`triggers.rs`).
async fn look_now(g: &Ground, names: &[&str], round: u32) -> Result<()> {
    for name in names {
        g.api::<ComputeCluster>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"test.byoc.dev/look": round.to_string()}}})),
            )
            .await?;
    }
    Ok(())
}

/// A lender namespace beside the ground's, whose Secret-based account
/// `acme` (base keys `key_id`) lends itself to the ground's namespace,
/// verified by an operator watching the lender: its name and operator.
async fn lender_of(g: &Ground, key_id: &str) -> Result<(String, Operator)> {
    let lender = format!("{}-lender", g.namespace);
    create_namespace(&g.client, &lender).await?;
    kubectl_apply_in(g, &lender, &keyed_account("acme", key_id, &g.namespace))?;
    let op = Operator::start_in(g, &lender, &["--progress-poll", "1s"], &[])?;
    account_state(g, &lender, "acme", None).await?;
    Ok((lender, op))
}

/// A small cluster `name` reaching AWS through `lender`'s account `acme`.
fn borrowed_manifest(name: &str, cidr: &str, lender: &str) -> String {
    small_cluster_manifest(name, cidr).edited(
        "cloudAccountRef: {name: acme}",
        &format!("cloudAccountRef: {{name: acme, namespace: {lender}}}"),
    )
}

#[tokio::test]
async fn a_borrower_whose_consent_was_withdrawn_may_only_delete_within_its_grace() -> Result<()> {
    let g = ground_with_crds("ten-withdrawn").await?;
    let c = g.namespace.clone();
    // The lender's account allows C; an operator watches each namespace,
    // C's with a short grace period.
    let (lender, _op_lender) = lender_of(&g, "AKIDLENDER0000000001").await?;
    const GRACE_SECS: u64 = 45;
    let grace = format!("{GRACE_SECS}s");
    let op = Operator::start(
        &g,
        &["--progress-poll", "1s", "--withdrawn-consent-grace", &grace],
        &[],
    )?;
    let borrowed = |name: &str, cidr: &str| borrowed_manifest(name, cidr, &lender);
    // Two borrowers, both asking to be kept: one paused, one with Retain.
    let paused = borrowed("paused", "10.31.0.0/16");
    let retained = borrowed("retained", "10.32.0.0/16").edited(
        "  region: us-east-1\n",
        "  region: us-east-1\n  deletionPolicy: Retain\n",
    );
    anyhow::ensure!(
        retained.contains("deletionPolicy: Retain"),
        "the manifest took no Retain"
    );
    kubectl_apply_in(&g, &c, &format!("{paused}---\n{retained}"))?;
    let mut uids = BTreeMap::new();
    for name in ["paused", "retained"] {
        let cc = wait_running(&g, name, |_| true)
            .await
            .with_context(|| format!("operator log tail:\n{}", op.log_tail(15)))?;
        uids.insert(name, cc.uid().context("uid")?);
    }
    let clusters = g.api::<ComputeCluster>();
    clusters
        .patch(
            "paused",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {"byoc.dev/paused": "true"}}}),
            ),
        )
        .await?;
    condition_with(&g, "paused", "Paused", "True", "Paused").await?;

    // Control: withdrawn, then given back within the grace period: the
    // borrower is told, and keeps everything it has.
    kubectl_apply_in(
        &g,
        &lender,
        &keyed_account("acme", "AKIDLENDER0000000001", ""),
    )?;
    look_now(&g, &["retained"], 1).await?;
    let first = condition_with(
        &g,
        "retained",
        "ConsentWithdrawn",
        "True",
        "NamespaceNotAllowed",
    )
    .await?;
    assert!(
        first.reason == "NamespaceNotAllowed"
            && first.message.contains("delete this cluster")
            && first.message.contains(&lender),
        "{}",
        first.message
    );
    kubectl_apply_in(
        &g,
        &lender,
        &keyed_account("acme", "AKIDLENDER0000000001", &c),
    )?;
    look_now(&g, &["retained"], 2).await?;
    condition_with(&g, "retained", "ConsentWithdrawn", "False", "AsExpected").await?;
    let kept = counts(&g, &uids["retained"]).await?;
    assert!(
        kept != Counts::default(),
        "given back, the borrower lost its resources: {kept:?}"
    );

    // Withdrawn for good. The paused one is held too, pause or not.
    kubectl_apply_in(
        &g,
        &lender,
        &keyed_account("acme", "AKIDLENDER0000000001", ""),
    )?;
    let withdrawn_at = std::time::Instant::now();
    look_now(&g, &["paused", "retained"], 3).await?;
    for name in ["paused", "retained"] {
        condition_with(&g, name, "ConsentWithdrawn", "True", "NamespaceNotAllowed").await?;
    }
    // Deleted within the grace period, Retain is not honoured: what it made
    // in the lender's account is deleted.
    delete_and_wait_gone(&g, "retained").await?;
    assert_eq!(
        counts(&g, &uids["retained"]).await?,
        Counts::default(),
        "deletionPolicy Retain kept resources in the lender's account"
    );
    // Not deleted at all (paused): at the end of the grace period the
    // operator deletes its resources itself and forgets the account.
    let released = ("ConsentWithdrawn", "True", "ResourcesReleased");
    let released = crate::clusters::condition_within(&g, "paused", WAIT * 2, released)
        .await
        .with_context(|| format!("operator log tail:\n{}", op.log_tail(15)))?;
    assert!(
        withdrawn_at.elapsed() >= std::time::Duration::from_secs(GRACE_SECS - 5),
        "released {:?} after the withdrawal, before the grace period of {GRACE_SECS}s",
        withdrawn_at.elapsed()
    );
    assert!(
        released.message.contains("were deleted"),
        "{}",
        released.message
    );
    assert_eq!(
        counts(&g, &uids["paused"]).await?,
        Counts::default(),
        "the pause kept resources in the lender's account past the grace period"
    );
    let cc = clusters.get("paused").await?;
    assert!(
        cc.status
            .as_ref()
            .is_some_and(|s| s.cloud_account.is_none() && s.aws_account_id.is_none()),
        "the released cluster still records the account: {:?}",
        cc.status.as_ref().map(|s| &s.cloud_account)
    );
    // Its deletion later needs nothing of the lender.
    clusters
        .patch(
            "paused",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {"byoc.dev/paused": null}}}),
            ),
        )
        .await?;
    delete_and_wait_gone(&g, "paused").await?;
    record_figure(serde_json::json!({
        "suite": "tenancy",
        "setup": format!("two clusters of namespace C running through namespace L's account, one paused, one deletionPolicy Retain; L withdraws C from allowedNamespaces (grace {GRACE_SECS}s); control: withdrawn and given back within the grace period"),
        "n": 1,
        "figure": format!("the Retain cluster deleted within the grace period left 0 resources; the paused one was released after {:?} (grace {GRACE_SECS}s) to 0 resources, its account forgotten; the control kept its resources and came back to ConsentWithdrawn False", withdrawn_at.elapsed()),
        "pass": true,
    }))
}

#[tokio::test]
async fn audit_deletes_a_leak_only_through_an_account_its_namespace_may_use() -> Result<()> {
    let g = ground_with_crds("ten-audit-lent").await?;
    let c = g.namespace.clone();
    let (lender, _op_lender) = lender_of(&g, "AKIDLENDER0000000002").await?;
    let mut op = Operator::start(&g, &["--progress-poll", "1s"], &[])?;
    let borrowed = borrowed_manifest("borrowed", "10.33.0.0/16", &lender);
    kubectl_apply_in(&g, &c, &borrowed)?;
    let uid = wait_running(&g, "borrowed", |_| true)
        .await
        .with_context(|| format!("operator log tail:\n{}", op.log_tail(15)))?
        .uid()
        .context("uid")?;
    op.process.kill();
    orphan(&g, &c, "borrowed").await?;
    let left = counts(&g, &uid).await?;
    assert!(left != Counts::default(), "the orphan left nothing");
    let audit = || {
        byoc(
            &g,
            &[
                "audit",
                "-n",
                &lender,
                "--delete",
                "--cluster",
                &uid,
                "--deadline",
                "3m",
            ],
        )
    };

    // The lender no longer lends to C: its account finds C's leak but is
    // not used to delete it.
    kubectl_apply_in(
        &g,
        &lender,
        &keyed_account("acme", "AKIDLENDER0000000002", ""),
    )?;
    let out = audit()?;
    assert!(
        out.contains(&format!(
            "not deleted: former cluster {c}/borrowed (uid {uid})"
        )) && out.contains(&format!("no CloudAccount namespace {c} may use")),
        "audit through a lender that withdrew:\n{out}"
    );
    assert_eq!(
        counts(&g, &uid).await?,
        left,
        "audit deleted through an account the leak's namespace may not use:\n{out}"
    );

    // Control: lent again, the same audit deletes it through that account.
    kubectl_apply_in(
        &g,
        &lender,
        &keyed_account("acme", "AKIDLENDER0000000002", &c),
    )?;
    let out = audit()?;
    assert!(
        out.contains(&format!(
            "deleted former cluster {c}/borrowed (uid {uid}): nothing left"
        )),
        "audit through the lender:\n{out}"
    );
    assert_eq!(counts(&g, &uid).await?, Counts::default(), "{out}");
    record_figure(serde_json::json!({
        "suite": "tenancy",
        "setup": "a cluster of namespace C ran through namespace L's account and was orphaned; `audit -n L --delete --cluster UID` with L withdrawn from C, then with L lending to C again",
        "n": 1,
        "figure": format!("withdrawn: the leak was listed, not deleted, and its {} resources were left as they were; lent again: deleted to 0", left.vpcs + left.subnets + left.instances()),
        "pass": true,
    }))
}

#[tokio::test]
async fn a_connected_role_admits_only_sessions_of_its_namespace_and_an_older_trust_still_works(
) -> Result<()> {
    let (g, x) = CrossAccount::enforced("ten-session-tags").await?;
    // AssumeRole judged by the role's trust as AWS judges it (the evaluator).
    g.proxy.judge_by_own_policies()?;
    let a = g.namespace.clone();
    let b = format!("{a}-b");
    create_namespace(&g.client, &b).await?;
    const EXTERNAL_ID: &str = "shared-ext-1";
    // The role as `connect` makes it for namespace A's account, and one
    // connected before session tags (its trust allows no sts:TagSession).
    let pinned = trusting_role(&x, "team-a-pinned", &x.base_arn, (EXTERNAL_ID, &a)).await?;
    let older = aws_sdk_iam::Client::new(&x.admin)
        .create_role()
        .role_name("team-a-older")
        .assume_role_policy_document(
            serde_json::json!({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"AWS": &x.base_arn},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}}}]})
            .to_string(),
        )
        .send()
        .await?
        .role()
        .map(|r| r.arn().to_string())
        .unwrap_or_default();
    // The same base keys and external ID in both namespaces: only the
    // session's namespace tells them apart.
    let account = |name: &str, role: &str| {
        let secret = secret_manifest(
            &format!("{name}-keys"),
            &format!(
                "AWS_ACCESS_KEY_ID: {}, AWS_SECRET_ACCESS_KEY: {}",
                x.base_key_id, x.base_secret
            ),
            Some("credentials"),
        );
        format!("{secret}---\napiVersion: byoc.dev/v1alpha1\nkind: CloudAccount\nmetadata: {{name: {name}}}\nspec:\n  region: us-east-1\n  credentialsSecretRef: {{name: {name}-keys}}\n  roleArn: {role}\n  externalId: {EXTERNAL_ID}\n")
    };
    let _op_a = Operator::start(&g, &["--progress-poll", "1s"], &[])?;
    let _op_b = Operator::start_in(&g, &b, &["--progress-poll", "1s"], &[])?;
    kubectl_apply_in(&g, &a, &account("pinned", &pinned))?;
    kubectl_apply_in(&g, &b, &account("pinned", &pinned))?;
    kubectl_apply_in(&g, &a, &account("older", &older))?;

    // Control: A's own account is admitted, with tagged sessions.
    let ready = account_state(&g, &a, "pinned", None).await?;
    let message = |acct: &CloudAccount| {
        acct.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.message.clone())
            .unwrap_or_default()
    };
    assert!(
        !message(&ready).contains("without session tags"),
        "{}",
        message(&ready)
    );
    // Attack: B's account with the same keys and external ID is refused.
    let refused = account_state(&g, &b, "pinned", Some("AssumeRoleDenied")).await?;
    let denied: Vec<_> = g
        .proxy
        .denials()
        .into_iter()
        .filter(|d| d.resource == pinned && d.action == "sts:AssumeRole")
        .collect();
    assert!(
        denied
            .iter()
            .any(|d| d.context.get("aws:RequestTag/byoc.dev/namespace")
                == Some(&serde_json::json!(b))),
        "B's session was not refused by the trust's namespace: {denied:?}\n{}",
        stalled_message(&refused)
    );
    // A role connected before the tags is still assumed, untagged, and
    // the account says so.
    let older_ready = account_state(&g, &a, "older", None).await?;
    assert!(
        message(&older_ready).contains("without session tags")
            && message(&older_ready).contains(&older),
        "{}",
        message(&older_ready)
    );
    record_figure(serde_json::json!({
        "suite": "tenancy",
        "setup": "moto enforcing IAM and the ground judging AssumeRole by the role's trust as AWS does; one base user and one external ID in CloudAccounts of namespaces A and B, both naming A's role (trust as `connect` writes it: external ID and session tag byoc.dev/namespace = A); a role trusted before session tags",
        "n": 1,
        "figure": format!("A's account Ready with tagged sessions; B's refused (AssumeRoleDenied, the trust denied the session tagged namespace={b}); the older role assumed untagged, its account Ready and saying so; {} AssumeRole denials", denied.len()),
        "pass": true,
    }))
}

#[tokio::test]
async fn two_installations_on_one_account_each_act_only_on_their_own_interruptions() -> Result<()> {
    let g = ground_with_crds("ten-int").await?;
    let two = two_installations(&g).await?;
    let (p, s) = (two.p.clone(), two.s.clone());
    let (prod, staging) = (&two.prod, &two.staging);
    let op_p = two.start(&g, &p, "30m")?;
    let op_s = two.start(&g, &s, "30m")?;
    two.accounts(&g).await?;
    for (ns, cidr) in [(&p, "10.67.0.0/16"), (&s, "10.68.0.0/16")] {
        kubectl_apply_in(&g, ns, &crate::interruption::spot_cluster("spot", cidr, 1))?;
    }
    let mut first = BTreeMap::new();
    for ns in [&p, &s] {
        let cc = running_in(&g, ns, "spot").await?;
        let uid = cc.uid().context("uid")?;
        let found = crate::clusters::instances_in(&g, &uid, None, &["running"]).await?;
        let id = found.first().context("an instance")?.1.clone();
        first.insert(ns.clone(), (uid, id));
    }
    // Each installation its own queue and rules, in the one account.
    crate::interruption::listening(&g, &op_p).await?;
    crate::interruption::listening(&g, &op_s).await?;
    let sqs = aws_sdk_sqs::Client::new(&g.aws().await);
    let queues = sqs.list_queues().send().await?.queue_urls().to_vec();
    for i in [prod.id(), staging.id()] {
        assert!(
            queues
                .iter()
                .any(|q| q.ends_with(&format!("byoc-{i}-interruptions"))),
            "no queue of {i}: {queues:?}"
        );
    }
    // AWS takes back production's instance: both queues hear it (the
    // rules match every account's event of the kind); production acts,
    // staging finds the instance is not its own and deletes the message.
    let (p_uid, p_instance) = first[&p].clone();
    g.moto.interrupt_spot(
        "123456789012",
        "us-east-1",
        &p_instance,
        testground::events::SPOT_WARNING,
    )?;
    eventually("production's instance replaced", WAIT, || async {
        let now = crate::clusters::instances_in(&g, &p_uid, None, &["running"]).await?;
        Ok((now.len() == 1 && now[0].1 != p_instance).then_some(()))
    })
    .await
    .with_context(|| op_p.log_tail(30))?;
    // Staging read it as not its own.
    crate::interruption::wait_read(&op_s, "not-ours", 1.0).await?;
    let (s_uid, s_instance) = first[&s].clone();
    let staging_now = crate::clusters::instances_in(&g, &s_uid, None, &["running"]).await?;
    assert_eq!(
        staging_now
            .iter()
            .map(|(_, id)| id.clone())
            .collect::<Vec<_>>(),
        vec![s_instance],
        "staging's instance was touched"
    );
    assert_eq!(
        crate::interruption::read_as(&op_s, "spot-interruption")?,
        0.0,
        "staging acted on production's warning"
    );
    Ok(())
}
