//! Integration tests against the real test ground: one kube-apiserver + etcd
//! per test process (each test in its own namespace) and one moto per test.

mod attacks;
mod capacity;
mod chart;
mod cloud_account;
mod clusters;
mod compute_cluster;
mod connect;
mod cost;
mod crds;
mod fencing;
mod ground;
mod iam;
mod image;
mod in_pod;
mod interruption;
mod lifecycle;
mod nodes;
mod operations;
mod reach;
mod realism;
mod reliability;
mod resync;
mod storage;
mod support;
mod tenancy;
