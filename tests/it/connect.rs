//! `byoc-operator connect aws`: an admin connects a team's account with one
//! command, clusters run and delete under the ongoing policy alone, and
//! connect never touches what it did not make. moto enforces IAM (identity
//! policies, trust policies with `sts:ExternalId`); the proxy refuses
//! AssumeRole into a role that does not exist, as AWS does.

use anyhow::{Context as _, Result};
use byoc_operator::account::iam_policy::{nodes_policy, policy_part, PolicyOptions, PolicyPart};
use byoc_operator::api::{AccountPhase, CloudAccount, ComputeCluster};
use byoc_operator::aws::admin::policy_document;
use byoc_operator::connect::{
    managed_policy_name, node_grants_arn, NODES_POLICY, ONGOING_POLICY, SETUP_POLICY,
    STORAGE_POLICY,
};
use kube::Api;
use serde_json::Value;

use crate::clusters::{
    counts_as, delete_and_wait_gone, small_cluster_manifest, stalled_with, wait_running, Counts,
    WAIT,
};
use crate::support::{
    assert_no_key_material, byoc_with, eventually, kubectl_apply, record_figure, CrossAccount,
    Edited, Ground, Operator, OperatorExt, SESSION_TOKEN_PREFIX,
};

const ROLE: &str = "byoc-connected";
const NODES: &str = "byoc-shared-nodes";

/// IAM writes the proxy has answered so far.
fn iam_writes(g: &Ground) -> u64 {
    const WRITES: &[&str] = &[
        "CreateRole",
        "UpdateAssumeRolePolicy",
        "PutRolePolicy",
        "DeleteRolePolicy",
        "AttachRolePolicy",
        "DetachRolePolicy",
        "CreateInstanceProfile",
        "AddRoleToInstanceProfile",
        "RemoveRoleFromInstanceProfile",
        "DeleteInstanceProfile",
        "DeleteRole",
        "CreatePolicy",
        "CreatePolicyVersion",
        "DeletePolicyVersion",
        "DeletePolicy",
    ];
    let calls = g.proxy.calls();
    WRITES.iter().filter_map(|op| calls.get(*op)).sum()
}

fn account_manifest(name: &str, role: &str, extra: &str) -> String {
    format!("apiVersion: byoc.dev/v1alpha1\nkind: CloudAccount\nmetadata: {{name: {name}}}\nspec:\n  region: us-east-1\n  roleArn: arn:aws:iam::123456789012:role/{role}\n{extra}")
}

/// `connect aws` (or another command) run with the admin's keys.
fn as_admin(g: &Ground, x: &CrossAccount, args: &[&str]) -> Result<(bool, String)> {
    let env = [
        ("AWS_ACCESS_KEY_ID", x.admin_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", x.admin_secret.as_str()),
    ];
    let out = byoc_with(g, &env, args)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// The CloudAccount once the operator published what connect needs.
async fn published(g: &Ground, name: &str) -> Result<CloudAccount> {
    let api: Api<CloudAccount> = g.api();
    eventually(&format!("{name} publishes its principal"), WAIT, || async {
        let a = api.get(name).await?;
        let s = a.status.clone().unwrap_or_default();
        Ok(
            (s.principal.is_some() && s.external_id.is_some() && s.installation.is_some())
                .then_some(a),
        )
    })
    .await
}

async fn role_policy(iam: &aws_sdk_iam::Client, role: &str, policy: &str) -> Result<Value> {
    let got = iam
        .get_role_policy()
        .role_name(role)
        .policy_name(policy)
        .send()
        .await?;
    Ok(policy_document(got.policy_document()))
}

/// Managed policy `name`'s default document; `None` when there is none.
async fn managed_policy(iam: &aws_sdk_iam::Client, name: &str) -> Result<Option<Value>> {
    let policies = iam
        .list_policies()
        .scope(aws_sdk_iam::types::PolicyScopeType::Local)
        .send()
        .await?;
    let named = policies
        .policies()
        .iter()
        .find(|p| p.policy_name() == Some(name));
    let Some(arn) = named.and_then(|p| p.arn()).map(str::to_string) else {
        return Ok(None);
    };
    let Ok(policy) = iam.get_policy().policy_arn(&arn).send().await else {
        return Ok(None);
    };
    let version = (policy.policy().and_then(|p| p.default_version_id())).unwrap_or("v1");
    let got = (iam
        .get_policy_version()
        .policy_arn(&arn)
        .version_id(version))
    .send()
    .await?;
    let doc = got.policy_version().and_then(|v| v.document());
    Ok(doc.map(policy_document))
}

async fn inline_names(iam: &aws_sdk_iam::Client, role: &str) -> Result<Vec<String>> {
    Ok(iam
        .list_role_policies()
        .role_name(role)
        .send()
        .await?
        .policy_names()
        .to_vec())
}

/// Tries `iam:CreateRole` as the cross-account role (assumed as the
/// operator's identity would, with its external ID): whether AWS allowed it.
async fn create_role_as_operator(g: &Ground, x: &CrossAccount, external_id: &str) -> Result<bool> {
    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(g.moto.endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            x.base_key_id.clone(),
            x.base_secret.clone(),
            None,
            None,
            "test",
        ))
        .load()
        .await;
    let role = format!("arn:aws:iam::123456789012:role/{ROLE}");
    // Tagged as the operator tags its sessions: the trust requires it.
    let tags = [
        ("byoc.dev/namespace", g.namespace.as_str()),
        ("byoc.dev/cloud-account", "acme"),
    ];
    let config = testground::assumed(&base, &role, Some(external_id), &tags).await?;
    let iam = aws_sdk_iam::Client::new(&config);
    let probe = "byoc-probe";
    match iam
        .create_role()
        .role_name(probe)
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#)
        .send()
        .await
    {
        Ok(_) => {
            aws_sdk_iam::Client::new(&x.admin)
                .delete_role()
                .role_name(probe)
                .send()
                .await?;
            Ok(true)
        }
        Err(e) => {
            // moto's error bodies are not parsed into a code: the raw answer says it.
            let said = format!("{e:?}");
            anyhow::ensure!(said.contains("AccessDenied") && said.contains("iam:CreateRole"), "CreateRole failed otherwise than denied: {said}");
            Ok(false)
        }
    }
}

/// A ground where moto enforces IAM and a role must exist to be assumed,
/// and an operator whose own identity (keys allowed only AssumeRole) may be
/// lent to the test's namespace.
async fn connect_ground(test: &str) -> Result<(Ground, CrossAccount, Operator)> {
    let (g, x) = CrossAccount::enforced(test).await?;
    // The roles connect makes are judged by the policies it puts on them.
    g.proxy.judge_by_own_policies()?;
    let ns = g.namespace.clone();
    let env = [
        ("AWS_ACCESS_KEY_ID", x.base_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", x.base_secret.as_str()),
    ];
    let op = Operator::start(
        &g,
        &[
            "--ambient-identity-namespaces",
            &ns,
            "--progress-poll",
            "1s",
        ],
        &env,
    )?;
    Ok((g, x, op))
}

#[tokio::test]
async fn an_admin_connects_an_account_with_one_command_and_clusters_run_on_the_ongoing_policy(
) -> Result<()> {
    let (g, x, op) = connect_ground("connect").await?;
    let ns = g.namespace.clone();
    kubectl_apply(
        &g,
        &account_manifest(
            "acme",
            ROLE,
            &format!("  nodeInstanceProfileName: {NODES}\n"),
        ),
    )?;
    // Before connect: the role does not exist, and the account says who
    // must be trusted with which external ID.
    let before = published(&g, "acme").await?;
    let status = before.status.clone().unwrap_or_default();
    assert_ne!(
        status.phase,
        Some(AccountPhase::Ready),
        "ready before the role exists"
    );
    assert_eq!(
        status.principal.as_deref(),
        Some(x.base_arn.as_str()),
        "principal {:?}, expected {}",
        status.principal,
        x.base_arn
    );
    let external_id = status.external_id.clone().unwrap_or_default();
    let installation = status.installation.clone().unwrap_or_default();
    let account = format!("{ns}/acme");

    // The dry run writes nothing and shows the documents.
    let writes = iam_writes(&g);
    let (ok, dry) = as_admin(
        &g,
        &x,
        &["connect", "aws", "--account", &account, "--dry-run"],
    )?;
    assert!(
        ok && dry.contains("would create role byoc-connected"),
        "{}",
        dry.clone()
    );
    assert!(
        dry.contains(&external_id),
        "the dry run shows no external ID"
    );
    assert_eq!(iam_writes(&g), writes, "the dry run wrote to IAM");

    // One command: the role, its policies, the node identity, and a ready account.
    let (ok, out) = as_admin(
        &g,
        &x,
        &["connect", "aws", "--account", &account, "--wait", "90s"],
    )?;
    assert!(ok, "connect failed: {out}\n{}", op.log_tail(10));
    assert!(out.contains("is ready"), "{}", out.clone());
    let first_writes = iam_writes(&g) - writes;
    let iam = aws_sdk_iam::Client::new(&x.admin);
    let role = iam.get_role().role_name(ROLE).send().await?;
    let trust = role
        .role()
        .and_then(|r| r.assume_role_policy_document())
        .map(policy_document)
        .unwrap_or_default();
    let expected_trust = byoc_operator::account::iam_policy::trust_policy(
        &x.base_arn,
        Some(&external_id),
        Some(&ns),
    );
    assert_eq!(
        trust, expected_trust,
        "trust {trust}, expected {expected_trust}"
    );
    // Tagged for the operator identity's policy (`iam-policy operator`).
    let tagged = role.role().is_some_and(|r| {
        r.tags()
            .iter()
            .any(|t| t.key() == "byoc.dev/connected-installation" && t.value() == installation)
    });
    assert!(
        tagged,
        "the role lacks its installation tag: {:?}",
        role.role().map(|r| r.tags())
    );
    let options = PolicyOptions {
        installation: installation.clone(),
        shared_node_role: Some(NODES.into()),
        node_grants_arn: node_grants_arn(&format!("arn:aws:iam::123456789012:role/{ROLE}")),
        ..Default::default()
    };
    let ongoing = policy_part(&options, PolicyPart::Ongoing);
    assert_eq!(
        role_policy(&iam, ROLE, ONGOING_POLICY).await?,
        ongoing,
        "the ongoing policy differs from the generated one"
    );
    let setup = managed_policy_name(ROLE, SETUP_POLICY);
    assert_eq!(
        managed_policy(&iam, &setup).await?,
        Some(policy_part(&options, PolicyPart::Setup)),
        "the setup policy differs from the generated one"
    );
    let storage = managed_policy_name(ROLE, STORAGE_POLICY);
    assert_eq!(
        managed_policy(&iam, &storage).await?,
        Some(policy_part(&options, PolicyPart::Storage)),
        "the storage policy differs from the generated one"
    );
    // The nodes' grants beside them, for node roles: not on the role itself.
    let grants = managed_policy_name(ROLE, NODES_POLICY);
    assert_eq!(managed_policy(&iam, &grants).await?, Some(nodes_policy()));
    let on_role = |iam: aws_sdk_iam::Client| async move {
        let mut names = (iam
            .list_attached_role_policies()
            .role_name(ROLE)
            .send()
            .await?)
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_name().map(str::to_string))
            .collect::<Vec<_>>();
        names.sort();
        Ok::<_, anyhow::Error>(names)
    };
    assert_eq!(
        on_role(iam.clone()).await?,
        [setup.clone(), storage.clone()],
        "attached to the role"
    );

    // A second run makes no IAM write.
    let writes = iam_writes(&g);
    let (ok, again) = as_admin(
        &g,
        &x,
        &["connect", "aws", "--account", &account, "--wait", "90s"],
    )?;
    assert!(
        ok && again.contains("nothing to change"),
        "{}",
        again.clone()
    );
    let second_writes = iam_writes(&g) - writes;
    assert_eq!(
        second_writes, 0,
        "{second_writes} IAM writes on the second run"
    );

    // A policy widened out of band is put back by the next run.
    iam.put_role_policy()
        .role_name(ROLE)
        .policy_name(ONGOING_POLICY)
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#)
        .send()
        .await?;
    let (ok, out) = as_admin(
        &g,
        &x,
        &["connect", "aws", "--account", &account, "--wait", "0"],
    )?;
    assert!(
        ok && out.contains("put inline policy byoc-operator-ongoing"),
        "{}",
        out.clone()
    );
    assert_eq!(
        role_policy(&iam, ROLE, ONGOING_POLICY).await?,
        ongoing,
        "the widened policy was not put back"
    );

    // Control: with the setup policy the role may create a node role.
    assert!(
        create_role_as_operator(&g, &x, &external_id).await?,
        "CreateRole denied with the setup policy attached: the denial below would prove nothing"
    );
    // The ongoing policy alone: setup detached, CreateRole denied.
    let (ok, out) = as_admin(
        &g,
        &x,
        &[
            "connect",
            "aws",
            "--account",
            &account,
            "--ongoing",
            "--wait",
            "90s",
        ],
    )?;
    assert!(
        ok && out.contains(&format!("detach managed policy {setup}")),
        "{}",
        out.clone()
    );
    assert_eq!(
        inline_names(&iam, ROLE).await?,
        [ONGOING_POLICY],
        "an inline policy beside the ongoing one"
    );
    assert_eq!(
        managed_policy(&iam, &setup).await?,
        None,
        "the setup policy is still there"
    );
    assert_eq!(
        on_role(iam.clone()).await?,
        std::slice::from_ref(&storage),
        "the storage part stays with --ongoing"
    );
    assert!(
        !create_role_as_operator(&g, &x, &external_id).await?,
        "CreateRole allowed by the ongoing policy"
    );

    // A cluster runs and is deleted to zero under the ongoing policy alone,
    // its nodes launched with the shared identity.
    kubectl_apply(&g, &small_cluster_manifest("shared", "10.60.0.0/16"))?;
    let cc = wait_running(&g, "shared", |_| true)
        .await
        .with_context(|| op.log_tail(20))?;
    let uid = cc.metadata.uid.clone().unwrap_or_default();
    let ec2 = aws_sdk_ec2::Client::new(&x.admin);
    let reservations = ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:byoc.dev/cluster-uid")
                .values(&uid)
                .build(),
        )
        .send()
        .await?;
    let profiles: Vec<String> = reservations
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| {
            i.iam_instance_profile()
                .and_then(|p| p.arn())
                .map(str::to_string)
        })
        .collect();
    assert!(
        !profiles.is_empty() && profiles.iter().all(|p| p.ends_with(&format!("/{NODES}"))),
        "nodes launched with {profiles:?}"
    );
    assert_eq!(
        counts_as(&x.admin, &uid).await?.roles,
        0,
        "a node role of the cluster's own was made"
    );

    // A cluster asking for its own node role is stopped before any AWS write.
    kubectl_apply(
        &g,
        &small_cluster_manifest("own-role", "10.61.0.0/16").edited(
            "  nodeGroups:",
            "  iam: {managedPolicyArns: [\"arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore\"]}\n  nodeGroups:",
        ),
    )?;
    let stalled = stalled_with(&g, "own-role", "SharedNodeIdentity").await?;
    assert!(
        stalled.message.contains(NODES),
        "{}",
        stalled.message.clone()
    );
    let own = g.api::<ComputeCluster>().get("own-role").await?;
    assert!(
        own.status.and_then(|s| s.network).is_none(),
        "the refused cluster made network resources"
    );
    delete_and_wait_gone(&g, "own-role").await?;

    // disconnect refuses while a cluster uses the account.
    let (ok, out) = as_admin(&g, &x, &["disconnect", "aws", "--account", &account])?;
    assert!(
        !ok && out.contains("shared"),
        "disconnect with a cluster: {out}"
    );
    assert!(
        iam.get_role().role_name(ROLE).send().await.is_ok(),
        "the role went"
    );

    delete_and_wait_gone(&g, "shared").await?;
    let left = counts_as(&x.admin, &uid).await?;
    assert_eq!(left, Counts::default(), "left behind: {left:?}");

    // Afterwards it leaves nothing connect made.
    let (ok, out) = as_admin(&g, &x, &["disconnect", "aws", "--account", &account])?;
    assert!(ok, "{}", out.clone());
    for name in [ROLE, NODES] {
        assert!(
            iam.get_role().role_name(name).send().await.is_err(),
            "role {name} left: {out}"
        );
    }
    assert_eq!(managed_policy(&iam, &grants).await?, None, "{out}");
    assert!(
        iam.get_instance_profile()
            .instance_profile_name(NODES)
            .send()
            .await
            .is_err(),
        "the node instance profile is left"
    );
    // The commands' output and the operator's traces hold no key.
    for said in [&dry, &out, &again] {
        assert!(
            !said.contains(&x.admin_secret) && !said.contains(&x.base_secret),
            "a secret key in connect's output"
        );
    }
    assert_no_key_material(
        &g,
        &op,
        &[&x.base_secret, &x.admin_secret, SESSION_TOKEN_PREFIX],
    )
    .await?;
    record_figure(serde_json::json!({
        "suite": "connect",
        "setup": "moto enforcing IAM (policies judged by the ARN they name); the operator's identity: keys allowed only sts:AssumeRole; a fresh CloudAccount with a shared node identity, its role not made yet; `connect aws` run with an admin's keys through the proxy",
        "n": 1,
        "figure": format!("one command made the role (trust naming the principal and external ID), both policies and the node identity in {first_writes} IAM writes and the account became ready; a second run: {second_writes} writes; a widened policy put back; with the ongoing policy alone CreateRole was denied (allowed with setup: the control), a cluster ran with the shared profile, made no role and was deleted to zero; disconnect refused while it lived, then left nothing"),
        "pass": true,
    }))
}

/// AWS holds a role's inline policies to 10,240 characters in all: with
/// every option the two parts pass it, so the setup part is a managed
/// policy (at most 6,144). The ground refuses as AWS does; the control is
/// the same put, small, allowed.
#[tokio::test]
async fn an_option_rich_account_fits_aws_policy_limits_with_the_setup_part_managed() -> Result<()> {
    const RICH: &str = "byoc-rich";
    let (g, x, _op) = connect_ground("connect-limits").await?;
    let ns = g.namespace.clone();
    let iam = aws_sdk_iam::Client::new(&x.admin);
    let boundary = "arn:aws:iam::123456789012:policy/team-boundary";
    let extra = format!("  permissionsBoundaryArn: {boundary}\n");
    kubectl_apply(&g, &account_manifest("rich", RICH, &extra))?;
    let status = published(&g, "rich").await?.status.unwrap_or_default();
    let account = format!("{ns}/rich");
    let managed_arns = [
        "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
        "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy",
    ];
    let pass_role = "arn:aws:iam::123456789012:role/team-nodes";
    let options = PolicyOptions {
        installation: status.installation.clone().unwrap_or_default(),
        managed_policy_arns: managed_arns.iter().map(|a| a.to_string()).collect(),
        permissions_boundary: Some(boundary.into()),
        pass_roles: vec![pass_role.into()],
        node_grants_arn: node_grants_arn(&format!("arn:aws:iam::123456789012:role/{RICH}")),
        ..Default::default()
    };
    let setup_doc = policy_part(&options, PolicyPart::Setup);
    let flags = [
        "connect",
        "aws",
        "--account",
        &account,
        "--managed-policy-arn",
        managed_arns[0],
        "--managed-policy-arn",
        managed_arns[1],
        "--pass-role",
        pass_role,
        "--wait",
        "90s",
    ];
    let (ok, out) = as_admin(&g, &x, &flags)?;
    assert!(ok, "connect with every option: {out}");
    let setup = managed_policy_name(RICH, SETUP_POLICY);
    assert_eq!(managed_policy(&iam, &setup).await?, Some(setup_doc.clone()));
    assert_eq!(
        role_policy(&iam, RICH, ONGOING_POLICY).await?,
        policy_part(&options, PolicyPart::Ongoing)
    );

    // The earlier layout, both parts inline: refused as AWS refuses it.
    let through_proxy = (x.admin.to_builder())
        .endpoint_url(g.proxy.endpoint())
        .build();
    let proxied = aws_sdk_iam::Client::new(&through_proxy);
    let put = |doc: String| {
        proxied
            .put_role_policy()
            .role_name(RICH)
            .policy_name(SETUP_POLICY)
            .policy_document(doc)
            .send()
    };
    let refused = put(setup_doc.to_string()).await;
    let said = format!("{refused:?}");
    assert!(
        refused.is_err() && said.contains("LimitExceeded"),
        "both parts inline accepted: {said}"
    );
    // Control: the same put, small, is allowed (the refusal is the size's).
    put(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:DescribeVpcs","Resource":"*"}]}"#.into())
        .await
        .context("a small inline setup policy refused")?;

    // A role with the earlier inline setup policy: connect removes it
    // once the managed one is attached.
    let (ok, out) = as_admin(&g, &x, &flags)?;
    assert!(
        ok && out.contains("delete inline policy byoc-operator-setup"),
        "{out}"
    );
    assert_eq!(inline_names(&iam, RICH).await?, [ONGOING_POLICY]);

    // disconnect removes the managed policy with the role.
    let (ok, out) = as_admin(&g, &x, &["disconnect", "aws", "--account", &account])?;
    assert!(ok, "{out}");
    assert!(
        iam.get_role().role_name(RICH).send().await.is_err(),
        "{out}"
    );
    assert_eq!(managed_policy(&iam, &setup).await?, None, "{out}");
    Ok(())
}

#[tokio::test]
async fn connect_never_touches_what_it_did_not_make_and_leaves_nothing_half_made() -> Result<()> {
    let (g, x, _op) = connect_ground("connect-refusals").await?;
    let ns = g.namespace.clone();
    let iam = aws_sdk_iam::Client::new(&x.admin);

    // A CloudAccount that does not exist.
    let (ok, out) = as_admin(
        &g,
        &x,
        &["connect", "aws", "--account", &format!("{ns}/missing")],
    )?;
    assert!(!ok && out.contains("was not found"), "{}", out);

    // A role of that name made by someone else: refused, untouched, and
    // left by disconnect.
    let foreign_trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:user/someone-else"},"Action":"sts:AssumeRole"}]}"#;
    iam.create_role()
        .role_name("team-own")
        .assume_role_policy_document(foreign_trust)
        .send()
        .await?;
    kubectl_apply(&g, &account_manifest("taken", "team-own", ""))?;
    published(&g, "taken").await?;
    let writes = iam_writes(&g);
    let taken = format!("{ns}/taken");
    let (ok, out) = as_admin(&g, &x, &["connect", "aws", "--account", &taken])?;
    assert!(!ok && out.contains("left untouched"), "{}", out.clone());
    let (ok, out) = as_admin(&g, &x, &["disconnect", "aws", "--account", &taken])?;
    assert!(ok && out.contains("left untouched"), "{}", out.clone());
    assert_eq!(
        iam_writes(&g),
        writes,
        "an IAM write touched the foreign role"
    );
    let after = iam.get_role().role_name("team-own").send().await?;
    let trust = after
        .role()
        .and_then(|r| r.assume_role_policy_document())
        .map(policy_document)
        .unwrap_or_default();
    assert_eq!(
        trust,
        serde_json::from_str::<Value>(foreign_trust)?,
        "the foreign role's trust changed: {trust}"
    );
    assert!(
        inline_names(&iam, "team-own").await?.is_empty(),
        "a policy was put on it"
    );

    // An admin who may create roles but not give them policies: the error
    // names the denied call, and the role made on the way is gone again.
    iam.create_user().user_name("weak-admin").send().await?;
    iam.put_user_policy()
        .user_name("weak-admin")
        .policy_name("p")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iam:Get*","iam:List*","iam:CreateRole","iam:DeleteRole","iam:DeleteRolePolicy","iam:DetachRolePolicy"],"Resource":"*"}]}"#)
        .send()
        .await?;
    let key = iam
        .create_access_key()
        .user_name("weak-admin")
        .send()
        .await?;
    let key = key.access_key().context("no key")?;
    kubectl_apply(&g, &account_manifest("fresh", ROLE, ""))?;
    published(&g, "fresh").await?;
    let fresh = format!("{ns}/fresh");
    let weak_env = [
        ("AWS_ACCESS_KEY_ID", key.access_key_id()),
        ("AWS_SECRET_ACCESS_KEY", key.secret_access_key()),
    ];
    let out = byoc_with(
        &g,
        &weak_env,
        &["connect", "aws", "--account", &fresh, "--wait", "0"],
    )?;
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success()
            && text.contains("iam:PutRolePolicy")
            && text.contains("removed again"),
        "weak admin: {text}"
    );
    assert!(
        iam.get_role().role_name(ROLE).send().await.is_err(),
        "a half-made role is left"
    );
    // Control: the same account with a full admin connects.
    let (ok, out) = as_admin(
        &g,
        &x,
        &["connect", "aws", "--account", &fresh, "--wait", "90s"],
    )?;
    assert!(ok && out.contains("is ready"), "{}", out);
    record_figure(serde_json::json!({
        "suite": "connect",
        "setup": "moto enforcing IAM; a role of the CloudAccount's name made by someone else; an admin allowed CreateRole but not PutRolePolicy; a CloudAccount that does not exist",
        "n": 3,
        "figure": "the foreign role: connect refused, disconnect left it, 0 IAM writes, its trust and policies compared unchanged; the weak admin: the error named iam:PutRolePolicy and the role made on the way was gone; the missing account named; control: a full admin connected the same account",
        "pass": true,
    }))
}

#[tokio::test]
async fn the_cloudformation_template_makes_the_same_role_and_the_account_ready() -> Result<()> {
    let (g, x, _op) = connect_ground("connect-cfn").await?;
    let ns = g.namespace.clone();
    kubectl_apply(&g, &account_manifest("stacked", "byoc-stacked", ""))?;
    let account = published(&g, "stacked").await?;
    let status = account.status.unwrap_or_default();
    let name = format!("{ns}/stacked");
    let allowed = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore";
    let flags = [
        "connect",
        "aws",
        "--account",
        &name,
        "--managed-policy-arn",
        allowed,
    ];
    let out = byoc_with(
        &g,
        &[],
        &[
            &flags[..],
            &[
                "--cloudformation",
                "--template-url",
                "https://example.com/t.json",
            ],
        ]
        .concat(),
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr).to_string()
    );
    let template = String::from_utf8_lossy(&out.stdout).to_string();
    let link = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        link.contains("param_ExternalId=") && link.contains("templateURL=https"),
        "quick-create link: {link}"
    );
    // cfn-lint (pinned by hack/build-ground.sh) finds neither an error nor
    // a warning: its warnings include an action IAM does not know.
    let path = g.kube.dir().join(format!("{ns}-template.json"));
    std::fs::write(&path, &template)?;
    let lint = std::process::Command::new(&testground::Tools::locate()?.cfn_lint)
        .arg(&path)
        .output()?;
    assert!(
        lint.status.success(),
        "cfn-lint ({}): {}{}",
        lint.status,
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    // Through the proxy, which re-signs for moto's enforcement.
    let through_proxy = x
        .admin
        .to_builder()
        .endpoint_url(g.proxy.endpoint())
        .build();
    let cfn = aws_sdk_cloudformation::Client::new(&through_proxy);
    // The stack is made as the quick-create link would make it: with the
    // link's parameters.
    let query = link
        .split_once("#/stacks/create/review?")
        .map(|(_, q)| q.trim())
        .unwrap_or_default();
    let parameters: Vec<aws_sdk_cloudformation::types::Parameter> =
        form_urlencoded::parse(query.as_bytes())
            .filter_map(|(k, v)| {
                k.strip_prefix("param_").map(|k| {
                    aws_sdk_cloudformation::types::Parameter::builder()
                        .parameter_key(k)
                        .parameter_value(v)
                        .build()
                })
            })
            .collect();
    assert!(parameters.len() >= 4, "the link gives {parameters:?}");
    cfn.create_stack()
        .stack_name("byoc-connect")
        .template_body(&template)
        .set_parameters(Some(parameters))
        .capabilities(aws_sdk_cloudformation::types::Capability::CapabilityNamedIam)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("CreateStack: {e:?}"))?;
    let iam = aws_sdk_iam::Client::new(&x.admin);
    let role = eventually("the stack's role", WAIT, || async {
        Ok(iam.get_role().role_name("byoc-stacked").send().await.ok())
    })
    .await?;
    let trust = role
        .role()
        .and_then(|r| r.assume_role_policy_document())
        .map(policy_document)
        .unwrap_or_default();
    let external_id = status.external_id.clone().unwrap_or_default();
    let expected = byoc_operator::account::iam_policy::trust_policy(
        &x.base_arn,
        Some(&external_id),
        Some(&ns),
    );
    assert_eq!(trust, expected, "stack trust {trust}, connect's {expected}");
    let options = PolicyOptions {
        installation: status.installation.clone().unwrap_or_default(),
        managed_policy_arns: vec![allowed.into()],
        node_grants_arn: node_grants_arn("arn:aws:iam::123456789012:role/byoc-stacked"),
        ..Default::default()
    };
    let setup = managed_policy_name("byoc-stacked", SETUP_POLICY);
    assert_eq!(
        managed_policy(&iam, &managed_policy_name("byoc-stacked", NODES_POLICY)).await?,
        Some(nodes_policy()),
        "the stack's nodes' grants"
    );
    let storage = managed_policy_name("byoc-stacked", STORAGE_POLICY);
    for (policy, part) in [
        (ONGOING_POLICY, PolicyPart::Ongoing),
        (setup.as_str(), PolicyPart::Setup),
        (storage.as_str(), PolicyPart::Storage),
    ] {
        let got = match part {
            PolicyPart::Ongoing => role_policy(&iam, "byoc-stacked", policy).await?,
            _ => managed_policy(&iam, policy).await?.unwrap_or_default(),
        };
        let want = policy_part(&options, part);
        let differ: Vec<(Value, Value)> = (0..want["Statement"].as_array().map_or(0, Vec::len))
            .map(|i| (got["Statement"][i].clone(), want["Statement"][i].clone()))
            .filter(|(g, w)| g != w)
            .collect();
        assert_eq!(
            got, want,
            "stack's {policy} differs from connect's, (stack, connect): {differ:?}"
        );
    }
    // connect itself finds the stack's role as it would make it.
    let (ok, out) = as_admin(&g, &x, &[&flags[..], &["--dry-run"]].concat())?;
    assert!(ok && out.contains("nothing to change"), "{}", out);
    // The operator looks again by itself (its retry of a failed account).
    let api: Api<CloudAccount> = g.api();
    eventually("the account ready on the stack's role", WAIT, || async {
        let a = api.get("stacked").await?;
        Ok((a.status.and_then(|s| s.phase) == Some(AccountPhase::Ready)).then_some(()))
    })
    .await?;
    record_figure(serde_json::json!({
        "suite": "connect",
        "setup": "`connect aws --cloudformation` for a CloudAccount with a managed policy allow-list; the template deployed into moto's CloudFormation with the quick-create link's parameters",
        "n": 1,
        "figure": "the stack's role had connect's trust policy, its inline ongoing policy and its managed setup policy (compared as JSON); connect's dry run found nothing to change; the account became ready by itself",
        "pass": true,
    }))
}
