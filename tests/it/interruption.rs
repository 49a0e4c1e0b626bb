//! Interruptions: the installation's queue and the EventBridge rules that
//! feed it, made by a holder of the cross-account role under the
//! generated policy (the proxy decides each call as AWS does), and the
//! events AWS's services emit delivered as AWS delivers them.
//!
//! The ground emits the events itself (`Moto::emit`): AWS refuses a
//! client's PutEvents with an `aws.*` source (NotAuthorizedForSourceException),
//! moto accepts it, so no test puts them through the client path.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use byoc_operator::api::ComputeCluster;
use byoc_operator::aws::interruption_queue::{self as q, QueueSpec};
use byoc_operator::aws::AwsClients;
use byoc_operator::interruption::message::{read, Notice, Read, Reclaim, MATCHED};
use byoc_operator::interruption::queue::{
    pattern, policy, queue_name, queue_step, rule_arn, rule_arns, rule_name, rule_steps, tags,
    QueueStep, RETENTION,
};
use kube::ResourceExt;
use testground::events::Emitted;

use crate::clusters::{
    delete_and_wait_gone, ground_with_account, instances_in, orphan, running_instances,
    small_cluster_manifest, wait_running,
};
use crate::support::{
    as_role, event_note, eventually, kubectl_apply, record_figure, Edited, Ground, Operator,
    OperatorExt,
};

const ME: &str = "a11ce0000000000a";
const OTHER: &str = "b0b0000000000b0b";
const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

/// Makes `installation`'s queue and rules as the listener's set-up does:
/// the queue's URL and ARN.
async fn make(c: &AwsClients, installation: &str) -> Result<(String, String)> {
    let name = queue_name(installation);
    let arns = rule_arns(installation, ACCOUNT, REGION);
    let queue_arn = format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}");
    let doc = policy(&queue_arn, &arns);
    let tags = tags(installation);
    let spec = QueueSpec {
        name: &name,
        tags: &tags,
        policy: &doc,
        retention: RETENTION,
    };
    assert_eq!(
        queue_step(installation, None, &doc),
        QueueStep::Create,
        "no queue yet"
    );
    let url = q::create_queue(c, &spec).await?;
    let seen = q::describe_queue(c, &name)
        .await?
        .context("the queue made")?;
    assert_eq!(
        queue_step(installation, Some(&seen), &doc),
        QueueStep::Keep,
        "{seen:?}"
    );
    for (label, source, detail_type) in MATCHED {
        q::put_rule(
            c,
            &rule_name(installation, label),
            &pattern(source, detail_type),
            &tags,
            &seen.arn,
        )
        .await?;
    }
    let rules = q::describe_rules(c, &rule_name(installation, "")).await?;
    assert_eq!(rules.len(), MATCHED.len(), "{rules:?}");
    assert!(
        rule_steps(installation, &rules, &seen.arn).is_empty(),
        "the rules as made differ from what they should be: {rules:?}"
    );
    Ok((url, queue_arn))
}

/// Every message now in the queue (moto delivers as it is emitted).
async fn drain(c: &AwsClients, url: &str) -> Result<Vec<Read>> {
    let mut out = Vec::new();
    loop {
        let got = q::receive(c, url, Duration::ZERO).await?;
        if got.is_empty() {
            return Ok(out);
        }
        for m in got {
            out.push(read(&m.body));
            q::delete_message(c, url, &m.receipt).await?;
        }
    }
}

#[tokio::test]
async fn the_installations_queue_hears_each_kind_of_event_and_only_its_own_rules_send() -> Result<()>
{
    let g = Ground::new("int-queue").await?;
    let c = as_role(&g, ME, REGION).await?;
    let (url, queue_arn) = make(&c, ME).await?;

    // Each kind AWS emits reaches the queue and reads as its notice.
    let kinds = [
        Emitted::SpotWarning,
        Emitted::Rebalance,
        Emitted::State("stopped".into()),
        Emitted::Maintenance {
            within: Duration::from_secs(3600),
        },
        Emitted::CapacityReservation {
            within: Duration::from_secs(120),
        },
    ];
    let now = jiff::Timestamp::now();
    for kind in &kinds {
        let event = kind.event(ACCOUNT, REGION, "i-0123456789abcdef0", now);
        g.moto.emit(ACCOUNT, REGION, &event)?;
    }
    let heard = drain(&c, &url).await?;
    let labels: Vec<&str> = heard.iter().map(Read::kind).collect();
    assert_eq!(
        labels,
        [
            "spot-interruption",
            "rebalance-recommendation",
            "state-change",
            "scheduled-maintenance",
            "capacity-reservation-interruption"
        ],
        "{heard:?}"
    );
    assert!(
        matches!(&heard[0], Read::Notice(Notice::Reclaimed { why: Reclaim::Spot, instances, .. }) if instances == &["i-0123456789abcdef0"]),
        "{heard:?}"
    );

    // A policy naming other rules: AWS (and the ground) deliver nothing.
    // The control above is the same queue with its own policy.
    let wrong = policy(&queue_arn, &[rule_arn(REGION, ACCOUNT, "someone-else")]);
    let tags = tags(ME);
    let name = queue_name(ME);
    let spec = QueueSpec {
        name: &name,
        tags: &tags,
        policy: &wrong,
        retention: RETENTION,
    };
    q::repair_queue(&c, &url, &spec).await?;
    let seen = q::describe_queue(&c, &name).await?.context("queue")?;
    let right = policy(&queue_arn, &rule_arns(ME, ACCOUNT, REGION));
    assert!(
        matches!(queue_step(ME, Some(&seen), &right), QueueStep::Repair(ref why) if why.contains("policy")),
        "a changed policy is not seen as one to put back"
    );
    let event = Emitted::SpotWarning.event(ACCOUNT, REGION, "i-0123456789abcdef0", now);
    g.moto.emit(ACCOUNT, REGION, &event)?;
    assert!(
        drain(&c, &url).await?.is_empty(),
        "an event reached a queue whose policy does not let its rule send"
    );
    // Put back, the queue hears again.
    let spec = QueueSpec {
        policy: &right,
        ..spec
    };
    q::repair_queue(&c, &url, &spec).await?;
    g.moto.emit(ACCOUNT, REGION, &event)?;
    assert_eq!(
        drain(&c, &url).await?.len(),
        1,
        "the repaired queue hears nothing"
    );
    Ok(())
}

#[tokio::test]
async fn another_installations_queue_and_rules_are_out_of_reach() -> Result<()> {
    let g = Ground::new("int-apart").await?;
    // OTHER's queue and rules, made under OTHER's policy.
    let other = as_role(&g, OTHER, REGION).await?;
    let (other_url, _) = make(&other, OTHER).await?;
    // The same role now holds ME's policy alone.
    let me = as_role(&g, ME, REGION).await?;
    let denied = |r: Result<(), byoc_operator::aws::AwsError>, what: &str| match r {
        Err(e) if e.is_access_denied() => Ok(()),
        other => Err(anyhow::anyhow!("{what}: {other:?}")),
    };
    denied(
        q::receive(&me, &other_url, Duration::ZERO)
            .await
            .map(|_| ()),
        "read another installation's messages",
    )?;
    denied(
        q::delete_queue(&me, &other_url).await,
        "delete another installation's queue",
    )?;
    denied(
        q::delete_rule(&me, &rule_name(OTHER, "spot")).await,
        "delete another installation's rule",
    )?;
    // Control: its own queue and rules are made and read under the same
    // role, and then removed.
    let (url, _) = make(&me, ME).await?;
    assert!(drain(&me, &url).await?.is_empty());
    for (label, _, _) in MATCHED {
        q::delete_rule(&me, &rule_name(ME, label)).await?;
    }
    q::delete_queue(&me, &url).await?;
    assert!(q::describe_queue(&me, &queue_name(ME)).await?.is_none());
    assert!(q::describe_rules(&me, &rule_name(ME, "")).await?.is_empty());
    Ok(())
}

/// A cluster `name` with one spot group of `count`, t3.small or else
/// t3.medium.
pub(crate) fn spot_cluster(name: &str, cidr: &str, count: u32) -> String {
    small_cluster_manifest(name, cidr).edited(
        "instanceType: t3.small, count: 1, subnets: public}",
        &format!("instanceTypes: [t3.small, t3.medium], count: {count}, subnets: public, capacityType: spot}}"),
    )
}

/// The type of each of the cluster's instances, by ID, as its status shows.
fn types(cc: &ComputeCluster) -> BTreeMap<String, String> {
    cc.status
        .iter()
        .flat_map(|s| &s.node_groups)
        .flat_map(|g| &g.instances)
        .map(|i| (i.id.clone(), i.instance_type.clone()))
        .collect()
}

/// How many messages of `kind` the operator has read.
pub(crate) fn read_as(op: &Operator, kind: &str) -> Result<f64> {
    let m = op.metrics()?;
    Ok(testground::metric_sample(
        &m,
        &format!("byoc_interruption_messages_total{{kind=\"{kind}\"}}"),
    ))
}

/// Waits until the operator has read `n` messages of `kind`.
pub(crate) async fn wait_read(op: &Operator, kind: &str, n: f64) -> Result<()> {
    eventually(
        &format!("{n} {kind} messages read"),
        crate::clusters::WAIT,
        || async { Ok((read_as(op, kind)? >= n).then_some(())) },
    )
    .await
    .with_context(|| op.log_tail(30))
}

/// Whether `instance` carries the listener's mark, as AWS holds it.
async fn marked(g: &Ground, instance: &str) -> Result<bool> {
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let tags = ec2
        .describe_tags()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("resource-id")
                .values(instance)
                .build(),
        )
        .send()
        .await?;
    Ok(tags
        .tags()
        .iter()
        .any(|t| t.key() == Some("byoc.dev/interrupted")))
}

/// Launches since `from` in the proxy's trace.
fn launches_since(g: &Ground, from: usize) -> usize {
    g.proxy.trace()[from..]
        .iter()
        .filter(|c| c.operation == "RunInstances")
        .count()
}

#[tokio::test]
async fn a_spot_warning_is_acted_on_at_once_the_replacement_first_within_the_surge_bound(
) -> Result<()> {
    // The resync is far off: whatever happens within it is the listener's.
    let (g, op) = ground_with_account("int-spot", &["--resync-interval", "30m"]).await?;
    kubectl_apply(&g, &spot_cluster("spot", "10.61.0.0/16", 2))?;
    let cc = wait_running(&g, "spot", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    let before = running_instances(&g, &uid).await?;
    assert_eq!(before.len(), 2, "{before:?}");
    let victim = before[0].clone();
    listening(&g, &op).await?;

    // At AWS's pace (a quarter of it): AWS's warning, and its reclaim
    // two minutes (scaled) later.
    const SCALE: f64 = 0.25;
    g.proxy.set_faults(testground::Faults {
        realism: Some(testground::Realism::aws(SCALE)),
        ..Default::default()
    });
    let reclaim = testground::events::SPOT_WARNING.mul_f64(SCALE);
    let from = g.proxy.trace().len();
    let warned = Instant::now();
    g.moto.interrupt_spot(ACCOUNT, REGION, &victim, reclaim)?;
    let replacement = eventually("a replacement running", crate::clusters::WAIT, || async {
        let now = testground::running_instances_of(&g.aws_through_proxy().await, &uid).await?;
        Ok(now.into_iter().find(|i| !before.contains(i)))
    })
    .await
    .with_context(|| op.log_tail(30))?;
    let took = warned.elapsed();
    assert!(
        took < reclaim,
        "the replacement ran {took:?} after the warning, not before AWS's reclaim at {reclaim:?}"
    );
    eventually(
        "the warned instance ended",
        crate::clusters::WAIT,
        || async { Ok((!running_instances(&g, &uid).await?.contains(&victim)).then_some(())) },
    )
    .await?;
    assert_eq!(
        launches_since(&g, from),
        1,
        "one replacement launched (the group's surge bound is 1)"
    );
    // The interrupted offering (t3.small spot in us-east-1a) skipped: the
    // group's next type.
    let cc = wait_running(&g, "spot", |cc| types(cc).contains_key(&replacement)).await?;
    assert_eq!(
        types(&cc).get(&replacement).map(String::as_str),
        Some("t3.medium"),
        "{:?}",
        types(&cc)
    );
    eventually(
        "the replacement measured",
        crate::clusters::WAIT,
        || async {
            let m = op.metrics()?;
            let n = testground::metric_sample(&m, "byoc_interruption_replaced_seconds_count");
            Ok((n >= 1.0).then_some(()))
        },
    )
    .await?;
    let note = event_note(&g, "Interrupted", &victim).await?;
    assert!(note.contains("spot-interruption"), "{note}");
    assert!(
        read_as(&op, "spot-interruption")? >= 1.0,
        "the warning not counted"
    );
    record_figure(serde_json::json!({
        "suite": "interruption",
        "setup": "a spot group of 2 (t3.small, else t3.medium; surge 1), resync 30 min, the realism profile at a quarter of AWS's pace; AWS's spot warning for one instance, emitted as EC2 emits it onto the account's default bus, the instance reclaimed 30 s (120 s scaled) later",
        "n": 1,
        "figure": format!("the replacement (t3.medium: the interrupted offering skipped) running {:.1} s after the warning, before the reclaim at {:.0} s; launches after the warning: 1", took.as_secs_f64(), reclaim.as_secs_f64()),
        "pass": true,
    }))?;
    delete_and_wait_gone(&g, "spot").await?;
    Ok(())
}

#[tokio::test]
async fn an_instance_stopped_out_of_band_is_replaced_within_seconds_and_foreign_or_malformed_messages_are_deleted(
) -> Result<()> {
    let (g, op) = ground_with_account("int-stop", &["--resync-interval", "30m"]).await?;
    kubectl_apply(&g, &spot_cluster("stop", "10.62.0.0/16", 1))?;
    let cc = wait_running(&g, "stop", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    let before = running_instances(&g, &uid).await?;
    let victim = before.first().context("an instance")?.clone();
    listening(&g, &op).await?;

    // Someone stops it; EC2 says so on the bus.
    let admin = aws_sdk_ec2::Client::new(&g.aws().await);
    admin.stop_instances().instance_ids(&victim).send().await?;
    let event =
        Emitted::State("stopped".into()).event(ACCOUNT, REGION, &victim, jiff::Timestamp::now());
    let stopped = Instant::now();
    g.moto.emit(ACCOUNT, REGION, &event)?;
    eventually(
        "the stopped instance replaced",
        crate::clusters::WAIT,
        || async {
            let now = running_instances(&g, &uid).await?;
            Ok((now.len() == 1 && !now.contains(&victim)).then_some(()))
        },
    )
    .await
    .with_context(|| op.log_tail(30))?;
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "replaced {took:?} after the stop: not the listener's doing"
    );

    // An instance of no cluster here, and a message that is no event:
    // both counted and deleted.
    let stranger = Emitted::SpotWarning.event(
        ACCOUNT,
        REGION,
        "i-00000000000000bad",
        jiff::Timestamp::now(),
    );
    g.moto.emit(ACCOUNT, REGION, &stranger)?;
    let sqs = aws_sdk_sqs::Client::new(&g.aws().await);
    let url = sqs
        .get_queue_url()
        .queue_name(queue_name(&installation_of(&op)?))
        .send()
        .await?
        .queue_url()
        .context("queue url")?
        .to_string();
    sqs.send_message()
        .queue_url(&url)
        .message_body("{not an event")
        .send()
        .await?;
    wait_read(&op, "not-ours", 1.0).await?;
    wait_read(&op, "malformed", 1.0).await?;
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await?;
    let count = |k: aws_sdk_sqs::types::QueueAttributeName| {
        attrs
            .attributes()
            .and_then(|a| a.get(&k))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages),
        "0"
    );
    assert_eq!(
        count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        "0",
        "a message left in flight, not deleted"
    );

    // The last cluster of the account and region gone: its queue and rules too.
    delete_and_wait_gone(&g, "stop").await?;
    let events = aws_sdk_eventbridge::Client::new(&g.aws().await);
    eventually(
        "the queue and rules deleted with the last cluster",
        crate::clusters::WAIT,
        || async {
            let queue = sqs
                .get_queue_url()
                .queue_name(queue_name(&installation_of(&op)?))
                .send()
                .await;
            let rules = events.list_rules().name_prefix("byoc-").send().await?;
            Ok((queue.is_err() && rules.rules().is_empty()).then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// Waits until the operator's listener has made the queue and every rule
/// (events before that are not delivered, as on AWS).
pub(crate) async fn listening(g: &Ground, op: &Operator) -> Result<()> {
    let installation = installation_of(op)?;
    let aws = g.aws().await;
    eventually(
        "the queue and its rules made",
        crate::clusters::WAIT,
        || async {
            let queue = queue_name(&installation);
            let rules = rule_name(&installation, "");
            let made = testground::events::delivering(&aws, &queue, &rules, MATCHED.len()).await?;
            Ok(made.then_some(()))
        },
    )
    .await
    .with_context(|| op.log_tail(30))
}

/// The installation's public ID the operator reports.
fn installation_of(op: &Operator) -> Result<String> {
    let m = op.metrics()?;
    m.lines()
        .find_map(|l| {
            l.strip_prefix("byoc_installation{installation=\"")?
                .split('"')
                .next()
                .map(str::to_string)
        })
        .context("no byoc_installation series")
}

#[tokio::test]
async fn a_rebalance_recommendation_replaces_only_where_the_group_asks() -> Result<()> {
    let (g, op) = ground_with_account("int-rebalance", &["--resync-interval", "30m"]).await?;
    let manifest = small_cluster_manifest("rebal", "10.63.0.0/16").edited(
        "nodeGroups: [{name: workers, instanceType: t3.small, count: 1, subnets: public}]",
        "nodeGroups: [{name: keep, instanceType: t3.small, count: 1, subnets: public, capacityType: spot}, {name: move, instanceType: t3.small, count: 1, subnets: public, capacityType: spot, interruption: {rebalance: replace}}]",
    );
    kubectl_apply(&g, &manifest)?;
    let cc = wait_running(&g, "rebal", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    let (keep, moved) = (of(&g, &uid, "keep").await?, of(&g, &uid, "move").await?);
    let (kept, moving) = (
        keep.first().context("keep's instance")?.clone(),
        moved.first().context("move's instance")?.clone(),
    );
    listening(&g, &op).await?;
    let now = jiff::Timestamp::now();
    for id in [&kept, &moving] {
        let event = Emitted::Rebalance.event(ACCOUNT, REGION, id, now);
        g.moto.emit(ACCOUNT, REGION, &event)?;
    }
    // `replace`: a replacement, then the instance ended.
    eventually(
        "move's instance replaced",
        crate::clusters::WAIT,
        || async {
            let now = of(&g, &uid, "move").await?;
            Ok((now.len() == 1 && !now.contains(&moving)).then_some(()))
        },
    )
    .await
    .with_context(|| op.log_tail(30))?;
    // `ignore` (the default): both messages read, keep's instance
    // untouched and unmarked.
    wait_read(&op, "rebalance-recommendation", 2.0).await?;
    assert_eq!(
        of(&g, &uid, "keep").await?,
        vec![kept.clone()],
        "keep's instance was replaced"
    );
    assert!(
        !marked(&g, &kept).await?,
        "keep's instance was marked interrupted"
    );
    delete_and_wait_gone(&g, "rebal").await?;
    Ok(())
}

/// The running instances of the cluster `uid`'s `group`.
async fn of(g: &Ground, uid: &str, group: &str) -> Result<Vec<String>> {
    let found = instances_in(g, uid, Some(group), &["running"]).await?;
    Ok(found.into_iter().map(|(_, id)| id).collect())
}

#[tokio::test]
async fn one_queue_serves_every_spot_cluster_of_an_account_and_region_and_goes_with_the_last(
) -> Result<()> {
    let (g, op) = ground_with_account("int-shared", &[]).await?;
    // An on-demand cluster needs no queue.
    kubectl_apply(&g, &small_cluster_manifest("plain", "10.64.0.0/16"))?;
    wait_running(&g, "plain", |_| true).await?;
    let installation = installation_of(&op)?;
    let sqs = aws_sdk_sqs::Client::new(&g.aws().await);
    let queues = || async {
        let out = sqs.list_queues().send().await?;
        anyhow::Ok(out.queue_urls().to_vec())
    };
    assert!(queues().await?.is_empty(), "a queue for on-demand clusters");
    for (name, cidr) in [("one", "10.65.0.0/16"), ("two", "10.66.0.0/16")] {
        kubectl_apply(&g, &spot_cluster(name, cidr, 1))?;
    }
    for name in ["one", "two"] {
        wait_running(&g, name, |_| true).await?;
    }
    listening(&g, &op).await?;
    let made = queues().await?;
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(made[0].ends_with(&queue_name(&installation)), "{made:?}");
    let events = aws_sdk_eventbridge::Client::new(&g.aws().await);
    let rules = events.list_rules().name_prefix("byoc-").send().await?;
    assert_eq!(rules.rules().len(), MATCHED.len(), "{:?}", rules.rules());
    // `describe` shows it under the account.
    let described = crate::support::byoc(
        &g,
        &["describe", "computecluster", "one", "-n", &g.namespace],
    )?;
    let line = format!(
        "InterruptionQueue {}  as it should be  rules 5/5",
        queue_name(&installation)
    );
    assert!(described.contains(&line), "{described}");
    // The first spot cluster gone, then the last: the queue and rules go
    // with the last, and only then (the proxy's trace says when).
    delete_and_wait_gone(&g, "one").await?;
    let last_deleted = g.proxy.trace().len();
    delete_and_wait_gone(&g, "two").await?;
    // The proxy records a call once it has answered it: wait for the
    // record too, not only for what moto holds.
    let deletions = eventually(
        "the queue and rules deleted",
        crate::clusters::WAIT,
        || async {
            let rules = events.list_rules().name_prefix("byoc-").send().await?;
            let gone = queues().await?.is_empty() && rules.rules().is_empty();
            let deletions: Vec<usize> = g
                .proxy
                .trace()
                .iter()
                .enumerate()
                .filter(|(_, c)| c.operation == "DeleteQueue")
                .map(|(n, _)| n)
                .collect();
            Ok((gone && !deletions.is_empty()).then_some(deletions))
        },
    )
    .await
    .with_context(|| op.log_tail(30))?;
    assert!(
        deletions.len() == 1 && deletions[0] >= last_deleted,
        "the queue was deleted at calls {deletions:?}; the last cluster's deletion began at {last_deleted}"
    );
    delete_and_wait_gone(&g, "plain").await?;
    Ok(())
}

#[tokio::test]
async fn a_queue_no_cluster_wants_any_more_is_audited_and_deleted_with_delete_all() -> Result<()> {
    let (g, mut op) = ground_with_account("int-left", &[]).await?;
    let ns = g.namespace.clone();
    // In a region no other test's spot cluster uses: the audit counts a
    // queue wanted while any live cluster of the apiserver may use it.
    const LEFT_REGION: &str = "eu-west-1";
    let manifest = spot_cluster("left", "10.69.0.0/16", 1)
        .edited("region: us-east-1", &format!("region: {LEFT_REGION}"))
        .edited("[us-east-1a]", &format!("[{LEFT_REGION}a]"));
    kubectl_apply(&g, &manifest)?;
    wait_running(&g, "left", |_| true).await?;
    let installation = installation_of(&op)?;
    let there = g
        .aws()
        .await
        .to_builder()
        .region(aws_config::Region::new(LEFT_REGION))
        .build();
    let (queue, rules) = (queue_name(&installation), rule_name(&installation, ""));
    eventually(
        "the queue and its rules made",
        crate::clusters::WAIT,
        || async {
            let made =
                testground::events::delivering(&there, &queue, &rules, MATCHED.len()).await?;
            Ok(made.then_some(()))
        },
    )
    .await?;
    let line = format!(
        "the interruption queue {queue} and {} rules: no live cluster here has a spot group",
        MATCHED.len()
    );
    let audit_args = |more: &[&'static str]| {
        let mut args = vec!["audit", "-n", &ns, "--region", LEFT_REGION];
        args.extend(more);
        crate::support::byoc(&g, &args)
    };
    // Control: while its spot cluster lives, the queue is not left over.
    let audit = audit_args(&[])?;
    assert!(
        audit.contains("nothing leaked") && !audit.contains("interruption queue"),
        "{audit}"
    );
    // The finalizer removed by hand while the operator is down: the
    // cluster's resources and the queue stay.
    op.process.kill();
    orphan(&g, &ns, "left").await?;
    let found = audit_args(&[])?;
    assert!(found.contains(&line), "{found}");
    let deleted = audit_args(&["--delete", "--all", "--deadline", "3m"])?;
    assert!(
        deleted.contains(&format!(
            "deleted the interruption queue and {} rules",
            MATCHED.len()
        )) && deleted.contains("0 leaked resources left"),
        "{deleted}"
    );
    assert!(
        !testground::events::delivering(&there, &queue, &rules, 0).await?,
        "the queue is still there"
    );
    let events = aws_sdk_eventbridge::Client::new(&there);
    let left = events.list_rules().name_prefix(&rules).send().await?;
    assert!(left.rules().is_empty(), "{:?}", left.rules());
    Ok(())
}

#[tokio::test]
async fn a_leader_killed_with_a_warning_in_hand_leaves_it_to_its_successor_once() -> Result<()> {
    use crate::operations::{start_replica, wait_leader};
    let g = crate::support::ground_with_crds("int-leader").await?;
    let mut a = start_replica(&g, "replica-a")?;
    wait_leader(&a, "replica-a", crate::clusters::WAIT).await?;
    let b = start_replica(&g, "replica-b")?;
    crate::clusters::ready_account(&g).await?;
    kubectl_apply(&g, &spot_cluster("spot", "10.69.0.0/16", 2))?;
    let cc = wait_running(&g, "spot", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    let before = running_instances(&g, &uid).await?;
    let victim = before.first().context("an instance")?.clone();
    listening(&g, &a).await?;

    // The leader marks the instance (AWS writes the tag) and dies before
    // the answer, the message neither acted on further nor deleted.
    g.proxy.set_faults(testground::Faults {
        hold_answers: [("CreateTags".to_string(), Duration::from_secs(30))].into(),
        ..Default::default()
    });
    let from = g.proxy.trace().len();
    g.moto
        .interrupt_spot(ACCOUNT, REGION, &victim, testground::events::SPOT_WARNING)?;
    eventually(
        "the leader's mark written",
        crate::clusters::WAIT,
        || async { Ok(marked(&g, &victim).await?.then_some(())) },
    )
    .await
    .with_context(|| a.log_tail(30))?;
    a.process.kill();
    g.proxy.set_faults(testground::Faults::default());

    // The successor replaces it (the mark is in AWS), reads the message
    // again once SQS shows it again, and launches nothing twice.
    wait_leader(&b, "replica-b", crate::clusters::WAIT).await?;
    eventually(
        "the successor replaced it",
        crate::clusters::WAIT,
        || async {
            let now = running_instances(&g, &uid).await?;
            let fresh = now.iter().filter(|i| !before.contains(i)).count();
            Ok((fresh == 1 && !now.contains(&victim)).then_some(()))
        },
    )
    .await
    .with_context(|| b.log_tail(30))?;
    // The successor handled the message.
    wait_read(&b, "spot-interruption", 1.0).await?;
    assert_eq!(launches_since(&g, from), 1, "a replacement launched twice");
    Ok(())
}
