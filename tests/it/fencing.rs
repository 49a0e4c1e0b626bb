//! Fencing: a leader that stops running (frozen past its Lease) sends no
//! AWS write once its successor has started writing. The replicas are
//! processes of the operator with leader election; the proxy's trace says
//! which replica made each call (the SDK's app name is the replica's
//! identity).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use anyhow::Result;
use byoc_operator::api::ComputeCluster;
use byoc_operator::aws::pacing::is_write;
use kube::ResourceExt;

use crate::clusters::{apply_example, counts, expected_example, ready_account, wait_running, WAIT};
use crate::operations::{holder, leader_args, start_replica, wait_leader, LEASE_SECONDS};
use crate::support::{
    eventually, ground_with_crds, record_figure, Edited, Ground, Operator, OperatorExt,
};

/// Whether a traced call wrote to AWS (STS calls never do).
fn writes(op: &str) -> bool {
    op != "AssumeRole" && (is_write("ec2", op) || is_write("iam", op))
}

/// `app`'s writes, in the order the proxy finished them.
pub(crate) fn writes_of(g: &Ground, app: &str) -> Vec<testground::Call> {
    g.proxy
        .trace()
        .into_iter()
        .filter(|c| c.app == app && writes(&c.operation))
        .collect()
}

/// Holds the answer to `operation` for `hold`, applies the example, and
/// waits until AWS made what `made` counts (its answer still held): the
/// example's UID.
async fn example_waiting_for(
    g: &Ground,
    operation: &str,
    hold: Duration,
    what: &str,
    made: impl Fn(&crate::clusters::Counts) -> bool,
) -> Result<String> {
    g.proxy.set_faults(testground::Faults {
        hold_answers: [(operation.to_string(), hold)].into(),
        ..Default::default()
    });
    apply_example(g)?;
    let uid = eventually("the example's UID", WAIT, || async {
        Ok(g.api::<ComputeCluster>().get("demo").await?.uid())
    })
    .await?;
    eventually(what, WAIT, || async {
        Ok(made(&counts(g, &uid).await?).then_some(()))
    })
    .await?;
    Ok(uid)
}

/// The example applied with its VPC's creation answered 1.5 s late; once
/// AWS made it (the leader still waiting): the example's UID.
pub(crate) async fn example_waiting_for_its_vpc(g: &Ground) -> Result<String> {
    example_waiting_for(
        g,
        "CreateVpc",
        Duration::from_millis(1500),
        "the VPC made, its answer held",
        |c| c.vpcs > 0,
    )
    .await
}

/// The example applied with its NAT gateway's creation answered 7 s late;
/// once AWS made it: the example's UID.
pub(crate) async fn example_waiting_for_its_nat_gateway(g: &Ground) -> Result<String> {
    example_waiting_for(
        g,
        "CreateNatGateway",
        Duration::from_secs(7),
        "the NAT gateway made, its answer held",
        |c| c.nat_gateways > 0,
    )
    .await
}

/// When the successor's first AWS write reached the proxy.
pub(crate) async fn first_write_of(g: &Ground, app: &str) -> Result<Duration> {
    eventually(&format!("{app}'s first write"), WAIT, || async {
        Ok(writes_of(g, app).into_iter().map(|c| c.accepted).min())
    })
    .await
}

#[tokio::test]
async fn a_frozen_leader_writes_nothing_after_its_successor_took_over() -> Result<()> {
    let g = ground_with_crds("fencing").await?;
    let mut a = start_replica(&g, "replica-a")?;
    wait_leader(&a, "replica-a", WAIT).await?;
    let b = start_replica(&g, "replica-b")?;
    ready_account(&g).await?;
    // The VPC's creation is answered 1.5 s late: the leader is frozen while
    // it waits, and the answer is there when it runs again, with the
    // subnets, gateway and security group to create next.
    let uid = example_waiting_for_its_vpc(&g).await?;
    a.process.freeze()?;
    let frozen = Instant::now();
    let before = writes_of(&g, "replica-a").len();
    wait_leader(&b, "replica-b", WAIT).await?;
    assert_eq!(
        holder(&g).await?.as_deref(),
        Some("replica-b"),
        "the Lease names replica-b"
    );
    let first = first_write_of(&g, "replica-b").await?;
    // Thawed: it finds the Lease gone and stops; meanwhile nothing it
    // writes may leave.
    a.process.thaw()?;
    let thawed = frozen.elapsed();
    let end = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = a.process.exit_status()? {
            break status;
        }
        assert!(
            Instant::now() < end,
            "replica-a did not stop after losing the Lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !status.success(),
        "replica-a exited with {status}: leadership lost is an error"
    );
    // A write started after the successor's first one; and one that was
    // already on its way when the process froze (its connection opened
    // before, its answer after): no process can call that one back.
    let (late, on_the_way): (Vec<testground::Call>, Vec<testground::Call>) =
        writes_of(&g, "replica-a")
            .into_iter()
            .filter(|c| c.end > first)
            .partition(|c| c.accepted > first);
    assert!(
        late.is_empty(),
        "replica-a started writes after replica-b's first ({first:?} into the trace): {late:?}"
    );
    // The successor finishes: the example as it should be, nothing twice.
    wait_running(&g, "demo", |_| true).await?;
    let c = counts(&g, &uid).await?;
    assert_eq!(c, expected_example(3), "in moto: {c:?}");
    record_figure(serde_json::json!({
        "suite": "fencing",
        "setup": format!("two operator processes with leader election (lease {LEASE_SECONDS} s), the leader frozen (SIGSTOP) while it waited for the answer to its CreateVpc (held 1.5 s by the proxy), thawed {:.0} s later, after its successor's first write", thawed.as_secs_f64()),
        "n": 1,
        "figure": format!("AWS writes started by the old leader after the new leader's first: {}; already on their way at the freeze and answered after: {}; the old leader's writes before the freeze: {before}; it stopped on its own (leadership lost); the successor brought the example to running with nothing twice", late.len(), on_the_way.len()),
        "pass": true,
    }))
}

/// A TCP path to the apiserver that can be cut: once cut, every byte on
/// every connection, old or new, is held for ever (a network that drops
/// packets, not one that refuses them).
struct CuttablePath {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl CuttablePath {
    async fn to(port: u16) -> Result<CuttablePath> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let local = listener.local_addr()?.port();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::join!(pump(ri, wo, flag.clone()), pump(ro, wi, flag));
                });
            }
        });
        Ok(CuttablePath { port: local, cut })
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The test's kubeconfig with its apiserver reached through `port`.
fn kubeconfig_through(g: &Ground, port: u16) -> Result<std::path::PathBuf> {
    let text = std::fs::read_to_string(&g.kube.kubeconfig)?;
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .ok_or_else(|| anyhow::anyhow!("no server in the kubeconfig"))?
        .to_string();
    let through = text.edited(&server, &format!("https://127.0.0.1:{port}"));
    let path = g.kube.dir().join(format!("kubeconfig-through-{port}"));
    std::fs::write(&path, through)?;
    Ok(path)
}

/// The apiserver's port, from the test's kubeconfig.
fn apiserver_port(g: &Ground) -> Result<u16> {
    testground::port_of(&g.kube.server)
}

#[tokio::test]
async fn a_leader_cut_off_from_the_apiserver_stops_writing_before_its_successor_starts(
) -> Result<()> {
    let g = ground_with_crds("fencing-cut").await?;
    let path = CuttablePath::to(apiserver_port(&g)?).await?;
    let kubeconfig = kubeconfig_through(&g, path.port)?;
    let kubeconfig = kubeconfig.to_string_lossy().to_string();
    let args = leader_args(&g);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = Operator::start(
        &g,
        &args,
        &[
            ("POD_NAME", "replica-a"),
            ("KUBECONFIG", kubeconfig.as_str()),
        ],
    )?;
    wait_leader(&a, "replica-a", WAIT).await?;
    let b = start_replica(&g, "replica-b")?;
    ready_account(&g).await?;
    // The NAT gateway's creation is answered 7 s late: the leader waits for
    // it, cut off, while its successor takes over; then it has routes to
    // make.
    let uid = example_waiting_for_its_nat_gateway(&g).await?;
    path.cut();
    let before = writes_of(&g, "replica-a").len();
    wait_leader(&b, "replica-b", WAIT).await?;
    let first = first_write_of(&g, "replica-b").await?;
    wait_running(&g, "demo", |_| true).await?;
    // The held answer reaches replica-a, which goes on to its routes: each
    // write either leaves (and the proxy sees it) or is held back by the
    // fence (and its log says so).
    let late_writes = || -> Vec<testground::Call> {
        writes_of(&g, "replica-a")
            .into_iter()
            .filter(|c| c.accepted > first)
            .collect()
    };
    eventually(
        "replica-a's next write, sent or held back",
        WAIT,
        || async {
            Ok((!late_writes().is_empty() || a.log().contains("AWS write not sent")).then_some(()))
        },
    )
    .await?;
    let late = late_writes();
    assert!(
        late.is_empty(),
        "replica-a, cut off, started writes after replica-b's first ({first:?}): {late:?}"
    );
    let fenced = a.log().matches("AWS write not sent").count();
    let c = counts(&g, &uid).await?;
    assert_eq!(c, expected_example(3), "in moto: {c:?}");
    record_figure(serde_json::json!({
        "suite": "fencing",
        "setup": format!("two operator processes with leader election (lease {LEASE_SECONDS} s); the leader's apiserver traffic held for ever (a path that drops packets) while it waited for the answer to its CreateNatGateway (held 7 s by the proxy)"),
        "n": 1,
        "figure": format!("AWS writes started by the cut-off leader after its successor's first: {}; writes it held back itself (fence): {fenced}; its writes before the cut: {before}; the successor brought the example to running with nothing twice", late.len()),
        "pass": true,
    }))
}
