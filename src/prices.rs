//! List prices, per region: from the AWS Price List API, each kept a day;
//! where the API lists none, from a built-in table of us-east-1's prices,
//! the API asked again after an hour; and spot prices from EC2's spot price
//! history, kept an hour. Prices are public and the same for every account,
//! so one book serves every tenant; but a lookup that failed (denied to
//! this caller, unreachable) is not kept: the table stands in for that
//! estimate only, and the next caller asks for itself. Estimates only: no
//! discounts, savings plans or data transfer. Used by a cluster's
//! `status.cost` and by `audit`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::sync::Mutex;

use crate::aws::{pricing, AwsClients};

/// Hours in a month, for monthly prices (AWS's own figure).
pub const HOURS_PER_MONTH: f64 = 730.0;
/// How long a price the API gave is kept.
const ANSWERED_FOR: Duration = Duration::from_secs(24 * 3600);
/// How long an answer without a price (the table's stands in) and a spot
/// price are kept.
const UNANSWERED_FOR: Duration = Duration::from_secs(3600);

/// What is priced. Hourly, except volumes (per GB-month).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Item {
    /// A Linux instance on demand, shared tenancy.
    Instance(String),
    /// A NAT gateway's hour (its data processed is not estimated).
    NatGateway,
    /// A public IPv4 address's hour (an Elastic IP, in use or not).
    PublicIpv4,
    /// An interface VPC endpoint's hour in one zone (gateway endpoints cost
    /// nothing).
    InterfaceEndpoint,
    /// A GB-month of an EBS volume of this type (`gp3`, `gp2`, ...).
    Volume(String),
}

/// Where a price came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The Price List API or EC2's spot price history.
    Aws,
    /// The built-in table (us-east-1's list prices).
    Table,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    pub usd: f64,
    pub source: Source,
}

/// The prices one estimate uses: looked up before, read with no call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PriceBook {
    items: BTreeMap<Item, Price>,
    /// By `(instance type, zone)`.
    spot: BTreeMap<(String, String), Price>,
}

impl PriceBook {
    /// `item`'s price: the API's, else the table's, else none.
    pub fn price(&self, item: &Item) -> Option<Price> {
        self.items.get(item).copied().or_else(|| table(item))
    }

    /// The spot price of `instance_type` in `zone`; EC2's latest quote,
    /// else the on-demand price (the most a spot instance is charged).
    pub fn spot(&self, instance_type: &str, zone: &str) -> Option<Price> {
        self.spot
            .get(&(instance_type.to_string(), zone.to_string()))
            .copied()
            .or_else(|| self.price(&Item::Instance(instance_type.to_string())))
    }

    /// What an instance of `instance_type` in `zone` costs an hour: at the
    /// spot price there when it is a `spot` instance, else on demand.
    pub fn instance(&self, instance_type: &str, zone: &str, spot: bool) -> Option<Price> {
        match spot {
            true => self.spot(instance_type, zone),
            false => self.price(&Item::Instance(instance_type.to_string())),
        }
    }

    /// A book of `items` alone (tests, and what a caller learned itself).
    pub fn with(items: impl IntoIterator<Item = (Item, Price)>) -> Self {
        PriceBook {
            items: items.into_iter().collect(),
            spot: BTreeMap::new(),
        }
    }

    pub fn with_spot(mut self, instance_type: &str, zone: &str, price: Price) -> Self {
        self.spot
            .insert((instance_type.to_string(), zone.to_string()), price);
        self
    }
}

/// What an estimate needs priced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub items: BTreeSet<Item>,
    /// `(instance type, zone)`.
    pub spot: BTreeSet<(String, String)>,
}

impl Wanted {
    /// What pricing an instance of `instance_type` in `zone` needs: its
    /// on-demand price, and its spot price there when it is `spot` (the
    /// on-demand one stands in without a quote).
    pub fn instance(&mut self, instance_type: &str, zone: &str, spot: bool) {
        self.items.insert(Item::Instance(instance_type.to_string()));
        if spot {
            self.spot
                .insert((instance_type.to_string(), zone.to_string()));
        }
    }
}

/// The process's prices, by region.
#[derive(Default)]
pub struct Prices {
    /// By `(region, item)`.
    items: Mutex<HashMap<(String, Item), Kept>>,
    /// By `(instance type, zone)`.
    spot: Mutex<HashMap<(String, String), Kept>>,
}

/// A price AWS gave (`None`: it gave none) and when.
#[derive(Clone, Copy)]
struct Kept {
    value: Option<f64>,
    at: Instant,
}

impl Kept {
    fn fresh(&self, now: Instant, answered: bool) -> bool {
        let keep = if answered {
            ANSWERED_FOR
        } else {
            UNANSWERED_FOR
        };
        now.duration_since(self.at) < keep
    }
}

impl Prices {
    /// The book of `wanted` in `region`, asking AWS (through `c`, all at
    /// once) only for what is not kept. Never fails: what AWS does not
    /// answer is priced from the table, or left unpriced.
    pub async fn book(&self, c: &AwsClients, region: &str, wanted: &Wanted) -> PriceBook {
        let item_keys: Vec<(String, Item)> = wanted
            .items
            .iter()
            .map(|item| (region.to_string(), item.clone()))
            .collect();
        let spot_keys: Vec<(String, String)> = wanted.spot.iter().cloned().collect();
        let missing = stale(&self.items, &item_keys, true).await;
        let spot_missing = stale(&self.spot, &spot_keys, false).await;
        let items = join_all(missing.into_iter().map(|(region, item)| async move {
            let price = list_price(c, &region, &item).await;
            ((region, item), price)
        }));
        let spots = join_all(spot_missing.into_iter().map(|(t, zone)| async move {
            let price = spot_price(c, &t, &zone).await;
            ((t, zone), price)
        }));
        let (items, spots) = futures::join!(items, spots);
        let items = keep_and_read(&self.items, items, item_keys).await;
        PriceBook {
            items: items.into_iter().map(|((_, item), p)| (item, p)).collect(),
            spot: keep_and_read(&self.spot, spots, spot_keys)
                .await
                .into_iter()
                .collect(),
        }
    }
}

/// Which of `keys` `kept` holds no fresh price for (a price AWS gave is
/// kept longer when `answers_last` says so).
async fn stale<K: Eq + Hash + Clone>(
    kept: &Mutex<HashMap<K, Kept>>,
    keys: &[K],
    answers_last: bool,
) -> Vec<K> {
    let now = Instant::now();
    let kept = kept.lock().await;
    keys.iter()
        .filter(|key| {
            kept.get(*key)
                .is_none_or(|k| !k.fresh(now, answers_last && k.value.is_some()))
        })
        .cloned()
        .collect()
}

/// What one lookup came to: AWS's answer (a price, or none listed),
/// kept for every caller; or `Failed` for this caller (denied,
/// unreachable), kept for nobody.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    Answered(Option<f64>),
    Failed,
}

/// Keeps `answers` AWS gave in `kept`, then reads what it holds of `keys`.
async fn keep_and_read<K: Eq + Hash + Clone>(
    kept: &Mutex<HashMap<K, Kept>>,
    answers: Vec<(K, Answer)>,
    keys: Vec<K>,
) -> Vec<(K, Price)> {
    let at = Instant::now();
    let mut kept = kept.lock().await;
    for (key, answer) in answers {
        if let Answer::Answered(value) = answer {
            kept.insert(key, Kept { value, at });
        }
    }
    keys.into_iter()
        .filter_map(|key| {
            let usd = kept.get(&key)?.value?;
            let source = Source::Aws;
            Some((key, Price { usd, source }))
        })
        .collect()
}

/// EC2's latest spot price of `instance_type` in `zone` (none when it
/// quotes none), or `Failed` (the reason logged).
async fn spot_price(c: &AwsClients, instance_type: &str, zone: &str) -> Answer {
    match pricing::spot_price(c, instance_type, zone).await {
        Ok(p) => Answer::Answered(p.and_then(|p| p.parse::<f64>().ok()).filter(|p| *p > 0.0)),
        Err(e) => {
            tracing::debug!(instance_type, zone, error = %e, "no spot price; the on-demand price stands in");
            Answer::Failed
        }
    }
}

/// The Price List API's price of `item` in `region` (none when it lists
/// none), or `Failed` (the reason logged).
async fn list_price(c: &AwsClients, region: &str, item: &Item) -> Answer {
    let query = Query::of(item, region);
    match pricing::products(c, query.service, &query.attributes()).await {
        Ok(documents) => {
            let price = query.price_in(&documents);
            if price.is_none() {
                tracing::debug!(
                    ?item,
                    region,
                    "the Price List API lists no price; the built-in table's stands in"
                );
            }
            Answer::Answered(price)
        }
        Err(e) => {
            tracing::debug!(?item, region, error = %e, "no list price; the built-in table's stands in");
            Answer::Failed
        }
    }
}

/// One Price List API query: the service, the attributes to match, and
/// which of the answer's products and units is the price.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Query {
    service: &'static str,
    attributes: Vec<(&'static str, String)>,
    /// The `usagetype` (after its region prefix, as in `USE1-`) starts with it.
    usage: String,
    /// `Hrs` or `GB-Mo`.
    unit: &'static str,
}

impl Query {
    fn of(item: &Item, region: &str) -> Self {
        let region = ("regionCode", region.to_string());
        match item {
            Item::Instance(t) => Query {
                service: "AmazonEC2",
                attributes: vec![
                    region,
                    ("instanceType", t.clone()),
                    ("operatingSystem", "Linux".into()),
                    ("tenancy", "Shared".into()),
                    ("preInstalledSw", "NA".into()),
                    ("capacitystatus", "Used".into()),
                ],
                usage: format!("BoxUsage:{t}"),
                unit: "Hrs",
            },
            Item::NatGateway => Query {
                service: "AmazonEC2",
                attributes: vec![region, ("productFamily", "NAT Gateway".into())],
                usage: "NatGateway-Hours".into(),
                unit: "Hrs",
            },
            Item::PublicIpv4 => Query {
                service: "AmazonVPC",
                attributes: vec![region, ("productFamily", "VPC Public IPv4 Address".into())],
                usage: "PublicIPv4:InUseAddress".into(),
                unit: "Hrs",
            },
            Item::InterfaceEndpoint => Query {
                service: "AmazonVPC",
                attributes: vec![region, ("productFamily", "VpcEndpoint".into())],
                usage: "VpcEndpoint-Hours".into(),
                unit: "Hrs",
            },
            Item::Volume(v) => Query {
                service: "AmazonEC2",
                attributes: vec![
                    region,
                    ("productFamily", "Storage".into()),
                    ("volumeApiName", v.clone()),
                ],
                usage: "EBS:VolumeUsage".into(),
                unit: "GB-Mo",
            },
        }
    }

    fn attributes(&self) -> Vec<(&str, &str)> {
        self.attributes
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect()
    }

    /// The on-demand price in USD of the first product the query means.
    fn price_in(&self, documents: &[String]) -> Option<f64> {
        documents.iter().find_map(|d| {
            let doc: serde_json::Value = serde_json::from_str(d).ok()?;
            let usage = doc.pointer("/product/attributes/usagetype")?.as_str()?;
            // `USE1-NatGateway-Hours`, `BoxUsage:m5.large` (us-east-1's
            // have no prefix), `EUW1-EBS:VolumeUsage.gp3`.
            let unprefixed = match usage.split_once('-') {
                Some((prefix, rest)) if prefix.len() <= 6 && !prefix.contains(':') => rest,
                _ => usage,
            };
            if !unprefixed.starts_with(&self.usage) {
                return None;
            }
            let offers = doc.pointer("/terms/OnDemand")?.as_object()?;
            offers.values().find_map(|offer| {
                let dimensions = offer.get("priceDimensions")?.as_object()?;
                dimensions.values().find_map(|dim| {
                    (dim.get("unit")?.as_str()? == self.unit).then_some(())?;
                    let usd = dim.pointer("/pricePerUnit/USD")?.as_str()?;
                    usd.parse::<f64>().ok().filter(|p| *p > 0.0)
                })
            })
        })
    }
}

/// us-east-1's list prices (on-demand, Linux) of what clusters use most:
/// what stands in when the API gives none, in any region.
fn table(item: &Item) -> Option<Price> {
    const INSTANCES: &[(&str, f64)] = &[
        ("t3.micro", 0.0104),
        ("t3.small", 0.0208),
        ("t3.medium", 0.0416),
        ("t3.large", 0.0832),
        ("t3.xlarge", 0.1664),
        ("t3.2xlarge", 0.3328),
        ("m5.large", 0.096),
        ("m5.xlarge", 0.192),
        ("m5.2xlarge", 0.384),
        ("m6i.large", 0.096),
        ("m6i.xlarge", 0.192),
        ("m7i.large", 0.1008),
        ("c5.large", 0.085),
        ("c6i.large", 0.085),
        ("c6i.xlarge", 0.17),
        ("r6i.large", 0.126),
        ("g4dn.xlarge", 0.526),
        ("g5.xlarge", 1.006),
        ("g5.2xlarge", 1.212),
        ("g6.xlarge", 0.8048),
        ("p3.2xlarge", 3.06),
        ("p4d.24xlarge", 32.7726),
        ("p5.48xlarge", 98.32),
    ];
    const VOLUMES: &[(&str, f64)] = &[
        ("gp3", 0.08),
        ("gp2", 0.10),
        ("io1", 0.125),
        ("io2", 0.125),
        ("st1", 0.045),
        ("sc1", 0.015),
        ("standard", 0.05),
    ];
    let usd = match item {
        Item::Instance(t) => INSTANCES.iter().find(|(n, _)| n == t)?.1,
        Item::NatGateway => 0.045,
        Item::PublicIpv4 => 0.005,
        Item::InterfaceEndpoint => 0.01,
        Item::Volume(v) => VOLUMES.iter().find(|(n, _)| n == v)?.1,
    };
    Some(Price {
        usd,
        source: Source::Table,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(usage: &str, unit: &str, usd: &str) -> String {
        serde_json::json!({
            "product": {"productFamily": "x", "attributes": {"usagetype": usage}},
            "terms": {"OnDemand": {"A.B": {"priceDimensions": {"A.B.C": {
                "unit": unit, "pricePerUnit": {"USD": usd}
            }}}}},
        })
        .to_string()
    }

    #[test]
    fn a_price_list_answer_gives_the_price_of_the_usage_and_unit_asked_for() {
        let nat = Query::of(&Item::NatGateway, "eu-west-1");
        let docs = [
            document("EUW1-NatGateway-Bytes", "GB", "0.048"),
            document("EUW1-NatGateway-Hours", "Hrs", "0.048"),
        ];
        assert_eq!(nat.price_in(&docs), Some(0.048));
        let m5 = Query::of(&Item::Instance("m5.large".into()), "us-east-1");
        let docs = [
            document("BoxUsage:m5.large", "Hrs", "0.0960000000"),
            document("UnusedBox:m5.large", "Hrs", "0.096"),
        ];
        assert_eq!(m5.price_in(&docs), Some(0.096));
        let gp3 = Query::of(&Item::Volume("gp3".into()), "eu-west-1");
        assert_eq!(
            gp3.price_in(&[document("EUW1-EBS:VolumeUsage.gp3", "GB-Mo", "0.088")]),
            Some(0.088)
        );
        // Another unit, a free product, another usage or no JSON: no price.
        assert_eq!(
            nat.price_in(&[document("EUW1-NatGateway-Hours", "GB", "0.048")]),
            None
        );
        assert_eq!(
            nat.price_in(&[document("EUW1-NatGateway-Hours", "Hrs", "0.0000000000")]),
            None
        );
        assert_eq!(
            m5.price_in(&[document("BoxUsage:m5.xlarge", "Hrs", "0.192")]),
            None
        );
        assert_eq!(m5.price_in(&["not json".into()]), None);
    }

    #[test]
    fn the_table_stands_in_where_the_book_has_none_and_spot_falls_back_to_on_demand() {
        let aws = |usd| Price {
            usd,
            source: Source::Aws,
        };
        let book = PriceBook::with([(Item::NatGateway, aws(0.052))]).with_spot(
            "m5.large",
            "eu-west-1a",
            aws(0.03),
        );
        assert_eq!(book.price(&Item::NatGateway), Some(aws(0.052)));
        let table = book.price(&Item::PublicIpv4);
        assert_eq!(table.map(|p| p.source), Some(Source::Table));
        assert_eq!(book.spot("m5.large", "eu-west-1a"), Some(aws(0.03)));
        // No quote in that zone: the on-demand price, from the table here.
        let other = book.spot("m5.large", "eu-west-1b");
        assert_eq!(
            other,
            Some(Price {
                usd: 0.096,
                source: Source::Table
            })
        );
        assert_eq!(book.price(&Item::Instance("x9.unknown".into())), None);
        assert_eq!(book.spot("x9.unknown", "eu-west-1a"), None);
    }

    #[tokio::test]
    async fn one_callers_failed_lookup_is_kept_for_nobody_what_aws_answered_for_everyone() {
        let kept: Mutex<HashMap<&str, Kept>> = Mutex::default();
        // Tenant X: t3 priced, "old" not listed, "denied" refused to X.
        let answers = vec![
            ("t3", Answer::Answered(Some(0.1))),
            ("old", Answer::Answered(None)),
            ("denied", Answer::Failed),
        ];
        let read = keep_and_read(&kept, answers, vec!["t3", "old", "denied"]).await;
        assert_eq!(read.len(), 1, "only t3 has a price: {read:?}");
        // Tenant Y asks after: what AWS answered is kept (not asked
        // again), X's failure is not (Y asks for itself).
        let keys = ["t3", "old", "denied"];
        let stale_for_y = stale(&kept, &keys, true).await;
        assert_eq!(stale_for_y, vec!["denied"]);
        let read = keep_and_read(
            &kept,
            vec![("denied", Answer::Answered(Some(0.2)))],
            keys.to_vec(),
        )
        .await;
        let priced: Vec<&str> = read.iter().map(|(k, _)| *k).collect();
        assert_eq!(priced, vec!["t3", "denied"], "Y's own answer priced it");
    }
}
