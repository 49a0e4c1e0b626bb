//! The ground's list prices (`testground/prices.json`): served by the proxy
//! as the AWS Price List API's `GetProducts` (moto has no pricing service)
//! and as EC2's `DescribeSpotPriceHistory` (moto quotes one constant for
//! everything), in AWS's own formats; read by tests to work out what a
//! cluster should cost.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::realism::param;

const FIXTURE: &str = include_str!("../prices.json");

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fixture {
    pub regions: BTreeMap<String, RegionPrices>,
    /// Zone → instance type → USD per hour.
    pub spot: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionPrices {
    /// What the Price List API puts before a usage type in this region
    /// (`EUW1-`; none in us-east-1).
    pub usage_prefix: String,
    pub instances: BTreeMap<String, String>,
    pub nat_gateway_hour: String,
    pub nat_gateway_gb: String,
    pub public_ipv4_hour: String,
    pub interface_endpoint_hour: String,
    pub interface_endpoint_gb: String,
    pub volume_gb_month: BTreeMap<String, String>,
}

/// The fixture. Panics only if the committed file is broken (a test of
/// this module reads it).
pub fn fixture() -> Fixture {
    serde_json::from_str(FIXTURE).expect("testground/prices.json is valid")
}

fn usd(s: &str) -> f64 {
    s.parse().unwrap_or(f64::NAN)
}

impl Fixture {
    pub fn region(&self, region: &str) -> &RegionPrices {
        &self.regions[region]
    }

    /// The on-demand hourly price of `instance_type` in `region`.
    pub fn instance(&self, region: &str, instance_type: &str) -> f64 {
        usd(&self.region(region).instances[instance_type])
    }

    /// The spot price of `instance_type` in `zone`.
    pub fn spot(&self, zone: &str, instance_type: &str) -> f64 {
        usd(&self.spot[zone][instance_type])
    }

    pub fn nat_gateway(&self, region: &str) -> f64 {
        usd(&self.region(region).nat_gateway_hour)
    }

    pub fn public_ipv4(&self, region: &str) -> f64 {
        usd(&self.region(region).public_ipv4_hour)
    }

    pub fn interface_endpoint(&self, region: &str) -> f64 {
        usd(&self.region(region).interface_endpoint_hour)
    }

    /// USD per GB-month of `volume_type`.
    pub fn volume(&self, region: &str, volume_type: &str) -> f64 {
        usd(&self.region(region).volume_gb_month[volume_type])
    }

    /// Every product, as the Price List API's `aws_v1` documents.
    fn products(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for (region, p) in &self.regions {
            let mut add = |service, family, usage: &str, extra: Value, unit, price: &str| {
                let usage = format!("{}{usage}", p.usage_prefix);
                let place = (region.as_str(), service, family, usage.as_str());
                out.push(product(out.len(), place, extra, unit, price));
            };
            for (t, price) in &p.instances {
                for (status, usage) in [
                    ("Used", "BoxUsage"),
                    ("UnusedCapacityReservation", "UnusedBox"),
                ] {
                    let extra = json!({
                        "instanceType": t,
                        "operatingSystem": "Linux",
                        "tenancy": "Shared",
                        "preInstalledSw": "NA",
                        "capacitystatus": status,
                    });
                    let usage = format!("{usage}:{t}");
                    add("AmazonEC2", "Compute Instance", &usage, extra, "Hrs", price);
                }
            }
            for (service, family, usage, unit, price) in network_parts(p) {
                add(service, family, usage, json!({}), unit, price);
            }
            for (v, price) in &p.volume_gb_month {
                let usage = match v.as_str() {
                    "standard" => "EBS:VolumeUsage".to_string(),
                    v => format!("EBS:VolumeUsage.{v}"),
                };
                let extra = json!({"volumeApiName": v});
                add("AmazonEC2", "Storage", &usage, extra, "GB-Mo", price);
            }
        }
        out
    }

    /// The answer to a `GetProducts` request body: the products of its
    /// service whose attributes equal every `TERM_MATCH` filter (case
    /// aside), each as a JSON string, as the API sends them.
    pub fn get_products(&self, body: &[u8]) -> (&'static str, String) {
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            let error = json!({"__type": "InvalidParameterException", "Message": "bad request"});
            return ("400 Bad Request", error.to_string());
        };
        let service = request["ServiceCode"].as_str().unwrap_or_default();
        let filters: Vec<(&str, &str)> = request["Filters"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter_map(|f| Some((f["Field"].as_str()?, f["Value"].as_str()?)))
                    .collect()
            })
            .unwrap_or_default();
        let matching: Vec<String> = self
            .products()
            .into_iter()
            .filter(|p| p["serviceCode"] == service)
            .filter(|p| {
                filters.iter().all(|(field, value)| {
                    let attribute = match *field {
                        "productFamily" => &p["product"]["productFamily"],
                        f => &p["product"]["attributes"][f],
                    };
                    attribute
                        .as_str()
                        .is_some_and(|a| a.eq_ignore_ascii_case(value))
                })
            })
            .map(|p| p.to_string())
            .collect();
        let answer = json!({"FormatVersion": "aws_v1", "PriceList": matching});
        ("200 OK", answer.to_string())
    }

    /// The answer to a `DescribeSpotPriceHistory` query: the fixture's
    /// price of each asked instance type in the asked zone (every zone of
    /// the fixture when none is asked).
    pub fn spot_history(&self, body: &[u8]) -> String {
        let types: Vec<String> = (1..)
            .map_while(|n| param(body, &format!("InstanceType.{n}")))
            .collect();
        let zone = param(body, "AvailabilityZone");
        let mut items = String::new();
        for (z, prices) in &self.spot {
            if zone.as_ref().is_some_and(|asked| asked != z) {
                continue;
            }
            for (t, price) in prices {
                if !types.is_empty() && !types.contains(t) {
                    continue;
                }
                items.push_str(&format!(
                    "<item><instanceType>{t}</instanceType><productDescription>Linux/UNIX</productDescription><spotPrice>{price}</spotPrice><timestamp>2026-12-01T00:00:00.000Z</timestamp><availabilityZone>{z}</availabilityZone></item>"
                ));
            }
        }
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><DescribeSpotPriceHistoryResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>ground-prices</requestId><spotPriceHistorySet>{items}</spotPriceHistorySet><nextToken></nextToken></DescribeSpotPriceHistoryResponse>")
    }
}

/// The `n`-th product of the fixture, as the Price List API's `aws_v1`
/// document: `(region, service, product family, usage type)`, more
/// attributes, and its one on-demand price per `unit`.
fn product(
    n: usize,
    (region, service, family, usage): (&str, &str, &str, &str),
    extra: Value,
    unit: &str,
    price: &str,
) -> Value {
    let mut attributes = json!({"servicecode": service, "regionCode": region, "usagetype": usage});
    if let (Some(a), Some(e)) = (attributes.as_object_mut(), extra.as_object()) {
        a.extend(e.clone());
    }
    let sku = format!("{:016X}", n * 7919 + 104_729);
    let offer = format!("{sku}.JRTCKXETXF");
    json!({
        "product": {"sku": sku, "productFamily": family, "attributes": attributes},
        "serviceCode": service,
        "terms": {"OnDemand": {offer.clone(): {
            "offerTermCode": "JRTCKXETXF",
            "sku": sku,
            "priceDimensions": {format!("{offer}.6YS6EN2CT7"): {
                "unit": unit,
                "pricePerUnit": {"USD": price},
                "description": format!("{family} {unit}"),
            }},
        }}},
        "version": "20261201000000",
        "publicationDate": "2026-12-01T00:00:00Z",
    })
}

/// The network's parts as products of `p`: (service, family, usage, unit,
/// price).
fn network_parts(
    p: &RegionPrices,
) -> [(&'static str, &'static str, &'static str, &'static str, &str); 6] {
    let (nat, ipv4, endpoint) = ("NAT Gateway", "VPC Public IPv4 Address", "VpcEndpoint");
    [
        (
            "AmazonEC2",
            nat,
            "NatGateway-Hours",
            "Hrs",
            &p.nat_gateway_hour,
        ),
        (
            "AmazonEC2",
            nat,
            "NatGateway-Bytes",
            "GB",
            &p.nat_gateway_gb,
        ),
        (
            "AmazonVPC",
            ipv4,
            "PublicIPv4:InUseAddress",
            "Hrs",
            &p.public_ipv4_hour,
        ),
        (
            "AmazonVPC",
            ipv4,
            "PublicIPv4:IdleAddress",
            "Hrs",
            &p.public_ipv4_hour,
        ),
        (
            "AmazonVPC",
            endpoint,
            "VpcEndpoint-Hours",
            "Hrs",
            &p.interface_endpoint_hour,
        ),
        (
            "AmazonVPC",
            endpoint,
            "VpcEndpoint-Bytes",
            "GB",
            &p.interface_endpoint_gb,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_products_matches_the_service_and_every_filter() {
        let f = fixture();
        let ask = |body: Value| {
            let (_, answer) = f.get_products(body.to_string().as_bytes());
            let answer: Value = serde_json::from_str(&answer).unwrap_or_default();
            answer["PriceList"].as_array().cloned().unwrap_or_default()
        };
        let filter = |field: &str, value: &str| json!({"Type": "TERM_MATCH", "Field": field, "Value": value});
        let m5 = ask(json!({"ServiceCode": "AmazonEC2", "Filters": [
            filter("regionCode", "eu-west-1"), filter("instanceType", "m5.large"),
            filter("capacitystatus", "Used")]}));
        assert_eq!(m5.len(), 1);
        let doc: Value =
            serde_json::from_str(m5[0].as_str().unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            doc["product"]["attributes"]["usagetype"],
            "EUW1-BoxUsage:m5.large"
        );
        let nat = ask(json!({"ServiceCode": "AmazonEC2", "Filters": [
            filter("regionCode", "us-east-1"), filter("productFamily", "NAT Gateway")]}));
        assert_eq!(nat.len(), 2, "hours and bytes");
        let wrong_service = ask(json!({"ServiceCode": "AmazonVPC", "Filters": [
            filter("regionCode", "us-east-1"), filter("productFamily", "NAT Gateway")]}));
        assert!(wrong_service.is_empty());
    }

    #[test]
    fn spot_history_answers_the_asked_types_in_the_asked_zone() {
        let f = fixture();
        let body =
            b"Action=DescribeSpotPriceHistory&InstanceType.1=g5.xlarge&AvailabilityZone=us-east-1b";
        let xml = f.spot_history(body);
        assert_eq!(
            crate::realism::element_values(&xml, "spotPrice"),
            ["0.4466"]
        );
        assert_eq!(f.spot("us-east-1b", "g5.xlarge"), 0.4466);
    }
}
