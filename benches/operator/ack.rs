//! The peer, side by side: ACK's ec2-controller (built by
//! `hack/build-ground.sh ack`, pinned) on the same apiserver and the same
//! proxy in front of a fresh moto, building the reference topology's EC2
//! part as ACK resources posted straight to the API: a VPC, an internet
//! gateway, an Elastic IP and a NAT gateway per zone, a public and a
//! private subnet per zone (with `routeTableRefs`), a public route table
//! and one private per zone, the security group, and the 6 instances. Timed
//! from the first create until every resource is `ACK.ResourceSynced=True`.
//!
//! ACK's Instance (v1.0.0) takes subnet and security group IDs, not
//! references: the bench reads them from the synced Subnets and the
//! SecurityGroup (looking every 10 ms) and then creates the instances, as a
//! user of that version would have to.

use std::process::{Child, Stdio};

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

use super::*;
use crate::scenarios::{namespace, warm_up, REFERENCE_AWS_ACCOUNT};

/// ACK's ec2-controller, where `hack/build-ground.sh ack` puts it.
pub(crate) fn ack_dir() -> Option<PathBuf> {
    let cache = std::env::var("BYOC_CACHE").ok()?;
    let dir = Path::new(&cache).join("ack-ec2-v1.0.0");
    dir.join("ec2-controller").exists().then_some(dir)
}

/// One run: time to all synced (or to the deadline), and the AWS calls by
/// operation.
#[derive(Debug, Clone)]
pub(crate) struct AckRun {
    pub(crate) to_synced: Duration,
    pub(crate) calls: BTreeMap<String, u64>,
    pub(crate) throttled: u64,
    /// Resources not synced at the deadline, each with what its conditions
    /// said (empty: all synced).
    pub(crate) stuck: Vec<String>,
}

/// Why an ACK resource is not synced: its conditions' messages.
fn why_not_synced(kind: &str, o: &DynamicObject) -> String {
    let said: Vec<String> = o.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] != "True" || c["type"] != "ACK.ResourceSynced")
        .filter_map(|c| {
            let message = c["message"].as_str()?;
            Some(format!(
                "{}: {}",
                c["type"].as_str().unwrap_or_default(),
                message
            ))
        })
        .collect();
    format!(
        "{kind} {}: {}",
        o.metadata.name.as_deref().unwrap_or_default(),
        if said.is_empty() {
            "no condition yet".to_string()
        } else {
            said.join("; ")
        }
    )
}

/// The controller as a process; killed when dropped.
struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("ec2.services.k8s.aws", "v1alpha1", kind),
        plural,
    )
}

const KINDS: [(&str, &str); 8] = [
    ("VPC", "vpcs"),
    ("InternetGateway", "internetgateways"),
    ("ElasticIPAddress", "elasticipaddresses"),
    ("NATGateway", "natgateways"),
    ("Subnet", "subnets"),
    ("RouteTable", "routetables"),
    ("SecurityGroup", "securitygroups"),
    ("Instance", "instances"),
];

fn object(kind: &str, name: &str, spec: serde_json::Value) -> Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "ec2.services.k8s.aws/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }))?)
}

/// The network part of the reference topology.
fn network() -> Result<Vec<DynamicObject>> {
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c"];
    let r = |name: &str| json!({"from": {"name": name}});
    let mut out = vec![
        object(
            "VPC",
            "vpc",
            json!({"cidrBlocks": ["10.0.0.0/16"], "enableDNSSupport": true, "enableDNSHostnames": true}),
        )?,
        object("InternetGateway", "igw", json!({"vpcRef": r("vpc")}))?,
        object(
            "SecurityGroup",
            "nodes",
            json!({"name": "nodes", "description": "nodes", "vpcRef": r("vpc"),
                   "ingressRules": [{"ipProtocol": "-1", "ipRanges": [{"cidrIP": "10.0.0.0/16"}]}]}),
        )?,
        object(
            "RouteTable",
            "public",
            json!({"vpcRef": r("vpc"), "routes": [{"destinationCIDRBlock": "0.0.0.0/0", "gatewayRef": r("igw")}]}),
        )?,
    ];
    for (i, zone) in zones.iter().enumerate() {
        let z = &zone[zone.len() - 1..];
        out.push(object("ElasticIPAddress", &format!("eip-{z}"), json!({}))?);
        out.push(object(
            "Subnet",
            &format!("public-{z}"),
            json!({"vpcRef": r("vpc"), "availabilityZone": zone, "cidrBlock": format!("10.0.{}.0/20", i * 16),
                   "mapPublicIPOnLaunch": true, "routeTableRefs": [r("public")]}),
        )?);
        out.push(object(
            "NATGateway",
            &format!("nat-{z}"),
            json!({"subnetRef": r(&format!("public-{z}")), "allocationRef": r(&format!("eip-{z}"))}),
        )?);
        out.push(object(
            "RouteTable",
            &format!("private-{z}"),
            json!({"vpcRef": r("vpc"), "routes": [{"destinationCIDRBlock": "0.0.0.0/0", "natGatewayRef": r(&format!("nat-{z}"))}]}),
        )?);
        out.push(object(
            "Subnet",
            &format!("private-{z}"),
            json!({"vpcRef": r("vpc"), "availabilityZone": zone, "cidrBlock": format!("10.0.{}.0/20", 64 + i * 16),
                   "routeTableRefs": [r(&format!("private-{z}"))]}),
        )?);
    }
    Ok(out)
}

fn synced(o: &DynamicObject) -> bool {
    o.data["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "ACK.ResourceSynced" && c["status"] == "True")
    })
}

/// The first image moto offers (ACK's Instance names its image).
async fn an_image(moto: &Moto) -> Result<String> {
    let config = crate::scenarios::moto_config(moto).await;
    let images = aws_sdk_ec2::Client::new(&config)
        .describe_images()
        .owners("amazon")
        .send()
        .await?;
    images
        .images()
        .iter()
        .find_map(|i| i.image_id().map(str::to_string))
        .context("moto offers no image")
}

/// Applies ACK's CRDs to the apiserver (once per bench).
pub(crate) fn install_crds(kube: &Kube, dir: &Path) -> Result<()> {
    for step in [
        vec!["apply", "--server-side", "-f"],
        vec!["wait", "--for=condition=established", "--timeout=60s", "-f"],
    ] {
        let out = kube.kubectl().args(&step).arg(dir.join("crds")).output()?;
        if !out.status.success() {
            bail!("kubectl {step:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(())
}

pub(crate) async fn ack_run(
    kube: &Kube,
    client: &Client,
    dir: &Path,
    ns: &str,
    faults: Faults,
    deadline: Duration,
) -> Result<AckRun> {
    namespace(client, ns).await?;
    let moto = tokio::task::spawn_blocking(Moto::start).await??;
    let proxy = AwsProxy::start(moto.port())?;
    warm_up(&moto, &[REFERENCE_AWS_ACCOUNT.to_string()]).await?;
    let image = an_image(&moto).await?;
    let log_path = kube.dir().join(format!("bench-ack-{ns}.log"));
    let log = std::fs::File::create(&log_path)?;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut controller = Controller(
        Command::new(dir.join("ec2-controller"))
            .args([
                "--aws-endpoint-url",
                &proxy.endpoint(),
                "--aws-identity-endpoint-url",
                &proxy.endpoint(),
                "--allow-unsafe-aws-endpoint-urls",
                "--aws-region",
                "us-east-1",
                "--watch-namespace",
                ns,
                "--metrics-addr",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .env("KUBECONFIG", &kube.kubeconfig)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting ACK's ec2-controller")?,
    );
    // Started: every kind's workers are up.
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.matches("Starting workers").count() >= 11 {
            break;
        }
        if Instant::now() > end || controller.0.try_wait()?.is_some() {
            bail!(
                "ACK's ec2-controller did not start: see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    proxy.set_faults(faults);
    proxy.reset_calls();
    let api = |kind: &str, plural: &str| {
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource(kind, plural))
    };
    let plural = |kind: &str| {
        KINDS
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, p)| *p)
            .unwrap_or_default()
    };
    let started = Instant::now();
    for o in network()? {
        let kind = o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
        api(&kind, plural(&kind))
            .create(&PostParams::default(), &o)
            .await?;
    }
    // The instances, once their subnets and security group have IDs.
    let id_of =
        |o: &DynamicObject, field: &str| o.data["status"][field].as_str().map(str::to_string);
    let subnets = api("Subnet", "subnets");
    let groups = api("SecurityGroup", "securitygroups");
    let end = started + deadline;
    let private_names = ["a", "b", "c"].map(|z| format!("private-{z}"));
    let (private, group) = loop {
        let private: Vec<Option<String>> =
            futures::future::try_join_all(private_names.iter().map(|n| subnets.get(n)))
                .await?
                .iter()
                .map(|s| id_of(s, "subnetID"))
                .collect();
        let group = id_of(&groups.get("nodes").await?, "id");
        if let (Some(private), Some(group)) =
            (private.into_iter().collect::<Option<Vec<_>>>(), group)
        {
            break (private, group);
        }
        if Instant::now() > end {
            bail!("ACK's subnets and security group got no IDs within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let instances = api("Instance", "instances");
    for (group_name, instance_type) in [("general", "t3.large"), ("compute", "c6i.xlarge")] {
        for (subnet, z) in private.iter().zip(["a", "b", "c"]) {
            let o = object(
                "Instance",
                &format!("{group_name}-{z}"),
                json!({"imageID": image, "instanceType": instance_type, "subnetID": subnet,
                       "securityGroupIDs": [group], "minCount": 1, "maxCount": 1}),
            )?;
            instances.create(&PostParams::default(), &o).await?;
        }
    }
    let stuck = loop {
        let mut waiting = vec![];
        for (kind, plural) in KINDS {
            let list = api(kind, plural).list(&ListParams::default()).await?;
            waiting.extend(
                list.items
                    .iter()
                    .filter(|o| !synced(o))
                    .map(|o| (kind, o.clone())),
            );
        }
        if waiting.is_empty() {
            break vec![];
        }
        if Instant::now() > end {
            break waiting.iter().map(|(k, o)| why_not_synced(k, o)).collect();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let to_synced = started.elapsed();
    Ok(AckRun {
        to_synced,
        calls: proxy.calls(),
        throttled: proxy.throttled(),
        stuck,
    })
}
