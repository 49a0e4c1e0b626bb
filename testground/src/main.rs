//! `testground up`: starts a kube-apiserver + etcd (with kube-controller-manager) and a moto server on
//! loopback (with `--node`, also a node that runs pods: `testground::node`),
//! prints the environment to use them, and keeps them until SIGINT or
//! SIGTERM; every process it started is then killed (the node's pods removed).
//!
//! `testground reliability-report`: turns the figures the reliability suites
//! recorded (JSON lines) into docs/reliability.md.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use testground::node::Node;
use testground::{Kube, Moto};

#[derive(Parser)]
#[command(about = "byoc-operator's test ground: real kube-apiserver + etcd and moto on loopback")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the ground and hold it until interrupted.
    Up {
        /// Also write the `export` lines to this file (for scripts).
        #[arg(long)]
        env_file: Option<PathBuf>,
        /// With a node (kubelet and containerd in a network namespace of
        /// its own) that pods run on; moto is exposed to its pods at
        /// `BYOC_NODE_AWS_ENDPOINT_URL`.
        #[arg(long)]
        node: bool,
        /// An image (OCI layout tarball, e.g. from hack/image.sh) to load
        /// into the node's runtime as byoc.dev/byoc-operator.
        #[arg(long, requires = "node")]
        image: Option<PathBuf>,
    },
    /// Write the reliability table from the suites' recorded figures.
    ReliabilityReport {
        /// JSON lines written by the suites (BYOC_FIGURES).
        #[arg(long)]
        figures: PathBuf,
        /// The Markdown file to write.
        #[arg(long)]
        out: PathBuf,
        /// How the figures were produced (printed under the table).
        #[arg(long, default_value = "")]
        run: String,
    },
}

/// What each suite caught when the code was broken on purpose.
const CAUGHT: &[(&str, &str)] = &[
    ("crash safety", "the VPC adopted only when status already names it (not found by its tags): with seed 7, a kill between CreateVpc and the first status write left 2 VPCs, 8 subnets, 2 internet gateways and 2 security groups for one cluster; the suite reported 2 cycles with duplicates"),
    ("AWS faults", "the SDK's retries switched off: every injected fault became a failed reconcile with exponential backoff, and the deletion did not finish within 300 s"),
    ("bad input", "`Stalled` reported as `Reconciling` (the user's errors treated as waiting): 3 of 48 manifests (an unknown region, an absent AMI, an unknown instance type) stayed undecided"),
    ("bad input", "deletion made to need the CloudAccount even for a cluster that never reached AWS (no `status.awsAccountId`): of 48 manifests, the cluster in region me-south-2, stalled before any AWS call, now needed AWS to answer in that region and stayed in deletion past 120 s"),
    ("wrong access", "AccessDenied and UnauthorizedOperation classified as transient: the wrong-external-ID cluster kept retrying (`AwsUnavailable`) and never stalled"),
    ("ownership", "resources found by the `byoc.dev/cluster` name tag instead of the cluster's UID: the operator took the VPC of an earlier cluster of the same name and the new cluster never converged"),
    ("secrets", "the cap on the SDK's credential-bearing log targets removed: the access key ID appeared in the operator's debug log (wrong-access and ownership suites)"),
    ("wrong access", "the proxy's re-signing for moto's IAM enforcement switched off: the control (keys allowed everything) never converged (moto answered SignatureDoesNotMatch to every request whose form holds a space or the like), so the denials above would have proved nothing"),
    ("realism: consistency", "the operator before it waited for its own creations (it trusted a describe that missed them): with describes missing new resources for 3–6 s, one cluster got 2 VPCs, 2 subnets, 2 internet gateways and 2 security groups (`realism::a_stale_describe_after_a_create_duplicates_nothing`)"),
    ("realism: IAM propagation", "EC2's `Invalid IAM Instance Profile` classed as the user's problem (and not as AWS catching up): the cluster published a Warning Event (`AwsError`: ec2:RunInstances: InvalidParameterValue … Invalid IAM Instance Profile name) while the profile propagated (`realism::an_instance_profile_too_new_for_ec2_delays_the_launch_only`)"),
    ("realism: states", "the shared wait for what AWS is creating switched off (a cluster whose pass left a NAT gateway pending looked at again only on its progress poll): with a 60 s poll and NAT gateways pending 6–12 s, the cluster was not running after 45 s; with the wait it ran after 11.8 s, against 10.1 s of AWS's own waits (`realism::a_cluster_waiting_for_aws_is_looked_at_when_aws_is_done_not_on_the_poll`)"),
    ("realism: consistency", "the in-SDK retry of a call naming what was just made switched off (its classifier never retrying): with AWS's 1–2 s window and a 60 s progress poll, a subnet refused `InvalidVpcID.NotFound` in the first pass ended it and every step after it, and the cluster was not running after 30 s (`realism::a_call_naming_what_was_just_made_is_retried_within_the_pass`); in the benchmark the same pause cost P1 under the profile 5.4 s, its ratio 1.075 against 1.015 with the retry"),
    ("steady state", "each settled cluster requeued on its own resync timer again, beside the shared resync: 4 settled clusters cost 15 DescribeVpcs, 15 DescribeInstances and 12 GetRole over 3 intervals instead of 3, 3 and 0 (`resync::settled_clusters_of_one_account_share_one_describe_per_kind`)"),
    ("steady state", "found by the shared resync's drift test, fixed: a launch replacing a group's only instance after it vanished reused the client token of the launch that made it (the token held only the group's live instances, none then), so AWS answered with the terminated instance and the group was never refilled (58 RunInstances in 2 minutes); the token now also holds the instances the last status recorded"),
    ("realism: consistency", "found when the shared wait came (a pass within a second of a launch) with the launch token holding the instances the last status recorded: a pass on a describe that missed the new instances asked for a launch of its own, and the cluster got 4 instances for 2; fixed by keeping a launch's instances as creations until a describe shows them, as the creates without a token are (`realism::a_stale_describe_after_a_create_duplicates_nothing`)"),
    ("realism: rate limits", "pacing off (`--aws-pacing 0`): 3 clusters at once under a fifth of AWS's limits made 228 calls, 41 of them throttled (18 %), against 106 calls and 0 throttled paced (`realism::clusters_provisioning_at_once_stay_within_the_accounts_rate_limits`)"),
    ("tenancy", "a tenant-chosen external ID sent with the operator's own identity (the spec's `externalId` used instead of refused): namespace B's account carrying A's generated external ID assumed A's role, and the copycat never stalled (`tenancy::the_operators_identity_is_lent_only_where_allowed_and_only_with_its_external_id`)"),
    ("tenancy", "the consent rule before it was bound to the recorded account (a deleting cluster that once reached AWS may use whichever account it names): the cluster of namespace C re-pointed at A's account was deleted through A's credentials instead of waiting (`tenancy::a_cluster_pointed_at_a_foreign_account_gets_nothing_of_it`)"),
    ("tenancy", "audit's installation check removed (every tagged former cluster counted as this installation's): production's `audit --delete --all` listed staging's leaked cluster as its own (`tenancy::two_installations_on_one_aws_account_never_touch_each_others_resources`)"),
    ("tenancy", "`deletionPolicy: Retain` letting go without marking what it leaves: production's `audit --delete --all` deleted the retained cluster's 10 resources with its leak (same test)"),
    ("tenancy", "the generated policy's `iam:PolicyARN` condition dropped from AttachRolePolicy: a cluster attached a policy outside the allow-list and never stalled (`tenancy::node_roles_cannot_be_escalated_or_borrowed`); the same test, on its first run, caught the policy asking a role's `iam:PermissionsBoundary` of CreateInstanceProfile, which has no such key (every cluster's profile creation denied)"),
    ("tenancy", "the check of a brought instance profile's owner removed: a cluster brought another cluster's profile and was not refused (same test)"),
    ("tenancy", "the adoption step skipped (the pass records the installation without tagging what predates it): the cluster's EC2 resources (instance, volume, subnets, route tables, gateway, security group, ...) stayed without the installation tag (`tenancy::resources_made_before_installations_are_adopted_with_one_tag_write`)"),
    ("connect", "the ongoing policy's split missing `NodeRoleCreate` among the setup statements: with the setup policy detached, the cross-account role still created a role (`connect::an_admin_connects_an_account_with_one_command_and_clusters_run_on_the_ongoing_policy`: \"CreateRole allowed by the ongoing policy\")"),
    ("connect", "connect's ownership check skipped (any role of the name taken as its own): connect rewrote the trust policy of a role another team made (`connect::connect_never_touches_what_it_did_not_make_and_leaves_nothing_half_made`: \"done: put back role team-own's trust policy\")"),
    ("fencing", "the fence switched off (every AWS write let through whatever the Lease says): the leader cut off from the apiserver went on, 2 s after its successor's first write, to create a route (`fencing::a_leader_cut_off_from_the_apiserver_stops_writing_before_its_successor_starts`: \"replica-a, cut off, started writes after replica-b's first ... CreateRoute\"); the frozen leader's test did not catch it: once thawed, that leader saw the Lease gone before its next write"),
    ("fencing", "the same break with the chart's two pods on the ground's node: the leader pod, its apiserver traffic held at the node, created a route 4.7 s after its successor's first write (`in_pod::a_leader_pod_cut_off_from_the_apiserver_stops_writing_before_its_successor_starts`: \"…, cut off, started writes after …'s first (21.9 s): CreateRoute at 26.5 s\"); the frozen pod's test (containerd's pause) again did not catch it, for the same reason"),
    ("bad input", "a case of the shared fixture (`tests/fixtures/compute_cluster.yaml`) marked as one the apiserver accepts when its schema refuses it (the bad CIDR): `crds::invalid_manifests_rejected_naming_the_field` failed naming the case and the apiserver's rejection; the same fixture drives `spec::validate`'s table, which fails when a case neither layer refuses is added"),
    ("realism: draining", "`DependencyViolation` on delete made the user's problem: not caught. The deletion still finished, because a failed reconcile of either class is retried with backoff and every pass observes afresh; the suite asserts that deletions were refused while instances shut down and NAT gateways deleted, and that nothing was left"),
    ("reach", "the routes back in the peer's listed tables not removed before the peering connection (deletion deleted the connection alone): the peer's opened route table kept its route to the deleted connection and the snapshot compare of the peer failed (`reach::endpoints_a_private_network_and_peering_are_made_shown_and_removed`)"),
    ("reach", "the check that the peer's owner opened a listed table removed: the operator routed back through a table without `byoc.dev/peer-routes=allowed`, and the cluster never stalled (`reach::peering_that_cannot_work_is_stalled_and_makes_nothing`: \"timed out after 120s waiting for closed: Stalled True with InvalidSpec\")"),
    ("IAM as AWS evaluates it", "the statement `CreateInOwned` removed (the shape of 6bc0996's policy: creates allowed only on the created resource): the first `CreateSubnet` of every cluster refused on the VPC; `lifecycle::deleting_the_applied_manifest_removes_everything` failed naming it (\"ec2:CreateSubnet on arn:aws:ec2:us-east-1:123456789012:vpc/vpc-…: no statement allows it\"), and `iam::the_generated_policy_allows_this_installation_and_denies_every_other_as_aws_evaluates_it` failed on 10 of 249 rows."),
    ("IAM as AWS evaluates it", "the `ec2:Owner` condition of `LaunchImages` removed (any AMI may be booted): `iam::the_generated_policy_allows_this_installation_and_denies_every_other_as_aws_evaluates_it` failed on 2 of 249 rows (images owned by another account and by aws-marketplace allowed)."),
    ("attacks", "the `iam:PermissionsBoundary` condition of `NodeRoleBoundary` dropped (a node role's boundary may be put to any policy): `attacks::a_holder_of_the_role_cannot_turn_it_against_the_account` failed on \"swap the boundary for a permissive one: expected AccessDenied, got Ok(())\", and the table of `iam::` failed too."),
    ("attacks", "`EncryptRootVolumes` and `GrantRootVolumeKeys` granted on every key (`Resource: *`) instead of the listed ones: the attack suite failed on \"encrypt with a key not listed: expected UnauthorizedOperation, got Ok(())\", and the table of `iam::` failed too."),
    ("attacks", "the operator's image owner check made to allow every owner (`images::owner_allowed` true): the cluster naming another owner's image never stalled `ImageOwnerNotAllowed`; its launch was denied by the policy instead, and `nodes::an_image_of_an_owner_the_account_does_not_list_is_refused_and_boots_once_listed` failed printing the denial (\"ec2:RunInstances on …image/ami-…: no statement allows it\", `ec2:Owner` 210987654321)."),
    ("tenancy", "found when each of two installations sharing an account got a role of its own under the evaluator (before, both were granted on one role): production's `audit --delete --all` deleted its leak through the first CloudAccount that reached the account, staging's, whose role was refused `ec2:TerminateInstances` on production's instance. A leak is now deleted through a CloudAccount of its cluster's namespace when one reaches the place (`tenancy::two_installations_on_one_aws_account_never_touch_each_others_resources`)."),
    ("tenancy", "the installation's apiserver binding read as always this apiserver's (`installation::binding`): the operator started with a Secret copied from another apiserver ran there instead of refusing, and `tenancy::one_installation_runs_against_one_apiserver` failed (\"run on the second apiserver\", ended by its deadline)."),
    ("tenancy", "`describe` without the consent decision (any account the reference names used): C's cluster re-pointed at A's account was described through A's credentials, and `tenancy::a_cluster_pointed_at_a_foreign_account_gets_nothing_of_it` failed printing the tree drawn as A's role."),
    ("tenancy", "a reference to another namespace's missing CloudAccount answered `AccountNotFound` again (not the answer of one that does not allow the namespace): `compute_cluster::account_of_another_namespace_needs_its_permission` failed comparing the two answers (\"CloudAccount …/shared was not found\" against \"… does not exist or does not allow namespace …\")."),
    ("connect", "the ground's reading of a role's own policies broken (every role connect made judged by none): `connect::an_admin_connects_an_account_with_one_command_and_clusters_run_on_the_ongoing_policy` failed (its cluster never ran), so the connect suites are judged by the policies connect puts, not passed unjudged."),
    ("tenancy", "the shared resync and wait groups keyed by AWS account and region again (not by CloudAccount): two CloudAccounts reaching one account, and the shared resync described both tenants' clusters through the last joiner's session alone (`tenancy::a_tenants_credentials_look_only_at_its_own_clusters`: sessions {team-x}, not {team-x, team-y})"),
    ("tenancy", "a Secret's content read without its owner's label (the label selector dropped from `secret_use::read`): an unlabelled database password named as a node group's user data was read and launched, and `tenancy::secrets_are_read_only_where_their_owner_labelled_them` timed out waiting for `SecretNotLabelled`"),
    ("tenancy", "the chart's Secret-writes policy comparing everything but the data: the operator's ServiceAccount rewrote a credentials Secret's key, and `chart::the_operators_secret_writes_are_its_finalizers_only` failed (\"was not refused: secret/keys patched\")"),
    ("reach", "the peering plan deleting every route to its connections not wanted (not only those it recorded making): a route the peer's owner added by hand to the connection, in a table they never listed, was deleted on the next pass (denied there by the generated policy, so the cluster stalled), and `reach::peering_reaches_only_what_its_owner_opened_and_touches_only_its_own_routes` timed out waiting for the next pass"),
    ("tenancy", "the operator identity's policy without its tag condition (`iam_policy::operator_policy` allowing sts:AssumeRole on any role): evaluated as AWS does, a role trusting the identity without an external ID and another installation's connected role were assumable, and `iam::the_operators_own_identity_assumes_only_roles_connected_for_its_installation` failed"),
    ("reach", "the endpoints' plan blind to their policy (no `repolicy`): a change of `network.endpointPolicy` to `full` never reached the endpoints, and `reach::endpoints_a_private_network_and_peering_are_made_shown_and_removed` timed out waiting for the full policy"),
    ("tenancy", "a withdrawn borrower's deletion honouring deletionPolicy Retain (`consent::delete` handing the cluster to the cleanup as it is): the cluster's VPC, subnets, gateway, route tables, security group, instance and role stayed in the lender's account after its deletion, and `tenancy::a_borrower_whose_consent_was_withdrawn_may_only_delete_within_its_grace` failed (\"deletionPolicy Retain kept resources in the lender's account\")"),
    ("capacity", "the ledger checking the account's limits but admitting every request anyway (`Ledger::admit` ignoring `check`): four one-instance clusters applied at once under `limits.total.instances: 3` all launched, and `capacity::an_accounts_limit_is_never_passed_by_passes_at_once_and_frees_with_a_deletion` failed (4 instances seen under a limit of 3)"),
    ("chart", "the throttling alert's threshold raised from 0.05 to 0.2 attempts a second (and, apart, `ByocNoLeader` without its `absent`): `promtool test rules` failed on the expected `ByocAwsThrottled` at 40m (and `ByocNoLeader` with no operator scraped), so `chart::the_charts_alerts_pass_promtool_and_read_only_metrics_the_operator_exports` fails"),
    ("cost", "the spot price quote ignored (`PriceBook::spot` pricing every spot instance at its on-demand price): the example's spot g5.xlarge was priced $1.006/h instead of the ground's $0.4187 in its zone, and `cost::the_example_clusters_cost_is_its_parts_at_the_grounds_list_prices` failed"),
    ("cost", "the generated policy's `ListPrices` statement removed (`pricing:GetProducts` denied as AWS evaluates the policy): every part was priced from the built-in table and the same test failed on the basis (\"built-in us-east-1 table for instances, nat-gateways, public-ipv4, volumes\" where \"list price\" was wanted); with the statement, the passing run is the control"),
    ("cost", "the price cap left out of the limits' measures (`limits::measures` never capping `pricePerHour`): three t3.small clusters applied at once under `limits.total.pricePerHour: \"0.05\"` all ran ($0.0624 an hour), and `cost::a_price_cap_admits_what_fits_at_list_price_and_names_dollars_when_full` timed out waiting for one over the cap"),
    ("tenancy", "the Secret trigger's content filter made to pass only a Secret's first sight (`ContentSeen::changed` true only for a new key): a rotated credentials Secret never re-verified its account (`cloud_account::rotating_the_secret_reverifies_without_restart` timed out waiting for `Failed`) and a changed user-data Secret never rolled its group (`nodes::user_data_from_a_secret_reaches_the_instances_never_the_logs_and_its_change_rolls`); an annotation alone passing nothing is the unit test's"),
    ("tenancy", "`audit --delete` falling back to any CloudAccount that reaches the place (`Looked::through` ending in `reaching().next()`): a leak of namespace C was deleted through namespace L's account after L had withdrawn C from allowedNamespaces, and `tenancy::audit_deletes_a_leak_only_through_an_account_its_namespace_may_use` failed (\"audit through a lender that withdrew\"); lent again, the same audit deleting it is the control"),
    ("tenancy", "the trust policy without its namespace condition (`iam_policy::trust_policy` leaving out `aws:RequestTag/byoc.dev/namespace`): a CloudAccount of namespace B with A's base keys and external ID assumed A's role, and `tenancy::a_connected_role_admits_only_sessions_of_its_namespace_and_an_older_trust_still_works` timed out waiting for B's `AssumeRoleDenied` (A's account Ready is the control); the evaluator rows of `iam::the_trust_policy_admits_only_sessions_tagged_with_its_namespace_and_its_external_id` failed on the same break (another namespace and an untagged session Allowed)"),
    ("tenancy", "the untagged fallback removed (`credentials::assume_roles` never asking again without session tags): a role trusted before session tags (no sts:TagSession) refused every session, and the same tenancy test timed out waiting for that account to be Ready"),
    ("cost", "the shared price book keeping a failed lookup for every tenant again (`prices::keep_and_read` storing `Answer::Failed` as no price): tenant X's denied item read as kept for tenant Y, and `prices::tests::one_callers_failed_lookup_is_kept_for_nobody_what_aws_answered_for_everyone` failed (nothing stale for Y where the denied item was wanted)"),
    ("tenancy", "`in_use::Standing::may_act` without its deletion clause (a cluster whose namespace is no longer allowed may not even delete what it made through the account): the row \"namespace no longer allowed, but has AWS resources through acme\" of `in_use::tests::users_are_the_clusters_that_may_use_the_account_or_reached_aws_through_it` failed, and `tenancy::a_borrower_whose_consent_was_withdrawn_may_only_delete_within_its_grace` timed out waiting for the retained cluster to be gone (its sibling test of a re-pointed cluster passed: the control)"),
    ("tenancy", "`ownership::foreign` checking the AWS account only once an installation is recorded: a cluster made before installations, its reference re-pointed at another AWS account, was not refused, and `ownership::tests::foreign_resources_are_named_the_same_for_converge_and_deletion` failed on that row"),
    ("status", "the status writer publishing no Event for an outcome that needs the user (a warning left out): `status::tests::an_outcome_is_written_as_its_phase_conditions_event_and_next_look`, against the mocked apiserver of `src/fixtures.rs`, failed in 0.1 s on the access-denied row (the last Event was the row before's `Provisioning`)"),
    ("status", "the in-use finalizer's write made without its retry (`in_use::FINALIZER_TRIES` 1): a patch that lost the race with the other controller adding the same finalizer (422, its test operation) failed the reconcile into a 2–4 s backoff, seen as 2.8–4.4 s stalls before a new cluster's first AWS call in the fairness benchmark; `in_use::tests::a_finalizer_write_that_lost_a_race_is_settled_by_a_fresh_read_not_a_backoff`, against a scripted mocked apiserver, failed at once (a forbidden write not retried is its control)"),
    ("deletion", "the route tables' row without its `delete` (a kind in `graph::DELETION` whose deletion the executor would skip, leaving its tables and the VPC behind): `graph::tests::the_kinds_in_the_deletion_order_are_those_rows_that_delete` failed at once (\"RouteTables is deleted without a delete\")"),
    ("converge", "the endpoints' group row without its `leftover` (its step not called once the spec dropped its endpoints, while the endpoints' step is, to delete them, and reads the group's cell): `converge::tests::a_step_called_for_leftovers_has_every_step_it_needs_called` failed at once (\"Endpoints is called and reads EndpointGroup, which is not\"), and so did `a_step_off_its_shape_is_called_only_for_what_an_older_spec_left`"),
    ("interruption", "a spot interruption warning read with no notice period (its deadline the event's time, not two minutes after): `interruption::message::tests::each_kind_aws_sends_is_read_into_its_notice` failed at once (deadline 10:00:00Z, want 10:02:00Z)"),
    ("interruption listener", "the listener acting on a spot warning without marking the instance (`byoc.dev/interrupted`): `interruption::a_spot_warning_is_acted_on_at_once_the_replacement_first_within_the_surge_bound` failed (no replacement in 240 s; the cluster's pass found nothing to replace)"),
    ("interruption delivery", "the ground delivering an event into any queue a rule targets, as moto does (not only where the queue's policy lets the rule send, as AWS does): `interruption::the_installations_queue_hears_each_kind_of_event_and_only_its_own_rules_send` failed at once (\"an event reached a queue whose policy does not let its rule send\")"),
    ("interruption audit", "the audit taking every place's interruption queue as wanted (`QueueUse::wants` true for any recorded account): `interruption::a_queue_no_cluster_wants_any_more_is_audited_and_deleted_with_delete_all` failed (the left-over queue and its 5 rules not listed after its cluster's finalizer was removed by hand)"),
    ("leak audit", "the audit reading roles as before (ListRoles, then a GetRole per role): `lifecycle::audit_finds_what_a_cluster_left_when_its_finalizer_was_removed_and_deletes_only_that` failed at once (`byoc-operator audit` refused: iam:ListRoles is no longer in the generated policy)"),
    ("learning", "the node groups' learning without the launches no describe shows yet (`starting` from the instances seen alone): `learned::tests::what_a_pass_learns_from_its_steps` failed at once (\"an instance launched that no describe shows yet\"); in the fresh CI of fe397ec the same fault left `realism::a_call_naming_what_was_just_made_is_retried_within_the_pass` to the 300 s poll after one pass"),
    ("policy size", "connect's setup part put back inline (beside the ongoing one): `connect::an_option_rich_account_fits_aws_policy_limits_with_the_setup_part_managed` failed at once (connect with every option refused by the ground: \"iam:PutRolePolicy: LimitExceeded: Maximum policy size of 10240 bytes exceeded for role byoc-rich\")"),
    ("log groups", "the log groups' make statement without its `Null` condition on another installation's tag: `storage::the_role_makes_and_deletes_only_its_installations_log_groups` failed at once (\"retagged another's\": the role tagged another installation's group as its own)"),
    ("nodes' grants", "the nodes' grants naming every group under `/byoc/` instead of the one their role's cluster tag names: `storage::a_clusters_log_group_is_made_put_back_and_removed_and_anothers_never_touched` failed at once (the evaluator allowed `logs:CreateLogStream`, `PutLogEvents` and `DescribeLogStreams` on another cluster's group)"),
    ("keys", "the key's lookup by description (a key made before a crash) taken out: `compute_cluster::sigkill_during_provisioning_converges_without_duplicates` failed at once (two keys made for the cluster, the one the kill at CreateKey left untagged and unaliased), and `storage::a_clusters_key_is_made_rotated_kept_once_and_only_scheduled_for_deletion` too (\"a second key was made\" once its alias was deleted)"),
];

fn report(figures: &std::path::Path, out: &std::path::Path, run: &str) -> Result<()> {
    let text = std::fs::read_to_string(figures)?;
    let mut rows: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let order = |s: &serde_json::Value| {
        CAUGHT
            .iter()
            .position(|(name, _)| s["suite"] == *name)
            .unwrap_or(usize::MAX)
    };
    rows.sort_by_key(order);
    let cell = |v: &serde_json::Value| v.as_str().unwrap_or_default().replace('|', "\\|");
    let mut md = String::from(
        "# Reliability and security, measured\n\n\
         Generated by `hack/reliability.sh` (the suites in `tests/it/reliability.rs` \
         with `BYOC_FULL=1`, against the real apiserver and moto behind the fault \
         proxy). Each row is asserted by its test; the default `hack/test.sh` runs the \
         same suites with a smaller N.\n\n\
         | suite | set-up | N | figure | pass |\n|---|---|---|---|---|\n",
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            cell(&r["suite"]),
            cell(&r["setup"]),
            r["n"],
            cell(&r["figure"]),
            if r["pass"] == true { "yes" } else { "**no**" },
        ));
    }
    md.push_str(
        "\n**Secrets**: every suite above ends by searching the operator's log (JSON, \
         debug level) and `/metrics`, the namespace's Events and the status of every \
         CloudAccount and ComputeCluster for the Secret's access key ID, its secret key \
         and moto's session-token prefix; none was found in any suite that passed.\n\n\
         ## What each suite caught when the code was broken on purpose\n\n",
    );
    for (suite, caught) in CAUGHT {
        md.push_str(&format!(
            "- **{suite}**: {}.\n",
            caught.trim_end_matches('.')
        ));
    }
    if !run.is_empty() {
        md.push_str(&format!("\n_{run}_\n"));
    }
    std::fs::write(out, md)?;
    Ok(())
}

fn main() -> Result<()> {
    let (env_file, with_node, image) = match Cli::parse().command {
        Cmd::Up {
            env_file,
            node,
            image,
        } => (env_file, node, image),
        Cmd::ReliabilityReport { figures, out, run } => return report(&figures, &out, &run),
    };
    // Block the signals before any thread starts so that sigwait below sees them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block()?;

    let (kube, node) = if with_node {
        (None, Some(Node::start()?))
    } else {
        (Some(Kube::start()?), None)
    };
    let moto = Moto::start()?;
    let k = kube
        .as_ref()
        .or(node.as_ref().map(|n| &n.kube))
        .ok_or_else(|| anyhow::anyhow!("no apiserver"))?;
    let mut env = format!(
        "export KUBECONFIG={}\nexport AWS_ENDPOINT_URL={}\nexport AWS_ACCESS_KEY_ID=testing\nexport AWS_SECRET_ACCESS_KEY=testing\nexport AWS_REGION=us-east-1\n",
        k.kubeconfig.display(),
        moto.endpoint()
    );
    if let Some(node) = &node {
        if let Some(image) = &image {
            node.load_image(image, "byoc.dev/byoc-operator")?;
        }
        let aws = node.expose(moto.port())?;
        println!(
            "# the node's logs, and its pods' under pod-logs/: {}",
            node.dir().display()
        );
        env.push_str(&format!("export BYOC_NODE_AWS_ENDPOINT_URL=http://{aws}\n"));
    }
    if let Some(path) = env_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &env)?;
        std::fs::rename(&tmp, &path)?;
    }
    println!(
        "# test ground is up: kube-apiserver {} (apiserver, etcd, controller-manager pids {:?}){}, moto {} (pid {})",
        k.server,
        k.pids(),
        if node.is_some() { ", node ground-node Ready" } else { "" },
        moto.endpoint(),
        moto.pid()
    );
    print!("{env}");
    println!("# Ctrl-C or SIGTERM stops it.");
    let sig = signals.wait()?;
    eprintln!("testground: {sig:?}, stopping");
    drop(moto);
    drop(node);
    drop(kube);
    Ok(())
}
