//! What the benchmark's report decides, kept here so that the workspace's
//! tests cover it (the benchmark itself runs without a test harness).

use std::collections::BTreeMap;

/// Met when a resync interval read each kind once (route tables twice:
/// the clusters' own, and the peer tables routing to their connections)
/// and exactly what it read at the first cluster count: no cluster looked
/// for itself.
pub fn resync_goal_met(reads: &BTreeMap<String, u64>, at_first: &BTreeMap<String, u64>) -> bool {
    let once = reads.iter().all(|(op, n)| {
        let allowed = if op == "DescribeRouteTables" { 2 } else { 1 };
        *n <= allowed
    });
    once && reads == at_first
}

/// The figures the report `old` marked met that `new` marks missed: each
/// row by its section and first cell, its verdict the last cell.
pub fn regressions(old: &str, new: &str) -> Vec<String> {
    let before = verdicts(old);
    verdicts(new)
        .into_iter()
        .filter(|(row, met)| !met && before.get(row) == Some(&true))
        .map(|(row, _)| row)
        .collect()
}

/// Each row of a report with a verdict: met or not.
fn verdicts(md: &str) -> BTreeMap<String, bool> {
    let mut section = String::new();
    let mut out = BTreeMap::new();
    for line in md.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = h.trim().to_string();
            continue;
        }
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let (Some(first), Some(last)) = (cells.first(), cells.last()) else {
            continue;
        };
        let met = match *last {
            "met" => true,
            "**missed**" => false,
            _ => continue,
        };
        out.insert(format!("{section} / {first}"), met);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_met_before_and_missed_now_is_a_regression() {
        let old = "## A\n\n| figure | x | goal | |\n|---|---|---|---|\n| P1 | 1 | ≤ 2 | met |\n| P2 | 3 | ≤ 2 | **missed** |\n## B\n| 500 | 9 | g | met |\n";
        let new = "## A\n\n| figure | x | goal | |\n|---|---|---|---|\n| P1 | 3 | ≤ 2 | **missed** |\n| P2 | 3 | ≤ 2 | **missed** |\n## B\n| 500 | 9 | g | met |\n";
        assert_eq!(regressions(old, new), vec!["A / P1".to_string()]);
        assert!(
            regressions(new, old).is_empty(),
            "a figure met again is no regression"
        );
        assert!(
            regressions("", new).is_empty(),
            "no report before: nothing to compare"
        );
    }

    #[test]
    fn the_resync_goal_is_one_read_per_kind_as_at_the_first_count() {
        let reads = |ops: &[(&str, u64)]| -> BTreeMap<String, u64> {
            ops.iter().map(|(o, n)| (o.to_string(), *n)).collect()
        };
        let one = reads(&[
            ("DescribeVpcs", 1),
            ("DescribeRouteTables", 2),
            ("GetAccountAuthorizationDetails", 1),
        ]);
        assert!(resync_goal_met(&one, &one));
        let per_cluster = reads(&[
            ("DescribeVpcs", 103),
            ("DescribeRouteTables", 2),
            ("GetAccountAuthorizationDetails", 1),
        ]);
        assert!(
            !resync_goal_met(&per_cluster, &one),
            "clusters looking for themselves"
        );
        let extra = reads(&[
            ("DescribeVpcs", 1),
            ("DescribeRouteTables", 2),
            ("GetAccountAuthorizationDetails", 1),
            ("GetRole", 1),
        ]);
        assert!(
            !resync_goal_met(&extra, &one),
            "a read the first count did not make"
        );
    }
}
