//! What AWS offers a region, looked up once per process and shared by every
//! cluster: default images by instance type (for an hour: new groups get a
//! recent image; running groups keep their pinned one), available zones by
//! account.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use tokio::sync::Mutex;

use super::kinds::offerings::Refusals;
use crate::aws::instances::ImageFacts;
use crate::aws::{instances, vpc, AwsClients};
use crate::Error;

/// How long a looked-up default image is reused.
const IMAGE_TTL: Duration = Duration::from_secs(3600);

pub struct Catalog {
    /// Offerings AWS refused lately, per account and region (shared with
    /// the interruption listeners, which add the offerings AWS takes back).
    pub refusals: Arc<Refusals>,
    /// Default images by `(region, instance type)`, with when each was looked up.
    images: Mutex<HashMap<(String, String), (String, Instant)>>,
    /// Available zones by `(CloudAccount namespace/name, region)`.
    zones: Mutex<HashMap<(String, String), Vec<String>>>,
    /// Root device names by image ID (image IDs are unique across regions).
    image_facts: Mutex<HashMap<String, ImageFacts>>,
    /// vCPUs and GPUs by `(region, instance type)`.
    shapes: Mutex<HashMap<(String, String), (i64, i64)>>,
}

impl Catalog {
    pub fn new(refusals: Arc<Refusals>) -> Self {
        Catalog {
            refusals,
            images: Default::default(),
            zones: Default::default(),
            image_facts: Default::default(),
            shapes: Default::default(),
        }
    }

    /// The newest Amazon Linux 2023 image for each of `instance_types` in
    /// `region`: what is not cached (or all, when `fresh`) costs one
    /// architecture lookup for all and one image lookup per architecture,
    /// at once.
    pub async fn default_images(
        &self,
        c: &AwsClients,
        region: &str,
        instance_types: &[String],
        fresh: bool,
    ) -> Result<BTreeMap<String, String>, Error> {
        let key = |t: &str| (region.to_string(), t.to_string());
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.images.lock().await;
            for t in instance_types {
                match cache.get(&key(t)) {
                    Some((id, at)) if !fresh && at.elapsed() < IMAGE_TTL => {
                        found.insert(t.clone(), id.clone());
                    }
                    _ if !missing.contains(t) => missing.push(t.clone()),
                    _ => {}
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let arches = instances::architectures(c, &missing).await?;
        if let Some(unknown) = missing.iter().find(|t| !arches.contains_key(*t)) {
            return Err(Error::InstanceTypeUnknown {
                instance_type: unknown.clone(),
                region: region.to_string(),
            });
        }
        let mut distinct: Vec<&str> = arches.values().map(String::as_str).collect();
        distinct.sort();
        distinct.dedup();
        let images = try_join_all(distinct.iter().map(|a| instances::newest_image(c, a))).await?;
        let mut by_arch = BTreeMap::new();
        for (arch, image) in distinct.into_iter().zip(images) {
            let image = image.ok_or_else(|| Error::NoDefaultImage {
                wanted: arch.to_string(),
            })?;
            by_arch.insert(arch, image);
        }
        let mut cache = self.images.lock().await;
        let now = Instant::now();
        for (t, arch) in &arches {
            if let Some(id) = by_arch.get(arch.as_str()) {
                cache.insert(key(t), (id.clone(), now));
                found.insert(t.clone(), id.clone());
            }
        }
        Ok(found)
    }

    /// What a launch needs of `image_id`: its root device (its name, which
    /// a root volume's settings are given for, and its size, which they
    /// keep unless they set one) and its owner; looked up once per image.
    pub async fn image(&self, c: &AwsClients, image_id: &str) -> Result<ImageFacts, Error> {
        if let Some(root) = self.image_facts.lock().await.get(image_id) {
            return Ok(root.clone());
        }
        let root =
            instances::image_facts(c, image_id)
                .await?
                .ok_or_else(|| Error::ImageNotFound {
                    image_id: image_id.to_string(),
                })?;
        self.image_facts
            .lock()
            .await
            .insert(image_id.to_string(), root.clone());
        Ok(root)
    }

    /// vCPUs and GPUs of each of `types` in `region` (a type the region
    /// does not know is absent): what is not cached in one lookup.
    pub async fn shapes(
        &self,
        c: &AwsClients,
        region: &str,
        types: &[String],
    ) -> Result<BTreeMap<String, (i64, i64)>, Error> {
        let key = |t: &str| (region.to_string(), t.to_string());
        let mut cache = self.shapes.lock().await;
        let missing: Vec<String> = types
            .iter()
            .filter(|t| !cache.contains_key(&key(t)))
            .cloned()
            .collect();
        if !missing.is_empty() {
            for (t, shape) in instances::shapes(c, &missing).await? {
                cache.insert(key(&t), shape);
            }
        }
        Ok(types
            .iter()
            .filter_map(|t| cache.get(&key(t)).map(|s| (t.clone(), *s)))
            .collect())
    }

    /// The region's available zones as `account` (the CloudAccount's
    /// `namespace/name`) sees them, sorted; looked up once per process.
    pub async fn available_zones(
        &self,
        c: &AwsClients,
        account: &str,
        region: &str,
    ) -> Result<Vec<String>, Error> {
        let key = (account.to_string(), region.to_string());
        // Held across the lookup: clusters asking at once share one call.
        let mut cache = self.zones.lock().await;
        if let Some(zones) = cache.get(&key) {
            return Ok(zones.clone());
        }
        let zones = vpc::zones(c).await?;
        if !zones.is_empty() {
            cache.insert(key, zones.clone());
        }
        Ok(zones)
    }
}
