//! Events as AWS's services emit them onto an account's default EventBridge
//! bus, for the interruption suite: EC2's spot and Capacity Reservation
//! warnings, its rebalance recommendation and state changes, and AWS
//! Health's scheduled maintenance, each in the shape AWS's documentation
//! gives. moto delivers them to the SQS targets of the rules they match,
//! as AWS does only where the queue's policy lets EventBridge send
//! (`testground/moto_server.py`, `_delivers`).

use std::time::Duration;

use anyhow::{bail, Result};
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

use crate::{http_exchange, Moto};

/// How long AWS gives a spot instance after its interruption warning.
pub const SPOT_WARNING: Duration = Duration::from_secs(120);

/// One kind of event the operator's rules listen for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Emitted {
    /// `EC2 Spot Instance Interruption Warning`.
    SpotWarning,
    /// `EC2 Capacity Reservation Instance Interruption Warning`, the
    /// instance ended `in` from now.
    CapacityReservation { within: Duration },
    /// `EC2 Instance Rebalance Recommendation`.
    Rebalance,
    /// `EC2 Instance State-change Notification` to `state`.
    State(String),
    /// `AWS Health Event`, an EC2 instance's scheduled retirement `within`
    /// from now.
    Maintenance { within: Duration },
}

/// An event as it goes onto the bus: its source, detail type, detail and
/// resources, at `time`.
#[derive(Clone, Debug)]
pub struct Event {
    pub source: &'static str,
    pub detail_type: &'static str,
    pub detail: Value,
    pub resources: Vec<String>,
    pub time: Timestamp,
}

impl Emitted {
    /// This kind of event for `instance` in `account` and `region`, emitted
    /// at `now`.
    pub fn event(&self, account: &str, region: &str, instance: &str, now: Timestamp) -> Event {
        let arn = format!("arn:aws:ec2:{region}:{account}:instance/{instance}");
        let later = |d: &Duration| {
            now.checked_add(SignedDuration::try_from(*d).unwrap_or_default())
                .unwrap_or(now)
        };
        let ec2 = |detail_type, detail| Event {
            source: "aws.ec2",
            detail_type,
            detail,
            resources: vec![arn.clone()],
            time: now,
        };
        match self {
            Emitted::SpotWarning => ec2(
                "EC2 Spot Instance Interruption Warning",
                json!({"instance-id": instance, "instance-action": "terminate"}),
            ),
            Emitted::CapacityReservation { within } => ec2(
                "EC2 Capacity Reservation Instance Interruption Warning",
                json!({"instance-id": instance, "instance-action": "terminate",
                       "instance-termination-time": later(within).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}),
            ),
            Emitted::Rebalance => ec2(
                "EC2 Instance Rebalance Recommendation",
                json!({"instance-id": instance}),
            ),
            Emitted::State(state) => ec2(
                "EC2 Instance State-change Notification",
                json!({"instance-id": instance, "state": state}),
            ),
            Emitted::Maintenance { within } => Event {
                source: "aws.health",
                detail_type: "AWS Health Event",
                detail: json!({
                    "eventArn": format!("arn:aws:health:{region}::event/EC2/AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED/{instance}"),
                    "service": "EC2",
                    "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
                    "eventTypeCategory": "scheduledChange",
                    "startTime": later(within).strftime("%a, %d %b %Y %H:%M:%S GMT").to_string(),
                    "eventDescription": [{"language": "en_US", "latestDescription": "The instance is scheduled for retirement."}],
                    "affectedEntities": [{"entityValue": instance}],
                }),
                resources: vec![instance.to_string()],
                time: now,
            },
        }
    }
}

impl Moto {
    /// Puts `event` on `account`'s default bus in `region`, as the AWS
    /// service named by its source does.
    pub fn emit(&self, account: &str, region: &str, event: &Event) -> Result<()> {
        let body = json!({
            "account": account, "region": region, "source": event.source,
            "detailType": event.detail_type, "detail": event.detail,
            "resources": event.resources, "time": event.time.as_second(),
        });
        let (status, text) = http_exchange(
            self.port(),
            "POST",
            "/moto-api/byoc/event",
            &body.to_string(),
        )?;
        if status != 200 {
            bail!("moto's event answered HTTP {status}: {text}");
        }
        Ok(())
    }

    /// Ends `instance` as EC2 does when it takes capacity back.
    pub fn reclaim(&self, account: &str, region: &str, instance: &str) -> Result<()> {
        reclaim(self.port(), account, region, instance)
    }

    /// A spot interruption as AWS carries it out: the warning now, the
    /// instance ended `after` it (AWS: [`SPOT_WARNING`]; a test may scale
    /// it as the realism profile scales AWS's times). The reclaim happens
    /// on a thread of its own, whatever the operator did meanwhile.
    pub fn interrupt_spot(
        &self,
        account: &str,
        region: &str,
        instance: &str,
        after: Duration,
    ) -> Result<()> {
        let event = Emitted::SpotWarning.event(account, region, instance, Timestamp::now());
        self.emit(account, region, &event)?;
        let (port, account, region, instance) = (
            self.port(),
            account.to_string(),
            region.to_string(),
            instance.to_string(),
        );
        std::thread::Builder::new()
            .name("spot-reclaim".into())
            .spawn(move || {
                // AWS's own timing, not a test's synchronisation.
                std::thread::sleep(after);
                if let Err(e) = reclaim(port, &account, &region, &instance) {
                    eprintln!("the ground could not reclaim {instance}: {e:#}");
                }
            })?;
        Ok(())
    }
}

fn reclaim(port: u16, account: &str, region: &str, instance: &str) -> Result<()> {
    let body = json!({"account": account, "region": region, "instance": instance});
    let (status, text) = http_exchange(port, "POST", "/moto-api/byoc/reclaim", &body.to_string())?;
    if status != 200 {
        bail!("moto's reclaim answered HTTP {status}: {text}");
    }
    Ok(())
}

/// Whether the rules named `rule_prefix*` number `rules`, each with a
/// target, and the queue `queue_prefix*` exists: EventBridge delivers
/// nothing before that, as on AWS.
pub async fn delivering(
    config: &aws_config::SdkConfig,
    queue_prefix: &str,
    rule_prefix: &str,
    rules: usize,
) -> Result<bool> {
    let events = aws_sdk_eventbridge::Client::new(config);
    let queues = aws_sdk_sqs::Client::new(config)
        .list_queues()
        .queue_name_prefix(queue_prefix)
        .send()
        .await?;
    let listed = events.list_rules().name_prefix(rule_prefix).send().await?;
    let mut targeted = 0;
    for r in listed.rules() {
        let t = events
            .list_targets_by_rule()
            .rule(r.name().unwrap_or_default())
            .send()
            .await?;
        targeted += usize::from(!t.targets().is_empty());
    }
    Ok(!queues.queue_urls().is_empty() && targeted == rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_names_its_instance_as_aws_does() {
        let now: Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        let two = Duration::from_secs(120);
        let rows = [
            (Emitted::SpotWarning, "aws.ec2", "instance-id"),
            (
                Emitted::CapacityReservation { within: two },
                "aws.ec2",
                "instance-termination-time",
            ),
            (Emitted::Rebalance, "aws.ec2", "instance-id"),
            (Emitted::State("stopped".into()), "aws.ec2", "state"),
            (
                Emitted::Maintenance { within: two },
                "aws.health",
                "startTime",
            ),
        ];
        for (kind, source, field) in rows {
            let e = kind.event("123456789012", "us-east-1", "i-0abc", now);
            assert_eq!(e.source, source, "{kind:?}");
            assert!(e.detail.get(field).is_some(), "{kind:?}: {}", e.detail);
            assert!(
                e.resources.iter().any(|r| r.ends_with("i-0abc")),
                "{kind:?}"
            );
        }
        let r = Emitted::CapacityReservation { within: two }.event("1", "r", "i-0abc", now);
        assert_eq!(
            r.detail["instance-termination-time"],
            "2026-12-07T10:02:00Z"
        );
        let m = Emitted::Maintenance { within: two }.event("1", "r", "i-0abc", now);
        assert_eq!(m.detail["startTime"], "Mon, 07 Dec 2026 10:02:00 GMT");
    }
}
