//! List prices: the AWS Price List API's products, and EC2's spot price
//! history. Prices are public, the same for every account: nothing here is
//! tagged or owned.

use aws_sdk_ec2::primitives::DateTime;
use aws_sdk_ec2::types::InstanceType;
use aws_sdk_pricing::types::{Filter, FilterType};

use super::{AwsClients, AwsError, AwsResult, SdkResultExt};

/// The Price List API's products of `service` (`AmazonEC2`, `AmazonVPC`)
/// whose attributes equal each of `attributes`, as the API gives them: one
/// JSON document per product (its attributes and its terms).
pub async fn products(
    c: &AwsClients,
    service: &str,
    attributes: &[(&str, &str)],
) -> AwsResult<Vec<String>> {
    let filters = attributes
        .iter()
        .map(|(field, value)| {
            Filter::builder()
                .r#type(FilterType::TermMatch)
                .field(*field)
                .value(*value)
                .build()
                .map_err(|e| AwsError::Transport {
                    operation: "pricing:GetProducts",
                    source: Box::new(e),
                })
        })
        .collect::<AwsResult<Vec<_>>>()?;
    let mut pages = c
        .pricing
        .get_products()
        .service_code(service)
        .set_filters(Some(filters))
        .format_version("aws_v1")
        .max_results(100)
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.op("pricing:GetProducts")?;
        out.extend(page.price_list().iter().cloned());
    }
    Ok(out)
}

/// The latest spot price per hour of Linux `instance_type` in `zone`, as
/// EC2 quotes it (a decimal string); `None` when EC2 quotes none.
pub async fn spot_price(
    c: &AwsClients,
    instance_type: &str,
    zone: &str,
) -> AwsResult<Option<String>> {
    let out = c
        .ec2
        .describe_spot_price_history()
        .instance_types(InstanceType::from(instance_type))
        .availability_zone(zone)
        .product_descriptions("Linux/UNIX")
        .start_time(DateTime::from(std::time::SystemTime::now()))
        .send()
        .await
        .op("ec2:DescribeSpotPriceHistory")?;
    let latest = out
        .spot_price_history()
        .iter()
        .filter(|p| p.availability_zone() == Some(zone))
        .max_by_key(|p| p.timestamp().map(|t| (t.secs(), t.subsec_nanos())));
    Ok(latest.and_then(|p| p.spot_price()).map(str::to_string))
}
