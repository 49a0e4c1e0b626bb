//! What a message of the interruption queue says: an EventBridge event, as
//! AWS delivers it to an SQS target (the event's JSON is the message body),
//! read into a notice about instances. Pure: no AWS, no Kubernetes; the
//! listener decides what to do with a notice.
//!
//! The shapes are AWS's own (EC2 User Guide: "Spot Instance interruption
//! notices", "EC2 instance rebalance recommendations", "Instance state
//! change events", "Monitor interruptible Capacity Reservations"; AWS
//! Health User Guide: "Monitoring AWS Health events with EventBridge").

use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::Value;

/// How long AWS gives a spot instance after its interruption warning.
pub const SPOT_NOTICE: SignedDuration = SignedDuration::from_secs(120);

/// The events the queue's rules match, one rule per row: the rule's
/// label (in its name), the event's `source` and `detail-type`.
pub const MATCHED: [(&str, &str, &str); 5] = [
    ("spot", "aws.ec2", SPOT_WARNING),
    ("rebalance", "aws.ec2", REBALANCE),
    ("state", "aws.ec2", STATE_CHANGE),
    ("health", "aws.health", HEALTH),
    ("reservation", "aws.ec2", RESERVATION_WARNING),
];

const SPOT_WARNING: &str = "EC2 Spot Instance Interruption Warning";
const REBALANCE: &str = "EC2 Instance Rebalance Recommendation";
const STATE_CHANGE: &str = "EC2 Instance State-change Notification";
const HEALTH: &str = "AWS Health Event";
const RESERVATION_WARNING: &str = "EC2 Capacity Reservation Instance Interruption Warning";

/// Why AWS takes an instance back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reclaim {
    /// A spot interruption warning: two minutes.
    Spot,
    /// An interruptible Capacity Reservation's instance.
    CapacityReservation,
    /// Scheduled maintenance (an AWS Health scheduled change for EC2).
    Maintenance,
}

/// What a message says of instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// AWS takes these instances back, at `at` where it says when.
    Reclaimed {
        why: Reclaim,
        instances: Vec<String>,
        at: Option<Timestamp>,
    },
    /// AWS recommends moving off this spot instance.
    Rebalance { instance: String },
    /// The instance stopped or ended (`stopping`, `stopped`,
    /// `shutting-down`, `terminated`), by whoever did it.
    Gone { instance: String, state: String },
}

/// A message read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    Notice(Notice),
    /// A well-formed event that asks nothing of the operator (an instance
    /// `pending` or `running`, a Health event of another service or
    /// category).
    Nothing,
    /// Not an event of the rules' kinds, or missing what its kind carries:
    /// counted and deleted, never retried.
    Malformed {
        why: String,
    },
}

impl Read {
    /// The label its metrics count it under.
    pub fn kind(&self) -> &'static str {
        match self {
            Read::Notice(Notice::Reclaimed { why, .. }) => match why {
                Reclaim::Spot => "spot-interruption",
                Reclaim::CapacityReservation => "capacity-reservation-interruption",
                Reclaim::Maintenance => "scheduled-maintenance",
            },
            Read::Notice(Notice::Rebalance { .. }) => "rebalance-recommendation",
            Read::Notice(Notice::Gone { .. }) => "state-change",
            Read::Nothing => "nothing-to-do",
            Read::Malformed { .. } => "malformed",
        }
    }
}

/// The envelope every EventBridge event has.
#[derive(Deserialize)]
struct Event {
    source: String,
    #[serde(rename = "detail-type")]
    detail_type: String,
    time: Option<String>,
    #[serde(default)]
    detail: Value,
}

/// Reads a message body.
pub fn read(body: &str) -> Read {
    let event: Event = match serde_json::from_str(body) {
        Ok(e) => e,
        Err(e) => {
            return Read::Malformed {
                why: format!("not an EventBridge event: {e}"),
            }
        }
    };
    match read_event(&event) {
        Ok(read) => read,
        Err(why) => Read::Malformed {
            why: format!("{} from {}: {why}", event.detail_type, event.source),
        },
    }
}

fn read_event(e: &Event) -> Result<Read, String> {
    let d = &e.detail;
    let notice = match (e.source.as_str(), e.detail_type.as_str()) {
        ("aws.ec2", SPOT_WARNING) => Notice::Reclaimed {
            why: Reclaim::Spot,
            instances: vec![instance_id(d)?],
            at: Some(
                timestamp(e.time.as_deref(), "time")?
                    .checked_add(SPOT_NOTICE)
                    .map_err(|e| format!("time: {e}"))?,
            ),
        },
        ("aws.ec2", RESERVATION_WARNING) => Notice::Reclaimed {
            why: Reclaim::CapacityReservation,
            instances: vec![instance_id(d)?],
            at: Some(timestamp(
                d["instance-termination-time"].as_str(),
                "detail.instance-termination-time",
            )?),
        },
        ("aws.ec2", REBALANCE) => Notice::Rebalance {
            instance: instance_id(d)?,
        },
        ("aws.ec2", STATE_CHANGE) => {
            let instance = instance_id(d)?;
            let state = d["state"].as_str().ok_or("no detail.state")?;
            match state {
                "stopping" | "stopped" | "shutting-down" | "terminated" => Notice::Gone {
                    instance,
                    state: state.to_string(),
                },
                "pending" | "running" => return Ok(Read::Nothing),
                other => return Err(format!("unknown instance state {other:?}")),
            }
        }
        ("aws.health", HEALTH) => {
            let service = d["service"].as_str().ok_or("no detail.service")?;
            let category = d["eventTypeCategory"]
                .as_str()
                .ok_or("no detail.eventTypeCategory")?;
            if service != "EC2" || category != "scheduledChange" {
                return Ok(Read::Nothing);
            }
            let entities = d["affectedEntities"]
                .as_array()
                .ok_or("no detail.affectedEntities")?;
            let instances: Vec<String> = entities
                .iter()
                .filter_map(|a| a["entityValue"].as_str())
                .filter(|v| is_instance_id(v))
                .map(str::to_string)
                .collect();
            if instances.is_empty() {
                return Ok(Read::Nothing);
            }
            let at = d["startTime"]
                .as_str()
                .and_then(|t| jiff::fmt::rfc2822::parse(t).ok())
                .map(|z| z.timestamp());
            Notice::Reclaimed {
                why: Reclaim::Maintenance,
                instances,
                at,
            }
        }
        _ => return Err("not a kind the queue's rules match".into()),
    };
    Ok(Read::Notice(notice))
}

fn instance_id(detail: &Value) -> Result<String, String> {
    let id = detail["instance-id"]
        .as_str()
        .ok_or("no detail.instance-id")?;
    match is_instance_id(id) {
        true => Ok(id.to_string()),
        false => Err(format!("detail.instance-id {id:?} is not an instance ID")),
    }
}

fn is_instance_id(id: &str) -> bool {
    id.strip_prefix("i-")
        .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

fn timestamp(t: Option<&str>, field: &str) -> Result<Timestamp, String> {
    let t = t.ok_or_else(|| format!("no {field}"))?;
    t.parse()
        .map_err(|e| format!("{field} {t:?} is not a time: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each kind as AWS documents it (IDs and accounts changed).
    const SPOT: &str = r#"{"version":"0","id":"12345678-1234-1234-1234-123456789012",
        "detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2",
        "account":"123456789012","time":"2026-12-07T10:00:00Z","region":"us-east-1",
        "resources":["arn:aws:ec2:us-east-1a:instance/i-1234567890abcdef0"],
        "detail":{"instance-id":"i-1234567890abcdef0","instance-action":"terminate"}}"#;
    const REBALANCE_EVENT: &str = r#"{"version":"0","id":"1","detail-type":"EC2 Instance Rebalance Recommendation",
        "source":"aws.ec2","account":"123456789012","time":"2026-12-07T10:00:00Z","region":"us-east-1",
        "resources":["arn:aws:ec2:us-east-1:123456789012:instance/i-1234567890abcdef0"],
        "detail":{"instance-id":"i-1234567890abcdef0"}}"#;
    const RESERVATION: &str = r#"{"version":"0","id":"1",
        "detail-type":"EC2 Capacity Reservation Instance Interruption Warning","source":"aws.ec2",
        "account":"123456789012","time":"2026-12-07T10:00:00Z",
        "resources":"arn:aws:ec2:us-east-1:123456789012:instance/i-0abc","region":"us-east-1",
        "detail":{"instance-id":"i-0abc","instance-action":"terminate",
                  "instance-termination-time":"2026-12-07T10:02:00Z","azId":"use1-az1"}}"#;
    const HEALTH_EVENT: &str = r#"{"version":"0","id":"1","detail-type":"AWS Health Event",
        "source":"aws.health","account":"123456789012","time":"2026-12-07T10:00:00Z",
        "region":"us-east-1","resources":["i-0abc"],
        "detail":{"eventArn":"arn:aws:health:us-east-1::event/EC2/AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED/x",
          "service":"EC2","eventTypeCode":"AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
          "eventTypeCategory":"scheduledChange","startTime":"Tue, 08 Dec 2026 15:10:09 GMT",
          "eventDescription":[{"language":"en_US","latestDescription":"retirement"}],
          "affectedEntities":[{"entityValue":"i-0abc"},{"entityValue":"i-0def"}]}}"#;

    fn state(s: &str) -> String {
        format!(
            r#"{{"version":"0","id":"1","detail-type":"EC2 Instance State-change Notification","source":"aws.ec2","account":"123456789012","time":"2026-12-07T10:00:00Z","region":"us-east-1","resources":["arn:aws:ec2:us-east-1:123456789012:instance/i-0abc"],"detail":{{"instance-id":"i-0abc","state":"{s}"}}}}"#
        )
    }

    fn at(t: &str) -> Option<Timestamp> {
        t.parse().ok()
    }

    #[test]
    fn each_kind_aws_sends_is_read_into_its_notice() {
        let rows: Vec<(String, Read, &str)> = vec![
            (
                SPOT.into(),
                Read::Notice(Notice::Reclaimed {
                    why: Reclaim::Spot,
                    instances: vec!["i-1234567890abcdef0".into()],
                    at: at("2026-12-07T10:02:00Z"),
                }),
                "spot-interruption",
            ),
            (
                RESERVATION.into(),
                Read::Notice(Notice::Reclaimed {
                    why: Reclaim::CapacityReservation,
                    instances: vec!["i-0abc".into()],
                    at: at("2026-12-07T10:02:00Z"),
                }),
                "capacity-reservation-interruption",
            ),
            (
                HEALTH_EVENT.into(),
                Read::Notice(Notice::Reclaimed {
                    why: Reclaim::Maintenance,
                    instances: vec!["i-0abc".into(), "i-0def".into()],
                    at: at("2026-12-08T15:10:09Z"),
                }),
                "scheduled-maintenance",
            ),
            (
                REBALANCE_EVENT.into(),
                Read::Notice(Notice::Rebalance {
                    instance: "i-1234567890abcdef0".into(),
                }),
                "rebalance-recommendation",
            ),
            (
                state("terminated"),
                Read::Notice(Notice::Gone {
                    instance: "i-0abc".into(),
                    state: "terminated".into(),
                }),
                "state-change",
            ),
            (
                state("stopping"),
                Read::Notice(Notice::Gone {
                    instance: "i-0abc".into(),
                    state: "stopping".into(),
                }),
                "state-change",
            ),
            (state("running"), Read::Nothing, "nothing-to-do"),
            (state("pending"), Read::Nothing, "nothing-to-do"),
            (
                HEALTH_EVENT.replace("scheduledChange", "accountNotification"),
                Read::Nothing,
                "nothing-to-do",
            ),
            (
                HEALTH_EVENT.replace("\"EC2\"", "\"RDS\""),
                Read::Nothing,
                "nothing-to-do",
            ),
        ];
        for (body, want, kind) in rows {
            let got = read(&body);
            assert_eq!(got, want, "{body}");
            assert_eq!(got.kind(), kind, "{body}");
        }
    }

    #[test]
    fn what_is_not_an_event_of_the_rules_kinds_is_malformed_with_why() {
        let rows = [
            ("", "not an EventBridge event"),
            ("{\"hello\": 1}", "not an EventBridge event"),
            ("[1,2]", "not an EventBridge event"),
            (
                r#"{"source":"aws.s3","detail-type":"Object Created","detail":{}}"#,
                "not a kind the queue's rules match",
            ),
            (
                r#"{"source":"aws.ec2","detail-type":"EC2 Spot Instance Interruption Warning","time":"2026-12-07T10:00:00Z","detail":{}}"#,
                "no detail.instance-id",
            ),
            (
                r#"{"source":"aws.ec2","detail-type":"EC2 Spot Instance Interruption Warning","time":"2026-12-07T10:00:00Z","detail":{"instance-id":"vol-0abc"}}"#,
                "is not an instance ID",
            ),
            (
                r#"{"source":"aws.ec2","detail-type":"EC2 Spot Instance Interruption Warning","time":"yesterday","detail":{"instance-id":"i-0abc"}}"#,
                "time \"yesterday\" is not a time",
            ),
            (
                r#"{"source":"aws.ec2","detail-type":"EC2 Instance State-change Notification","time":"2026-12-07T10:00:00Z","detail":{"instance-id":"i-0abc","state":"melting"}}"#,
                "unknown instance state",
            ),
            (
                r#"{"source":"aws.ec2","detail-type":"EC2 Capacity Reservation Instance Interruption Warning","detail":{"instance-id":"i-0abc"}}"#,
                "no detail.instance-termination-time",
            ),
            (
                r#"{"source":"aws.health","detail-type":"AWS Health Event","detail":{"service":"EC2"}}"#,
                "no detail.eventTypeCategory",
            ),
        ];
        for (body, why) in rows {
            match read(body) {
                Read::Malformed { why: said } => assert!(said.contains(why), "{body}: {said}"),
                other => panic!("{body}: read as {other:?}"),
            }
        }
    }

    #[test]
    fn the_rules_match_every_kind_read_and_nothing_else() {
        for (_, source, detail_type) in MATCHED {
            let body =
                serde_json::json!({"source": source, "detail-type": detail_type, "detail": {}});
            match read(&body.to_string()) {
                Read::Malformed { why: said } => {
                    assert!(!said.contains("not a kind"), "{detail_type}: {said}")
                }
                other => panic!("{detail_type}: read as {other:?} with no detail"),
            }
        }
    }
}
