//! The Helm chart, used for real: `helm lint` and `helm template`, the values
//! schema, `helm install` into the apiserver, and its RBAC proven both
//! sufficient (the operator, run with a token of the chart's ServiceAccount,
//! takes the example to `running` and deletes it) and not more than needed
//! (without any one rule, the same run fails).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use byoc_operator::account::in_use::IN_USE_FINALIZER;
use byoc_operator::api::{CloudAccount, ClusterPhase, ComputeCluster};
use byoc_operator::installation::SECRET_KEY;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::ResourceExt;

use crate::clusters::{counts, Counts, WAIT};
use crate::support::{eventually, ground_with_crds, kubectl_apply, Ground, Operator, OperatorExt};

fn chart_dir() -> PathBuf {
    testground::repo_root().join("charts/byoc-operator")
}

/// `helm` against the test's apiserver, with its caches in the ground's directory.
pub(crate) fn helm(g: &Ground) -> Result<Command> {
    let tools = testground::Tools::locate()?;
    let home = g.kube.dir().join("helm");
    let mut cmd = Command::new(&tools.helm);
    cmd.env("KUBECONFIG", &g.kube.kubeconfig)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    Ok(cmd)
}

/// Runs `cmd`: its output, or an error with what it printed.
pub(crate) fn run(mut cmd: Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        return Err(anyhow!(
            "{:?} failed: {}{}",
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `helm template` of the chart, parsed into its documents.
fn template(g: &Ground, release: &str, args: &[&str]) -> Result<Vec<serde_json::Value>> {
    let mut cmd = helm(g)?;
    cmd.args(["template", release])
        .arg(chart_dir())
        .args(["--namespace", &g.namespace])
        .args(args);
    let text = run(cmd)?;
    let mut docs = vec![];
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn find<'a>(docs: &'a [serde_json::Value], kind: &str) -> Option<&'a serde_json::Value> {
    docs.iter().find(|d| d["kind"] == kind)
}

/// `helm install <release>` into the test namespace.
fn install(g: &Ground, release: &str, args: &[&str]) -> Result<()> {
    let mut cmd = helm(g)?;
    cmd.args(["install", release])
        .arg(chart_dir())
        .args(["--namespace", &g.namespace])
        .args(args);
    run(cmd).map(|_| ())
}

/// The chart's resource names for `release` (the chart's fullname).
fn fullname(release: &str) -> String {
    if release.contains("byoc-operator") {
        release.to_string()
    } else {
        format!("{release}-byoc-operator")
    }
}

/// Starts the operator as the chart's ServiceAccount: a kubeconfig holding
/// a token from `kubectl create token`, leader election on as the chart
/// configures it.
fn start_as_chart(g: &Ground, release: &str) -> Result<Operator> {
    let name = fullname(release);
    let mut cmd = g.kube.kubectl();
    cmd.args([
        "create",
        "token",
        &name,
        "-n",
        &g.namespace,
        "--duration=2h",
    ]);
    let token = run(cmd)?.trim().to_string();
    let kubeconfig = g.kube.token_kubeconfig(&g.namespace, &token)?;
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    // As the chart's Deployment runs it: its installation Secret in the
    // release namespace, and the chart's lease (15 s).
    let installation = format!("{name}-installation");
    Operator::start(
        g,
        &[
            "--progress-poll",
            "1s",
            "--leader-election",
            "--lease-name",
            &name,
            "--lease-namespace",
            &g.namespace,
            "--installation-secret",
            &installation,
            "--installation-namespace",
            &g.namespace,
        ],
        &[("KUBECONFIG", kubeconfig.as_str())],
    )
}

/// The sandbox example, end to end: Secret, CloudAccount and ComputeCluster
/// applied; the cluster reaches `running` with an Event recorded; deleted,
/// it leaves nothing in AWS. Fails after `deadline` at any step.
async fn example_end_to_end(g: &Ground, deadline: Duration) -> Result<()> {
    let dir = testground::repo_root().join("examples/sandbox");
    for file in [
        "00-secret.yaml",
        "10-cloudaccount.yaml",
        "20-computecluster.yaml",
    ] {
        kubectl_apply(g, &std::fs::read_to_string(dir.join(file))?)?;
    }
    let api = g.api::<ComputeCluster>();
    let cc = eventually("ComputeCluster demo running", deadline, || async {
        let cc = api.get("demo").await?;
        let phase = cc.status.as_ref().and_then(|s| s.phase);
        if phase == Some(ClusterPhase::Running) {
            return Ok(Some(cc));
        }
        // Where it stands, for the timeout's message.
        let conditions = cc.status.as_ref().map(|s| {
            s.conditions
                .iter()
                .map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message))
                .collect::<Vec<_>>()
        });
        anyhow::bail!("phase {phase:?}, conditions {conditions:?}")
    })
    .await?;
    let uid = cc.uid().context("uid")?;
    let events = g.api::<Event>();
    eventually("an Event for demo reaching running", deadline, || async {
        let list = events.list(&ListParams::default()).await?;
        Ok(list
            .items
            .iter()
            .any(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("demo")
                    && e.reason.as_deref() == Some("Running")
            })
            .then_some(()))
    })
    .await?;
    // In use: the account and its Secret are protected.
    let accounts = g.api::<CloudAccount>();
    let secrets = g.api::<Secret>();
    eventually("the account and its Secret protected", deadline, || async {
        let held = |f: &[String]| f.iter().any(|f| f == IN_USE_FINALIZER);
        let account = accounts.get("demo").await?;
        let secret = secrets.get_metadata("demo-aws-keys").await?;
        Ok((held(account.finalizers()) && held(secret.finalizers())).then_some(()))
    })
    .await?;
    api.delete("demo", &DeleteParams::default()).await?;
    eventually("ComputeCluster demo gone", deadline, || async {
        Ok(api.get_opt("demo").await?.is_none().then_some(()))
    })
    .await?;
    let left = counts(g, &uid).await?;
    anyhow::ensure!(left == Counts::default(), "left behind: {left:?}");
    // No longer in use: both let go and deletable.
    accounts.delete("demo", &DeleteParams::default()).await?;
    secrets
        .delete("demo-aws-keys", &DeleteParams::default())
        .await?;
    eventually("the account and its Secret gone", deadline, || async {
        Ok((accounts.get_opt("demo").await?.is_none()
            && secrets.get_metadata_opt("demo-aws-keys").await?.is_none())
        .then_some(()))
    })
    .await
}

#[tokio::test]
async fn chart_lints_renders_rejects_bad_values_and_installs() -> Result<()> {
    let g = ground_with_crds("chart-install").await?;

    let mut lint = helm(&g)?;
    lint.args(["lint", "--strict"]).arg(chart_dir());
    run(lint)?;

    // The chart ships the generated CRDs, unchanged.
    let generated = testground::repo_root().join("crds");
    let mut names: Vec<_> = std::fs::read_dir(&generated)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let mut shipped: Vec<_> = std::fs::read_dir(chart_dir().join("crds"))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    shipped.sort();
    assert_eq!(
        names, shipped,
        "chart crds/ holds {shipped:?}, crds/ holds {names:?}"
    );
    for name in &names {
        let a = std::fs::read(generated.join(name))?;
        let b = std::fs::read(chart_dir().join("crds").join(name))?;
        assert_eq!(a, b, "charts/byoc-operator/crds/{} differs from crds/ (cp crds/*.yaml charts/byoc-operator/crds/)",
                name.to_string_lossy());
    }

    // Rendered with defaults: a hardened Deployment with leader election.
    let docs = template(&g, "byoc", &[])?;
    let deploy = find(&docs, "Deployment").context("no Deployment rendered")?;
    let pod = &deploy["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    for (what, ok) in [
        (
            "runAsNonRoot",
            pod["securityContext"]["runAsNonRoot"] == true,
        ),
        (
            "readOnlyRootFilesystem",
            container["securityContext"]["readOnlyRootFilesystem"] == true,
        ),
        (
            "allowPrivilegeEscalation false",
            container["securityContext"]["allowPrivilegeEscalation"] == false,
        ),
        (
            "capabilities drop ALL",
            container["securityContext"]["capabilities"]["drop"][0] == "ALL",
        ),
        (
            "memory limit",
            container["resources"]["limits"]["memory"].is_string(),
        ),
        (
            "cpu request",
            container["resources"]["requests"]["cpu"].is_string(),
        ),
        (
            "liveness probe on /healthz",
            container["livenessProbe"]["httpGet"]["path"] == "/healthz",
        ),
        (
            "readiness probe on /readyz",
            container["readinessProbe"]["httpGet"]["path"] == "/readyz",
        ),
        ("leader election", args.contains(&"--leader-election")),
        (
            "image tag = appVersion",
            container["image"] == "ghcr.io/byoc-dev/byoc-operator:0.1.0",
        ),
    ] {
        assert!(ok, "Deployment: {what} not as expected: {deploy}");
    }
    assert!(
        find(&docs, "ServiceMonitor").is_none() && find(&docs, "Service").is_some(),
        "by default: a metrics Service and no ServiceMonitor"
    );
    // The installation: its Secret named for the operator, made by the
    // chart only when given; the ambient identity lent to no namespace.
    let env = |docs: &[serde_json::Value], name: &str| {
        find(docs, "Deployment").and_then(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()
                .and_then(|e| e.iter().find(|v| v["name"] == name))
                .map(|v| v["value"].clone())
        })
    };
    let installation_secret = |docs: &[serde_json::Value]| -> Option<String> {
        docs.iter()
            .find(|d| {
                d["kind"] == "Secret" && d["metadata"]["name"] == "byoc-byoc-operator-installation"
            })
            .and_then(|d| {
                d["data"]["installation-secret"]
                    .as_str()
                    .map(str::to_string)
            })
    };
    let generated = installation_secret(&docs)
        .map(aws_smithy_types::base64::decode)
        .transpose()?
        .unwrap_or_default();
    assert!(env(&docs, "BYOC_INSTALLATION_SECRET") == Some(serde_json::json!("byoc-byoc-operator-installation"))
            && env(&docs, "BYOC_AMBIENT_IDENTITY_NAMESPACES").is_none()
            && generated.len() >= 32,
            "by default: the chart makes the installation Secret with a random secret ({} bytes), and lends the identity to no namespace", generated.len());
    assert!(
        !docs.iter().any(|d| d["kind"] == "Role"
            && d["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["resources"][0] == "secrets")),
        "by default no Role touches Secrets in the release namespace (the operator creates none)"
    );
    let given = template(
        &g,
        "byoc",
        &[
            "--set",
            "installation.secret=0123456789abcdef0123456789abcdef",
            "--set",
            "ambientIdentity.namespaces={team-a,team-b}",
        ],
    )?;
    assert!(
        given.iter().any(|d| {
            d["kind"] == "Secret"
                && d["metadata"]["name"] == "byoc-byoc-operator-installation"
                && d["data"]["installation-secret"].is_string()
        }) && env(&given, "BYOC_AMBIENT_IDENTITY_NAMESPACES")
            == Some(serde_json::json!("team-a,team-b")),
        "installation.secret and ambientIdentity.namespaces as given"
    );
    let docs = template(
        &g,
        "byoc",
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "watchNamespace=team-a",
        ],
    )?;
    assert!(
        find(&docs, "ServiceMonitor").is_some(),
        "metrics.serviceMonitor.enabled renders a ServiceMonitor"
    );
    // An image loaded into the node's runtime is addressed by digest; the
    // node's network when asked.
    let digest = format!("sha256:{}", "ab".repeat(32));
    let pinned = template(
        &g,
        "byoc",
        &[
            "--set",
            &format!("image.digest={digest}"),
            "--set",
            "hostNetwork=true",
        ],
    )?;
    let pod = find(&pinned, "Deployment")
        .map(|d| d["spec"]["template"]["spec"].clone())
        .unwrap_or_default();
    assert!(
        pod["containers"][0]["image"] == format!("ghcr.io/byoc-dev/byoc-operator@{digest}")
            && pod["hostNetwork"] == true
            && pod["dnsPolicy"] == "ClusterFirstWithHostNet",
        "image.digest and hostNetwork: {pod}"
    );
    // The interruption queue: on by default, off when asked.
    let args_of = |docs: &[serde_json::Value]| {
        find(docs, "Deployment")
            .map(|d| d["spec"]["template"]["spec"]["containers"][0]["args"].clone())
            .unwrap_or_default()
    };
    let off = template(&g, "byoc", &["--set", "interruptionQueue=false"])?;
    let flag = serde_json::json!("--no-interruption-queue");
    assert!(
        args_of(&off).as_array().is_some_and(|a| a.contains(&flag))
            && args_of(&docs)
                .as_array()
                .is_some_and(|a| !a.contains(&flag)),
        "interruptionQueue: {} / {}",
        args_of(&off),
        args_of(&docs)
    );
    assert!(
        find(&docs, "ClusterRoleBinding").is_none()
            && docs
                .iter()
                .any(|d| d["kind"] == "RoleBinding" && d["metadata"]["namespace"] == "team-a"),
        "watchNamespace binds the ClusterRole in that namespace only"
    );

    // Bad values are refused by values.schema.json, naming the value.
    let cases: &[(&str, &str)] = &[
        ("concurrency=0", "concurrency"),
        ("namespaceConcurrency=-1", "namespaceConcurrency"),
        ("logging.format=xml", "format"),
        ("resyncInterval=five minutes", "resyncInterval"),
        ("withdrawnConsentGrace=a day", "withdrawnConsentGrace"),
        ("leaderElection.leaseDuration=15", "leaseDuration"),
        ("watchNamespace=Team_A", "watchNamespace"),
        ("metrics.port=80", "port"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("image.digest=latest", "digest"),
        ("hostNetwork=maybe", "hostNetwork"),
        ("interruptionQueue=sometimes", "interruptionQueue"),
        ("replicas=3", "replicas"),
        ("aws.endpointUrl=localhost:5000", "endpointUrl"),
        ("installation.secret=too-short", "secret"),
        ("installation.secretName=Not_A_Name", "secretName"),
        ("installation.apiserver=kube-system", "apiserver"),
        ("ambientIdentity.namespaces={Team_B}", "namespaces"),
    ];
    for (set, field) in cases {
        let mut cmd = helm(&g)?;
        cmd.args(["template", "byoc"])
            .arg(chart_dir())
            .args(["--set", set]);
        let out = cmd.output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("values don't meet the specifications"),
            "--set {set}: expected a schema error, got: {stderr}"
        );
        assert!(
            stderr.contains(field),
            "--set {set}: the error does not name {field}: {stderr}"
        );
    }

    // Installed into the real apiserver, with an IRSA annotation.
    let release = g.namespace.clone();
    install(
        &g,
        &release,
        &[
            "--set",
            "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::111111111111:role/byoc-operator",
        ],
    )?;
    let sa = g
        .api::<k8s_openapi::api::core::v1::ServiceAccount>()
        .get(&fullname(&release))
        .await?;
    assert_eq!(
        sa.annotations()
            .get("eks.amazonaws.com/role-arn")
            .map(String::as_str),
        Some("arn:aws:iam::111111111111:role/byoc-operator"),
        "ServiceAccount annotations: {:?}",
        sa.annotations()
    );
    g.api::<k8s_openapi::api::apps::v1::Deployment>()
        .get(&fullname(&release))
        .await
        .context("the Deployment was not installed")?;
    let mut status = helm(&g)?;
    status.args(["status", &release, "--namespace", &g.namespace]);
    let text = run(status)?;
    assert!(text.contains("STATUS: deployed"), "helm status: {text}");

    // The installation Secret: made by the install with a random secret,
    // the same after an upgrade (a new one would be a new installation).
    let secrets = g.api::<Secret>();
    let name = format!("{}-installation", fullname(&release));
    let secret_of = |s: Secret| {
        s.data
            .and_then(|d| d.get(SECRET_KEY).map(|b| b.0.clone()))
            .unwrap_or_default()
    };
    let installed = secret_of(secrets.get(&name).await?);
    assert!(
        installed.len() >= 32,
        "installed: {} bytes",
        installed.len()
    );
    let mut upgrade = helm(&g)?;
    upgrade.args(["upgrade", &release]).arg(chart_dir()).args([
        "--namespace",
        &g.namespace,
        "--reuse-values",
    ]);
    run(upgrade)?;
    assert_eq!(
        secret_of(secrets.get(&name).await?),
        installed,
        "an upgrade kept the installation's secret"
    );
    // A Secret of that name the release did not make (an earlier release's
    // operator made it) is left alone by an install, and used.
    let other = format!("{release}-b");
    let kept = b"made-by-an-earlier-release-operator-at-its-first-start".to_vec();
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some(format!("{}-installation", fullname(&other))),
                    ..Default::default()
                },
                data: Some([(SECRET_KEY.to_string(), ByteString(kept.clone()))].into()),
                ..Default::default()
            },
        )
        .await?;
    install(&g, &other, &[])?;
    assert_eq!(
        secret_of(
            secrets
                .get(&format!("{}-installation", fullname(&other)))
                .await?
        ),
        kept,
        "an install left the Secret it did not make as it was"
    );
    Ok(())
}

#[tokio::test]
async fn chart_rbac_is_enough_for_the_example_end_to_end() -> Result<()> {
    let g = ground_with_crds("chart-rbac").await?;
    // Release names are unique: the ClusterRole is cluster-wide.
    let release = g.namespace.clone();
    install(&g, &release, &[])?;
    let op = start_as_chart(&g, &release)?;
    let result = example_end_to_end(&g, WAIT).await;
    result.with_context(|| format!("operator log tail:\n{}", op.log_tail(20)))
}

/// One variant of the chart's RBAC: the whole run with rule `index` of the
/// ClusterRole (or of the leader-election Role) removed; `None` removes
/// nothing (the control).
/// A rule of the chart's RBAC: the ClusterRole's (`None`), or a Role's by
/// the suffix of its name after the release's full name; its index.
type RuleAt = (Option<String>, usize);

async fn run_without_rule(
    label: String,
    rule: Option<RuleAt>,
    deadline: Duration,
) -> Result<Result<()>> {
    let g = Ground::new(&label).await?;
    let release = g.namespace.clone();
    install(&g, &release, &[])?;
    if let Some((role, index)) = rule {
        let mut patch = g.kube.kubectl();
        match role {
            Some(suffix) => patch.args([
                "patch",
                "role",
                &format!("{}{suffix}", fullname(&release)),
                "-n",
                &g.namespace,
            ]),
            None => patch.args(["patch", "clusterrole", &fullname(&release)]),
        };
        patch.args([
            "--type=json",
            "-p",
            &format!(r#"[{{"op":"remove","path":"/rules/{index}"}}]"#),
        ]);
        run(patch)?;
    }
    let op = start_as_chart(&g, &release)?;
    let outcome = example_end_to_end(&g, deadline).await;
    // A variant whose operator lost its Lease failed for the Lease, not for
    // the rule it lacks: said as such, so it is not taken for the rule's.
    let log = op.log();
    let outcome = match log.lines().find(|l| l.contains("leadership lost")) {
        Some(line) if outcome.is_err() => Err(anyhow::anyhow!(
            "the operator lost its Lease (not the rule's doing): {line}"
        )),
        _ => outcome,
    };
    let outcome = outcome.with_context(|| format!("operator log tail:\n{}", op.log_tail(20)));
    Ok(outcome)
}

fn describe(rule: &serde_json::Value) -> String {
    format!(
        "{} {} [{}]",
        rule["apiGroups"],
        rule["resources"],
        rule["verbs"]
            .as_array()
            .map(|v| v
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(","))
            .unwrap_or_default()
    )
}

#[tokio::test]
async fn chart_rbac_has_no_spare_rule() -> Result<()> {
    let g = ground_with_crds("chart-rbac-rules").await?;
    let docs = template(&g, "byoc", &[])?;
    let cluster_role: ClusterRole = serde_json::from_value(
        find(&docs, "ClusterRole")
            .context("no ClusterRole")?
            .clone(),
    )?;
    let roles: Vec<Role> = docs
        .iter()
        .filter(|d| d["kind"] == "Role")
        .map(|d| serde_json::from_value(d.clone()))
        .collect::<Result<_, _>>()?;
    assert!(!roles.is_empty(), "{} Roles rendered", roles.len());
    let mut variants: Vec<(String, Option<RuleAt>)> = vec![("everything (control)".into(), None)];
    let rules_json =
        |r: &[k8s_openapi::api::rbac::v1::PolicyRule]| -> Result<Vec<serde_json::Value>> {
            r.iter().map(|x| Ok(serde_json::to_value(x)?)).collect()
        };
    for (i, rule) in rules_json(cluster_role.rules.as_deref().unwrap_or_default())?
        .iter()
        .enumerate()
    {
        variants.push((
            format!("ClusterRole rule {}", describe(rule)),
            Some((None, i)),
        ));
    }
    for role in &roles {
        let name = role.metadata.name.clone().unwrap_or_default();
        let suffix = name
            .strip_prefix(&fullname("byoc"))
            .context("a Role not named after the release")?
            .to_string();
        for (i, rule) in rules_json(role.rules.as_deref().unwrap_or_default())?
            .iter()
            .enumerate()
        {
            variants.push((
                format!("Role {name} rule {}", describe(rule)),
                Some((Some(suffix.clone()), i)),
            ));
        }
    }
    // All at once, each in its own namespace with its own moto and operator;
    // the control shows the deadline is enough on this machine. Eleven
    // operators and motos building the example at once beside another
    // suite's test on two cores once took the control past 60 s.
    let deadline = Duration::from_secs(120);
    let runs = variants
        .iter()
        .enumerate()
        .map(|(i, (_, rule))| run_without_rule(format!("rbac-minus-{i}"), rule.clone(), deadline));
    let results = futures::future::join_all(runs).await;
    let mut report = vec![];
    let mut wrong = vec![];
    for ((label, rule), result) in variants.iter().zip(results) {
        let outcome = result.with_context(|| format!("setting up {label}"))?;
        let expected_to_pass = rule.is_none();
        report.push(format!(
            "{label}: {}",
            match &outcome {
                Ok(()) => "example ran end to end".to_string(),
                // The control's whole story, its operator's log included.
                Err(e) if expected_to_pass => format!("failed: {e:#}"),
                Err(e) => format!("failed: {}", e.root_cause()),
            }
        ));
        if outcome.is_ok() != expected_to_pass {
            wrong.push(match outcome {
                Ok(()) => format!("without {label} the example still ran: the rule is spare"),
                Err(e) => format!("the control failed: {e:#}"),
            });
        }
    }
    println!("RBAC variants:\n  {}", report.join("\n  "));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

#[tokio::test]
async fn the_operators_secret_writes_are_its_finalizers_only() -> Result<()> {
    let g = ground_with_crds("chart-secret-writes").await?;
    let release = "writes";
    install(&g, release, &[])?;
    let sa = format!(
        "system:serviceaccount:{}:{}",
        g.namespace,
        fullname(release)
    );
    kubectl_apply(
        &g,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: keys, labels: {byoc.dev/use: credentials}}\nstringData: {AWS_ACCESS_KEY_ID: testing, AWS_SECRET_ACCESS_KEY: testing}\n",
    )?;
    // As the operator's ServiceAccount (impersonated), which the chart's
    // ClusterRole lets patch Secrets.
    let patch_secret_as =
        |name: &str, patch: &str, extra: &[&str]| -> Result<std::process::Output> {
            let mut cmd = g.kube.kubectl();
            cmd.args(["--as", &sa, "-n", &g.namespace, "patch", "secret", name])
                .args(["--type", "merge", "-p", patch])
                .args(extra);
            Ok(cmd.output()?)
        };
    let patch_as_with = |patch: &str, extra: &[&str]| patch_secret_as("keys", patch, extra);
    let patch_as = |patch: &str| patch_as_with(patch, &[]);
    let refused = |out: &std::process::Output| {
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr)
                .contains("may change a Secret's finalizers only")
    };
    // The apiserver loads a new policy within a moment: probed without
    // writing (a server-side dry run is admitted like a write).
    const PROBE: &str = r#"{"metadata":{"annotations":{"probe":"x"}}}"#;
    eventually("the policy in force", WAIT, || async {
        Ok(refused(&patch_as_with(PROBE, &["--dry-run=server"])?).then_some(()))
    })
    .await?;
    // Its data, a label, an annotation: refused by the policy.
    for patch in [
        r#"{"data":{"AWS_SECRET_ACCESS_KEY":"c3dhcHBlZA=="}}"#,
        r#"{"metadata":{"labels":{"byoc.dev/use":"user-data"}}}"#,
        r#"{"metadata":{"annotations":{"note":"x"}}}"#,
    ] {
        let out = patch_as(patch)?;
        assert!(
            refused(&out),
            "{patch} was not refused: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let secret = g.api::<Secret>().get("keys").await?;
    assert_eq!(
        secret
            .data
            .as_ref()
            .and_then(|d| d.get("AWS_SECRET_ACCESS_KEY"))
            .map(|v| v.0.clone()),
        Some(b"testing".to_vec()),
        "the Secret's data changed"
    );
    // The one exception: binding the installation Secret to this
    // apiserver on the first start (an annotation added where there was
    // none), never changing it, and on no other Secret. The chart made it
    // without the annotation (installation.apiserver not given).
    let installation = format!("{}-installation", fullname(release));
    let bind =
        |uid: &str| format!(r#"{{"metadata":{{"annotations":{{"byoc.dev/apiserver":"{uid}"}}}}}}"#);
    let out = patch_as(&bind("uid-here"))?;
    assert!(
        refused(&out),
        "another Secret bound: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = patch_secret_as(&installation, &bind("uid-here"), &[])?;
    assert!(
        out.status.success(),
        "the binding refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = patch_secret_as(&installation, &bind("uid-elsewhere"), &[])?;
    assert!(
        refused(&out),
        "the binding changed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Control: its finalizer, in and out, as the operator does.
    for patch in [
        r#"{"metadata":{"finalizers":["byoc.dev/in-use"]}}"#,
        r#"{"metadata":{"finalizers":null}}"#,
    ] {
        let out = patch_as(patch)?;
        assert!(
            out.status.success(),
            "{patch} was refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The policy is the chart's: without it the same data patch passes
    // RBAC (so the refusal above is the policy's, not RBAC's).
    let mut upgrade = helm(&g)?;
    upgrade.args(["upgrade", release]).arg(chart_dir()).args([
        "--namespace",
        &g.namespace,
        "--set",
        "secretWrites.finalizersOnly=false",
    ]);
    run(upgrade)?;
    eventually(
        "the same patch admitted without the policy",
        WAIT,
        || async {
            let out = patch_as_with(PROBE, &["--dry-run=server"])?;
            Ok(out.status.success().then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// `byoc_*` metric names an expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = expr;
    while let Some(i) = rest.find("byoc_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.push(name);
    }
    out
}

#[tokio::test]
async fn the_charts_alerts_pass_promtool_and_read_only_metrics_the_operator_exports() -> Result<()>
{
    let g = Ground::new("chart-alerts").await?;
    let promtool = &testground::Tools::locate()?.promtool;
    let rules = chart_dir().join("files/alerts.yaml");
    let fixtures = testground::repo_root().join("tests/alerts/alerts_test.yaml");
    for args in [
        vec![
            "check".to_string(),
            "rules".into(),
            rules.display().to_string(),
        ],
        vec![
            "test".to_string(),
            "rules".into(),
            fixtures.display().to_string(),
        ],
    ] {
        let mut cmd = Command::new(promtool);
        cmd.args(&args);
        let out = run(cmd).with_context(|| format!("promtool {}", args.join(" ")))?;
        println!("promtool {}: {}", args[..2].join(" "), out.trim());
    }
    // Rendered, the PrometheusRule holds the file's groups unchanged, and
    // the dashboard is the file's JSON.
    let docs = template(
        &g,
        "byoc",
        &[
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "metrics.dashboard.enabled=true",
        ],
    )?;
    let rule = find(&docs, "PrometheusRule").context("no PrometheusRule rendered")?;
    let file: serde_json::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&rules)?)?;
    assert_eq!(
        rule["spec"]["groups"], file["groups"],
        "the PrometheusRule differs from files/alerts.yaml"
    );
    let dashboard = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .context("no dashboard ConfigMap rendered")?;
    let json: serde_json::Value = serde_json::from_str(
        dashboard["data"]["byoc-operator.json"]
            .as_str()
            .context("no dashboard JSON")?,
    )?;
    assert!(
        template(&g, "byoc", &[])?
            .iter()
            .all(|d| d["kind"] != "PrometheusRule"),
        "a PrometheusRule by default"
    );
    // Every metric a rule or a panel reads is one the operator exports
    // (a renamed metric would leave an alert that never fires).
    let exported: std::collections::BTreeSet<String> = byoc_operator::metrics::Metrics::new()
        .series_names()
        .into_iter()
        .collect();
    let rules = file["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .map(|r| (format!("alert {}", r["alert"]), &r["expr"]));
    let panels = json["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (format!("panel {}", p["title"]), &t["expr"]))
        });
    let read: Vec<(String, String)> = rules
        .chain(panels)
        .flat_map(|(who, expr)| {
            metric_names(expr.as_str().unwrap_or_default())
                .into_iter()
                .map(move |m| (who.clone(), m))
        })
        .collect();
    assert!(
        read.len() >= 15,
        "only {} metric reads found: {read:?}",
        read.len()
    );
    let unknown: Vec<&(String, String)> =
        read.iter().filter(|(_, m)| !exported.contains(m)).collect();
    assert!(
        unknown.is_empty(),
        "metrics the operator does not export: {unknown:?} (exported: {exported:?})"
    );
    Ok(())
}
