//! Node images: a group that names no `imageId` runs the newest Amazon
//! Linux 2023 image for its architecture as resolved once, then pinned in
//! `status.nodeGroups[].imageId`. Scale-ups and replacements use the pin,
//! across operator restarts, until the user asks for the newest again: a
//! new value of the `byoc.dev/refresh-images` annotation re-resolves every
//! such group, and a group that gets a newer image rolls to it.

use std::collections::BTreeMap;

use kube::ResourceExt;

use super::Pass;
use super::{put, Board, StepInput, StepResult};
use crate::api::{ComputeCluster, NodeGroupSpec};
use crate::aws::instances::ObservedInstance;
use crate::cluster::catalog::Catalog;
use crate::cluster::spec::SpecError;
use crate::Error;

/// Whether nodes may boot an image of `owner` (as IAM's `ec2:Owner` names
/// it): Amazon's, the account's own (`account_id`), or one of the owners
/// the CloudAccount lists (`imageOwners`). The role's policy allows the
/// same owners, and nothing else (no snapshot, no launch template).
pub fn owner_allowed(owner: &str, account_id: &str, listed: &[String]) -> bool {
    owner == "amazon" || owner == account_id || listed.iter().any(|l| l == owner)
}

/// Set to a new value (a date, a counter) to re-resolve the default images.
pub const REFRESH_ANNOTATION: &str = "byoc.dev/refresh-images";

/// A pinned image and the instance type it was resolved for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub image_id: String,
    pub instance_type: String,
}

/// What the object says before the pass: the image pins and instances its
/// last status recorded, and a refresh asked for and not yet acted on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// By node group.
    pub pins: BTreeMap<String, Pin>,
    /// The annotation's value, while it differs from the one acted on.
    pub refresh: Option<String>,
    /// The instances of each group, by group name.
    pub instances: BTreeMap<String, Vec<String>>,
}

impl Recorded {
    pub fn of(cc: &ComputeCluster) -> Recorded {
        let status = cc.status.clone().unwrap_or_default();
        let pins = status
            .node_groups
            .iter()
            .filter_map(|g| {
                Some((
                    g.name.clone(),
                    Pin {
                        image_id: g.image_id.clone()?,
                        instance_type: g.instance_type.clone()?,
                    },
                ))
            })
            .collect();
        let asked = cc.annotations().get(REFRESH_ANNOTATION).cloned();
        let instances = status
            .node_groups
            .iter()
            .map(|g| (g.name.clone(), g.instance_ids.clone()))
            .collect();
        Recorded {
            pins,
            instances,
            refresh: asked.filter(|v| Some(v) != status.image_refresh.as_ref()),
        }
    }
}

/// How a group that names no image gets one this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Its pin, or the image its live instances run (a group pinned by an
    /// operator that wrote no pin, or a crash before the pin was written).
    Pinned(String),
    /// The newest default is looked up (`fresh`: past the process's cache).
    Resolve { fresh: bool },
    /// Nothing to launch, nothing to pin.
    Nothing,
}

/// The pure decision for one group that names no `imageId`.
pub fn choose(
    group: &NodeGroupSpec,
    recorded: &Recorded,
    instances: &[ObservedInstance],
) -> Choice {
    let live: Vec<&ObservedInstance> = instances
        .iter()
        .filter(|i| i.group == group.name && i.state.is_live())
        .collect();
    let empty = live.is_empty() && group.count == 0;
    if recorded.refresh.is_some() {
        // An empty group drops its pin: it resolves when it grows.
        return match empty {
            true => Choice::Nothing,
            false => Choice::Resolve { fresh: true },
        };
    }
    match recorded.pins.get(&group.name) {
        // Kept while the group is empty too: it grows on the same image.
        Some(pin) if group.types().contains(&pin.instance_type.as_str()) => {
            return Choice::Pinned(pin.image_id.clone())
        }
        // Another type, maybe another architecture: resolved again (the
        // type change replaces the group anyway).
        Some(_) if !empty => return Choice::Resolve { fresh: false },
        _ if empty => return Choice::Nothing,
        _ => {}
    }
    match most_run(&live, &group.types()) {
        Some(image) => Choice::Pinned(image),
        None => Choice::Resolve { fresh: false },
    }
}

/// The image most of the live instances of `types` run (the newest launch
/// breaks a tie): adopting it replaces the fewest.
fn most_run(live: &[&ObservedInstance], types: &[&str]) -> Option<String> {
    let mut tally: BTreeMap<&str, (usize, i64)> = BTreeMap::new();
    for i in live
        .iter()
        .filter(|i| types.contains(&i.instance_type.as_str()))
    {
        if let Some(image) = i.image_id.as_deref() {
            let entry = tally.entry(image).or_default();
            entry.0 += 1;
            entry.1 = entry.1.max(i.launched);
        }
    }
    tally
        .into_iter()
        .max_by_key(|(_, score)| *score)
        .map(|(image, _)| image.to_string())
}

/// The image of each group that names none and has instances or wants
/// some, by group: pinned ones at no cost, the others looked up at once
/// (one architecture lookup and one image lookup per architecture).
pub async fn ensure(p: Pass<'_>, catalog: &Catalog) -> Result<BTreeMap<String, String>, Error> {
    let mut images = BTreeMap::new();
    let mut lookups: Vec<(&NodeGroupSpec, bool)> = Vec::new();
    for group in p.spec.node_groups.iter().filter(|g| g.image_id.is_none()) {
        match choose(group, p.recorded, &p.observed.instances) {
            Choice::Pinned(image) => {
                images.insert(group.name.clone(), image);
            }
            Choice::Resolve { fresh } => lookups.push((group, fresh)),
            Choice::Nothing => {}
        }
    }
    let fresh = lookups.iter().any(|(_, fresh)| *fresh);
    let types: Vec<String> = lookups
        .iter()
        .flat_map(|(g, _)| g.types())
        .map(String::from)
        .collect();
    if types.is_empty() {
        return Ok(images);
    }
    let found = catalog
        .default_images(p.c, &p.spec.region, &types, fresh)
        .await?;
    for (group, _) in lookups {
        let first = group.first_type();
        let image = found.get(first).ok_or_else(|| Error::NoDefaultImage {
            wanted: first.to_string(),
        })?;
        // One image serves every type of the group.
        if let Some(other) = group
            .types()
            .into_iter()
            .find(|t| found.get(*t) != Some(image))
        {
            return Err(SpecError::MixedArchitectures {
                group: group.name.clone(),
                first: first.to_string(),
                other: other.to_string(),
            }
            .into());
        }
        images.insert(group.name.clone(), image.clone());
    }
    Ok(images)
}

/// Step `Images`: each node group's image, chosen or pinned.
pub fn step<'a>(i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move { put(&b.images, ensure(i.pass, i.catalog).await?) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::instances::InstanceState;

    #[test]
    fn images_of_amazon_the_account_and_listed_owners_only() {
        let listed = vec!["210987654321".to_string()];
        let me = "123456789012";
        assert!(owner_allowed("amazon", me, &[]));
        assert!(owner_allowed(me, me, &[]));
        assert!(owner_allowed("210987654321", me, &listed));
        assert!(!owner_allowed("210987654321", me, &[]));
        assert!(!owner_allowed("aws-marketplace", me, &listed));
        assert!(!owner_allowed("999999999999", me, &listed));
    }

    fn group(count: i32, instance_type: &str) -> NodeGroupSpec {
        NodeGroupSpec::workers(count, instance_type)
    }

    fn running(id: &str, image: &str, launched: i64) -> ObservedInstance {
        ObservedInstance {
            launched,
            subnet_id: "subnet-a".into(),
            image_id: Some(image.into()),
            ..ObservedInstance::of(id, "workers", "t3.large", InstanceState::Running)
        }
    }

    fn pinned(image: &str, instance_type: &str) -> Recorded {
        Recorded {
            pins: BTreeMap::from([(
                "workers".into(),
                Pin {
                    image_id: image.into(),
                    instance_type: instance_type.into(),
                },
            )]),
            refresh: None,
            instances: BTreeMap::new(),
        }
    }

    #[test]
    fn a_refresh_is_pending_until_its_value_is_acted_on() {
        let mut cc = ComputeCluster::new(
            "c",
            serde_json::from_value(serde_json::json!({
                "cloudAccountRef": {"name": "a"},
                "region": "us-east-1",
                "network": {"vpcCidr": "10.0.0.0/16"},
            }))
            .expect("a spec"),
        );
        assert_eq!(Recorded::of(&cc).refresh, None, "no annotation");
        cc.annotations_mut()
            .insert(REFRESH_ANNOTATION.into(), "1".into());
        assert_eq!(Recorded::of(&cc).refresh.as_deref(), Some("1"), "asked");
        cc.status = Some(crate::api::ComputeClusterStatus {
            image_refresh: Some("1".into()),
            ..Default::default()
        });
        assert_eq!(Recorded::of(&cc).refresh, None, "acted on");
    }

    #[test]
    fn choices() {
        let refresh = Recorded {
            refresh: Some("2".into()),
            ..pinned("ami-old", "t3.large")
        };
        let two_old_one_new = vec![
            running("i-1", "ami-old", 1),
            running("i-2", "ami-old", 2),
            running("i-3", "ami-new", 3),
        ];
        let one_each = vec![running("i-1", "ami-a", 1), running("i-2", "ami-b", 2)];
        let pin = |s: &str| Choice::Pinned(s.into());
        // (group, recorded, instances, choice, why)
        let rows: Vec<(NodeGroupSpec, Recorded, Vec<ObservedInstance>, Choice, &str)> = vec![
            (
                group(2, "t3.large"),
                Recorded::default(),
                vec![],
                Choice::Resolve { fresh: false },
                "a new group: resolved (the process's cache will do)",
            ),
            (
                group(0, "t3.large"),
                Recorded::default(),
                vec![],
                Choice::Nothing,
                "an empty group that wants none",
            ),
            (
                group(3, "t3.large"),
                pinned("ami-old", "t3.large"),
                vec![],
                pin("ami-old"),
                "a pin is kept: scaled from zero, or after a restart",
            ),
            (
                group(0, "t3.large"),
                pinned("ami-old", "t3.large"),
                vec![],
                pin("ami-old"),
                "an empty group keeps its pin",
            ),
            (
                group(3, "m7g.large"),
                pinned("ami-old", "t3.large"),
                vec![],
                Choice::Resolve { fresh: false },
                "a pin for another type is not used",
            ),
            (
                group(3, "t3.large"),
                refresh.clone(),
                vec![running("i-1", "ami-old", 1)],
                Choice::Resolve { fresh: true },
                "a refresh asked: looked up past the cache",
            ),
            (
                group(0, "t3.large"),
                refresh,
                vec![],
                Choice::Nothing,
                "a refresh of an empty group wants nothing yet",
            ),
            (
                group(3, "t3.large"),
                Recorded::default(),
                two_old_one_new,
                pin("ami-old"),
                "no pin: the image most live instances run is adopted",
            ),
            (
                group(2, "t3.large"),
                Recorded::default(),
                one_each,
                pin("ami-b"),
                "a tie: the newest launch's",
            ),
        ];
        for (group, recorded, instances, want, why) in rows {
            assert_eq!(choose(&group, &recorded, &instances), want, "{why}");
        }
    }
}
