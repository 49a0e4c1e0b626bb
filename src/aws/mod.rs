//! The only module that talks to AWS: thin SDK calls, one file per kind of
//! resource, plus the ownership tags, client tokens and error classes. Each
//! describes by ownership tag, creates with the tags attached atomically,
//! and deletes only what carries them. It depends on nothing else in the
//! crate: what to do with the calls is decided in `cluster::kinds`.

/// Every item a tag-filtered describe pages through, with the cluster it
/// belongs to (`$scope.owner_of` its tags; items of no cluster in scope are
/// skipped): `$request` is the call with its filters, `$items` names a
/// page's list, and `$observe` makes what the operator acts on of one item
/// `$it` (it may use `?`; `where` keeps only the items it holds for). A
/// page's error returns from the calling function. The one shape of every
/// kind's `describe`.
macro_rules! owned_items {
    ($scope:expr, $op:expr, $request:expr, $items:ident, |$it:ident| $observe:expr) => {
        owned_items!($scope, $op, $request, $items, |$it| where true => $observe)
    };
    ($scope:expr, $op:expr, $request:expr, $items:ident, |$it:ident| where $keep:expr => $observe:expr) => {{
        let mut out = Vec::new();
        let mut pages = $request.into_paginator().send();
        while let Some(page) = pages.next().await {
            for $it in page.op($op)?.$items() {
                let Some(uid) = $scope.owner_of($it.tags()) else {
                    continue;
                };
                if $keep {
                    out.push((uid, $observe));
                }
            }
        }
        out
    }};
}

pub mod admin;
pub mod config;
pub mod created;
pub mod dependents;
pub mod endpoint;
pub mod error;
pub mod instance_profile;
pub mod instances;
pub mod internet_gateway;
pub mod interruption_queue;
pub mod inventory;
pub mod key_pair;
pub mod kms_key;
pub mod log_group;
pub mod nat_gateway;
pub mod pacing;
pub mod peering;
pub mod pricing;
pub mod quotas;
pub mod route_table;
pub mod security_group;
pub mod settling;
pub mod sts;
pub mod subnet;
pub mod tags;
pub mod token;
pub mod vpc;

use aws_config::{Region, SdkConfig};

pub use error::{required, AwsError, AwsResult, ErrorClass, NotFoundExt, SdkResultExt};
pub use tags::OwnershipTags;

use aws_smithy_runtime_api::client::interceptors::Intercept;

/// Where the Price List API answers for every commercial region.
const PRICE_LIST_REGION: &str = "us-east-1";

/// The clients of every AWS service the operator calls, acting as one
/// account in one region.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub ec2: aws_sdk_ec2::Client,
    pub iam: aws_sdk_iam::Client,
    pub quotas: aws_sdk_servicequotas::Client,
    /// The Price List API, served from us-east-1 for every region.
    pub pricing: aws_sdk_pricing::Client,
    /// The interruption queue and the rules that feed it.
    pub sqs: aws_sdk_sqs::Client,
    pub events: aws_sdk_eventbridge::Client,
    /// Each cluster's log group.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub kms: aws_sdk_kms::Client,
}

impl AwsClients {
    /// `observer` sees every call of both clients (the operator counts them).
    pub fn new(
        config: &SdkConfig,
        region: &str,
        observer: impl Intercept + Clone + 'static,
    ) -> Self {
        let ec2 = aws_sdk_ec2::config::Builder::from(config)
            .region(Region::new(region.to_string()))
            .interceptor(observer.clone())
            .build();
        let iam = aws_sdk_iam::config::Builder::from(config)
            .interceptor(observer.clone())
            .build();
        let quotas = aws_sdk_servicequotas::config::Builder::from(config)
            .region(Region::new(region.to_string()))
            .interceptor(observer.clone())
            .build();
        let pricing = aws_sdk_pricing::config::Builder::from(config)
            .region(Region::new(PRICE_LIST_REGION))
            .interceptor(observer.clone())
            .build();
        let sqs = aws_sdk_sqs::config::Builder::from(config)
            .region(Region::new(region.to_string()))
            .interceptor(observer.clone())
            .build();
        let events = aws_sdk_eventbridge::config::Builder::from(config)
            .region(Region::new(region.to_string()))
            .interceptor(observer.clone())
            .build();
        let logs = aws_sdk_cloudwatchlogs::config::Builder::from(config)
            .region(Region::new(region.to_string()))
            .interceptor(observer.clone())
            .build();
        let kms = aws_sdk_kms::config::Builder::from(config)
            .region(Region::new(region.to_string()))
            .interceptor(observer)
            .build();
        AwsClients {
            ec2: aws_sdk_ec2::Client::from_conf(ec2),
            iam: aws_sdk_iam::Client::from_conf(iam),
            quotas: aws_sdk_servicequotas::Client::from_conf(quotas),
            pricing: aws_sdk_pricing::Client::from_conf(pricing),
            sqs: aws_sdk_sqs::Client::from_conf(sqs),
            events: aws_sdk_eventbridge::Client::from_conf(events),
            logs: aws_sdk_cloudwatchlogs::Client::from_conf(logs),
            kms: aws_sdk_kms::Client::from_conf(kms),
        }
    }

    /// The same clients, EC2's also seen by `interceptor`.
    pub fn with_ec2_interceptor(self, interceptor: impl Intercept + 'static) -> Self {
        let ec2 = self
            .ec2
            .config()
            .to_builder()
            .interceptor(interceptor)
            .build();
        AwsClients {
            ec2: aws_sdk_ec2::Client::from_conf(ec2),
            ..self
        }
    }
}
