//! The report: medians of the runs, the goals they are held to, and the
//! Markdown table.

use super::*;
use crate::scenarios::{
    FairnessRun, InterruptionRun, ReferenceRun, ResyncPoint, ScaleRun, SecretMemory,
};
use byoc_operator::cluster::graph::CriticalPath;

/// `{median, min, max}` of `values`.
pub(crate) fn spread(mut values: Vec<f64>) -> serde_json::Value {
    values.sort_by(|a, b| a.total_cmp(b));
    let median = values.get(values.len() / 2).copied().unwrap_or(0.0);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "median": round(median),
        "min": round(values.first().copied().unwrap_or(0.0)),
        "max": round(values.last().copied().unwrap_or(0.0)),
        "runs": values.len(),
    })
}

const NOT_MEASURED: &str = "not measured";

/// A figure as the tables show it: `median (min–max)`, or "not measured"
/// when no run gave it (a spread of no values is not a zero).
fn shown(v: &serde_json::Value) -> String {
    if v["runs"].as_u64() == Some(0) {
        NOT_MEASURED.into()
    } else {
        format!("{} ({}–{})", v["median"], v["min"], v["max"])
    }
}

/// A figure with its unit, or "not measured" (which has no unit).
fn shown_in(v: &serde_json::Value, unit: &str) -> String {
    match shown(v) {
        text if text == NOT_MEASURED => text,
        text => format!("{text} {unit}"),
    }
}

/// The verdict on a goal for the figure `v` (its `at`: median or max):
/// "not measured" when no run gave it, never "met".
fn verdict(v: &serde_json::Value, at: &str, ok: impl Fn(f64) -> bool) -> &'static str {
    match v[at].as_f64() {
        _ if v["runs"].as_u64() == Some(0) => NOT_MEASURED,
        Some(x) if ok(x) => "met",
        _ => "**missed**",
    }
}

pub(crate) fn is_write(op: &str) -> bool {
    !["Describe", "Get", "List"]
        .iter()
        .any(|p| op.starts_with(p))
}

pub(crate) fn writes(calls: &BTreeMap<String, u64>) -> u64 {
    calls
        .iter()
        .filter(|(o, _)| is_write(o))
        .map(|(_, n)| n)
        .sum()
}

pub(crate) fn reads(calls: &BTreeMap<String, u64>) -> u64 {
    calls
        .iter()
        .filter(|(o, _)| !is_write(o))
        .map(|(_, n)| n)
        .sum()
}

/// The fewest writes that build the reference topology (3 zones, NAT per
/// zone, 2 node groups spread over the zones): one call per resource,
/// association, attribute and rule.
pub(crate) fn minimal_writes() -> BTreeMap<&'static str, u64> {
    BTreeMap::from([
        ("CreateVpc", 1),
        // DNS support and DNS hostnames: one attribute per call.
        ("ModifyVpcAttribute", 2),
        ("CreateSubnet", 6),
        ("ModifySubnetAttribute (public IPs)", 3),
        ("CreateInternetGateway", 1),
        ("AttachInternetGateway", 1),
        ("AllocateAddress", 3),
        ("CreateNatGateway", 3),
        ("CreateRouteTable", 4),
        ("CreateRoute", 4),
        ("AssociateRouteTable", 6),
        ("CreateSecurityGroup", 1),
        ("AuthorizeSecurityGroupIngress", 1),
        ("CreateRole", 1),
        ("CreateInstanceProfile", 1),
        ("AddRoleToInstanceProfile", 1),
        // Each group spread over the three private subnets: one call per subnet.
        ("RunInstances", 6),
    ])
}

pub(crate) fn summarize(
    args: &Args,
    critical: &CriticalPath,
    p1: &[ReferenceRun],
    p3: &[ScaleRun],
) -> serde_json::Value {
    let latency = args.latency_ms as f64 / 1000.0;
    let critical_seconds = (critical.calls as f64 * latency * 1000.0).round() / 1000.0;
    let secs = |f: &dyn Fn(&ReferenceRun) -> Duration| {
        spread(p1.iter().map(|r| f(r).as_secs_f64()).collect())
    };
    let nums = |f: &dyn Fn(&ReferenceRun) -> f64| spread(p1.iter().map(f).collect());
    let typical = p1.get(p1.len() / 2);
    let minimal: u64 = minimal_writes().values().sum();
    // One lookup per kind: tag-filtered describes of VPCs, subnets, internet
    // gateways, addresses, NAT gateways, route tables, security groups and
    // instances; the IAM role and the instance profile by name; the
    // running instances' status checks.
    let kinds = 11.0;
    json!({
        "machine": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "operator_build": "release (cargo bench profile)",
            "ground": "kube-apiserver v1.33.13 + etcd v3.5.21, moto 5.2.5 behind the fault proxy, all on loopback",
        },
        "p1_time_to_running": {
            "topology": "3 zones, NAT gateway per zone, 2 node groups x 3 instances",
            "latency_ms_per_call": args.latency_ms,
            "seconds": secs(&|r| r.to_running),
            "critical_path_calls": critical.calls,
            "critical_path_seconds": critical_seconds,
            "critical_paths": critical.chains,
            "ratio": nums(&|r| r.to_running.as_secs_f64() / critical_seconds),
            "critical_path_seconds_at_measured_call_times": nums(&|r| r.critical_at_call_times),
            "ratio_at_measured_call_times": nums(&|r| r.to_running.as_secs_f64() / r.critical_at_call_times.max(0.001)),
        "goal_ratio": 1.2,
            "measured_sequential_calls": nums(&|r| r.sequential_depth as f64),
            "measured_sequential_chain": typical.map(|r| r.sequential_chain.clone()).unwrap_or_default(),
            "seconds_before_first_aws_call": secs(&|r| r.first_call_after),
            "timeline_one_run": typical.map(|r| r.timeline.iter().map(|(op, start, end)| json!([op, start, end])).collect::<Vec<_>>()).unwrap_or_default(),
        },
        "p2_aws_calls": {
            "converge_total": nums(&|r| r.converge_calls.values().sum::<u64>() as f64),
            "converge_writes": nums(&|r| writes(&r.converge_calls) as f64),
            "converge_reads": nums(&|r| reads(&r.converge_calls) as f64),
            "minimal_writes": minimal,
            "minimal_writes_by_operation": minimal_writes(),
            "goal_reads": "one tag-filtered describe per kind",
            "kinds": kinds,
            "converge_by_operation": typical.map(|r| r.converge_calls.clone()).unwrap_or_default(),
            "resync_writes": nums(&|r| writes(&r.resync_calls) as f64),
            "resync_reads": nums(&|r| reads(&r.resync_calls) as f64),
            "resync_by_operation": typical.map(|r| r.resync_calls.clone()).unwrap_or_default(),
        },
        "p3_scale": {
            "clusters": args.clusters,
            "accounts": args.accounts,
            "topology": "1 zone, no NAT gateway, 1 node group of 1",
            "seconds_until_all_running": spread(p3.iter().map(|r| r.to_all_running.as_secs_f64()).collect()),
            "operator_cpu_seconds": spread(p3.iter().map(|r| r.cpu_seconds).collect()),
            "operator_peak_rss_mib": spread(p3.iter().map(|r| r.peak_rss_mib).collect()),
            "moto_cpu_seconds": spread(p3.iter().map(|r| r.moto_cpu_seconds).collect()),
            "apiserver_cpu_seconds": spread(p3.iter().map(|r| r.apiserver_cpu_seconds).collect()),
            "aws_calls": spread(p3.iter().map(|r| r.aws_calls as f64).collect()),
            "against_rate_limits": rate_figures(p3),
            "goal_cpu_seconds": 60,
            "goal_peak_rss_mib": 128,
        },
        "fallback": {
            "topology": "the P1 topology, each group's first-choice type refused in every zone",
            "seconds": secs(&|r| r.fallback_to_running),
            "extra_seconds_over_p1": nums(&|r| r.fallback_to_running.as_secs_f64() - r.to_running.as_secs_f64()),
            "run_instances": nums(&|r| r.fallback_run_instances as f64),
            "goal": "one extra round trip per refused offering at most: 6 refused (2 types x 3 zones) + 6 accepted RunInstances",
        },
        "realism": {
            "scale": args.realism_scale,
            "topology": "the P1 topology against the proxy's AWS realism profile (states, IAM propagation, eventual consistency, draining, rate limits) at `scale` times AWS's durations",
            "seconds_to_running": secs(&|r| r.realistic_to_running),
            "bound_seconds": nums(&|r| r.realistic_bound),
            "ratio": nums(&|r| r.realistic_to_running.as_secs_f64() / r.realistic_bound.max(0.001)),
            "goal_ratio": 1.05,
            "calls": nums(&|r| r.realistic_calls as f64),
            "throttled": nums(&|r| r.realistic_throttled as f64),
            "timeline_one_run": typical.map(|r| r.realistic_timeline.iter().map(|(op, start, end)| json!([op, start, end])).collect::<Vec<_>>()).unwrap_or_default(),
            "waits_one_run": typical.map(|r| r.realistic_waits.iter().map(|(what, made, ends)| json!([what, made, ends])).collect::<Vec<_>>()).unwrap_or_default(),
            "deletion_seconds": secs(&|r| r.realistic_to_deleted),
            "deletion_bound_seconds": nums(&|r| r.realistic_drain_bound),
            "deletion_ratio": nums(&|r| r.realistic_to_deleted.as_secs_f64() / r.realistic_drain_bound.max(0.001)),
            "reach": {
                "topology": "the P1 zones and node groups with no internet, 4 VPC endpoints (S3 gateway; ECR API, ECR Docker, STS interfaces) and a peering connection the operator accepts",
                "seconds_to_running": secs(&|r| r.reach_to_running),
                "bound_seconds": nums(&|r| r.reach_bound),
                "ratio": nums(&|r| r.reach_to_running.as_secs_f64() / r.reach_bound.max(0.001)),
                "goal_ratio": 1.05,
                "calls": nums(&|r| r.reach_calls as f64),
            },
        },
        "deletion": {
            "seconds": secs(&|r| r.to_deleted),
            "calls": nums(&|r| r.delete_calls.values().sum::<u64>() as f64),
            "by_operation": typical.map(|r| r.delete_calls.clone()).unwrap_or_default(),
        },
    })
}

/// Time to all running against the bound AWS's buckets impose, and the
/// throttled share.
fn rate_figures(runs: &[ScaleRun]) -> serde_json::Value {
    json!({
        "bucket_bound_seconds": spread(runs.iter().map(|r| r.bucket_bound.as_secs_f64()).collect()),
        "slowest_bucket": runs.first().map(|r| r.bucket.clone()).unwrap_or_default(),
        "ratio": spread(runs.iter().map(|r| r.to_all_running.as_secs_f64() / r.bucket_bound.as_secs_f64().max(0.001)).collect()),
        "goal_ratio": 1.1,
        "throttled": spread(runs.iter().map(|r| r.throttled as f64).collect()),
        "throttled_share": spread(runs.iter().map(|r| r.throttled as f64 / (r.aws_calls.max(1)) as f64).collect()),
        "goal_throttled_share": 0.05,
    })
}

/// byoc-operator and ACK's ec2-controller on the reference topology, side
/// by side, without and with the realism profile.
pub(crate) fn ack(
    p1: &[ReferenceRun],
    plain: &[crate::ack::AckRun],
    real: &[crate::ack::AckRun],
) -> serde_json::Value {
    let side = |runs: &[crate::ack::AckRun]| {
        let typical = runs.get(runs.len() / 2);
        json!({
            "seconds": spread(runs.iter().map(|r| r.to_synced.as_secs_f64()).collect()),
            "calls": spread(runs.iter().map(|r| r.calls.values().sum::<u64>() as f64).collect()),
            "writes": spread(runs.iter().map(|r| writes(&r.calls) as f64).collect()),
            "reads": spread(runs.iter().map(|r| reads(&r.calls) as f64).collect()),
            "throttled": spread(runs.iter().map(|r| r.throttled as f64).collect()),
            "by_operation": typical.map(|r| r.calls.clone()).unwrap_or_default(),
            "runs_not_synced": runs.iter().filter(|r| !r.stuck.is_empty()).count(),
            "not_synced_at_deadline": runs.iter().find(|r| !r.stuck.is_empty()).map(|r| r.stuck.clone()).unwrap_or_default(),
        })
    };
    let ours = |to: &dyn Fn(&ReferenceRun) -> Duration, calls: &dyn Fn(&ReferenceRun) -> f64| {
        json!({
            "seconds": spread(p1.iter().map(|r| to(r).as_secs_f64()).collect()),
            "calls": spread(p1.iter().map(calls).collect()),
        })
    };
    json!({
        "peer": "ACK ec2-controller v1.0.0 (network + instances; no IAM)",
        "plain": {
            "ack": side(plain),
            "byoc": ours(&|r| r.to_running, &|r| r.converge_calls.values().sum::<u64>() as f64),
            "byoc_writes": spread(p1.iter().map(|r| writes(&r.converge_calls) as f64).collect()),
            "byoc_reads": spread(p1.iter().map(|r| reads(&r.converge_calls) as f64).collect()),
        },
        "realism": {
            "ack": side(real),
            "byoc": ours(&|r| r.realistic_to_running, &|r| r.realistic_calls as f64),
        },
    })
}

/// P5: many clusters in one account against AWS's rate limits.
pub(crate) fn mass(clusters: usize, runs: &[ScaleRun]) -> serde_json::Value {
    json!({
        "clusters": clusters,
        "accounts": 1,
        "topology": "1 zone, no NAT gateway, 1 node group of 1",
        "seconds_until_all_running": spread(runs.iter().map(|r| r.to_all_running.as_secs_f64()).collect()),
        "aws_calls": spread(runs.iter().map(|r| r.aws_calls as f64).collect()),
        "operator_cpu_seconds": spread(runs.iter().map(|r| r.cpu_seconds).collect()),
        "moto_cpu_seconds": spread(runs.iter().map(|r| r.moto_cpu_seconds).collect()),
        "against_rate_limits": rate_figures(runs),
    })
}

/// The operator's memory with many Secrets in its namespace.
pub(crate) fn secret_memory(m: Option<&SecretMemory>) -> serde_json::Value {
    let Some(m) = m else {
        return json!(null);
    };
    json!({
        "secrets": m.secrets,
        "secret_kib": m.kib,
        "operator_peak_rss_mib_without": m.none_mib,
        "operator_peak_rss_mib_with": m.with_mib,
        "operator_peak_rss_mib_after_created_while_running": m.created_while_running_mib,
        "difference_mib": m.with_mib.max(m.created_while_running_mib) - m.none_mib,
        "goal_difference_mib": 10,
    })
}

fn secret_memory_section(r: &serde_json::Value) -> String {
    let m = &r["secret_memory"];
    if m.is_null() {
        return String::new();
    }
    let f = |v: &serde_json::Value| format!("{:.1}", v.as_f64().unwrap_or(0.0));
    format!(
        "\n## Secrets in the cluster: the operator's memory\n\n\
         {} Secrets of {} KiB in the operator's namespace (Secrets are watched as metadata only).\n\n\
         | figure | MiB |\n|---|---|\n\
         | peak RSS, started with no Secrets | {} |\n\
         | peak RSS, after they were created while it ran | {} |\n\
         | peak RSS, started with them there | {} |\n\
         | difference (goal < {}) | {} |\n",
        m["secrets"],
        m["secret_kib"],
        f(&m["operator_peak_rss_mib_without"]),
        f(&m["operator_peak_rss_mib_after_created_while_running"]),
        f(&m["operator_peak_rss_mib_with"]),
        m["goal_difference_mib"],
        f(&m["difference_mib"]),
    )
}

/// The fairness figure: a tenant's time to `running` and to deleted beside
/// an abusing namespace, against alone (medians).
pub(crate) fn fairness(args: &Args, run: Option<&FairnessRun>) -> serde_json::Value {
    let Some(run) = run else {
        return json!(null);
    };
    let median = |v: Vec<f64>| {
        let mut v = v;
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let secs = |pick: fn(&(Duration, Duration)) -> Duration, runs: &[(Duration, Duration)]| {
        median(runs.iter().map(|r| pick(r).as_secs_f64()).collect())
    };
    let (alone_up, beside_up) = (secs(|r| r.0, &run.alone), secs(|r| r.0, &run.beside));
    let (alone_down, beside_down) = (secs(|r| r.1, &run.alone), secs(|r| r.1, &run.beside));
    let ratio = |beside: f64, alone: f64| if alone > 0.0 { beside / alone } else { 0.0 };
    // Each cycle: to running, of it at AWS, to deleted, of it at AWS.
    let each = |t: &[(Duration, Duration)], aws: &[(Duration, Duration)]| {
        t.iter()
            .zip(aws)
            .map(|(t, a)| [t.0, a.0, t.1, a.1].map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0))
            .collect::<Vec<_>>()
    };
    let (alone_up_aws, beside_up_aws) = (
        secs(|r| r.0, &run.alone_at_aws),
        secs(|r| r.0, &run.beside_at_aws),
    );
    let (alone_down_aws, beside_down_aws) = (
        secs(|r| r.1, &run.alone_at_aws),
        secs(|r| r.1, &run.beside_at_aws),
    );
    json!({
        "abusers": args.fairness_abusers,
        "groups": args.fairness_groups,
        "per_group": args.fairness_per_group,
        "cycles": run.alone.len(),
        "running_alone_s": alone_up,
        "running_beside_s": beside_up,
        "running_ratio": ratio(beside_up, alone_up),
        "deleted_alone_s": alone_down,
        "deleted_beside_s": beside_down,
        "deleted_ratio": ratio(beside_down, alone_down),
        "cycles_s": {
            "alone": each(&run.alone, &run.alone_at_aws),
            "beside": each(&run.beside, &run.beside_at_aws),
        },
        "running_at_aws_alone_s": alone_up_aws,
        "running_at_aws_beside_s": beside_up_aws,
        "deleted_at_aws_alone_s": alone_down_aws,
        "deleted_at_aws_beside_s": beside_down_aws,
        "goal_ratio": 1.2,
        "latency_ms": args.latency_ms,
        "abusive_run_instances_calls": run.abusive_launched,
        "turned_away": run.turned_away,
    })
}

fn fairness_section(r: &serde_json::Value) -> String {
    let f = &r["fairness"];
    if f.is_null() {
        return String::new();
    }
    let n = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let goal = n(&f["goal_ratio"]);
    let verdict = |ratio: f64| if ratio <= goal { "met" } else { "**missed**" };
    format!(
        "\n## Fairness: one namespace abusing the operator\n\n\
         A tenant's small cluster made and deleted {} times with the operator to itself, then {} times beside another namespace's {} clusters of {} node groups × {} instances, whose account's quotas cannot be read (each of their passes launches a capped batch and comes back). One operator for both namespaces, at its defaults; {} ms per AWS call; each namespace's AWS account served by its own moto, as AWS serves accounts apart. Medians.\n\n\
         | figure | alone | beside the abuse | ratio | goal | |\n|---|---|---|---|---|---|\n\
         | time to `running` | {:.3} s | {:.3} s | {:.3} | ≤ {goal} | {} |\n\
         | time to deleted | {:.3} s | {:.3} s | {:.3} | ≤ {goal} | {} |\n\n\
         Of those medians, the time during which a call of the tenant's AWS account was at the ground (the rest is the operator's: queues, workers, pacing, the apiserver): to `running` {:.3} s alone, {:.3} s beside; to deleted {:.3} s alone, {:.3} s beside.\n\n\
         The abusing namespace made {} RunInstances calls meanwhile; {} of its reconciles were put off for its share of the workers.\n",
        f["cycles"], f["cycles"], f["abusers"], f["groups"], f["per_group"], f["latency_ms"],
        n(&f["running_alone_s"]), n(&f["running_beside_s"]), n(&f["running_ratio"]), verdict(n(&f["running_ratio"])),
        n(&f["deleted_alone_s"]), n(&f["deleted_beside_s"]), n(&f["deleted_ratio"]), verdict(n(&f["deleted_ratio"])),
        n(&f["running_at_aws_alone_s"]), n(&f["running_at_aws_beside_s"]),
        n(&f["deleted_at_aws_alone_s"]), n(&f["deleted_at_aws_beside_s"]),
        f["abusive_run_instances_calls"], n(&f["turned_away"]),
    )
}

/// The interruption figure: medians of the runs of each path.
pub(crate) fn interruption(scale: f64, runs: &[InterruptionRun]) -> serde_json::Value {
    let secs = |f: fn(&InterruptionRun) -> Duration| {
        spread(runs.iter().map(|r| f(r).as_secs_f64()).collect())
    };
    json!({
        "scale": scale,
        "reclaim_seconds": runs.first().map(|r| r.reclaim.as_secs_f64()),
        "queue_seconds": secs(|r| r.queue),
        "resync_seconds": secs(|r| r.resync),
        "ratio": spread(runs.iter().map(|r| r.resync.as_secs_f64() / r.queue.as_secs_f64().max(0.001)).collect()),
    })
}

fn interruption_section(r: &serde_json::Value) -> String {
    let x = &r["interruption"];
    let reclaim = x["reclaim_seconds"].as_f64().unwrap_or(0.0);
    format!(
        "\n## Interruptions: from AWS's spot warning to a replacement `running`\n\n\
         A spot group of 2 (t3.small, else t3.medium; surge 1) under the realism profile at {} × AWS's durations, the operator at its defaults (resync every 5 minutes). EC2's warning for one instance on the account's bus, the instance reclaimed {reclaim:.0} s later; the replacement `running` as AWS says. With the interruption queue, and with it off (`--no-interruption-queue`: the resync finds the instance gone).\n\n\
         | figure | measured | goal | |\n|---|---|---|---|\n\
         | heard from the interruption queue | {} | before the reclaim ({reclaim:.0} s) | {} |\n\
         | heard by the resync | {} | | |\n\
         | resync path / queue path | {} | ≥ 5 | {} |\n{}",
        x["scale"],
        shown_in(&x["queue_seconds"], "s"),
        verdict(&x["queue_seconds"], "max", |s| s < reclaim),
        shown_in(&x["resync_seconds"], "s"),
        shown(&x["ratio"]),
        verdict(&x["ratio"], "min", |v| v >= 5.0),
        // Written in by hand when this section comes from a run of its own.
        x["measured_at"]
            .as_str()
            .map(|m| format!("\nMeasured: {m}.\n"))
            .unwrap_or_default(),
    )
}

/// Resync reads per interval by the number of settled clusters.
pub(crate) fn resync_scale(points: &[ResyncPoint]) -> serde_json::Value {
    json!(points
        .iter()
        .map(|p| json!({
            "clusters": p.clusters,
            "reads": p.reads,
            "changed": p.changed,
            "could_not_look": p.failed,
            "by_operation": p.by_operation,
            "per_cluster_resync_would_read": p.clusters * 11,
        }))
        .collect::<Vec<_>>())
}

fn rate_rows(label: &str, x: &serde_json::Value) -> String {
    let m = shown;
    let rl = &x["against_rate_limits"];
    if x["seconds_until_all_running"]["runs"].as_u64().unwrap_or(0) == 0 {
        return format!("| {label} | not run or did not finish | | |\n");
    }
    format!(
        "| {label}: until all `running` | {} s | | |\n\
         | {label}: the bound AWS's buckets impose on its calls (slowest: {}) | {} s | | |\n\
         | {label}: ratio | {} | ≤ 1.1 | {} |\n\
         | {label}: calls, throttled, throttled share | {}, {}, {} | < 5 % | {} |\n",
        m(&x["seconds_until_all_running"]),
        rl["slowest_bucket"].as_str().unwrap_or_default(),
        m(&rl["bucket_bound_seconds"]),
        m(&rl["ratio"]),
        verdict(&rl["ratio"], "median", |r| r <= 1.1),
        m(&x["aws_calls"]),
        m(&rl["throttled"]),
        m(&rl["throttled_share"]),
        verdict(&rl["throttled_share"], "median", |s| s < 0.05),
    )
}

/// The side-by-side section.
fn ack_section(r: &serde_json::Value) -> String {
    let a = &r["ack"];
    let m = shown;
    let runs = |v: &serde_json::Value| v["seconds"]["runs"].as_u64().unwrap_or(0);
    if runs(&a["plain"]["ack"]) + runs(&a["realism"]["ack"]) == 0 {
        return "\n## Side by side with ACK\n\nNot measured (ACK's ec2-controller not built: `hack/build-ground.sh ack`).\n".into();
    }
    let ack_unfinished = runs(&a["realism"]["ack"]) == 0 && runs(&a["realism"]["byoc"]) > 0;
    format!(
        "\n## Side by side with ACK's ec2-controller v1.0.0 (same apiserver, proxy and moto; the reference topology's network and 6 instances, posted straight to the API; ACK has no IAM)\n\n\
         | | byoc-operator | ACK | |\n|---|---|---|---|\n\
         | 50 ms per call: time from the first create to `running` / all `ACK.ResourceSynced` | {} s | {} s | |\n\
         | 50 ms per call: AWS calls (writes, reads) | {} ({}, {}) | {} ({}, {}) | byoc's include IAM (3 writes, its reads) |\n\
         | realism profile at {} × AWS's durations: time | {} s | {} | |\n\
         | realism profile: AWS calls, throttled | {} | {} | |\n\n\
         ACK's calls by operation are in `results.json` (`ack`).\n{}",
        m(&a["plain"]["byoc"]["seconds"]),
        m(&a["plain"]["ack"]["seconds"]),
        m(&a["plain"]["byoc"]["calls"]),
        m(&a["plain"]["byoc_writes"]),
        m(&a["plain"]["byoc_reads"]),
        m(&a["plain"]["ack"]["calls"]),
        m(&a["plain"]["ack"]["writes"]),
        m(&a["plain"]["ack"]["reads"]),
        r["realism"]["scale"],
        m(&a["realism"]["byoc"]["seconds"]),
        if ack_unfinished {
            "no run finished (the bench's stderr says what was still waiting)".to_string()
        } else {
            format!("{} s", m(&a["realism"]["ack"]["seconds"]))
        },
        m(&a["realism"]["byoc"]["calls"]),
        if ack_unfinished {
            "—".to_string()
        } else {
            format!(
                "{}, {}",
                m(&a["realism"]["ack"]["calls"]),
                m(&a["realism"]["ack"]["throttled"])
            )
        },
        ["plain", "realism"]
            .iter()
            .filter(|k| a[**k]["ack"]["runs_not_synced"].as_u64().unwrap_or(0) > 0)
            .map(|k| format!(
                "\nACK runs ({k}) not synced at their deadline (the time above is the deadline): {}; what was still waiting: {}.\n",
                a[*k]["ack"]["runs_not_synced"],
                a[*k]["ack"]["not_synced_at_deadline"]
                    .as_array()
                    .map(|v| v.iter().filter_map(|s| s.as_str()).collect::<Vec<_>>().join("; "))
                    .unwrap_or_default()
            ))
            .collect::<String>(),
    )
}

/// The sections of the many-cluster figures: P5 and P3 against AWS's rate
/// limits, and resync reads by cluster count.
fn mass_sections(r: &serde_json::Value) -> String {
    let p5 = &r["p5_mass"];
    let p3 = &r["p3_scale"];
    let mut out = format!(
        "\n## Many clusters against AWS's rate limits (the realism profile's buckets at AWS's sizes; the operator paced at its defaults)\n\n\
         | figure | measured | goal | |\n|---|---|---|---|\n{}{}",
        rate_rows(&format!("P5 {} clusters in one account", p5["clusters"]), p5),
        rate_rows(
            &format!("P3 {} clusters over {} accounts", p3["clusters"], p3["accounts"]),
            &json!({
                "seconds_until_all_running": p3["seconds_until_all_running"],
                "aws_calls": p3["aws_calls"],
                "against_rate_limits": p3["against_rate_limits"],
            })
        ),
    );
    let points = r["resync_scale"].as_array().cloned().unwrap_or_default();
    if !points.is_empty() {
        out.push_str(
            "\n## Steady state: AWS reads of one resync interval, settled clusters in one account\n\n\
             | clusters | reads | a resync per cluster would read | clusters found changed | clusters the shared describe could not look at | goal | |\n|---|---|---|---|---|---|---|\n",
        );
        let at_one = points.first().map(resync_reads).unwrap_or_default();
        for p in &points {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {RESYNC_GOAL} | {} |\n",
                p["clusters"],
                p["reads"].as_u64().unwrap_or(u64::MAX),
                p["per_cluster_resync_would_read"],
                p["changed"],
                p["could_not_look"],
                if testground::report::resync_goal_met(&resync_reads(p), &at_one) {
                    "met"
                } else {
                    "**missed**"
                },
            ));
        }
    }
    out
}

/// The steady state's goal, at every cluster count.
const RESYNC_GOAL: &str = "one read per kind the clusters use, the same as at the first count (DescribeRouteTables twice: the clusters' own tables, and the peer tables routing to their connections)";

/// A resync point's reads by operation.
fn resync_reads(p: &serde_json::Value) -> BTreeMap<String, u64> {
    p["by_operation"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(op, _)| !is_write(op))
                .map(|(op, n)| (op.clone(), n.as_u64().unwrap_or(u64::MAX)))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn markdown(r: &serde_json::Value) -> String {
    let m = shown;
    let s = |v: &serde_json::Value| shown_in(v, "s");
    let x = &r["realism"];
    let realism = format!(
        "\n## Against AWS's behaviour (the proxy's realism profile at {} × AWS's durations)\n\n\
         | figure | measured | goal | |\n|---|---|---|---|\n\
         | time to `running`, P1 topology | {} | | |\n\
         | AWS's waits on the critical path (NAT gateway pending, profile propagation, instance pending) plus its calls | {} | | |\n\
         | ratio | {} | ≤ 1.05 | {} |\n\
         | AWS calls, of them throttled | {}, {} | | |\n\
         | deletion | {} | | |\n\
         | the longest drain (instances shutting down, NAT gateway deleting) plus the network's 4 dependent deletes | {} | | |\n\
         | deletion ratio | {} | | |\n\
         | time to `running`, reach topology (no internet, 4 endpoints, a peering connection) | {} | | |\n\
         | its calls plus AWS's waits on its critical path (interface endpoints pending, the connection provisioning, profile propagation, instance pending) | {} | | |\n\
         | reach ratio | {} | ≤ 1.05 | {} |\n",
        x["scale"],
        s(&x["seconds_to_running"]),
        s(&x["bound_seconds"]),
        m(&x["ratio"]),
        verdict(&x["ratio"], "median", |v| v <= 1.05),
        m(&x["calls"]),
        m(&x["throttled"]),
        s(&x["deletion_seconds"]),
        s(&x["deletion_bound_seconds"]),
        m(&x["deletion_ratio"]),
        s(&x["reach"]["seconds_to_running"]),
        s(&x["reach"]["bound_seconds"]),
        m(&x["reach"]["ratio"]),
        verdict(&x["reach"]["ratio"], "median", |v| v <= 1.05),
    );
    let p1 = &r["p1_time_to_running"];
    let p2 = &r["p2_aws_calls"];
    let p3 = &r["p3_scale"];
    let d = &r["deletion"];
    let f = &r["fallback"];
    let kinds = p2["kinds"].as_f64().unwrap_or(0.0);
    let minimal = p2["minimal_writes"].as_f64().unwrap_or(0.0);
    format!(
        "# Benchmark results\n\n\
         Written by `hack/bench.sh` ({}, release build, {} cores). Median (min–max) of {} runs; P3 of {}.\n\n\
         | figure | measured | goal | |\n|---|---|---|---|\n\
         | P1 time to `running`, reference topology, {} ms per AWS call | {} | | |\n\
         | P1 critical path ({} dependent calls × {} ms) | {} s | | |\n\
         | P1 ratio (time / critical path) | {} | ≤ 1.2 | {} |\n\
         | P1 critical path at the calls' measured durations (latency + moto's service time) | {} | | |\n\
         | P1 ratio to that | {} | ≤ 1.2 | {} |\n\
         | P1 sequential AWS round trips the operator made | {} | {} | |\n\
         | P2 writes to converge | {} | {} (one per resource) | {} |\n\
         | P2 reads to converge | {} | {} kinds, one lookup each | {} |\n\
         | P2 writes per resync of a converged cluster | {} | 0 | {} |\n\
         | P2 reads per resync | {} | ≤ {} | {} |\n\
         | P3 {} clusters / {} accounts: until all `running` | {} | | |\n\
         | P3 operator CPU | {} | ≤ 60 s | {} |\n\
         | P3 operator peak RSS | {} | ≤ 128 MiB | {} |\n\
         | P3 moto CPU / apiserver CPU | {} / {} | | |\n\
         | Deletion of the reference topology | {}, {} calls | | |\n         | Fallback: P1 with each first-choice type refused in every zone | {} (+{}), {} RunInstances | ≤ 12 RunInstances | {} |\n\n\
         Critical path (from the operator's dependency graph, `cluster/graph.rs`): {}.\n\n\
         The operator's longest chain of sequential calls (one run): {}.\n\n\
         `results.json` has the calls per operation (converge, resync, deletion).\n{}{}{}",
        r["machine"]["ground"].as_str().unwrap_or_default(),
        r["machine"]["cores"],
        p1["seconds"]["runs"],
        p3["seconds_until_all_running"]["runs"],
        p1["latency_ms_per_call"],
        s(&p1["seconds"]),
        p1["critical_path_calls"],
        p1["latency_ms_per_call"],
        p1["critical_path_seconds"],
        m(&p1["ratio"]),
        verdict(&p1["ratio"], "median", |r| r <= 1.2),
        s(&p1["critical_path_seconds_at_measured_call_times"]),
        m(&p1["ratio_at_measured_call_times"]),
        verdict(&p1["ratio_at_measured_call_times"], "median", |r| r <= 1.2),
        m(&p1["measured_sequential_calls"]),
        p1["critical_path_calls"],
        m(&p2["converge_writes"]),
        minimal,
        verdict(&p2["converge_writes"], "median", |w| w <= minimal),
        m(&p2["converge_reads"]),
        kinds,
        verdict(&p2["converge_reads"], "median", |r| r <= kinds),
        m(&p2["resync_writes"]),
        verdict(&p2["resync_writes"], "max", |w| w == 0.0),
        m(&p2["resync_reads"]),
        kinds,
        verdict(&p2["resync_reads"], "median", |r| r <= kinds),
        p3["clusters"],
        p3["accounts"],
        s(&p3["seconds_until_all_running"]),
        s(&p3["operator_cpu_seconds"]),
        verdict(&p3["operator_cpu_seconds"], "median", |c| c <= 60.0),
        shown_in(&p3["operator_peak_rss_mib"], "MiB"),
        verdict(&p3["operator_peak_rss_mib"], "median", |r| r <= 128.0),
        s(&p3["moto_cpu_seconds"]),
        s(&p3["apiserver_cpu_seconds"]),
        s(&d["seconds"]),
        m(&d["calls"]),
        s(&f["seconds"]),
        s(&f["extra_seconds_over_p1"]),
        m(&f["run_instances"]),
        verdict(&f["run_instances"], "max", |n| n <= 12.0),
        p1["critical_paths"]
            .as_array()
            .map(|chains| chains.iter().map(chain).collect::<Vec<_>>().join("; as long: "))
            .unwrap_or_default(),
        chain(&p1["measured_sequential_chain"]),
        p3["unfinished_runs"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|a| format!(
                "\nP3 runs that did not finish: {}\n",
                a.iter().filter_map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
            ))
            .unwrap_or_default(),
        realism,
        mass_sections(r)
            + &ack_section(r)
            + &secret_memory_section(r)
            + &fairness_section(r)
            + &interruption_section(r),
    )
}

/// A chain of calls as `A → B → C`.
fn chain(calls: &serde_json::Value) -> String {
    calls
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" → ")
        })
        .unwrap_or_default()
}
